//! The job store: the only module that runs SQL. No rusqlite type leaves it. This file is
//! the front door (`Queue`'s methods); the types they share live in `model`.
//!
//! Writes go through the single group-committing [`writer`]; reads use a pool of
//! connections beside it (WAL lets them run concurrently). Every change of a job's status
//! goes through [`jobs::transition`], which enforces the allowed transitions.

mod batch_lines;
mod batch_rows;
mod batches;
mod budget;
mod checkpoint;
mod db;
mod depth;
mod fair;
mod file_rows;
mod files;
mod history;
mod jobs;
mod keys;
mod leases;
mod live_batches;
mod location;
mod migrate;
mod model;
mod nodes;
mod nodes_seen;
mod notify;
mod operate;
mod pool;
mod reads;
mod relayed;
mod results;
mod retry;
mod schema;
mod schema_pg;
mod shared;
mod sync;
mod throughput;
mod writer;

pub use batch_lines::{LineCounts, LineRecord, NewLine};
pub use batch_rows::{BatchFile, BatchRecord, NewBatch};
pub use file_rows::{FileRecord, Order};
pub use files::{FileStore, NewFile, StoredFile, Upload};
pub use jobs::{NewJob, new_job_id, new_response_id, retryable};
pub use keys::{KeyPriorities, KeyRow, MintedKey};
pub use leases::{ReapPass, ReapReport, Reported};
pub use location::{Location, is_postgres_url};
pub use migrate::{Moved, migrate};
pub use model::{
    DepthRow, JobFilter, JobRecord, LabelledKey, QueueEvent, QueueSettings, QueueSnapshot,
    StoreError, Visibility, now_ms, stored_answer,
};
pub use notify::{Change, JobWatch, Notifier};
pub use relayed::RelayLease;
pub use schema::SCHEMA_VERSION;
pub use writer::{CommitStats, OnCommit};

use db::Conn;
use openbeepboop::{
    ApiKeyInfo, CreatedKey, Endpoint, HeartbeatRequest, HeartbeatResponse, JobStatus, KeyLimits,
    LeasedJob, NodeResult, Role, SubmitOutcome,
};
use std::sync::Arc;
use std::time::Duration;
use writer::{Durability, Observers, Writer};

/// The store: a writer thread, a read pool and the wake-ups they share.
pub struct Queue {
    writer: Writer,
    pool: pool::ReadPool,
    notifier: Arc<Notifier>,
    depth: Arc<depth::Depth>,
    /// Queued jobs by key, for the fair share's leases; kept true by the writer.
    fair: Arc<fair::Fair>,
    /// The batches not yet ended, kept true by the writer after each commit.
    live_batches: Arc<live_batches::LiveBatches>,
    settings: QueueSettings,
    files: FileStore,
    /// When each node's fetches last wrote its row.
    nodes_seen: nodes_seen::NodesSeen,
    /// Flushes SQLite's write-ahead log for [`Queue::sync`]; PostgreSQL has none to flush
    /// (every commit there that a caller waits on is synchronous).
    syncer: Option<Arc<sync::Syncer>>,
    /// Runs ended per model, lately: `X-OBB-Progress`'s estimated wait.
    throughput: Arc<throughput::Throughput>,
    /// The last hour of ended jobs, for the dashboard.
    history: Arc<history::History>,
    /// The nodes an admin drained: leased nothing. Loaded at open, kept by `operate`.
    draining: nodes::Drained,
    /// Checkpoints SQLite's WAL beside the writer; stops with the store.
    _checkpoints: Option<checkpoint::Checkpointer>,
    /// PostgreSQL's driver runtime: last, so that it outlives every connection above.
    _runtime: Option<Arc<db::pg::Runtime>>,
}

impl Queue {
    /// Creates or upgrades the database; running it again never loses data.
    pub fn setup(location: &Location) -> Result<(), StoreError> {
        location.open_and_migrate().map(drop)
    }

    /// A store in a new SQLite file `queue.db` in `dir`: the unit tests'.
    #[cfg(test)]
    pub fn open_in(dir: &std::path::Path, settings: QueueSettings) -> Self {
        let location = Location::File(dir.join("queue.db"));
        Self::setup(&location).expect("setup");
        Self::open(&location, settings, Arc::new(|_, _| {})).expect("open")
    }

    /// Opens an existing database for serving and starts the writer thread.
    pub fn open(
        location: &Location,
        settings: QueueSettings,
        on_commit: OnCommit,
    ) -> Result<Self, StoreError> {
        let location::Opened { conn, backing } = location.open_existing()?;
        let (checkpoints, syncer, source, files_dir, runtime) = match &backing {
            location::Backing::File(path) => {
                if let Some(sqlite) = conn.sqlite() {
                    sqlite.pragma_update(
                        None,
                        "wal_autocheckpoint",
                        checkpoint::WRITER_AUTOCHECKPOINT_PAGES,
                    )?;
                }
                let mut wal = path.as_os_str().to_owned();
                wal.push("-wal");
                (
                    Some(checkpoint::Checkpointer::spawn(path)?),
                    Some(sync::Syncer::new(wal.into())),
                    pool::Source::Sqlite(path.clone()),
                    FileStore::beside(path),
                    None,
                )
            }
            location::Backing::Postgres(runtime) => (
                None,
                None,
                pool::Source::Postgres(Arc::clone(runtime)),
                settings.files_dir.clone().ok_or(StoreError::NoFilesDir)?,
                Some(Arc::clone(runtime)),
            ),
        };
        drop(backing);
        let granted = leases::grant_grace(&conn, now_ms(), settings.lease)?;
        if granted > 0 {
            tracing::info!(
                leases = granted,
                "running jobs get a fresh lease: the time the gateway was down does not count"
            );
        }
        let notifier = Arc::new(Notifier::default());
        // Counted once here, before the writer runs; from then on its commits move it.
        let depth = Arc::new(depth::Depth::seeded(reads::depth(&conn)?));
        let fair = Arc::new(reads::fair_share(&conn)?);
        // Loaded once here too; from then on the writer re-reads each batch a commit changed.
        let live_batches = Arc::new(live_batches::LiveBatches::seeded(batch_rows::active(
            &conn,
        )?));
        let files_dir = FileStore::prepare(files_dir, &conn, location.is_postgres())?;
        let throughput = Arc::new(throughput::Throughput::default());
        let counted = Arc::clone(&throughput);
        let history = Arc::new(history::History::default());
        operate::seed_history(&conn, &history, now_ms())?;
        let draining = nodes::Drained::new(nodes::draining(&conn)?);
        // On PostgreSQL, this gateway's name in the notifications it sends the others.
        let gateway = runtime.as_ref().map(|server| server.name().to_owned());
        let remembered = Arc::clone(&history);
        let on_commit: OnCommit = Arc::new(move |stats, events| {
            counted.record(events, std::time::Instant::now());
            remembered.record(events, now_ms());
            on_commit(stats, events);
        });
        let writer = Writer::spawn(
            conn,
            Observers {
                notifier: Arc::clone(&notifier),
                depth: Arc::clone(&depth),
                fair: Arc::clone(&fair),
                batches: Arc::clone(&live_batches),
                drained: draining.clone(),
                gateway: gateway.clone(),
                server: runtime.clone(),
            },
            settings.max_commit_batch,
            on_commit,
        )?;
        if let (Some(runtime), Some(gateway)) = (&runtime, gateway) {
            shared::listen(runtime, gateway, writer.clone());
        }
        let pool = pool::build(source, settings.read_connections)
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        let files = FileStore::new(files_dir, writer.clone(), pool.clone());
        Ok(Self {
            writer,
            pool,
            notifier,
            depth,
            fair,
            live_batches,
            settings,
            files,
            nodes_seen: nodes_seen::NodesSeen::default(),
            throughput,
            history,
            draining,
            syncer,
            _checkpoints: checkpoints,
            _runtime: runtime,
        })
    }

    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// The files of `/v1/files`: batch inputs and outputs.
    pub fn files(&self) -> &FileStore {
        &self.files
    }

    /// Runs a read on a pooled connection.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<T, StoreError> + Send + 'static,
    {
        pool::read(&self.pool, f).await
    }

    /// Stores a new job, or returns the one already stored under the same idempotency key.
    /// Returns whether the job was created by this call. On disk when it returns.
    pub async fn enqueue(&self, job: NewJob) -> Result<(JobRecord, bool), StoreError> {
        self.enqueue_with(job, Durability::Full).await
    }

    /// [`Queue::enqueue`] without waiting for the disk: for a submit that is held, whose
    /// answer waits for [`Queue::sync`] (or comes from a later durable commit, which makes
    /// this one durable too), so that the node is woken one fsync sooner.
    pub async fn enqueue_relaxed(&self, job: NewJob) -> Result<(JobRecord, bool), StoreError> {
        let durability = match self.syncer {
            Some(_) => Durability::Relaxed,
            // Nothing here could make it durable later: PostgreSQL's commit does it now.
            None => Durability::Full,
        };
        self.enqueue_with(job, durability).await
    }

    async fn enqueue_with(
        &self,
        job: NewJob,
        durability: Durability,
    ) -> Result<(JobRecord, bool), StoreError> {
        let max_attempts = self.settings.max_attempts;
        let fair = Arc::clone(&self.fair);
        self.writer
            .write_with(durability, move |ctx| {
                jobs::enqueue(ctx, &job, max_attempts, &|key| fair.queued(key))
            })
            .await
    }

    /// Makes every commit that returned before it durable: an fsync of the write-ahead
    /// log, which holds every committed transaction not yet checkpointed (a checkpoint syncs
    /// the log before it and the database after). It runs on a blocking thread beside the
    /// writer, shared by every caller that asks while one runs, and starts at once, so it
    /// delays neither the writer nor the caller until awaited.
    pub fn sync(&self) -> impl std::future::Future<Output = Result<(), StoreError>> + use<> {
        let ticket = self
            .syncer
            .as_ref()
            .map(|syncer| (Arc::clone(syncer), syncer.ticket()));
        async move {
            match ticket {
                Some((syncer, ticket)) => syncer.wait(ticket).await,
                None => Ok(()),
            }
        }
    }

    /// Leases up to `limit` queued jobs of `models` (`*` is any), of any endpoint, to a
    /// node: the unit tests' shorthand for [`Queue::lease_serving`].
    #[cfg(test)]
    pub async fn lease(
        &self,
        node_id: String,
        key_id: String,
        models: Vec<String>,
        limit: u32,
    ) -> Result<Vec<LeasedJob>, StoreError> {
        self.lease_serving(node_id, key_id, models, Endpoint::ALL.to_vec(), limit)
            .await
    }

    /// Leases up to `limit` queued jobs of `models` (`*` is any) and `endpoints` to a node.
    pub async fn lease_serving(
        &self,
        node_id: String,
        key_id: String,
        models: Vec<String>,
        endpoints: Vec<Endpoint>,
        limit: u32,
    ) -> Result<Vec<LeasedJob>, StoreError> {
        let lease = self.settings.lease;
        let fair = Arc::clone(&self.fair);
        let record = self.nodes_seen.due(&node_id, &key_id, &models);
        let drained = self.draining.clone();
        self.writer
            .write_with(Durability::Relaxed, move |ctx| {
                if record {
                    leases::record_node(ctx, &node_id, &key_id, &models, Reported::default())?;
                }
                // A drained node is still seen (its row's `last_seen_at`), and leased
                // nothing; checked here, in the writer, after any drain committed before.
                let limit = if drained.contains(&node_id) { 0 } else { limit };
                let asked = leases::Asked {
                    node_id: &node_id,
                    models: &models,
                    endpoints: &endpoints,
                    limit,
                    lease,
                };
                leases::lease(ctx, &fair, &asked)
            })
            .await
    }

    pub async fn heartbeat(
        &self,
        key_id: String,
        request: HeartbeatRequest,
    ) -> Result<HeartbeatResponse, StoreError> {
        let lease = self.settings.lease;
        let draining = self.is_draining(request.node_id.as_str());
        let mut response = self
            .writer
            .write_with(Durability::Relaxed, move |ctx| {
                leases::record_node(
                    ctx,
                    request.node_id.as_str(),
                    &key_id,
                    &request.models,
                    Reported {
                        capacity: Some(request.capacity),
                        draining: Some(request.draining),
                    },
                )?;
                leases::heartbeat(ctx, request.node_id.as_str(), &request.lease_ids, lease)
            })
            .await?;
        response.draining = draining;
        Ok(response)
    }

    pub async fn submit(&self, results: Vec<NodeResult>) -> Result<Vec<SubmitOutcome>, StoreError> {
        let backoff = self.settings.retry_backoff_base;
        self.writer
            .write(move |ctx| results::submit(ctx, &results, backoff))
            .await
    }

    pub async fn cancel(&self, id: String, who: Visibility) -> Result<JobRecord, StoreError> {
        self.writer
            .write(move |ctx| jobs::cancel(ctx, &id, &who))
            .await
    }

    /// Deletes a job (cancelled first if it had not ended); see [`jobs::delete`].
    pub async fn delete(&self, id: String, who: Visibility) -> Result<JobRecord, StoreError> {
        self.writer
            .write(move |ctx| jobs::delete(ctx, &id, &who))
            .await
    }

    /// About how long until a queued job of `model` at `position` (counting from 1) is
    /// leased, in seconds, from how fast its model's runs ended lately; `None` when too few
    /// ended in the last minutes to say.
    pub fn estimated_wait(&self, model: &str, position: u64) -> Option<f64> {
        self.throughput
            .estimated_wait(model, position, std::time::Instant::now())
    }

    /// Whether a node's relayed stream still belongs to the job's current run; see
    /// [`relayed::lease`].
    pub async fn relay_lease(
        &self,
        job_id: String,
        lease_id: String,
    ) -> Result<RelayLease, StoreError> {
        self.read(move |conn| relayed::lease(conn, &job_id, &lease_id))
            .await
    }

    /// Marks that the run's first chunk reached a client: from now on the run is not
    /// retried. Committed without a sync: the reaper, which would retry the run, runs in
    /// the same writer queue, and a crash that loses the mark also cut every client off.
    pub async fn mark_relayed(
        &self,
        job_id: String,
        lease_id: String,
    ) -> Result<RelayLease, StoreError> {
        self.writer
            .write_with(Durability::Relaxed, move |ctx| {
                relayed::mark(ctx, &job_id, &lease_id)
            })
            .await
    }

    /// Requeues or fails jobs whose lease expired, expires jobs that waited too long, and
    /// counts the retries that became due since `pass.since`; see [`ReapPass`].
    pub async fn reap(&self, pass: ReapPass) -> Result<ReapReport, StoreError> {
        let lease = self.settings.lease;
        let report = self
            .writer
            .write_with(Durability::Relaxed, move |ctx| {
                leases::reap(ctx, pass, lease)
            })
            .await?;
        if report.due > 0 {
            // Keys passed over for having nothing due may have something now.
            self.fair.wake_sleepers();
        }
        Ok(report)
    }

    /// Stores a minted key. Hash it before calling: argon2 must not hold up the writer.
    pub async fn create_key(
        &self,
        key: MintedKey,
        name: String,
        role: Role,
    ) -> Result<CreatedKey, StoreError> {
        self.writer
            .write(move |ctx| keys::insert(ctx.conn, ctx.now, &key, &name, role))
            .await
    }

    pub async fn revoke_key(&self, id: String) -> Result<ApiKeyInfo, StoreError> {
        self.writer
            .write(move |ctx| keys::revoke(ctx.conn, ctx.now, &id))
            .await
    }

    /// The key generation, then the row of the key with `prefix`.
    pub async fn key_by_prefix(&self, prefix: String) -> Result<(i64, Option<KeyRow>), StoreError> {
        self.read(move |conn| Ok((keys::generation(conn)?, keys::by_prefix(conn, &prefix)?)))
            .await
    }

    /// Key `id`'s limits.
    pub async fn key_limits(&self, id: String) -> Result<KeyLimits, StoreError> {
        self.read(move |conn| keys::limits(conn, &id)).await
    }

    /// Replaces key `id`'s limits; its weight, cap, token budget and metrics label count
    /// from its next lease, in this process at once (other processes: the key watch).
    pub async fn set_key_limits(
        &self,
        id: String,
        limits: KeyLimits,
    ) -> Result<KeyLimits, StoreError> {
        let key = id.clone();
        let stored = self
            .writer
            .write(move |ctx| keys::set_limits(ctx.conn, &id, &limits))
            .await?;
        // Only once committed: a group that rolls back leaves memory as the database is.
        self.fair.set_weight(&key, stored.weight);
        self.fair.set_cap(&key, stored.max_concurrent_jobs);
        self.fair.set_label(&key, stored.metrics_label.clone());
        self.fair.set_tokens(&key, stored.tokens_per_minute);
        // A cap may have risen or gone: waiting nodes look again.
        self.notifier.wake_nodes();
        Ok(stored)
    }

    /// Key `key`'s token budget, when it has a `tokens_per_minute`: see
    /// [`fair::Fair::token_budget`].
    pub fn token_budget(&self, key: &str) -> Option<(u32, u64, Duration)> {
        self.fair.token_budget(key)
    }

    /// Wakes waiting nodes when a key that a lease passed over for want of tokens has some
    /// again; the reaper asks on every tick.
    pub fn wake_if_tokens_returned(&self) {
        if self.fair.tokens_returned() {
            self.notifier.wake_nodes();
        }
    }

    /// Re-reads every key's weight and concurrency cap, after keys changed in another
    /// process; waiting nodes are woken, as a cap may have risen.
    pub async fn reload_shares(&self) -> Result<(), StoreError> {
        let shares = self.read(keys::shares).await?;
        self.fair.set_shares(shares);
        self.notifier.wake_nodes();
        Ok(())
    }

    /// The key generation: it moves whenever any key changes, in this process or another.
    pub async fn key_generation(&self) -> Result<i64, StoreError> {
        self.read(keys::generation).await
    }

    pub async fn keys(&self) -> Result<Vec<ApiKeyInfo>, StoreError> {
        self.read(keys::list).await
    }

    pub async fn job(&self, id: String, who: Visibility) -> Result<Option<JobRecord>, StoreError> {
        self.read(move |conn| reads::job(conn, &id, &who)).await
    }

    /// The job and its request body as submitted.
    pub async fn job_with_request(
        &self,
        id: String,
        who: Visibility,
    ) -> Result<Option<(JobRecord, String)>, StoreError> {
        self.read(move |conn| reads::job_with_request(conn, &id, &who))
            .await
    }

    /// The job as the user API shows it, with its queue position while it is queued (see
    /// `Job::queue_position`).
    pub async fn wire_job(&self, record: &JobRecord) -> Result<openbeepboop::Job, StoreError> {
        let mut wire = record.to_wire();
        if record.status == JobStatus::Queued {
            let job = record.clone();
            let ahead = self
                .read(move |conn| reads::ahead_of_in_its_lane(conn, &job))
                .await?;
            let (earlier, share) = self.fair.standing(record.priority, &record.owner_key_id);
            let position = earlier + (ahead as f64 * share).ceil() as i64 + 1;
            wire.queue_position = Some(position.max(1) as u64);
        }
        Ok(wire)
    }

    /// The jobs among `ids` that `who` may see, in no particular order.
    pub async fn jobs(
        &self,
        ids: Vec<String>,
        who: Visibility,
    ) -> Result<Vec<JobRecord>, StoreError> {
        self.read(move |conn| reads::jobs(conn, &ids, &who)).await
    }

    /// A page of the jobs of `filter` that `who` may see, newest first, older than the job
    /// `after`. Returns the page and
    /// whether more follow.
    pub async fn list(
        &self,
        who: Visibility,
        filter: JobFilter,
        limit: usize,
        after: Option<String>,
    ) -> Result<(Vec<JobRecord>, bool), StoreError> {
        self.read(move |conn| reads::list(conn, &who, &filter, limit, after.as_deref()))
            .await
    }

    /// Depth by status, model and priority, the oldest queued job, and live nodes.
    pub async fn snapshot(&self, alive: Duration) -> Result<QueueSnapshot, StoreError> {
        let now = now_ms();
        let since = now - alive.as_millis() as i64;
        let ((oldest, nodes_alive), batches) = self
            .read(move |conn| {
                Ok((
                    reads::oldest_and_alive(conn, since)?,
                    batch_rows::count_by_status(conn)?,
                ))
            })
            .await?;
        Ok(QueueSnapshot {
            depth: self.depth.rows(),
            oldest_queued_ms: oldest.map(|created| now - created),
            nodes_alive,
            batches,
            labelled_keys: self.fair.labelled(),
        })
    }

    /// Models of the nodes seen within `alive`, sorted.
    pub async fn live_models(&self, alive: Duration) -> Result<Vec<String>, StoreError> {
        let since = now_ms() - alive.as_millis() as i64;
        self.read(move |conn| reads::live_models(conn, since)).await
    }
}

/// Key management without a running gateway, for the `keys` CLI.
pub mod offline {
    use super::*;

    pub fn create_key(
        location: &Location,
        key: &MintedKey,
        name: &str,
        role: Role,
    ) -> Result<CreatedKey, StoreError> {
        keys::insert(&location.open_existing()?.conn, now_ms(), key, name, role)
    }

    pub fn list_keys(location: &Location) -> Result<Vec<ApiKeyInfo>, StoreError> {
        keys::list(&location.open_existing()?.conn)
    }

    pub fn revoke_key(location: &Location, id: &str) -> Result<ApiKeyInfo, StoreError> {
        keys::revoke(&location.open_existing()?.conn, now_ms(), id)
    }

    pub fn key_limits(location: &Location, id: &str) -> Result<KeyLimits, StoreError> {
        keys::limits(&location.open_existing()?.conn, id)
    }

    /// Replaces key `id`'s limits; a running gateway takes them within its key recheck.
    pub fn set_key_limits(
        location: &Location,
        id: &str,
        limits: &KeyLimits,
    ) -> Result<KeyLimits, StoreError> {
        keys::set_limits(&location.open_existing()?.conn, id, limits)
    }

    /// Whether an unrevoked admin key exists, so `setup` does not mint one per run.
    pub fn has_admin_key(location: &Location) -> Result<bool, StoreError> {
        Ok(keys::list(&location.open_existing()?.conn)?
            .iter()
            .any(|key| key.role == Role::Admin && key.revoked_at.is_none()))
    }
}
