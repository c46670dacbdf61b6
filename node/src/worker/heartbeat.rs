//! The heartbeat task: extends the leases of running jobs and of finished results waiting
//! in the spool, aborts the jobs the gateway says are cancelled or lost, tells the submitter
//! when the gateway answers again, and logs the periodic summary. Its period comes from the lease's
//! length (`lease_ttl_ms`) and the monotonic clock, never from comparing the gateway's clock
//! with ours.

use super::submit::Delivery;
use super::{ActiveJobs, Settings, Stats, lock};
use crate::gateway::GatewayClient;
use openbeepboop::{HeartbeatResponse, LeaseId};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The shortest period, whatever a lease says: a floor against a gateway that answers a
/// lease of a few milliseconds.
const FLOOR: Duration = Duration::from_millis(100);
/// The most leases of spooled results one heartbeat extends, oldest first (those are sent
/// first): about 45 KB of lease ids.
const SPOOLED_LEASES: usize = 1000;

/// The heartbeat period in milliseconds, shared by whoever learns the lease's length (the
/// fetch loop, the heartbeat task) and the heartbeat task that sleeps by it.
pub(super) struct Period {
    configured_ms: u64,
    current: watch::Sender<u64>,
}

impl Period {
    pub(super) fn new(configured: Duration) -> Self {
        let configured_ms = configured.as_millis() as u64;
        Self {
            configured_ms,
            current: watch::Sender::new(configured_ms),
        }
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.current.subscribe()
    }

    /// Learns from a lease: `ttl_ms` is its length from the gateway's answer, in ms;
    /// `expires_at` its end on the gateway's clock, in Unix ms, used only when an older
    /// gateway sent no length.
    pub(super) fn learn(&self, ttl_ms: u64, expires_at: i64) {
        let every = third_of_lease(ttl_ms, expires_at, now_ms()).min(self.configured_ms);
        self.current.send_if_modified(|current| {
            let changed = *current != every;
            *current = every;
            changed
        });
    }
}

/// A third of the lease, in ms, so that two heartbeats may fail before it lapses.
fn third_of_lease(ttl_ms: u64, expires_at: i64, now_ms: i64) -> u64 {
    if ttl_ms > 0 {
        return ttl_ms / 3;
    }
    // An older gateway: only its clock's expiry is known, so skew distorts this.
    ((expires_at - now_ms).max(300) / 3) as u64
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What the heartbeat task needs.
pub(super) struct Heartbeat {
    pub gateway: Arc<GatewayClient>,
    pub active: ActiveJobs,
    pub models: Vec<String>,
    pub settings: Settings,
    pub period: Arc<Period>,
    pub stats: Arc<Stats>,
    pub delivery: Arc<Delivery>,
}

impl Heartbeat {
    /// Runs until `stop` changes.
    pub(super) async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut every = self.period.subscribe();
        let mut last_summary = Instant::now();
        // The first beat goes at once, so that the gateway's node list has the node's
        // capacity (and, later, its drain) from the start, not a period later.
        let mut last_beat: Option<tokio::time::Instant> = None;
        loop {
            // A shorter period (learnt from a lease) takes effect at once.
            let period = Duration::from_millis(*every.borrow_and_update()).max(FLOOR);
            let due = last_beat.map_or_else(tokio::time::Instant::now, |at| at + period);
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                _ = every.changed() => continue,
                _ = stop.changed() => return,
            }
            last_beat = Some(tokio::time::Instant::now());
            let mut leases: Vec<LeaseId> = lock(&self.active).keys().cloned().collect();
            let in_flight = leases.len();
            // A finished result keeps its job's lease until the gateway has it: a result
            // held back by an outage must not find its lease lapsed, its job failed or run
            // again, when the gateway returns.
            leases.extend(self.delivery.spool.finished_leases(SPOOLED_LEASES));
            let beat = self
                .gateway
                .heartbeat(leases, &self.models, self.settings.concurrency);
            // A heartbeat hanging on a frozen gateway must not hold up the node's exit.
            let answer = tokio::select! {
                answer = beat => answer,
                _ = stop.changed() => return,
            };
            match answer {
                Ok(answer) => {
                    self.delivery.gateway_answered();
                    self.apply(&answer);
                }
                Err(error) => tracing::warn!(%error, "heartbeat failed"),
            }
            if last_summary.elapsed() >= self.settings.summary {
                last_summary = Instant::now();
                tracing::info!(
                    done = self.stats.done.load(Ordering::Relaxed),
                    failed = self.stats.failed.load(Ordering::Relaxed),
                    in_flight,
                    spooled = self.delivery.spool.len(),
                    "summary"
                );
            }
        }
    }

    fn apply(&self, answer: &HeartbeatResponse) {
        if answer.lease_ttl_ms > 0 {
            self.period
                .learn(answer.lease_ttl_ms, answer.lease_expires_at);
        }
        let mut jobs = lock(&self.active);
        for lease in answer.cancelled.iter().chain(&answer.lost) {
            if let Some(job) = jobs.remove(lease) {
                // A pack's call goes on while another of its jobs is still wanted; this
                // job's part of the answer is dropped, as it is no longer active.
                if jobs.values().any(|other| other.task == job.task) {
                    tracing::info!(job = %job.job_id, "dropped from its pack: the job was cancelled or its lease lost");
                } else {
                    job.abort.abort();
                    tracing::info!(job = %job.job_id, "aborted: the job was cancelled or its lease lost");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_is_a_third_of_the_lease_length_whatever_the_clocks_say() {
        // A 6 s lease, with our clock 60 s behind or 120 s ahead of the gateway's.
        let now = 1_800_000_000_000;
        for skew in [-60_000, 120_000] {
            assert_eq!(third_of_lease(6_000, now + 6_000, now + skew), 2_000);
        }
        // An older gateway that sends no length: its expiry is all there is.
        assert_eq!(third_of_lease(0, now + 6_000, now), 2_000);
        assert_eq!(third_of_lease(0, now, now + 120_000), 100);
    }

    #[test]
    fn a_lease_shortens_the_configured_period_but_never_lengthens_it() {
        let period = Period::new(Duration::from_secs(20));
        let seen = period.subscribe();
        period.learn(6_000, 0);
        assert_eq!(*seen.borrow(), 2_000);
        period.learn(600_000, 0);
        assert_eq!(*seen.borrow(), 20_000);
    }
}
