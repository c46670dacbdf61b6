//! Every metric of the gateway, defined once with its help text. Names start with `obb_`
//! and labels are bounded: model, status, priority, route, status class, error kind and
//! node name, never a job id.
//!
//! Counters and histograms are fed by the store's commit events and by the HTTP edge;
//! gauges of the queue's state are read from the store when Prometheus scrapes. Series
//! whose labels are known up front (routes, status classes, error kinds, final statuses)
//! exist at zero from the start, so a dashboard shows 0 rather than "No data"; a model's
//! series all appear at zero together when the model is first seen.
//!
//! Longer than most files (about 500 lines) on purpose: every metric is defined here, with
//! its help text, and its tests sit beside it; split, the definitions would be in two places.

use crate::queue::{CommitStats, QueueEvent, QueueSnapshot};
use openbeepboop::JobStatus;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::time::Duration;

/// Latency buckets from 1 ms to 10 min, for everything measured in seconds.
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];
const BATCH_SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

pub struct Metrics {
    registry: Registry,
    jobs_submitted: IntCounterVec,
    jobs_finished: IntCounterVec,
    node_jobs_finished: IntCounterVec,
    queue_depth: IntGaugeVec,
    oldest_queued: prometheus::Gauge,
    queue_wait: HistogramVec,
    processing: HistogramVec,
    end_to_end: HistogramVec,
    lease_expirations: IntCounterVec,
    retries: IntCounterVec,
    cancellations: IntCounter,
    expirations: IntCounter,
    nodes_alive: IntGauge,
    jobs_in_flight: IntGauge,
    tokens: IntCounterVec,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    http_errors: IntCounterVec,
    http_in_flight: IntGauge,
    overhead: Histogram,
    commit_batch: Histogram,
    commit_latency: Histogram,
}

fn histogram(name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .unwrap_or_else(|e| unreachable!("metric `{name}` is well-formed: {e}"))
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("metric `{name}` is well-formed: {e}"))
}

impl Metrics {
    pub fn new() -> Self {
        let single = |name: &str, help: &str, buckets: &[f64]| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                .unwrap_or_else(|e| unreachable!("metric `{name}` is well-formed: {e}"))
        };
        let metrics = Self {
            registry: Registry::new(),
            jobs_submitted: counter(
                "obb_jobs_submitted_total",
                "Jobs accepted by the gateway.",
                &["model"],
            ),
            jobs_finished: counter(
                "obb_jobs_finished_total",
                "Jobs that reached a final status.",
                &["model", "status"],
            ),
            node_jobs_finished: counter(
                "obb_node_jobs_finished_total",
                "Jobs finished, by the node that ran them last.",
                &["node", "status"],
            ),
            queue_depth: IntGaugeVec::new(
                Opts::new("obb_queue_depth", "Jobs waiting or running now."),
                &["status", "model", "priority"],
            )
            .unwrap_or_else(|e| unreachable!("well-formed: {e}")),
            oldest_queued: prometheus::Gauge::new(
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
            http_requests: counter(
                "obb_http_requests_total",
                "HTTP requests answered.",
                &["route", "class"],
            ),
            http_duration: histogram(
                "obb_http_request_duration_seconds",
                "HTTP request duration, waits included.",
                SECONDS,
                &["route"],
            ),
            http_errors: counter(
                "obb_http_errors_total",
                "Error answers, by kind.",
                &["kind"],
            ),
            http_in_flight: IntGauge::new(
                "obb_http_requests_in_flight",
                "Requests being handled now, long-polls included.",
            )
            .unwrap_or_else(|e| unreachable!("well-formed: {e}")),
            overhead: single(
                "obb_gateway_overhead_seconds",
                "Time the gateway spent on a request, long-poll waits excluded.",
                SECONDS,
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
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(metrics.jobs_submitted.clone()),
            Box::new(metrics.jobs_finished.clone()),
            Box::new(metrics.node_jobs_finished.clone()),
            Box::new(metrics.queue_depth.clone()),
            Box::new(metrics.oldest_queued.clone()),
            Box::new(metrics.queue_wait.clone()),
            Box::new(metrics.processing.clone()),
            Box::new(metrics.end_to_end.clone()),
            Box::new(metrics.lease_expirations.clone()),
            Box::new(metrics.retries.clone()),
            Box::new(metrics.cancellations.clone()),
            Box::new(metrics.expirations.clone()),
            Box::new(metrics.nodes_alive.clone()),
            Box::new(metrics.jobs_in_flight.clone()),
            Box::new(metrics.tokens.clone()),
            Box::new(metrics.http_requests.clone()),
            Box::new(metrics.http_duration.clone()),
            Box::new(metrics.http_errors.clone()),
            Box::new(metrics.http_in_flight.clone()),
            Box::new(metrics.overhead.clone()),
            Box::new(metrics.commit_batch.clone()),
            Box::new(metrics.commit_latency.clone()),
        ];
        for collector in collectors {
            // Names are unique by construction; a clash would be a bug caught by the tests.
            let _ = metrics.registry.register(collector);
        }
        for route in crate::http::ROUTE_NAMES {
            for class in ["2xx", "4xx", "5xx"] {
                metrics.http_requests.with_label_values(&[route, class]);
            }
            metrics.http_duration.with_label_values(&[route]);
        }
        for kind in crate::http::ERROR_LABELS {
            metrics.http_errors.with_label_values(&[kind]);
        }
        metrics
    }

    /// Creates a model's series at zero, so that its retries, lapsed leases and endings
    /// read 0 until they happen. Cheap when they exist already.
    fn seen(&self, model: &str) {
        self.jobs_submitted.with_label_values(&[model]);
        self.retries.with_label_values(&[model]);
        self.lease_expirations.with_label_values(&[model]);
        for status in JobStatus::ALL.iter().filter(|s| s.is_final()) {
            self.jobs_finished
                .with_label_values(&[model, status.as_str()]);
        }
        for kind in ["prompt", "completion"] {
            self.tokens.with_label_values(&[model, kind]);
        }
    }

    /// Records a group commit and what it did.
    pub fn record_commit(&self, stats: CommitStats, events: &[QueueEvent]) {
        self.commit_batch.observe(stats.ops as f64);
        self.commit_latency.observe(stats.latency.as_secs_f64());
        for event in events {
            match event {
                QueueEvent::Submitted { model } => {
                    self.seen(model);
                    self.jobs_submitted.with_label_values(&[model]).inc();
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
                    status,
                    node,
                    processing_ms,
                    total_ms,
                } => {
                    self.jobs_finished
                        .with_label_values(&[model, status.as_str()])
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
                } => {
                    self.tokens
                        .with_label_values(&[model, "prompt"])
                        .inc_by(*prompt);
                    self.tokens
                        .with_label_values(&[model, "completion"])
                        .inc_by(*completion);
                }
                QueueEvent::Retried { model } => self.retries.with_label_values(&[model]).inc(),
                QueueEvent::LeaseExpired { model } => {
                    self.lease_expirations.with_label_values(&[model]).inc()
                }
            }
        }
    }

    /// Records one answered request. `waited` is the time spent in long-poll waits.
    pub fn record_request(
        &self,
        route: &str,
        status: u16,
        error_kind: Option<&str>,
        elapsed: Duration,
        waited: Duration,
    ) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.http_requests.with_label_values(&[route, class]).inc();
        self.http_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
        self.overhead
            .observe(elapsed.saturating_sub(waited).as_secs_f64());
        if let Some(kind) = error_kind {
            self.http_errors.with_label_values(&[kind]).inc();
        }
    }

    /// Counts a request as in flight until the returned guard is dropped.
    pub fn request_started(&self) -> InFlightRequest {
        self.http_in_flight.inc();
        InFlightRequest(self.http_in_flight.clone())
    }

    /// The text exposition, with the queue gauges taken from `snapshot`.
    pub fn render(&self, snapshot: &QueueSnapshot) -> Vec<u8> {
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
        self.oldest_queued
            .set(seconds(snapshot.oldest_queued_ms.unwrap_or(0)));
        self.nodes_alive.set(snapshot.nodes_alive);
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// A request in flight; it stops counting when dropped, on every path out of a handler.
pub struct InFlightRequest(IntGauge);

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn seconds(ms: i64) -> f64 {
    ms.max(0) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::DepthRow;

    /// Asserts that the exposition of `snapshot` holds every one of `lines`.
    fn assert_renders(metrics: &Metrics, snapshot: &QueueSnapshot, lines: &[&str]) {
        let text = String::from_utf8(metrics.render(snapshot)).unwrap();
        for line in lines {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
    }

    #[test]
    fn bounded_series_render_at_zero_before_any_event() {
        let metrics = Metrics::new();
        let empty = QueueSnapshot::default();
        assert_renders(
            &metrics,
            &empty,
            &[
                "obb_http_errors_total{kind=\"unavailable\"} 0",
                "obb_http_errors_total{kind=\"job_failed\"} 0",
                "obb_http_requests_total{class=\"5xx\",route=\"chat_completions\"} 0",
                "obb_http_request_duration_seconds_count{route=\"node_fetch\"} 0",
                "obb_job_cancellations_total 0",
                "obb_job_expirations_total 0",
                "obb_gateway_overhead_seconds_count 0",
            ],
        );
        let submitted = [QueueEvent::Submitted { model: "m".into() }];
        metrics.record_commit(
            CommitStats {
                ops: 1,
                latency: Duration::ZERO,
            },
            &submitted,
        );
        assert_renders(
            &metrics,
            &empty,
            &[
                "obb_job_retries_total{model=\"m\"} 0",
                "obb_lease_expirations_total{model=\"m\"} 0",
                "obb_jobs_finished_total{model=\"m\",status=\"failed\"} 0",
                "obb_tokens_total{kind=\"completion\",model=\"m\"} 0",
            ],
        );
    }

    #[test]
    fn events_and_snapshots_appear_in_the_exposition() {
        let metrics = Metrics::new();
        metrics.record_commit(
            CommitStats {
                ops: 3,
                latency: Duration::from_millis(2),
            },
            &[
                QueueEvent::Submitted { model: "m".into() },
                QueueEvent::Leased {
                    model: "m".into(),
                    waited_ms: 40,
                },
                QueueEvent::Finished {
                    model: "m".into(),
                    status: JobStatus::Cancelled,
                    node: Some("n1".into()),
                    processing_ms: Some(5),
                    total_ms: 50,
                },
                QueueEvent::Finished {
                    model: "m".into(),
                    status: JobStatus::Expired,
                    node: None,
                    processing_ms: None,
                    total_ms: 50,
                },
                QueueEvent::Tokens {
                    model: "m".into(),
                    prompt: 7,
                    completion: 3,
                },
                QueueEvent::Retried { model: "m".into() },
                QueueEvent::LeaseExpired { model: "m".into() },
            ],
        );
        metrics.record_request(
            "poll",
            503,
            Some("unavailable"),
            Duration::from_millis(3),
            Duration::ZERO,
        );
        let snapshot = QueueSnapshot {
            depth: vec![
                DepthRow {
                    status: JobStatus::Queued,
                    model: "m".into(),
                    priority: 1,
                    count: 4,
                },
                DepthRow {
                    status: JobStatus::Processing,
                    model: "m".into(),
                    priority: 3,
                    count: 2,
                },
            ],
            oldest_queued_ms: Some(1500),
            nodes_alive: 2,
        };
        assert_renders(
            &metrics,
            &snapshot,
            &[
                "obb_jobs_submitted_total{model=\"m\"} 1",
                "obb_tokens_total{kind=\"prompt\",model=\"m\"} 7",
                "obb_queue_depth{model=\"m\",priority=\"1\",status=\"queued\"} 4",
                "obb_jobs_in_flight 2",
                "obb_oldest_queued_job_age_seconds 1.5",
                "obb_nodes_alive 2",
                "obb_job_cancellations_total 1",
                "obb_job_expirations_total 1",
                "obb_http_requests_total{class=\"5xx\",route=\"poll\"} 1",
                "obb_sqlite_commit_batch_size_count 1",
                "obb_node_jobs_finished_total{node=\"n1\",status=\"cancelled\"} 1",
            ],
        );
    }
}
