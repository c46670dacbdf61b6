//! The store's shared types: its error, the events and snapshots it reports, its settings
//! and the job record it hands out. No SQL runs here.

use super::batch_rows::BatchFile;
use openbeepboop::{BatchStatus, Endpoint, ErrorBody, Job, JobStatus, NodeId};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why the store could not do something. Cloneable because one failed group commit
/// answers every operation in it, so causes are shared behind `Arc`s.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the database is out of space")]
    DiskFull(#[source] Arc<rusqlite::Error>),
    #[error("the database is busy")]
    Busy(#[source] Arc<rusqlite::Error>),
    #[error("database error")]
    Sqlite(#[source] Arc<rusqlite::Error>),
    #[error("PostgreSQL: {what}")]
    Postgres {
        what: String,
        #[source]
        source: Arc<tokio_postgres::Error>,
    },
    /// A single-row read found no row; `.optional()` makes it `None`.
    #[error("the query returned no row")]
    NoRows,
    /// A column held something other than what the store reads from it.
    #[error("column {index} cannot be read: {message}")]
    Column { index: usize, message: String },
    /// No read connection could be had: the pool timed out or could not be built.
    #[error("the read pool cannot serve: {0}")]
    Pool(String),
    /// A read on the pool panicked or was cancelled before it ran.
    #[error("a read did not finish: {0}")]
    ReadAborted(String),
    #[error("the stored request of job `{id}` is not JSON")]
    CorruptPayload {
        id: String,
        #[source]
        source: Arc<serde_json::Error>,
    },
    #[error("cannot create the data directory `{path}`")]
    DataDir {
        path: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("cannot start the writer thread")]
    WriterThread(#[source] Arc<std::io::Error>),
    /// The fsync that makes a relaxed commit durable failed.
    #[error("cannot sync the job store to disk")]
    Sync(#[source] Arc<std::io::Error>),
    #[error("refused transition of job `{id}` from {from} to {to}")]
    IllegalTransition {
        id: String,
        from: JobStatus,
        to: JobStatus,
    },
    #[error("database `{0}` does not exist; run `obb-gateway setup` first")]
    Missing(String),
    #[error(
        "database `{path}` has schema version {found}, newer than the {supported} this obb-gateway knows; upgrade obb-gateway"
    )]
    TooNew {
        path: String,
        found: i64,
        supported: i64,
    },
    /// A new job's random id was taken: never seen, and never guessed at.
    #[error("job id `{0}` is taken")]
    DuplicateId(String),
    /// `migrate` refused or failed; the message says why.
    #[error("{0}")]
    Migrate(String),
    #[error("a PostgreSQL store needs `files_dir`, the directory of its uploaded files")]
    NoFilesDir,
    #[error("the job store is shutting down")]
    Closed,
    /// The owner already used the key for another request: another body, or, for a job,
    /// the same body sent to another endpoint (`used_on`, the earlier request's).
    #[error("idempotency key `{key}` was already used {}", used_with(*.used_on))]
    IdempotencyConflict {
        key: String,
        used_on: Option<Endpoint>,
    },
    #[error("job `{0}` not found")]
    JobNotFound(String),
    #[error("job `{id}` is already {status}")]
    AlreadyFinal { id: String, status: JobStatus },
    /// Only a job that ended without an answer may be queued again.
    #[error("job `{id}` is {status}; only failed, expired and cancelled jobs can be retried")]
    NotRetryable { id: String, status: JobStatus },
    /// Only a queued job's priority can change.
    #[error("job `{id}` is {status}; only a queued job's priority can change")]
    NotQueued { id: String, status: JobStatus },
    /// A batch's line is retried only while its batch runs: a batch that ended has written
    /// its output.
    #[error(
        "job `{id}` is a line of batch `{batch_id}`, which is {status}; lines are retried only while their batch is in progress"
    )]
    BatchNotRunning {
        id: String,
        batch_id: String,
        status: String,
    },
    #[error("node `{0}` not found")]
    NodeNotFound(String),
    /// A node seen within the liveness window is not forgotten: it would come back at its
    /// next call.
    #[error(
        "node `{0}` is alive; drain it and stop it first, then remove it once it is no longer seen"
    )]
    NodeAlive(String),
    /// A key that has as many jobs queued as its `max_queued_jobs` allows.
    #[error("key `{key}` has {max} jobs queued, as many as its `max_queued_jobs` allows")]
    QueueFull { key: String, max: u32 },
    /// A batch's line is deleted only with its batch: its counts and files refer to it.
    #[error("job `{id}` is line of batch `{batch_id}` and is deleted only with it")]
    InBatch { id: String, batch_id: String },
    #[error("key `{0}` not found")]
    KeyNotFound(String),
    /// Limits are for keys that queue work; a node key's would do nothing.
    #[error("key `{0}` is a node key: limits apply to the user and admin keys that queue work")]
    LimitsOnNodeKey(String),
    #[error("file `{0}` not found")]
    FileNotFound(String),
    #[error("batch `{0}` not found")]
    BatchNotFound(String),
    #[error("batch `{id}` is {status} and cannot be cancelled")]
    BatchNotCancellable { id: String, status: BatchStatus },
    #[error("refused transition of batch `{id}` from {from} to {to}")]
    IllegalBatchTransition {
        id: String,
        from: BatchStatus,
        to: BatchStatus,
    },
    /// The files directory failed: a write, a sync, a rename or an open.
    #[error("{what}")]
    FileIo {
        what: &'static str,
        #[source]
        source: Arc<std::io::Error>,
    },
}

/// What an idempotency conflict's request differed in.
fn used_with(used_on: Option<Endpoint>) -> String {
    match used_on {
        Some(endpoint) => format!("for a request to `{endpoint}`"),
        None => "with a different request body".to_owned(),
    }
}

impl StoreError {
    /// The error and its causes on one line, for the one log line that reports it.
    pub fn detail(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

impl StoreError {
    /// A PostgreSQL error that passes by itself: the connection is gone or refused, the
    /// server gave up on a transaction (a deadlock, a serialization failure, a restart), or
    /// another gateway's commit took a unique key first.
    pub fn is_transient(&self) -> bool {
        use tokio_postgres::error::SqlState;
        match self {
            StoreError::Postgres { source, .. } => match source.code() {
                // No SQLSTATE: the connection is gone, or its socket failed; anything
                // else without one (a value that would not convert) is ours.
                None => {
                    source.is_closed()
                        || std::error::Error::source(source.as_ref())
                            .is_some_and(|cause| cause.is::<std::io::Error>())
                }
                Some(code) => [
                    // Another gateway's commit won a race on a unique key (an idempotency
                    // key): a retry finds its row.
                    SqlState::UNIQUE_VIOLATION,
                    SqlState::T_R_DEADLOCK_DETECTED,
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::LOCK_NOT_AVAILABLE,
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                    SqlState::QUERY_CANCELED,
                ]
                .contains(code),
            },
            _ => false,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        let code = error.sqlite_error_code();
        let error = Arc::new(error);
        match code {
            Some(ErrorCode::DiskFull | ErrorCode::SystemIoFailure) => StoreError::DiskFull(error),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy(error),
            _ => StoreError::Sqlite(error),
        }
    }
}

/// Something that happened to jobs in a committed transaction, for the metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum QueueEvent {
    Submitted {
        model: String,
        endpoint: Endpoint,
    },
    /// A job was leased after waiting `waited_ms` since it was submitted.
    Leased {
        model: String,
        waited_ms: i64,
    },
    /// A job reached a final status.
    Finished {
        model: String,
        endpoint: Endpoint,
        status: JobStatus,
        /// The key that submitted the job.
        owner: String,
        node: Option<String>,
        processing_ms: Option<i64>,
        total_ms: i64,
    },
    /// A completed job's usage; `owner`'s `tokens_per_minute` was charged `estimated`.
    Tokens {
        model: String,
        prompt: u64,
        completion: u64,
        owner: String,
        estimated: u64,
    },
    /// A run ended without a completion: its key's `tokens_per_minute` gets back the
    /// `estimated` tokens it was charged when the job was leased.
    TokensReturned {
        owner: String,
        estimated: u64,
    },
    /// A lease passed over a key's queued jobs for one of its execution limits (`reason`:
    /// `max_concurrent_jobs` or `tokens_per_minute`); counted once per lease and reason.
    LeaseDeferred {
        reason: &'static str,
    },
    /// A job went back to the queue for another attempt.
    Retried {
        model: String,
    },
    LeaseExpired {
        model: String,
    },
    /// A job that is a batch's line reached a final status; it has its `Finished` too.
    BatchLineFinished {
        status: JobStatus,
    },
    /// A batch's output or error file of `bytes` was stored.
    BatchFileStored {
        file: BatchFile,
        bytes: u64,
    },
}

/// One row of the queue's depth: how many jobs of a model and priority are in a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepthRow {
    pub status: JobStatus,
    pub model: String,
    pub priority: u8,
    pub count: i64,
}

/// The queue's state at one moment, for the metrics' gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueSnapshot {
    /// Queued and processing jobs only; final statuses are counted by counters.
    pub depth: Vec<DepthRow>,
    pub oldest_queued_ms: Option<i64>,
    pub nodes_alive: i64,
    /// Batches by status, read from the `batches` table; statuses with none may be absent.
    pub batches: Vec<(BatchStatus, i64)>,
    /// Jobs queued and running of each key that has a `metrics_label`, by that label.
    pub labelled_keys: Vec<LabelledKey>,
}

/// A key's jobs, for the gauges of a key its admin gave a `metrics_label`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledKey {
    pub label: String,
    pub queued: i64,
    pub running: i64,
}

/// Which jobs a list, an export or a bulk retry takes; every field left empty takes all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub statuses: Vec<JobStatus>,
    pub model: Option<String>,
    pub batch_id: Option<String>,
    /// The key that submitted them (an admin's filter; a user's own jobs are all it sees).
    pub key_id: Option<String>,
    /// Unix ms: created at or after.
    pub since: Option<i64>,
    /// Unix ms: created before.
    pub until: Option<i64>,
}

/// Who may see a job: its owner only, or anyone (an admin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    Owner(String),
    All,
}

/// The queue rules that the store applies.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub lease: Duration,
    pub max_attempts: u32,
    pub retry_backoff_base: Duration,
    pub max_commit_batch: usize,
    pub read_connections: usize,
    /// Where a PostgreSQL store keeps the bytes of `/v1/files` (a SQLite store keeps them
    /// in `files/` beside its database). Gateways that share a database share this too.
    pub files_dir: Option<std::path::PathBuf>,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(60),
            max_attempts: 3,
            retry_backoff_base: Duration::from_secs(1),
            max_commit_batch: 512,
            read_connections: 8,
            files_dir: None,
        }
    }
}

/// A job row as the store hands it out.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: String,
    pub owner_key_id: String,
    pub model: String,
    pub endpoint: Endpoint,
    pub status: JobStatus,
    pub priority: u8,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: i64,
    pub attempts: u32,
    pub locked_by: Option<String>,
    pub locked_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The completion as the node returned it, byte for byte.
    pub result_payload: Option<String>,
    pub error: Option<ErrorBody>,
    /// The upstream's HTTP status, when `error` is an upstream's answer. How a job ended is
    /// its status and the error's `code`; the HTTP edge picks what a client sees.
    pub upstream_status: Option<u16>,
    /// What operators did to the job: a JSON list of `JobEvent`s, as stored.
    pub events: Option<String>,
}

impl JobRecord {
    /// The job as the user API shows it. Times are Unix seconds, as in OpenAI objects.
    pub fn to_wire(&self) -> Job {
        Job {
            id: self.id.clone().into(),
            object: self.endpoint.job_object().to_owned(),
            endpoint: self.endpoint,
            model: self.model.clone(),
            status: self.status,
            priority: self.priority,
            created_at: self.created_at / 1000,
            updated_at: self.updated_at / 1000,
            expires_at: self.expires_at / 1000,
            attempts: self.attempts,
            node: self
                .locked_by
                .clone()
                .filter(|_| self.status == JobStatus::Processing)
                .map(NodeId::from),
            queue_position: None,
            result: self.result(),
            error: self.error.clone(),
            events: self
                .events
                .as_deref()
                .and_then(|text| serde_json::from_str(text).ok())
                .unwrap_or_default(),
            key_id: None,
            request: None,
            started_at: None,
            finished_at: None,
        }
    }

    /// The job with what only its detail and exports show: its key, its request (when
    /// given, as stored), the node of its last run, and when that run started and when the
    /// job ended.
    pub fn to_wire_detail(&self, request: Option<&str>) -> Job {
        let mut wire = self.to_wire();
        // The node of its last run, whatever the status: which node ran a job that ended.
        wire.node = self.locked_by.clone().map(NodeId::from);
        wire.key_id = Some(self.owner_key_id.clone());
        wire.request = request.and_then(|text| serde_json::from_str(text).ok());
        wire.started_at = self.locked_at.map(|at| at / 1000);
        wire.finished_at = self.finished_at.map(|at| at / 1000);
        wire
    }

    /// The stored answer; a response's under the response's own id and time, as
    /// `GET /v1/responses/{id}` shows it, not the upstream's.
    fn result(&self) -> Option<serde_json::Value> {
        let mut result = stored_answer(self.endpoint, &self.id, self.result_payload.as_deref())?;
        if self.endpoint == Endpoint::Responses
            && let Some(fields) = result.as_object_mut()
        {
            fields.insert("created_at".to_owned(), (self.created_at / 1000).into());
        }
        Some(result)
    }
}

/// A job's stored answer as users read it (`/v1/jobs`, a batch's output lines): the node's
/// JSON, except that a response is known by its job's id, as `/v1/responses/{id}` reads
/// it, not by the upstream's.
pub fn stored_answer(
    endpoint: Endpoint,
    job_id: &str,
    payload: Option<&str>,
) -> Option<serde_json::Value> {
    let mut answer: serde_json::Value = serde_json::from_str(payload?).ok()?;
    if endpoint == Endpoint::Responses
        && let Some(fields) = answer.as_object_mut()
    {
        fields.insert("id".to_owned(), job_id.into());
    }
    Some(answer)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
