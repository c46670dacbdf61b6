//! `GET /v1/jobs/export`: the caller's jobs (an admin's: everyone's) of a filter as NDJSON,
//! one job a line, oldest first, with its request, key and run times, for loading into a
//! data lake. Read a page at a time and written as it is read: memory stays flat whatever
//! the export's size.

use super::error::ApiError;
use super::reply::{Body, Reply};
use super::request::Request;
use super::{Ctx, State, sse};
use crate::queue::{JobFilter, Visibility};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use std::time::Duration;

/// Jobs read and written at a time: a page holds up to this many requests and answers.
const PAGE: usize = 100;
/// Lines written at once when a page's lines reach this many bytes.
const FLUSH_BYTES: usize = 256 * 1024;

/// `GET /v1/jobs/export?status=&model=&batch_id=&key_id=&since=&until=`: the filters are
/// checked now, so a bad one is a 400 before any line is sent.
pub fn start(ctx: &Ctx<'_>, req: &Request) -> Result<Reply, ApiError> {
    let filter = super::user::job_filter(req)?;
    Ok(Reply {
        status: 200,
        headers: vec![(
            "content-disposition",
            "attachment; filename=\"jobs.ndjson\"".to_owned(),
        )],
        body: Body::Export {
            who: ctx.visibility(),
            filter,
        },
    })
}

/// Writes the export. A store failure or the gateway's shutdown midway ends the body
/// early, without its last chunk, so the client sees a broken transfer rather than a short
/// file that looks whole; so does a client that takes nothing for
/// `stream_write_timeout_seconds`.
pub async fn write(
    state: &State,
    session: &mut ServerSession,
    reply: &Reply,
    (who, filter): (&Visibility, &JobFilter),
    shutdown: &ShutdownWatch,
    request_id: &str,
) -> bool {
    let patience = Duration::from_secs(state.config.stream_write_timeout_seconds);
    session.set_write_timeout(Some(patience));
    if !sse::start_chunked(session, reply, request_id, "application/x-ndjson").await {
        return false;
    }
    let mut after = 0;
    loop {
        if *shutdown.borrow() {
            tracing::info!(request_id, "export cut short by the shutdown");
            return false;
        }
        let page = match state
            .queue
            .export_page(who.clone(), filter.clone(), after, PAGE)
            .await
        {
            Ok(page) => page,
            Err(error) => {
                tracing::error!(request_id, error = %error.detail(), "export failed midway");
                return false;
            }
        };
        let Some((last, _, _)) = page.last() else {
            return sse::end(session).await;
        };
        after = *last;
        let mut lines = Vec::with_capacity(FLUSH_BYTES);
        for (_, record, request) in &page {
            if serde_json::to_writer(&mut lines, &record.to_wire_detail(Some(request))).is_err() {
                return false;
            }
            lines.push(b'\n');
            if lines.len() >= FLUSH_BYTES && !sse::send(session, std::mem::take(&mut lines)).await {
                return false;
            }
        }
        if !lines.is_empty() && !sse::send(session, lines).await {
            return false;
        }
    }
}
