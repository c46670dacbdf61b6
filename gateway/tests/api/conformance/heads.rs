//! Request heads: the request line and header syntax (RFC 9112 §2–§5), and heads that are
//! too large (RFC 9110 §5.4) or too slow (RFC 9112 §9.5).

use super::wire::{Conn, Next};
use super::{
    ANSWER, CLOSES, HEADER_BLOCK, assert_alive, assert_refused_and_closed, gateway,
    gateway_with_user,
};
use crate::harness::Gateway;
use std::time::Duration;
use tokio::time::Instant;

// RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1
// request message that lacks a Host header field".
#[tokio::test]
async fn an_http11_request_without_host_gets_400() {
    let gw = gateway().await;
    let mut conn = Conn::open(&gw).await;
    conn.send("GET /healthz HTTP/1.1\r\n\r\n").await;
    let response = conn.response().await;
    response.assert_openai_error(400);
    response.assert_framed();
    assert_alive(&gw).await;
}

// RFC 9112 §3.2: "... and to any request message that contains more than one Host header
// field line".
#[tokio::test]
async fn a_request_with_two_host_fields_gets_400() {
    let gw = gateway().await;
    let mut conn = Conn::open(&gw).await;
    conn.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: other.example\r\n\r\n")
        .await;
    let response = conn.next(ANSWER, false).await.response("two Host lines");
    response.assert_openai_error(400);
    assert_alive(&gw).await;
}

// RFC 9112 §5.1: "A server MUST reject, with a response status code of 400 (Bad Request), any
// received request message that contains whitespace between a header field name and colon."
#[tokio::test]
async fn whitespace_between_a_field_name_and_its_colon_gets_400() {
    let gw = gateway().await;
    assert_refused_and_closed(
        &gw,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Test : 1\r\n\r\n",
        &[400],
    )
    .await;
}

// RFC 9112 §5.2: a server that receives an obs-fold "MUST either reject the message by
// sending a 400 (Bad Request) ... or replace each received obs-fold with one or more SP
// octets prior to interpreting the field value". The fold here splits the Authorization
// value, so a replaced fold authenticates and a rejected one is a 400: anything else is wrong.
#[tokio::test]
async fn an_obs_fold_is_rejected_with_400_or_read_as_a_space() {
    let (gw, key) = gateway_with_user(&[]).await;
    let mut conn = Conn::open(&gw).await;
    conn.send(format!(
        "GET /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer\r\n {key}\r\n\r\n"
    ))
    .await;
    let response = conn.next(ANSWER, false).await.response("a folded header");
    match response.status {
        400 => response.assert_openai_error(400),
        200 => {}
        other => panic!("expected 400 or 200, got {other}: {}", response.text()),
    }
    assert_alive(&gw).await;
}

// RFC 9112 §2.2: "A recipient of such a bare CR MUST consider that element to be invalid or
// replace each bare CR with SP before processing the element". Invalid means 400 (§2.2, SHOULD
// respond 400 and close); replaced means the request is served.
#[tokio::test]
async fn a_bare_cr_in_a_field_value_is_rejected_with_400_or_read_as_a_space() {
    let gw = gateway().await;
    let mut conn = Conn::open(&gw).await;
    conn.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Test: a\rb\r\n\r\n")
        .await;
    let response = conn.next(ANSWER, false).await.response("a bare CR");
    match response.status {
        400 => response.assert_openai_error(400),
        200 => {}
        other => panic!("expected 400 or 200, got {other}: {}", response.text()),
    }
    assert_alive(&gw).await;
}

// RFC 9112 §2.2: "a recipient MAY recognize a single LF as a line terminator and ignore any
// preceding CR". Either the request is understood or it is refused with 400; it never hangs.
#[tokio::test]
async fn bare_lf_line_endings_are_understood_or_refused_with_400() {
    let gw = gateway().await;
    let mut conn = Conn::open(&gw).await;
    conn.send("GET /healthz HTTP/1.1\nHost: 127.0.0.1\nX-Test: 1\n\n")
        .await;
    let response = conn.next(ANSWER, false).await.response("bare LF lines");
    assert!([200, 400].contains(&response.status), "{response:?}");
    response.assert_framed();
    assert_alive(&gw).await;
}

// RFC 9112 §3: "Recipients of an invalid request-line SHOULD respond with either a 400 (Bad
// Request) error or a 301 (Moved Permanently) redirect"; §2.2: and close the connection.
#[tokio::test]
async fn a_malformed_request_line_gets_400_and_the_connection_closes() {
    let gw = gateway().await;
    assert_refused_and_closed(&gw, "GET\r\nHost: 127.0.0.1\r\n\r\n", &[400]).await;
}

// RFC 9112 §3.2.2: "A server MUST accept the absolute-form in requests even though most
// HTTP/1.1 clients will only send the absolute-form to a proxy."
#[tokio::test]
async fn an_absolute_form_request_target_is_accepted() {
    let gw = gateway().await;
    let authority = gw.base.trim_start_matches("http://").to_owned();
    let mut conn = Conn::open(&gw).await;
    conn.send(format!(
        "GET http://{authority}/healthz HTTP/1.1\r\nHost: {authority}\r\n\r\n"
    ))
    .await;
    let response = conn.response().await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["status"], "ok");
    assert_alive(&gw).await;
}

// Oversize and slow header blocks.

/// Writes `request` from another task, so that a gateway that answers before reading it all
/// is heard, and returns the first thing that comes back, with the connection.
async fn send_huge(gateway: &Gateway, request: Vec<u8>) -> (Next, Conn) {
    let mut conn = Conn::open(gateway).await;
    let writing = conn.send_in_background(request);
    let next = conn.next(ANSWER, false).await;
    writing.abort();
    (next, conn)
}

// RFC 9110 §5.4: "A server that receives a request header field line, field value, or set of
// fields larger than it wishes to process MUST respond with an appropriate 4xx (Client Error)
// status code." RFC 6585 §5 names 431; a silent close is not a response.
#[tokio::test]
async fn an_oversize_header_block_gets_431_and_the_connection_closes() {
    let gw = gateway().await;
    let mut request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec();
    for i in 0..256 {
        request.extend(format!("X-Big-{i}: {}\r\n", "a".repeat(8 * 1024)).into_bytes());
    }
    request.extend(b"\r\n");
    let (next, mut conn) = send_huge(&gw, request).await;
    let response = next.response("a 2 MiB header block");
    // RFC 6585 §5 names 431 for this; 400 would be allowed, 431 tells the client why.
    response.assert_openai_error(431);
    assert!(response.says_close(), "{response:?}");
    conn.assert_closed("after refusing an oversize header block")
        .await;
    assert_alive(&gw).await;
}

// RFC 9110 §5.4 again, for the number of fields rather than their size.
#[tokio::test]
async fn too_many_header_fields_get_431() {
    let gw = gateway().await;
    let mut request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec();
    for i in 0..1000 {
        request.extend(format!("X-Field-{i}: {i}\r\n").into_bytes());
    }
    request.extend(b"\r\n");
    let (next, _) = send_huge(&gw, request).await;
    let response = next.response("1000 header fields");
    response.assert_openai_error(431);
    assert_alive(&gw).await;
}

/// After a partial header block: the gateway must close (a 408 first is welcome, RFC 9110
/// §15.5.9) before `HEADER_BLOCK` has passed since `started`.
fn assert_timed_out_in_time(next: Next, started: Instant) {
    match next {
        Next::Closed => {}
        Next::Response(response) => assert_eq!(response.status, 408, "{response:?}"),
        Next::TimedOut => panic!(
            "the connection was still open {:?} after the header block began",
            started.elapsed()
        ),
    }
    assert!(started.elapsed() <= HEADER_BLOCK + Duration::from_secs(1));
}

// RFC 9112 §9.5 lets a server close a connection that makes no progress, and RFC 9110
// §15.5.9 (408) is the answer for a request that did not arrive in time. A client that stops
// in the middle of its header block must not hold the connection for pingora's default 60 s
// per read: the gateway closes it within `HEADER_BLOCK`.
#[tokio::test]
async fn a_stalled_header_block_is_closed_within_the_header_deadline() {
    let gw = gateway().await;
    let mut conn = Conn::open(&gw).await;
    let started = Instant::now();
    conn.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Stall: ")
        .await;
    let next = conn.next(HEADER_BLOCK, false).await;
    assert_timed_out_in_time(next, started);
    assert_alive(&gw).await;
}

// The same bound when the client trickles a byte a second: a per-read timeout never fires,
// so the deadline has to cover the whole header block (the slowloris shape).
#[tokio::test]
async fn a_trickled_header_block_is_closed_within_the_header_deadline() {
    let gw = gateway().await;
    let mut conn = Conn::open(&gw).await;
    let started = Instant::now();
    conn.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await;
    loop {
        // The read is the pace: a second without news, then one more byte.
        match conn.next(Duration::from_secs(1), false).await {
            Next::TimedOut if started.elapsed() < HEADER_BLOCK => {
                if !conn.send_lenient("a").await {
                    // The write failed because the gateway closed: read the close.
                    let next = conn.next(CLOSES, false).await;
                    assert_timed_out_in_time(next, started);
                    break;
                }
            }
            next => {
                assert_timed_out_in_time(next, started);
                break;
            }
        }
    }
    assert_alive(&gw).await;
}
