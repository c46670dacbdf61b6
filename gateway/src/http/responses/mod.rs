//! OpenAI's Responses API over the queue: `POST /v1/responses` makes a job whose id is the
//! response's (`resp_…`); `background: true` answers at once with the response `queued`,
//! otherwise the request is held up to `max_wait_seconds` like `?wait`. Retrieve, cancel,
//! delete and input items read or change that job; `object` builds the `response` object
//! and `events` its event stream, whole or live ([`Live`]).

mod events;
mod live;
mod object;

use super::Ctx;
use super::error::ApiError;
use super::reply::{Reply, StreamOptions};
use super::request::Request;
use super::user::{Held, admit, admitted, hold, new_job, streaming, submit_wait};
use crate::queue::{JobRecord, new_response_id};
use object::Request as Stored;
use openbeepboop::Endpoint;
use serde_json::{Value, json};
use std::time::Duration;

pub use events::relayed;
pub use live::{Live, Relayed, relay_after};
pub use object::present;

const DEFAULT_PAGE: usize = 20;
const MAX_PAGE: usize = 100;

/// Whether job `id` is a response's: their ids are `resp_…` (`new_response_id`), no other
/// job's are.
pub fn is_response(id: &str) -> bool {
    id.starts_with("resp_")
}

/// `POST /v1/responses`.
pub async fn create(ctx: &Ctx<'_>, req: &Request) -> Result<Reply, ApiError> {
    let (judged, mut request) = super::endpoints::parse_responses(&req.body)?;
    let background = request.get("background").and_then(Value::as_bool) == Some(true);
    let payload = match request
        .get("previous_response_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
    {
        Some(previous_id) => {
            continue_from(ctx, &previous_id, &mut request).await?;
            serde_json::to_string(&request)
                .map_err(|e| ApiError::Internal(format!("cannot serialise a request: {e}")))?
        }
        None => String::from_utf8(req.body.clone())
            .map_err(|_| ApiError::invalid("the request body is not valid UTF-8", None))?,
    };
    // Without `background`, OpenAI answers when the response is done: held like `?wait`.
    let max_wait = Duration::from_secs(ctx.state.config.max_wait_seconds);
    let default_wait = if background { Duration::ZERO } else { max_wait };
    let wait = submit_wait(ctx, req, judged.stream, default_wait)?;
    let job = new_job(
        ctx,
        req,
        &judged,
        Endpoint::Responses,
        new_response_id(),
        payload,
    )?;
    admit(ctx)?;
    let priority = job.priority;
    let reply = match hold(ctx, req, job, wait, &judged).await? {
        Held::Streaming(reply) => reply,
        Held::Pending(record) if background => Reply::json(200, &present(&record, &request)),
        Held::Pending(record) => Reply::json(202, &present(&record, &request))
            .header("location", format!("/v1/responses/{}", record.id))
            .header("retry-after", "1".to_owned()),
        Held::Ended(record) if judged.stream => stream_replay(&record, &request),
        Held::Ended(record)
            if background || record.status == openbeepboop::JobStatus::Completed =>
        {
            Reply::json(200, &present(&record, &request))
        }
        Held::Ended(record) => return Err(ApiError::job_failed(&record)),
    };
    Ok(admitted(reply, priority))
}

/// Expands `previous_response_id` into `request`'s input: 400 naming the field when the
/// response is not one of the caller's, or has not completed.
async fn continue_from(
    ctx: &Ctx<'_>,
    previous_id: &str,
    request: &mut Stored,
) -> Result<(), ApiError> {
    let refuse =
        |message: String| ApiError::invalid(message, Some("previous_response_id".to_owned()));
    let (previous, previous_request) = match response_job(ctx, previous_id).await {
        Ok(found) => found,
        Err(ApiError::NotFound(_)) => {
            return Err(refuse(format!(
                "previous response `{previous_id}` not found"
            )));
        }
        Err(other) => return Err(other),
    };
    object::expand(&previous, &previous_request, request).map_err(|refused| refuse(refused.0))
}

/// A job of `/v1/responses` the caller may see, with its request; anything else is a 404.
async fn response_job(ctx: &Ctx<'_>, id: &str) -> Result<(JobRecord, Stored), ApiError> {
    let missing = || ApiError::NotFound(format!("response `{id}` not found"));
    let (record, payload) = ctx
        .state
        .queue
        .job_with_request(id.to_owned(), ctx.visibility())
        .await?
        .ok_or_else(missing)?;
    if record.endpoint != Endpoint::Responses {
        return Err(missing());
    }
    let request = serde_json::from_str(&payload).unwrap_or_default();
    Ok((record, request))
}

/// The finished response as its event stream.
fn stream_replay(record: &JobRecord, request: &Stored) -> Reply {
    Reply::raw(
        200,
        "text/event-stream",
        events::replay(&present(record, request), None).into_bytes(),
    )
    .header("cache-control", "no-cache".to_owned())
    .header("x-obb-job-id", record.id.clone())
}

/// `GET /v1/responses/{id}`: the response in its current status. With `?stream=true`, its
/// event stream, held with keep-alives until it ends (up to `max_wait_seconds`), resumed
/// after the event `?starting_after=N` or `Last-Event-ID: N` names. A finished response
/// is replayed, unless a client resumes: its events may have been relayed live, which a
/// replay would not number alike, so the live stream answers it.
pub async fn retrieve(ctx: &Ctx<'_>, req: &Request, id: &str) -> Result<Reply, ApiError> {
    let (record, request) = response_job(ctx, id).await?;
    match req.query_param("stream") {
        None | Some("false") => Ok(Reply::json(200, &present(&record, &request))),
        Some("true") => {
            let after = req.resume_after()?;
            if record.status.is_final() && after.is_none() {
                return Ok(stream_replay(&record, &request));
            }
            let deadline = tokio::time::Instant::now()
                + Duration::from_secs(ctx.state.config.max_wait_seconds);
            let options = StreamOptions {
                after,
                ..StreamOptions::default()
            };
            Ok(streaming(ctx, &record.id, deadline, options))
        }
        Some(other) => Err(ApiError::invalid(
            format!("`stream` must be `true` or `false`, not `{other}`"),
            Some("stream".to_owned()),
        )),
    }
}

/// `POST /v1/responses/{id}/cancel`: the response, now `cancelled`; one that has ended is
/// a 409.
pub async fn cancel(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    let (_, request) = response_job(ctx, id).await?;
    let record = ctx
        .state
        .queue
        .cancel(id.to_owned(), ctx.visibility())
        .await?;
    Ok(Reply::json(200, &present(&record, &request)))
}

/// `DELETE /v1/responses/{id}`: cancelled first if it is still queued or running, then
/// gone. Answers OpenAI's `{"id", "object": "response", "deleted": true}`.
pub async fn delete(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    response_job(ctx, id).await?;
    let record = ctx
        .state
        .queue
        .delete(id.to_owned(), ctx.visibility())
        .await?;
    Ok(Reply::json(
        200,
        &json!({"id": record.id, "object": "response", "deleted": true}),
    ))
}

/// `GET /v1/responses/{id}/input_items`: the items the model was given, the conversation
/// of `previous_response_id` included, in OpenAI's list envelope, with `limit` (1–100,
/// default 20), `order` (`desc` by default, as OpenAI's) and `after` (an item id).
pub async fn input_items(ctx: &Ctx<'_>, req: &Request, id: &str) -> Result<Reply, ApiError> {
    let limit = super::request::page_limit(req, DEFAULT_PAGE, MAX_PAGE)?;
    let descending = super::request::descending(req)?;
    let (record, request) = response_job(ctx, id).await?;
    let mut items = object::input_items(&record.id, &request);
    if descending {
        items.reverse();
    }
    let start = match req.query_param("after") {
        Some(after) => {
            items
                .iter()
                .position(|item| item["id"] == after)
                .ok_or_else(|| {
                    ApiError::invalid(
                        format!("`after`: no input item `{after}` in response `{id}`"),
                        Some("after".to_owned()),
                    )
                })?
                + 1
        }
        None => 0,
    };
    let page: Vec<Value> = items.iter().skip(start).take(limit).cloned().collect();
    let has_more = start + page.len() < items.len();
    Ok(Reply::json(
        200,
        &json!({
            "object": "list",
            "first_id": page.first().map(|item| item["id"].clone()),
            "last_id": page.last().map(|item| item["id"].clone()),
            "has_more": has_more,
            "data": page,
        }),
    ))
}
