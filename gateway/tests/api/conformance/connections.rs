//! Connection management (RFC 9112 §9): HTTP/1.0 and HTTP/1.1 persistence, `close`,
//! pipelining and half-closed clients.

use super::wire::{Conn, Framing};
use super::{ANSWER, assert_alive, gateway, gateway_with_user, get, submit};

// RFC 9112 §9.3: an HTTP/1.0 request without the keep-alive option means the connection
// closes after the response; §6.1 forbids Transfer-Encoding towards a 1.0 client, so the
// answer is framed by Content-Length (or by the close).
#[tokio::test]
async fn an_http10_request_without_keep_alive_is_answered_and_then_the_connection_closes() {
    let gw = gateway().await;
    let mut conn = Conn::open(&gw).await;
    conn.send("GET /healthz HTTP/1.0\r\n\r\n").await;
    let response = conn.response().await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("transfer-encoding"), None);
    assert!(
        !response.says_keep_alive(),
        "a 1.0 request without keep-alive does not persist: {response:?}"
    );
    conn.assert_closed("an HTTP/1.0 exchange without keep-alive")
        .await;
    assert_alive(&gw).await;
}

// RFC 9112 §9.3: a 1.0 request with the keep-alive option MAY persist. Whatever the gateway
// chooses, its Connection header has to tell the truth, and the answer is never chunked
// (§6.1), so a persistent 1.0 answer carries Content-Length.
#[tokio::test]
async fn an_http10_keep_alive_request_gets_an_unchunked_answer_whose_connection_header_tells_the_truth()
 {
    let gw = gateway().await;
    let mut conn = Conn::open(&gw).await;
    let request = "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    conn.send(request).await;
    let first = conn.response().await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("transfer-encoding"), None);
    if first.says_keep_alive() {
        assert_eq!(first.framing, Framing::Length, "{first:?}");
        conn.send(request).await;
        assert_eq!(conn.response().await.status, 200);
    } else {
        conn.assert_closed("a 1.0 answer that does not say keep-alive")
            .await;
    }
    assert_alive(&gw).await;
}

// RFC 9112 §6.1: "A server MUST NOT send a response containing Transfer-Encoding unless the
// corresponding request indicates HTTP/1.1 (or later minor revisions)." A job's event stream
// to a 1.0 client is therefore delimited by the close.
#[tokio::test]
async fn an_http10_client_gets_a_job_event_stream_without_chunked_encoding() {
    let (gw, key) = gateway_with_user(&[]).await;
    let id = gw.submit_id(&key, "m").await;
    let (status, _) = gw
        .post_json(
            &key,
            &format!("/v1/jobs/{id}/cancel"),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let mut conn = Conn::open(&gw).await;
    conn.send(format!(
        "GET /v1/jobs/{id}/stream HTTP/1.0\r\nAuthorization: Bearer {key}\r\n\r\n"
    ))
    .await;
    let response = conn.response().await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("transfer-encoding"),
        None,
        "chunked towards an HTTP/1.0 client: {response:?}"
    );
    assert_ne!(response.framing, Framing::Chunked);
    assert!(response.text().contains("cancelled"), "{}", response.text());
    assert_alive(&gw).await;
}

// RFC 9112 §9.3: without the close option, an HTTP/1.1 connection persists after the
// response.
#[tokio::test]
async fn an_http11_connection_persists_across_requests_by_default() {
    let gw = gateway().await;
    let mut conn = Conn::open(&gw).await;
    for _ in 0..3 {
        conn.send(get("/healthz")).await;
        let response = conn.response().await;
        assert_eq!(response.status, 200);
        response.assert_framed();
        assert!(!response.says_close(), "{response:?}");
    }
    assert_alive(&gw).await;
}

// RFC 9112 §9.6: "A server that receives a "close" connection option MUST initiate closure of
// the connection after it sends the final response to the request that contained the
// "close" connection option. The server SHOULD send a "close" connection option in its final
// response on that connection."
#[tokio::test]
async fn an_http11_connection_close_is_honoured_and_echoed() {
    let gw = gateway().await;
    let mut conn = Conn::open(&gw).await;
    conn.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await;
    let response = conn.response().await;
    assert_eq!(response.status, 200);
    response.assert_framed();
    assert!(response.says_close(), "{response:?}");
    conn.assert_closed("after Connection: close").await;
    assert_alive(&gw).await;
}

// RFC 9110 §7.6.1: Connection is a list of options; RFC 9112 §9.6 applies to `close` wherever
// it appears in it.
#[tokio::test]
async fn a_close_option_inside_a_connection_list_is_honoured() {
    let gw = gateway().await;
    let mut conn = Conn::open(&gw).await;
    conn.send(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Trace: 1\r\nConnection: x-trace, close\r\n\r\n",
    )
    .await;
    let response = conn.response().await;
    assert_eq!(response.status, 200);
    assert!(response.says_close(), "{response:?}");
    conn.assert_closed("after Connection: x-trace, close").await;
    assert_alive(&gw).await;
}

// Pipelining (RFC 9112 §9.3.2) and half-closed clients.

// RFC 9112 §9.3.2: a server "MUST send the corresponding responses in the same order that the
// requests were received". Issue 13 also asks that every pipelined request be answered, not
// dropped by closing after the first.
#[tokio::test]
async fn three_pipelined_requests_are_answered_in_order_each_complete() {
    let gw = gateway().await;
    let mut conn = Conn::open(&gw).await;
    conn.send(format!(
        "{}{}{}",
        get("/healthz"),
        get("/v1/nowhere"),
        get("/v1/models")
    ))
    .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = conn
            .next(ANSWER, false)
            .await
            .response("a pipelined request");
        response.assert_framed();
        statuses.push(response.status);
    }
    // 200 for /healthz, 404 for the unknown path, 401 for a user route without a key.
    assert_eq!(statuses, [200, 404, 401]);
    conn.send(get("/healthz")).await;
    assert_eq!(conn.response().await.status, 200, "the connection persists");
    assert_alive(&gw).await;
}

// RFC 9112 §9.3.2, with bodies: each request's Content-Length says where the next begins.
#[tokio::test]
async fn pipelined_submits_with_bodies_are_answered_in_order_each_complete() {
    let (gw, key) = gateway_with_user(&[]).await;
    let mut conn = Conn::open(&gw).await;
    conn.send(format!(
        "{}{}{}",
        submit(&key),
        submit(&key),
        get("/healthz")
    ))
    .await;
    let first = conn.next(ANSWER, false).await.response("the first submit");
    let second = conn.next(ANSWER, false).await.response("the second submit");
    let third = conn.next(ANSWER, false).await.response("the health check");
    assert_eq!([first.status, second.status, third.status], [202, 202, 200]);
    assert_ne!(first.json()["id"], second.json()["id"]);
    assert_alive(&gw).await;
}

// A client that has sent its whole request may shut down its sending half: TCP keeps the
// other direction open (RFC 9293 §3.6: after a CLOSE the user "may continue to RECEIVE until
// the other side also CLOSEs"), and RFC 9112 gives a half-close no meaning of its own, so it
// is not a disconnect: the response still arrives, then the gateway closes (§9.6). Issue 13
// asks for this case by name.
#[tokio::test]
async fn a_client_that_half_closes_after_its_request_still_gets_the_response() {
    let (gw, key) = gateway_with_user(&[]).await;
    let mut conn = Conn::open(&gw).await;
    conn.send(format!(
        "GET /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\r\n"
    ))
    .await;
    conn.half_close().await;
    let response = conn.next(ANSWER, false).await.response("a half-closed GET");
    assert_eq!(response.status, 200);
    conn.assert_closed("after answering a half-closed client")
        .await;
    assert_alive(&gw).await;
}

// The same for a write: the job is queued and the client learns its id.
#[tokio::test]
async fn a_half_closed_submit_is_still_answered_with_its_job() {
    let (gw, key) = gateway_with_user(&[]).await;
    let mut conn = Conn::open(&gw).await;
    conn.send(submit(&key)).await;
    conn.half_close().await;
    let response = conn
        .next(ANSWER, false)
        .await
        .response("a half-closed submit");
    assert_eq!(response.status, 202, "{}", response.text());
    assert!(response.json()["id"].is_string());
    assert_alive(&gw).await;
}
