//! The jobs' and the queue's metrics: submits, endings, waits and run times by model, retries,
//! lapsed leases, tokens, the queue's depth, live nodes and SQLite's group commits.

use super::{Collectors, SECONDS, counter, histogram, single};
use crate::queue::{CommitStats, QueueEvent, QueueSnapshot};
use openbeepboop::{Endpoint, JobStatus};
use prometheus::{Gauge, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge};
use prometheus::{IntGaugeVec, Opts};

const BATCH_SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

pub struct QueueMetrics {
    jobs_submitted: IntCounterVec,
    jobs_finished: IntCounterVec,
    node_jobs_finished: IntCounterVec,
    queue_depth: IntGaugeVec,
    key_jobs: IntGaugeVec,
    oldest_queued: Gauge,
    queue_wait: HistogramVec,
    processing: HistogramVec,
    end_to_end: HistogramVec,
    lease_expirations: IntCounterVec,
    retries: IntCounterVec,
    leases_deferred: IntCounterVec,
    cancellations: IntCounter,
    expirations: IntCounter,
    nodes_alive: IntGauge,
    jobs_in_flight: IntGauge,
    tokens: IntCounterVec,
    commit_batch: Histogram,
    commit_latency: Histogram,
}

impl QueueMetrics {
    pub fn new() -> Self {
        Self {
            jobs_submitted: counter(
                "obb_jobs_submitted_total",
                "Jobs accepted by the gateway, by model and endpoint.",
                &["model", "endpoint"],
            ),
            jobs_finished: counter(
                "obb_jobs_finished_total",
                "Jobs that reached a final status, by model, endpoint and status.",
                &["model", "endpoint", "status"],
            ),
            node_jobs_finished: counter(
                "obb_node_jobs_finished_total",
                "Jobs finished, by the node that ran them last.",
                &["node", "status"],
            ),
            key_jobs: IntGaugeVec::new(
                Opts::new(
                    "obb_key_jobs",
                    "Jobs queued and running of each key with a `metrics_label`, by label.",
                ),
                &["key", "status"],
            )
            .unwrap_or_else(|e| unreachable!("well-formed: {e}")),
            queue_depth: IntGaugeVec::new(
                Opts::new("obb_queue_depth", "Jobs waiting or running now."),
                &["status", "model", "priority"],
            )
            .unwrap_or_else(|e| unreachable!("well-formed: {e}")),
            oldest_queued: Gauge::new(
                "obb_oldest_queued_job_age_seconds",
                "Age of the oldest queued job; 0 when none.",
            )
            .unwrap_or_else(|e| unreachable!("well-formed: {e}")),
            queue_wait: histogram(
                "obb_job_queue_wait_seconds",
                "From submit to lease.",
                SECONDS,
                &["model"],
            ),
            processing: histogram(
                "obb_job_processing_seconds",
                "From the last lease to the final status.",
                SECONDS,
                &["model"],
            ),
            end_to_end: histogram(
                "obb_job_end_to_end_seconds",
                "From submit to the final status.",
                SECONDS,
                &["model"],
            ),
            lease_expirations: counter(
                "obb_lease_expirations_total",
                "Leases that lapsed without a heartbeat.",
                &["model"],
            ),
            retries: counter(
                "obb_job_retries_total",
                "Jobs sent back to the queue for another attempt.",
                &["model"],
            ),
            leases_deferred: {
                let deferred = counter(
                    "obb_leases_deferred_total",
                    "Leases that passed over a key's queued jobs for its execution limits.",
                    &["reason"],
                );
                // The reasons are a bounded set, known up front.
                for reason in ["max_concurrent_jobs", "tokens_per_minute"] {
                    deferred.with_label_values(&[reason]);
                }
                deferred
            },
            cancellations: IntCounter::new(
                "obb_job_cancellations_total",
                "Jobs cancelled by their owner.",
            )
            .unwrap_or_else(|e| unreachable!("well-formed: {e}")),
            expirations: IntCounter::new(
                "obb_job_expirations_total",
                "Queued jobs that expired before running.",
            )
            .unwrap_or_else(|e| unreachable!("well-formed: {e}")),
            nodes_alive: IntGauge::new(
                "obb_nodes_alive",
                "Nodes seen within `node_alive_seconds`.",
            )
            .unwrap_or_else(|e| unreachable!("well-formed: {e}")),
            jobs_in_flight: IntGauge::new("obb_jobs_in_flight", "Jobs leased to nodes now.")
                .unwrap_or_else(|e| unreachable!("well-formed: {e}")),
            tokens: counter(
                "obb_tokens_total",
                "Tokens reported in completions' usage.",
                &["model", "kind"],
            ),
            commit_batch: single(
                "obb_sqlite_commit_batch_size",
                "Operations carried by one SQLite group commit.",
                BATCH_SIZES,
            ),
            commit_latency: single(
                "obb_sqlite_commit_duration_seconds",
                "Time of one SQLite group commit.",
                SECONDS,
            ),
        }
    }

    pub fn collectors(&self) -> Collectors {
        vec![
            Box::new(self.jobs_submitted.clone()),
            Box::new(self.leases_deferred.clone()),
            Box::new(self.jobs_finished.clone()),
            Box::new(self.node_jobs_finished.clone()),
            Box::new(self.queue_depth.clone()),
            Box::new(self.key_jobs.clone()),
            Box::new(self.oldest_queued.clone()),
            Box::new(self.queue_wait.clone()),
            Box::new(self.processing.clone()),
            Box::new(self.end_to_end.clone()),
            Box::new(self.lease_expirations.clone()),
            Box::new(self.retries.clone()),
            Box::new(self.cancellations.clone()),
            Box::new(self.expirations.clone()),
            Box::new(self.nodes_alive.clone()),
            Box::new(self.jobs_in_flight.clone()),
            Box::new(self.tokens.clone()),
            Box::new(self.commit_batch.clone()),
            Box::new(self.commit_latency.clone()),
        ]
    }

    /// Creates a model's series at zero, so that its retries, lapsed leases and endings
    /// read 0 until they happen. Cheap when they exist already.
    fn seen(&self, model: &str) {
        self.retries.with_label_values(&[model]);
        self.lease_expirations.with_label_values(&[model]);
        // The endpoints jobs can be submitted to: a bounded set, known up front.
        for endpoint in Endpoint::QUEUED {
            self.jobs_submitted
                .with_label_values(&[model, endpoint.as_str()]);
            for status in JobStatus::ALL.iter().filter(|s| s.is_final()) {
                self.jobs_finished
                    .with_label_values(&[model, endpoint.as_str(), status.as_str()]);
            }
        }
        for kind in ["prompt", "completion"] {
            self.tokens.with_label_values(&[model, kind]);
        }
    }

    pub fn record_commit(&self, stats: CommitStats) {
        self.commit_batch.observe(stats.ops as f64);
        self.commit_latency.observe(stats.latency.as_secs_f64());
    }

    /// Records one committed event of the jobs; the batches' events are not theirs.
    pub fn record(&self, event: &QueueEvent) {
        match event {
            QueueEvent::Submitted { model, endpoint } => {
                self.seen(model);
                self.jobs_submitted
                    .with_label_values(&[model, endpoint.as_str()])
                    .inc();
            }
            // Leased too: a job submitted before a restart is first seen here.
            QueueEvent::Leased { model, waited_ms } => {
                self.seen(model);
                self.queue_wait
                    .with_label_values(&[model])
                    .observe(seconds(*waited_ms));
            }
            QueueEvent::Finished {
                model,
                endpoint,
                status,
                owner: _,
                node,
                processing_ms,
                total_ms,
            } => {
                self.jobs_finished
                    .with_label_values(&[model, endpoint.as_str(), status.as_str()])
                    .inc();
                if let Some(node) = node {
                    self.node_jobs_finished
                        .with_label_values(&[node, status.as_str()])
                        .inc();
                }
                if let Some(ms) = processing_ms {
                    self.processing
                        .with_label_values(&[model])
                        .observe(seconds(*ms));
                }
                self.end_to_end
                    .with_label_values(&[model])
                    .observe(seconds(*total_ms));
                match status {
                    JobStatus::Cancelled => self.cancellations.inc(),
                    JobStatus::Expired => self.expirations.inc(),
                    _ => {}
                }
            }
            QueueEvent::Tokens {
                model,
                prompt,
                completion,
                ..
            } => {
                self.tokens
                    .with_label_values(&[model, "prompt"])
                    .inc_by(*prompt);
                self.tokens
                    .with_label_values(&[model, "completion"])
                    .inc_by(*completion);
            }
            QueueEvent::Retried { model } => self.retries.with_label_values(&[model]).inc(),
            QueueEvent::LeaseDeferred { reason } => {
                self.leases_deferred.with_label_values(&[reason]).inc()
            }
            QueueEvent::LeaseExpired { model } => {
                self.lease_expirations.with_label_values(&[model]).inc()
            }
            QueueEvent::BatchLineFinished { .. }
            | QueueEvent::BatchFileStored { .. }
            | QueueEvent::TokensReturned { .. } => {}
        }
    }

    /// Sets the queue's gauges from a snapshot read at scrape time.
    pub fn set_gauges(&self, snapshot: &QueueSnapshot) {
        self.queue_depth.reset();
        let mut in_flight = 0;
        for row in &snapshot.depth {
            let priority = row.priority.to_string();
            self.queue_depth
                .with_label_values(&[row.status.as_str(), &row.model, &priority])
                .set(row.count);
            if row.status == JobStatus::Processing {
                in_flight += row.count;
            }
        }
        self.jobs_in_flight.set(in_flight);
        // Only keys an admin labelled: their number is the operator's to bound.
        self.key_jobs.reset();
        for key in &snapshot.labelled_keys {
            for (status, count) in [("queued", key.queued), ("processing", key.running)] {
                self.key_jobs
                    .with_label_values(&[&key.label, status])
                    .set(count);
            }
        }
        self.oldest_queued
            .set(seconds(snapshot.oldest_queued_ms.unwrap_or(0)));
        self.nodes_alive.set(snapshot.nodes_alive);
    }
}

fn seconds(ms: i64) -> f64 {
    ms.max(0) as f64 / 1000.0
}
