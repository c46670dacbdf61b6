//! PostgreSQL through `tokio-postgres`, called from blocking code.
//!
//! The store's SQL runs on the writer thread and on tokio's blocking threads, as SQLite's
//! does. Each [`Client`] owns a current-thread tokio runtime on which its connection's task
//! runs, driven by the thread that calls it, inside its `block_on`: a query and its answer
//! cross no thread (handing each round trip to another thread's runtime and back cost as
//! much as PostgreSQL's work on it), and no connection depends on pingora's runtimes, which
//! belong to its services and stop with them. The `LISTEN` connection, which must be polled
//! whether or not anyone queries, lives on the store's one-thread runtime ([`Runtime`]).

use super::value::ValueRef;
use crate::queue::StoreError;
use bytes::{BufMut, BytesMut};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::error::Error;
use std::sync::Arc;
use tokio::runtime::Handle;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{NoTls, Statement};

type BoxError = Box<dyn Error + Sync + Send>;

/// The start of every gateway connection's `application_name`.
pub const APPLICATION: &str = "obb-gateway";

/// The store's PostgreSQL server and its runtime: one worker thread for the `LISTEN`
/// connection. Stopped without waiting when the store is dropped.
pub struct Runtime {
    runtime: Option<tokio::runtime::Runtime>,
    handle: Handle,
    config: tokio_postgres::Config,
    /// The URL with its password hidden, for messages.
    shown: String,
    /// This process's name among the gateways of the database: in its notifications, and
    /// its connections' `application_name` (`obb-gateway <name>`).
    name: String,
}

impl Runtime {
    /// Parses `url` (`postgres://user[:password]@host[:port]/database`); connects nothing.
    pub fn new(url: &str) -> Result<Arc<Self>, StoreError> {
        let shown = redacted(url);
        let mut config =
            url.parse::<tokio_postgres::Config>()
                .map_err(|e| StoreError::Postgres {
                    what: format!("`{shown}` is not a PostgreSQL URL"),
                    source: Arc::new(e),
                })?;
        // A server gone without a word (a failover, a dropped route) must fail a query, not
        // hang it: the writer and the listener reconnect after a failure. The URL's own
        // settings win.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(std::time::Duration::from_secs(30));
        }
        config.keepalives_idle(std::time::Duration::from_secs(30));
        let name = format!("gw_{}", uuid::Uuid::new_v4().simple());
        // How gateways see each other in `pg_stat_activity` (see `leases::grant_grace`).
        config.application_name(format!("{APPLICATION} {name}"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("obb-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::WriterThread(Arc::new(e)))?;
        Ok(Arc::new(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            config,
            shown,
            name,
        }))
    }

    /// This process's name among the gateways of the database.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Opens a connection on a runtime of its own. Blocking: from the writer thread or a
    /// blocking thread, never from async code (see [`Runtime::connect_async`]).
    pub fn connect(&self) -> Result<Client, StoreError> {
        let local = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::WriterThread(Arc::new(e)))?;
        let (client, connection) =
            local
                .block_on(self.config.connect(NoTls))
                .map_err(|e| StoreError::Postgres {
                    what: format!("cannot connect to `{}`", self.shown),
                    source: Arc::new(e),
                })?;
        local.spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "a PostgreSQL connection ended");
            }
        });
        Ok(Client {
            client,
            local: Local(Some(local)),
            statements: RefCell::new(HashMap::new()),
            pending: RefCell::new(String::new()),
            wrote_batches: Cell::new(false),
        })
    }

    /// [`Runtime::connect`] from async code, on a blocking thread.
    pub async fn connect_async(self: &Arc<Self>) -> Result<Client, StoreError> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.connect())
            .await
            .map_err(|e| StoreError::ReadAborted(e.to_string()))?
    }

    /// Opens the `LISTEN` connection: its notifications go to `sink` until it ends.
    pub async fn listen(
        self: &Arc<Self>,
        channel: &'static str,
        sink: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<tokio::task::JoinHandle<()>, StoreError> {
        let config = self.config.clone();
        let shown = self.shown.clone();
        self.handle()
            .spawn(async move {
                let (client, mut connection) = config.connect(NoTls).await?;
                // The connection must be polled for `LISTEN` to be answered.
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    use futures_util::StreamExt;
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(tokio_postgres::AsyncMessage::Notification(note)) => {
                                if sink.send(note.payload().to_owned()).is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(error) => {
                                tracing::warn!(%error, "the PostgreSQL LISTEN connection ended");
                                break;
                            }
                        }
                    }
                });
                client.batch_execute(&format!("LISTEN {channel}")).await?;
                // Keeps the client, and so the connection, as long as it listens.
                let holder = tokio::spawn(async move {
                    let _ = driver.await;
                    drop(client);
                });
                Ok::<_, tokio_postgres::Error>(holder)
            })
            .await
            .map_err(|e| StoreError::ReadAborted(e.to_string()))?
            .map_err(|e| StoreError::Postgres {
                what: format!("cannot connect to `{shown}` to listen"),
                source: Arc::new(e),
            })
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Dropping a runtime blocks, which panics inside async code; this does not.
            runtime.shutdown_background();
        }
    }
}

/// A connection's own runtime, stopped without waiting when dropped: a blocking shutdown
/// would panic where deadpool drops a connection, inside async code.
struct Local(Option<tokio::runtime::Runtime>);

impl Drop for Local {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// A connection, used from one blocking thread at a time.
pub struct Client {
    client: tokio_postgres::Client,
    local: Local,
    /// Statements prepared on this connection, by their SQLite-dialect text.
    statements: RefCell<HashMap<String, Statement>>,
    /// Transaction control (`BEGIN`, `SAVEPOINT`, `RELEASE`, …) not yet sent: it goes with
    /// the next request, in the same round trip (see [`Client::defer`]).
    pending: RefCell<String>,
    /// A statement that writes `batches` ran since [`Client::take_wrote_batches`]: the
    /// writer's stand-in for SQLite's update hook (see `live_batches`).
    wrote_batches: Cell<bool>,
}

impl Client {
    fn run<T>(
        &self,
        what: &str,
        work: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        let Some(local) = &self.local.0 else {
            return Err(StoreError::Closed);
        };
        let control = std::mem::take(&mut *self.pending.borrow_mut());
        local.block_on(async {
            if control.is_empty() {
                return work.await.map_err(|e| error(what, e));
            }
            // Both go out before either answer is awaited: the driver pipelines them.
            let (sent, result) = futures_util::join!(self.client.batch_execute(&control), work);
            sent.map_err(|e| error("transaction control failed", e))?;
            result.map_err(|e| error(what, e))
        })
    }

    /// The statement for `sql`, prepared on first use.
    pub fn prepare(&self, sql: &str) -> Result<Statement, StoreError> {
        if sql.contains("UPDATE batches") || sql.contains("INTO batches") {
            self.wrote_batches.set(true);
        }
        if let Some(statement) = self.statements.borrow().get(sql) {
            return Ok(statement.clone());
        }
        let translated = translate(sql);
        let statement = self.run(
            "cannot prepare a statement",
            self.client.prepare(&translated),
        )?;
        self.statements
            .borrow_mut()
            .insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    pub fn query(
        &self,
        statement: &Statement,
        args: &[ValueRef<'_>],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let params = args
            .iter()
            .map(|arg| arg as &(dyn ToSql + Sync))
            .collect::<Vec<_>>();
        self.run("a query failed", self.client.query(statement, &params))
    }

    pub fn execute(
        &self,
        statement: &Statement,
        args: &[ValueRef<'_>],
    ) -> Result<usize, StoreError> {
        let params = args
            .iter()
            .map(|arg| arg as &(dyn ToSql + Sync))
            .collect::<Vec<_>>();
        self.run(
            "a statement failed",
            self.client.execute(statement, &params),
        )
        .map(|n| n as usize)
    }

    /// Queues transaction control statements to go out with the next request, in one
    /// round trip with it: a group commit's `BEGIN`, each operation's savepoint and its
    /// release cost no round trip of their own. An error in them is the next request's.
    pub fn defer(&self, sql: &str) {
        let mut pending = self.pending.borrow_mut();
        if !pending.is_empty() {
            pending.push_str("; ");
        }
        pending.push_str(sql);
    }

    /// Drops what [`Client::defer`] queued, unsent.
    pub fn discard_deferred(&self) {
        self.pending.borrow_mut().clear();
    }

    pub fn batch_execute(&self, sql: &str) -> Result<(), StoreError> {
        self.run("statements failed", self.client.batch_execute(sql))
    }

    /// Whether a statement wrote `batches` since the last call.
    pub fn take_wrote_batches(&self) -> bool {
        self.wrote_batches.replace(false)
    }

    /// Whether a statement wrote `batches` since the last take, without taking it.
    pub fn wrote_batches(&self) -> bool {
        self.wrote_batches.get()
    }

    /// Whether the connection is gone (the server closed it, or the network did).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

/// A driver error as a store error: a unique violation, a deadlock or a serialization
/// failure keep their SQLSTATE so that callers can tell them apart.
fn error(what: &str, error: tokio_postgres::Error) -> StoreError {
    StoreError::Postgres {
        what: what.to_owned(),
        source: Arc::new(error),
    }
}

/// Column `index` of a PostgreSQL row as one of SQLite's kinds.
pub fn column<'r>(row: &'r tokio_postgres::Row, index: usize) -> Result<ValueRef<'r>, StoreError> {
    row.try_get::<_, Column<'r>>(index)
        .map(|column| column.0)
        .map_err(|e| StoreError::Column {
            index,
            message: e.to_string(),
        })
}

struct Column<'a>(ValueRef<'a>);

impl<'a> FromSql<'a> for Column<'a> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(Column(match *ty {
            Type::INT8 => ValueRef::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => ValueRef::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => ValueRef::Int(i16::from_sql(ty, raw)?.into()),
            Type::OID => ValueRef::Int(u32::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => ValueRef::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => ValueRef::Real(f32::from_sql(ty, raw)?.into()),
            Type::BOOL => ValueRef::Int(bool::from_sql(ty, raw)?.into()),
            Type::BYTEA => ValueRef::Blob(raw),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::JSON => {
                ValueRef::Text(std::str::from_utf8(raw)?)
            }
            // jsonb's binary form is a version byte, then the text.
            Type::JSONB => ValueRef::Text(std::str::from_utf8(raw.get(1..).unwrap_or(&[]))?),
            ref other => {
                return Err(format!("cannot read a column of type {other}: cast it").into());
            }
        }))
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Column(ValueRef::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

impl ToSql for ValueRef<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match (*self, ty) {
            (ValueRef::Null, _) => Ok(IsNull::Yes),
            (ValueRef::Int(v), &Type::INT8) => v.to_sql(ty, out),
            (ValueRef::Int(v), &Type::INT4) => i32::try_from(v)?.to_sql(ty, out),
            (ValueRef::Int(v), &Type::INT2) => i16::try_from(v)?.to_sql(ty, out),
            (ValueRef::Int(v), &Type::BOOL) => (v != 0).to_sql(ty, out),
            (ValueRef::Int(v), &Type::FLOAT8) => (v as f64).to_sql(ty, out),
            (ValueRef::Int(v), &Type::TEXT | &Type::VARCHAR) => v.to_string().to_sql(ty, out),
            (ValueRef::Real(v), &Type::FLOAT8) => v.to_sql(ty, out),
            (ValueRef::Real(v), &Type::FLOAT4) => (v as f32).to_sql(ty, out),
            (ValueRef::Text(v), &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME) => {
                v.to_sql(ty, out)
            }
            (ValueRef::Text(v), &Type::JSON) => {
                out.put_slice(v.as_bytes());
                Ok(IsNull::No)
            }
            (ValueRef::Text(v), &Type::JSONB) => {
                out.put_u8(1);
                out.put_slice(v.as_bytes());
                Ok(IsNull::No)
            }
            (ValueRef::Text(v), &Type::BYTEA) => v.as_bytes().to_sql(ty, out),
            (ValueRef::Blob(v), &Type::BYTEA) => v.to_sql(ty, out),
            (arg, ty) => Err(format!("cannot bind {arg:?} as PostgreSQL's {ty}").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// The store's SQL in PostgreSQL's dialect: `?N` becomes `$N` (a bare `?` takes the next
/// number, as in SQLite), and SQLite's planner hints are dropped: `INDEXED BY <index>`, and
/// the unary `+` that keeps a column off an index (`+status`, after a space). Quoted text
/// is left as it is.
pub fn translate(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.char_indices().peekable();
    let mut highest = 0u32;
    let mut quoted = false;
    while let Some((at, c)) = chars.next() {
        if quoted {
            out.push(c);
            if c == '\'' {
                quoted = false;
            }
            continue;
        }
        match c {
            '\'' => {
                quoted = true;
                out.push(c);
            }
            '?' => {
                let mut digits = String::new();
                while let Some((_, d)) = chars.peek().filter(|(_, d)| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let number = digits.parse().unwrap_or(highest + 1);
                highest = highest.max(number);
                out.push('$');
                out.push_str(&number.to_string());
            }
            'I' if sql[at..].starts_with("INDEXED BY ") => {
                // Skip the hint and its index name.
                let rest = &sql[at + "INDEXED BY ".len()..];
                let name = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                let skip = "INDEXED BY ".len() + name;
                for _ in 1..skip {
                    chars.next();
                }
            }
            // Only a prefix `+` after a keyword or an opening parenthesis: `a +b` stays.
            '+' if ["AND", "OR", "WHERE", "("]
                .iter()
                .any(|before| out.trim_end_matches(' ').ends_with(before))
                && out.ends_with(' ')
                && chars
                    .peek()
                    .is_some_and(|(_, next)| next.is_ascii_alphabetic()) => {}
            _ => out.push(c),
        }
    }
    out
}

/// `url` with its password, if any, replaced by `***`.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{scheme}://{name}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translate_numbers_parameters_drops_index_hints_and_leaves_quotes_alone() {
        assert_eq!(
            translate("SELECT a FROM jobs INDEXED BY jobs_by_owner WHERE id = ?1 AND b = ?12"),
            "SELECT a FROM jobs  WHERE id = $1 AND b = $12"
        );
        assert_eq!(
            translate("WHERE +status = ?1 AND attempts + 1 > ?2 AND a +b > 0"),
            "WHERE status = $1 AND attempts + 1 > $2 AND a +b > 0"
        );
        assert_eq!(
            translate("WHERE 1 = 1 AND +status = ?1"),
            "WHERE 1 = 1 AND status = $1"
        );
        assert_eq!(translate("VALUES (?, ?, ?5, ?)"), "VALUES ($1, $2, $5, $6)");
        assert_eq!(
            translate("SELECT '?1 INDEXED BY x' || ?1"),
            "SELECT '?1 INDEXED BY x' || $1"
        );
    }

    #[test]
    fn redacted_hides_only_the_password() {
        assert_eq!(
            redacted("postgres://obb:pw@db:5432/q"),
            "postgres://obb:***@db:5432/q"
        );
        assert_eq!(redacted("postgres://obb@db/q"), "postgres://obb@db/q");
        assert_eq!(redacted("postgresql://db/q"), "postgresql://db/q");
    }
}
