//! Calls an OpenAI-compatible server: forwards the job's body with only the model mapped,
//! retries transient errors with backoff and jitter, and honours `Retry-After`. Answers may
//! come compressed (gzip, br, deflate, zstd); one that is not a JSON object is final. A
//! `/v1/responses` job goes to `/responses`, or, where the upstream has no such route, is
//! translated to `/chat/completions` ([`crate::responses`]).

use crate::config::ConfigError;
use crate::responses;
use crate::routing::Upstream;
use crate::tls;
use openbeepboop::{Endpoint, ErrorBody};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A completion as the node needs it, read once: the upstream's body verbatim (for the
/// gateway) and the token counts it reports (for the log). No `Value` tree is built.
#[derive(Debug)]
pub struct Completion {
    pub body: Box<RawValue>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Completion {
    /// Reads an answer that must be a JSON object; its `usage` may be missing or odd, and
    /// counts tokens as chat does (`prompt_tokens`, `completion_tokens`) or as the
    /// Responses API does (`input_tokens`, `output_tokens`).
    pub fn parse(text: String) -> Result<Self, serde_json::Error> {
        let body = RawValue::from_string(text)?;
        let Head { usage } = serde_json::from_str(body.get())?;
        let tokens = |chat: &str, responses: &str| {
            let usage = usage.as_ref();
            usage
                .and_then(|u| u[chat].as_u64().or_else(|| u[responses].as_u64()))
                .unwrap_or(0)
        };
        Ok(Self {
            prompt_tokens: tokens("prompt_tokens", "input_tokens"),
            completion_tokens: tokens("completion_tokens", "output_tokens"),
            body,
        })
    }
}

/// A completion's top level: only a JSON object, and only its `usage` kept.
struct Head {
    usage: Option<Value>,
}

impl<'de> Deserialize<'de> for Head {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Head;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Head, A::Error> {
                let mut usage = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "usage" {
                        usage = Some(map.next_value()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Head { usage })
            }
        }
        deserializer.deserialize_map(Members)
    }
}

/// Why an upstream call did not produce a completion.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// 429, 5xx, timeouts, refused connections, unreadable answers: worth another try.
    #[error("{message}")]
    Transient {
        status: Option<u16>,
        message: String,
    },
    /// Any other 4xx: the request itself is wrong, and retrying will not help.
    #[error("{}", error.message)]
    Rejected { status: u16, error: ErrorBody },
    /// A success whose body is not a JSON object: the upstream is broken for this request,
    /// and asking again would only repeat the call.
    #[error("{message}")]
    Invalid { status: u16, message: String },
}

impl UpstreamError {
    /// Every `kind`, so that their metric series exist at zero from the start.
    pub const KINDS: [&'static str; 5] = [
        "rate_limited",
        "server_error",
        "unreachable",
        "rejected",
        "invalid_answer",
    ];

    /// A short, bounded name for logs and metrics: one of `KINDS`.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Transient {
                status: Some(429), ..
            } => "rate_limited",
            UpstreamError::Transient {
                status: Some(_), ..
            } => "server_error",
            UpstreamError::Transient { status: None, .. } => "unreachable",
            UpstreamError::Rejected { .. } => "rejected",
            UpstreamError::Invalid { .. } => "invalid_answer",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub backoff: Duration,
}

pub struct UpstreamClient {
    http: reqwest::Client,
    upstream: Upstream,
    retry: RetryPolicy,
    /// Set once `/responses` answered 404 where `/chat/completions` did not: the upstream
    /// lacks the route, so later Responses jobs are translated without asking again.
    no_responses_route: AtomicBool,
}

impl UpstreamClient {
    pub fn new(
        upstream: Upstream,
        connect_timeout: Duration,
        request_timeout: Duration,
        retry: RetryPolicy,
    ) -> Result<Self, ConfigError> {
        let hop = tls::Hop {
            section: upstream.section,
            ca_cert: upstream.ca_cert.as_deref(),
            client_cert: None,
        };
        let http = tls::client_builder(hop)?
            .connect_timeout(connect_timeout)
            .timeout(request_timeout)
            .build()
            .map_err(|e| ConfigError::Client {
                section: upstream.section,
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            upstream,
            retry,
            no_responses_route: AtomicBool::new(false),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.upstream.base_url
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.upstream.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// The model ids the upstream lists at `/models`.
    pub async fn models(&self) -> Result<Vec<String>, UpstreamError> {
        let url = format!("{}/models", self.upstream.base_url);
        let response = self
            .authorized(self.http.get(&url))
            .send()
            .await
            .map_err(|e| self.unreachable(&url, &e))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| self.unreachable(&url, &e))?;
        if status >= 300 {
            return Err(classify(status, &text, &url));
        }
        let list: Value = serde_json::from_str(&text).map_err(|e| UpstreamError::Invalid {
            status,
            message: format!("`{url}` answered invalid JSON: {e}"),
        })?;
        Ok(list["data"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|m| m["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Whether this upstream was found to lack `/responses`, so that Responses jobs are
    /// translated to chat completions.
    pub fn translates_responses(&self) -> bool {
        self.no_responses_route.load(Ordering::Relaxed)
    }

    /// Runs one job's request on `endpoint`'s path, retrying transient errors. The
    /// completion keeps the upstream's body verbatim, but for a Responses job answered
    /// through chat completions, whose answer is translated into a response.
    pub async fn complete(
        &self,
        endpoint: Endpoint,
        payload: &RawValue,
        model: &str,
        request_id: Option<&str>,
    ) -> Result<Completion, UpstreamError> {
        if endpoint == Endpoint::Responses && self.translates_responses() {
            return self.translated(payload, model, request_id, false).await;
        }
        let body =
            forwarded_body(endpoint, payload, model).map_err(|e| UpstreamError::Rejected {
                status: 400,
                error: ErrorBody::new(
                    format!("the job's request is not a JSON object: {e}"),
                    "invalid_request_error",
                ),
            })?;
        let answer = self.post(endpoint.upstream_path(), &body, request_id).await;
        match answer {
            Err(UpstreamError::Rejected { status: 404, .. }) if endpoint == Endpoint::Responses => {
                self.translated(payload, model, request_id, true).await
            }
            answer => answer,
        }
    }

    /// A Responses job through `/chat/completions`. `after_404`: a first try at
    /// `/responses` got 404; unless chat answers 404 too (an unknown model, say), the route
    /// is missing, and that is remembered. A 404 from both fails with chat's error.
    async fn translated(
        &self,
        payload: &RawValue,
        model: &str,
        request_id: Option<&str>,
        after_404: bool,
    ) -> Result<Completion, UpstreamError> {
        let request = responses::parse_request(payload)?;
        let chat = responses::to_chat(&request, model)?;
        let body = serde_json::to_vec(&chat).map_err(|e| UpstreamError::Invalid {
            status: 200,
            message: format!("cannot write the translated request: {e}"),
        })?;
        let answer = self.post("/chat/completions", &body, request_id).await;
        let chat_404 = matches!(answer, Err(UpstreamError::Rejected { status: 404, .. }));
        if after_404 && !chat_404 && !self.no_responses_route.swap(true, Ordering::Relaxed) {
            tracing::info!(
                upstream = %self.upstream.base_url,
                "the upstream has no /v1/responses: translating Responses jobs to chat completions"
            );
        }
        responses::completion_from_chat(&request, &answer?)
    }

    /// POSTs `body` to `path` under the base URL, retrying transient errors.
    async fn post(
        &self,
        path: &str,
        body: &[u8],
        request_id: Option<&str>,
    ) -> Result<Completion, UpstreamError> {
        let mut attempt = 0;
        loop {
            match self.complete_once(path, body, request_id).await {
                Ok(text) => return Ok(text),
                Err((error, retry_after)) => {
                    let transient = matches!(error, UpstreamError::Transient { .. });
                    if !transient || attempt >= self.retry.max_retries {
                        return Err(error);
                    }
                    let delay = retry_after.unwrap_or_else(|| backoff(&self.retry, attempt));
                    tracing::debug!(%error, attempt, ?delay, "retrying upstream call");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn complete_once(
        &self,
        path: &str,
        body: &[u8],
        request_id: Option<&str>,
    ) -> Result<Completion, (UpstreamError, Option<Duration>)> {
        let url = format!("{}{path}", self.upstream.base_url);
        let mut request = self
            .authorized(self.http.post(&url))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(id) = request_id {
            request = request.header("x-request-id", id);
        }
        let response = request
            .send()
            .await
            .map_err(|e| (self.unreachable(&url, &e), None))?;
        let status = response.status().as_u16();
        // A hosted provider's 429 says when to come back in OpenAI's headers.
        let headers = response.headers();
        let retry_after = openbeepboop::retry_after::from_headers(
            |name| headers.get(name).and_then(|v| v.to_str().ok()),
            status,
            std::time::SystemTime::now(),
        )
        .map(|delay| delay.min(Duration::from_secs(60)));
        let text = response
            .text()
            .await
            .map_err(|e| (self.unreachable(&url, &e), None))?;
        if status >= 300 {
            return Err((classify(status, &text, &url), retry_after));
        }
        // A body that is not a JSON object is a broken answer, not a completion, and the
        // same request would most likely get it again.
        match Completion::parse(text) {
            Ok(completion) => Ok(completion),
            Err(e) => Err((
                UpstreamError::Invalid {
                    status,
                    message: format!(
                        "`{url}` answered {status} with a body that is not a JSON object: {e}"
                    ),
                },
                None,
            )),
        }
    }

    /// A call that got no answer: transient, with the reason named (a TLS problem by name).
    fn unreachable(&self, url: &str, error: &reqwest::Error) -> UpstreamError {
        UpstreamError::Transient {
            status: None,
            message: format!(
                "cannot reach the upstream at `{url}`: {}",
                tls::describe(error, self.upstream.section)
            ),
        }
    }
}

/// The job's body as `endpoint` upstream takes it, with `model` set to the upstream's name.
/// A streamed request is asked for whole: the gateway stores complete completions and
/// replays streams from them. `metadata`, where a submit may carry the gateway's terms
/// (`obb_priority`, `obb_ttl_seconds`), goes only where OpenAI takes it: embeddings and
/// legacy completions refuse the field. A Responses request loses what is the gateway's
/// business: `background`, and `previous_response_id`, which it has expanded into `input`.
pub fn forwarded_body(
    endpoint: Endpoint,
    payload: &RawValue,
    model: &str,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut body: Map<String, Value> = serde_json::from_str(payload.get())?;
    body.insert("model".to_owned(), Value::String(model.to_owned()));
    match endpoint {
        Endpoint::Embeddings | Endpoint::Completions => {
            body.remove("metadata");
        }
        Endpoint::Responses => {
            body.remove("background");
            body.remove("previous_response_id");
        }
        Endpoint::ChatCompletions => {}
    }
    if endpoint == Endpoint::Responses || body.get("stream").and_then(Value::as_bool) == Some(true)
    {
        body.insert("stream".to_owned(), Value::Bool(false));
        body.remove("stream_options");
    }
    serde_json::to_vec(&body)
}

/// Sorts an error answer: 408, 409, 429 and 5xx are transient; other 4xx are final and
/// keep the upstream's own error.
fn classify(status: u16, text: &str, url: &str) -> UpstreamError {
    let message = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| text.chars().take(300).collect());
    if matches!(status, 408 | 409 | 429) || status >= 500 {
        return UpstreamError::Transient {
            status: Some(status),
            message: format!("`{url}` answered {status}: {message}"),
        };
    }
    let error = serde_json::from_str::<openbeepboop::ErrorEnvelope>(text)
        .map(|envelope| envelope.error)
        .unwrap_or_else(|_| ErrorBody::new(message, "invalid_request_error"));
    UpstreamError::Rejected { status, error }
}

/// Exponential backoff with full jitter over the upper half, capped at 30 s.
fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let ceiling = (policy.backoff * (1u32 << attempt.min(10))).min(Duration::from_secs(30));
    let half = ceiling / 2;
    half + half.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests;
