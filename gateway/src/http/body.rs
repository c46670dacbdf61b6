//! Reading a request after its head: `Expect: 100-continue`, the body within
//! `max_body_bytes`, and its `Content-Encoding`, undone only for an authenticated caller.
//! It also answers a head that could not be parsed. It decides nothing about routes beyond
//! what the headers alone settle.

use super::error::ApiError;
use super::request::Request;
use super::routes::{self, Route};
use super::{State, encoding, framing};
use crate::auth::Principal;
use bytes::Bytes;
use openbeepboop::Endpoint;
use pingora::protocols::http::ServerSession;

/// A request header's value, when it is text.
pub fn header<'a>(session: &'a ServerSession, name: &str) -> Option<&'a str> {
    session
        .req_header()
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
}

/// Reads the raw request body (still encoded). A client that sent `Expect: 100-continue`
/// is told to go on only when its headers pass (RFC 9110 §10.1.1); otherwise it gets the
/// final status at once and never sends the body. When the body is left unread, the
/// connection is not reused.
pub async fn receive(state: &State, session: &mut ServerSession) -> Result<Vec<u8>, ApiError> {
    if let Err(e) =
        framing::check_host(session).and_then(|()| framing::check_transfer_coding(session))
    {
        session.set_keepalive(None);
        return Err(e);
    }
    let node_submit = matches!(
        routes::resolve(
            session.req_header().method.as_str(),
            session.req_header().uri.path(),
        ),
        Ok(Route::NodeSubmit)
    );
    let limit = state.config.body_limit(node_submit);
    if expects_continue(session) {
        if let Err(refused) = admit(state, session, limit).await {
            session.set_keepalive(None);
            return Err(refused);
        }
        if let Err(e) = send_continue(session).await {
            session.set_keepalive(None);
            return Err(e);
        }
    }
    match read_body(session, limit).await {
        Ok(raw) => Ok(raw),
        Err(e) => {
            // The unread rest of the body makes the connection unusable.
            session.set_keepalive(None);
            Err(e)
        }
    }
}

/// The request with its body decoded, for a caller already authenticated: inflating is
/// work a stranger must not be able to ask for. It runs off the HTTP worker threads.
pub async fn decoded(req: &Request, limit: usize) -> Result<Option<Request>, ApiError> {
    let Some(coding) = req.header("content-encoding").map(str::to_owned) else {
        return Ok(None);
    };
    let raw = req.body.clone();
    let body = tokio::task::spawn_blocking(move || encoding::decode(Some(&coding), raw, limit))
        .await
        .map_err(|e| ApiError::Internal(format!("the decoding task failed: {e}")))??;
    Ok(Some(Request {
        body,
        ..req.clone()
    }))
}

/// Tells a client that sent `Expect: 100-continue` to send its body; nothing otherwise.
pub async fn send_continue(session: &mut ServerSession) -> Result<(), ApiError> {
    if !expects_continue(session) {
        return Ok(());
    }
    // Writing the `100` before the body is read must not cost the connection.
    session.set_close_on_response_before_downstream_finish(false);
    let continued = session.write_continue_response().await;
    session.set_close_on_response_before_downstream_finish(true);
    continued
        .map_err(|e| ApiError::invalid(format!("cannot answer `Expect: 100-continue`: {e}"), None))
}

/// For a route that streams its body: the framing rules and the caller's key, judged from
/// the head alone, before a byte of the body is read, so that a stranger cannot upload.
pub async fn authenticate_head(
    state: &State,
    session: &ServerSession,
    roles: &[openbeepboop::Role],
) -> Result<Principal, ApiError> {
    framing::check_host(session).and_then(|()| framing::check_transfer_coding(session))?;
    let principal = state
        .auth
        .authenticate(&state.queue, header(session, "authorization"))
        .await?;
    principal.require(roles)?;
    Ok(principal)
}

/// The body as a stream of chunks, for a parser that reads as it goes. It yields to the
/// runtime before each read, so that a consumer that polls until the stream is pending
/// (multer does) takes each chunk as it comes instead of the connection's whole backlog.
pub fn chunks(
    session: &mut ServerSession,
) -> impl futures_util::Stream<Item = Result<Bytes, Box<pingora::Error>>> + Send + '_ {
    futures_util::stream::unfold(Some(session), |session| async move {
        let session = session?;
        tokio::task::yield_now().await;
        match session.read_request_body().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some(session))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// Reads and drops what is left of a body, up to `max` bytes. Returns whether it ended,
/// which a connection needs to be reused.
pub async fn drain(session: &mut ServerSession, max: usize) -> bool {
    let mut left = max;
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) if chunk.len() <= left => left -= chunk.len(),
            Ok(None) => return true,
            _ => return false,
        }
    }
}

/// What can be judged from the headers alone: the declared size, the route, the key.
async fn admit(state: &State, session: &ServerSession, limit: usize) -> Result<(), ApiError> {
    if declared_length(session).is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let request = session.req_header();
    let route = routes::resolve(request.method.as_str(), request.uri.path())?;
    if let Some(roles) = route.roles() {
        state
            .auth
            .authenticate(&state.queue, header(session, "authorization"))
            .await?
            .require(roles)?;
    }
    Ok(())
}

/// A node fetch, a waited request (`?wait`, `Prefer: wait`), a job's event stream, or a
/// Responses create (held by default, unless in the background) or stream.
pub fn is_long_poll(session: &ServerSession) -> bool {
    let request = session.req_header();
    let asks = |name: &str| {
        request
            .uri
            .query()
            .is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == name))
    };
    let waits = asks("wait") || header(session, "prefer").is_some_and(|p| p.contains("wait"));
    match routes::resolve(request.method.as_str(), request.uri.path()) {
        Ok(Route::Fetch | Route::StreamJob(_) | Route::Submit(Endpoint::Responses)) => true,
        Ok(Route::Submit(_) | Route::GetJob(_)) => waits,
        Ok(Route::GetResponse(_)) => asks("stream"),
        _ => false,
    }
}

pub fn declared_length(session: &ServerSession) -> Option<usize> {
    header(session, "content-length").and_then(|v| v.trim().parse::<usize>().ok())
}

fn expects_continue(session: &ServerSession) -> bool {
    session.req_header().version == http::Version::HTTP_11
        && header(session, "expect").is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
}

/// Reads the whole body, refusing it past `limit` without reading the rest.
async fn read_body(session: &mut ServerSession, limit: usize) -> Result<Vec<u8>, ApiError> {
    let declared = declared_length(session);
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(ApiError::PayloadTooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(ApiError::invalid(
                    format!("cannot read the request body: {e}"),
                    None,
                ));
            }
        }
    }
}

/// Answers a request whose head was refused, in the OpenAI envelope, and closes.
pub async fn refuse(session: &mut ServerSession, error: &ApiError) {
    let body = serde_json::to_vec(&error.envelope()).unwrap_or_default();
    let Some(mut header) = super::app::response_header(
        error.status(),
        &[],
        &format!("req_{}", uuid::Uuid::new_v4().simple()),
    ) else {
        return;
    };
    if header
        .insert_header("content-type", "application/json")
        .is_ok()
        && header
            .insert_header("content-length", body.len().to_string())
            .is_ok()
        && header.insert_header("connection", "close").is_ok()
    {
        let _ = session
            .write_error_response(*header, Bytes::from(body))
            .await;
    }
    session.shutdown().await;
}
