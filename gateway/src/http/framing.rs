//! RFC 9112 message handling that pingora leaves to the application: how long a request's
//! head may take, the status for a head it could not parse, and the `Host` rule. It owns no
//! routing and no body; `mod.rs` calls it before either.

use super::error::ApiError;
use pingora::protocols::http::ServerSession;
use std::time::Duration;

/// The longest a client may take to send a whole request head, however it trickles it, so
/// that a slow or stalled client cannot hold a connection (RFC 9112 §9.5 lets a server
/// close an idle or slow connection). Generous for any real client on any real network.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a kept-alive connection may idle between requests (seconds).
pub const KEEPALIVE_SECONDS: u64 = 60;

/// Marks a connection handed back for reuse, so that its next head may first idle for the
/// keep-alive time.
pub struct Reused;

/// The deadline for a request head: `HEAD_TIMEOUT` on a new connection; on a reused one,
/// the keep-alive idle time first.
pub fn head_deadline(reused: bool) -> Duration {
    if reused {
        HEAD_TIMEOUT + Duration::from_secs(KEEPALIVE_SECONDS)
    } else {
        HEAD_TIMEOUT
    }
}

/// The status for a request head pingora refused: 431 when it was too large (RFC 6585 §5),
/// else 400 (RFC 9112 §2.2, §3, §5), with a message that says which.
pub fn refused_head(error: &pingora::Error) -> ApiError {
    // Match on pingora's own words, not on the whole message, which quotes the client's bytes.
    let too_long = error
        .context
        .as_ref()
        .is_some_and(|c| c.as_str().starts_with("Request header larger than"));
    let too_many = error.root_cause().to_string() == "too many headers";
    if too_long || too_many {
        return ApiError::HeadTooLarge;
    }
    ApiError::invalid(
        "the request head is not valid HTTP/1.1 (RFC 9112): check the request line and that \
         each header line is `name: value`",
        None,
    )
}

/// RFC 9112 §3.2: an HTTP/1.1 request must carry exactly one `Host`; a server must answer
/// 400 to one without it or with several.
pub fn check_host(session: &ServerSession) -> Result<(), ApiError> {
    let request = session.req_header();
    if request.version != http::Version::HTTP_11 {
        return Ok(());
    }
    match request.headers.get_all("host").iter().count() {
        1 => Ok(()),
        0 => Err(ApiError::invalid(
            "an HTTP/1.1 request needs a `Host` header (RFC 9112 §3.2)",
            Some("Host".to_owned()),
        )),
        _ => Err(ApiError::invalid(
            "a request may carry only one `Host` header (RFC 9112 §3.2)",
            Some("Host".to_owned()),
        )),
    }
}

/// RFC 9112 §6.1: a server should answer 501 to a transfer coding it does not implement.
/// The gateway implements only `chunked`; pingora has already refused any request whose last
/// coding is not `chunked`, so what is left here is a coding stacked under it.
pub fn check_transfer_coding(session: &ServerSession) -> Result<(), ApiError> {
    let request = session.req_header();
    for value in request.headers.get_all("transfer-encoding") {
        let text = value.to_str().unwrap_or("?");
        if let Some(coding) = text
            .split(',')
            .map(str::trim)
            .find(|c| !c.is_empty() && !c.eq_ignore_ascii_case("chunked"))
        {
            return Err(ApiError::TransferCodingNotImplemented(coding.to_owned()));
        }
    }
    Ok(())
}
