//! The HTTP edge as field clients meet it: native HTTPS, CORS, compressed request bodies,
//! `GET /v1/models/{model}`, and `stream: true` held as an event stream with keep-alives.

use crate::harness::{Gateway, TestCa, chat, observed};
use insta::assert_json_snapshot;
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;

#[tokio::test]
async fn the_gateway_serves_https_natively_with_tls_cert_and_tls_key() {
    let ca = TestCa::new();
    let gw = Gateway::start_tls(&ca, &[]).await;
    assert!(gw.base.starts_with("https://"), "{}", gw.base);
    let user = gw.key("user").await;
    let response = gw.submit(&user, &chat("echo", "over tls")).await;
    assert_eq!(response.status(), 202);
    // A client that does not trust the private CA is refused during the handshake.
    let stranger = reqwest::Client::new();
    let refused = stranger.get(gw.url("/healthz")).send().await.unwrap_err();
    assert!(refused.is_connect(), "{refused:?}");
    // Plain HTTP on the HTTPS port is not answered as HTTP.
    let plain = reqwest::Client::new()
        .get(gw.url("/healthz").replacen("https://", "http://", 1))
        .send()
        .await;
    assert!(plain.map_or(true, |r| r.status() != 200));
}

#[tokio::test]
async fn a_tls_key_without_a_certificate_or_an_unreadable_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    assert!(testkit::cli(&db, &["setup", "--yes"]).status.success());
    let missing = dir.path().join("missing.pem");
    let output = std::process::Command::new(testkit::gateway_bin())
        .args(["start", "--host", "127.0.0.1", "--port", "1", "--db"])
        .arg(&db)
        .env("OBB_TLS_CERT", &missing)
        .env("OBB_TLS_KEY", &missing)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("missing.pem"), "{stderr}");
    let output = std::process::Command::new(testkit::gateway_bin())
        .args(["start", "--check-config", "--db"])
        .arg(&db)
        .env("OBB_TLS_KEY", &missing)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("tls_cert"));
    // `--check-config` reads the files as `start` would.
    let output = std::process::Command::new(testkit::gateway_bin())
        .args(["start", "--check-config", "--db"])
        .arg(&db)
        .env("OBB_TLS_CERT", &missing)
        .env("OBB_TLS_KEY", &missing)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.pem"));
}

const PAGE: &str = "http://127.0.0.1:5173";

#[tokio::test]
async fn a_cors_preflight_is_answered_204_without_a_key() {
    let gw = Gateway::start(&[("OBB_CORS_ALLOWED_ORIGINS", PAGE)]).await;
    let response = gw
        .http
        .request(reqwest::Method::OPTIONS, gw.url("/v1/chat/completions"))
        .header("origin", PAGE)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("content-length").is_none());
    let seen = observed(response).await;
    assert_json_snapshot!(seen);
}

#[tokio::test]
async fn an_allowed_origin_reads_answers_and_errors_and_others_get_no_cors_headers() {
    let gw = Gateway::start(&[("OBB_CORS_ALLOWED_ORIGINS", PAGE)]).await;
    let user = gw.key("user").await;
    let submit = async |origin: &str, key: &str| {
        gw.submit_with(key, &chat("echo", "hi"), None, &[("origin", origin)])
            .await
    };
    let allowed = submit(PAGE, &user).await;
    assert_eq!(allowed.status(), 202);
    let headers = allowed.headers();
    assert_eq!(headers["access-control-allow-origin"], PAGE);
    assert_eq!(headers["vary"], "Origin");
    let exposed = headers["access-control-expose-headers"].to_str().unwrap();
    for name in [
        "x-request-id",
        "x-obb-queue-ms",
        "x-obb-processing-ms",
        "x-obb-job-id",
        "x-should-retry",
    ] {
        assert!(exposed.contains(name), "{exposed}");
    }
    // Errors are readable too, so that a page can show them.
    let refused = submit(PAGE, "sk-wrong").await;
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["access-control-allow-origin"], PAGE);
    let stranger = submit("https://evil.example", &user).await;
    assert_eq!(stranger.status(), 202);
    assert!(
        stranger
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    // The answer still varies on `Origin`, so a shared cache never serves it to the page.
    assert_eq!(stranger.headers()["vary"], "Origin");

    let closed = Gateway::start(&[]).await;
    let response = closed
        .http
        .get(closed.url("/v1/jobs"))
        .header("origin", PAGE)
        .bearer_auth(closed.key("user").await)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn a_star_allows_every_origin_without_vary() {
    let gw = Gateway::start(&[("OBB_CORS_ALLOWED_ORIGINS", "*")]).await;
    let response = gw
        .http
        .get(gw.url("/healthz"))
        .header("origin", "https://anywhere.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert!(response.headers().get("vary").is_none());
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn encoded(coding: &str, data: &[u8]) -> Vec<u8> {
    match coding {
        "gzip" => gzip(data),
        "deflate" => {
            let mut encoder =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            let mut writer = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            writer.write_all(data).unwrap();
            drop(writer);
            out
        }
        "zstd" => zstd::encode_all(data, 3).unwrap(),
        other => unreachable!("{other}"),
    }
}

#[tokio::test]
async fn compressed_request_bodies_are_decoded_and_stored_as_sent() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    for coding in ["gzip", "deflate", "br", "zstd"] {
        let body = serde_json::to_vec(&chat("echo", coding)).unwrap();
        let response = gw
            .http
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&user)
            .header("content-type", "application/json")
            .header("content-encoding", coding)
            .body(encoded(coding, &body))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{coding}");
        let job: Value = response.json().await.unwrap();
        // The node is handed the decoded body, byte for byte as the user sent it.
        let leased = gw.fetch(&node, "n1", &["echo"], 1, 5.0).await;
        assert_eq!(leased[0]["id"], job["id"]);
        assert_eq!(
            serde_json::to_vec(&leased[0]["request_payload"]).unwrap(),
            body
        );
    }
}

#[tokio::test]
async fn a_decompression_bomb_gets_413_and_an_unknown_coding_415_and_nothing_is_stored() {
    let gw = Gateway::start(&[("OBB_MAX_BODY_BYTES", "65536")]).await;
    let user = gw.key("user").await;
    // 8 MiB of JSON whitespace inside a valid request: about 8 KiB on the wire.
    let mut inflated =
        b"{\"model\":\"echo\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]".to_vec();
    inflated.extend(std::iter::repeat_n(b' ', 8 * 1024 * 1024));
    inflated.push(b'}');
    let bomb = gzip(&inflated);
    assert!(bomb.len() < 65536);
    let send = |coding: &'static str, body: Vec<u8>| {
        gw.http
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&user)
            .header("content-encoding", coding)
            .body(body)
            .send()
    };
    // Without a key, nothing is inflated: the answer is 401, not 413.
    let stranger = gw
        .http
        .post(gw.url("/v1/chat/completions"))
        .header("content-encoding", "gzip")
        .body(bomb.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 401);
    let too_large = observed(send("gzip", bomb).await.unwrap()).await;
    let unknown = observed(send("compress", b"x".to_vec()).await.unwrap()).await;
    let corrupt = observed(send("gzip", b"not gzip".to_vec()).await.unwrap()).await;
    assert_json_snapshot!([too_large, unknown, corrupt]);
    let (_, list) = gw.get_json(&user, "/v1/jobs").await;
    assert_eq!(list["data"], json!([]));
}

#[tokio::test]
async fn models_retrieve_answers_any_served_id_raw_or_percent_encoded() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let served = "hf.co/org/llama3.1:8b";
    gw.fetch(&node, "n1", &[served, "echo"], 1, 0.0).await;
    for path in [
        "/v1/models/hf.co/org/llama3.1:8b",
        "/v1/models/hf.co%2Forg%2Fllama3.1%3A8b",
    ] {
        let (status, body) = gw.get_json(&user, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["id"], served);
    }
    let response = gw
        .http
        .get(gw.url("/v1/models/echo"))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    let found = observed(response).await;
    let response = gw
        .http
        .get(gw.url("/v1/models/gpt-nothing"))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    let missing = observed(response).await;
    assert_json_snapshot!([found, missing]);
}

/// Reads a response body chunk by chunk, as it arrives.
struct Chunks(reqwest::Response);

impl Chunks {
    async fn until(&mut self, text: &mut String, needle: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while !text.contains(needle) {
            match tokio::time::timeout_at(deadline, self.0.chunk()).await {
                Ok(Ok(Some(bytes))) => text.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return false,
            }
        }
        true
    }
}

/// Submits a `stream: true` request for `echo` to `path` and returns the response as soon
/// as its headers arrive.
async fn submit_stream(gw: &Gateway, user: &str, path: &str, content: &str) -> reqwest::Response {
    let mut request = chat("echo", content);
    request["stream"] = json!(true);
    gw.http
        .post(gw.url(path))
        .bearer_auth(user)
        .json(&request)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_stream_request_without_wait_is_held_with_keepalives_then_gets_its_chunks() {
    let gw = Gateway::start(&[("OBB_STREAM_KEEPALIVE_SECONDS", "1")]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let response = submit_stream(&gw, &user, "/v1/chat/completions", "slow").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let job_id = response.headers()["x-obb-job-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut body = Chunks(response);
    let mut text = String::new();
    // The job is still queued: only keep-alives have come, one a second.
    let started = std::time::Instant::now();
    let third = ": keep-alive\n\n".repeat(3);
    assert!(
        body.until(&mut text, &third, Duration::from_secs(10)).await,
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert!(!text.contains("data:"), "{text}");
    assert_eq!(gw.job(&user, &job_id).await["status"], "queued");
    let jobs = gw.fetch(&node, "n1", &["echo"], 1, 5.0).await;
    assert_eq!(jobs[0]["id"], job_id.as_str());
    assert_eq!(gw.complete(&node, &jobs[0], "finally").await, "accepted");
    assert!(
        body.until(&mut text, "data: [DONE]\n\n", Duration::from_secs(10))
            .await,
        "{text}"
    );
    let content: String = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content, "finally");
}

#[tokio::test]
async fn a_stream_whose_job_does_not_end_in_time_ends_with_an_error_event_naming_the_job() {
    let gw = Gateway::start(&[
        ("OBB_STREAM_KEEPALIVE_SECONDS", "1"),
        ("OBB_MAX_WAIT_SECONDS", "2"),
    ])
    .await;
    let user = gw.key("user").await;
    let response = submit_stream(
        &gw,
        &user,
        "/v1/chat/completions?wait=0",
        "nobody runs this",
    )
    .await;
    assert_eq!(response.status(), 200);
    let job_id = response.headers()["x-obb-job-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.text().await.unwrap();
    let last = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .last()
        .unwrap();
    let error: Value = serde_json::from_str(last).unwrap();
    assert_eq!(error["error"]["code"], "job_not_finished");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains(&job_id), "{message}");
    assert!(!text.contains("[DONE]"));
    // The job itself is kept, for the caller to poll.
    assert_eq!(gw.job(&user, &job_id).await["status"], "queued");
}

#[tokio::test]
async fn a_streamed_job_that_fails_after_the_headers_ends_with_its_error_event() {
    let gw = Gateway::start(&[("OBB_STREAM_KEEPALIVE_SECONDS", "1")]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let response = submit_stream(&gw, &user, "/v1/chat/completions", "fails").await;
    let mut body = Chunks(response);
    let mut text = String::new();
    assert!(
        body.until(&mut text, ": keep-alive", Duration::from_secs(10))
            .await
    );
    let jobs = gw.fetch(&node, "n1", &["echo"], 1, 5.0).await;
    let failure = json!([{
        "id": jobs[0]["id"], "lease_id": jobs[0]["lease_id"], "status": "FAILED",
        "retryable": false, "upstream_status": 400,
        "error": {"message": "bad tool schema", "type": "invalid_request_error",
                  "param": "tools", "code": null},
    }]);
    gw.report(&node, &failure).await;
    assert!(
        body.until(&mut text, "\"error\"", Duration::from_secs(10))
            .await,
        "{text}"
    );
    let error: Value = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .find_map(|d| serde_json::from_str(d).ok())
        .unwrap();
    assert_eq!(error["error"]["message"], "bad tool schema");
    assert_eq!(error["error"]["param"], "tools");
}
