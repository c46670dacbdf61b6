//! The spool: finished results wait here, in a JSON-lines file, until the gateway has
//! them. A result is written before it is sent, and removed only after the gateway answered
//! for it, so a node that loses the gateway, is restarted or is killed drops nothing.
//!
//! The file is not fsynced: the kernel keeps what a killed process wrote, and only a crash
//! of the whole machine can lose a spooled result. That costs no result either: its lease
//! lapses, the gateway queues the job again, and it runs once more. An fsync per batch
//! would put a disk flush on the path of every result.

use openbeepboop::NodeResult;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct Spool {
    path: PathBuf,
    pending: Mutex<Vec<NodeResult>>,
}

impl Spool {
    /// Opens the spool, loading what an earlier run left in it.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let pending = match std::fs::read_to_string(path) {
            Ok(text) => text
                .lines()
                .filter(|line| !line.trim().is_empty())
                .filter_map(|line| match serde_json::from_str::<NodeResult>(line) {
                    Ok(result) => Some(result),
                    Err(error) => {
                        // A torn last line from a crash mid-write: the result was never sent.
                        tracing::warn!(%error, "skipping an unreadable spool line");
                        None
                    }
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            path: path.to_owned(),
            pending: Mutex::new(pending),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<NodeResult>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Appends results.
    pub fn add(&self, results: Vec<NodeResult>) -> std::io::Result<()> {
        if results.is_empty() {
            return Ok(());
        }
        let mut pending = self.lock();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let mut text = String::new();
        for result in &results {
            text.push_str(&serde_json::to_string(result).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        file.write_all(text.as_bytes())?;
        pending.extend(results);
        Ok(())
    }

    /// Up to `limit` results, oldest first.
    pub fn peek(&self, limit: usize) -> Vec<NodeResult> {
        self.lock().iter().take(limit).cloned().collect()
    }

    /// Forgets delivered results (by id and lease) and rewrites the file atomically.
    pub fn remove(&self, delivered: &[(String, String)]) -> std::io::Result<()> {
        let mut pending = self.lock();
        pending.retain(|r| {
            !delivered
                .iter()
                .any(|(id, lease)| *id == r.id && *lease == r.lease_id)
        });
        if pending.is_empty() {
            // Nothing is left to keep, so truncating in place is as safe as a rename.
            return std::fs::File::create(&self.path).map(drop);
        }
        let temporary = self.path.with_extension("jsonl.tmp");
        let mut text = String::new();
        for result in pending.iter() {
            text.push_str(&serde_json::to_string(result).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(text.as_bytes())?;
        std::fs::rename(&temporary, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openbeepboop::NodeResultStatus;

    fn result(id: &str) -> NodeResult {
        NodeResult {
            id: id.to_owned(),
            lease_id: format!("lease-{id}"),
            status: NodeResultStatus::Completed,
            result: serde_json::value::RawValue::from_string("{\"ok\":true}".to_owned()).ok(),
            error: None,
            upstream_status: None,
            retryable: false,
        }
    }

    #[test]
    fn results_survive_a_reopen_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep/spool.jsonl");
        let spool = Spool::open(&path).unwrap();
        spool.add(vec![result("a"), result("b")]).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{torn")
            .unwrap();
        let reopened = Spool::open(&path).unwrap();
        assert_eq!(reopened.len(), 2);
        reopened.remove(&[("a".into(), "lease-a".into())]).unwrap();
        let again = Spool::open(&path).unwrap();
        let left: Vec<String> = again.peek(10).into_iter().map(|r| r.id).collect();
        assert_eq!(left, vec!["b"]);
        assert!(!again.is_empty());
        assert_eq!(again.path(), path);
    }
}
