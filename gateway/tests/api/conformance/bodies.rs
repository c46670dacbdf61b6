//! Request bodies: the chunked coding (RFC 9112 §7) and conflicting or invalid framing
//! (RFC 9112 §6, RFC 9110 §8.6).

use super::wire::Conn;
use super::{
    assert_alive, assert_refused_and_closed, chunked, gateway_with_user, get, submit_head,
};
use crate::harness::chat;

// RFC 9112 §7.1: "A recipient MUST be able to parse and decode the chunked transfer coding."
#[tokio::test]
async fn a_chunked_submit_is_accepted() {
    let (gw, key) = gateway_with_user(&[]).await;
    let mut conn = Conn::open(&gw).await;
    let body = chat("m", "chunked hello").to_string();
    let mut request = submit_head(&key, "Transfer-Encoding: chunked\r\n").into_bytes();
    request.extend(chunked(body.as_bytes(), 3));
    conn.send(&request).await;
    let response = conn.response().await;
    assert_eq!(response.status, 202, "{}", response.text());
    response.assert_framed();
    let id = response.json()["id"].as_str().expect("a job id").to_owned();
    assert_eq!(gw.job(&key, &id).await["status"], "queued");
    conn.send(get("/healthz")).await;
    assert_eq!(conn.response().await.status, 200, "the connection persists");
    assert_alive(&gw).await;
}

// RFC 9112 §7.1.1: "A recipient MUST ignore unrecognized chunk extensions."
#[tokio::test]
async fn chunk_extensions_are_ignored() {
    let (gw, key) = gateway_with_user(&[]).await;
    let mut conn = Conn::open(&gw).await;
    let body = chat("m", "extended").to_string();
    let (a, b) = body.split_at(10);
    let request = format!(
        "{}{:x};name=value\r\n{a}\r\n{:x};quoted=\"a b\";flag\r\n{b}\r\n0;last=1\r\n\r\n",
        submit_head(&key, "Transfer-Encoding: chunked\r\n"),
        a.len(),
        b.len(),
    );
    conn.send(request).await;
    let response = conn.response().await;
    assert_eq!(response.status, 202, "{}", response.text());
    assert_alive(&gw).await;
}

// RFC 9112 §7.1.2: trailer fields follow the last chunk; a recipient may discard them, but
// must consume them, so that the next request on the connection parses.
#[tokio::test]
async fn trailer_fields_after_the_last_chunk_are_consumed_and_the_connection_stays_usable() {
    let (gw, key) = gateway_with_user(&[]).await;
    let mut conn = Conn::open(&gw).await;
    let body = chat("m", "with trailers").to_string();
    let request = format!(
        "{}{:x}\r\n{body}\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n",
        submit_head(
            &key,
            "Transfer-Encoding: chunked\r\nTrailer: X-Checksum, X-Other\r\n"
        ),
        body.len(),
    );
    conn.send(request).await;
    let response = conn.response().await;
    assert_eq!(response.status, 202, "{}", response.text());
    assert!(!response.says_close(), "{response:?}");
    conn.send(get("/healthz")).await;
    assert_eq!(conn.response().await.status, 200);
    assert_alive(&gw).await;
}

// RFC 9112 §7.1: chunk-size is 1*HEXDIG. §2.2: a server that receives octets that do not
// match the grammar SHOULD answer 400 and close the connection, because the framing of
// everything after is lost.
#[tokio::test]
async fn an_invalid_chunk_size_gets_400_and_the_connection_closes() {
    let (gw, key) = gateway_with_user(&[]).await;
    let request = format!(
        "{}zz\r\nabc\r\n0\r\n\r\n",
        submit_head(&key, "Transfer-Encoding: chunked\r\n")
    );
    assert_refused_and_closed(&gw, request, &[400]).await;
}

// RFC 9112 §7.1: "Recipients MUST anticipate potentially large hexadecimal numerals and
// prevent parsing errors due to integer conversion overflows or precision loss due to integer
// representation."
#[tokio::test]
async fn an_overflowing_chunk_size_gets_400_and_the_connection_closes() {
    let (gw, key) = gateway_with_user(&[]).await;
    let request = format!(
        "{}fffffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        submit_head(&key, "Transfer-Encoding: chunked\r\n")
    );
    assert_refused_and_closed(&gw, request, &[400, 413]).await;
}

// RFC 9110 §15.5.14: 413 for content larger than the server will process. The unread rest of
// the chunked body must never be read as a request: the connection closes (§9.6) and no
// second response appears.
#[tokio::test]
async fn a_chunked_body_over_the_limit_gets_413_and_its_rest_is_never_read_as_a_request() {
    let (gw, key) = gateway_with_user(&[("OBB_MAX_BODY_BYTES", "4096")]).await;
    let smuggled = get("/v1/smuggled").repeat(200);
    let mut request = submit_head(&key, "Transfer-Encoding: chunked\r\n").into_bytes();
    request.extend(chunked(smuggled.as_bytes(), 8));
    assert_refused_and_closed(&gw, request, &[413]).await;
}

// Conflicting or invalid framing (RFC 9112 §6).

// RFC 9112 §6.1: "A server MAY reject a request that contains both Content-Length and
// Transfer-Encoding or process such a request in accordance with the Transfer-Encoding alone.
// Regardless, the server MUST close the connection after responding to such a request."
// Content-Length: 3 would frame a broken body and make the tail a second request.
#[tokio::test]
async fn content_length_beside_chunked_never_frames_the_body_and_the_tail_is_never_a_request() {
    let (gw, key) = gateway_with_user(&[]).await;
    let body = chat("m", "smuggle").to_string();
    let mut request =
        submit_head(&key, "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n").into_bytes();
    request.extend(chunked(body.as_bytes(), 1));
    request.extend(get("/v1/smuggled").into_bytes());
    let mut conn = Conn::open(&gw).await;
    conn.send(&request).await;
    let response = conn.response().await;
    assert!(
        [202, 400].contains(&response.status),
        "either chunked framing (202) or a refusal (400): {response:?} / {}",
        response.text()
    );
    assert!(
        response.says_close(),
        "the server will close, and SHOULD say so (RFC 9112 §9.6): {response:?}"
    );
    conn.assert_closed("after a request with both Content-Length and Transfer-Encoding")
        .await;
    assert_alive(&gw).await;
}

// RFC 9112 §6.1, the MUST alone: after answering a request that had both Content-Length and
// Transfer-Encoding, the connection closes even when the client sends nothing more.
#[tokio::test]
async fn content_length_beside_chunked_closes_the_connection_after_the_response() {
    let (gw, key) = gateway_with_user(&[]).await;
    let body = chat("m", "both").to_string();
    let encoded = chunked(body.as_bytes(), 2);
    let mut request = submit_head(
        &key,
        &format!(
            "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
            encoded.len()
        ),
    )
    .into_bytes();
    request.extend(encoded);
    let mut conn = Conn::open(&gw).await;
    conn.send(&request).await;
    let response = conn.response().await;
    assert!([202, 400].contains(&response.status), "{response:?}");
    // A client that did not look for `close` sends its next request; it must go unanswered.
    let _ = conn.send_lenient(get("/healthz")).await;
    conn.assert_closed("after a request with both Content-Length and Transfer-Encoding")
        .await;
    assert_alive(&gw).await;
}

// RFC 9112 §6.3 (5): Content-Length values that differ make the framing invalid; "the server
// MUST respond with a 400 (Bad Request) status code and then close the connection".
#[tokio::test]
async fn two_different_content_lengths_get_400_and_the_connection_closes() {
    let (gw, key) = gateway_with_user(&[]).await;
    let body = chat("m", "x").to_string();
    let request = format!(
        "{}{body}",
        submit_head(
            &key,
            &format!(
                "Content-Length: {}\r\nContent-Length: {}\r\n",
                body.len(),
                body.len() + 1
            )
        )
    );
    assert_refused_and_closed(&gw, request, &[400]).await;
}

// RFC 9112 §6.3 (5), the exception: a list of identical valid values "is processed with that
// single value used as the Content-Length field value" (also RFC 9110 §8.6).
#[tokio::test]
async fn a_content_length_list_of_identical_values_frames_the_body_once() {
    let (gw, key) = gateway_with_user(&[]).await;
    let body = chat("m", "same twice").to_string();
    let request = format!(
        "{}{body}",
        submit_head(&key, &format!("Content-Length: {0}, {0}\r\n", body.len()))
    );
    let mut conn = Conn::open(&gw).await;
    conn.send(request).await;
    let response = conn.response().await;
    assert_eq!(response.status, 202, "{}", response.text());
    conn.send(get("/healthz")).await;
    assert_eq!(conn.response().await.status, 200);
    assert_alive(&gw).await;
}

// RFC 9112 §6.3 (5) with RFC 9110 §8.6 (Content-Length = 1*DIGIT): a non-numeric value is an
// unrecoverable framing error: 400, then close.
#[tokio::test]
async fn a_non_numeric_content_length_gets_400_and_the_connection_closes() {
    let (gw, key) = gateway_with_user(&[]).await;
    let request = format!("{}{{}}", submit_head(&key, "Content-Length: two\r\n"));
    assert_refused_and_closed(&gw, request, &[400]).await;
}

// RFC 9112 §6.3 (5): a negative length is not 1*DIGIT.
#[tokio::test]
async fn a_negative_content_length_gets_400_and_the_connection_closes() {
    let (gw, key) = gateway_with_user(&[]).await;
    let request = format!("{}{{}}", submit_head(&key, "Content-Length: -1\r\n"));
    assert_refused_and_closed(&gw, request, &[400]).await;
}

// RFC 9112 §6.3 (5): nor is a signed one, which lenient integer parsers accept.
#[tokio::test]
async fn a_signed_content_length_gets_400_and_the_connection_closes() {
    let (gw, key) = gateway_with_user(&[]).await;
    let body = chat("m", "x").to_string();
    let request = format!(
        "{}{body}",
        submit_head(&key, &format!("Content-Length: +{}\r\n", body.len()))
    );
    assert_refused_and_closed(&gw, request, &[400]).await;
}

// RFC 9112 §6.3 (4): "If a Transfer-Encoding header field is present in a request and the
// chunked transfer coding is not the final encoding, the message body length cannot be
// determined reliably; the server MUST respond with the 400 (Bad Request) status code and
// then close the connection."
#[tokio::test]
async fn chunked_not_last_in_transfer_encoding_gets_400_and_the_connection_closes() {
    let (gw, key) = gateway_with_user(&[]).await;
    let body = chat("m", "x").to_string();
    let mut request = submit_head(&key, "Transfer-Encoding: chunked, gzip\r\n").into_bytes();
    request.extend(chunked(body.as_bytes(), 1));
    assert_refused_and_closed(&gw, request, &[400]).await;
}

// RFC 9112 §6.3 (4), a smuggling shape: `xchunked` is not `chunked`.
#[tokio::test]
async fn an_xchunked_transfer_encoding_gets_400_and_the_connection_closes() {
    let (gw, key) = gateway_with_user(&[]).await;
    let body = chat("m", "x").to_string();
    let mut request = submit_head(&key, "Transfer-Encoding: xchunked\r\n").into_bytes();
    request.extend(chunked(body.as_bytes(), 1));
    request.extend(get("/v1/smuggled").into_bytes());
    assert_refused_and_closed(&gw, request, &[400]).await;
}

// RFC 9112 §6.1: "A server that receives a request message with a transfer coding it does not
// understand SHOULD respond with 501 (Not Implemented)." Taking the content while ignoring a
// coding it was sent with would read the wrong bytes, so the gateway must not answer 2xx.
#[tokio::test]
async fn a_transfer_coding_the_gateway_does_not_implement_is_refused() {
    let (gw, key) = gateway_with_user(&[]).await;
    let body = chat("m", "not really gzip").to_string();
    let mut request = submit_head(&key, "Transfer-Encoding: gzip, chunked\r\n").into_bytes();
    request.extend(chunked(body.as_bytes(), 1));
    let mut conn = Conn::open(&gw).await;
    conn.send(&request).await;
    let response = conn.response().await;
    assert!(
        [501, 400].contains(&response.status),
        "expected 501 (or 400), got {response:?} / {}",
        response.text()
    );
    response.assert_openai_error(response.status);
    assert_alive(&gw).await;
}

// RFC 9112 §6.1: "A server or client that receives an HTTP/1.0 message containing a
// Transfer-Encoding header field MUST treat the message as if the framing is faulty, even if a
// Content-Length is present, and close the connection after processing the message."
#[tokio::test]
async fn transfer_encoding_in_an_http10_request_is_faulty_framing_and_the_connection_closes() {
    let (gw, key) = gateway_with_user(&[]).await;
    let body = chat("m", "x").to_string();
    let encoded = chunked(body.as_bytes(), 1);
    let mut request = format!(
        "POST /v1/chat/completions HTTP/1.0\r\nAuthorization: Bearer {key}\r\n\
         Connection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n",
        encoded.len()
    )
    .into_bytes();
    request.extend(encoded);
    assert_refused_and_closed(&gw, request, &[400]).await;
}
