//! The relay's side of a stream: a subscriber's cursor on its job's relayed chunks
//! (`Subscription`: what it sent, whether it fell behind), how chunks are framed and
//! written (`relay_out`), and `X-OBB-Progress`'s `obb.queue` events while a job is queued.

use super::{Stream, frame, send};
use crate::queue::JobRecord;
use crate::relay::{Cursor, Read, RelayEnd};
use openbeepboop::ErrorBody;
use pingora::protocols::http::ServerSession;
use std::time::Duration;

/// How relayed chunks are framed: as the upstream sent them (`data:`), as our job
/// stream's `chunk` events, or as a response's item events, renumbered after its opening.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    OpenAi,
    Events,
    Responses,
}

/// What writing out a cursor's new chunks did.
enum Relayed {
    /// Chunks were sent.
    Sent,
    /// Nothing new.
    Nothing,
    /// The cursor's next chunk is no longer held.
    Behind,
    /// The client is gone.
    Gone,
}

/// Writes every chunk the relay holds past the cursor, in one write, each with its
/// sequence number as the event id (so that `Last-Event-ID` resumes after it).
async fn relay_out(session: &mut ServerSession, cursor: &mut Cursor, framing: Framing) -> Relayed {
    let chunks = match cursor.read() {
        Read::Chunks(chunks) => chunks,
        Read::Behind { .. } => return Relayed::Behind,
        Read::Pending | Read::End(_) => return Relayed::Nothing,
    };
    let mut out = Vec::with_capacity(chunks.iter().map(|(_, c)| c.len() + 32).sum());
    for (seq, chunk) in chunks {
        if framing == Framing::Responses {
            super::super::responses::relayed(seq, &chunk, &mut out);
            continue;
        }
        out.extend_from_slice(format!("id: {seq}\n").as_bytes());
        if framing == Framing::Events {
            out.extend_from_slice(b"event: chunk\n");
        }
        super::data_bytes(&mut out, &chunk);
    }
    if send(session, out).await {
        Relayed::Sent
    } else {
        Relayed::Gone
    }
}

/// The error event of a stream that cannot go on from where its client stands.
pub(super) fn resume_unavailable(job_id: &str, next: u64) -> ErrorBody {
    ErrorBody::new(
        format!(
            "chunks from {next} of job `{job_id}` are no longer held; `GET /v1/jobs/{job_id}` has the whole result"
        ),
        "invalid_request_error",
    )
    .with_code("stream_resume_unavailable")
}

/// `X-OBB-Progress`: where a queued job stands, as a named event that parsers which skip
/// unknown events drop whole (one `data:` line, no comment).
pub(super) struct Progress<'a> {
    pub(super) stream: &'a Stream<'a>,
    pub(super) ticks: Option<tokio::time::Interval>,
    /// An event is due (the first at once, then at each tick).
    pub(super) due: bool,
    pub(super) last: Option<(u64, Option<u64>)>,
}

impl<'a> Progress<'a> {
    pub(super) fn new(stream: &'a Stream<'a>, asked: bool) -> Self {
        let ticks = asked.then(|| {
            let period = Duration::from_secs(stream.state.config.stream_progress_seconds);
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
        Self {
            stream,
            due: asked,
            ticks,
            last: None,
        }
    }

    /// Sends the job's `obb.queue` event when a figure changed. False when the client is gone.
    pub(super) async fn send(&mut self, session: &mut ServerSession, record: &JobRecord) -> bool {
        self.due = false;
        let queue = &self.stream.state.queue;
        let Ok(wire) = queue.wire_job(record).await else {
            return true;
        };
        let Some(position) = wire.queue_position else {
            return true;
        };
        let wait = queue.estimated_wait(&record.model, position);
        // Tenths of a second: a figure that moves only in its noise is not news.
        let seen = (position, wait.map(|w| (w * 10.0) as u64));
        if self.last == Some(seen) {
            return true;
        }
        self.last = Some(seen);
        let data = serde_json::json!({
            "object": "obb.queue", "job_id": record.id, "model": record.model,
            "priority": record.priority, "position": position, "estimated_wait_seconds": wait,
        });
        let mut event = String::new();
        frame(&mut event, Some("obb.queue"), &data.to_string());
        send(session, event).await
    }
}

/// One stream's place in its job's relay.
pub(super) struct Subscription<'a> {
    pub(super) stream: &'a Stream<'a>,
    pub(super) after: Option<u64>,
    pub(super) cursor: Option<Cursor>,
    /// Chunks were sent on this connection.
    pub(super) sent_here: bool,
    /// The cursor fell behind the relay's buffer after this client had chunks: it cannot
    /// go on from where it stands.
    pub(super) behind_sent: bool,
    /// It fell behind before this client had any: it gets the stored result at the end.
    pub(super) behind_unsent: bool,
}

impl<'a> Subscription<'a> {
    pub(super) fn new(stream: &'a Stream<'a>, after: Option<u64>) -> Self {
        Self {
            stream,
            after,
            cursor: None,
            sent_here: false,
            behind_sent: false,
            behind_unsent: false,
        }
    }

    /// Subscribes to the job's relay, once, when `now`.
    pub(super) fn begin_if(&mut self, now: bool) {
        if now && self.cursor.is_none() && !self.behind_sent && !self.behind_unsent {
            let relays = &self.stream.state.relays;
            self.cursor = Some(relays.subscribe(self.stream.job_id, self.after));
        }
    }

    pub(super) fn cursor(&mut self) -> Option<&mut Cursor> {
        self.cursor.as_mut()
    }

    /// Whether the client has chunks of this job, from this connection or an earlier one.
    pub(super) fn sent_any(&self) -> bool {
        self.sent_here || self.after.is_some()
    }

    pub(super) fn next_seq(&self) -> u64 {
        self.cursor
            .as_ref()
            .map_or(self.after.map_or(0, |n| n + 1), Cursor::next_seq)
    }

    /// Whether the relay reached its end and this client has every chunk.
    pub(super) fn finished(&self) -> bool {
        self.cursor
            .as_ref()
            .is_some_and(|c| c.end() == (RelayEnd::Complete, true))
    }

    /// Sends every chunk held past the cursor. False when the client is gone; falling
    /// behind is remembered, and the `Events` framing tells the client at once.
    pub(super) async fn drain(&mut self, session: &mut ServerSession, framing: Framing) -> bool {
        let Some(cursor) = self.cursor.as_mut() else {
            return true;
        };
        loop {
            match relay_out(session, cursor, framing).await {
                Relayed::Sent => self.sent_here = true,
                Relayed::Nothing => return true,
                Relayed::Gone => return false,
                Relayed::Behind => {
                    let next = cursor.next_seq();
                    self.cursor = None;
                    if !self.sent_any() {
                        self.behind_unsent = true;
                        return true;
                    }
                    self.behind_sent = true;
                    if framing == Framing::Events {
                        let error = resume_unavailable(self.stream.job_id, next);
                        let mut event = String::new();
                        let data = serde_json::json!({ "error": error }).to_string();
                        frame(&mut event, Some("error"), &data);
                        return send(session, event).await;
                    }
                    return true;
                }
            }
        }
    }
}
