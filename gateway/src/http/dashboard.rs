//! The dashboard's own routes: who the key is, the overview, and the live feed of
//! `/v1/dashboard/events` (Server-Sent Events: `overview` every 2 s, `job` on every status
//! change the caller may see, `resync` after the feed fell behind). Shapes in
//! docs/design/dashboard.md.

use super::error::ApiError;
use super::reply::{Body, Reply};
use super::{Ctx, State, sse};
use crate::queue::{Change, Visibility, now_ms};
use openbeepboop::{DashboardJobEvent, Overview, WhoAmI};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How often the feed sends a fresh overview; it doubles as the keep-alive.
const OVERVIEW_EVERY: Duration = Duration::from_secs(2);

/// `GET /v1/dashboard/whoami`.
pub fn whoami(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let principal = ctx
        .principal
        .as_ref()
        .ok_or_else(|| ApiError::Internal("a keyed route without a caller".to_owned()))?;
    Ok(Reply::json(
        200,
        &WhoAmI {
            object: "dashboard.whoami".to_owned(),
            key_id: principal.key_id.clone(),
            name: principal.name.clone(),
            role: principal.role.as_db_str().to_owned(),
        },
    ))
}

/// The overview `who` may see: everything for an admin, their own jobs for a user.
pub async fn overview(state: &State, who: &Visibility) -> Result<Overview, ApiError> {
    let alive = Duration::from_secs(state.config.node_alive_seconds);
    Ok(Overview {
        object: "dashboard.overview".to_owned(),
        scope: match who {
            Visibility::All => "all",
            Visibility::Owner(_) => "own",
        }
        .to_owned(),
        generated_at: now_ms() / 1000,
        depth: state.queue.depth_of(who.clone()).await?,
        nodes_alive: state.queue.nodes_alive(alive).await?,
        last_hour: state.queue.last_hour(who),
    })
}

/// `GET /v1/dashboard/overview`.
pub async fn get_overview(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    Ok(Reply::json(
        200,
        &overview(ctx.state, &ctx.visibility()).await?,
    ))
}

/// `GET /v1/dashboard/events`: the headers now, the events in [`feed`].
pub fn events(ctx: &Ctx<'_>) -> Reply {
    Reply {
        status: 200,
        headers: vec![("cache-control", "no-cache".to_owned())],
        body: Body::Dashboard {
            who: ctx.visibility(),
        },
    }
}

/// One SSE event.
fn event(name: &str, data: &impl serde::Serialize) -> String {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".to_owned());
    format!("event: {name}\ndata: {data}\n\n")
}

fn visible(item: &Change, who: &Visibility) -> bool {
    match who {
        Visibility::All => true,
        Visibility::Owner(key) => &item.owner == key,
    }
}

/// Writes the feed until the client leaves or the gateway stops. Returns whether the
/// connection may be reused (it may not: the stream ends only with it).
pub async fn feed(
    state: &State,
    session: &mut ServerSession,
    reply: &Reply,
    who: &Visibility,
    shutdown: &ShutdownWatch,
    request_id: &str,
) -> bool {
    // Subscribed before the first overview, so no change falls between the two.
    let mut changes = state.queue.notifier().feed();
    let patience = Duration::from_secs(state.config.stream_write_timeout_seconds);
    session.set_write_timeout(Some(patience));
    if !sse::start_chunked(session, reply, request_id, "text/event-stream").await {
        return false;
    }
    let mut ticks = tokio::time::interval(OVERVIEW_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = shutdown.clone();
    loop {
        let text = tokio::select! {
            _ = ticks.tick() => match overview(state, who).await {
                Ok(overview) => event("overview", &overview),
                Err(error) => {
                    tracing::warn!(request_id, error = %error, "dashboard overview failed");
                    ": overview unavailable\n\n".to_owned()
                }
            },
            item = changes.recv() => match item {
                Ok(item) if visible(&item, who) => event("job", &DashboardJobEvent {
                    id: item.job_id.clone(),
                    status: item.status,
                    from: item.from,
                    model: item.model.clone(),
                    priority: item.priority,
                    batch_id: item.batch_id.clone(),
                }),
                Ok(_) => continue,
                Err(RecvError::Lagged(missed)) => event("resync", &serde_json::json!({"missed": missed})),
                Err(RecvError::Closed) => break,
            },
            _ = session.read_body_or_idle(true) => return false,
            _ = shutdown.changed() => break,
        };
        if !sse::send(session, text).await {
            return false;
        }
    }
    sse::end(session).await;
    false
}
