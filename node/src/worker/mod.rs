//! The work loop shared by `run` and `batch`: lease, execute up to `concurrency` jobs at
//! once, heartbeat their leases, and deliver results through the spool.
//!
//! Tasks: the fetch loop (here, in `Worker::run`), one task per job (`job`; a relayed job's
//! request to the gateway, `relay`, is owned by it and aborted with it), the heartbeat task
//! (`heartbeat`) and the submitter (`submit`). All of them end with `run`: the job
//! tasks are joined or aborted, the submitter ends once it is told no more results come and
//! the spool is empty, or when the flush times out, and then the heartbeat task is stopped.

mod heartbeat;
mod job;
mod pack;
mod relay;
mod settings;
mod streamed;
mod submit;

pub use settings::{Mode, Settings, Stats, Stop, StopLevel, Summary, WorkerError};

use crate::gateway::{GatewayClient, GatewayError};
use crate::metrics::NodeMetrics;
use crate::routing::Routing;
use crate::spool::Spool;
use crate::upstream::UpstreamClient;
use heartbeat::{Heartbeat, Period};
use job::{InFlight, JobContext};
use openbeepboop::{Endpoint, JobId, LeaseId, LeasedJob, NodeResult, NodeResultStatus};
use relay::RelayTo;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use submit::{Delivery, Intake};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};

pub struct Worker {
    pub gateway: Arc<GatewayClient>,
    pub upstream: Option<Arc<UpstreamClient>>,
    pub routing: Arc<Routing>,
    pub spool: Arc<Spool>,
    pub settings: Settings,
    pub stats: Arc<Stats>,
    pub metrics: Arc<NodeMetrics>,
}

/// A job being executed: its id, the handle that aborts its task, and that task's number
/// (the jobs of a pack share one task, aborted only once none of them is wanted).
struct Active {
    job_id: JobId,
    abort: AbortHandle,
    task: u64,
}

type ActiveJobs = Arc<Mutex<HashMap<LeaseId, Active>>>;

fn lock(active: &ActiveJobs) -> std::sync::MutexGuard<'_, HashMap<LeaseId, Active>> {
    active.lock().unwrap_or_else(|e| e.into_inner())
}

/// One `Worker::run`: the tasks it owns and what they share.
struct Run {
    worker: Worker,
    mode: Mode,
    stop: Stop,
    tasks: JoinSet<()>,
    active: ActiveJobs,
    slots: Arc<Semaphore>,
    period: Arc<Period>,
    delivery: Arc<Delivery>,
    /// Taken once, by whoever awaits its end: the fetch loop when it stopped on a refusal,
    /// or the flush. A `JoinHandle` must not be polled after it completed.
    submitter: Option<JoinHandle<Result<(), GatewayError>>>,
    intake: watch::Sender<Intake>,
    /// The number the next task gets (see [`Active::task`]).
    next_task: u64,
}

impl Worker {
    pub async fn run(self, mode: Mode, stop: Stop) -> Result<Summary, WorkerError> {
        let started = Instant::now();
        let delivery = Arc::new(Delivery::new(
            Arc::clone(&self.spool),
            Arc::clone(&self.metrics),
            Arc::clone(&self.stats),
        ));
        let (intake, intake_rx) = watch::channel(Intake::Open);
        let submitter = tokio::spawn(submit::submit_loop(
            Arc::clone(&self.gateway),
            Arc::clone(&delivery),
            intake_rx,
        ));
        let mut run = Run {
            active: Arc::default(),
            slots: Arc::new(Semaphore::new(self.settings.concurrency as usize)),
            period: Arc::new(Period::new(self.settings.heartbeat)),
            worker: self,
            mode,
            stop,
            tasks: JoinSet::new(),
            delivery,
            submitter: Some(submitter),
            intake,
            next_task: 0,
        };
        let (stop_heartbeat, heartbeat_stop) = watch::channel(false);
        let heartbeat = tokio::spawn(run.heartbeat().run(heartbeat_stop));
        run.deliver_first().await;
        let fatal = run.fetch_loop().await;
        let aborting = fatal.is_some() || run.drain().await;
        if aborting {
            run.hand_back().await;
        }
        // The heartbeat outlives the flush: it keeps the leases of the results being
        // delivered alive, and wakes the submitter when the gateway comes back.
        let flushed = run.flush().await;
        let _ = stop_heartbeat.send(true);
        let _ = heartbeat.await;
        let worker = &run.worker;
        let summary = Summary {
            done: worker.stats.done.load(Ordering::Relaxed),
            failed: worker.stats.failed.load(Ordering::Relaxed),
            seconds: started.elapsed().as_secs_f64(),
            spooled: worker.spool.len(),
        };
        if let Some(error) = fatal.or(flushed.err()) {
            return Err(error.into());
        }
        if summary.spooled > 0 {
            let cause = run.delivery.last_error().map_or_else(
                || "the gateway did not answer in time".to_owned(),
                |e| e.to_string(),
            );
            return Err(WorkerError::Undelivered {
                spooled: summary.spooled,
                path: worker.spool.path().display().to_string(),
                cause,
            });
        }
        Ok(summary)
    }
}

impl Run {
    fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            gateway: Arc::clone(&self.worker.gateway),
            active: Arc::clone(&self.active),
            models: self.worker.routing.names(),
            settings: self.worker.settings.clone(),
            period: Arc::clone(&self.period),
            stats: Arc::clone(&self.worker.stats),
            delivery: Arc::clone(&self.delivery),
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow() >= StopLevel::Draining
    }

    /// Gives what an earlier run left in the spool a bounded chance to reach the gateway
    /// before the first fetch, so that a restarted node does not lease its own finished
    /// jobs again once their leases lapse.
    async fn deliver_first(&mut self) {
        let mut size = self.delivery.watch_size();
        let waiting = *size.borrow();
        if waiting == 0 {
            return;
        }
        tracing::info!(
            spooled = waiting,
            "delivering the results an earlier run left in the spool"
        );
        let delivered = size.wait_for(|n| *n == 0);
        tokio::select! {
            _ = tokio::time::timeout(self.worker.settings.flush_timeout, delivered) => {}
            () = self.delivery.halted() => {}
            _ = self.stop.changed() => {}
        }
    }

    /// Leases and starts jobs until a signal or, in batch mode, until no work is left.
    /// Returns the error that stops the node, if one did.
    async fn fetch_loop(&mut self) -> Option<GatewayError> {
        let models = self.worker.routing.names();
        let endpoints = self.worker.settings.endpoints.clone();
        let mut failures = 0u32;
        loop {
            while self.tasks.try_join_next().is_some() {}
            if self.stopping() {
                return None;
            }
            if self.delivery.is_halted() || self.submitter.as_ref().is_none_or(|s| s.is_finished())
            {
                // The submitter only ends early on a refusal that stops the node.
                return self.submitter_error().await;
            }
            let first = tokio::select! {
                permit = Arc::clone(&self.slots).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return None,
                },
                _ = self.stop.changed() => continue,
            };
            let mut permits = vec![first];
            while permits.len() < self.worker.settings.batch_size as usize {
                match Arc::clone(&self.slots).try_acquire_owned() {
                    Ok(permit) => permits.push(permit),
                    Err(_) => break,
                }
            }
            let wait = match self.mode {
                Mode::Batch => Duration::ZERO,
                Mode::Daemon => self.worker.settings.fetch_wait,
            };
            // A fetch abandoned by a shutdown may have leased jobs: they return to the queue
            // when their lease lapses, and each is still stored exactly once.
            let gateway = Arc::clone(&self.worker.gateway);
            let delivery = Arc::clone(&self.delivery);
            let fetched = tokio::select! {
                fetched = gateway.fetch(&models, &endpoints, permits.len() as u32, wait) => fetched,
                _ = self.stop.changed() => continue,
                // Checked at the top of the loop.
                () = delivery.halted() => continue,
            };
            match fetched {
                Ok(jobs) if jobs.is_empty() => {
                    failures = 0;
                    self.delivery.gateway_answered();
                    drop(permits);
                    if self.mode == Mode::Batch {
                        if self.tasks.is_empty() {
                            return None;
                        }
                        // Wait for a job to finish: retries may queue more work.
                        tokio::select! {
                            _ = self.tasks.join_next() => {}
                            _ = self.stop.changed() => {}
                        }
                    }
                }
                Ok(mut jobs) => {
                    failures = 0;
                    self.delivery.gateway_answered();
                    if jobs.len() == permits.len() {
                        // A full answer: more may be queued to share the packs' calls.
                        jobs.extend(self.fill_packs(&jobs).await);
                    }
                    self.start(jobs, permits);
                }
                Err(error) if error.is_permanent() || self.mode == Mode::Batch => {
                    return Some(error);
                }
                Err(error) => {
                    failures += 1;
                    drop(permits);
                    let delay = Duration::from_millis(500 * (1 << failures.min(6)))
                        .min(Duration::from_secs(30));
                    tracing::warn!(%error, retry_in = ?delay, "fetch failed");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = self.stop.changed() => {}
                    }
                }
            }
        }
    }

    /// Awaits the submitter's end and returns the refusal that ended it, if one did.
    async fn submitter_error(&mut self) -> Option<GatewayError> {
        match self.submitter.take()?.await {
            Ok(Err(error)) => Some(error),
            _ => None,
        }
    }

    /// When a full fetch brought embeddings jobs, leases more of them at once (see
    /// [`pack::fill_for`]), without waiting. A failed fill only means smaller packs.
    async fn fill_packs(&self, jobs: &[LeasedJob]) -> Vec<LeasedJob> {
        let pack_max = self.worker.settings.embeddings_pack_max;
        let Some((models, limit)) = pack::fill_for(jobs, pack_max).filter(|_| !self.stopping())
        else {
            return Vec::new();
        };
        match self
            .worker
            .gateway
            .fetch(&models, &[Endpoint::Embeddings], limit, Duration::ZERO)
            .await
        {
            Ok(more) => more,
            Err(error) => {
                tracing::debug!(%error, "no more embeddings jobs leased to pack");
                Vec::new()
            }
        }
    }

    /// Starts one task per unit: a job alone, or a pack of embeddings jobs. Units beyond the
    /// slots taken for the fetch (a fill, or packs that could not merge) wait for a slot in
    /// their task, their leases heartbeated meanwhile.
    fn start(&mut self, jobs: Vec<LeasedJob>, permits: Vec<OwnedSemaphorePermit>) {
        if let Some(first) = jobs.first() {
            self.period
                .learn(first.lease_ttl_ms, first.lease_expires_at);
        }
        let units = pack::plan(jobs, self.worker.settings.embeddings_pack_max);
        let node_id: Arc<str> = Arc::from(self.worker.gateway.node_id.as_str());
        let mut active = lock(&self.active);
        let mut permits = permits.into_iter();
        for unit in units {
            let permit = permits.next();
            let slots = Arc::clone(&self.slots);
            let leases: Vec<(LeaseId, JobId)> = unit
                .iter()
                .map(|job| (job.lease_id.clone(), job.id.clone()))
                .collect();
            let context = JobContext {
                node_id: Arc::clone(&node_id),
                relay: RelayTo {
                    gateway: Arc::clone(&self.worker.gateway),
                    metrics: Arc::clone(&self.worker.metrics),
                    mode: self.worker.settings.relay,
                },
                upstream: self.worker.upstream.clone(),
                routing: Arc::clone(&self.worker.routing),
                metrics: Arc::clone(&self.worker.metrics),
            };
            let delivery = Arc::clone(&self.delivery);
            let jobs = Arc::clone(&self.active);
            let abort = self.tasks.spawn(async move {
                let permit = match permit {
                    Some(permit) => Some(permit),
                    None => slots.acquire_owned().await.ok(),
                };
                let _running: Vec<InFlight> = unit
                    .iter()
                    .map(|_| InFlight::enter(&context.metrics))
                    .collect();
                let results = context.run_unit(unit).await;
                // Spooled under the lock of the active jobs: a hand-back or an abort either
                // finds the job running, or its result already in the spool, never both. A
                // job the gateway cancelled or took away keeps no result.
                let mut jobs = lock(&jobs);
                for result in results {
                    if jobs.remove(&result.lease_id).is_some() {
                        delivery.keep(result);
                    }
                }
                drop(jobs);
                drop(permit);
            });
            let task = self.next_task;
            self.next_task += 1;
            for (lease_id, job_id) in leases {
                active.insert(
                    lease_id,
                    Active {
                        job_id,
                        abort: abort.clone(),
                        task,
                    },
                );
            }
        }
    }

    /// Lets the jobs in flight finish. Returns whether a second signal said to abort them.
    async fn drain(&mut self) -> bool {
        if !self.tasks.is_empty() {
            tracing::info!(in_flight = self.tasks.len(), "finishing the jobs in flight");
        }
        while !self.tasks.is_empty() {
            if *self.stop.borrow() >= StopLevel::Aborting {
                return true;
            }
            tokio::select! {
                _ = self.tasks.join_next() => {}
                _ = self.stop.changed() => {}
            }
        }
        false
    }

    /// Aborts the jobs in flight and spools a `RELEASED` hand-back for each, which requeues
    /// it at once.
    async fn hand_back(&mut self) {
        let handed_back: Vec<(LeaseId, Active)> = lock(&self.active).drain().collect();
        for (lease_id, job) in handed_back {
            job.abort.abort();
            tracing::info!(job = %job.job_id, "handing the job back to the queue");
            self.delivery.keep(NodeResult {
                id: job.job_id,
                lease_id,
                status: NodeResultStatus::Released,
                result: None,
                error: None,
                upstream_status: None,
                retryable: true,
            });
        }
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Tells the submitter no more results come and gives it `flush_timeout` to empty the
    /// spool; a signal during the flush gives up at once. Returns the refusal that stopped it, if one
    /// did.
    async fn flush(&mut self) -> Result<(), GatewayError> {
        let _ = self.intake.send(Intake::Closed);
        // Already awaited by the fetch loop, which returned its refusal.
        let Some(mut submitter) = self.submitter.take() else {
            return Ok(());
        };
        let spooled = self.worker.spool.len();
        if spooled > 0 && !submitter.is_finished() {
            tracing::info!(
                spooled,
                "delivering the last results (signal again to leave them in the spool)"
            );
        }
        let within = self.worker.settings.flush_timeout;
        // Only a signal that comes during the flush gives up on it: the one that made this
        // run abort its jobs has been seen already.
        let stop = &mut self.stop;
        stop.borrow_and_update();
        let aborted = async move {
            loop {
                if stop.changed().await.is_err() {
                    // No more signals can come: only the timeout ends the flush.
                    std::future::pending::<()>().await;
                }
                if *stop.borrow() >= StopLevel::Aborting {
                    return;
                }
            }
        };
        let finished = tokio::select! {
            finished = tokio::time::timeout(within, &mut submitter) => finished.ok(),
            _ = aborted => None,
        };
        match finished {
            Some(Ok(outcome)) => outcome,
            Some(Err(_)) => Ok(()),
            None => {
                // What it did not deliver stays in the spool for the next start.
                submitter.abort();
                Ok(())
            }
        }
    }
}
