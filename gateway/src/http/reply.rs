//! What a handler answers: a status, headers and a body that is either complete or a
//! live stream of events.

use super::error::ApiError;
use crate::queue::Visibility;
use serde::Serialize;

pub enum Body {
    Full {
        content_type: &'static str,
        bytes: Vec<u8>,
    },
    /// Server-Sent Events of one job until it ends, with its relayed chunks after chunk
    /// `after` (all of them when `None`).
    JobEvents {
        job_id: String,
        who: Visibility,
        after: Option<u64>,
    },
    /// The `chat.completion.chunk` stream of a `stream: true` request, whose job had not
    /// ended when the headers were due: keep-alives until it ends or `deadline` passes.
    ChatStream {
        job_id: String,
        who: Visibility,
        deadline: tokio::time::Instant,
        options: StreamOptions,
    },
    /// A stored file's bytes, read from disk as they are written out; `len` is its size.
    File { file: tokio::fs::File, len: u64 },
    /// The dashboard's live feed for `who` (see `dashboard`).
    Dashboard { who: Visibility },
    /// `who`'s jobs of `filter` as NDJSON, read a page at a time (see `export`).
    Export {
        who: Visibility,
        filter: crate::queue::JobFilter,
    },
}

/// What a `stream: true` caller asked of its stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// `stream_options.include_usage`: a replayed result ends with a usage chunk.
    pub include_usage: bool,
    /// A resumed stream starts after this relayed chunk.
    pub after: Option<u64>,
    /// `X-OBB-Progress: true`: `obb.queue` events while the job is queued.
    pub progress: bool,
    /// `X-OBB-Cancel-On-Disconnect: true`: a client that leaves cancels the job.
    pub cancel_on_disconnect: bool,
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

impl Reply {
    pub fn json<T: Serialize>(status: u16, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(bytes) => Self::raw(status, "application/json", bytes),
            Err(e) => Self::error(&ApiError::Internal(format!(
                "cannot serialise a reply: {e}"
            ))),
        }
    }

    pub fn raw(status: u16, content_type: &'static str, bytes: Vec<u8>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Body::Full {
                content_type,
                bytes,
            },
        }
    }

    pub fn error(error: &ApiError) -> Self {
        let mut reply = Self::json(error.status(), &error.envelope());
        if let Some(seconds) = error.retry_after() {
            reply = reply.header("retry-after", seconds.to_string());
        }
        if let ApiError::MethodNotAllowed { allowed, .. } = error {
            reply = reply.header("allow", (*allowed).to_owned());
        }
        if matches!(error, ApiError::JobFailed { .. }) {
            // The job ran and failed; the SDK's own retry would only fetch the same answer.
            reply = reply.header("x-should-retry", "false".to_owned());
        }
        reply
    }

    #[must_use]
    pub fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}
