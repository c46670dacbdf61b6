//! Operators' routes: retry and reprioritize jobs, list, drain and forget nodes
//! (docs/design/dashboard.md). Admin keys only; the rules live in `queue`.

use super::Ctx;
use super::error::ApiError;
use super::reply::Reply;
use super::request::Request;
use crate::queue::JobFilter;
use openbeepboop::{BulkRetry, BulkRetryRequest, NodeDeleted, PriorityRequest};
use serde_json::json;
use std::time::Duration;

/// `POST /admin/jobs/{id}/retry`: the job, queued again.
pub async fn retry(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    let record = ctx.state.queue.retry(id.to_owned()).await?;
    Ok(Reply::json(200, &ctx.state.queue.wire_job(&record).await?))
}

/// `POST /admin/jobs/retry`: every job of the filter retried; answers how many.
pub async fn retry_matching(ctx: &Ctx<'_>, req: &Request) -> Result<Reply, ApiError> {
    let asked: BulkRetryRequest = if req.body.iter().all(u8::is_ascii_whitespace) {
        BulkRetryRequest::default()
    } else {
        req.json()?
    };
    if let Some(status) = asked.status.iter().find(|s| !crate::queue::retryable(**s)) {
        return Err(ApiError::invalid(
            format!("`status` may hold failed, expired and cancelled; got `{status}`"),
            Some("status".to_owned()),
        ));
    }
    let ms = |seconds: Option<i64>, name: &str| {
        seconds
            .map(|s| {
                s.checked_mul(1000).ok_or_else(|| {
                    ApiError::invalid(format!("`{name}` is out of range"), Some(name.to_owned()))
                })
            })
            .transpose()
    };
    let filter = JobFilter {
        statuses: asked.status,
        model: asked.model,
        batch_id: asked.batch_id,
        key_id: None,
        since: ms(asked.since, "since")?,
        until: ms(asked.until, "until")?,
    };
    let retried = ctx.state.queue.retry_matching(filter).await?;
    Ok(Reply::json(
        200,
        &BulkRetry {
            object: "jobs.retry".to_owned(),
            retried,
        },
    ))
}

/// `POST /admin/jobs/{id}/priority` `{"priority": 1..5}`.
pub async fn set_priority(ctx: &Ctx<'_>, req: &Request, id: &str) -> Result<Reply, ApiError> {
    let asked: PriorityRequest = req.json()?;
    if !(1..=5).contains(&asked.priority) {
        return Err(ApiError::invalid(
            format!("`priority` must be from 1 to 5; got {}", asked.priority),
            Some("priority".to_owned()),
        ));
    }
    let record = ctx
        .state
        .queue
        .set_priority(id.to_owned(), asked.priority)
        .await?;
    Ok(Reply::json(200, &ctx.state.queue.wire_job(&record).await?))
}

fn alive(ctx: &Ctx<'_>) -> Duration {
    Duration::from_secs(ctx.state.config.node_alive_seconds)
}

/// `GET /admin/nodes`.
pub async fn nodes(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let nodes = ctx.state.queue.nodes(alive(ctx)).await?;
    Ok(Reply::json(200, &json!({"object": "list", "data": nodes})))
}

/// `POST /admin/nodes/{id}/drain` and `…/undrain`: the node as it is now.
pub async fn drain(ctx: &Ctx<'_>, id: &str, draining: bool) -> Result<Reply, ApiError> {
    ctx.state
        .queue
        .set_draining(id.to_owned(), draining)
        .await?;
    tracing::info!(node = id, draining, "node drain changed by an admin");
    let node = ctx
        .state
        .queue
        .nodes(alive(ctx))
        .await?
        .into_iter()
        .find(|node| node.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("node `{id}` not found")))?;
    Ok(Reply::json(200, &node))
}

/// `DELETE /admin/nodes/{id}`: a node not seen within `node_alive_seconds` (409
/// `node_alive` otherwise).
pub async fn remove(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    ctx.state
        .queue
        .remove_node(id.to_owned(), alive(ctx))
        .await?;
    Ok(Reply::json(
        200,
        &NodeDeleted {
            id: id.to_owned(),
            object: "node.deleted".to_owned(),
            deleted: true,
        },
    ))
}
