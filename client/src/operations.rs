//! Operations and dashboard messages: `/admin/jobs/…`, `/admin/nodes/…` and
//! `/v1/dashboard/…` (docs/design/dashboard.md). Times are Unix seconds unless a name ends
//! in `_ms`.

use crate::job::JobStatus;
use serde::{Deserialize, Serialize};

/// `POST /admin/jobs/{id}/priority`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityRequest {
    /// 1 (runs first) to 5.
    pub priority: u8,
}

/// `POST /admin/jobs/retry`: every field narrows the jobs retried; none given retries
/// every failed, expired and cancelled job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRetryRequest {
    /// Final statuses other than `completed`; default all three.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status: Vec<JobStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    /// Unix seconds: jobs created at or after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// Unix seconds: jobs created before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
}

/// The answer to a bulk retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkRetry {
    /// `jobs.retry`.
    pub object: String,
    pub retried: u64,
}

/// A node as `GET /admin/nodes` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    /// `node`.
    pub object: String,
    /// The node key it last called with.
    pub key_id: String,
    pub models: Vec<String>,
    /// The jobs it runs at once, as its last heartbeat said.
    pub capacity: u32,
    /// Jobs it is running now.
    pub in_flight: u64,
    pub first_seen_at: i64,
    pub last_seen_at: i64,
    /// Seen within the liveness window (`node_alive_seconds`).
    pub alive: bool,
    /// Leased no new job until undrained.
    pub draining: bool,
    /// The node's last heartbeat said it knows it is drained.
    pub draining_reported: bool,
    /// Jobs it completed in the last hour.
    pub completed_last_hour: u64,
}

/// `DELETE /admin/nodes/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDeleted {
    pub id: String,
    /// `node.deleted`.
    pub object: String,
    pub deleted: bool,
}

/// `GET /v1/dashboard/whoami`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// `dashboard.whoami`.
    pub object: String,
    pub key_id: String,
    pub name: String,
    /// `ADMIN` or `USER`, as the key was created.
    pub role: String,
}

/// `GET /v1/dashboard/overview`, and each `overview` event of `/v1/dashboard/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    /// `dashboard.overview`.
    pub object: String,
    /// `all` for an admin, `own` for a user: whose jobs are counted.
    pub scope: String,
    pub generated_at: i64,
    pub depth: Vec<OverviewDepth>,
    pub nodes_alive: u64,
    pub last_hour: OverviewHour,
}

/// Queued and running jobs of one model and priority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverviewDepth {
    pub model: String,
    pub priority: u8,
    pub queued: u64,
    pub processing: u64,
}

/// Jobs that ended in the last hour, in total and minute by minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverviewHour {
    pub completed: u64,
    pub failed: u64,
    /// `failed / (completed + failed)`; 0 when none ended.
    pub error_rate: f64,
    /// 60 minutes, oldest first, the last one running now.
    pub minutes: Vec<MinuteStats>,
}

/// The jobs that ended in one minute. `failed` counts failed and expired jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinuteStats {
    /// Unix seconds at the minute's start.
    pub minute: i64,
    pub completed: u64,
    pub failed: u64,
    /// From submit to lease, for the jobs that ran.
    pub queue_wait_ms: Percentiles,
    /// From lease to result.
    pub processing_ms: Percentiles,
    /// From submit to the final status.
    pub end_to_end_ms: Percentiles,
}

/// Percentiles in milliseconds, `None` when no job counted. Read from buckets two to a
/// doubling: a figure is its bucket's upper bound, at most √2 times the truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: Option<u64>,
    pub p95: Option<u64>,
}

/// A `job` event of `/v1/dashboard/events`: a job the caller may see changed status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DashboardJobEvent {
    pub id: String,
    pub status: JobStatus,
    /// `None` for a job just submitted.
    pub from: Option<JobStatus>,
    pub model: String,
    pub priority: u8,
    pub batch_id: Option<String>,
}
