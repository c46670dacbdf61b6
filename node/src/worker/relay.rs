//! Relays one job's stream to the gateway as it comes: one `POST /internal/queue/stream`
//! per run, whose chunked body carries NDJSON frames (`{"seq":N,"chunk":{…}}`, then
//! `{"seq":M,"end":true}`). It never decides the job's outcome: a relay that fails is given
//! up, and the job is submitted whole as usual.
//!
//! The job task pushes each frame into a channel that feeds the request body: one frame is
//! one write, and frames that wait (the socket was busy) go out together, up to
//! [`COALESCE`], with no timer. Every frame is kept, so that a broken request can be
//! reopened and resent from the gateway's `next_seq` (from 0 without an answer; the
//! gateway drops what it has by `seq`).
//!
//! In append mode (`[node] relay = "append"`, for a proxy that buffers request bodies) the
//! same channel feeds short `content-length` requests instead: the frames ready, at most
//! every [`APPEND_EVERY`], until the gateway took the end frame.

use crate::config::RelayMode;
use crate::gateway::{GatewayClient, GatewayError};
use crate::metrics::NodeMetrics;
use bytes::{Bytes, BytesMut};
use openbeepboop::{JobId, LeaseId, LeasedJob, RelayAck, RelayFrame, RelayOutcome};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The most waiting frames sent in one write.
const COALESCE: usize = 16;

/// In append mode, the shortest time between two requests.
const APPEND_EVERY: Duration = Duration::from_millis(50);

/// One NDJSON line of the relay's body.
fn line(frame: &RelayFrame<'_>) -> Bytes {
    let mut line = serde_json::to_vec(frame).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// How long a reopened request waits first; one per retry, then the relay is given up.
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(300),
    Duration::from_millis(900),
];

/// How long the job waits for the gateway to take the end of its stream before it submits.
pub(super) const END_WAIT: Duration = Duration::from_secs(5);

/// Where and how a node's jobs relay their streams.
#[derive(Clone)]
pub(super) struct RelayTo {
    pub gateway: Arc<GatewayClient>,
    pub metrics: Arc<NodeMetrics>,
    pub mode: RelayMode,
}

/// One frame: its NDJSON line, and whether it is the end frame.
#[derive(Debug, Clone)]
struct Frame {
    line: Bytes,
    end: bool,
}

/// One job's relay to the gateway.
pub(super) struct RelaySender {
    to: RelayTo,
    job_id: JobId,
    lease_id: LeaseId,
    /// Every frame so far, by `seq`.
    frames: Vec<Frame>,
    /// The last `next_seq` the gateway answered.
    acked: u64,
    retries: usize,
    state: State,
}

enum State {
    /// A request is running; `feed` is its body's source, closed once the end was sent.
    Open {
        feed: Option<mpsc::UnboundedSender<Frame>>,
        request: Request,
    },
    /// Nothing more is sent: the stream was taken whole, the gateway refused it (stale,
    /// cancelled, no route), or it was given up.
    Stopped,
}

/// A running request, aborted when dropped: it lives no longer than the job's run.
struct Request(JoinHandle<Result<RelayAck, GatewayError>>);

impl Drop for Request {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a finished request leaves to do.
enum Next {
    Done,
    Resend { from: u64 },
}

impl RelaySender {
    /// Opens the relay of `job`'s run under its lease. In stream mode the request starts at
    /// once, with an empty body that frames join as they come.
    pub(super) fn open(to: &RelayTo, job: &LeasedJob) -> Self {
        let mut relay = Self {
            to: to.clone(),
            job_id: job.id.clone(),
            lease_id: job.lease_id.clone(),
            frames: Vec::new(),
            acked: 0,
            retries: 0,
            state: State::Stopped,
        };
        relay.start(0, Duration::ZERO, false);
        relay
    }

    /// Sends one chunk (an upstream event's JSON, verbatim) as the next frame.
    pub(super) fn send(&mut self, chunk: &RawValue) {
        let seq = self.frames.len() as u64;
        self.push(Frame {
            line: line(&RelayFrame {
                seq,
                chunk: Some(chunk),
                end: false,
            }),
            end: false,
        });
    }

    /// Sends the end frame and waits, at most [`END_WAIT`], until the gateway took the whole
    /// stream or the relay stopped, resending as needed.
    pub(super) async fn finish(mut self) {
        let seq = self.frames.len() as u64;
        self.push(Frame {
            line: line(&RelayFrame {
                seq,
                chunk: None,
                end: true,
            }),
            end: true,
        });
        if let State::Open { feed, .. } = &mut self.state {
            // The body ends once what is queued went out.
            feed.take();
        }
        if tokio::time::timeout(END_WAIT, self.settle()).await.is_err() {
            tracing::warn!(job = %self.job_id, "the gateway did not take the end of the relayed stream in time");
        }
    }

    fn push(&mut self, frame: Frame) {
        self.frames.push(frame.clone());
        let finished = match &self.state {
            State::Open { request, .. } => request.0.is_finished(),
            State::Stopped => return,
        };
        if finished {
            // Reopening resends every frame from the gateway's `next_seq`, this one included.
            self.reap_now();
            return;
        }
        if let State::Open {
            feed: Some(feed), ..
        } = &self.state
        {
            // A closed feed means the request is ending; its answer is read on the next frame.
            let _ = feed.send(frame);
        }
    }

    /// Handles the answer of a request that has finished, without waiting. One that cannot
    /// be read yet (the task's budget ran out) is read on the next frame, or by `finish`.
    fn reap_now(&mut self) {
        let outcome = match &mut self.state {
            State::Open { request, .. } => {
                match futures_util::FutureExt::now_or_never(&mut request.0) {
                    Some(outcome) => outcome,
                    None => return,
                }
            }
            State::Stopped => return,
        };
        self.state = State::Stopped;
        let next = self.judge(outcome);
        self.follow(next, false);
    }

    /// Waits for the running request (and any it is replaced by) to end.
    async fn settle(&mut self) {
        loop {
            let State::Open { request, .. } = std::mem::replace(&mut self.state, State::Stopped)
            else {
                return;
            };
            let mut request = request;
            let outcome = (&mut request.0).await;
            let next = self.judge(outcome);
            if matches!(next, Next::Done) {
                return;
            }
            self.follow(next, true);
        }
    }

    /// What a finished request's outcome means for the relay.
    fn judge(
        &mut self,
        outcome: Result<Result<RelayAck, GatewayError>, tokio::task::JoinError>,
    ) -> Next {
        let job = &self.job_id;
        match outcome {
            Ok(Ok(ack)) => {
                // A request that got frames through is not part of a run of failures: the
                // retry budget is for a gateway that takes nothing (it restarts, or is gone).
                if ack.next_seq > self.acked {
                    self.retries = 0;
                }
                self.acked = ack.next_seq;
                // The gateway's `next_seq` counts chunks: the end frame (the last, at
                // `seq` = the number of chunks) does not move it. An `accepted` answer to a
                // body that ended with that frame, with every chunk taken, is the whole stream.
                let chunks = self.frames.iter().filter(|frame| !frame.end).count() as u64;
                let ended = self.frames.last().is_some_and(|frame| frame.end);
                match ack.outcome {
                    RelayOutcome::Accepted if ended && ack.next_seq >= chunks => Next::Done,
                    // Taken so far, but the request ended short of the stream's end.
                    RelayOutcome::Accepted | RelayOutcome::Gap => {
                        Next::Resend { from: ack.next_seq }
                    }
                    RelayOutcome::Stale | RelayOutcome::Cancelled => {
                        tracing::debug!(%job, outcome = ?ack.outcome, "the gateway stopped the relay");
                        Next::Done
                    }
                }
            }
            Ok(Err(GatewayError::Rejected { status: 404, .. })) => {
                // Remembered by the client: later relayed jobs run unstreamed.
                Next::Done
            }
            Ok(Err(error @ GatewayError::Refused { .. })) => {
                tracing::warn!(%job, %error, "the gateway refused the relay");
                self.to.metrics.relay_failures.inc();
                Next::Done
            }
            Ok(Err(error)) => {
                tracing::debug!(%job, %error, "the relay request broke");
                Next::Resend { from: self.acked }
            }
            Err(error) => {
                tracing::debug!(%job, %error, "the relay request ended");
                Next::Resend { from: self.acked }
            }
        }
    }

    /// Reopens the request when the stream must be resent and tries remain; `ended`: the end
    /// frame is among those resent, so the new body closes after them.
    fn follow(&mut self, next: Next, ended: bool) {
        let Next::Resend { from } = next else {
            return;
        };
        let Some(delay) = RETRY_DELAYS.get(self.retries).copied() else {
            tracing::warn!(job = %self.job_id, "the relay to the gateway broke too often; the job is submitted whole");
            self.to.metrics.relay_failures.inc();
            return;
        };
        self.retries += 1;
        self.start(from, delay, ended);
    }

    /// Starts a request after `delay` whose body begins with the frames from `from` on.
    fn start(&mut self, from: u64, delay: Duration, ended: bool) {
        let (feed, frames) = mpsc::unbounded_channel();
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        for frame in self.frames.iter().skip(from) {
            let _ = feed.send(frame.clone());
        }
        let gateway = Arc::clone(&self.to.gateway);
        let (job_id, lease_id) = (self.job_id.clone(), self.lease_id.clone());
        let mode = self.to.mode;
        // Owned by `Request`, which aborts it on drop: the request is the body's reader, and
        // must run beside the job's own reads of the upstream.
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            match mode {
                RelayMode::Stream => gateway.relay(&job_id, &lease_id, body(frames)).await,
                RelayMode::Append => appends(&gateway, &job_id, &lease_id, frames).await,
            }
        });
        self.state = State::Open {
            feed: (!ended).then_some(feed),
            request: Request(task),
        };
    }
}

/// The request body: each frame as it comes, and the frames already waiting, up to
/// [`COALESCE`], in the same write.
fn body(frames: mpsc::UnboundedReceiver<Frame>) -> reqwest::Body {
    let stream = futures_util::stream::unfold(frames, |mut frames| async move {
        let first = frames.recv().await?.line;
        let mut write: Option<BytesMut> = None;
        for _ in 1..COALESCE {
            let Ok(more) = frames.try_recv() else {
                break;
            };
            write
                .get_or_insert_with(|| BytesMut::from(&first[..]))
                .extend_from_slice(&more.line);
        }
        let write = write.map_or(first, BytesMut::freeze);
        Some((Ok::<Bytes, std::io::Error>(write), frames))
    });
    reqwest::Body::wrap_stream(stream)
}

/// Append mode: posts the frames ready as one `content-length` request, at most every
/// [`APPEND_EVERY`] (the first at once), until the gateway took the end frame. Returns that
/// answer, or the first that is not `accepted`.
async fn appends(
    gateway: &GatewayClient,
    job_id: &JobId,
    lease_id: &LeaseId,
    mut frames: mpsc::UnboundedReceiver<Frame>,
) -> Result<RelayAck, GatewayError> {
    let mut last_post: Option<tokio::time::Instant> = None;
    loop {
        let Some(first) = frames.recv().await else {
            // Only a relay dropped before its end closes the feed, and that aborts this task.
            return Err(GatewayError::Failed {
                status: 0,
                message: "the relay ended without its end frame".to_owned(),
            });
        };
        if let Some(at) = last_post {
            tokio::time::sleep_until(at + APPEND_EVERY).await;
        }
        let mut ended = first.end;
        let mut body = BytesMut::from(&first.line[..]);
        while let Ok(more) = frames.try_recv() {
            ended |= more.end;
            body.extend_from_slice(&more.line);
        }
        last_post = Some(tokio::time::Instant::now());
        let ack = gateway
            .relay(job_id, lease_id, reqwest::Body::from(body.freeze()))
            .await?;
        if ended || ack.outcome != RelayOutcome::Accepted {
            return Ok(ack);
        }
    }
}

#[cfg(test)]
mod tests;
