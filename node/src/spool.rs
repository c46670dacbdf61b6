//! The spool: finished results wait here, in a JSON-lines file, until the gateway has
//! them. A result is written before it is sent, and removed only after the gateway answered
//! for it, so a node that loses the gateway, is restarted or is killed drops nothing.
//!
//! The file only grows while results come and go: a delivered result gets a tombstone line
//! (`{"delivered":{"id":…,"lease_id":…}}`), and a replaced one its new line, which takes its
//! place. It is rewritten whole (atomically, by a rename) only when more than half of its
//! lines are dead, and truncated when nothing is left; so a delivery costs one append, not
//! a rewrite of every result still waiting. Opening the spool compacts it, which also drops
//! a torn last line before anything is appended after it.
//!
//! The file is not fsynced: the kernel keeps what a killed process wrote, and only a crash
//! of the whole machine can lose a spooled result. That costs no result either: its lease
//! lapses, the gateway queues the job again, and it runs once more. An fsync per batch
//! would put a disk flush on the path of every result.

use openbeepboop::{JobId, LeaseId, NodeResult, NodeResultStatus};
use serde::{Deserialize, Serialize};
use std::fs::File;
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

/// How a tombstone line starts; a result's line never does.
const TOMBSTONE: &str = "{\"delivered\":";

/// The tombstone line of a delivered result: `{"delivered":{"id":…,"lease_id":…}}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tombstone {
    delivered: Key,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Key {
    id: JobId,
    lease_id: LeaseId,
}

pub struct Spool {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    pending: Vec<Spooled>,
    /// Lines in the file: the live results' and the dead ones (tombstones, buried or
    /// replaced results). `None` after a failed write, which may have left part of a line:
    /// the next write is a rewrite.
    lines: Option<usize>,
    /// The file, open for appending; reopened after a rewrite or a failed write.
    file: Option<File>,
}

impl Spool {
    /// Opens the spool, loading what an earlier run left in it, and compacts the file.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut pending: Vec<Spooled> = Vec::new();
        let mut lines = 0;
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for line in text.lines().filter(|line| !line.trim().is_empty()) {
                    lines += 1;
                    let read = if line.starts_with(TOMBSTONE) {
                        serde_json::from_str::<Tombstone>(line).map(|t| {
                            pending.retain(|s| !s.is(&t.delivered.id, &t.delivered.lease_id));
                        })
                    } else {
                        serde_json::from_str::<NodeResult>(line).map(|result| {
                            let spooled = Spooled {
                                result,
                                bytes: line.len(),
                            };
                            let (id, lease) = (&spooled.result.id, &spooled.result.lease_id);
                            match pending.iter_mut().find(|s| s.is(id, lease)) {
                                Some(slot) => *slot = spooled,
                                None => pending.push(spooled),
                            }
                        })
                    };
                    if let Err(error) = read {
                        // A torn last line from a crash mid-write: the result was never sent.
                        tracing::warn!(%error, "skipping an unreadable spool line");
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let spool = Self {
            path: path.to_owned(),
            inner: Mutex::new(Inner {
                pending,
                lines: Some(lines),
                file: None,
            }),
        };
        if lines > 0 {
            let mut inner = spool.lock();
            spool.rewrite(&mut inner)?;
        }
        Ok(spool)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().pending.is_empty()
    }

    /// Appends a result to the file. It is kept in memory even when the write fails, so
    /// that it is still delivered while the process lives.
    pub fn add(&self, result: NodeResult) -> std::io::Result<()> {
        let mut inner = self.lock();
        let (spooled, mut line) = Spooled::new(result)?;
        inner.pending.push(spooled);
        line.push('\n');
        self.append(&mut inner, &line, 1)
    }

    /// Up to `limit` results, oldest first.
    pub fn peek(&self, limit: usize) -> Vec<NodeResult> {
        self.lock()
            .pending
            .iter()
            .take(limit)
            .map(|s| s.result.clone())
            .collect()
    }

    /// The leases of the oldest finished results (completed or failed, not hand-backs), at
    /// most `limit`: they must be kept alive until the gateway has the results.
    pub fn finished_leases(&self, limit: usize) -> Vec<LeaseId> {
        self.lock()
            .pending
            .iter()
            .filter(|s| s.result.status != NodeResultStatus::Released)
            .take(limit)
            .map(|s| s.result.lease_id.clone())
            .collect()
    }

    /// The oldest results whose JSON array fits in `max_bytes`, at most `max_count`; always
    /// at least the oldest one (which may not fit), unless the spool is empty.
    pub fn pack(&self, max_bytes: usize, max_count: usize) -> Vec<Spooled> {
        let inner = self.lock();
        let mut batch = Vec::new();
        // `[` and `]`, and a comma before every item but the first.
        let mut total = 2;
        for spooled in inner.pending.iter().take(max_count.max(1)) {
            let added = spooled.bytes + usize::from(!batch.is_empty());
            if !batch.is_empty() && total + added > max_bytes {
                break;
            }
            total += added;
            batch.push(spooled.clone());
        }
        batch
    }

    /// Puts `replacement` in the place of the result of the same job and lease, and appends
    /// it to the file, where it takes that place again on the next open.
    pub fn replace(&self, replacement: NodeResult) -> std::io::Result<()> {
        let mut inner = self.lock();
        let (spooled, mut line) = Spooled::new(replacement)?;
        let (id, lease) = (spooled.result.id.clone(), spooled.result.lease_id.clone());
        let Some(slot) = inner.pending.iter_mut().find(|s| s.is(&id, &lease)) else {
            return Ok(());
        };
        *slot = spooled;
        line.push('\n');
        self.append(&mut inner, &line, 1)
    }

    /// Forgets delivered results (by id and lease), with a tombstone line for each.
    pub fn remove(&self, delivered: &[(JobId, LeaseId)]) -> std::io::Result<()> {
        let mut inner = self.lock();
        let mut text = String::new();
        let mut count = 0;
        for (id, lease_id) in delivered {
            let Some(position) = inner.pending.iter().position(|s| s.is(id, lease_id)) else {
                continue;
            };
            inner.pending.remove(position);
            let tombstone = Tombstone {
                delivered: Key {
                    id: id.clone(),
                    lease_id: lease_id.clone(),
                },
            };
            text.push_str(&serde_json::to_string(&tombstone).map_err(std::io::Error::other)?);
            text.push('\n');
            count += 1;
        }
        if count == 0 {
            return Ok(());
        }
        self.append(&mut inner, &text, count)
    }

    /// Appends `text` (`count` lines), or compacts the file instead when that would leave
    /// more than half of its lines dead, or nothing alive.
    fn append(&self, inner: &mut Inner, text: &str, count: usize) -> std::io::Result<()> {
        let Some(lines) = inner.lines.map(|lines| lines + count) else {
            return self.rewrite(inner);
        };
        if inner.pending.is_empty() || lines > 2 * inner.pending.len() {
            return self.rewrite(inner);
        }
        if inner.file.is_none() {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            inner.file = Some(file);
        }
        let written = match inner.file.as_mut() {
            Some(file) => file.write_all(text.as_bytes()),
            None => Ok(()),
        };
        if written.is_err() {
            // A part of the line may be in the file: the next write is a rewrite.
            inner.file = None;
            inner.lines = None;
            return written;
        }
        inner.lines = Some(lines);
        Ok(())
    }

    /// Writes the live results alone, atomically, and counts only their lines.
    fn rewrite(&self, inner: &mut Inner) -> std::io::Result<()> {
        inner.file = None;
        inner.lines = None;
        if inner.pending.is_empty() {
            // Nothing is left to keep, so truncating in place is as safe as a rename.
            File::create(&self.path)?;
            inner.lines = Some(0);
            return Ok(());
        }
        let temporary = self.path.with_extension("jsonl.tmp");
        let mut text = String::new();
        for spooled in &inner.pending {
            text.push_str(&serde_json::to_string(&spooled.result).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        let mut file = File::create(&temporary)?;
        file.write_all(text.as_bytes())?;
        std::fs::rename(&temporary, &self.path)?;
        inner.lines = Some(inner.pending.len());
        Ok(())
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

    fn lines_of(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_delivery_appends_a_tombstone_and_the_file_is_compacted_once_half_is_dead() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.jsonl");
        let spool = Spool::open(&path).unwrap();
        for id in ["a", "b", "c", "d"] {
            spool.add(result(id)).unwrap();
        }
        spool.remove(&[("a".into(), "lease-a".into())]).unwrap();
        let lines = lines_of(&path);
        assert_eq!(lines.len(), 5, "4 results and a tombstone: {lines:?}");
        assert_eq!(lines[4], r#"{"delivered":{"id":"a","lease_id":"lease-a"}}"#);
        // Reopened, the tombstone buries its result, and the file is compacted.
        let reopened = Spool::open(&path).unwrap();
        let left: Vec<JobId> = reopened.peek(10).into_iter().map(|r| r.id).collect();
        assert_eq!(left, ["b", "c", "d"]);
        assert_eq!(lines_of(&path).len(), 3);
        // 3 live and 3 dead lines is half: kept; one more dead one compacts.
        reopened.remove(&[("b".into(), "lease-b".into())]).unwrap();
        assert_eq!(lines_of(&path).len(), 4);
        reopened
            .remove(&[
                ("c".into(), "lease-c".into()),
                ("x".into(), "lease-x".into()),
            ])
            .unwrap();
        assert_eq!(lines_of(&path).len(), 1, "compacted to the one live result");
        let mut failed = result("d");
        failed.status = NodeResultStatus::Failed;
        reopened.replace(failed).unwrap();
        assert_eq!(lines_of(&path).len(), 2, "the replacement appended");
        let again = Spool::open(&path).unwrap();
        assert_eq!(again.peek(10)[0].status, NodeResultStatus::Failed);
        again.remove(&[("d".into(), "lease-d".into())]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "",
            "emptied, not tombstoned"
        );
    }

    #[test]
    fn a_torn_last_line_is_dropped_on_open_so_the_next_result_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.jsonl");
        Spool::open(&path).unwrap().add(result("a")).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"id\":\"torn")
            .unwrap();
        let spool = Spool::open(&path).unwrap();
        spool.add(result("b")).unwrap();
        let left: Vec<JobId> = Spool::open(&path)
            .unwrap()
            .peek(10)
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(left, ["a", "b"]);
    }
}
