//! Server-Sent Events (the WHATWG HTML standard's `text/event-stream`) written by the
//! gateway: a job's status events, and the `chat.completion.chunk` stream (or a response's
//! event stream, `responses::Live`) of a `stream: true` request. It owns keep-alives and how a stream ends; handlers decide
//! whether a reply is a stream at all.

use super::State;
use super::reply::{Reply, StreamOptions};
use super::wait::{self, Woke};
use crate::queue::JobWatch;
use crate::queue::{JobRecord, Visibility};
use crate::relay::Cursor;
use bytes::Bytes;
use openbeepboop::{ChatCompletion, Endpoint, ErrorBody, JobStatus, TextCompletion};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use relay::{Framing, Progress, Subscription, resume_unavailable};
use std::time::Duration;

mod relay;

/// A comment line: clients ignore it, proxies with idle timeouts see traffic.
const KEEPALIVE: &[u8] = b": keep-alive\n\n";

/// The keep-alive of an OpenAI stream once an event with an `id` was sent: the comment
/// alone, without the blank line. The official Python SDK's decoder keeps the last event
/// id, as the WHATWG standard says, but then dispatches a blank line with no data as an
/// event (the standard says not to), and fails to parse its empty data as JSON.
const KEEPALIVE_AFTER_ID: &[u8] = b": keep-alive\n";

/// One event in the `text/event-stream` framing every stream here uses: an optional
/// `event:` line, one `data:` line, and the blank line that ends the event. A line break
/// in `data` would end the line early, so it becomes a space.
pub(super) fn frame(out: &mut String, name: Option<&str>, data: &str) {
    if let Some(name) = name {
        out.push_str("event: ");
        out.push_str(name);
        out.push('\n');
    }
    out.push_str("data: ");
    if data.contains(['\r', '\n']) {
        out.push_str(&data.replace(['\r', '\n'], " "));
    } else {
        out.push_str(data);
    }
    out.push_str("\n\n");
}

/// [`frame`]'s `data:` line and closing blank line for bytes as a node relayed them (one
/// JSON object, which a raw line break inside would cut short).
pub(super) fn data_bytes(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(b"data: ");
    out.extend(
        data.iter()
            .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\n\n");
}

/// A finished completion replayed as the events a streaming server sends, `[DONE]` last:
/// `chat.completion.chunk`s, or `text_completion` chunks for `/v1/completions`. A body that
/// is not a completion is passed on whole, as one event, rather than lost.
pub fn replay(endpoint: Endpoint, result: &str, include_usage: bool) -> String {
    let mut body = String::new();
    let chunks: Option<Vec<String>> = match endpoint {
        Endpoint::Completions => chunks_of(result, |c: &TextCompletion| c.to_chunks(include_usage)),
        // Neither streams here: embeddings refuse `stream: true` at submit, and a response's
        // events are written from its `response` object (`responses::replay`).
        Endpoint::Embeddings | Endpoint::Responses => None,
        Endpoint::ChatCompletions => {
            chunks_of(result, |c: &ChatCompletion| c.to_chunks(include_usage))
        }
    };
    match chunks {
        Some(chunks) => {
            for chunk in chunks {
                frame(&mut body, None, &chunk);
            }
        }
        None => frame(&mut body, None, result),
    }
    frame(&mut body, None, "[DONE]");
    body
}

/// `result` read as `T` and cut into chunks, each as JSON; `None` when it is not a `T`.
fn chunks_of<T: serde::de::DeserializeOwned, C: serde::Serialize>(
    result: &str,
    to_chunks: impl Fn(&T) -> Vec<C>,
) -> Option<Vec<String>> {
    let completion = serde_json::from_str::<T>(result).ok()?;
    Some(
        to_chunks(&completion)
            .iter()
            .map(|chunk| serde_json::to_string(chunk).unwrap_or_default())
            .collect(),
    )
}

/// An `error` event in OpenAI's envelope, which the SDKs raise as an `APIError`.
fn error_event(error: &ErrorBody) -> String {
    let mut event = String::new();
    frame(
        &mut event,
        None,
        &serde_json::json!({ "error": error }).to_string(),
    );
    event
}

async fn start(session: &mut ServerSession, reply: &Reply, request_id: &str) -> bool {
    start_chunked(session, reply, request_id, "text/event-stream").await
}

/// Writes the head of a body whose length is not known up front: chunked on HTTP/1.1,
/// ended by closing the connection on HTTP/1.0.
pub async fn start_chunked(
    session: &mut ServerSession,
    reply: &Reply,
    request_id: &str,
    content_type: &'static str,
) -> bool {
    let Some(mut header) = super::app::response_header(reply.status, &reply.headers, request_id)
    else {
        return false;
    };
    if header.insert_header("content-type", content_type).is_err() {
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

pub async fn send(session: &mut ServerSession, bytes: impl Into<Bytes>) -> bool {
    session
        .write_response_body(bytes.into(), false)
        .await
        .is_ok()
}

pub async fn end(session: &mut ServerSession) -> bool {
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

/// What a stream wakes up for besides the deadline and shutdown.
enum Next {
    Status(JobStatus),
    /// The job's relay moved: chunks came, or its stream ended.
    Relayed,
    KeepAlive,
    /// Time for an `obb.queue` event.
    Progress,
    /// The client closed the connection (or sent bytes it should not have).
    Gone,
}

/// What a stream waits on.
struct Waits<'a, 'w> {
    watch: &'a mut JobWatch<'w>,
    cursor: Option<&'a mut Cursor>,
    keepalives: &'a mut tokio::time::Interval,
    progress: Option<&'a mut tokio::time::Interval>,
}

/// The job's next status change, relayed chunk, tick or the client's leaving, whichever
/// comes first; `None` when the job's changes can no longer arrive.
async fn next(session: &mut ServerSession, waits: Waits<'_, '_>) -> Option<Next> {
    let relayed = async {
        match waits.cursor {
            Some(cursor) => cursor.changed().await,
            None => std::future::pending().await,
        }
    };
    let progress = async {
        match waits.progress {
            Some(ticks) => drop(ticks.tick().await),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        changed = waits.watch.changed() => changed.map(Next::Status),
        () = relayed => Some(Next::Relayed),
        _ = waits.keepalives.tick() => Some(Next::KeepAlive),
        () = progress => Some(Next::Progress),
        // The request's body was read whole: anything more is the client leaving.
        _ = session.read_body_or_idle(true) => Some(Next::Gone),
    }
}

/// Why a stream stopped waiting before its job ended.
#[derive(Clone, Copy)]
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

    /// Writes the stream's headers. From now on a write the client does not take within
    /// `stream_write_timeout_seconds` ends the stream: a client that stopped reading must
    /// not hold its relay cursor and socket buffers for the job's whole life.
    async fn start(&self, session: &mut ServerSession, reply: &Reply) -> bool {
        let patience = Duration::from_secs(self.state.config.stream_write_timeout_seconds);
        session.set_write_timeout(Some(patience));
        start(session, reply, self.request_id).await
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
    /// the job object, and ends after the final one. A queued job's `queued` event is sent
    /// again, at a keep-alive, when its `queue_position` has moved. While it runs, its
    /// relayed chunks go out as `chunk` events (after chunk `after`, when resuming).
    pub async fn job_events(
        &self,
        session: &mut ServerSession,
        reply: &Reply,
        after: Option<u64>,
    ) -> bool {
        if !self.start(session, reply).await {
            return false;
        }
        let mut watch = self.state.queue.notifier().watch(self.job_id);
        let mut shutdown = self.shutdown.clone();
        let mut keepalives = self.keepalives();
        let mut relay = Subscription::new(self, after);
        let mut last = None;
        let mut stopping = false;
        // Read after subscribing, so that no change falls between a read and the wait.
        let mut read = self.read().await;
        while let Some(record) = read.take() {
            relay.begin_if(record.status != JobStatus::Queued);
            // A final event comes after every chunk; a `processing` one before them.
            if record.status.is_final() && !relay.drain(session, Framing::Events).await {
                return false;
            }
            let wire = match self.state.queue.wire_job(&record).await {
                Ok(wire) => wire,
                Err(error) => {
                    // The position is a courtesy: the event goes out without it.
                    tracing::debug!(error = %error.detail(), "no queue position for a job event");
                    record.to_wire()
                }
            };
            let seen = (record.status, wire.queue_position);
            if last != Some(seen) {
                last = Some(seen);
                let mut event = String::new();
                let data = serde_json::to_string(&wire).unwrap_or_default();
                frame(&mut event, Some(record.status.as_str()), &data);
                if !send(session, event).await {
                    return false;
                }
            }
            if record.status.is_final() || stopping {
                break;
            }
            if !relay.drain(session, Framing::Events).await {
                return false;
            }
            loop {
                let waits = Waits {
                    watch: &mut watch,
                    cursor: relay.cursor(),
                    keepalives: &mut keepalives,
                    progress: None,
                };
                let woke = wait::until(next(session, waits), None, &mut shutdown).await;
                match woke {
                    Woke::Changed(Next::Gone) => return false,
                    Woke::Changed(Next::Relayed) => {
                        if !relay.drain(session, Framing::Events).await {
                            return false;
                        }
                        continue;
                    }
                    Woke::Changed(Next::KeepAlive) => {
                        if !send(session, KEEPALIVE).await {
                            return false;
                        }
                        self.state.metrics.stream.keepalive();
                    }
                    Woke::Changed(Next::Status(_) | Next::Progress) | Woke::Deadline => {}
                    // One more read, so that a change that came with the shutdown is still sent.
                    Woke::Shutdown => stopping = true,
                }
                break;
            }
            read = self.read().await;
        }
        end(session).await
    }

    /// The answer to a `stream: true` request whose job had not ended when the headers were
    /// due: keep-alive comments while it waits, the relayed chunks as its node streams them
    /// (after chunk `after`, when resuming), and `[DONE]`; or, when nothing was relayed,
    /// the stored result replayed as chunks. A response's stream is its events instead
    /// ([`Self::responses_end`]). A job that fails, or does not end by
    /// `deadline`, ends the stream with an error event; the timeout's names the job, so
    /// that the caller can poll it. A run that broke off mid-stream ends it with
    /// `stream_interrupted`: what was sent cannot be taken back, and is not repeated.
    pub async fn chat(
        &self,
        session: &mut ServerSession,
        reply: &Reply,
        deadline: tokio::time::Instant,
        options: StreamOptions,
    ) -> bool {
        let answered = self.chat_events(session, reply, deadline, options).await;
        if !answered && options.cancel_on_disconnect {
            // Nothing happens to a job that already ended.
            match self
                .state
                .queue
                .cancel(self.job_id.to_owned(), self.who.clone())
                .await
            {
                Ok(_) => {
                    tracing::info!(job = %self.job_id, "cancelled: its client left and asked for that")
                }
                Err(error) => {
                    tracing::debug!(job = %self.job_id, error = %error.detail(), "no cancel on disconnect")
                }
            }
        }
        answered
    }

    async fn chat_events(
        &self,
        session: &mut ServerSession,
        reply: &Reply,
        deadline: tokio::time::Instant,
        options: StreamOptions,
    ) -> bool {
        if !self.start(session, reply).await {
            return false;
        }
        let include_usage = options.include_usage;
        let mut watch = self.state.queue.notifier().watch(self.job_id);
        let mut shutdown = self.shutdown.clone();
        let mut keepalives = self.keepalives();
        let mut progress = Progress::new(self, options.progress);
        // A response's events are numbered after its opening (`responses::Live`).
        let responses = super::responses::is_response(self.job_id);
        let (framing, after) = match responses {
            true => (
                Framing::Responses,
                super::responses::relay_after(options.after),
            ),
            false => (Framing::OpenAi, options.after),
        };
        let mut relay = Subscription::new(self, after);
        relay.begin_if(true);
        // What was relayed already (the chunk that ended the submit's hold) goes out
        // before the job is read: the first token waits for nothing. A response's come
        // after its opening, which is made from the row.
        if !responses && !relay.drain(session, framing).await {
            return false;
        }
        let mut cut = None;
        let (mut record, live) = match responses {
            true => {
                let (record, live) = self.live(options.after).await;
                (record, Some(live))
            }
            false => (self.read().await, None),
        };
        // A response's stream opens at once, with its id: a client can resume or cancel it.
        if let (Some(live), Some(r)) = (&live, &record)
            && !send(session, live.opening(r)).await
        {
            return false;
        }
        let mut queued = record
            .as_ref()
            .is_some_and(|r| r.status == JobStatus::Queued);
        while let Some(current) = &record {
            if !relay.drain(session, framing).await {
                return false;
            }
            if current.status.is_final() || relay.behind_sent {
                break;
            }
            if queued && progress.due && !progress.send(session, current).await {
                return false;
            }
            let waits = Waits {
                watch: &mut watch,
                cursor: relay.cursor(),
                keepalives: &mut keepalives,
                progress: progress.ticks.as_mut().filter(|_| queued),
            };
            match wait::until(next(session, waits), Some(deadline), &mut shutdown).await {
                Woke::Changed(Next::Gone) => return false,
                Woke::Changed(Next::Progress) => {
                    progress.due = true;
                    continue;
                }
                Woke::Changed(Next::Relayed) => continue,
                Woke::Changed(Next::KeepAlive) => {
                    let numbered = live.is_some() || relay.sent_any();
                    let keepalive = if numbered {
                        KEEPALIVE_AFTER_ID
                    } else {
                        KEEPALIVE
                    };
                    if !send(session, keepalive).await {
                        return false;
                    }
                    self.state.metrics.stream.keepalive();
                    continue;
                }
                // Only a final status needs a read; the others change nothing here.
                Woke::Changed(Next::Status(status)) if !status.is_final() => {
                    queued = status == JobStatus::Queued;
                    continue;
                }
                // The final change carries the job when it was read with it: no read here.
                Woke::Changed(Next::Status(_)) => {
                    if let Some(ended) = watch.take_record() {
                        record = Some(std::sync::Arc::unwrap_or_clone(ended));
                        continue;
                    }
                }
                Woke::Deadline => cut = Some(Cut::Deadline),
                Woke::Shutdown => cut = Some(Cut::Shutdown),
            }
            record = self.read().await;
            if cut.is_some() {
                break;
            }
        }
        let events = match &live {
            Some(live) => self.responses_end(live, &record, cut, &relay),
            None => self.chat_end(&record, cut, &relay, include_usage),
        };
        send(session, events).await && end(session).await
    }

    /// How a chat or completions stream ends, once its job ended or its wait did.
    fn chat_end(
        &self,
        record: &Option<JobRecord>,
        cut: Option<Cut>,
        relay: &Subscription<'_>,
        include_usage: bool,
    ) -> String {
        match (record, cut) {
            (Some(_), _) if relay.behind_sent => {
                error_event(&resume_unavailable(self.job_id, relay.next_seq()))
            }
            (Some(r), _) if r.status.is_final() && relay.sent_any() => {
                // Whatever the relay did not carry to its end cannot be sent whole now.
                match (r.status, relay.finished()) {
                    (JobStatus::Completed, true) => done(),
                    (JobStatus::Completed, false) if !relay.sent_here => {
                        error_event(&resume_unavailable(self.job_id, relay.next_seq()))
                    }
                    (JobStatus::Completed, false) => error_event(
                        &ErrorBody::new(
                            format!(
                                "the stream of job `{}` broke off after chunk {}; `GET /v1/jobs/{}` has the whole result",
                                self.job_id,
                                relay.next_seq().saturating_sub(1),
                                self.job_id
                            ),
                            "server_error",
                        )
                        .with_code("stream_interrupted"),
                    ),
                    _ => self.final_events(record, cut, include_usage),
                }
            }
            _ => self.final_events(record, cut, include_usage),
        }
    }

    /// The response this stream is for, with what its live stream, resumed after event
    /// `after`, needs of its request; no record when it cannot be read.
    async fn live(&self, after: Option<u64>) -> (Option<JobRecord>, super::responses::Live) {
        let read = self
            .state
            .queue
            .job_with_request(self.job_id.to_owned(), self.who.clone())
            .await
            .ok()
            .flatten();
        match read {
            Some((record, payload)) => (Some(record), super::responses::Live::new(&payload, after)),
            None => (None, super::responses::Live::new("{}", after)),
        }
    }

    /// How a response's stream ends: `responses::Live::end` decides from where its relay
    /// stands.
    fn responses_end(
        &self,
        live: &super::responses::Live,
        record: &Option<JobRecord>,
        cut: Option<Cut>,
        relay: &Subscription<'_>,
    ) -> String {
        let relayed = super::responses::Relayed {
            next: relay.next_seq(),
            sent_any: relay.sent_any(),
            sent_here: relay.sent_here,
            finished: relay.finished(),
            behind: relay.behind_sent,
        };
        live.end(self.job_id, record.as_ref(), &relayed, |r| {
            self.unfinished(r, cut)
        })
    }

    /// How a stream that relayed nothing ends: the stored result replayed whole, or the
    /// error that says why there is none.
    fn final_events(
        &self,
        record: &Option<JobRecord>,
        cut: Option<Cut>,
        include_usage: bool,
    ) -> String {
        let poll = format!("poll `GET /v1/jobs/{}`", self.job_id);
        match (record, cut) {
            (None, _) => error_event(&ErrorBody::new(
                format!("job `{}` could not be read; {poll}", self.job_id),
                "server_error",
            )),
            (Some(r), _) if r.status == JobStatus::Completed => replay(
                r.endpoint,
                r.result_payload.as_deref().unwrap_or("{}"),
                include_usage,
            ),
            (Some(r), _) if r.status.is_final() => {
                error_event(&r.error.clone().unwrap_or_else(|| {
                    ErrorBody::new(
                        format!("job `{}` ended as {}", r.id, r.status),
                        "server_error",
                    )
                }))
            }
            (Some(r), _) => error_event(&self.unfinished(r, cut)),
        }
    }

    /// Why a stream ends before its job did: the gateway is stopping, or the wait is over.
    fn unfinished(&self, record: &JobRecord, cut: Option<Cut>) -> ErrorBody {
        let poll = format!("poll `GET /v1/jobs/{}`", self.job_id);
        match cut {
            Some(Cut::Shutdown) => ErrorBody::new(
                format!(
                    "the gateway is restarting; job `{}` is kept: {poll}",
                    self.job_id
                ),
                "server_error",
            )
            .with_code("service_unavailable"),
            _ => ErrorBody::new(
                format!(
                    "job `{}` did not finish in time (it is {}); {poll}",
                    self.job_id, record.status
                ),
                "timeout_error",
            )
            .with_code("job_not_finished"),
        }
    }
}

/// The end of an OpenAI stream.
fn done() -> String {
    let mut event = String::new();
    frame(&mut event, None, "[DONE]");
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_ends_with_done_and_a_foreign_body_stays_one_event() {
        let completion = r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;
        let events = replay(Endpoint::ChatCompletions, completion, false);
        assert!(events.ends_with("data: [DONE]\n\n"));
        assert!(events.contains("chat.completion.chunk"));
        let foreign = replay(Endpoint::ChatCompletions, "{\"odd\":\n1}", false);
        let text = r#"{"id":"t","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":"hi","finish_reason":"stop"}]}"#;
        let events = replay(Endpoint::Completions, text, false);
        assert_eq!(events.matches("\"object\":\"text_completion\"").count(), 2);
        assert!(events.ends_with("data: [DONE]\n\n"));
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
