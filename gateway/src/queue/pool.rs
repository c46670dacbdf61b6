//! The read pool: deadpool's pool of read connections of either engine (read-only SQLite
//! connections, or PostgreSQL ones), each used on tokio's blocking threads.
//!
//! The connection wrapper is ours, not deadpool-sqlite's: that one panics ("Task has been
//! cancelled") when the runtime shuts down while it opens a connection, which a read racing
//! a SIGINT did. Here a cancelled open or read is [`StoreError::Closed`], an error like any
//! other. Checking a connection out costs no query: a connection to a local file does not
//! go stale the way a network one does, so only one whose mutex a panicking read poisoned
//! is refused.

use super::StoreError;
use super::db::{Conn, pg};
use super::schema::STATEMENT_CACHE;
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use rusqlite::Connection;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::task::JoinError;

/// A read connection, shared with the blocking thread that runs its current read.
pub struct ReadConnection(Arc<Mutex<Conn>>);

impl ReadConnection {
    /// Runs `f` on a blocking thread, so that SQLite never blocks the async workers.
    pub async fn interact<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || {
            let conn = conn
                .lock()
                .map_err(|_| StoreError::ReadAborted("an earlier read panicked".to_owned()))?;
            f(&conn)
        })
        .await
        .map_err(unfinished)?
    }
}

/// A blocking task that did not finish: cancelled because the runtime is shutting down,
/// or panicked.
fn unfinished(error: JoinError) -> StoreError {
    if error.is_cancelled() {
        StoreError::Closed
    } else {
        StoreError::ReadAborted(error.to_string())
    }
}

/// Where read connections come from.
pub enum Source {
    /// The SQLite file.
    Sqlite(PathBuf),
    /// The PostgreSQL database of the store's runtime.
    Postgres(Arc<pg::Runtime>),
}

/// Opens read connections to the database and hands them out as they are.
pub struct ReadManager {
    source: Source,
}

pub type ReadPool = managed::Pool<ReadManager>;

impl managed::Manager for ReadManager {
    type Type = ReadConnection;
    type Error = StoreError;

    async fn create(&self) -> Result<Self::Type, Self::Error> {
        let conn = match &self.source {
            Source::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || -> Result<Conn, StoreError> {
                    let conn = Connection::open(path)?;
                    // rusqlite's default of 16 statements is fewer than the reads use.
                    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                    conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;")?;
                    Ok(Conn::Sqlite(conn))
                })
                .await
                .map_err(unfinished)??
            }
            Source::Postgres(runtime) => Conn::Postgres(runtime.connect_async().await?),
        };
        Ok(ReadConnection(Arc::new(Mutex::new(conn))))
    }

    async fn recycle(&self, conn: &mut Self::Type, _: &Metrics) -> RecycleResult<Self::Error> {
        // Never waits: a read whose caller went away may still hold the lock.
        match conn.0.try_lock().as_deref() {
            Err(std::sync::TryLockError::Poisoned(_)) => Err(RecycleError::message(
                "a read panicked while holding this connection",
            )),
            // A network connection can end under the pool: the server restarted, or a
            // proxy timed it out.
            Ok(Conn::Postgres(client)) if client.is_closed() => {
                Err(RecycleError::message("the PostgreSQL connection is closed"))
            }
            _ => Ok(()),
        }
    }
}

/// Runs a read on a pooled connection.
pub async fn read<T, F>(pool: &ReadPool, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&Conn) -> Result<T, StoreError> + Send + 'static,
{
    let conn = pool.get().await.map_err(|e| match e {
        managed::PoolError::Backend(e) => e,
        other => StoreError::Pool(other.to_string()),
    })?;
    conn.interact(f).await
}

/// A pool of up to `size` read connections to `source`.
pub fn build(source: Source, size: usize) -> Result<ReadPool, managed::BuildError> {
    managed::Pool::builder(ReadManager { source })
        .max_size(size)
        .build()
}
