//! Group fsync of the write-ahead log, for commits made without one (`Durability::Relaxed`)
//! whose caller must not answer before they are on disk (a held submit, see
//! `Queue::enqueue_relaxed`). Callers that ask while an fsync runs share the next one, so
//! 32 waiters cost about two fsyncs, not 32.

use super::StoreError;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

pub struct Syncer {
    wal: PathBuf,
    state: Mutex<State>,
    /// The last ticket whose fsync finished, and its outcome.
    done: watch::Sender<(u64, Option<Arc<std::io::Error>>)>,
}

#[derive(Default)]
struct State {
    /// The last ticket handed out.
    requested: u64,
    /// An fsync loop runs.
    running: bool,
}

/// Flushes `wal`; a log that does not exist holds nothing to flush.
fn flush(wal: &std::path::Path) -> std::io::Result<()> {
    match std::fs::File::open(wal) {
        Ok(file) => file.sync_data(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

impl Syncer {
    pub fn new(wal: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            wal,
            state: Mutex::new(State::default()),
            done: watch::channel((0, None)).0,
        })
    }

    /// Asks for an fsync that begins after every commit that returned before this call,
    /// and starts one at once unless one runs; [`Syncer::wait`] for its ticket.
    pub fn ticket(self: &Arc<Self>) -> u64 {
        let (ticket, start) = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.requested += 1;
            let start = !state.running;
            state.running = true;
            (state.requested, start)
        };
        if start {
            let syncer = Arc::clone(self);
            // Finite: it ends when no ticket is left, so its handle is not kept.
            drop(tokio::task::spawn_blocking(move || syncer.run()));
        }
        ticket
    }

    /// Returns once `ticket`'s fsync finished: durable, or its error.
    pub async fn wait(&self, ticket: u64) -> Result<(), StoreError> {
        let mut done = self.done.subscribe();
        loop {
            {
                let (finished, error) = &*done.borrow_and_update();
                if *finished >= ticket {
                    return match error {
                        None => Ok(()),
                        Some(error) => Err(StoreError::Sync(Arc::clone(error))),
                    };
                }
            }
            if done.changed().await.is_err() {
                return Err(StoreError::Closed);
            }
        }
    }

    /// Flushes until every ticket handed out is covered by an fsync that began after it.
    fn run(&self) {
        loop {
            let target = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if self.done.borrow().0 >= state.requested {
                    state.running = false;
                    return;
                }
                state.requested
            };
            let outcome = flush(&self.wal).err().map(Arc::new);
            self.done.send_replace((target, outcome));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_callers_share_fsyncs_and_all_return() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("queue.db-wal");
        std::fs::write(&wal, b"frames").unwrap();
        let syncer = Syncer::new(wal);
        let calls = (0..64).map(|_| {
            let syncer = Arc::clone(&syncer);
            tokio::spawn(async move { syncer.wait(syncer.ticket()).await })
        });
        for call in futures_util::future::join_all(calls).await {
            call.unwrap().unwrap();
        }
        assert!(syncer.done.borrow().0 >= 64);
        assert!(!syncer.state.lock().unwrap().running);
    }

    #[tokio::test]
    async fn a_missing_log_is_nothing_to_flush_and_a_bad_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let absent = Syncer::new(dir.path().join("absent-wal"));
        absent.wait(absent.ticket()).await.unwrap();
        // A path under a regular file cannot be opened.
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let broken = Syncer::new(file.join("wal"));
        let error = broken.wait(broken.ticket()).await.unwrap_err();
        assert!(matches!(error, StoreError::Sync(_)), "{error:?}");
    }
}
