//! The spool: finished results wait here, in a JSON-lines file, until the gateway has
//! them. A result is written before it is sent, and removed only after the gateway answered
//! for it, so a node that loses the gateway, is restarted or is killed drops nothing.
//!
//! The file is not fsynced: the kernel keeps what a killed process wrote, and only a crash
//! of the whole machine can lose a spooled result. That costs no result either: its lease
//! lapses, the gateway queues the job again, and it runs once more. An fsync per batch
//! would put a disk flush on the path of every result.

use openbeepboop::{JobId, LeaseId, NodeResult, NodeResultStatus};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A result in the spool, with the length of its JSON in bytes (what it adds to a submit).
#[derive(Debug, Clone)]
pub struct Spooled {
    pub result: NodeResult,
    pub bytes: usize,
}

impl Spooled {
    fn new(result: NodeResult) -> std::io::Result<(Self, String)> {
        let line = serde_json::to_string(&result).map_err(std::io::Error::other)?;
        let bytes = line.len();
        Ok((Self { result, bytes }, line))
    }

    fn is(&self, id: &JobId, lease: &LeaseId) -> bool {
        self.result.id == *id && self.result.lease_id == *lease
    }
}

pub struct Spool {
    path: PathBuf,
    pending: Mutex<Vec<Spooled>>,
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
                    Ok(result) => Some(Spooled {
                        result,
                        bytes: line.len(),
                    }),
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Spooled>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Appends a result to the file. It is kept in memory even when the write fails, so
    /// that it is still delivered while the process lives.
    pub fn add(&self, result: NodeResult) -> std::io::Result<()> {
        let mut pending = self.lock();
        let (spooled, mut line) = Spooled::new(result)?;
        pending.push(spooled);
        line.push('\n');
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?
            .write_all(line.as_bytes())
    }

    /// Up to `limit` results, oldest first.
    pub fn peek(&self, limit: usize) -> Vec<NodeResult> {
        self.lock()
            .iter()
            .take(limit)
            .map(|s| s.result.clone())
            .collect()
    }

    /// The leases of the oldest finished results (completed or failed, not hand-backs), at
    /// most `limit`: they must be kept alive until the gateway has the results.
    pub fn finished_leases(&self, limit: usize) -> Vec<LeaseId> {
        self.lock()
            .iter()
            .filter(|s| s.result.status != NodeResultStatus::Released)
            .take(limit)
            .map(|s| s.result.lease_id.clone())
            .collect()
    }

    /// The oldest results whose JSON array fits in `max_bytes`, at most `max_count`; always
    /// at least the oldest one (which may not fit), unless the spool is empty.
    pub fn pack(&self, max_bytes: usize, max_count: usize) -> Vec<Spooled> {
        let pending = self.lock();
        let mut batch = Vec::new();
        // `[` and `]`, and a comma before every item but the first.
        let mut total = 2;
        for spooled in pending.iter().take(max_count.max(1)) {
            let added = spooled.bytes + usize::from(!batch.is_empty());
            if !batch.is_empty() && total + added > max_bytes {
                break;
            }
            total += added;
            batch.push(spooled.clone());
        }
        batch
    }

    /// Puts `replacement` in the place of the result of the same job and lease, and rewrites
    /// the file atomically.
    pub fn replace(&self, replacement: NodeResult) -> std::io::Result<()> {
        let mut pending = self.lock();
        let (spooled, _) = Spooled::new(replacement)?;
        let (id, lease) = (spooled.result.id.clone(), spooled.result.lease_id.clone());
        if let Some(slot) = pending.iter_mut().find(|s| s.is(&id, &lease)) {
            *slot = spooled;
        }
        self.rewrite(&pending)
    }

    /// Forgets delivered results (by id and lease) and rewrites the file atomically.
    pub fn remove(&self, delivered: &[(JobId, LeaseId)]) -> std::io::Result<()> {
        let mut pending = self.lock();
        pending.retain(|s| !delivered.iter().any(|(id, lease)| s.is(id, lease)));
        self.rewrite(&pending)
    }

    fn rewrite(&self, pending: &[Spooled]) -> std::io::Result<()> {
        if pending.is_empty() {
            // Nothing is left to keep, so truncating in place is as safe as a rename.
            return std::fs::File::create(&self.path).map(drop);
        }
        let temporary = self.path.with_extension("jsonl.tmp");
        let mut text = String::new();
        for spooled in pending {
            text.push_str(&serde_json::to_string(&spooled.result).map_err(std::io::Error::other)?);
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

    fn result(id: &str) -> NodeResult {
        NodeResult {
            id: id.into(),
            lease_id: format!("lease-{id}").into(),
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
        spool.add(result("a")).unwrap();
        spool.add(result("b")).unwrap();
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
        let left: Vec<JobId> = again.peek(10).into_iter().map(|r| r.id).collect();
        assert_eq!(left, vec!["b"]);
        assert!(!again.is_empty());
        assert_eq!(again.path(), path);
    }

    #[test]
    fn the_leases_kept_alive_are_those_of_finished_results_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool.jsonl")).unwrap();
        let mut released = result("r");
        released.status = NodeResultStatus::Released;
        released.result = None;
        let mut failed = result("f");
        failed.status = NodeResultStatus::Failed;
        failed.result = None;
        for spooled in [result("a"), released, failed, result("b")] {
            spool.add(spooled).unwrap();
        }
        assert_eq!(spool.finished_leases(10), ["lease-a", "lease-f", "lease-b"]);
        assert_eq!(spool.finished_leases(2), ["lease-a", "lease-f"]);
    }

    #[test]
    fn a_pack_fits_its_byte_limit_but_always_takes_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool.jsonl")).unwrap();
        for id in ["a", "b", "c"] {
            spool.add(result(id)).unwrap();
        }
        let one = spool.pack(0, 10)[0].bytes;
        // Two items, a comma and the brackets.
        assert_eq!(spool.pack(2 * one + 3, 10).len(), 2);
        assert_eq!(spool.pack(2 * one + 2, 10).len(), 1);
        assert_eq!(spool.pack(1, 10).len(), 1, "the oldest, even if too large");
        assert_eq!(spool.pack(usize::MAX, 2).len(), 2, "the count limit");
        let json = serde_json::to_string(&spool.peek(2)).unwrap();
        assert_eq!(json.len(), 2 * one + 3);
        let mut failed = result("b");
        failed.status = NodeResultStatus::Failed;
        failed.result = None;
        spool.replace(failed).unwrap();
        let reopened = Spool::open(spool.path()).unwrap();
        let statuses: Vec<NodeResultStatus> =
            reopened.peek(3).into_iter().map(|r| r.status).collect();
        assert_eq!(
            statuses,
            [
                NodeResultStatus::Completed,
                NodeResultStatus::Failed,
                NodeResultStatus::Completed
            ]
        );
    }
}
