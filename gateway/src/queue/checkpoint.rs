//! WAL checkpoints off the writer's path.
//!
//! SQLite copies the write-ahead log back into the database file (a checkpoint) by default
//! inside the commit that takes the log past 1,000 pages, and that commit then waits for
//! the copy and its fsync. Measured at 1,000,000 queued jobs (`obb-bench scale`, 1,000
//! keys), those commits were the whole of a lease's p99: 6.9 ms with them, 1.1 ms without.
//! So the writer's own checkpoints start only far later (`WRITER_AUTOCHECKPOINT_PAGES`, a
//! backstop should this thread fall behind), and this thread checkpoints every
//! `CHECKPOINT_EVERY` on its own connection in `PASSIVE` mode, which waits for no reader
//! and no writer. A checkpoint moves no data that was not already durable in the log, so a
//! crash at any point loses nothing.

use super::StoreError;
use rusqlite::Connection;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// How often the checkpointer runs: at 25,000 submits a second the log grows by a few
/// hundred pages in this time, about as much as SQLite's own 1,000-page trigger.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// The log size, in pages of 4 KiB, at which the writer checkpoints in its commit after
/// all: 10 times SQLite's default.
pub const WRITER_AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// The checkpoint thread; it stops when this is dropped.
pub struct Checkpointer {
    _stop: mpsc::Sender<()>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` every [`CHECKPOINT_EVERY`].
    pub fn spawn(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("obb-sqlite-checkpoint".to_owned())
            .spawn(move || {
                // Ends when the sender is dropped (`Disconnected`); nothing is ever sent.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                    if let Err(error) = checkpoint(&conn) {
                        tracing::warn!(%error, "WAL checkpoint failed; the writer's own backstop remains");
                    }
                }
            })
            .map_err(|e| StoreError::WriterThread(Arc::new(e)))?;
        Ok(Self { _stop: stop })
    }
}

/// One `PASSIVE` checkpoint: returns the log's frames and how many of them are now in the
/// database file.
pub fn checkpoint(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((row.get(1)?, row.get(2)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkpointer_moves_the_log_into_the_database_while_the_writer_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL;
                 PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT_PAGES};
                 CREATE TABLE t (x BLOB);"
            ))
            .unwrap();
        // About 2,000 pages: past SQLite's own trigger, short of the writer's.
        for _ in 0..2_000 {
            writer
                .execute("INSERT INTO t VALUES (randomblob(4000))", [])
                .unwrap();
        }
        let reader = Connection::open(&path).unwrap();
        let (frames, done) = checkpoint(&reader).unwrap();
        assert!(frames >= 2_000, "the writer left its log alone: {frames}");
        assert_eq!(
            done, frames,
            "a passive checkpoint with no one else at work moves it all"
        );
        // The thread does the same by itself: the database file grows by what it copies.
        for _ in 0..100 {
            writer
                .execute("INSERT INTO t VALUES (randomblob(4000))", [])
                .unwrap();
        }
        let size = || std::fs::metadata(&path).unwrap().len();
        let before = size();
        let checkpointer = Checkpointer::spawn(&path).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while size() < before + 100 * 4096 {
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint in 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(checkpointer);
    }
}
