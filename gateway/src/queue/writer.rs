//! The single writer: one thread owns the only writing connection and commits operations
//! in groups.
//!
//! Callers send closures; the thread drains whatever is waiting (up to a batch limit),
//! runs each closure in its own savepoint, commits once with `synchronous=FULL`, and only
//! then answers each caller and publishes the changes. So a caller that hears `Ok` knows
//! its change is on disk, and concurrent callers share one fsync.

use super::db::{Conn, Engine};
use super::depth::Depth;
use super::fair::Fair;
use super::live_batches::{LiveBatches, Touched};
use super::nodes::Drained;
use super::notify::{Change, Notifier};
use super::shared::{self, Heard};
use super::{QueueEvent, StoreError, now_ms};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// What an operation sees: the connection inside its savepoint, the batch's clock, and a
/// list where it records the jobs whose status it changed.
pub struct WriteCtx<'a> {
    pub conn: &'a Conn,
    pub now: i64,
    pub changes: Vec<Change>,
    /// What happened, for the metrics; reported only if the batch commits.
    pub events: Vec<QueueEvent>,
    /// The changes of the operations before this one in the same group: committed with it,
    /// but not yet in the in-memory counts (a lease reads them so that two fetches in one
    /// group do not both fill a key's `max_concurrent_jobs`).
    pub earlier: &'a [Change],
    /// Whether anyone waits on a job's changes: a final change of a watched job reads the
    /// job in its transaction, for the waiter (see `Change::record`).
    pub watched: &'a (dyn Fn(&str) -> bool + Sync),
}

/// Called after every successful group commit, with its statistics and events.
pub type OnCommit = Arc<dyn Fn(CommitStats, &[QueueEvent]) + Send + Sync>;

/// How durable an operation's commit must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL` (PostgreSQL: `synchronous_commit`): on disk before the caller
    /// hears of it. Everything a user or a node
    /// is told was stored: submits, results, cancels, keys.
    Full,
    /// `synchronous=NORMAL` (PostgreSQL: `synchronous_commit = off`): survives a crash of the process but not of the machine. Only for
    /// lease bookkeeping (lease, heartbeat, reap), whose loss on power failure is harmless: the
    /// job returns to the queue and a late result is `stale`. The next full commit syncs it.
    Relaxed,
}

type Finish = Box<dyn FnOnce(Option<StoreError>) + Send>;
/// Runs an operation (`Some`) or, when the batch could not start, only prepares its
/// answer (`None`). Returns whether it succeeded and how to answer its caller.
type Op = Box<dyn FnOnce(Option<&mut WriteCtx<'_>>) -> (bool, Finish) + Send>;

/// How one commit went, for the metrics.
#[derive(Debug, Clone, Copy)]
pub struct CommitStats {
    pub ops: usize,
    pub latency: Duration,
}

/// What the writer thread is asked to do.
enum Message {
    /// An operation, in the next group commit.
    Op(Durability, Op),
    /// A re-count after other gateways' commits, between two groups (see `shared`).
    Resync(Heard),
}

/// The sending half; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    ops: mpsc::UnboundedSender<Message>,
}

impl Writer {
    /// Starts the writer thread on `conn`. It stops when every `Writer` is dropped.
    pub fn spawn(
        conn: Conn,
        observers: Observers,
        max_batch: usize,
        on_commit: OnCommit,
    ) -> Result<Self, StoreError> {
        let (sender, receiver) = mpsc::unbounded_channel();
        // Installed before the first operation, so no change to a batch goes unseen.
        let touched = Touched::default();
        if let Some(sqlite) = conn.sqlite() {
            touched.watch(sqlite)?;
        }
        std::thread::Builder::new()
            .name("obb-writer".to_owned())
            .spawn(move || {
                run(
                    conn,
                    receiver,
                    &observers,
                    &touched,
                    max_batch,
                    on_commit.as_ref(),
                );
            })
            .map_err(|e| StoreError::WriterThread(Arc::new(e)))?;
        Ok(Self { ops: sender })
    }

    /// Runs `op` in the next group commit and returns its result once it is durable.
    pub async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_with(Durability::Full, op).await
    }

    /// Runs `op` in the next group commit with the given durability.
    pub async fn write_with<T, F>(&self, durability: Durability, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let boxed: Op = Box::new(move |ctx| match ctx.map(op) {
            Some(Ok(value)) => (
                true,
                Box::new(move |commit_error: Option<StoreError>| {
                    let _ = reply.send(match commit_error {
                        None => Ok(value),
                        Some(e) => Err(e),
                    });
                }),
            ),
            Some(Err(e)) => (
                false,
                Box::new(move |_| {
                    let _ = reply.send(Err(e));
                }),
            ),
            None => (
                false,
                Box::new(move |commit_error: Option<StoreError>| {
                    let _ = reply.send(Err(commit_error.unwrap_or(StoreError::Closed)));
                }),
            ),
        });
        self.ops
            .send(Message::Op(durability, boxed))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Asks for a re-count after other gateways' commits; fails once the writer stopped.
    pub fn resync(&self, heard: Heard) -> Result<(), StoreError> {
        self.ops
            .send(Message::Resync(heard))
            .map_err(|_| StoreError::Closed)
    }
}

/// What learns of every committed change: the waiters, the depth counts, the fair share's
/// counts and the batches not yet ended.
pub struct Observers {
    pub notifier: Arc<Notifier>,
    pub depth: Arc<Depth>,
    pub fair: Arc<Fair>,
    pub batches: Arc<LiveBatches>,
    pub drained: Drained,
    /// On PostgreSQL, this gateway's name in its notifications to the others.
    pub gateway: Option<String>,
    /// On PostgreSQL, the server to connect to again when the writer's connection is lost.
    pub server: Option<Arc<super::db::pg::Runtime>>,
}

fn run(
    mut conn: Conn,
    mut receiver: mpsc::UnboundedReceiver<Message>,
    observers: &Observers,
    touched: &Touched,
    max_batch: usize,
    on_commit: &(dyn Fn(CommitStats, &[QueueEvent]) + Send + Sync),
) {
    let mut batch = Vec::with_capacity(max_batch);
    let mut current = Durability::Full;
    let mut heard: Option<Heard> = None;
    while let Some(message) = receiver.blocking_recv() {
        if let Some(again) = reconnected(&conn, observers) {
            conn = again;
            // What happened while it was gone is read again.
            heard.get_or_insert_with(Heard::default).everything = true;
        }
        let (first_durability, first) = match message {
            Message::Op(durability, op) => (durability, op),
            Message::Resync(more) => {
                // Re-counted before the next group; with a group, after it.
                heard.get_or_insert_with(Heard::default).add(more);
                match receiver.try_recv() {
                    Ok(Message::Op(durability, op)) => (durability, op),
                    Ok(Message::Resync(more)) => {
                        heard.get_or_insert_with(Heard::default).add(more);
                        recount(&conn, observers, heard.take());
                        continue;
                    }
                    Err(_) => {
                        recount(&conn, observers, heard.take());
                        continue;
                    }
                }
            }
        };
        // A batch is as durable as its most demanding operation.
        let mut durability = first_durability;
        batch.push(first);
        while batch.len() < max_batch {
            match receiver.try_recv() {
                Ok(Message::Op(wanted, op)) => {
                    if wanted == Durability::Full {
                        durability = Durability::Full;
                    }
                    batch.push(op);
                }
                // Kept for after this group: a re-count never runs inside one.
                Ok(Message::Resync(more)) => heard.get_or_insert_with(Heard::default).add(more),
                Err(_) => break,
            }
        }
        if let (Some(sqlite), true) = (conn.sqlite(), durability != current) {
            let level = match durability {
                Durability::Full => "FULL",
                Durability::Relaxed => "NORMAL",
            };
            if let Err(error) = sqlite.pragma_update(None, "synchronous", level) {
                tracing::warn!(%error, "cannot change the commit durability");
            } else {
                current = durability;
            }
        }
        let started = Instant::now();
        let ops = batch.len();
        let watched = |id: &str| observers.notifier.is_watched(id);
        let (finishes, outcome) = commit_batch(
            &conn,
            durability,
            batch.drain(..),
            &watched,
            observers.gateway.as_deref(),
        );
        // Rows of `batches` the group's statements changed, whether or not they were rolled
        // back: re-read, they show what is committed. Before any caller hears `Ok`, so it
        // reads its own change.
        match &conn {
            Conn::Sqlite(_) => {
                let batches = touched.take();
                if !batches.is_empty() {
                    observers.batches.refresh(&conn, &batches);
                }
            }
            Conn::Postgres(client) => {
                if client.take_wrote_batches() {
                    observers.batches.reload(&conn);
                }
            }
        }
        match outcome {
            Ok((changes, events)) => {
                observers.depth.apply(&changes);
                // A run ended: its key's token budget gets its estimate back, less what ran.
                for event in &events {
                    match event {
                        QueueEvent::Tokens {
                            prompt,
                            completion,
                            owner,
                            estimated,
                            ..
                        } => observers.fair.settle(
                            owner,
                            *estimated,
                            prompt.saturating_add(*completion),
                        ),
                        QueueEvent::TokensReturned { owner, estimated } => {
                            observers.fair.settle(owner, *estimated, 0);
                        }
                        _ => {}
                    }
                }
                if observers.fair.apply(&changes) {
                    // A key held back by its concurrency cap has room: its jobs may be leased.
                    observers.notifier.wake_nodes();
                }
                observers.notifier.publish(&changes);
                for finish in finishes {
                    finish(None);
                }
                on_commit(
                    CommitStats {
                        ops,
                        latency: started.elapsed(),
                    },
                    &events,
                );
            }
            Err(error) => {
                tracing::error!(error = %error.detail(), ops, "group commit failed; every operation in it is rolled back");
                for finish in finishes {
                    finish(Some(error.clone()));
                }
            }
        }
        if heard.is_some() {
            recount(&conn, observers, heard.take());
        }
    }
}

/// A new connection when the writer's PostgreSQL connection is gone (the server restarted
/// or failed over, or the network dropped it): the group that found out failed, and the
/// next one runs on the new connection. `None` while the connection lives, and when the
/// server cannot be reached yet (the next group tries again).
fn reconnected(conn: &Conn, observers: &Observers) -> Option<Conn> {
    let (Conn::Postgres(client), Some(server)) = (conn, &observers.server) else {
        return None;
    };
    if !client.is_closed() {
        return None;
    }
    match server.connect() {
        Ok(client) => {
            tracing::warn!("the writer's PostgreSQL connection was lost; connected again");
            Some(Conn::Postgres(client))
        }
        Err(error) => {
            tracing::warn!(error = %error.detail(), "the writer's PostgreSQL connection was lost; cannot connect again yet");
            None
        }
    }
}

/// Re-counts after other gateways' commits (see `shared`).
fn recount(conn: &Conn, observers: &Observers, heard: Option<Heard>) {
    let heard = heard.unwrap_or_default();
    let counted = shared::Counted {
        depth: &observers.depth,
        fair: &observers.fair,
        batches: &observers.batches,
        notifier: &observers.notifier,
        drained: &observers.drained,
    };
    if let Err(error) = shared::resync(conn, &counted, &heard) {
        tracing::warn!(error = %error.detail(), "cannot re-count the queue after other gateways' commits");
    }
}

/// Runs a transaction control statement. SQLite's are prepared once and cached: parsing
/// them for every operation cost more than many of the operations themselves.
/// PostgreSQL's go with the next statement, in its round trip (`pg::Client::defer`): each
/// would otherwise cost a round trip to the server, more than an insert's.
fn control(conn: &Conn, sql: &str) -> Result<(), StoreError> {
    match conn {
        Conn::Sqlite(sqlite) => {
            sqlite.prepare_cached(sql)?.execute([])?;
            Ok(())
        }
        Conn::Postgres(client) => {
            client.defer(sql);
            Ok(())
        }
    }
}

type BatchOutcome = Result<(Vec<Change>, Vec<QueueEvent>), StoreError>;

fn commit_batch(
    conn: &Conn,
    durability: Durability,
    batch: impl Iterator<Item = Op>,
    watched: &(dyn Fn(&str) -> bool + Sync),
    gateway: Option<&str>,
) -> (Vec<Finish>, BatchOutcome) {
    let mut pending = batch.collect::<Vec<_>>().into_iter();
    let mut finishes: Vec<Finish> = Vec::with_capacity(pending.len());
    let outcome = run_ops(
        conn,
        durability,
        &mut pending,
        &mut finishes,
        watched,
        gateway,
    );
    if outcome.is_err() {
        // Whatever failed left the transaction open; a failed rollback means none is.
        let _ = match conn {
            Conn::Sqlite(_) => control(conn, "ROLLBACK"),
            Conn::Postgres(client) => {
                client.discard_deferred();
                client.batch_execute("ROLLBACK")
            }
        };
    }
    // Operations left unrun by a failure still need their answer.
    finishes.extend(pending.map(|op| op(None).1));
    (finishes, outcome)
}

fn run_ops(
    conn: &Conn,
    durability: Durability,
    pending: &mut impl Iterator<Item = Op>,
    finishes: &mut Vec<Finish>,
    watched: &(dyn Fn(&str) -> bool + Sync),
    gateway: Option<&str>,
) -> BatchOutcome {
    let mut changes = Vec::new();
    let mut events = Vec::new();
    control(
        conn,
        match (conn.engine(), durability) {
            (Engine::Sqlite, _) => "BEGIN IMMEDIATE",
            (Engine::Postgres, Durability::Full) => "BEGIN",
            (Engine::Postgres, Durability::Relaxed) => "BEGIN; SET LOCAL synchronous_commit = off",
        },
    )?;
    let now = now_ms();
    for op in pending.by_ref() {
        if let Err(e) = control(conn, "SAVEPOINT op") {
            finishes.push(op(None).1);
            return Err(e);
        }
        let mut ctx = WriteCtx {
            conn,
            now,
            changes: Vec::new(),
            events: Vec::new(),
            earlier: &changes,
            watched,
        };
        let (ok, finish) = op(Some(&mut ctx));
        let WriteCtx {
            changes: op_changes,
            events: op_events,
            ..
        } = ctx;
        finishes.push(finish);
        if ok {
            changes.extend(op_changes);
            events.extend(op_events);
        } else {
            // A failed operation's changes are undone, leaving the others in the batch intact.
            control(conn, "ROLLBACK TO op")?;
        }
        control(conn, "RELEASE op")?;
    }
    match conn {
        Conn::Sqlite(_) => control(conn, "COMMIT")?,
        Conn::Postgres(client) => {
            // In the transaction: the others hear of it at commit, and never of a rollback.
            if let Some(gateway) = gateway
                && (!changes.is_empty() || client.wrote_batches())
            {
                let payload = shared::payload(gateway, &changes, client.wrote_batches());
                client.defer(&shared::notify_statement(&payload));
            }
            // The deferred statements and the commit: one round trip.
            client.batch_execute("COMMIT")?;
        }
    }
    Ok((changes, events))
}
