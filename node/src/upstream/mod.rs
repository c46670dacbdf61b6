//! Calls an OpenAI-compatible server: forwards the job's body with only the model mapped,
//! retries transient errors with backoff and jitter, and honours `Retry-After`. Answers may
//! come compressed (gzip, br, deflate, zstd); one that is not a JSON object is final. A
//! `/v1/responses` job goes to `/responses`, or, where the upstream has no such route, is
//! translated to `/chat/completions` ([`crate::responses`]). A relayed job asks for a stream
//! instead ([`UpstreamClient::stream`], read by [`stream`]).

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

mod stream;

pub use stream::UpstreamStream;

/// A Responses job's stream, as the upstream can give it.
pub enum ResponsesStream {
    /// The upstream's own Responses events.
    Native(UpstreamStream),
    /// Chat completion chunks answering the chat translation of `request`.
    Translated {
        stream: UpstreamStream,
        request: Map<String, Value>,
    },
}

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
    /// A stream that failed after its first chunk: what was sent cannot be taken back, so
    /// the job is not tried again.
    #[error("{message}")]
    Interrupted { message: String },
}

impl UpstreamError {
    /// Every `kind`, so that their metric series exist at zero from the start.
    pub const KINDS: [&'static str; 6] = [
        "rate_limited",
        "server_error",
        "unreachable",
        "rejected",
        "invalid_answer",
        "interrupted",
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
            UpstreamError::Interrupted { .. } => "interrupted",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub backoff: Duration,
}

pub struct UpstreamClient {
    /// Without a client-wide timeout, which would cut a long stream: a whole call has
    /// `request_timeout` in all, a stream that long between two events.
    http: reqwest::Client,
    request_timeout: Duration,
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
            .build()
            .map_err(|e| ConfigError::Client {
                section: upstream.section,
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            request_timeout,
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
            .timeout(self.request_timeout)
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
        let body = forwarded_body(endpoint, payload, model, false).map_err(not_an_object)?;
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

    /// Asks `endpoint` (chat, legacy completions or Responses) for a stream of this job's
    /// answer, with the usage chunk whatever the user asked (the stored result needs it). Returns once the
    /// first event came: a 429 or 5xx, or any transient failure before the first chunk, is
    /// retried as [`Self::complete`] retries it, since nothing was relayed yet.
    pub async fn stream(
        &self,
        endpoint: Endpoint,
        payload: &RawValue,
        model: &str,
        request_id: Option<&str>,
    ) -> Result<UpstreamStream, UpstreamError> {
        let body = forwarded_body(endpoint, payload, model, true).map_err(not_an_object)?;
        let path = endpoint.upstream_path();
        self.retrying(|| async {
            let (response, url) = self.send(path, &body, request_id, None).await?;
            UpstreamStream::open(response, url, endpoint, self.request_timeout).await
        })
        .await
    }

    /// Asks for a Responses job's events: from `/responses` with `"stream": true`, or, where
    /// the upstream lacks the route (found as [`Self::complete`] finds it), as a chat
    /// completion stream to translate ([`ResponsesStream::Translated`]). Returns once the
    /// first event came, retrying as [`Self::stream`] does.
    pub async fn stream_responses(
        &self,
        payload: &RawValue,
        model: &str,
        request_id: Option<&str>,
    ) -> Result<ResponsesStream, UpstreamError> {
        if !self.translates_responses() {
            match self
                .stream(Endpoint::Responses, payload, model, request_id)
                .await
            {
                Err(UpstreamError::Rejected { status: 404, .. }) => {}
                native => return native.map(ResponsesStream::Native),
            }
        }
        let after_404 = !self.translates_responses();
        let request = responses::parse_request(payload)?;
        let mut chat = responses::to_chat(&request, model)?;
        chat.insert("stream".to_owned(), Value::Bool(true));
        chat.insert(
            "stream_options".to_owned(),
            serde_json::json!({"include_usage": true}),
        );
        let body = serde_json::to_vec(&chat).map_err(|e| UpstreamError::Invalid {
            status: 200,
            message: format!("cannot write the translated request: {e}"),
        })?;
        let answer = self
            .retrying(|| async {
                let (response, url) = self
                    .send("/chat/completions", &body, request_id, None)
                    .await?;
                let endpoint = Endpoint::ChatCompletions;
                UpstreamStream::open(response, url, endpoint, self.request_timeout).await
            })
            .await;
        let chat_404 = matches!(answer, Err(UpstreamError::Rejected { status: 404, .. }));
        if after_404 && !chat_404 && !self.no_responses_route.swap(true, Ordering::Relaxed) {
            tracing::info!(
                upstream = %self.upstream.base_url,
                "the upstream has no /v1/responses: translating Responses jobs to chat completions"
            );
        }
        Ok(ResponsesStream::Translated {
            stream: answer?,
            request,
        })
    }

    /// POSTs `body` to `path` under the base URL, retrying transient errors.
    async fn post(
        &self,
        path: &str,
        body: &[u8],
        request_id: Option<&str>,
    ) -> Result<Completion, UpstreamError> {
        self.retrying(|| self.complete_once(path, body, request_id))
            .await
    }

    /// Runs `call` until it succeeds, fails for good, or has been retried `max_retries`
    /// times, waiting as the answer's `Retry-After` says or else with [`backoff`].
    async fn retrying<T, F, Fut>(&self, call: F) -> Result<T, UpstreamError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, (UpstreamError, Option<Duration>)>>,
    {
        let mut attempt = 0;
        loop {
            match call().await {
                Ok(answer) => return Ok(answer),
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

    /// POSTs `body` and returns a successful answer's head, with the URL called. An error
    /// answer is read and sorted ([`classify`]), with how long its `Retry-After` asks to
    /// wait. `timeout`: for the whole call; a stream's head waits `request_timeout`.
    async fn send(
        &self,
        path: &str,
        body: &[u8],
        request_id: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<(reqwest::Response, String), (UpstreamError, Option<Duration>)> {
        let url = format!("{}{path}", self.upstream.base_url);
        let mut request = self
            .authorized(self.http.post(&url))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(id) = request_id {
            request = request.header("x-request-id", id);
        }
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = match tokio::time::timeout(self.request_timeout, request.send()).await {
            Ok(response) => response.map_err(|e| (self.unreachable(&url, &e), None))?,
            Err(_) => {
                let message = format!(
                    "the upstream at `{url}` sent no answer in {} s",
                    self.request_timeout.as_secs()
                );
                let error = UpstreamError::Transient {
                    status: None,
                    message,
                };
                return Err((error, None));
            }
        };
        let status = response.status().as_u16();
        if status < 300 {
            return Ok((response, url));
        }
        // A hosted provider's 429 says when to come back in OpenAI's headers.
        let headers = response.headers();
        let retry_after = openbeepboop::retry_after::from_headers(
            |name| headers.get(name).and_then(|v| v.to_str().ok()),
            status,
            std::time::SystemTime::now(),
        )
        .map(|delay| delay.min(Duration::from_secs(60)));
        let text = tokio::time::timeout(self.request_timeout, response.text())
            .await
            .unwrap_or_else(|_| Ok(String::new()))
            .map_err(|e| (self.unreachable(&url, &e), None))?;
        Err((classify(status, &text, &url), retry_after))
    }

    async fn complete_once(
        &self,
        path: &str,
        body: &[u8],
        request_id: Option<&str>,
    ) -> Result<Completion, (UpstreamError, Option<Duration>)> {
        let timeout = Some(self.request_timeout);
        let (response, url) = self.send(path, body, request_id, timeout).await?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| (self.unreachable(&url, &e), None))?;
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

/// A job body that is not a JSON object: the request is wrong, not the upstream.
fn not_an_object(e: serde_json::Error) -> UpstreamError {
    UpstreamError::Rejected {
        status: 400,
        error: ErrorBody::new(
            format!("the job's request is not a JSON object: {e}"),
            "invalid_request_error",
        ),
    }
}

/// The job's body as `endpoint` upstream takes it, with `model` set to the upstream's name.
/// `relay`: the answer is relayed as it comes, so a chat or legacy completions request
/// keeps `"stream": true` and gets `stream_options.include_usage = true` whatever the user
/// asked (the node stores the usage; it relays the usage chunk only when the user asked),
/// and a Responses request gets `"stream": true` (its closing event has the usage).
/// Otherwise a streamed request is asked for whole: the gateway stores complete
/// completions and replays streams from them. `metadata`, where a submit may carry the
/// gateway's terms (`obb_priority`, `obb_ttl_seconds`), goes only where OpenAI takes it:
/// embeddings and legacy completions refuse the field. A Responses request loses what is
/// the gateway's business: `background`, and `previous_response_id`, which it has
/// expanded into `input`.
pub fn forwarded_body(
    endpoint: Endpoint,
    payload: &RawValue,
    model: &str,
    relay: bool,
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
    if relay && endpoint == Endpoint::Responses {
        // Its events carry the usage in the closing `response`: nothing more to ask.
        body.insert("stream".to_owned(), Value::Bool(true));
    } else if relay && matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions) {
        body.insert("stream".to_owned(), Value::Bool(true));
        let options = body
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        if !options.is_object() {
            *options = Value::Object(Map::new());
        }
        if let Value::Object(options) = options {
            options.insert("include_usage".to_owned(), Value::Bool(true));
        }
    } else if endpoint == Endpoint::Responses
        || body.get("stream").and_then(Value::as_bool) == Some(true)
    {
        body.insert("stream".to_owned(), Value::Bool(false));
        body.remove("stream_options");
    }
    serde_json::to_vec(&body)
}

/// Sorts an error answer: 408, 409, 429 and 5xx are transient; other 4xx are final and
/// keep the upstream's own error.
pub(crate) fn classify(status: u16, text: &str, url: &str) -> UpstreamError {
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
