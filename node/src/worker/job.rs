//! One job's run: the upstream call (or the built-in echo) turned into the `NodeResult` the
//! gateway takes. It neither spools nor sends; the task that runs it does.

use super::Stats;
use crate::echo;
use crate::metrics::NodeMetrics;
use crate::routing::{Routing, Target};
use crate::upstream::{UpstreamClient, UpstreamError};
use openbeepboop::{ErrorBody, LeasedJob, NodeResult, NodeResultStatus};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Counts a job in flight for as long as it lives, aborted or not.
pub(super) struct InFlight(prometheus::IntGauge);

impl InFlight {
    pub(super) fn enter(metrics: &NodeMetrics) -> Self {
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
pub(super) struct JobContext {
    pub upstream: Option<Arc<UpstreamClient>>,
    pub routing: Arc<Routing>,
    pub stats: Arc<Stats>,
    pub metrics: Arc<NodeMetrics>,
}

impl JobContext {
    pub(super) async fn execute(&self, job: LeasedJob) -> NodeResult {
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
