//! `ApiError`: every failure a client can see, mapped in one place to its status, its
//! OpenAI `type` and `code`, and a short label for logs and metrics.

use crate::auth::{AuthError, Refusal};
use crate::queue::{JobRecord, StoreError};
use openbeepboop::{ErrorBody, ErrorEnvelope, JobStatus};

/// Every label [`ApiError::label`] gives: the metrics create their series up front from it.
pub const ERROR_LABELS: &[&str] = &[
    "invalid_request",
    "unauthenticated",
    "forbidden",
    "internal",
    "not_found",
    "unsupported_media_type",
    "method_not_allowed",
    "conflict",
    "too_large",
    "not_implemented",
    "idempotency",
    "unavailable",
    "rate_limited_requests",
    "rate_limited_queue",
    "job_failed",
];

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    /// A caller without a valid key, or with the wrong role. Store and hashing failures of
    /// authentication are mapped like any other (see `From<AuthError>`).
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("{0}")]
    NotFound(String),
    /// `GET /v1/models/{model}` for a model no live node serves.
    #[error("model `{0}` is served by no live node")]
    ModelNotFound(String),
    /// A `Content-Encoding` the gateway cannot decode.
    #[error("unsupported `Content-Encoding` `{0}`; use gzip, deflate, br, zstd or identity")]
    UnsupportedEncoding(String),
    #[error("method `{method}` is not allowed on `{path}`; use {allowed}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: &'static str,
    },
    #[error("{message}")]
    Conflict { message: String, code: &'static str },
    #[error("the request body is larger than the {limit} bytes allowed")]
    PayloadTooLarge { limit: usize },
    /// An uploaded file over its purpose's limit (`max_batch_file_bytes`).
    #[error("the file is larger than the {limit} bytes allowed (`max_batch_file_bytes`)")]
    FileTooLarge { limit: u64 },
    /// A `Transfer-Encoding` other than `chunked` (RFC 9112 §6.1).
    #[error("unsupported `Transfer-Encoding` `{0}`; only `chunked` is implemented")]
    TransferCodingNotImplemented(String),
    /// A compressed body that inflates past the limit: a decompression bomb, or just too big.
    #[error("the decoded request body is larger than the {limit} bytes allowed")]
    DecodedTooLarge { limit: usize },
    /// A request head larger than the gateway reads (RFC 6585 §5).
    #[error("the request's header fields are too large")]
    HeadTooLarge,
    #[error("{0}")]
    IdempotencyMismatch(String),
    #[error("{message}")]
    Unavailable { message: String, retry_after: u64 },
    /// A key over one of its admission limits: 429, as OpenAI's. `queue` names which:
    /// `max_queued_jobs` (true) or `requests_per_minute`.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: u64,
        queue: bool,
    },
    #[error("internal error: {0}")]
    Internal(String),
    /// A job that ended without a completion, replayed to a waiting client.
    #[error("{}", body.message)]
    JobFailed {
        body: ErrorBody,
        ended: JobStatus,
        upstream_status: Option<u16>,
    },
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: impl Into<Option<String>>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: param.into(),
        }
    }

    /// The answer to a waiter whose job ended without a completion: its stored error.
    pub fn job_failed(record: &JobRecord) -> Self {
        ApiError::JobFailed {
            body: record.error.clone().unwrap_or_else(|| {
                ErrorBody::new(
                    format!("job `{}` ended as {}", record.id, record.status),
                    "server_error",
                )
            }),
            ended: record.status,
            upstream_status: record.upstream_status,
        }
    }

    /// The HTTP status, the OpenAI error type, its code, and a low-cardinality label.
    fn parts(&self) -> (u16, &'static str, Option<&'static str>, &'static str) {
        use ApiError::*;
        match self {
            InvalidRequest { .. } => (400, "invalid_request_error", None, "invalid_request"),
            Refused(Refusal::Missing) => (
                401,
                "authentication_error",
                Some("missing_api_key"),
                "unauthenticated",
            ),
            Refused(Refusal::Invalid) => (
                401,
                "authentication_error",
                Some("invalid_api_key"),
                "unauthenticated",
            ),
            Refused(Refusal::Revoked) => (
                401,
                "authentication_error",
                Some("revoked_api_key"),
                "unauthenticated",
            ),
            Refused(Refusal::Forbidden { .. }) => (
                403,
                "permission_error",
                Some("insufficient_role"),
                "forbidden",
            ),
            Internal(_) => (500, "server_error", Some("internal_error"), "internal"),
            NotFound(_) => (404, "invalid_request_error", Some("not_found"), "not_found"),
            ModelNotFound(_) => (
                404,
                "invalid_request_error",
                Some("model_not_found"),
                "not_found",
            ),
            UnsupportedEncoding(_) => (
                415,
                "invalid_request_error",
                Some("unsupported_content_encoding"),
                "unsupported_media_type",
            ),
            MethodNotAllowed { .. } => (
                405,
                "invalid_request_error",
                Some("method_not_allowed"),
                "method_not_allowed",
            ),
            Conflict { code, .. } => (409, "invalid_request_error", Some(code), "conflict"),
            PayloadTooLarge { .. } | DecodedTooLarge { .. } | FileTooLarge { .. } => (
                413,
                "invalid_request_error",
                Some("request_too_large"),
                "too_large",
            ),
            TransferCodingNotImplemented(_) => (
                501,
                "invalid_request_error",
                Some("unsupported_transfer_encoding"),
                "not_implemented",
            ),
            HeadTooLarge => (
                431,
                "invalid_request_error",
                Some("request_header_fields_too_large"),
                "too_large",
            ),
            IdempotencyMismatch(_) => (
                422,
                "invalid_request_error",
                Some("idempotency_key_reused"),
                "idempotency",
            ),
            Unavailable { .. } => (
                503,
                "server_error",
                Some("service_unavailable"),
                "unavailable",
            ),
            RateLimited { queue, .. } => (
                429,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
                // The rejections by reason, in `obb_http_errors_total`'s bounded label.
                if *queue {
                    "rate_limited_queue"
                } else {
                    "rate_limited_requests"
                },
            ),
            JobFailed {
                ended,
                upstream_status,
                ..
            } => (
                ended_status(*ended, *upstream_status),
                "",
                None,
                "job_failed",
            ),
        }
    }

    /// Whether the gateway itself failed: a 5xx that is not a full or restarting store, a
    /// failed job, or a transfer coding the client should not have sent. Its message is
    /// opaque on the wire and its cause is logged.
    pub fn is_fault(&self) -> bool {
        self.status() >= 500
            && !matches!(
                self,
                ApiError::Unavailable { .. }
                    | ApiError::JobFailed { .. }
                    | ApiError::TransferCodingNotImplemented(_)
            )
    }

    pub fn status(&self) -> u16 {
        self.parts().0
    }

    pub fn label(&self) -> &'static str {
        self.parts().3
    }

    /// Seconds a client should wait before retrying, for 429 and 503 only.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Unavailable { retry_after, .. } => Some((*retry_after).clamp(1, 60)),
            ApiError::RateLimited { retry_after, .. } => Some((*retry_after).max(1)),
            _ => None,
        }
    }

    /// The wire body. 5xx messages are opaque; their cause is logged where they are sent.
    pub fn envelope(&self) -> ErrorEnvelope {
        if let ApiError::JobFailed { body, .. } = self {
            return body.clone().into();
        }
        let (_, kind, code, _) = self.parts();
        let message = if self.is_fault() {
            "the gateway hit an internal error; it has been logged".to_owned()
        } else {
            self.to_string()
        };
        let param = match self {
            ApiError::InvalidRequest { param, .. } => param.clone(),
            ApiError::ModelNotFound(_) => Some("model".to_owned()),
            _ => None,
        };
        ErrorEnvelope {
            error: ErrorBody {
                message,
                kind: kind.to_owned(),
                param,
                code: code.map(str::to_owned),
            },
        }
    }
}

/// The status a waiter gets for a job that ended without a completion. A cancel is a
/// conflict and an expiry is gone; a failure is a bad gateway from the caller's point of
/// view, except an upstream's 4xx, which is the caller's own problem and keeps its status.
fn ended_status(ended: JobStatus, upstream_status: Option<u16>) -> u16 {
    match ended {
        JobStatus::Cancelled => 409,
        JobStatus::Expired => 410,
        JobStatus::Failed | JobStatus::Completed | JobStatus::Queued | JobStatus::Processing => {
            upstream_status
                .filter(|status| (400..500).contains(status))
                .unwrap_or(502)
        }
    }
}

/// Every store error, each mapped on purpose: a new variant must be placed here.
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::JobNotFound(id) => ApiError::NotFound(format!("job `{id}` not found")),
            StoreError::KeyNotFound(id) => ApiError::NotFound(format!("key `{id}` not found")),
            StoreError::LimitsOnNodeKey(_) => ApiError::invalid(error.to_string(), None),
            StoreError::FileNotFound(id) => ApiError::NotFound(format!("file `{id}` not found")),
            StoreError::BatchNotFound(id) => ApiError::NotFound(format!("batch `{id}` not found")),
            StoreError::BatchNotCancellable { id, status } => ApiError::Conflict {
                message: format!("batch `{id}` is {status} and cannot be cancelled"),
                code: "batch_not_cancellable",
            },
            // A full disk passes like a full database; any other file failure is ours.
            StoreError::FileIo { ref source, .. }
                if source.kind() == std::io::ErrorKind::StorageFull =>
            {
                tracing::warn!(error = %error.detail(), "file store unavailable");
                ApiError::Unavailable {
                    message: "the file store is out of space; retry later".to_owned(),
                    retry_after: 30,
                }
            }
            StoreError::AlreadyFinal { id, status } => ApiError::Conflict {
                message: format!("job `{id}` is already {status} and cannot be cancelled"),
                code: "job_already_final",
            },
            StoreError::NotRetryable { .. } => ApiError::Conflict {
                message: error.to_string(),
                code: "job_not_retryable",
            },
            StoreError::NotQueued { .. } => ApiError::Conflict {
                message: error.to_string(),
                code: "job_not_queued",
            },
            StoreError::BatchNotRunning { .. } => ApiError::Conflict {
                message: error.to_string(),
                code: "batch_not_running",
            },
            StoreError::NodeNotFound(id) => ApiError::NotFound(format!("node `{id}` not found")),
            StoreError::NodeAlive(_) => ApiError::Conflict {
                message: error.to_string(),
                code: "node_alive",
            },
            StoreError::InBatch { .. } => ApiError::invalid(error.to_string(), None),
            // Queue, not reject, is for execution limits; this one is the key's own cap on
            // what it may leave waiting. Its jobs drain as nodes run them.
            StoreError::QueueFull { .. } => ApiError::RateLimited {
                message: format!("{error}; retry once some have run"),
                retry_after: 2,
                queue: true,
            },
            StoreError::IdempotencyConflict { .. } => {
                ApiError::IdempotencyMismatch(error.to_string())
            }
            // Conditions that pass: space freed, a lock released, a restart finished, a
            // lost PostgreSQL connection back.
            StoreError::Postgres { .. } if error.is_transient() => {
                tracing::warn!(error = %error.detail(), "store unavailable");
                ApiError::Unavailable {
                    message: "the job store is temporarily unavailable; retry shortly".to_owned(),
                    retry_after: 5,
                }
            }
            StoreError::DiskFull(_)
            | StoreError::Busy(_)
            | StoreError::Pool(_)
            | StoreError::Closed => {
                tracing::warn!(error = %error.detail(), "store unavailable");
                ApiError::Unavailable {
                    message: "the job store is temporarily unavailable; retry shortly".to_owned(),
                    retry_after: 5,
                }
            }
            StoreError::Sqlite(_)
            | StoreError::Postgres { .. }
            | StoreError::NoRows
            | StoreError::Column { .. }
            | StoreError::NoFilesDir
            | StoreError::Migrate(_)
            | StoreError::DuplicateId(_)
            | StoreError::ReadAborted(_)
            | StoreError::CorruptPayload { .. }
            | StoreError::DataDir { .. }
            | StoreError::WriterThread(_)
            | StoreError::Sync(_)
            | StoreError::IllegalTransition { .. }
            | StoreError::IllegalBatchTransition { .. }
            | StoreError::Missing(_)
            | StoreError::FileIo { .. }
            | StoreError::TooNew { .. } => ApiError::Internal(error.detail()),
        }
    }
}

/// Authentication's own failures are refusals; its store and hashing failures are mapped
/// like every other, so a busy store is a 503 whoever met it.
impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Refused(refusal) => ApiError::Refused(refusal),
            AuthError::Store(store) => store.into(),
            AuthError::Hash(_) => ApiError::Internal(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_hide_their_cause_but_client_errors_explain() {
        let internal = ApiError::Internal("disk exploded at /secret/path".into());
        assert_eq!(internal.status(), 500);
        assert!(!internal.envelope().error.message.contains("secret"));
        let bad = ApiError::invalid("`model` is required", Some("model".to_owned()));
        let envelope = bad.envelope();
        assert_eq!(envelope.error.param.as_deref(), Some("model"));
        assert_eq!(envelope.error.kind, "invalid_request_error");
    }

    #[test]
    fn every_label_is_listed_for_the_metrics() {
        let samples = [
            ApiError::invalid("x", None),
            ApiError::Refused(Refusal::Missing),
            ApiError::Refused(Refusal::Forbidden {
                role: openbeepboop::Role::Node,
            }),
            ApiError::NotFound("x".into()),
            ApiError::ModelNotFound("x".into()),
            ApiError::UnsupportedEncoding("x".into()),
            ApiError::MethodNotAllowed {
                method: "x".into(),
                path: "x".into(),
                allowed: "GET",
            },
            ApiError::Conflict {
                message: "x".into(),
                code: "x",
            },
            ApiError::PayloadTooLarge { limit: 1 },
            ApiError::FileTooLarge { limit: 1 },
            ApiError::TransferCodingNotImplemented("x".into()),
            ApiError::DecodedTooLarge { limit: 1 },
            ApiError::HeadTooLarge,
            ApiError::IdempotencyMismatch("x".into()),
            ApiError::Unavailable {
                message: "x".into(),
                retry_after: 1,
            },
            ApiError::RateLimited {
                message: "x".into(),
                retry_after: 1,
                queue: false,
            },
            ApiError::RateLimited {
                message: "x".into(),
                retry_after: 1,
                queue: true,
            },
            ApiError::Internal("x".into()),
            ApiError::JobFailed {
                body: ErrorBody::new("x", "server_error"),
                ended: JobStatus::Failed,
                upstream_status: None,
            },
        ];
        for error in samples {
            assert!(ERROR_LABELS.contains(&error.label()), "{}", error.label());
        }
    }

    #[test]
    fn an_ended_job_answers_by_how_it_ended() {
        use JobStatus::*;
        assert_eq!(ended_status(Cancelled, None), 409);
        assert_eq!(ended_status(Expired, Some(429)), 410);
        assert_eq!(ended_status(Failed, Some(400)), 400);
        assert_eq!(ended_status(Failed, Some(503)), 502);
        assert_eq!(ended_status(Failed, None), 502);
    }

    fn sqlite(code: i32) -> StoreError {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None).into()
    }

    #[test]
    fn unavailable_store_errors_become_503_with_retry_after() {
        let error = ApiError::from(sqlite(rusqlite::ffi::SQLITE_FULL));
        assert_eq!((error.status(), error.retry_after()), (503, Some(5)));
        let auth = ApiError::from(AuthError::Store(sqlite(rusqlite::ffi::SQLITE_BUSY)));
        assert_eq!((auth.status(), auth.retry_after()), (503, Some(5)));
        let internal = ApiError::from(sqlite(rusqlite::ffi::SQLITE_CORRUPT));
        assert_eq!((internal.status(), internal.retry_after()), (500, None));
    }

    #[test]
    fn a_store_error_keeps_its_sqlite_cause_as_its_source() {
        let error = sqlite(rusqlite::ffi::SQLITE_CORRUPT);
        assert!(std::error::Error::source(&error).is_some());
        assert!(
            error.detail().starts_with("database error: "),
            "{}",
            error.detail()
        );
    }
}
