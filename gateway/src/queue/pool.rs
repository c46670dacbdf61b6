//! The read pool: deadpool-sqlite's connections, with a checkout that costs no round trip.
//!
//! deadpool-sqlite checks a connection on every checkout by running a query on the blocking
//! pool, which doubles the thread hops of every read. A SQLite connection to a local file
//! does not go stale the way a network connection does, so checking out only refuses a
//! connection whose mutex a panicking read poisoned.

use super::StoreError;
use super::schema::STATEMENT_CACHE;
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool_sqlite::Runtime;
use std::path::Path;

/// Opens read-only connections to the database and hands them out as they are.
pub struct ReadManager {
    opener: deadpool_sqlite::Manager,
}

pub type ReadPool = managed::Pool<ReadManager>;

impl managed::Manager for ReadManager {
    type Type = <deadpool_sqlite::Manager as managed::Manager>::Type;
    type Error = StoreError;

    async fn create(&self) -> Result<Self::Type, Self::Error> {
        let conn = managed::Manager::create(&self.opener).await?;
        conn.interact(|conn| {
            // rusqlite's default of 16 statements is fewer than the reads use.
            conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;")
        })
        .await
        .map_err(|e| StoreError::ReadAborted(e.to_string()))??;
        Ok(conn)
    }

    async fn recycle(&self, conn: &mut Self::Type, _: &Metrics) -> RecycleResult<Self::Error> {
        if conn.is_mutex_poisoned() {
            Err(RecycleError::message(
                "a read panicked while holding this connection",
            ))
        } else {
            Ok(())
        }
    }
}

/// A pool of up to `size` read connections to the database at `path`.
pub fn build(path: &Path, size: usize) -> Result<ReadPool, managed::BuildError> {
    let opener =
        deadpool_sqlite::Manager::from_config(&deadpool_sqlite::Config::new(path), Runtime::Tokio1);
    managed::Pool::builder(ReadManager { opener })
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .build()
}
