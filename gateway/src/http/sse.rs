//! Server-Sent Events (the WHATWG HTML standard's `text/event-stream`) written by the
//! gateway: a job's status events, and the `chat.completion.chunk` stream of a
//! `stream: true` request. It owns keep-alives and how a stream ends; handlers decide
//! whether a reply is a stream at all.

use super::State;
use super::reply::Reply;
use crate::queue::{JobRecord, Visibility};
use bytes::Bytes;
use openbeepboop::{ChatCompletion, ErrorBody, JobStatus};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use std::time::Duration;

/// A comment line: clients ignore it, proxies with idle timeouts see traffic.
const KEEPALIVE: &[u8] = b": keep-alive\n\n";

/// A finished completion replayed as the events a streaming server sends, `[DONE]` last.
/// A body that is not a completion is passed on whole, as one event, rather than lost.
pub fn replay(result: &str, include_usage: bool) -> String {
    let mut body = String::new();
    match serde_json::from_str::<ChatCompletion>(result) {
        Ok(completion) => {
            for chunk in completion.to_chunks(include_usage) {
                push_data(
                    &mut body,
                    &serde_json::to_string(&chunk).unwrap_or_default(),
                );
            }
        }
        Err(_) => push_data(&mut body, &result.replace(['\r', '\n'], " ")),
    }
    body.push_str("data: [DONE]\n\n");
    body
}

fn push_data(body: &mut String, data: &str) {
    body.push_str("data: ");
    body.push_str(data);
    body.push_str("\n\n");
}

/// An `error` event in OpenAI's envelope, which the SDKs raise as an `APIError`.
fn error_event(error: &ErrorBody) -> String {
    let envelope = serde_json::json!({ "error": error });
    format!("data: {envelope}\n\n")
}

async fn start(session: &mut ServerSession, reply: &Reply, request_id: &str) -> bool {
    let Some(mut header) = super::response_header(reply.status, &reply.headers, request_id) else {
        return false;
    };
    if header
        .insert_header("content-type", "text/event-stream")
        .is_err()
    {
        return false;
    }
    if session.req_header().version == http::Version::HTTP_11 {
        if header
            .insert_header("transfer-encoding", "chunked")
            .is_err()
        {
            return false;
        }
    } else {
        // HTTP/1.0 has no chunked coding (RFC 9112 §6.1): the stream ends when the
        // connection closes.
        session.set_keepalive(None);
    }
    session.write_response_header(header).await.is_ok()
}

async fn send(session: &mut ServerSession, bytes: impl Into<Bytes>) -> bool {
    session
        .write_response_body(bytes.into(), false)
        .await
        .is_ok()
}

async fn end(session: &mut ServerSession) -> bool {
    session
        .write_response_body(Bytes::new(), true)
        .await
        .is_ok()
}

/// The answer to `HEAD` on a streaming route: the headers a `GET` would get, and no events.
pub async fn headers_only(session: &mut ServerSession, reply: &Reply, request_id: &str) -> bool {
    start(session, reply, request_id).await && end(session).await
}

/// What a streaming request is waiting for.
pub struct Stream<'a> {
    pub state: &'a State,
    pub job_id: &'a str,
    pub who: &'a Visibility,
    pub shutdown: &'a ShutdownWatch,
    pub request_id: &'a str,
}

/// Why a stream stopped waiting before its job ended.
enum Cut {
    Deadline,
    Shutdown,
}

impl Stream<'_> {
    async fn read(&self) -> Option<JobRecord> {
        self.state
            .queue
            .job(self.job_id.to_owned(), self.who.clone())
            .await
            .ok()
            .flatten()
    }

    /// Ticks every `stream_keepalive_seconds`, first one period from now. One timer for the
    /// whole stream: events in between do not push the next keep-alive back, so a job that
    /// changes often cannot starve them.
    fn keepalives(&self) -> tokio::time::Interval {
        let period = Duration::from_secs(self.state.config.stream_keepalive_seconds);
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    }

    /// Streams the job's status changes as events named after the status, each carrying
    /// the job object, and ends after the final one.
    pub async fn job_events(&self, session: &mut ServerSession, reply: &Reply) -> bool {
        if !start(session, reply, self.request_id).await {
            return false;
        }
        let mut watch = self.state.queue.notifier().watch(self.job_id);
        let mut shutdown = self.shutdown.clone();
        let mut keepalives = self.keepalives();
        let mut last = None;
        // Read after subscribing, so that no change falls between a read and the wait.
        while let Some(record) = self.read().await {
            if last != Some(record.status) {
                last = Some(record.status);
                let event = format!(
                    "event: {}\ndata: {}\n\n",
                    record.status,
                    serde_json::to_string(&record.to_wire()).unwrap_or_default()
                );
                if !send(session, event).await {
                    return false;
                }
            }
            if record.status.is_final() || *shutdown.borrow() {
                break;
            }
            tokio::select! {
                _ = watch.changed() => {}
                _ = keepalives.tick() => {
                    if !send(session, KEEPALIVE).await {
                        return false;
                    }
                }
                _ = shutdown.changed() => {}
            }
        }
        end(session).await
    }

    /// The answer to a `stream: true` request whose job had not ended when the headers were
    /// due: keep-alive comments while it waits, then the replayed chunks and `[DONE]`. A job
    /// that fails, or does not end by `deadline`, ends the stream with an error event; the
    /// timeout's names the job, so that the caller can poll it.
    pub async fn chat(
        &self,
        session: &mut ServerSession,
        reply: &Reply,
        deadline: tokio::time::Instant,
        include_usage: bool,
    ) -> bool {
        if !start(session, reply, self.request_id).await {
            return false;
        }
        let mut watch = self.state.queue.notifier().watch(self.job_id);
        let mut shutdown = self.shutdown.clone();
        let mut keepalives = self.keepalives();
        let mut cut = None;
        let mut record = self.read().await;
        while let Some(current) = &record {
            if current.status.is_final() {
                break;
            }
            if *shutdown.borrow() {
                cut = Some(Cut::Shutdown);
                break;
            }
            tokio::select! {
                changed = watch.changed() => match changed {
                    // Only a final status needs a read; the others change nothing here.
                    Some(status) if !status.is_final() => continue,
                    Some(_) => {}
                    // The notifier is gone: nothing will change before the deadline.
                    None => {
                        tokio::time::sleep_until(deadline).await;
                        cut = Some(Cut::Deadline);
                    }
                },
                _ = keepalives.tick() => {
                    if !send(session, KEEPALIVE).await {
                        return false;
                    }
                    continue;
                }
                () = tokio::time::sleep_until(deadline) => cut = Some(Cut::Deadline),
                _ = shutdown.changed() => cut = Some(Cut::Shutdown),
            }
            record = self.read().await;
            if cut.is_some() {
                break;
            }
        }
        let poll = format!("poll `GET /v1/jobs/{}`", self.job_id);
        let events = match (&record, cut) {
            (None, _) => error_event(&ErrorBody::new(
                format!("job `{}` could not be read; {poll}", self.job_id),
                "server_error",
            )),
            (Some(r), _) if r.status == JobStatus::Completed => {
                replay(r.result_payload.as_deref().unwrap_or("{}"), include_usage)
            }
            (Some(r), _) if r.status.is_final() => {
                error_event(&r.error.clone().unwrap_or_else(|| {
                    ErrorBody::new(
                        format!("job `{}` ended as {}", r.id, r.status),
                        "server_error",
                    )
                }))
            }
            (Some(_), Some(Cut::Shutdown)) => error_event(
                &ErrorBody::new(
                    format!(
                        "the gateway is restarting; job `{}` is kept: {poll}",
                        self.job_id
                    ),
                    "server_error",
                )
                .with_code("service_unavailable"),
            ),
            (Some(r), _) => error_event(
                &ErrorBody::new(
                    format!(
                        "job `{}` did not finish in time (it is {}); {poll}",
                        self.job_id, r.status
                    ),
                    "timeout_error",
                )
                .with_code("job_not_finished"),
            ),
        };
        send(session, events).await && end(session).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_ends_with_done_and_a_foreign_body_stays_one_event() {
        let completion = r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;
        let events = replay(completion, false);
        assert!(events.ends_with("data: [DONE]\n\n"));
        assert!(events.contains("chat.completion.chunk"));
        let foreign = replay("{\"odd\":\n1}", false);
        assert_eq!(foreign, "data: {\"odd\": 1}\n\ndata: [DONE]\n\n");
    }

    #[test]
    fn an_error_event_is_an_openai_envelope() {
        let event = error_event(&ErrorBody::new("boom", "server_error").with_code("x"));
        let data: serde_json::Value =
            serde_json::from_str(event.trim().trim_start_matches("data: ")).unwrap();
        assert_eq!(data["error"]["message"], "boom");
        assert_eq!(data["error"]["code"], "x");
    }
}
