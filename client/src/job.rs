//! Job objects of the user API: `/v1/jobs`, `/v1/results/poll`.

use crate::endpoint::Endpoint;
use crate::error::ErrorBody;
use crate::ids::{JobId, NodeId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

/// Where a job is in its life. `completed`, `failed`, `cancelled` and `expired` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Processing,
    Completed,
    Failed,
    Cancelled,
    Expired,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Processing,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Processing => "processing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Expired => "expired",
        }
    }

    /// A final status never changes again.
    pub fn is_final(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Processing)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown status `{s}`; expected one of queued, processing, completed, failed, cancelled, expired"
                )
            })
    }
}

/// A job as the user API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    /// `chat.completion.job`, `embedding.job`, `text_completion.job` or `response.job`, after
    /// its endpoint.
    pub object: String,
    /// The path the job was submitted to; absent from older gateways, whose jobs were all
    /// chat completions.
    #[serde(default)]
    pub endpoint: Endpoint,
    pub model: String,
    pub status: JobStatus,
    pub priority: u8,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, at the last status change or lease renewal.
    pub updated_at: i64,
    /// Unix seconds: a job still queued then expires.
    pub expires_at: i64,
    pub attempts: u32,
    /// The node working on the job, while it is `processing`; in a job's detail
    /// (`?include=request`) and exports, the node of its last run whatever its status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
    /// About how many jobs a node will lease before this one, counting from 1, while it is
    /// `queued`, as the fair share between keys runs them: the jobs of earlier priorities,
    /// then its key's own jobs ahead of it, scaled by the keys that share its priority and
    /// their weights. Given by `GET /v1/jobs/{id}` and the job's event stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u64>,
    /// The endpoint's answer (a ChatCompletion, an embeddings list, a text completion)
    /// exactly as the node returned it, once `completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why the job did not complete, once `failed`, `cancelled` or `expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// What operators did to the job (retries, priority changes), oldest first; absent
    /// when nothing was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<JobEvent>,
    /// The key that submitted it: in an admin's lists, in `?include=request` and exports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The request body as submitted: with `?include=request` and in exports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Value>,
    /// Unix seconds: when its last run was leased (with `?include=request`, exports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    /// Unix seconds: when it reached its final status (with `?include=request`, exports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
}

/// One entry of a job's history (`Job::events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobEvent {
    /// An admin queued the ended job again: `from` is the status it had, `attempts` and
    /// `error` what its runs had come to.
    Retried {
        /// Unix seconds.
        at: i64,
        from: JobStatus,
        attempts: u32,
        #[serde(default)]
        error: Option<ErrorBody>,
    },
    /// An admin moved the queued job from priority `from` to `to`.
    Reprioritized {
        /// Unix seconds.
        at: i64,
        from: u8,
        to: u8,
    },
}

/// `GET /v1/jobs`: newest first, with a cursor for the next page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobList {
    pub object: String,
    pub data: Vec<Job>,
    pub first_id: Option<JobId>,
    pub last_id: Option<JobId>,
    pub has_more: bool,
}

/// `POST /v1/results/poll`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollRequest {
    #[serde(default)]
    pub ids: Vec<JobId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollResponse {
    pub jobs: Vec<PollEntry>,
}

/// A polled id: the job when the caller may see it, a `not_found` entry otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PollEntry {
    Found(Box<Job>),
    NotFound {
        id: JobId,
        status: NotFound,
        error: ErrorBody,
    },
}

/// The status of a poll entry for an id the caller cannot see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotFound {
    NotFound,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_from_their_own_spelling_only() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>(), Ok(status));
        }
        assert!("QUEUED".parse::<JobStatus>().is_err());
        assert!(JobStatus::Expired.is_final() && !JobStatus::Processing.is_final());
    }
}
