//! `ApiError`: every failure a client can see, mapped in one place to its status, its
//! OpenAI `type` and `code`, and a short label for logs and metrics.

use crate::auth::AuthError;
use crate::queue::StoreError;
use openbeepboop::{ErrorBody, ErrorEnvelope};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    #[error(transparent)]
    Auth(#[from] AuthError),
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
    #[error("internal error: {0}")]
    Internal(String),
    /// A job that ended without a completion, replayed to a waiting client.
    #[error("{}", body.message)]
    JobFailed { body: ErrorBody, status: u16 },
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: impl Into<Option<String>>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: param.into(),
        }
    }

    /// The HTTP status, the OpenAI error type, its code, and a low-cardinality label.
    fn parts(&self) -> (u16, &'static str, Option<&'static str>, &'static str) {
        use ApiError::*;
        match self {
            InvalidRequest { .. } => (400, "invalid_request_error", None, "invalid_request"),
            Auth(AuthError::Missing) => (
                401,
                "authentication_error",
                Some("missing_api_key"),
                "unauthenticated",
            ),
            Auth(AuthError::Invalid) => (
                401,
                "authentication_error",
                Some("invalid_api_key"),
                "unauthenticated",
            ),
            Auth(AuthError::Revoked) => (
                401,
                "authentication_error",
                Some("revoked_api_key"),
                "unauthenticated",
            ),
            Auth(AuthError::Forbidden { .. }) => (
                403,
                "permission_error",
                Some("insufficient_role"),
                "forbidden",
            ),
            Auth(AuthError::Store(e)) => store_parts(e),
            Auth(AuthError::Hash(_)) | Internal(_) => {
                (500, "server_error", Some("internal_error"), "internal")
            }
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
            PayloadTooLarge { .. } | DecodedTooLarge { .. } => (
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
            JobFailed { status, .. } => (*status, "", None, "job_failed"),
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
            ApiError::Auth(AuthError::Store(e)) => store_retry_after(e),
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

fn store_parts(error: &StoreError) -> (u16, &'static str, Option<&'static str>, &'static str) {
    match error {
        StoreError::DiskFull(_) | StoreError::Busy(_) | StoreError::Closed => (
            503,
            "server_error",
            Some("service_unavailable"),
            "unavailable",
        ),
        _ => (500, "server_error", Some("internal_error"), "internal"),
    }
}

fn store_retry_after(error: &StoreError) -> Option<u64> {
    matches!(
        error,
        StoreError::DiskFull(_) | StoreError::Busy(_) | StoreError::Closed
    )
    .then_some(5)
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::JobNotFound(id) => ApiError::NotFound(format!("job `{id}` not found")),
            StoreError::KeyNotFound(id) => ApiError::NotFound(format!("key `{id}` not found")),
            StoreError::AlreadyFinal { id, status } => ApiError::Conflict {
                message: format!("job `{id}` is already {status} and cannot be cancelled"),
                code: "job_already_final",
            },
            StoreError::IdempotencyConflict(key) => ApiError::IdempotencyMismatch(format!(
                "idempotency key `{key}` was already used with a different request body"
            )),
            StoreError::DiskFull(_) | StoreError::Busy(_) | StoreError::Closed => {
                tracing::warn!(%error, "store unavailable");
                ApiError::Unavailable {
                    message: "the job store is temporarily unavailable; retry shortly".to_owned(),
                    retry_after: 5,
                }
            }
            other => ApiError::Internal(other.to_string()),
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
    fn unavailable_store_errors_become_503_with_retry_after() {
        let error = ApiError::from(StoreError::DiskFull("full".into()));
        assert_eq!((error.status(), error.retry_after()), (503, Some(5)));
        let auth = ApiError::Auth(AuthError::Store(StoreError::Busy("b".into())));
        assert_eq!((auth.status(), auth.retry_after()), (503, Some(5)));
        let internal = ApiError::from(StoreError::Sqlite("x".into()));
        assert_eq!((internal.status(), internal.retry_after()), (500, None));
    }
}
