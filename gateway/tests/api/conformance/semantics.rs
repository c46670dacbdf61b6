//! Message handling from RFC 9110: `Expect: 100-continue` (§10.1.1, §15.2), HEAD and
//! unknown methods (§9, §15), and answers framed so that a connection can be reused.

use super::wire::{Conn, Next};
use super::{ANSWER, CONTINUE, assert_alive, gateway, gateway_with_user, get, submit, submit_head};
use crate::harness::chat;

// RFC 9110 §10.1.1: an origin server that receives a 100-continue expectation "MUST ... either
// send an immediate response with a final status code, if that status can be determined by
// examining just the request-line and header fields, or send an immediate 100 (Continue)
// response to encourage the client to send the request content." curl sends Expect for
// bodies over 1 MiB and waits a second for the 100.
#[tokio::test]
async fn expect_100_continue_gets_100_before_the_body_and_then_the_final_answer() {
    let (gw, key) = gateway_with_user(&[]).await;
    let body = chat("m", &"a".repeat(1_100_000)).to_string();
    let mut conn = Conn::open(&gw).await;
    conn.send(submit_head(
        &key,
        &format!("Content-Length: {}\r\nExpect: 100-continue\r\n", body.len()),
    ))
    .await;
    match conn.next(CONTINUE, false).await {
        Next::Response(response) => assert_eq!(response.status, 100, "{response:?}"),
        other => panic!("no 100 Continue within {CONTINUE:?} of the headers: {other:?}"),
    }
    conn.send(&body).await;
    let response = conn.response().await;
    assert_eq!(response.status, 202, "{}", response.text());
    response.assert_framed();
    // The `100` did not cost the connection: it serves the next request (RFC 9112 §9.3).
    assert!(!response.says_close(), "{response:?}");
    conn.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await;
    assert_eq!(conn.response().await.status, 200);
    assert_alive(&gw).await;
}

// RFC 9110 §10.1.1: when the final status follows from the headers (no key: 401), the server
// may answer it at once; issue 13 asks that it do so without a 100, so that the client never
// sends the body.
#[tokio::test]
async fn expect_100_continue_without_a_key_gets_401_and_no_100() {
    let gw = gateway().await;
    let mut conn = Conn::open(&gw).await;
    conn.send(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: 2000000\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    let response = conn
        .next(ANSWER, false)
        .await
        .response("an Expect request without a key");
    response.assert_openai_error(401);
    assert_alive(&gw).await;
}

// RFC 9110 §10.1.1 with §15.5.14: a declared length over `max_body_bytes` is known from the
// headers, so the 413 comes at once and without a 100.
#[tokio::test]
async fn expect_100_continue_over_the_body_limit_gets_413_and_no_100() {
    let (gw, key) = gateway_with_user(&[("OBB_MAX_BODY_BYTES", "65536")]).await;
    let mut conn = Conn::open(&gw).await;
    conn.send(submit_head(
        &key,
        "Content-Length: 2000000\r\nExpect: 100-continue\r\n",
    ))
    .await;
    let response = conn
        .next(ANSWER, false)
        .await
        .response("an Expect request over the limit");
    response.assert_openai_error(413);
    assert_alive(&gw).await;
}

// RFC 9110 §15.2: "a server MUST NOT send a 1xx response to an HTTP/1.0 client"; §10.1.1: "A
// server that receives a 100-continue expectation in an HTTP/1.0 request MUST ignore that
// expectation."
#[tokio::test]
async fn expect_100_continue_from_an_http10_client_gets_no_100() {
    let (gw, key) = gateway_with_user(&[]).await;
    let body = chat("m", "from the past").to_string();
    let mut conn = Conn::open(&gw).await;
    conn.send(format!(
        "POST /v1/chat/completions HTTP/1.0\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    ))
    .await;
    // Nothing may come before the body: the read that ends without news is the assertion.
    match conn.next(CONTINUE, false).await {
        Next::TimedOut => {}
        other => panic!("an HTTP/1.0 client got something before its body: {other:?}"),
    }
    conn.send(&body).await;
    let response = conn.response().await;
    assert_eq!(response.status, 202, "{}", response.text());
    assert_eq!(response.header("transfer-encoding"), None);
    assert_alive(&gw).await;
}

// Methods and the shape of answers (RFC 9110 §9, §15).

// RFC 9110 §9.1: "All general-purpose servers MUST support the methods GET and HEAD."
// §9.3.2: the server "MUST NOT send content in the response" to HEAD, and SHOULD send the
// header fields GET would; §8.6: a Content-Length on it MUST be the length GET would send.
#[tokio::test]
async fn a_head_request_is_answered_like_get_without_content() {
    let gw = gateway().await;
    let mut conn = Conn::open(&gw).await;
    conn.send("HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await;
    let head = conn.next(ANSWER, true).await.response("HEAD");
    // The next response parses only if the HEAD answer carried no content.
    conn.send(get("/healthz")).await;
    let get = conn.response().await;
    assert_eq!(get.status, 200);
    assert_eq!(head.status, 200, "HEAD on a GET route: {head:?}");
    if let Some(length) = head.header("content-length") {
        assert_eq!(length, get.body.len().to_string(), "{head:?}");
    }
    assert_eq!(head.header("content-type"), get.header("content-type"));
    assert_alive(&gw).await;
}

// RFC 9110 §9.3.2 on a streaming route: HEAD gets the headers a GET would (an event stream)
// and no content, at once, even while the job is still queued; the connection goes on.
#[tokio::test]
async fn a_head_request_on_a_job_event_stream_gets_its_headers_at_once_and_no_events() {
    let (gw, key) = gateway_with_user(&[]).await;
    let job = gw.submit_id(&key, "m").await;
    let mut conn = Conn::open(&gw).await;
    conn.send(format!(
        "HEAD /v1/jobs/{job}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\r\n"
    ))
    .await;
    let head = conn.next(ANSWER, true).await.response("HEAD on a stream");
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert!(head.body.is_empty(), "{head:?}");
    conn.send(get("/healthz")).await;
    assert_eq!(conn.response().await.status, 200);
    assert_alive(&gw).await;
}

// RFC 9110 §15.5.6: "The origin server MUST generate an Allow header field in a 405 response
// containing a list of the target resource's currently supported methods." The body is the
// OpenAI error envelope, framed so the connection persists.
#[tokio::test]
async fn an_unknown_method_gets_405_with_allow_and_an_openai_error() {
    let gw = gateway().await;
    let mut conn = Conn::open(&gw).await;
    conn.send("BREW /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await;
    let response = conn.response().await;
    response.assert_openai_error(405);
    response.assert_framed();
    let allow = response.header("allow").expect("an Allow header on a 405");
    assert!(allow.contains("GET"), "{allow}");
    conn.send(get("/healthz")).await;
    assert_eq!(conn.response().await.status, 200, "the connection persists");
    assert_alive(&gw).await;
}

// RFC 9110 §15.5.5: 404 for a target the origin has no representation for; an OpenAI error,
// framed, on a connection that persists (RFC 9112 §9.3).
#[tokio::test]
async fn an_unknown_path_gets_404_with_an_openai_error_on_a_persistent_connection() {
    let gw = gateway().await;
    let mut conn = Conn::open(&gw).await;
    conn.send(get("/v2/nothing/here")).await;
    let response = conn.response().await;
    response.assert_openai_error(404);
    response.assert_framed();
    assert!(!response.says_close(), "{response:?}");
    conn.send(get("/healthz")).await;
    assert_eq!(conn.response().await.status, 200);
    assert_alive(&gw).await;
}

// RFC 9112 §6.3 (6): a Content-Length body ends where its length says; a request refused
// without its body being used (401 here) must not have that body read as the next request
// (the request-smuggling shape of RFC 9112 §11.2). Either the gateway closes, or the body is
// skipped and the next request on the connection gets its own answer.
#[tokio::test]
async fn a_refused_requests_body_is_never_read_as_a_request() {
    let gw = gateway().await;
    let body = get("/v1/smuggled");
    let mut conn = Conn::open(&gw).await;
    conn.send(format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    ))
    .await;
    let refused = conn.response().await;
    refused.assert_openai_error(401);
    if refused.says_close() {
        conn.assert_closed("after a refusal that said close").await;
    } else {
        conn.send(get("/healthz")).await;
        let next = conn.response().await;
        assert_eq!(next.status, 200, "the body was read as a request: {next:?}");
    }
    assert_alive(&gw).await;
}

// RFC 9112 §9.3 with §6.3: on a persistent connection, every kind of answer (success, client
// error, the node API's JSON) is framed, so that the next one can be found.
#[tokio::test]
async fn every_answer_on_a_persistent_connection_is_framed() {
    let (gw, key) = gateway_with_user(&[]).await;
    let mut conn = Conn::open(&gw).await;
    let requests = [
        get("/healthz"),
        get("/metrics"),
        submit(&key),
        get("/v1/jobs"),
        format!("GET /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\r\n"),
        "POST /internal/queue/fetch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}"
            .to_owned(),
    ];
    for request in requests {
        conn.send(&request).await;
        let response = conn.response().await;
        response.assert_framed();
        assert_eq!(response.version, "HTTP/1.1");
        assert!(!response.says_close(), "{response:?}");
    }
    assert_alive(&gw).await;
}
