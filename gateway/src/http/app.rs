//! The pingora application: a connection's requests (keep-alive, pipelining, half-close),
//! routing and authentication, and writing each reply. Handlers live beside it.

use super::error::ApiError;
use super::reply::{Body, Reply};
use super::request::Request;
use super::routes::{self, Route};
use super::wait::{Disconnect, Waited};
use super::{
    Ctx, State, admin, batches, body, cors, dashboard, export, files, framing, node, operations,
    relay_in, responses, sse, ui, upload, user,
};
use crate::queue::Visibility;
use async_trait::async_trait;
use bytes::Bytes;
use openbeepboop::Endpoint;
use pingora::apps::{HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The pingora application.
pub struct App {
    state: Arc<State>,
}

/// What [`App::handle`] gives back: the route's name, the time spent waiting, the answer,
/// and the caller's rate limit headers.
type Handled = (
    &'static str,
    Duration,
    Result<Reply, ApiError>,
    Vec<(&'static str, String)>,
);

impl App {
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }

    /// Routes and runs a request. Returns the route's name, the time spent waiting, and the
    /// caller's rate limit headers for the answer, whatever it is.
    async fn handle(
        &self,
        req: &Request,
        shutdown: &ShutdownWatch,
        peer_is_loopback: bool,
        disconnect: &Disconnect,
    ) -> Handled {
        let route = match routes::resolve(&req.method, &req.path) {
            Ok(route) => route,
            Err(e) => return ("unknown", Duration::ZERO, Err(e), Vec::new()),
        };
        let waited = Waited::default();
        let mut rate_headers = Vec::new();
        let result = self
            .dispatch(
                &route,
                req,
                (shutdown, peer_is_loopback),
                (&waited, disconnect),
                &mut rate_headers,
            )
            .await;
        (route.name(), waited.total(), result, rate_headers)
    }

    async fn dispatch(
        &self,
        route: &Route,
        req: &Request,
        (shutdown, peer_is_loopback): (&ShutdownWatch, bool),
        (waited, disconnect): (&Waited, &Disconnect),
        rate_headers: &mut Vec<(&'static str, String)>,
    ) -> Result<Reply, ApiError> {
        let principal = match route.roles() {
            None => None,
            Some(roles) => {
                let principal = self
                    .state
                    .auth
                    .authenticate(&self.state.queue, req.header("authorization"))
                    .await?;
                principal.require(roles)?;
                Some(principal)
            }
        };
        // Decoded only now: a stranger must not be able to make the gateway inflate.
        let decoded = match principal {
            Some(_) => {
                let limit = self.state.config.body_limit(*route == Route::NodeSubmit);
                body::decoded(req, limit).await?
            }
            None => None,
        };
        let req = decoded.as_ref().unwrap_or(req);
        let ctx = Ctx {
            state: &self.state,
            principal,
            shutdown: shutdown.clone(),
            peer_is_loopback,
            waited,
            disconnect,
        };
        let result = self.route(&ctx, route, req).await;
        // Measured after the route ran, so that a submit's headers count the submit.
        *rate_headers = user::rate_headers(&self.state, ctx.principal.as_ref());
        result
    }

    /// `GET /metrics`: open on loopback; elsewhere it needs the metrics token when one is set.
    async fn metrics(&self, ctx: &Ctx<'_>, req: &Request) -> Result<Reply, ApiError> {
        if let Some(token) = &self.state.config.metrics_token
            && !ctx.peer_is_loopback
        {
            let given = req
                .header("authorization")
                .and_then(|h| h.strip_prefix("Bearer "))
                .map(str::trim);
            if given != Some(token.as_str()) {
                return Err(crate::auth::Refusal::Invalid.into());
            }
        }
        let alive = Duration::from_secs(self.state.config.node_alive_seconds);
        let snapshot = self.state.queue.snapshot(alive).await?;
        Ok(Reply::raw(
            200,
            "text/plain; version=0.0.4",
            self.state
                .metrics
                .render(&snapshot, self.state.relays.stats()),
        ))
    }

    async fn route(&self, ctx: &Ctx<'_>, route: &Route, req: &Request) -> Result<Reply, ApiError> {
        match route {
            Route::Health => Ok(Reply::json(200, &serde_json::json!({"status": "ok"}))),
            Route::Metrics => self.metrics(ctx, req).await,
            Route::Submit(Endpoint::Responses) => responses::create(ctx, req).await,
            Route::Submit(endpoint) => user::submit(ctx, req, *endpoint).await,
            Route::GetResponse(id) => responses::retrieve(ctx, req, id).await,
            Route::CancelResponse(id) => responses::cancel(ctx, id).await,
            Route::DeleteResponse(id) => responses::delete(ctx, id).await,
            Route::ResponseInputItems(id) => responses::input_items(ctx, req, id).await,
            Route::ListJobs => user::list_jobs(ctx, req).await,
            Route::GetJob(id) => user::get_job(ctx, req, id).await,
            Route::CancelJob(id) => user::cancel(ctx, id).await,
            Route::StreamJob(id) => user::stream(ctx, req, id).await,
            Route::Poll => user::poll(ctx, req).await,
            Route::Models => user::models(ctx).await,
            Route::Model(id) => user::model(ctx, id).await,
            Route::Preflight { allowed } => Ok(cors::preflight(
                allowed,
                cors::allow_origin(&ctx.state.config.cors_allowed_origins, req.header("origin"))
                    .as_deref(),
                req.header("access-control-request-headers"),
            )),
            Route::Fetch => node::fetch(ctx, req).await,
            Route::Heartbeat => node::heartbeat(ctx, req).await,
            Route::NodeSubmit => node::submit(ctx, req).await,
            Route::CreateKey => admin::create(ctx, req).await,
            Route::ListKeys => admin::list(ctx).await,
            Route::RevokeKey(id) => admin::revoke(ctx, id).await,
            Route::KeyLimits(id) => admin::limits(ctx, id).await,
            Route::SetKeyLimits(id) => admin::set_limits(ctx, req, id).await,
            Route::ListFiles => files::list(ctx, req).await,
            Route::GetFile(id) => files::get(ctx, id).await,
            Route::DeleteFile(id) => files::delete(ctx, id).await,
            Route::FileContent(id) => files::content(ctx, id).await,
            Route::CreateBatch => batches::create(ctx, req).await,
            Route::ListBatches => batches::list(ctx, req).await,
            Route::GetBatch(id) => batches::get(ctx, id).await,
            Route::CancelBatch(id) => batches::cancel(ctx, id).await,
            Route::Ui(file) => ui::serve(file),
            Route::Whoami => dashboard::whoami(ctx),
            Route::Overview => dashboard::get_overview(ctx).await,
            Route::DashboardEvents => Ok(dashboard::events(ctx)),
            Route::ExportJobs => export::start(ctx, req),
            Route::RetryJobs => operations::retry_matching(ctx, req).await,
            Route::RetryJob(id) => operations::retry(ctx, id).await,
            Route::SetPriority(id) => operations::set_priority(ctx, req, id).await,
            Route::ListNodes => operations::nodes(ctx).await,
            Route::DrainNode(id, draining) => operations::drain(ctx, id, *draining).await,
            Route::RemoveNode(id) => operations::remove(ctx, id).await,
            // Taken before their bodies are read, in `process_new_http`.
            Route::CreateFile | Route::NodeStream => Err(ApiError::Internal(
                "a streamed body reached the buffered request path".to_owned(),
            )),
        }
    }
}

impl App {
    /// Cancels the job of a client that left and asked for that
    /// (`X-OBB-Cancel-On-Disconnect: true`). Its own job, so no visibility check is needed.
    async fn cancel_abandoned(&self, job: String) {
        match self.state.queue.cancel(job.clone(), Visibility::All).await {
            Ok(_) => tracing::info!(job = %job, "cancelled: its client left and asked for that"),
            Err(error) => {
                tracing::debug!(job = %job, error = %error.detail(), "no cancel on disconnect")
            }
        }
    }

    fn stream<'a>(
        &'a self,
        job_id: &'a str,
        who: &'a Visibility,
        shutdown: &'a ShutdownWatch,
        request_id: &'a str,
    ) -> sse::Stream<'a> {
        sse::Stream {
            state: &self.state,
            job_id,
            who,
            shutdown,
            request_id,
        }
    }
}

/// The caller's `x-request-id` when it is sane, else a new one.
fn request_id(session: &ServerSession) -> String {
    session
        .req_header()
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(
            || format!("req_{}", uuid::Uuid::new_v4().simple()),
            str::to_owned,
        )
}

fn parse_request(session: &ServerSession, body: Vec<u8>, request_id: String) -> Request {
    let header = session.req_header();
    let query = header
        .uri
        .query()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let headers = header
        .headers
        .iter()
        .filter_map(|(name, value)| {
            value
                .to_str()
                .ok()
                .map(|v| (name.as_str().to_ascii_lowercase(), v.to_owned()))
        })
        .collect();
    Request {
        method: header.method.as_str().to_owned(),
        path: header.uri.path().to_owned(),
        query,
        headers,
        body,
        request_id,
    }
}

pub(super) fn response_header(
    status: u16,
    headers: &[(&'static str, String)],
    request_id: &str,
) -> Option<Box<ResponseHeader>> {
    let mut header = ResponseHeader::build(status, Some(headers.len() + 3)).ok()?;
    header.insert_header("x-request-id", request_id).ok()?;
    for (name, value) in headers {
        header.append_header(*name, value.as_str()).ok()?;
    }
    Some(Box::new(header))
}

async fn write_full(
    session: &mut ServerSession,
    reply: &Reply,
    content_type: &str,
    bytes: Vec<u8>,
    request_id: &str,
) -> bool {
    let Some(mut header) = response_header(reply.status, &reply.headers, request_id) else {
        return false;
    };
    if reply.status == 204 {
        // A 204 has no content, and must not say how long it is (RFC 9110 §8.6).
        return session.write_response_header(header).await.is_ok()
            && session
                .write_response_body(Bytes::new(), true)
                .await
                .is_ok();
    }
    // pingora adds no Content-Length; without it a keep-alive client cannot find the end.
    if header.insert_header("content-type", content_type).is_err()
        || header
            .insert_header("content-length", bytes.len().to_string())
            .is_err()
    {
        return false;
    }
    session.write_response_header(header).await.is_ok()
        && session
            .write_response_body(Bytes::from(bytes), true)
            .await
            .is_ok()
}

#[async_trait]
impl HttpServerApp for App {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let started = Instant::now();
        let reused = session.take_connection_user_context().is_some();
        // Every step's future is boxed: the connection's own future then holds only the
        // state of the step it is in, which for a held request is the small wait (10,000
        // held requests are 10,000 of these; docs/BENCHMARKS.md, memory per held connection).
        let head = tokio::time::timeout(framing::head_deadline(reused), session.read_request());
        match Box::pin(head).await {
            Ok(Ok(true)) => {}
            Ok(Err(e)) if matches!(e.etype(), pingora::ErrorType::InvalidHTTPHeader) => {
                // A head pingora could not accept: answer once (RFC 9112 asks for 400), close.
                let error = framing::refused_head(&e);
                tracing::debug!(error = %e, "refused a request head");
                self.state.metrics.record_request(
                    "unknown",
                    error.status(),
                    Some(error.label()),
                    started.elapsed(),
                    Duration::ZERO,
                );
                Box::pin(body::refuse(&mut session, &error)).await;
                return None;
            }
            // A closed, broken, idle or too slow connection: there is no one to answer.
            _ => return None,
        }
        let _in_flight = self.state.metrics.request_started();
        // Keep the connection only when the client wants to (HTTP/1.0, `Connection: close`)
        // and the gateway is not shutting down.
        let keepalive = !*shutdown.borrow() && session.get_keepalive().is_some();
        session.set_keepalive(keepalive.then_some(framing::KEEPALIVE_SECONDS));
        // Pipelined requests are answered in order, each after the one before (RFC 9112
        // §9.3.2), instead of closing the connection on them.
        session.set_pipelining_enabled(true);
        // A half-closed client still reads its answer (RFC 9112 §9.6). A long-poll instead
        // ends when its client closes: a node that gave up on a fetch must not be handed jobs
        // it will never see, and an abandoned wait should not hold on to its end.
        session.set_abort_on_close(body::is_long_poll(&session));
        let id = request_id(&session);
        let peer_is_loopback = session
            .client_addr()
            .and_then(|addr| addr.as_inet())
            .is_some_and(|addr| addr.ip().is_loopback());
        let streamed = match routes::resolve(
            session.req_header().method.as_str(),
            session.req_header().uri.path(),
        ) {
            Ok(route @ (Route::CreateFile | Route::NodeStream)) => Some(route),
            _ => None,
        };
        let (route, waited, result, rate_headers) = if streamed == Some(Route::NodeStream) {
            // A relayed stream is read as it comes, for as long as its run lasts.
            let result = Box::pin(relay_in::receive(&self.state, &mut session)).await;
            if result.is_err() || !session.is_body_done() {
                // The body may be left unread.
                session.set_keepalive(None);
            }
            ("node_stream", Duration::ZERO, result, Vec::new())
        } else if streamed.is_some() {
            // An upload streams its body to disk as it reads it, never whole.
            let result = Box::pin(upload::receive(
                &self.state,
                &mut session,
                self.state.config.max_batch_file_bytes,
            ))
            .await;
            if result.is_err() {
                // The body may be left unread.
                session.set_keepalive(None);
            }
            ("create_file", Duration::ZERO, result, Vec::new())
        } else {
            match Box::pin(body::receive(&self.state, &mut session)).await {
                Ok(body) => {
                    let req = parse_request(&session, body, id.clone());
                    let disconnect = Disconnect::default();
                    let mut handling =
                        Box::pin(self.handle(&req, shutdown, peer_is_loopback, &disconnect));
                    // A long-poll must end when its client leaves: a node that gave up on a
                    // fetch must not be handed jobs it will never see.
                    tokio::select! {
                        handled = &mut handling => handled,
                        _ = Box::pin(session.read_body_or_idle(true)) => {
                            tracing::debug!(request_id = %id, "client went away before the answer");
                            if let Some(job) = disconnect.take() {
                                self.cancel_abandoned(job).await;
                            }
                            return None;
                        }
                    }
                }
                Err(e) => ("unknown", Duration::ZERO, Err(e), Vec::new()),
            }
        };
        let mut error_kind = None;
        let mut reply = result.unwrap_or_else(|error| {
            // Only the gateway's own failures are errors; a failed job or a full store is not.
            if error.is_fault() {
                tracing::error!(request_id = %id, error = %error, "request failed");
            }
            error_kind = Some(error.label());
            Reply::error(&error)
        });
        reply.headers.extend(rate_headers);
        // A preflight carries its own CORS headers; every other answer to an allowed
        // origin, errors included, lets the page read it.
        if route != "preflight" {
            reply = cors::answer(
                reply,
                &self.state.config.cors_allowed_origins,
                body::header(&session, "origin"),
            );
        }
        let status = reply.status;
        let head = session.req_header().method == http::Method::HEAD;
        let written = if let Body::File { file, len } = &mut reply.body {
            Box::pin(files::write_content(
                &mut session,
                (reply.status, &reply.headers),
                file,
                *len,
                &id,
                head,
            ))
            .await
        } else {
            match &reply.body {
                // Written above, where the file can be read.
                Body::File { .. } => false,
                Body::Full {
                    content_type,
                    bytes,
                } => {
                    Box::pin(write_full(
                        &mut session,
                        &reply,
                        content_type,
                        bytes.clone(),
                        &id,
                    ))
                    .await
                }
                // Nothing of a stream is sent to HEAD, so nothing would notice its client leave.
                Body::JobEvents { .. }
                | Body::ChatStream { .. }
                | Body::Dashboard { .. }
                | Body::Export { .. }
                    if head =>
                {
                    Box::pin(sse::headers_only(&mut session, &reply, &id)).await
                }
                Body::JobEvents { job_id, who, after } => {
                    let stream = self.stream(job_id, who, shutdown, &id);
                    Box::pin(stream.job_events(&mut session, &reply, *after)).await
                }
                Body::ChatStream {
                    job_id,
                    who,
                    deadline,
                    options,
                } => {
                    let stream = self.stream(job_id, who, shutdown, &id);
                    Box::pin(stream.chat(&mut session, &reply, *deadline, *options)).await
                }
                Body::Dashboard { who } => {
                    Box::pin(dashboard::feed(
                        &self.state,
                        &mut session,
                        &reply,
                        who,
                        shutdown,
                        &id,
                    ))
                    .await
                }
                Body::Export { who, filter } => {
                    Box::pin(export::write(
                        &self.state,
                        &mut session,
                        &reply,
                        (who, filter),
                        shutdown,
                        &id,
                    ))
                    .await
                }
            }
        };
        let header = session.req_header();
        let ms = started.elapsed().as_millis() as u64;
        // Nodes' fetches, heartbeats and submits are machine traffic with their own
        // metrics: at `debug`, so that the log shows what users did, not every long-poll.
        if route.starts_with("node_") {
            tracing::debug!(request_id = %id, method = %header.method, path = header.uri.path(), route, status, ms, "request");
        } else {
            tracing::info!(request_id = %id, method = %header.method, path = header.uri.path(), route, status, ms, "request");
        }
        self.state
            .metrics
            .record_request(route, status, error_kind, started.elapsed(), waited);
        if !written {
            return None;
        }
        let mut persistent = pingora::apps::HttpPersistentSettings::for_session(&session);
        persistent.set_user_context(Box::new(framing::Reused));
        match Box::pin(session.finish()).await {
            Ok(Some(stream)) => Some(ReusedHttpStream::from_reusable_stream(stream, persistent)),
            _ => None,
        }
    }
}
