//! Calls an OpenAI-compatible server: forwards the job's body with only the model mapped,
//! retries transient errors with backoff and jitter, and honours `Retry-After`. Answers may
//! come compressed (gzip, br, deflate, zstd); one that is not a JSON object is final.

use crate::config::ConfigError;
use crate::routing::Upstream;
use crate::tls;
use openbeepboop::{Endpoint, ErrorBody};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
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
    /// Reads an answer that must be a JSON object; its `usage` may be missing or odd.
    pub fn parse(text: String) -> Result<Self, serde_json::Error> {
        let body = RawValue::from_string(text)?;
        let Head { usage } = serde_json::from_str(body.get())?;
        let tokens = |name: &str| usage.as_ref().and_then(|u| u[name].as_u64()).unwrap_or(0);
        Ok(Self {
            prompt_tokens: tokens("prompt_tokens"),
            completion_tokens: tokens("completion_tokens"),
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

    /// Runs one job's request on `endpoint`'s path, retrying transient errors. The
    /// completion keeps the upstream's body verbatim.
    pub async fn complete(
        &self,
        endpoint: Endpoint,
        payload: &RawValue,
        model: &str,
        request_id: Option<&str>,
    ) -> Result<Completion, UpstreamError> {
        let body =
            forwarded_body(endpoint, payload, model).map_err(|e| UpstreamError::Rejected {
                status: 400,
                error: ErrorBody::new(
                    format!("the job's request is not a JSON object: {e}"),
                    "invalid_request_error",
                ),
            })?;
        let mut attempt = 0;
        loop {
            match self.complete_once(endpoint, &body, request_id).await {
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
        endpoint: Endpoint,
        body: &[u8],
        request_id: Option<&str>,
    ) -> Result<Completion, (UpstreamError, Option<Duration>)> {
        let url = format!("{}{}", self.upstream.base_url, endpoint.upstream_path());
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
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| openbeepboop::retry_after::parse(v, std::time::SystemTime::now()))
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
/// legacy completions refuse the field.
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
        Endpoint::ChatCompletions | Endpoint::Responses => {}
    }
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
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
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_body_keeps_every_field_but_model_and_stream() {
        let raw = RawValue::from_string(
            r#"{"model":"alias","messages":[],"temperature":0.3,"stream":true,"stream_options":{"include_usage":true},"tools":[],"metadata":{"obb_priority":"1"}}"#.to_owned(),
        )
        .unwrap();
        let chat = Endpoint::ChatCompletions;
        let body: Value =
            serde_json::from_slice(&forwarded_body(chat, &raw, "real").unwrap()).unwrap();
        assert_eq!(body["model"], "real");
        assert_eq!(body["stream"], false);
        assert!(body.get("stream_options").is_none());
        assert_eq!(body["temperature"], 0.3);
        assert!(body["tools"].is_array());
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys[0], "model", "key order is kept");
        assert_eq!(
            body["metadata"]["obb_priority"], "1",
            "chat takes `metadata`"
        );
        let not_json = RawValue::from_string("[1]".into()).unwrap();
        assert!(forwarded_body(chat, &not_json, "m").is_err());
    }

    #[test]
    fn embeddings_and_legacy_completions_go_up_without_metadata() {
        let raw = RawValue::from_string(
            r#"{"model":"alias","input":"x","prompt":"y","metadata":{"obb_ttl_seconds":"60"}}"#
                .to_owned(),
        )
        .unwrap();
        for endpoint in [Endpoint::Embeddings, Endpoint::Completions] {
            let body: Value =
                serde_json::from_slice(&forwarded_body(endpoint, &raw, "real").unwrap()).unwrap();
            assert!(body.get("metadata").is_none(), "{endpoint}: {body}");
            assert_eq!(
                (&body["input"], &body["prompt"]),
                (&json!("x"), &json!("y"))
            );
        }
    }

    #[test]
    fn errors_are_sorted_into_transient_and_final() {
        let final_error = classify(
            404,
            r#"{"error":{"message":"model `x` not found","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#,
            "u",
        );
        match final_error {
            UpstreamError::Rejected { status, error } => {
                assert_eq!(status, 404);
                assert_eq!(error.code.as_deref(), Some("model_not_found"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(classify(429, "slow down", "u").kind(), "rate_limited");
        for status in [400, 429, 503] {
            assert!(UpstreamError::KINDS.contains(&classify(status, "", "u").kind()));
        }
        assert_eq!(classify(503, "", "u").kind(), "server_error");
        assert_eq!(classify(400, "plain text", "u").to_string(), "plain text");
    }

    #[tokio::test]
    async fn a_success_that_is_not_json_is_final_and_called_once() {
        let mock = testkit::mock::MockUpstream::start(&["m"]).await.unwrap();
        mock.push_faults([testkit::mock::Fault::InvalidJson]);
        let upstream = Upstream {
            base_url: mock.base_url(),
            api_key: None,
            key_source: None,
            section: "llm",
            ca_cert: None,
        };
        let retry = RetryPolicy {
            max_retries: 3,
            backoff: Duration::from_millis(1),
        };
        let client = UpstreamClient::new(
            upstream,
            Duration::from_secs(5),
            Duration::from_secs(5),
            retry,
        )
        .unwrap();
        let payload = RawValue::from_string(r#"{"messages":[]}"#.to_owned()).unwrap();
        let error = client
            .complete(Endpoint::ChatCompletions, &payload, "m", None)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), "invalid_answer");
        assert!(error.to_string().contains("not a JSON object"), "{error}");
        assert_eq!(mock.calls(), 1, "a broken answer is not asked for again");
    }

    #[test]
    fn a_completion_is_read_once_for_its_body_and_token_counts() {
        let text = r#"{"id":"c", "usage":{"prompt_tokens":3,"completion_tokens":5},"choices":[]}"#;
        let completion = Completion::parse(text.to_owned()).unwrap();
        assert_eq!(completion.body.get(), text, "the body is kept verbatim");
        assert_eq!(
            (completion.prompt_tokens, completion.completion_tokens),
            (3, 5)
        );
        let odd = Completion::parse(r#"{"usage":{"prompt_tokens":null}}"#.to_owned()).unwrap();
        assert_eq!((odd.prompt_tokens, odd.completion_tokens), (0, 0));
        for not_an_object in ["[{\"usage\":null}]", "1", "{\"a\":", "{} x"] {
            assert!(
                Completion::parse(not_an_object.to_owned()).is_err(),
                "{not_an_object}"
            );
        }
    }

    #[test]
    fn backoff_grows_with_jitter_and_stays_capped() {
        let policy = RetryPolicy {
            max_retries: 3,
            backoff: Duration::from_millis(100),
        };
        for attempt in 0..20 {
            let delay = backoff(&policy, attempt);
            let ceiling = (policy.backoff * (1u32 << attempt.min(10))).min(Duration::from_secs(30));
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{attempt}: {delay:?}"
            );
        }
    }
}
