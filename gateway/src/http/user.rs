//! The user API: submit, wait, read, list, poll, cancel, stream and models.

use super::endpoints::{Judged, parse_for};
use super::error::ApiError;
use super::policy;
use super::reply::{Body, Reply, StreamOptions};
use super::request::Request;
use super::wait::{wait_for_final, wait_with};
use super::{Ctx, State};
use crate::auth::Principal;
use crate::limits::openai_duration;

use crate::queue::{JobFilter, JobRecord, NewJob, Visibility, new_job_id};
use openbeepboop::{
    Endpoint, ErrorBody, JobList, JobStatus, Model, ModelList, PollEntry, PollRequest, PollResponse,
};
use std::time::Duration;

const DEFAULT_PAGE: usize = 20;
const MAX_PAGE: usize = 100;

/// `POST /v1/chat/completions`, `/v1/embeddings` and `/v1/completions`: each body is
/// judged by its endpoint's rules, then queued, waited and answered alike.
pub async fn submit(ctx: &Ctx<'_>, req: &Request, endpoint: Endpoint) -> Result<Reply, ApiError> {
    let judged = parse_for(endpoint, &req.body)?;
    let default_wait = Duration::from_secs(ctx.state.config.default_wait_seconds);
    let wait = submit_wait(ctx, req, judged.stream, default_wait)?;
    let payload = String::from_utf8(req.body.clone())
        .map_err(|_| ApiError::invalid("the request body is not valid UTF-8", None))?;
    let job = new_job(ctx, req, &judged, endpoint, new_job_id(), payload)?;
    admit(ctx)?;
    let priority = job.priority;
    let reply = match hold(ctx, req, job, wait, &judged).await? {
        Held::Streaming(reply) => reply,
        Held::Pending(record) => pending(&record),
        Held::Ended(record) => {
            let reply = finished(&record, judged.stream, judged.include_usage)?;
            if judged.stream {
                reply.header("x-obb-job-id", record.id.clone())
            } else {
                reply
            }
        }
    };
    Ok(admitted(reply, priority))
}

/// OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for the caller's key,
/// when it has a `requests_per_minute` or a `tokens_per_minute`: every answer to a user or
/// admin route carries them (`app` adds them), as OpenAI's do. A submit's are measured after
/// it took its request.
pub(super) fn rate_headers(
    state: &State,
    principal: Option<&Principal>,
) -> Vec<(&'static str, String)> {
    let Some(principal) = principal else {
        return Vec::new();
    };
    let mut headers = Vec::new();
    if let Some(per_minute) = principal.requests_per_minute {
        let budget = state
            .rates
            .peek(&principal.key_id, per_minute, std::time::Instant::now());
        headers.extend([
            ("x-ratelimit-limit-requests", budget.limit.to_string()),
            (
                "x-ratelimit-remaining-requests",
                budget.remaining.to_string(),
            ),
            ("x-ratelimit-reset-requests", openai_duration(budget.reset)),
        ]);
    }
    if let Some((limit, remaining, reset)) = state.queue.token_budget(&principal.key_id) {
        headers.extend([
            ("x-ratelimit-limit-tokens", limit.to_string()),
            ("x-ratelimit-remaining-tokens", remaining.to_string()),
            ("x-ratelimit-reset-tokens", openai_duration(reset)),
        ]);
    }
    headers
}

/// Takes one request from the caller's request rate, when its key has one (a submit, a
/// response create or a batch create: each request that makes work); a 429 with
/// `Retry-After` when it is spent.
pub(super) fn admit(ctx: &Ctx<'_>) -> Result<(), ApiError> {
    let Some((key, per_minute)) = ctx
        .principal
        .as_ref()
        .and_then(|p| Some((p.key_id.as_str(), p.requests_per_minute?)))
    else {
        return Ok(());
    };
    match ctx
        .state
        .rates
        .admit(key, per_minute, std::time::Instant::now())
    {
        Ok(_) => Ok(()),
        Err(budget) => {
            // Whole seconds, rounded up, as `Retry-After` says it.
            let retry_after = budget.retry_after.as_secs_f64().ceil() as u64;
            Err(ApiError::RateLimited {
                message: format!(
                    "key `{key}` made the {per_minute} requests it may make a minute (`requests_per_minute`); retry in {retry_after}s"
                ),
                retry_after,
                queue: false,
            })
        }
    }
}

/// Stores an admitted submit's job. A submit refused for the key's `max_queued_jobs` made
/// no work, so the request it took from `requests_per_minute` is given back.
async fn enqueue(ctx: &Ctx<'_>, job: NewJob) -> Result<(JobRecord, bool), ApiError> {
    stored(ctx, ctx.state.queue.enqueue(job).await)
}

/// An enqueue's answer, with the key's request given back when its queue was full.
fn stored(
    ctx: &Ctx<'_>,
    stored: Result<(JobRecord, bool), crate::queue::StoreError>,
) -> Result<(JobRecord, bool), ApiError> {
    if let (Err(crate::queue::StoreError::QueueFull { .. }), Some(principal)) =
        (&stored, ctx.principal.as_ref())
        && let Some(per_minute) = principal.requests_per_minute
    {
        ctx.state.rates.refund(&principal.key_id, per_minute);
    }
    Ok(stored?)
}

/// The header of an admitted submit: which priority the job got (the one asked for, the
/// key's default, or the earliest the key may have).
pub(super) fn admitted(reply: Reply, priority: u8) -> Reply {
    reply.header("x-obb-priority", priority.to_string())
}

/// How long a submit is held: `?wait` or `Prefer: wait`, else `default`. A stream is always
/// answered as a stream, never as a JSON 202: it is held up to `max_wait_seconds` even
/// when it asks for no wait.
pub(super) fn submit_wait(
    ctx: &Ctx<'_>,
    req: &Request,
    stream: bool,
    default: Duration,
) -> Result<Duration, ApiError> {
    let max_wait = Duration::from_secs(ctx.state.config.max_wait_seconds);
    Ok(match req.wait(max_wait)? {
        Some(wait) if stream && wait.is_zero() => max_wait,
        None if stream => max_wait,
        Some(wait) => wait,
        None => default,
    })
}

/// The job a judged submit makes, with the terms its headers and metadata ask for.
pub(super) fn new_job(
    ctx: &Ctx<'_>,
    req: &Request,
    judged: &Judged,
    endpoint: Endpoint,
    id: String,
    payload: String,
) -> Result<NewJob, ApiError> {
    let priorities = ctx
        .principal
        .as_ref()
        .map(|p| p.priorities)
        .unwrap_or_default();
    let terms = policy::Terms::of(req, judged.metadata.as_ref(), &ctx.state.config, priorities)?;
    Ok(NewJob {
        id,
        owner_key_id: ctx.principal_key_id().to_owned(),
        model: judged.model.clone(),
        endpoint,
        priority: terms.priority,
        request_hash: terms.request_hash,
        idempotency_key: terms.idempotency_key,
        request_id: Some(req.request_id.clone()),
        ttl: terms.ttl,
        max_queued: ctx.principal.as_ref().and_then(|p| p.max_queued_jobs),
        est_tokens: crate::limits::estimated_tokens(&payload),
        // Embeddings refuse `stream: true` at submit; everything else may stream.
        relay: judged.stream
            && matches!(
                endpoint,
                Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Responses
            )
            && ctx.state.config.stream_relay,
        payload,
    })
}

/// Where a held submit stands when its wait is over.
pub(super) enum Held {
    /// A stream whose job had not ended when its headers were due: the reply streams.
    Streaming(Reply),
    /// Not ended (a zero wait, or the wait ran out).
    Pending(JobRecord),
    /// Ended, in any final status.
    Ended(JobRecord),
}

/// Queues `job` and holds for up to `wait`. A stream's headers are due at its first
/// keep-alive; a job that ends before then is answered whole, with its real status.
pub(super) async fn hold(
    ctx: &Ctx<'_>,
    req: &Request,
    job: NewJob,
    wait: Duration,
    judged: &Judged,
) -> Result<Held, ApiError> {
    let options = StreamOptions {
        include_usage: judged.include_usage,
        after: None,
        progress: policy::flag(req, "X-OBB-Progress")?,
        cancel_on_disconnect: policy::flag(req, "X-OBB-Cancel-On-Disconnect")?,
    };
    if options.cancel_on_disconnect {
        // A waiter that leaves before its answer cancels the job (see `app`).
        ctx.disconnect.watch(&job.id);
    }
    if wait.is_zero() {
        let (record, _created) = enqueue(ctx, job).await?;
        return Ok(Held::Pending(record));
    }
    let deadline = tokio::time::Instant::now() + wait;
    let first_wait = if judged.stream && options.progress {
        // Its first `obb.queue` event is due at once, with the headers.
        Duration::ZERO
    } else if judged.stream {
        wait.min(Duration::from_secs(
            ctx.state.config.stream_keepalive_seconds,
        ))
    } else {
        wait
    };
    // Subscribed before the job exists, so the waiter needs no read to catch up with it.
    let watch = ctx.state.queue.notifier().watch_final(&job.id);
    // A relayed stream's headers go out with its first chunk, if that comes first.
    let mut relay = job.relay.then(|| ctx.state.relays.subscribe(&job.id, None));
    // Committed without an fsync, so that a node hears of the job one fsync sooner; the
    // sync starts at once beside it, and every answer below waits for it. (An answer with
    // the result comes after the result's own durable commit, which covers this one.)
    let (record, created) = stored(ctx, ctx.state.queue.enqueue_relaxed(job).await)?;
    let synced = ctx.state.queue.sync();
    let record = if created {
        let waiting = wait_with(ctx, record.clone(), watch, first_wait);
        match &mut relay {
            Some(cursor) => tokio::select! {
                waited = waiting => waited?,
                () = cursor.changed() => record,
            },
            None => waiting.await?,
        }
    } else {
        // An earlier submit with the same idempotency key made the job; wait on that one.
        drop(watch);
        wait_for_final(ctx, &record.id, first_wait).await?
    };
    synced.await?;
    if record.status.is_final() {
        return Ok(Held::Ended(record));
    }
    if !judged.stream {
        return Ok(Held::Pending(record));
    }
    Ok(Held::Streaming(streaming(
        ctx, &record.id, deadline, options,
    )))
}

/// The reply that streams job `id`'s events once it ends (keep-alives until then, up to
/// `deadline`); `x-obb-job-id` names the job.
pub(super) fn streaming(
    ctx: &Ctx<'_>,
    id: &str,
    deadline: tokio::time::Instant,
    options: StreamOptions,
) -> Reply {
    Reply {
        status: 200,
        headers: vec![
            ("cache-control", "no-cache".to_owned()),
            ("x-obb-job-id", id.to_owned()),
        ],
        body: Body::ChatStream {
            job_id: id.to_owned(),
            who: ctx.visibility(),
            deadline,
            options,
        },
    }
}

/// 202 with the job object: the job is not done (yet).
fn pending(record: &JobRecord) -> Reply {
    Reply::json(202, &record.to_wire())
        .header("location", format!("/v1/jobs/{}", record.id))
        .header("retry-after", "1".to_owned())
}

/// The answer to a waited submit: the completion, the job's error, or 202 when not done.
fn finished(record: &JobRecord, stream: bool, include_usage: bool) -> Result<Reply, ApiError> {
    let timing = |reply: Reply| {
        let queue_ms = record.locked_at.map(|at| at - record.created_at);
        let processing_ms = record
            .locked_at
            .zip(record.finished_at)
            .map(|(start, end)| end - start);
        let reply = match queue_ms {
            Some(ms) => reply.header("x-obb-queue-ms", ms.max(0).to_string()),
            None => reply,
        };
        match processing_ms {
            Some(ms) => reply.header("x-obb-processing-ms", ms.max(0).to_string()),
            None => reply,
        }
    };
    match (record.status, &record.result_payload) {
        (JobStatus::Completed, Some(result)) if stream => {
            Ok(timing(sse_replay(record.endpoint, result, include_usage)))
        }
        (JobStatus::Completed, Some(result)) => Ok(timing(Reply::raw(
            200,
            "application/json",
            result.clone().into_bytes(),
        ))),
        (status, _) if status.is_final() => Err(ApiError::job_failed(record)),
        _ => Ok(pending(record)),
    }
}

/// A finished completion replayed as the `text/event-stream` a streaming server sends.
fn sse_replay(endpoint: Endpoint, result: &str, include_usage: bool) -> Reply {
    Reply::raw(
        200,
        "text/event-stream",
        super::sse::replay(endpoint, result, include_usage).into_bytes(),
    )
    .header("cache-control", "no-cache".to_owned())
}

/// `GET /v1/jobs/{id}`, with an optional `?wait=`; `?include=request` adds the request, the
/// key and the run's times (see `Job`).
pub async fn get_job(ctx: &Ctx<'_>, req: &Request, id: &str) -> Result<Reply, ApiError> {
    let wait = req.wait(Duration::from_secs(ctx.state.config.max_wait_seconds))?;
    let record = match wait {
        Some(wait) if !wait.is_zero() => wait_for_final(ctx, id, wait).await?,
        _ => ctx.job(id).await?,
    };
    let mut wire = ctx.state.queue.wire_job(&record).await?;
    match req.query_param("include") {
        None | Some("") => {}
        Some("request") => {
            let (record, request) = ctx
                .state
                .queue
                .job_with_request(id.to_owned(), ctx.visibility())
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("job `{id}` not found")))?;
            let detail = record.to_wire_detail(Some(&request));
            (wire.key_id, wire.request, wire.node) = (detail.key_id, detail.request, detail.node);
            (wire.started_at, wire.finished_at) = (detail.started_at, detail.finished_at);
        }
        Some(other) => {
            return Err(ApiError::invalid(
                format!("`include` may be `request`; got `{other}`"),
                Some("include".to_owned()),
            ));
        }
    }
    let mut reply = Reply::json(200, &wire);
    if !record.status.is_final() {
        reply = reply.header("retry-after", "1".to_owned());
    }
    Ok(reply)
}

/// `GET /v1/jobs?status=&model=&batch_id=&key_id=&limit=&after=`: newest first. A job
/// seen with an admin key carries its `key_id`.
pub async fn list_jobs(ctx: &Ctx<'_>, req: &Request) -> Result<Reply, ApiError> {
    let filter = job_filter(req)?;
    let limit = super::request::page_limit(req, DEFAULT_PAGE, MAX_PAGE)?;
    let after = req.query_param("after").map(str::to_owned);
    let who = ctx.visibility();
    let admin = who == Visibility::All;
    let (page, has_more) = ctx.state.queue.list(who, filter, limit, after).await?;
    let data: Vec<_> = page
        .iter()
        .map(|record| {
            let mut wire = record.to_wire();
            if admin {
                wire.key_id = Some(record.owner_key_id.clone());
            }
            wire
        })
        .collect();
    Ok(Reply::json(
        200,
        &JobList {
            object: "list".to_owned(),
            first_id: data.first().map(|j| j.id.clone()),
            last_id: data.last().map(|j| j.id.clone()),
            has_more,
            data,
        },
    ))
}

/// The filters of `/v1/jobs` and its export: `status` (comma-separated), `model`,
/// `batch_id`, `key_id`, and `since`/`until` (Unix seconds, on `created_at`).
pub fn job_filter(req: &Request) -> Result<JobFilter, ApiError> {
    let statuses = match req.query_param("status").filter(|s| !s.is_empty()) {
        Some(list) => list
            .split(',')
            .map(|s| s.trim().parse::<JobStatus>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::invalid(e, Some("status".to_owned())))?,
        None => Vec::new(),
    };
    let text = |name: &str| {
        req.query_param(name)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let seconds = |name: &str| -> Result<Option<i64>, ApiError> {
        text(name)
            .map(|value| {
                value
                    .parse::<i64>()
                    .ok()
                    .and_then(|s| s.checked_mul(1000))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            format!("`{name}` must be Unix seconds; got `{value}`"),
                            Some(name.to_owned()),
                        )
                    })
            })
            .transpose()
    };
    Ok(JobFilter {
        statuses,
        model: text("model"),
        batch_id: text("batch_id"),
        key_id: text("key_id"),
        since: seconds("since")?,
        until: seconds("until")?,
    })
}

/// `POST /v1/results/poll`.
pub async fn poll(ctx: &Ctx<'_>, req: &Request) -> Result<Reply, ApiError> {
    let request: PollRequest = if req.body.iter().all(u8::is_ascii_whitespace) {
        PollRequest::default()
    } else {
        req.json()?
    };
    let max = ctx.state.config.max_poll_ids;
    if request.ids.len() > max {
        return Err(ApiError::invalid(
            format!(
                "`ids` has {} entries; at most {max} are allowed per poll",
                request.ids.len()
            ),
            Some("ids".to_owned()),
        ));
    }
    let jobs = if request.ids.is_empty() {
        let finished = vec![
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Cancelled,
            JobStatus::Expired,
        ];
        let filter = JobFilter {
            statuses: finished,
            ..JobFilter::default()
        };
        let (page, _) = ctx
            .state
            .queue
            .list(ctx.visibility(), filter, MAX_PAGE, None)
            .await?;
        page.iter()
            .map(|r| PollEntry::Found(Box::new(r.to_wire())))
            .collect()
    } else {
        let found = ctx
            .state
            .queue
            .jobs(
                request.ids.iter().map(ToString::to_string).collect(),
                ctx.visibility(),
            )
            .await?;
        request
            .ids
            .iter()
            .map(|id| match found.iter().find(|r| *id == r.id.as_str()) {
                Some(record) => PollEntry::Found(Box::new(record.to_wire())),
                None => PollEntry::NotFound {
                    id: id.clone(),
                    status: openbeepboop::job::NotFound::NotFound,
                    error: ErrorBody::new(format!("job `{id}` not found"), "invalid_request_error")
                        .with_code("not_found"),
                },
            })
            .collect()
    };
    Ok(Reply::json(200, &PollResponse { jobs }))
}

/// `POST /v1/jobs/{id}/cancel`.
pub async fn cancel(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    let record = ctx
        .state
        .queue
        .cancel(id.to_owned(), ctx.visibility())
        .await?;
    Ok(Reply::json(200, &record.to_wire()))
}

/// `GET /v1/jobs/{id}/stream`: checks the job exists, then streams its events and its
/// relayed chunks (`event: chunk`). With `?format=openai` it streams exactly what the
/// job's `stream: true` submit answers, which is how a client resumes that stream. Both
/// resume after `?starting_after=N` or `Last-Event-ID: N`.
pub async fn stream(ctx: &Ctx<'_>, req: &Request, id: &str) -> Result<Reply, ApiError> {
    let after = req.resume_after()?;
    match req.query_param("format") {
        None | Some("events") => {
            ctx.job(id).await?;
            Ok(Reply {
                status: 200,
                headers: vec![("cache-control", "no-cache".to_owned())],
                body: Body::JobEvents {
                    job_id: id.to_owned(),
                    who: ctx.visibility(),
                    after,
                },
            })
        }
        Some("openai") => {
            let (_, payload) = ctx
                .state
                .queue
                .job_with_request(id.to_owned(), ctx.visibility())
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("job `{id}` not found")))?;
            let include_usage = serde_json::from_str::<serde_json::Value>(&payload)
                .ok()
                .and_then(|body| body.pointer("/stream_options/include_usage")?.as_bool())
                .unwrap_or(false);
            let max_wait = Duration::from_secs(ctx.state.config.max_wait_seconds);
            let deadline = tokio::time::Instant::now() + max_wait;
            let options = StreamOptions {
                include_usage,
                after,
                progress: policy::flag(req, "X-OBB-Progress")?,
                cancel_on_disconnect: false,
            };
            Ok(streaming(ctx, id, deadline, options))
        }
        Some(other) => Err(ApiError::invalid(
            format!("`format` must be `events` or `openai`, not `{other}`"),
            Some("format".to_owned()),
        )),
    }
}

/// `GET /v1/models`: what live nodes serve, in OpenAI's list shape.
pub async fn models(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let alive = Duration::from_secs(ctx.state.config.node_alive_seconds);
    let models = ctx.state.queue.live_models(alive).await?;
    Ok(Reply::json(
        200,
        &ModelList {
            object: "list".to_owned(),
            data: models.into_iter().map(model_object).collect(),
        },
    ))
}

/// `GET /v1/models/{model}`: the model object when a live node serves it, else 404
/// `model_not_found`, as OpenAI answers `models.retrieve()`.
pub async fn model(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    let alive = Duration::from_secs(ctx.state.config.node_alive_seconds);
    let models = ctx.state.queue.live_models(alive).await?;
    match models.into_iter().find(|m| m == id) {
        Some(id) => Ok(Reply::json(200, &model_object(id))),
        None => Err(ApiError::ModelNotFound(id.to_owned())),
    }
}

fn model_object(id: String) -> Model {
    Model {
        id,
        object: "model".to_owned(),
        created: 0,
        owned_by: "openbeepboop".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use std::time::Duration;

    proptest! {
        #[test]
        fn wait_values_parse_only_within_a_day(text in ".{0,24}") {
            if let Ok(wait) = super::super::request::parse_seconds(&text, "wait") {
                prop_assert!(wait <= Duration::from_secs(86_400));
            }
        }
    }
}
