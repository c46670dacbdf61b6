//! The node API: `/internal/queue/fetch`, `/heartbeat`, `/submit` and `/stream`.

use crate::endpoint::Endpoint;
use crate::error::ErrorBody;
use crate::ids::{JobId, LeaseId, NodeId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// `POST /internal/queue/fetch`: lease up to `limit` jobs of `models` (`"*"` is any model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    pub node_id: NodeId,
    pub models: Vec<String>,
    #[serde(default = "default_limit")]
    pub limit: u32,
    /// Seconds to hold the request open while no job matches.
    #[serde(default)]
    pub wait: f64,
    /// The endpoints the node serves; only their jobs are leased. Empty (what nodes that
    /// predate endpoints send, by leaving it out) means `/v1/chat/completions` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
}

impl FetchRequest {
    /// The endpoints to lease jobs of: those named, or chat completions when none are.
    pub fn served(&self) -> Vec<Endpoint> {
        if self.endpoints.is_empty() {
            vec![Endpoint::ChatCompletions]
        } else {
            self.endpoints.clone()
        }
    }
}

fn default_limit() -> u32 {
    1
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FetchResponse {
    pub jobs: Vec<LeasedJob>,
    /// The largest submit body the gateway takes, in bytes (its `max_submit_bytes`); a
    /// node packs its submits under it. Absent from older gateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_submit_bytes: Option<u64>,
    /// An admin drained the node (`POST /admin/nodes/{id}/drain`): it is leased no new
    /// job until undrained; the jobs it runs finish. Absent (false) from older gateways.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

/// A job leased to a node. The lease must be heartbeated within `lease_ttl_ms` of the
/// answer; `lease_expires_at` is the same instant on the gateway's clock, for people.
#[derive(Debug, Serialize, Deserialize)]
pub struct LeasedJob {
    pub id: JobId,
    pub model: String,
    /// The path the job was submitted to, which the node calls on its upstream. Absent
    /// from older gateways, whose jobs were all chat completions.
    #[serde(default)]
    pub endpoint: Endpoint,
    /// The request body exactly as the user sent it.
    pub request_payload: Box<RawValue>,
    pub lease_id: LeaseId,
    /// Unix milliseconds, on the gateway's clock.
    pub lease_expires_at: i64,
    /// How long the lease lasts from the gateway's answer, in milliseconds. Nodes work from
    /// this and their monotonic clock, so nothing depends on the two clocks agreeing. 0 from
    /// gateways that predate it.
    #[serde(default)]
    pub lease_ttl_ms: u64,
    /// 1 for the first run of the job.
    pub attempt: u32,
    pub request_id: Option<String>,
    /// The user asked for a stream and the gateway relays it: the node asks its upstream
    /// for a stream and sends the chunks to `POST /internal/queue/stream` as they arrive,
    /// then submits the assembled result as usual. Absent (false) from gateways that
    /// predate relaying, and for batch lines.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub relay: bool,
}

/// One line of `POST /internal/queue/stream`, whose body is NDJSON (one frame per line)
/// and whose headers name the job (`x-obb-job-id`) and the lease (`x-obb-lease-id`).
/// Frames are numbered from 0 by `seq`; a frame below the gateway's next expected `seq`
/// is a duplicate and dropped, one above it is refused with [`RelayOutcome::Gap`].
/// The chunk is borrowed, so that neither side copies it: the node writes it from the
/// upstream's event, the gateway keeps a slice of the line it read. Fields a newer node adds
/// are ignored.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RelayFrame<'a> {
    pub seq: u64,
    /// The upstream's event data, verbatim: one JSON object (a `chat.completion.chunk`, a
    /// `text_completion` chunk or a Responses event).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<&'a RawValue>,
    /// No frame follows this one: the upstream's stream ended.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub end: bool,
}

/// The answer to `POST /internal/queue/stream`, sent when its body ends or, on a refusal,
/// at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayAck {
    pub outcome: RelayOutcome,
    /// The `seq` the gateway expects next: a node whose stream broke resends from here.
    pub next_seq: u64,
}

/// What the gateway did with a relayed stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayOutcome {
    /// Every frame was taken.
    Accepted,
    /// The lease is no longer current (the job was leased again or ended): stop sending.
    Stale,
    /// The job was cancelled: stop sending.
    Cancelled,
    /// A frame skipped ahead of `next_seq`: resend from there.
    Gap,
}

/// `POST /internal/queue/heartbeat`: extends leases and says the node is alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub node_id: NodeId,
    #[serde(default)]
    pub lease_ids: Vec<LeaseId>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub capacity: u32,
    /// The node knows an admin drained it and is taking no new job: how an operator sees
    /// that the drain reached it (`NodeInfo::draining_reported`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// Leases now extended to `lease_expires_at`.
    pub extended: Vec<LeaseId>,
    /// Leases whose job was cancelled: abort them.
    pub cancelled: Vec<LeaseId>,
    /// Leases that expired or were taken over: their results would be discarded.
    pub lost: Vec<LeaseId>,
    /// Unix milliseconds, on the gateway's clock.
    pub lease_expires_at: i64,
    /// How long the extended leases last from this answer, in milliseconds (see
    /// [`LeasedJob::lease_ttl_ms`]). 0 from gateways that predate it.
    #[serde(default)]
    pub lease_ttl_ms: u64,
    /// The node is drained: see [`FetchResponse::draining`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

/// One item of `POST /internal/queue/submit`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeResult {
    pub id: JobId,
    pub lease_id: LeaseId,
    pub status: NodeResultStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// The HTTP status the upstream answered with, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    #[serde(default)]
    pub retryable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum NodeResultStatus {
    Completed,
    Failed,
    /// The node gives the job back unrun (it is shutting down): requeue it at once.
    Released,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitResponse {
    pub results: Vec<SubmitOutcome>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitOutcome {
    pub id: JobId,
    pub outcome: SubmitOutcomeKind,
}

/// What the gateway did with one submitted result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubmitOutcomeKind {
    /// Stored; the job moved on.
    Accepted,
    /// This lease's result was already stored, so the retry changed nothing.
    Duplicate,
    /// Another lease superseded this one (the job was leased again, or ended without this
    /// lease's result); the result is discarded.
    Stale,
    /// The job was cancelled while it ran; the result is discarded.
    Cancelled,
}
