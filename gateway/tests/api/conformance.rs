//! RFC 9112 (HTTP/1.1 message syntax and routing) and RFC 9110 (message handling) at the
//! gateway's edge: hand-written bytes over a raw TCP socket to the real binary, one case per
//! test, each naming the section whose required behaviour it asserts. Every read has a
//! deadline, so a gateway that hangs fails the case instead of stalling the suite; every case
//! ends by checking that the gateway still answers `/healthz`.
//!
//! `wire` is the client; the cases are grouped by what they exercise: `connections`,
//! `bodies`, `heads` and `semantics`.

mod bodies;
mod connections;
mod heads;
mod semantics;
mod wire;

use crate::harness::{Gateway, chat};
use std::time::Duration;
use wire::{Conn, Next};

/// The longest any response may take to arrive.
const ANSWER: Duration = Duration::from_secs(10);
/// How soon a connection the gateway must close has to be closed after its last response.
const CLOSES: Duration = Duration::from_secs(5);
/// How long a client that trickles or stalls its header block may hold a connection. pingora
/// waits 60 s per read by default and never bounds the whole block; 15 s leaves room for a
/// header timeout of about 10 s on a loaded machine.
const HEADER_BLOCK: Duration = Duration::from_secs(15);
/// curl sends the body anyway after waiting this long for `100 Continue`: the stall that
/// issue 13 reports. The `100` has to come sooner.
const CONTINUE: Duration = Duration::from_secs(1);

/// A GET of `path` with the Host every HTTP/1.1 request needs.
fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
}

/// The head of a submit, with `framing` (complete header lines) before the blank line.
fn submit_head(key: &str, framing: &str) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\n{framing}\r\n"
    )
}

/// A submit framed by Content-Length.
fn submit(key: &str) -> String {
    let body = chat("m", "hello").to_string();
    format!(
        "{}{body}",
        submit_head(key, &format!("Content-Length: {}\r\n", body.len()))
    )
}

/// `body` in `pieces` chunks, with the last chunk and no trailers.
fn chunked(body: &[u8], pieces: usize) -> Vec<u8> {
    let size = body.len().div_ceil(pieces).max(1);
    let mut out = Vec::new();
    for piece in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

async fn gateway() -> Gateway {
    Gateway::start(&[]).await
}

async fn gateway_with_user(settings: &[(&str, &str)]) -> (Gateway, String) {
    let gateway = Gateway::start(settings).await;
    let key = gateway.key("user").await;
    // One authenticated call puts the key in the verified-key cache, so that no case below
    // measures argon2 instead of the edge.
    let (status, _) = gateway.get_json(&key, "/v1/jobs").await;
    assert_eq!(status, 200);
    (gateway, key)
}

/// The gateway survived the case: a fresh connection still gets `/healthz`.
async fn assert_alive(gateway: &Gateway) {
    let mut conn = Conn::open(gateway).await;
    conn.send(get("/healthz")).await;
    let response = conn.response().await;
    assert_eq!(
        response.status, 200,
        "the gateway no longer answers /healthz"
    );
}

/// Sends `request` alone on a new connection and asserts the answer is one of `statuses`,
/// an OpenAI error, and the last thing on the connection.
async fn assert_refused_and_closed(gateway: &Gateway, request: impl AsRef<[u8]>, statuses: &[u16]) {
    let mut conn = Conn::open(gateway).await;
    conn.send(request).await;
    let response = match conn.next(ANSWER, false).await {
        Next::Response(response) => response,
        other => panic!("expected a {statuses:?} answer before the close, got {other:?}"),
    };
    assert!(
        statuses.contains(&response.status),
        "expected one of {statuses:?}, got {response:?} / {}",
        response.text()
    );
    response.assert_openai_error(response.status);
    response.assert_framed();
    assert!(
        response.says_close(),
        "a server that will close says so (RFC 9112 §9.6): {response:?}"
    );
    conn.assert_closed("after refusing a message it cannot frame")
        .await;
    assert_alive(gateway).await;
}
