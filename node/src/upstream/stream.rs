//! Reads an upstream's streamed answer: server-sent events (the `sse-stream` crate parses
//! them), one chunk per `data:` event, until `data: [DONE]` or the end of the body. It
//! yields each chunk's JSON verbatim and judges nothing but errors; assembling and relaying
//! the chunks is the job's part (`worker::job`).
//!
//! The format is OpenAI's stream (API reference, "Streaming"): unnamed events whose data
//! is a `chat.completion.chunk` or a `text_completion` chunk, and `[DONE]` last. A failure
//! after the head is an event whose data is `{"error":{…}}` (some servers name it
//! `event: error`). Other named events and comments are skipped, but for a Responses
//! stream, whose events are all named after their `type`.

use super::{UpstreamError, classify};
use futures_util::{Stream, StreamExt};
use openbeepboop::{ChatCompletion, Endpoint, TextCompletion};
use serde_json::value::RawValue;
use sse_stream::{Sse, SseByteStream};
use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

type Events = Pin<Box<dyn Stream<Item = Result<Sse, sse_stream::Error>> + Send>>;

/// The chunks of one streamed answer, read as they come.
pub struct UpstreamStream {
    events: Option<Events>,
    /// Chunks read but not yet taken: the first one (read before the stream is handed
    /// over), or a whole answer's chunks when the upstream ignored `stream: true`.
    ready: VecDeque<Box<RawValue>>,
    /// The longest wait for the next event.
    idle: Duration,
    url: String,
    /// A chunk was taken: a failure from now on is [`UpstreamError::Interrupted`].
    began: bool,
    /// Named events are chunks too (a Responses stream).
    named: bool,
}

impl UpstreamStream {
    /// Reads `response` until its first chunk (or its end), so that a failure before any
    /// chunk is one the caller may retry. An answer that is not `text/event-stream` is taken
    /// as a whole completion, from a server that ignored `stream: true`, and replayed as
    /// the chunks a stream would have had (`to_chunks`).
    pub(super) async fn open(
        response: reqwest::Response,
        url: String,
        endpoint: Endpoint,
        idle: Duration,
    ) -> Result<Self, (UpstreamError, Option<Duration>)> {
        let is_stream = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_stream {
            let status = response.status().as_u16();
            let text = tokio::time::timeout(idle, response.text())
                .await
                .map_err(|_| (silent(&url, idle), None))?
                .map_err(|e| (broken(&url, &e), None))?;
            let ready = replayed(endpoint, &text).map_err(|e| {
                let message = format!(
                    "`{url}` answered {status} with neither a stream nor a completion: {e}"
                );
                (UpstreamError::Invalid { status, message }, None)
            })?;
            return Ok(Self {
                events: None,
                ready,
                idle,
                url,
                began: false,
                named: false,
            });
        }
        let events = SseByteStream::new(response.bytes_stream());
        let mut stream = Self::from_events(Box::pin(events), url, idle);
        stream.named = endpoint == Endpoint::Responses;
        match stream.read().await {
            Ok(Some(first)) => stream.ready.push_back(first),
            Ok(None) => {}
            Err(error) => return Err((error, None)),
        }
        Ok(stream)
    }

    /// A stream over parsed events; `open` reads a response's body into one.
    fn from_events(events: Events, url: String, idle: Duration) -> Self {
        Self {
            events: Some(events),
            ready: VecDeque::new(),
            idle,
            url,
            began: false,
            named: false,
        }
    }

    /// The next chunk, or `None` once the stream ended (`[DONE]`, or the body's end).
    /// Errors, once a chunk was taken: [`UpstreamError::Interrupted`], since what was sent
    /// on cannot be taken back. Before (only in tests: [`UpstreamClient::stream`] returns
    /// once the first chunk is in), an error event is sorted as an error answer would be
    /// ([`classify`]); a broken body, or no event within the idle timeout, is `Transient`;
    /// data that is not JSON is `Invalid`.
    ///
    /// [`UpstreamClient::stream`]: super::UpstreamClient::stream
    pub async fn next(&mut self) -> Result<Option<Box<RawValue>>, UpstreamError> {
        let next = match self.ready.pop_front() {
            Some(chunk) => Ok(Some(chunk)),
            None => self.read().await,
        };
        match next {
            Ok(chunk) => {
                self.began |= chunk.is_some();
                Ok(chunk)
            }
            Err(error) if self.began => Err(UpstreamError::Interrupted {
                message: format!("the upstream's stream failed after it began: {error}"),
            }),
            Err(error) => Err(error),
        }
    }

    async fn read(&mut self) -> Result<Option<Box<RawValue>>, UpstreamError> {
        loop {
            let Some(events) = self.events.as_mut() else {
                return Ok(None);
            };
            let event = match tokio::time::timeout(self.idle, events.next()).await {
                Err(_) => return Err(silent(&self.url, self.idle)),
                Ok(None) => {
                    self.events = None;
                    return Ok(None);
                }
                Ok(Some(Err(e))) => {
                    self.events = None;
                    return Err(broken(&self.url, &e));
                }
                Ok(Some(Ok(event))) => event,
            };
            let named = event.event.as_deref().filter(|name| *name != "message");
            let Some(data) = event.data else {
                continue;
            };
            if named.is_some_and(|name| name != "error") && !self.named {
                continue;
            }
            if data.trim() == "[DONE]" {
                self.events = None;
                return Ok(None);
            }
            let chunk = RawValue::from_string(data).map_err(|e| UpstreamError::Invalid {
                status: 200,
                message: format!("`{}` streamed an event that is not JSON: {e}", self.url),
            })?;
            if named == Some("error") || is_error(&chunk) {
                self.events = None;
                return Err(error_event(&chunk, &self.url));
            }
            return Ok(Some(chunk));
        }
    }
}

/// Whether an event's data is an error (`{"error": …}`) rather than a chunk.
fn is_error(data: &RawValue) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe<'a> {
        #[serde(borrow, default)]
        error: Option<&'a RawValue>,
    }
    serde_json::from_str::<Probe>(data.get())
        .ok()
        .and_then(|p| p.error)
        .is_some_and(|e| e.get() != "null")
}

/// An error event, sorted by the status it names (`code` or `status`, as llama.cpp and
/// vLLM send them) or else by its `type`: an `invalid_request_error` is the request's
/// fault (400), anything else the server's (500).
fn error_event(data: &RawValue, url: &str) -> UpstreamError {
    let value: serde_json::Value = serde_json::from_str(data.get()).unwrap_or_default();
    let error = if value["error"].is_object() {
        &value["error"]
    } else {
        &value
    };
    let named = [&error["code"], &error["status"]]
        .into_iter()
        .find_map(|v| v.as_u64().filter(|s| (400..600).contains(s)));
    let status = match named {
        Some(status) => status as u16,
        None if error["type"] == "invalid_request_error" => 400,
        None => 500,
    };
    let text = if value["error"].is_object() {
        data.get().to_owned()
    } else {
        serde_json::json!({"error": value}).to_string()
    };
    classify(status, &text, url)
}

fn silent(url: &str, idle: Duration) -> UpstreamError {
    UpstreamError::Transient {
        status: None,
        message: format!(
            "the upstream at `{url}` sent nothing for {} s",
            idle.as_secs()
        ),
    }
}

fn broken(url: &str, error: &dyn std::error::Error) -> UpstreamError {
    UpstreamError::Transient {
        status: None,
        message: format!("the stream from `{url}` broke: {error}"),
    }
}

/// A whole answer as the chunks a stream would have carried, usage included; a whole
/// response as its closing event alone.
fn replayed(endpoint: Endpoint, text: &str) -> Result<VecDeque<Box<RawValue>>, serde_json::Error> {
    let chunks: Vec<String> = match endpoint {
        Endpoint::Responses => {
            let response = RawValue::from_string(text.to_owned())?;
            let closing = serde_json::json!({"type": "response.completed", "response": response});
            vec![closing.to_string()]
        }
        Endpoint::Completions => serde_json::from_str::<TextCompletion>(text)?
            .to_chunks(true)
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<_, _>>()?,
        _ => serde_json::from_str::<ChatCompletion>(text)?
            .to_chunks(true)
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<_, _>>()?,
    };
    chunks.into_iter().map(RawValue::from_string).collect()
}

/// A stream over these body pieces, as reads from a socket would bring them: for tests of
/// how events split across reads are put back together.
#[cfg(test)]
pub(super) fn from_pieces(pieces: Vec<Result<bytes::Bytes, std::io::Error>>) -> UpstreamStream {
    let events = SseByteStream::new(futures_util::stream::iter(pieces));
    UpstreamStream::from_events(Box::pin(events), "test".to_owned(), Duration::from_secs(5))
}
