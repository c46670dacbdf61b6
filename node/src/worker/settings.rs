//! What a run of the worker is told (`Mode`, `Settings`, the `StopLevel` signals move) and
//! what it reports (`Stats`, `Summary`, `WorkerError`).

use crate::gateway::GatewayError;
use crate::metrics::Outcome;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Work until told to stop.
    Daemon,
    /// Work until no queued job for our models is left.
    Batch,
}

/// How far shutdown has gone; each signal moves it one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopLevel {
    /// Working.
    Running,
    /// The first signal: lease nothing more, finish the jobs in flight, deliver.
    Draining,
    /// The second signal: abort the jobs in flight and hand them back.
    Aborting,
}

impl StopLevel {
    /// The level the next signal moves to.
    pub fn next(self) -> Self {
        match self {
            Self::Running => Self::Draining,
            Self::Draining | Self::Aborting => Self::Aborting,
        }
    }
}

pub type Stop = watch::Receiver<StopLevel>;

#[derive(Debug, Clone)]
pub struct Settings {
    pub concurrency: u32,
    pub batch_size: u32,
    /// The endpoints whose jobs this node leases.
    pub endpoints: Vec<openbeepboop::Endpoint>,
    /// Embeddings jobs sent as one upstream call, at most (`[node] embeddings_pack_max`).
    pub embeddings_pack_max: u32,
    /// The longest heartbeat period; a third of the lease when that is shorter.
    pub heartbeat: Duration,
    pub fetch_wait: Duration,
    pub summary: Duration,
    /// How long the last results may take to reach the gateway before the node gives up
    /// and leaves them in the spool; also how long a start waits to deliver what the spool
    /// holds before the first fetch.
    pub flush_timeout: Duration,
    /// How relayed streams reach the gateway (`[node] relay`).
    pub relay: crate::config::RelayMode,
}

/// Jobs whose results the gateway answered for, by outcome.
#[derive(Debug, Default)]
pub struct Stats {
    pub done: AtomicU64,
    pub failed: AtomicU64,
}

impl Stats {
    pub(super) fn count(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Done => &self.done,
            Outcome::Failed => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub done: u64,
    pub failed: u64,
    pub seconds: f64,
    /// Results still in the spool when the node stopped.
    pub spooled: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error("{spooled} results could not be delivered and stay in the spool `{path}`: {cause}")]
    Undelivered {
        spooled: usize,
        path: String,
        cause: String,
    },
}
