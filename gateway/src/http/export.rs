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

/// Jobs read and written at a time.
const PAGE: usize = 256;

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

/// Writes the export. A store failure midway ends the body early, without its last
/// chunk, so the client sees a broken transfer rather than a short file that looks whole.
pub async fn write(
    state: &State,
    session: &mut ServerSession,
    reply: &Reply,
    who: &Visibility,
    filter: &JobFilter,
    request_id: &str,
) -> bool {
    if !sse::start_chunked(session, reply, request_id, "application/x-ndjson").await {
        return false;
    }
    let mut after = 0;
    loop {
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
        let mut lines = Vec::with_capacity(page.len() * 512);
        for (_, record, request) in &page {
            if serde_json::to_writer(&mut lines, &record.to_wire_detail(Some(request))).is_err() {
                return false;
            }
            lines.push(b'\n');
        }
        if !sse::send(session, lines).await {
            return false;
        }
    }
}
