//! Every metric of the gateway, defined once with its help text, a file per domain: `http`
//! (the edge), `queue` (jobs, nodes, tokens and SQLite commits), `batches` and `stream`
//! (the live relay). Names start
//! with `obb_` and labels are bounded: model, status, priority, route, status class, error
//! kind, file and node name, never a job or batch id.
//!
//! Counters and histograms are fed by the store's commit events and by the HTTP edge;
//! gauges of the queue's state are read from the store when Prometheus scrapes. Series
//! whose labels are known up front (routes, status classes, error kinds, final statuses,
//! batch statuses) exist at zero from the start, so a dashboard shows 0 rather than "No
//! data"; a model's series all appear at zero together when the model is first seen.

mod batches;
mod http;
mod queue;
mod stream;

use crate::queue::{CommitStats, QueueEvent, QueueSnapshot};
use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

pub use http::InFlightRequest;

/// Latency buckets from 1 ms to 10 min, for everything measured in seconds.
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

pub struct Metrics {
    registry: Registry,
    http: http::HttpMetrics,
    queue: queue::QueueMetrics,
    batches: batches::BatchMetrics,
    /// The live relay's; fed by `http::relay_in`.
    pub stream: stream::StreamMetrics,
}

fn histogram(name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .unwrap_or_else(|e| unreachable!("metric `{name}` is well-formed: {e}"))
}

fn single(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .unwrap_or_else(|e| unreachable!("metric `{name}` is well-formed: {e}"))
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("metric `{name}` is well-formed: {e}"))
}

impl Metrics {
    pub fn new() -> Self {
        let metrics = Self {
            registry: Registry::new(),
            http: http::HttpMetrics::new(),
            queue: queue::QueueMetrics::new(),
            batches: batches::BatchMetrics::new(),
            stream: stream::StreamMetrics::new(),
        };
        let collectors = [
            metrics.http.collectors(),
            metrics.queue.collectors(),
            metrics.batches.collectors(),
            metrics.stream.collectors(),
        ];
        for collector in collectors.into_iter().flatten() {
            // Names are unique by construction; a clash would be a bug caught by the tests.
            let _ = metrics.registry.register(collector);
        }
        metrics
    }

    /// Records a group commit and what it did.
    pub fn record_commit(&self, stats: CommitStats, events: &[QueueEvent]) {
        self.queue.record_commit(stats);
        for event in events {
            self.queue.record(event);
            self.batches.record(event);
        }
    }

    /// Records one answered request. `waited` is the time spent in long-poll waits.
    pub fn record_request(
        &self,
        route: &str,
        status: u16,
        error_kind: Option<&str>,
        elapsed: std::time::Duration,
        waited: std::time::Duration,
    ) {
        self.http
            .record_request(route, status, error_kind, elapsed, waited);
    }

    /// Counts a request as in flight until the returned guard is dropped.
    pub fn request_started(&self) -> InFlightRequest {
        self.http.request_started()
    }

    /// The text exposition, with the queue's and the batches' gauges taken from `snapshot`,
    /// the relay's from `relays`.
    pub fn render(&self, snapshot: &QueueSnapshot, relays: crate::relay::RelayStats) -> Vec<u8> {
        self.queue.set_gauges(snapshot);
        self.batches.set_gauges(snapshot);
        self.stream.set_gauges(relays);
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The collectors of one domain, for `Metrics::new` to register.
type Collectors = Vec<Box<dyn Collector>>;

#[cfg(test)]
mod tests;
