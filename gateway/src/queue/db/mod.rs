//! The seam between the store's SQL and its two engines, SQLite and PostgreSQL.
//!
//! The store's modules write one SQL text for both, in the subset the two share (numbered
//! `?N` parameters, `RETURNING`, `ON CONFLICT`, `IS NOT DISTINCT FROM`, `CAST`), and run it
//! through a [`Conn`]: a connection of either engine with the shape of rusqlite's
//! (`prepare_cached`, `query_row`, `query_map`, `execute`). On PostgreSQL the text is
//! rewritten on the way ([`pg::translate`]: `?N` to `$N`, SQLite's `INDEXED BY` hints
//! dropped); where the engines truly differ a module asks [`Conn::engine`]. Parameters and
//! columns cross as SQLite's five kinds ([`value`]).
//!
//! Every call is blocking. SQLite's run on the writer thread and on tokio's blocking
//! threads; PostgreSQL's drive the async driver from those same threads (see [`pg`]).

pub mod pg;
pub mod value;

use super::StoreError;
pub use value::{FromValue, Param, Params, Value, params_from_iter};

/// The parameters of a statement, numbered from `?1` in order: `params![id, now]`.
macro_rules! params {
    () => {
        [] as [&dyn $crate::queue::db::Param; 0]
    };
    ($($param:expr),+ $(,)?) => {
        [$(&$param as &dyn $crate::queue::db::Param),+]
    };
}
pub(crate) use params;

/// Which engine a connection belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A connection to either engine.
pub enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(pg::Client),
}

impl Conn {
    pub fn engine(&self) -> Engine {
        match self {
            Conn::Sqlite(_) => Engine::Sqlite,
            Conn::Postgres(_) => Engine::Postgres,
        }
    }

    /// `sqlite` or `postgres`, whichever this connection speaks: for the few statements
    /// the two dialects cannot share.
    pub fn pick<'s>(&self, sqlite: &'s str, postgres: &'s str) -> &'s str {
        match self {
            Conn::Sqlite(_) => sqlite,
            Conn::Postgres(_) => postgres,
        }
    }

    /// The SQLite connection, for what only SQLite has (PRAGMAs, the update hook).
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match self {
            Conn::Sqlite(conn) => Some(conn),
            Conn::Postgres(_) => None,
        }
    }

    /// A statement, prepared once per connection and kept.
    pub fn prepare_cached(&self, sql: &str) -> Result<Stmt<'_>, StoreError> {
        Ok(match self {
            Conn::Sqlite(conn) => Stmt::Sqlite(conn.prepare_cached(sql)?),
            Conn::Postgres(client) => Stmt::Postgres(client, client.prepare(sql)?),
        })
    }

    /// The same as [`Conn::prepare_cached`]: every statement is kept.
    pub fn prepare(&self, sql: &str) -> Result<Stmt<'_>, StoreError> {
        self.prepare_cached(sql)
    }

    /// Runs a statement once; returns how many rows it changed.
    pub fn execute(&self, sql: &str, params: impl Params) -> Result<usize, StoreError> {
        self.prepare_cached(sql)?.execute(params)
    }

    /// Runs statements without parameters, separated by semicolons.
    pub fn execute_batch(&self, sql: &str) -> Result<(), StoreError> {
        match self {
            Conn::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Conn::Postgres(client) => client.batch_execute(sql),
        }
    }

    /// The first row of a query, read by `read`; [`StoreError::NoRows`] when there is none.
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: impl Params,
        read: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.prepare_cached(sql)?.query_row(params, read)
    }
}

/// A prepared statement of either engine.
pub enum Stmt<'c> {
    Sqlite(rusqlite::CachedStatement<'c>),
    Postgres(&'c pg::Client, tokio_postgres::Statement),
}

impl Stmt<'_> {
    /// The first row, read by `read`; [`StoreError::NoRows`] when there is none.
    pub fn query_row<T>(
        &mut self,
        params: impl Params,
        read: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let args = params.args();
        match self {
            Stmt::Sqlite(stmt) => {
                let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
                match rows.next()? {
                    Some(row) => read(&Row::Sqlite(row)),
                    None => Err(StoreError::NoRows),
                }
            }
            Stmt::Postgres(client, stmt) => match client.query(stmt, &args)?.first() {
                Some(row) => read(&Row::Postgres(row)),
                None => Err(StoreError::NoRows),
            },
        }
    }

    /// Every row, each read by `read`, in the query's order.
    pub fn query_map<T>(
        &mut self,
        params: impl Params,
        mut read: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<std::vec::IntoIter<Result<T, StoreError>>, StoreError> {
        let args = params.args();
        let mut out = Vec::new();
        match self {
            Stmt::Sqlite(stmt) => {
                let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
                while let Some(row) = rows.next()? {
                    out.push(read(&Row::Sqlite(row)));
                }
            }
            Stmt::Postgres(client, stmt) => {
                for row in &client.query(stmt, &args)? {
                    out.push(read(&Row::Postgres(row)));
                }
            }
        }
        Ok(out.into_iter())
    }

    /// Runs the statement; returns how many rows it changed.
    pub fn execute(&mut self, params: impl Params) -> Result<usize, StoreError> {
        let args = params.args();
        match self {
            Stmt::Sqlite(stmt) => Ok(stmt.execute(rusqlite::params_from_iter(args.iter()))?),
            Stmt::Postgres(client, stmt) => client.execute(stmt, &args),
        }
    }

    /// Whether the query returns any row.
    pub fn exists(&mut self, params: impl Params) -> Result<bool, StoreError> {
        self.query_row(params, |_| Ok(()))
            .optional()
            .map(|found| found.is_some())
    }
}

/// A row of either engine.
pub enum Row<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r tokio_postgres::Row),
}

impl Row<'_> {
    /// Column `index` (from 0) as a `T`; an error names the column and what it held.
    pub fn get<T: FromValue>(&self, index: usize) -> Result<T, StoreError> {
        let value = match self {
            Row::Sqlite(row) => row
                .get_ref(index)
                .map_err(StoreError::from)
                .and_then(|value| {
                    value::from_sqlite(value)
                        .map_err(|message| StoreError::Column { index, message })
                }),
            Row::Postgres(row) => pg::column(row, index),
        }?;
        T::from_value(value).map_err(|message| StoreError::Column { index, message })
    }
}

/// `.optional()` on a single-row read: no row is `None`, not an error.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>, StoreError>;
}

impl<T> OptionalExtension<T> for Result<T, StoreError> {
    fn optional(self) -> Result<Option<T>, StoreError> {
        match self {
            Ok(value) => Ok(Some(value)),
            Err(StoreError::NoRows) => Ok(None),
            Err(error) => Err(error),
        }
    }
}
