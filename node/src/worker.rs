//! The work loop shared by `run` and `batch`: lease, execute up to `concurrency` jobs at
//! once, heartbeat their leases, and deliver results through the spool.
//!
//! Tasks: the fetch loop (here, in `Worker::run`), one task per job, the heartbeat task
//! and the submitter. All of them end with `run`: the job tasks are joined or aborted, the
//! heartbeat task is stopped, and the submitter ends when the result channel closes.

use crate::echo;
use crate::gateway::{GatewayClient, GatewayError};
use crate::metrics::NodeMetrics;
use crate::routing::{Routing, Target};
use crate::spool::Spool;
use crate::upstream::{UpstreamClient, UpstreamError};
use openbeepboop::{ErrorBody, LeasedJob, NodeResult, NodeResultStatus, SubmitOutcomeKind};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Work until told to stop.
    Daemon,
    /// Work until no queued job for our models is left.
    Batch,
}

/// How far shutdown has gone: 0 running, 1 draining (the first signal), 2 aborting.
pub type Stop = watch::Receiver<u8>;

#[derive(Debug, Clone)]
pub struct Settings {
    pub concurrency: u32,
    pub batch_size: u32,
    pub heartbeat: Duration,
    pub fetch_wait: Duration,
    pub summary: Duration,
    /// How long the last results may take to reach the gateway before the node gives up
    /// and leaves them in the spool.
    pub flush_timeout: Duration,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub done: AtomicU64,
    pub failed: AtomicU64,
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
    #[error("{delivered} results could not be delivered and stay in the spool `{path}`: {cause}")]
    Undelivered {
        delivered: u64,
        path: String,
        cause: GatewayError,
    },
}

pub struct Worker {
    pub gateway: Arc<GatewayClient>,
    pub upstream: Option<Arc<UpstreamClient>>,
    pub routing: Arc<Routing>,
    pub spool: Arc<Spool>,
    pub settings: Settings,
    pub stats: Arc<Stats>,
    pub metrics: Arc<NodeMetrics>,
}

/// A job being executed: its id and the handle that aborts it.
struct Active {
    job_id: String,
    abort: AbortHandle,
}

type ActiveJobs = Arc<Mutex<HashMap<String, Active>>>;

fn lock(active: &ActiveJobs) -> std::sync::MutexGuard<'_, HashMap<String, Active>> {
    active.lock().unwrap_or_else(|e| e.into_inner())
}

impl Worker {
    pub async fn run(self, mode: Mode, mut stop: Stop) -> Result<Summary, WorkerError> {
        let started = Instant::now();
        let models = self.routing.names();
        let (results, receiver) = mpsc::unbounded_channel::<NodeResult>();
        let (give_up, give_up_rx) = watch::channel(false);
        // The submitter owns delivery; it ends once `results` is dropped and the spool is empty.
        let submitter = tokio::spawn(submit_loop(
            Arc::clone(&self.gateway),
            Arc::clone(&self.spool),
            Arc::clone(&self.metrics),
            receiver,
            give_up_rx,
        ));
        let active: ActiveJobs = Arc::default();
        let slots = Arc::new(Semaphore::new(self.settings.concurrency as usize));
        let (heartbeat_every, every) = watch::channel(self.settings.heartbeat.as_millis() as u64);
        let (stop_heartbeat, heartbeat_stop) = watch::channel(false);
        let heartbeat = tokio::spawn(heartbeat_loop(
            Arc::clone(&self.gateway),
            Arc::clone(&active),
            models.clone(),
            self.settings.clone(),
            every,
            Arc::clone(&self.stats),
            Arc::clone(&self.spool),
            heartbeat_stop,
        ));
        let mut tasks = JoinSet::new();
        let mut failures = 0u32;
        let fatal = loop {
            while tasks.try_join_next().is_some() {}
            if *stop.borrow() >= 1 {
                break None;
            }
            let first = tokio::select! {
                permit = Arc::clone(&slots).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break None,
                },
                _ = stop.changed() => continue,
            };
            let mut permits = vec![first];
            while permits.len() < self.settings.batch_size as usize {
                match Arc::clone(&slots).try_acquire_owned() {
                    Ok(permit) => permits.push(permit),
                    Err(_) => break,
                }
            }
            let wait = match mode {
                Mode::Batch => Duration::ZERO,
                Mode::Daemon => self.settings.fetch_wait,
            };
            // A fetch abandoned by a shutdown may have leased jobs: they return to the queue
            // when their lease lapses, and each is still stored exactly once.
            let fetched = tokio::select! {
                fetched = self.gateway.fetch(&models, permits.len() as u32, wait) => fetched,
                _ = stop.changed() => continue,
            };
            match fetched {
                Ok(jobs) if jobs.is_empty() => {
                    failures = 0;
                    drop(permits);
                    if mode == Mode::Batch {
                        if tasks.is_empty() {
                            break None;
                        }
                        // Wait for a job to finish: retries may queue more work.
                        tokio::select! {
                            _ = tasks.join_next() => {}
                            _ = stop.changed() => {}
                        }
                    }
                }
                Ok(jobs) => {
                    failures = 0;
                    let now = now_ms();
                    if let Some(first) = jobs.first() {
                        // Heartbeat at a third of the lease, or more often if configured.
                        let third = ((first.lease_expires_at - now).max(300) / 3) as u64;
                        let every = third.min(self.settings.heartbeat.as_millis() as u64);
                        heartbeat_every.send_if_modified(|current| {
                            let changed = *current != every;
                            *current = every;
                            changed
                        });
                    }
                    let mut active_jobs = lock(&active);
                    for (job, permit) in jobs.into_iter().zip(permits.drain(..)) {
                        let lease_id = job.lease_id.clone();
                        let job_id = job.id.clone();
                        let context = JobContext {
                            upstream: self.upstream.clone(),
                            routing: Arc::clone(&self.routing),
                            stats: Arc::clone(&self.stats),
                            metrics: Arc::clone(&self.metrics),
                        };
                        let results = results.clone();
                        let active = Arc::clone(&active);
                        let abort = tasks.spawn(async move {
                            let _running = InFlight::enter(&context.metrics);
                            let result = context.execute(job).await;
                            let lease = result.lease_id.clone();
                            let _ = results.send(result);
                            lock(&active).remove(&lease);
                            drop(permit);
                        });
                        active_jobs.insert(lease_id, Active { job_id, abort });
                    }
                }
                Err(error @ GatewayError::Refused { .. }) => break Some(error),
                Err(error) if mode == Mode::Batch => break Some(error),
                Err(error) => {
                    failures += 1;
                    drop(permits);
                    let delay = Duration::from_millis(500 * (1 << failures.min(6)))
                        .min(Duration::from_secs(30));
                    tracing::warn!(%error, retry_in = ?delay, "fetch failed");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        };
        if fatal.is_none() && !tasks.is_empty() {
            tracing::info!(in_flight = tasks.len(), "finishing the jobs in flight");
        }
        // Drain: let jobs finish, unless a second signal (or a fatal error) says abort.
        let mut aborting = fatal.is_some();
        while !tasks.is_empty() && !aborting {
            tokio::select! {
                _ = tasks.join_next() => {}
                _ = stop.changed() => aborting = *stop.borrow() >= 2,
            }
        }
        if aborting {
            let handed_back: Vec<(String, String)> = lock(&active)
                .drain()
                .map(|(lease, job)| {
                    job.abort.abort();
                    (lease, job.job_id)
                })
                .collect();
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            for (lease_id, id) in handed_back {
                tracing::info!(job = %id, "handing the job back to the queue");
                let _ = results.send(NodeResult {
                    id,
                    lease_id,
                    status: NodeResultStatus::Released,
                    result: None,
                    error: None,
                    upstream_status: None,
                    retryable: true,
                });
            }
        }
        let _ = stop_heartbeat.send(true);
        let _ = heartbeat.await;
        drop(results);
        let flush = tokio::time::timeout(self.settings.flush_timeout, submitter);
        let delivery = match flush.await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Ok(()),
            Err(_) => {
                let _ = give_up.send(true);
                Err(GatewayError::Unreachable {
                    url: String::new(),
                    message: "timed out delivering the last results".to_owned(),
                })
            }
        };
        let summary = Summary {
            done: self.stats.done.load(Ordering::Relaxed),
            failed: self.stats.failed.load(Ordering::Relaxed),
            seconds: started.elapsed().as_secs_f64(),
            spooled: self.spool.len(),
        };
        if let Some(error) = fatal {
            return Err(error.into());
        }
        match delivery {
            Err(cause) if summary.spooled > 0 => Err(WorkerError::Undelivered {
                delivered: summary.done + summary.failed,
                path: self.spool.path().display().to_string(),
                cause,
            }),
            _ => Ok(summary),
        }
    }
}

/// Counts a job in flight for as long as it lives, aborted or not.
struct InFlight(prometheus::IntGauge);

impl InFlight {
    fn enter(metrics: &NodeMetrics) -> Self {
        metrics.in_flight.inc();
        Self(metrics.in_flight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What a job task needs.
struct JobContext {
    upstream: Option<Arc<UpstreamClient>>,
    routing: Arc<Routing>,
    stats: Arc<Stats>,
    metrics: Arc<NodeMetrics>,
}

impl JobContext {
    async fn execute(&self, job: LeasedJob) -> NodeResult {
        let started = Instant::now();
        let outcome = match (self.routing.target(&job.model), &self.upstream) {
            (Some(Target::Echo), _) => {
                tracing::debug!(job = %job.id, "answered by the built-in echo model");
                Ok(echo::complete(&job.request_payload, &job.id))
            }
            (Some(Target::Upstream(name)), Some(upstream)) => {
                upstream
                    .complete(&job.request_payload, name, job.request_id.as_deref())
                    .await
            }
            _ => Err(UpstreamError::Rejected {
                status: 404,
                error: ErrorBody::new(
                    format!(
                        "model `{}` is not served by node `{}`",
                        job.model, "this node"
                    ),
                    "invalid_request_error",
                )
                .with_code("model_not_found"),
            }),
        };
        let latency_ms = started.elapsed().as_millis() as u64;
        self.metrics
            .upstream_latency
            .with_label_values(&[job.model.as_str()])
            .observe(started.elapsed().as_secs_f64());
        let mut result = NodeResult {
            id: job.id.clone(),
            lease_id: job.lease_id.clone(),
            status: NodeResultStatus::Completed,
            result: None,
            error: None,
            upstream_status: None,
            retryable: false,
        };
        match outcome.and_then(|text| {
            RawValue::from_string(text).map_err(|e| UpstreamError::Transient {
                status: None,
                message: format!("unreadable completion: {e}"),
            })
        }) {
            Ok(completion) => {
                let usage: serde_json::Value =
                    serde_json::from_str(completion.get()).unwrap_or_default();
                let usage = &usage["usage"];
                tracing::info!(
                    job = %job.id,
                    model = %job.model,
                    latency_ms,
                    prompt_tokens = usage["prompt_tokens"].as_u64().unwrap_or(0),
                    completion_tokens = usage["completion_tokens"].as_u64().unwrap_or(0),
                    "job completed"
                );
                self.stats.done.fetch_add(1, Ordering::Relaxed);
                self.metrics.jobs.with_label_values(&["done"]).inc();
                result.result = Some(completion);
            }
            Err(error) => {
                tracing::warn!(job = %job.id, model = %job.model, latency_ms, kind = error.kind(), %error, "job failed");
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                self.metrics.jobs.with_label_values(&["failed"]).inc();
                self.metrics
                    .upstream_errors
                    .with_label_values(&[error.kind()])
                    .inc();
                result.status = NodeResultStatus::Failed;
                match error {
                    UpstreamError::Transient { status, message } => {
                        let code = if status == Some(429) {
                            "upstream_rate_limited"
                        } else {
                            "upstream_unavailable"
                        };
                        result.error =
                            Some(ErrorBody::new(message, "server_error").with_code(code));
                        result.upstream_status = status;
                        result.retryable = true;
                    }
                    UpstreamError::Rejected { status, error } => {
                        result.error = Some(error);
                        result.upstream_status = Some(status);
                    }
                    UpstreamError::Invalid { status, message } => {
                        result.error = Some(
                            ErrorBody::new(message, "server_error")
                                .with_code("upstream_invalid_response"),
                        );
                        result.upstream_status = Some(status);
                    }
                }
            }
        }
        result
    }
}

/// Extends the leases of running jobs and aborts those the gateway says are cancelled or
/// lost. Also logs the periodic summary line.
#[expect(
    clippy::too_many_arguments,
    reason = "the task's whole context, passed once"
)]
async fn heartbeat_loop(
    gateway: Arc<GatewayClient>,
    active: ActiveJobs,
    models: Vec<String>,
    settings: Settings,
    mut every: watch::Receiver<u64>,
    stats: Arc<Stats>,
    spool: Arc<Spool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_summary = Instant::now();
    let mut last_beat = tokio::time::Instant::now();
    loop {
        // A shorter period (learnt from the first lease) takes effect at once.
        let period =
            Duration::from_millis(*every.borrow_and_update()).max(Duration::from_millis(100));
        tokio::select! {
            () = tokio::time::sleep_until(last_beat + period) => {}
            _ = every.changed() => continue,
            _ = stop.changed() => return,
        }
        last_beat = tokio::time::Instant::now();
        let leases: Vec<String> = lock(&active).keys().cloned().collect();
        let in_flight = leases.len();
        match gateway
            .heartbeat(leases, &models, settings.concurrency)
            .await
        {
            Ok(answer) => {
                let mut jobs = lock(&active);
                for lease in answer.cancelled.iter().chain(&answer.lost) {
                    if let Some(job) = jobs.remove(lease) {
                        job.abort.abort();
                        tracing::info!(job = %job.job_id, "aborted: the job was cancelled or its lease lost");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "heartbeat failed"),
        }
        if last_summary.elapsed() >= settings.summary {
            last_summary = Instant::now();
            tracing::info!(
                done = stats.done.load(Ordering::Relaxed),
                failed = stats.failed.load(Ordering::Relaxed),
                in_flight,
                spooled = spool.len(),
                "summary"
            );
        }
    }
}

/// Delivers results: each goes into the spool first, then to the gateway, and leaves the
/// spool only once the gateway answered for it. Retries with backoff while the gateway is
/// away. Returns the last error if told to give up with results still spooled.
async fn submit_loop(
    gateway: Arc<GatewayClient>,
    spool: Arc<Spool>,
    metrics: Arc<NodeMetrics>,
    mut receiver: mpsc::UnboundedReceiver<NodeResult>,
    mut give_up: watch::Receiver<bool>,
) -> Result<(), GatewayError> {
    let mut delay = Duration::from_millis(200);
    let mut open = true;
    loop {
        let mut batch = Vec::new();
        if spool.is_empty() {
            match receiver.recv().await {
                Some(result) => batch.push(result),
                None => return Ok(()),
            }
        }
        loop {
            match receiver.try_recv() {
                Ok(result) => batch.push(result),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if let Err(error) = spool.add(batch) {
            tracing::error!(%error, path = %spool.path().display(), "cannot write the spool");
        }
        metrics.spooled.set(spool.len() as i64);
        let pending = spool.peek(500);
        if pending.is_empty() {
            if open {
                continue;
            }
            return Ok(());
        }
        match gateway.submit(&pending).await {
            Ok(outcomes) => {
                delay = Duration::from_millis(200);
                for outcome in &outcomes {
                    if matches!(
                        outcome.outcome,
                        SubmitOutcomeKind::Stale | SubmitOutcomeKind::Cancelled
                    ) {
                        tracing::info!(job = %outcome.id, outcome = ?outcome.outcome, "result discarded by the gateway");
                    }
                }
                let delivered: Vec<(String, String)> =
                    pending.into_iter().map(|r| (r.id, r.lease_id)).collect();
                if let Err(error) = spool.remove(&delivered) {
                    tracing::error!(%error, "cannot rewrite the spool");
                }
                metrics.spooled.set(spool.len() as i64);
            }
            Err(error) => {
                tracing::warn!(%error, spooled = spool.len(), retry_in = ?delay, "results kept in the spool");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = give_up.changed() => {
                        if *give_up.borrow() {
                            return Err(error);
                        }
                    }
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
