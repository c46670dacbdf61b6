//! Key management over HTTP, for admins.

use super::Ctx;
use super::error::ApiError;
use super::reply::Reply;
use super::request::Request;
use openbeepboop::{CreateKeyRequest, KeyLimits};
use serde_json::json;

/// `POST /admin/keys`: the only time the key's secret is shown.
pub async fn create(ctx: &Ctx<'_>, req: &Request) -> Result<Reply, ApiError> {
    let create: CreateKeyRequest = req.json()?;
    if create.name.trim().is_empty() || create.name.chars().count() > 128 {
        return Err(ApiError::invalid(
            "`name` must be 1 to 128 characters",
            Some("name".to_owned()),
        ));
    }
    let key = ctx.state.auth.mint().await?;
    let created = ctx
        .state
        .queue
        .create_key(key, create.name, create.role)
        .await?;
    Ok(Reply::json(201, &created))
}

/// `GET /admin/keys`.
pub async fn list(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let keys = ctx.state.queue.keys().await?;
    Ok(Reply::json(200, &json!({"object": "list", "data": keys})))
}

/// `DELETE /admin/keys/{id}`: effective at the next request made with the key.
pub async fn revoke(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    let key = ctx.state.queue.revoke_key(id.to_owned()).await?;
    ctx.state.auth.recheck(&ctx.state.queue).await?;
    Ok(Reply::json(200, &key))
}

/// `GET /admin/keys/{id}/limits`.
pub async fn limits(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    let limits = ctx.state.queue.key_limits(id.to_owned()).await?;
    Ok(Reply::json(200, &limits))
}

/// `PUT /admin/keys/{id}/limits`: replaces the key's limits (a field left out is no
/// limit), effective at the key's next request and its jobs' next lease.
pub async fn set_limits(ctx: &Ctx<'_>, req: &Request, id: &str) -> Result<Reply, ApiError> {
    let limits: KeyLimits = req.json()?;
    limits
        .check()
        .map_err(|(field, message)| ApiError::invalid(message, Some(field.to_owned())))?;
    let stored = ctx
        .state
        .queue
        .set_key_limits(id.to_owned(), limits)
        .await?;
    ctx.state.auth.recheck(&ctx.state.queue).await?;
    Ok(Reply::json(200, &stored))
}
