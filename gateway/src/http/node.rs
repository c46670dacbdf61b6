//! The node API: lease with long-poll, heartbeat and result submission.

use super::Ctx;
use super::error::ApiError;
use super::reply::Reply;
use super::request::Request;
use super::wait;
use openbeepboop::{FetchRequest, FetchResponse, HeartbeatRequest, NodeResult, SubmitResponse};
use serde::Deserialize;
use std::time::Duration;
use tokio::time::Instant;

const MAX_LEASE_BATCH: u32 = 256;
const MAX_SUBMIT_BATCH: usize = 1000;

fn check_node_id(node_id: &str) -> Result<(), ApiError> {
    if node_id.trim().is_empty() || node_id.chars().count() > 128 {
        return Err(ApiError::invalid(
            "`node_id` must be 1 to 128 characters",
            Some("node_id".to_owned()),
        ));
    }
    Ok(())
}

/// `POST /internal/queue/fetch`. With `wait`, holds the request until a matching job is
/// queued (woken in-process by the writer) or the wait runs out.
pub async fn fetch(ctx: &Ctx<'_>, req: &Request) -> Result<Reply, ApiError> {
    let fetch: FetchRequest = req.json()?;
    check_node_id(fetch.node_id.as_str())?;
    if fetch.limit == 0 || fetch.limit > MAX_LEASE_BATCH {
        return Err(ApiError::invalid(
            format!("`limit` must be from 1 to {MAX_LEASE_BATCH}"),
            Some("limit".to_owned()),
        ));
    }
    if !fetch.wait.is_finite() || fetch.wait < 0.0 {
        return Err(ApiError::invalid(
            "`wait` must be a non-negative number of seconds",
            Some("wait".to_owned()),
        ));
    }
    let wait = Duration::from_secs_f64(fetch.wait.min(ctx.state.config.max_wait_seconds as f64));
    let deadline = Instant::now() + wait;
    let notifier = ctx.state.queue.notifier();
    let mut shutdown = ctx.shutdown.clone();
    loop {
        // Registered before leasing, so a job queued meanwhile still wakes this request.
        let queued = notifier.work_queued();
        tokio::pin!(queued);
        queued.as_mut().enable();
        let jobs = ctx
            .state
            .queue
            .lease_serving(
                fetch.node_id.to_string(),
                ctx.principal_key_id().to_owned(),
                fetch.models.clone(),
                fetch.served(),
                fetch.limit,
            )
            .await?;
        if !jobs.is_empty() || Instant::now() >= deadline || *shutdown.borrow() {
            let max_submit_bytes = Some(ctx.state.config.max_submit_bytes as u64);
            return Ok(Reply::json(
                200,
                &FetchResponse {
                    jobs,
                    max_submit_bytes,
                    draining: ctx.state.queue.is_draining(fetch.node_id.as_str()),
                },
            ));
        }
        // Whatever woke it, the loop leases again; the check above ends it.
        let work = async {
            queued.as_mut().await;
            Some(())
        };
        ctx.waiting(wait::until(work, Some(deadline), &mut shutdown))
            .await;
    }
}

/// `POST /internal/queue/heartbeat`.
pub async fn heartbeat(ctx: &Ctx<'_>, req: &Request) -> Result<Reply, ApiError> {
    let heartbeat: HeartbeatRequest = req.json()?;
    check_node_id(heartbeat.node_id.as_str())?;
    let response = ctx
        .state
        .queue
        .heartbeat(ctx.principal_key_id().to_owned(), heartbeat)
        .await?;
    Ok(Reply::json(200, &response))
}

/// The wrapped form of a submit body, `{"results": [...]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wrapped {
    results: Vec<NodeResult>,
}

/// `POST /internal/queue/submit`.
pub async fn submit(ctx: &Ctx<'_>, req: &Request) -> Result<Reply, ApiError> {
    // A bare list, as the spec writes it, or the wrapped form. Told apart by the first
    // byte, because results hold raw JSON that an untagged enum cannot buffer.
    let results = match req.body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => req.json::<Wrapped>()?.results,
        _ => req.json::<Vec<NodeResult>>()?,
    };
    if results.len() > MAX_SUBMIT_BATCH {
        return Err(ApiError::invalid(
            format!("at most {MAX_SUBMIT_BATCH} results per submit"),
            None,
        ));
    }
    for (index, item) in results.iter().enumerate() {
        if item.status == openbeepboop::NodeResultStatus::Completed && item.result.is_none() {
            return Err(ApiError::invalid(
                "a COMPLETED result needs `result`",
                Some(format!("[{index}].result")),
            ));
        }
    }
    let outcomes = ctx.state.queue.submit(results).await?;
    Ok(Reply::json(200, &SubmitResponse { results: outcomes }))
}
