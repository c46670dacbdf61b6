//! The gateway's node API, from the node's side: fetch, heartbeat, submit and the relay of
//! a job's stream, over the TLS that `[server]` configures.

use crate::config::{ConfigError, ServerSection};
use crate::tls;
use openbeepboop::{
    Endpoint, ErrorEnvelope, FetchRequest, FetchResponse, HeartbeatRequest, HeartbeatResponse,
    JobId, LeaseId, LeasedJob, NodeId, NodeResult, RelayAck, SubmitOutcome, SubmitResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot reach the gateway at `{url}`: {message}")]
    Unreachable { url: String, message: String },
    /// 401 or 403: the node key is wrong, revoked or not a NODE key. Retrying cannot help.
    #[error("the gateway refused the node key ({status}): {message}")]
    Refused { status: u16, message: String },
    /// 400, 404, 413 or 422: this request can never succeed, however often it is sent.
    #[error("the gateway rejected `{path}` ({status}): {message}")]
    Rejected {
        path: String,
        status: u16,
        message: String,
    },
    /// Any other answer that is not a success (5xx, 429, 408, …): worth retrying.
    #[error("the gateway answered {status}: {message}")]
    Failed { status: u16, message: String },
}

impl GatewayError {
    /// Whether sending the same request again cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Refused { .. } | Self::Rejected { .. })
    }
}

pub struct GatewayClient {
    http: reqwest::Client,
    base: String,
    key: String,
    pub node_id: NodeId,
    /// The gateway's `max_submit_bytes` from its last fetch answer, in bytes; 0 until known.
    submit_limit: AtomicU64,
    /// Set once `/internal/queue/stream` answered 404: the gateway predates relaying, so
    /// relayed jobs run unstreamed and are submitted whole, without asking again.
    no_relay_route: AtomicBool,
    /// Whether the gateway last said an admin drained this node, so that the change is
    /// logged once, not at every fetch.
    draining: AtomicBool,
}

/// The node API's path for relayed streams.
pub const RELAY_PATH: &str = "/internal/queue/stream";

impl GatewayClient {
    /// A client for the gateway at `server.url`, trusting `server.ca_cert` and presenting
    /// `server.client_cert` when they are set.
    pub fn new(server: &ServerSection, key: &str, node_id: &str) -> Result<Self, ConfigError> {
        let hop = tls::Hop {
            section: "server",
            ca_cert: server.ca_cert.as_deref(),
            client_cert: server
                .client_cert
                .as_deref()
                .zip(server.client_key.as_deref()),
        };
        let http = tls::client_builder(hop)?
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ConfigError::Client {
                section: "server",
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            base: server.url.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
            node_id: NodeId::new(node_id),
            submit_limit: AtomicU64::new(0),
            no_relay_route: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        })
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, GatewayError> {
        let url = format!("{}{path}", self.base);
        let request = self.http.post(&url).timeout(timeout).json(body);
        self.exchange(path, request).await
    }

    /// Sends `request` (to `path`) with the node key and reads the gateway's answer as `T`:
    /// an error for a transport failure, a status of 300 or more, or an unreadable body.
    async fn exchange<T: DeserializeOwned>(
        &self,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, GatewayError> {
        let unreachable = |e: reqwest::Error| GatewayError::Unreachable {
            url: self.base.clone(),
            message: tls::describe(&e, "server"),
        };
        let response = request
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(unreachable)?;
        if status >= 300 {
            return Err(answer_error(path, status, text));
        }
        serde_json::from_str(&text).map_err(|e| GatewayError::Failed {
            status,
            message: format!("unreadable answer from `{path}`: {e}"),
        })
    }

    /// Whether relayed jobs stream to the gateway: false once it was found to lack the route.
    pub fn relays(&self) -> bool {
        !self.no_relay_route.load(Ordering::Relaxed)
    }

    /// Streams a job's frames (`body`: NDJSON [`openbeepboop::RelayFrame`]s, sent as they
    /// come) to `POST /internal/queue/stream` for this lease, and returns the gateway's
    /// answer, which comes when the body ends or, on a refusal, at once. No timeout: the
    /// body lasts as long as the upstream's stream. A 404 is remembered ([`Self::relays`]).
    pub async fn relay(
        &self,
        job_id: &JobId,
        lease_id: &LeaseId,
        body: reqwest::Body,
    ) -> Result<RelayAck, GatewayError> {
        let url = format!("{}{RELAY_PATH}", self.base);
        let request = self
            .http
            .post(&url)
            .header("x-obb-job-id", job_id.as_str())
            .header("x-obb-lease-id", lease_id.as_str())
            .header("content-type", "application/x-ndjson")
            .body(body);
        let answer = self.exchange(RELAY_PATH, request).await;
        if matches!(answer, Err(GatewayError::Rejected { status: 404, .. }))
            && !self.no_relay_route.swap(true, Ordering::Relaxed)
        {
            tracing::info!(
                gateway = %self.base,
                "the gateway has no {RELAY_PATH}: relayed jobs run unstreamed and are submitted whole"
            );
        }
        answer
    }

    /// Leases up to `limit` jobs of `models` and `endpoints`, waiting up to `wait` for one
    /// to arrive.
    pub async fn fetch(
        &self,
        models: &[String],
        endpoints: &[Endpoint],
        limit: u32,
        wait: Duration,
    ) -> Result<Vec<LeasedJob>, GatewayError> {
        let request = FetchRequest {
            node_id: self.node_id.clone(),
            models: models.to_vec(),
            limit,
            wait: wait.as_secs_f64(),
            // A chat-only node names none, as nodes did before endpoints: gateways that
            // predate them refuse the unknown field.
            endpoints: if endpoints == [Endpoint::ChatCompletions] {
                Vec::new()
            } else {
                endpoints.to_vec()
            },
        };
        let response: FetchResponse = self
            .post(
                "/internal/queue/fetch",
                &request,
                wait + Duration::from_secs(30),
            )
            .await?;
        if let Some(limit) = response.max_submit_bytes {
            self.submit_limit.store(limit, Ordering::Relaxed);
        }
        self.note_draining(response.draining);
        Ok(response.jobs)
    }

    /// Logs when an admin drains or undrains this node (`POST /admin/nodes/{id}/drain`):
    /// while drained, its fetches lease nothing and its running jobs finish.
    fn note_draining(&self, draining: bool) {
        if self.draining.swap(draining, Ordering::Relaxed) != draining {
            if draining {
                tracing::warn!(node = %self.node_id, "drained by the gateway's admin: no new jobs until undrained; running jobs finish");
            } else {
                tracing::info!(node = %self.node_id, "undrained by the gateway's admin: taking jobs again");
            }
        }
    }

    /// The largest submit body the gateway takes, in bytes, once a fetch has said it.
    pub fn submit_limit(&self) -> Option<u64> {
        Some(self.submit_limit.load(Ordering::Relaxed)).filter(|limit| *limit > 0)
    }

    pub async fn heartbeat(
        &self,
        lease_ids: Vec<LeaseId>,
        models: &[String],
        capacity: u32,
    ) -> Result<HeartbeatResponse, GatewayError> {
        let request = HeartbeatRequest {
            node_id: self.node_id.clone(),
            lease_ids,
            models: models.to_vec(),
            capacity,
            draining: self.draining.load(Ordering::Relaxed),
        };
        let response: HeartbeatResponse = self
            .post(
                "/internal/queue/heartbeat",
                &request,
                Duration::from_secs(30),
            )
            .await?;
        self.note_draining(response.draining);
        Ok(response)
    }

    pub async fn submit(&self, results: &[NodeResult]) -> Result<Vec<SubmitOutcome>, GatewayError> {
        let response: SubmitResponse = self
            .post("/internal/queue/submit", &results, Duration::from_secs(60))
            .await?;
        Ok(response.results)
    }
}

/// The error an answer that is not a success stands for.
fn answer_error(path: &str, status: u16, text: String) -> GatewayError {
    let message = serde_json::from_str::<ErrorEnvelope>(&text)
        .map(|e| e.error.message)
        .unwrap_or(text);
    match status {
        401 | 403 => GatewayError::Refused { status, message },
        400 | 404 | 413 | 422 => GatewayError::Rejected {
            path: path.to_owned(),
            status,
            message,
        },
        _ => GatewayError::Failed { status, message },
    }
}
