//! The node's metrics, served at `--metrics-addr` in the Prometheus text format. Labels are
//! bounded: model, error kind and outcome; the series of kinds and outcomes exist at zero
//! from the start.

use crate::upstream::UpstreamError;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub struct NodeMetrics {
    registry: Registry,
    pub upstream_latency: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub in_flight: IntGauge,
    pub spooled: IntGauge,
    pub jobs: IntCounterVec,
    pub relay_failures: IntCounter,
}

impl NodeMetrics {
    pub fn new() -> Self {
        let buckets = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
            300.0, 600.0,
        ];
        let metrics = Self {
            registry: Registry::new(),
            upstream_latency: HistogramVec::new(
                HistogramOpts::new(
                    "obb_node_upstream_duration_seconds",
                    "Upstream chat calls, retries included.",
                )
                .buckets(buckets),
                &["model"],
            )
            .unwrap_or_else(|e| unreachable!("well-formed: {e}")),
            upstream_errors: IntCounterVec::new(
                Opts::new(
                    "obb_node_upstream_errors_total",
                    "Failed upstream jobs, by kind.",
                ),
                &["kind"],
            )
            .unwrap_or_else(|e| unreachable!("well-formed: {e}")),
            in_flight: IntGauge::new("obb_node_jobs_in_flight", "Jobs this node is running.")
                .unwrap_or_else(|e| unreachable!("well-formed: {e}")),
            spooled: IntGauge::new(
                "obb_node_spool_size",
                "Results waiting in the spool for the gateway.",
            )
            .unwrap_or_else(|e| unreachable!("well-formed: {e}")),
            jobs: IntCounterVec::new(
                Opts::new(
                    "obb_node_jobs_total",
                    "Results the gateway answered for, by outcome (done or failed).",
                ),
                &["outcome"],
            )
            .unwrap_or_else(|e| unreachable!("well-formed: {e}")),
            relay_failures: IntCounter::new(
                "obb_node_relay_failures_total",
                "Relayed streams given up after their request to the gateway broke 4 times; each job still submitted its whole result.",
            )
            .unwrap_or_else(|e| unreachable!("well-formed: {e}")),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(metrics.upstream_latency.clone()),
            Box::new(metrics.upstream_errors.clone()),
            Box::new(metrics.in_flight.clone()),
            Box::new(metrics.spooled.clone()),
            Box::new(metrics.jobs.clone()),
            Box::new(metrics.relay_failures.clone()),
        ];
        for collector in collectors {
            let _ = metrics.registry.register(collector);
        }
        for kind in UpstreamError::KINDS {
            metrics.upstream_errors.with_label_values(&[kind]);
        }
        for outcome in Outcome::ALL {
            metrics.jobs.with_label_values(&[outcome.label()]);
        }
        metrics
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// How a job ended, as the node counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Failed,
}

impl Outcome {
    const ALL: [Self; 2] = [Self::Done, Self::Failed];

    pub fn label(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves `GET /metrics` (any path, in fact) on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<NodeMetrics>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving metrics");
    // Lives as long as the process, like the signal handler: a scrape endpoint has no work to finish.
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                // One read is enough for a scraper's small GET; the body is ignored.
                if stream.read(&mut request).await.is_err() {
                    return;
                }
                let body = metrics.render();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body).await;
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_with_bounded_labels_exist_at_zero_from_the_start() {
        let text = String::from_utf8(NodeMetrics::new().render()).unwrap();
        for kind in UpstreamError::KINDS {
            let line = format!("obb_node_upstream_errors_total{{kind=\"{kind}\"}} 0");
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        for outcome in ["done", "failed"] {
            let line = format!("obb_node_jobs_total{{outcome=\"{outcome}\"}} 0");
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(text.lines().any(|l| l == "obb_node_relay_failures_total 0"));
    }
}
