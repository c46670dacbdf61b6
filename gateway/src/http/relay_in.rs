//! `POST /internal/queue/stream`: a node relays a running job's chunks as its upstream
//! makes them. The body is NDJSON, one [`openbeepboop::RelayFrame`] per line, read as it
//! comes (a chunked body that lasts as long as the run) or in short appends; each chunk
//! goes to the job's relay (`crate::relay`) at once. The answer, when the body ends or at
//! the first refusal, is a [`RelayAck`].
//!
//! Fencing: the lease named by `x-obb-lease-id` must be the job's current one when the
//! stream opens, and stays so only until another lease opens the job's relay; a late
//! frame is answered `stale`, as a late result is. The run's first chunk marks the job
//! (`Queue::mark_relayed`), after which the run is never retried.

use super::error::ApiError;
use super::reply::Reply;
use super::routes::Route;
use super::{State, body};
use crate::queue::RelayLease;
use crate::relay::{Appended, Ingest, RelayEnd};
use bytes::{Bytes, BytesMut};
use openbeepboop::{RelayAck, RelayFrame, RelayOutcome};
use pingora::protocols::http::ServerSession;

/// Takes a relayed stream and answers with its [`RelayAck`]. On an error, or an answer
/// before the body's end, the body may be left unread, so the caller must not reuse the
/// connection.
pub async fn receive(state: &State, session: &mut ServerSession) -> Result<Reply, ApiError> {
    let roles = Route::NodeStream.roles().unwrap_or_default();
    body::authenticate_head(state, session, roles).await?;
    if let Some(coding) = body::header(session, "content-encoding")
        .filter(|c| !c.trim().eq_ignore_ascii_case("identity"))
    {
        return Err(ApiError::UnsupportedEncoding(coding.to_owned()));
    }
    let named = |name: &str| {
        body::header(session, name)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| ApiError::invalid(format!("the `{name}` header is required"), None))
    };
    let (job_id, lease_id) = (named("x-obb-job-id")?, named("x-obb-lease-id")?);
    let refused = match state
        .queue
        .relay_lease(job_id.clone(), lease_id.clone())
        .await?
    {
        RelayLease::Current => None,
        RelayLease::Stale => Some((RelayOutcome::Stale, "stale")),
        RelayLease::Cancelled => Some((RelayOutcome::Cancelled, "cancelled")),
    };
    if let Some((outcome, reason)) = refused {
        state.metrics.stream.refused(reason);
        return Ok(ack(outcome, 0));
    }
    body::send_continue(session).await?;
    let ingest = state.relays.open(&job_id, &lease_id);
    let relayed = Relayed {
        state,
        job_id: &job_id,
        lease_id: &lease_id,
        ingest: &ingest,
    };
    let outcome = relayed.read(session, state.config.max_body_bytes).await?;
    Ok(ack(outcome, ingest.next_seq()))
}

fn ack(outcome: RelayOutcome, next_seq: u64) -> Reply {
    Reply::json(200, &RelayAck { outcome, next_seq })
}

/// One open relayed stream.
struct Relayed<'a> {
    state: &'a State,
    job_id: &'a str,
    lease_id: &'a str,
    ingest: &'a Ingest,
}

impl Relayed<'_> {
    /// Reads frames until the body ends or one is refused.
    async fn read(
        &self,
        session: &mut ServerSession,
        max_line: usize,
    ) -> Result<RelayOutcome, ApiError> {
        let mut pending = BytesMut::new();
        loop {
            let read = session.read_request_body().await.map_err(|e| {
                // The node may reopen and resend from `next_seq`; until then, subscribers
                // wait for the job's end.
                self.ingest.finish(RelayEnd::Abandoned);
                ApiError::invalid(format!("the stream broke off: {e}"), None)
            })?;
            let Some(bytes) = read else {
                // A body that ends without `end` is an append: more may follow in another.
                return Ok(RelayOutcome::Accepted);
            };
            pending.extend_from_slice(&bytes);
            while let Some(at) = pending.iter().position(|&b| b == b'\n') {
                let line = pending.split_to(at + 1).freeze();
                if let Some(refused) = self.frame(line.slice(..at)).await? {
                    return Ok(refused);
                }
            }
            if pending.len() > max_line {
                return Err(ApiError::PayloadTooLarge { limit: max_line });
            }
        }
    }

    /// Takes one line; `Some` when the stream must stop with that outcome.
    async fn frame(&self, line: Bytes) -> Result<Option<RelayOutcome>, ApiError> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let metrics = &self.state.metrics.stream;
        let frame: RelayFrame<'_> = serde_json::from_slice(&line).map_err(|e| {
            metrics.refused("malformed");
            ApiError::invalid(format!("a relay frame is not valid: {e}"), None)
        })?;
        if let Some(chunk) = frame.chunk {
            // The chunk as a slice of the line it came in: no copy.
            let start = chunk.get().as_ptr() as usize - line.as_ptr() as usize;
            let chunk = line.slice(start..start + chunk.get().len());
            let appended = self.ingest.append(frame.seq, chunk);
            match appended {
                Appended::Kept { .. } => metrics.chunk(),
                Appended::Gap(_) => metrics.refused("gap"),
                Appended::Stale => metrics.refused("stale"),
                Appended::Duplicate => {}
            }
            let unmarked = match appended {
                Appended::Kept { unmarked } => unmarked,
                // A resend after a failed mark: the run relayed, and the store must know.
                Appended::Duplicate => self.ingest.needs_mark(),
                _ => false,
            };
            match appended {
                Appended::Kept { .. } | Appended::Duplicate if unmarked => {
                    // Sent to subscribers already: the mark never delays the first token.
                    match self
                        .state
                        .queue
                        .mark_relayed(self.job_id.to_owned(), self.lease_id.to_owned())
                        .await?
                    {
                        RelayLease::Current => self.ingest.marked(),
                        RelayLease::Stale => {
                            metrics.refused("stale");
                            return Ok(Some(RelayOutcome::Stale));
                        }
                        RelayLease::Cancelled => {
                            metrics.refused("cancelled");
                            return Ok(Some(RelayOutcome::Cancelled));
                        }
                    }
                }
                Appended::Kept { .. } | Appended::Duplicate => {}
                Appended::Gap(_) => return Ok(Some(RelayOutcome::Gap)),
                Appended::Stale => return Ok(Some(RelayOutcome::Stale)),
            }
        }
        if frame.end {
            // The end names the `seq` no chunk took: past the relay's next, chunks are missing.
            if frame.seq > self.ingest.next_seq() {
                metrics.refused("gap");
                return Ok(Some(RelayOutcome::Gap));
            }
            self.ingest.finish(RelayEnd::Complete);
        }
        Ok(None)
    }
}
