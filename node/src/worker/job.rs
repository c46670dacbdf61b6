//! One job's run: the upstream call (or the built-in echo), its log line and metrics, and
//! the `NodeResult` the gateway takes. A relayed job's stream goes through `streamed`. It
//! neither spools nor submits; the task that runs it does.

use super::relay::RelayTo;
use super::{pack, streamed};
use crate::echo;
use crate::metrics::NodeMetrics;
use crate::routing::{Routing, Target};
use crate::upstream::{Completion, UpstreamClient, UpstreamError};
use openbeepboop::{Endpoint, ErrorBody, LeasedJob, NodeResult, NodeResultStatus};
use std::sync::Arc;
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
    pub node_id: Arc<str>,
    /// For relaying a stream: see [`Self::relays`].
    pub relay: RelayTo,
    pub upstream: Option<Arc<UpstreamClient>>,
    pub routing: Arc<Routing>,
    pub metrics: Arc<NodeMetrics>,
}

impl JobContext {
    /// Runs the job and logs how it went. Whether it counts as done or failed is decided
    /// on delivery, where a result can still become `result_too_large`.
    pub(super) async fn run(&self, job: LeasedJob) -> NodeResult {
        let started = Instant::now();
        let outcome = self.execute(&job).await;
        self.observe(started, &job.model);
        self.log(&job, &outcome, started, 1);
        result_of(job, outcome)
    }

    /// Runs a unit: a job alone as [`Self::run`], or a pack of embeddings jobs as one
    /// upstream call whose answer is split back into each job's result.
    pub(super) async fn run_unit(&self, mut unit: pack::Unit) -> Vec<NodeResult> {
        if unit.len() == 1
            && let Some(job) = unit.pop()
        {
            return vec![self.run(job).await];
        }
        let started = Instant::now();
        let outcomes = self.execute_pack(&unit).await;
        let size = unit.len();
        if let Some(first) = unit.first() {
            self.observe(started, &first.model);
        }
        unit.into_iter()
            .zip(outcomes)
            .map(|(job, outcome)| {
                self.log(&job, &outcome, started, size);
                result_of(job, outcome)
            })
            .collect()
    }

    fn observe(&self, started: Instant, model: &str) {
        self.metrics
            .upstream_latency
            .with_label_values(&[model])
            .observe(started.elapsed().as_secs_f64());
    }

    fn log(
        &self,
        job: &LeasedJob,
        outcome: &Result<Completion, UpstreamError>,
        started: Instant,
        packed: usize,
    ) {
        let latency_ms = started.elapsed().as_millis() as u64;
        let endpoint = job.endpoint.name();
        match outcome {
            Ok(completion) => tracing::info!(
                job = %job.id,
                model = %job.model,
                endpoint,
                packed,
                latency_ms,
                prompt_tokens = completion.prompt_tokens,
                completion_tokens = completion.completion_tokens,
                "job completed"
            ),
            Err(error) => {
                tracing::warn!(job = %job.id, model = %job.model, endpoint, packed, latency_ms, kind = error.kind(), %error, "job failed");
                self.metrics
                    .upstream_errors
                    .with_label_values(&[error.kind()])
                    .inc();
            }
        }
    }

    /// One upstream call for a pack: only a job whose part of the answer is missing fails
    /// when the rest is there. When the upstream refuses the whole call (a 4xx), one job's
    /// input may be at fault, and packs mix owners: each job is then sent alone, so that
    /// only the jobs the upstream refuses fail. Any other failure fails every job alike.
    async fn execute_pack(&self, jobs: &[LeasedJob]) -> Vec<Result<Completion, UpstreamError>> {
        let Some((body, parts)) = pack::packed_request(jobs) else {
            // Not packable after all (the plan only packs readable bodies): run each alone.
            return self.execute_each(jobs).await;
        };
        let Some(first) = jobs.first() else {
            return Vec::new();
        };
        let packed = LeasedJob {
            id: first.id.clone(),
            model: first.model.clone(),
            endpoint: Endpoint::Embeddings,
            request_payload: body,
            lease_id: first.lease_id.clone(),
            lease_expires_at: first.lease_expires_at,
            lease_ttl_ms: first.lease_ttl_ms,
            attempt: first.attempt,
            request_id: first.request_id.clone(),
            relay: false,
        };
        tracing::debug!(jobs = jobs.len(), model = %first.model, "embeddings packed into one call");
        match self.execute(&packed).await {
            Ok(answer) => pack::split(&answer, 200, &parts),
            Err(UpstreamError::Rejected { status, .. }) if jobs.len() > 1 => {
                tracing::debug!(
                    status,
                    jobs = jobs.len(),
                    "a packed call was refused; sending each job alone"
                );
                self.execute_each(jobs).await
            }
            Err(error) => jobs.iter().map(|_| Err(error.clone())).collect(),
        }
    }

    /// Each job alone, one after the other (they hold one slot between them).
    async fn execute_each(&self, jobs: &[LeasedJob]) -> Vec<Result<Completion, UpstreamError>> {
        let mut outcomes = Vec::with_capacity(jobs.len());
        for job in jobs {
            outcomes.push(self.execute(job).await);
        }
        outcomes
    }

    /// Whether `job`'s answer is relayed as it comes: the gateway asked for it, it still has
    /// the route, and the endpoint streams (chat, legacy completions or Responses; never
    /// embeddings).
    fn relays(&self, job: &LeasedJob) -> bool {
        job.relay
            && matches!(
                job.endpoint,
                Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Responses
            )
            && self.relay.gateway.relays()
    }

    async fn execute(&self, job: &LeasedJob) -> Result<Completion, UpstreamError> {
        let relays = self.relays(job);
        match (self.routing.target(&job.model), &self.upstream) {
            // Not relayed, even when asked: its answer is whole at once, and the gateway
            // replays a response that relayed nothing.
            (Some(Target::Echo), _) if job.endpoint == Endpoint::Responses => {
                tracing::debug!(job = %job.id, "answered by the built-in echo model");
                echo::respond(&job.request_payload, job.id.as_str())
            }
            (Some(Target::Echo), _) if job.endpoint != Endpoint::ChatCompletions => {
                Err(UpstreamError::Rejected {
                    status: 400,
                    error: ErrorBody::new(
                        format!(
                            "the built-in `echo` model answers only `/v1/chat/completions` and `/v1/responses`, not `{}`",
                            job.endpoint
                        ),
                        "invalid_request_error",
                    )
                    .with_code("unsupported_endpoint"),
                })
            }
            (Some(Target::Echo), _) => {
                tracing::debug!(job = %job.id, "answered by the built-in echo model");
                let completion = echo::complete(&job.request_payload, job.id.as_str()).map_err(
                    |e| UpstreamError::Transient {
                        status: None,
                        message: format!("unreadable completion: {e}"),
                    },
                )?;
                if !relays {
                    return Ok(completion);
                }
                streamed::relay_whole(&self.relay, job, completion).await
            }
            (Some(Target::Upstream(name)), Some(upstream))
                if relays && job.endpoint == Endpoint::Responses =>
            {
                // Its item events only: the gateway writes those that carry the response.
                let stream = upstream
                    .stream_responses(&job.request_payload, name, job.request_id.as_deref())
                    .await?;
                streamed::relay_response(&self.relay, job, stream).await
            }
            (Some(Target::Upstream(name)), Some(upstream)) if relays => {
                // Opened beside the upstream call, so that the first chunk finds the relay
                // request under way rather than waiting for its connection and checks.
                let relay = streamed::RelaySender::open(&self.relay, job);
                // Failures before the first chunk are the upstream's, as in a whole call.
                let stream = upstream
                    .stream(
                        job.endpoint,
                        &job.request_payload,
                        name,
                        job.request_id.as_deref(),
                    )
                    .await?;
                streamed::relay(relay, job, stream).await
            }
            (Some(Target::Upstream(name)), Some(upstream)) => {
                upstream
                    .complete(
                        job.endpoint,
                        &job.request_payload,
                        name,
                        job.request_id.as_deref(),
                    )
                    .await
            }
            _ => Err(UpstreamError::Rejected {
                status: 404,
                error: ErrorBody::new(
                    format!(
                        "model `{}` is not served by node `{}`",
                        job.model, self.node_id
                    ),
                    "invalid_request_error",
                )
                .with_code("model_not_found"),
            }),
        }
    }
}

/// The one place a job's outcome becomes what the gateway takes.
fn result_of(job: LeasedJob, outcome: Result<Completion, UpstreamError>) -> NodeResult {
    let mut result = NodeResult {
        id: job.id,
        lease_id: job.lease_id,
        status: NodeResultStatus::Completed,
        result: None,
        error: None,
        upstream_status: None,
        retryable: false,
    };
    let error = match outcome {
        Ok(completion) => {
            result.result = Some(completion.body);
            return result;
        }
        Err(error) => error,
    };
    result.status = NodeResultStatus::Failed;
    match error {
        UpstreamError::Transient { status, message } => {
            let code = if status == Some(429) {
                "upstream_rate_limited"
            } else {
                "upstream_unavailable"
            };
            result.error = Some(ErrorBody::new(message, "server_error").with_code(code));
            result.upstream_status = status;
            result.retryable = true;
        }
        UpstreamError::Rejected { status, error } => {
            result.error = Some(error);
            result.upstream_status = Some(status);
        }
        UpstreamError::Invalid { status, message } => {
            result.error = Some(
                ErrorBody::new(message, "server_error").with_code("upstream_invalid_response"),
            );
            result.upstream_status = Some(status);
        }
        // Not retryable: a retry would repeat what the gateway already relayed.
        UpstreamError::Interrupted { message } => {
            result.error =
                Some(ErrorBody::new(message, "server_error").with_code("stream_interrupted"));
        }
    }
    result
}
