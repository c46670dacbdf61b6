//! The batches not yet ended, in memory: each one's row as the last commit left it, so that
//! reading a running batch (`GET /v1/batches/{id}`, polled while it runs) touches no database
//! and waits for no thread. It must never answer for a batch the store would answer otherwise.
//!
//! The store stays the source of truth. SQLite's update hook on the writer's connection
//! reports every row of `batches` a statement changes, whatever the code path; after each
//! commit the writer reads those rows again on its own connection, before it answers any
//! caller, and publishes them here. So a caller that heard `Ok` reads its change, and the
//! counts a line's ending moves are here as soon as the ending is durable. A batch that ends
//! leaves, and is read from the pool like any other. The batches not yet ended are loaded
//! when the store opens, so a restart loses nothing; if a refresh fails, everything here is
//! dropped and reads fall back to the database until each batch changes again.

use super::StoreError;
use super::batch_rows::{self, BatchRecord};
use super::db::Conn;
use super::model::Visibility;
use rusqlite::Connection;
use rusqlite::hooks::Action;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// The batches not yet ended, by id.
#[derive(Debug, Default)]
pub struct LiveBatches {
    by_id: RwLock<HashMap<String, Arc<BatchRecord>>>,
}

impl LiveBatches {
    /// Starts from the batches not yet ended, read when the store opens.
    pub fn seeded(batches: Vec<BatchRecord>) -> Self {
        let by_id = batches
            .into_iter()
            .filter(|batch| !batch.status.is_final())
            .map(|batch| (batch.id.clone(), Arc::new(batch)))
            .collect();
        Self {
            by_id: RwLock::new(by_id),
        }
    }

    /// The batch, when it is here and `who` may see it. `None` means: ask the database.
    pub fn get(&self, id: &str, who: &Visibility) -> Option<BatchRecord> {
        let by_id = self.by_id.read().unwrap_or_else(|e| e.into_inner());
        let batch = by_id.get(id)?;
        match who {
            Visibility::Owner(key_id) if *key_id != batch.owner_key_id => None,
            _ => Some(BatchRecord::clone(batch)),
        }
    }

    /// Reads the rows `seqs` of `batches` again after a commit, on the writer's connection,
    /// and publishes them: a batch not yet ended is replaced, an ended one leaves. A row that
    /// is gone (no code deletes batches today) cannot be matched to its id here, so everything
    /// is dropped, as on an error.
    pub fn refresh(&self, conn: &Conn, seqs: &[i64]) {
        let read: Result<Option<Vec<BatchRecord>>, StoreError> = seqs
            .iter()
            .map(|&seq| batch_rows::by_seq(conn, seq))
            .collect();
        self.publish(read);
    }

    /// Replaces everything here with the batches not yet ended, read on `conn`: on
    /// PostgreSQL, which has no update hook, after a commit that wrote `batches` and when
    /// another gateway says it did.
    pub fn reload(&self, conn: &Conn) {
        let read = batch_rows::active(conn);
        let mut by_id = self.by_id.write().unwrap_or_else(|e| e.into_inner());
        by_id.clear();
        match read {
            Ok(batches) => {
                for batch in batches.into_iter().filter(|b| !b.status.is_final()) {
                    by_id.insert(batch.id.clone(), Arc::new(batch));
                }
            }
            Err(error) => {
                tracing::warn!(error = %error.detail(), "cannot re-read the running batches; their reads go to the database");
            }
        }
    }

    fn publish(&self, read: Result<Option<Vec<BatchRecord>>, StoreError>) {
        let mut by_id = self.by_id.write().unwrap_or_else(|e| e.into_inner());
        match read {
            Ok(None) => by_id.clear(),
            Ok(Some(batches)) => {
                for batch in batches {
                    if batch.status.is_final() {
                        by_id.remove(&batch.id);
                    } else {
                        by_id.insert(batch.id.clone(), Arc::new(batch));
                    }
                }
            }
            Err(error) => {
                // What is here may now be stale: drop it all, and let the database answer.
                tracing::warn!(error = %error.detail(), "cannot re-read changed batches; their reads go to the database");
                by_id.clear();
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_id.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The rows of `batches` that statements on one connection changed since the last
/// [`Touched::take`], as SQLite's update hook reports them. Rows changed by a statement that
/// was then rolled back are reported too: re-reading them finds what was committed.
#[derive(Debug, Clone, Default)]
pub struct Touched(Arc<Mutex<Vec<i64>>>);

impl Touched {
    /// Installs the update hook on `conn`; it replaces any earlier one.
    pub fn watch(&self, conn: &Connection) -> Result<(), StoreError> {
        let rows = Arc::clone(&self.0);
        conn.update_hook(Some(move |_: Action, _: &str, table: &str, rowid: i64| {
            if table == "batches" {
                rows.lock().unwrap_or_else(|e| e.into_inner()).push(rowid);
            }
        }))?;
        Ok(())
    }

    /// The rows changed since the last call, each once, in rowid order.
    pub fn take(&self) -> Vec<i64> {
        let mut rows = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        rows.sort_unstable();
        rows.dedup();
        rows
    }
}
