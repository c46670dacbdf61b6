//! The HTTP edge: the only module that knows pingora and HTTP. It reads requests, routes
//! them, authenticates, calls handlers, and writes replies, including SSE streams.
//! Handlers parse and map errors; the rules live in `queue` and `auth`. This file holds
//! what every handler shares: [`State`] and a request's [`Ctx`]; the connection is `app`.

mod admin;
mod app;
mod batches;
mod body;
mod chat;
mod cors;
mod dashboard;
mod encoding;
mod endpoints;
pub mod error;
mod export;
mod files;
mod framing;
mod node;
mod operations;
mod policy;
mod relay_in;
mod reply;
mod request;
mod responses;
mod routes;
mod sse;
mod ui;
mod upload;
mod user;
mod wait;

pub use app::App;
pub use chat::parse_submit;
pub use endpoints::{Judged, parse_for};
pub use error::ERROR_LABELS;
pub use routes::ROUTE_NAMES;
pub use upload::parse_upload;

use crate::auth::{Authenticator, Principal};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::queue::{JobRecord, Queue, Visibility};
use error::ApiError;
use pingora::server::ShutdownWatch;
use std::sync::Arc;
use std::time::Instant;
use wait::Waited;

/// What every request shares.
pub struct State {
    pub queue: Arc<Queue>,
    pub auth: Authenticator,
    pub metrics: Arc<Metrics>,
    pub config: Config,
    /// The request rate of every key with a `requests_per_minute`.
    pub rates: crate::limits::RequestRate,
    /// Running jobs' live chunks (issue 18).
    pub relays: Arc<crate::relay::Relays>,
}

/// One request's context: the shared state, the caller, and the shutdown signal.
pub struct Ctx<'a> {
    pub state: &'a State,
    pub principal: Option<Principal>,
    pub shutdown: ShutdownWatch,
    /// Whether the caller is on this machine, which `GET /metrics` trusts.
    pub peer_is_loopback: bool,
    /// The request's time in long-poll waits; `App::handle` owns it and reports it.
    pub waited: &'a Waited,
    /// The job to cancel if the client leaves before the answer; `App` owns it.
    pub disconnect: &'a wait::Disconnect,
}

impl Ctx<'_> {
    /// Awaits `future`, counting the time as waiting rather than work.
    async fn waiting<T>(&self, future: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let output = future.await;
        self.waited.add(started.elapsed());
        output
    }

    fn principal_key_id(&self) -> &str {
        self.principal.as_ref().map_or("", |p| p.key_id.as_str())
    }

    /// Admins see every job; everyone else only their own.
    fn visibility(&self) -> Visibility {
        match &self.principal {
            Some(p) if p.role == openbeepboop::Role::Admin => Visibility::All,
            Some(p) => Visibility::Owner(p.key_id.clone()),
            None => Visibility::Owner(String::new()),
        }
    }

    /// A job the caller may see; another user's job is as absent as a missing one.
    async fn job(&self, id: &str) -> Result<JobRecord, ApiError> {
        self.state
            .queue
            .job(id.to_owned(), self.visibility())
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("job `{id}` not found")))
    }
}
