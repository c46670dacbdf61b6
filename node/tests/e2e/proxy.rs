//! A real nginx terminating TLS in front of the gateway, configured with the very file the
//! README shows (`examples/nginx/openbeepboop.conf`) and a private CA: nodes over `https://`,
//! waited submits, job event streams and `stream: true` requests pass through it, streams
//! unbuffered both ways (a node's live relay in, the chunks out, spread as the mock made them); with mutual TLS switched on it lets in only nodes with a client certificate.

use crate::stack;
use crate::streaming::{Event, Sse};
use reqwest::{Client, Response};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use testkit::mock::MockUpstream;
use testkit::{Gateway, Nginx, NodeProcess, TestCa, eventually};

/// The nginx config users are given, as the README includes it.
const EXAMPLE: &str = include_str!("../../../examples/nginx/openbeepboop.conf");
const README: &str = include_str!("../../../README.md");

/// Replaces the one occurrence of `from` in `text`; a missing or repeated line means the
/// example `file` changed under the test, which must then change with it.
pub(crate) fn swap_in(file: &str, text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "{file} should contain `{from}` once"
    );
    text.replace(from, to)
}

fn swap(text: &str, from: &str, to: &str) -> String {
    swap_in("examples/nginx/openbeepboop.conf", text, from, to)
}

/// The example with this deployment's port, gateway address and certificates; with
/// `clients_ca`, its mutual-TLS lines switched on with that CA. Nothing else changes.
fn example_config(
    port: u16,
    gateway: &Gateway,
    (cert, key): (&Path, &Path),
    clients_ca: Option<&Path>,
) -> String {
    let address = gateway.base.trim_start_matches("http://");
    let mut config = swap(
        EXAMPLE,
        "listen 443 ssl;",
        &format!("listen 127.0.0.1:{port} ssl;"),
    );
    config = swap(
        &config,
        "server 127.0.0.1:8000;",
        &format!("server {address};"),
    );
    config = swap(
        &config,
        "/etc/nginx/obb/gateway.pem",
        &cert.display().to_string(),
    );
    config = swap(
        &config,
        "/etc/nginx/obb/gateway.key",
        &key.display().to_string(),
    );
    if let Some(ca) = clients_ca {
        config = swap(
            &config,
            "# ssl_client_certificate /etc/nginx/obb/clients-ca.pem;",
            &format!("ssl_client_certificate {};", ca.display()),
        );
        config = swap(&config, "# ssl_verify_client on;", "ssl_verify_client on;");
    }
    config
}

/// nginx in front of `gateway` with a server certificate of `ca` for 127.0.0.1.
async fn nginx_for(gateway: &Gateway, ca: &TestCa, mutual: bool) -> Nginx {
    let (cert, key) = ca.issue(&["127.0.0.1", "localhost"]);
    let clients_ca = mutual.then(|| ca.cert_path().to_owned());
    Nginx::start(|port| example_config(port, gateway, (&cert, &key), clients_ca.as_deref())).await
}

/// Runs `examples/nginx/private-ca.sh DIR NAME HOST…` (openssl), as the README does, and
/// returns the certificate and key it wrote; the CA is `DIR/ca.pem`.
fn private_ca(dir: &Path, name: &str, hosts: &[&str]) -> (PathBuf, PathBuf) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/nginx/private-ca.sh");
    testkit::installed::program("openssl", "openssl (Debian's `openssl`)");
    let output = Command::new("bash")
        .arg(script)
        .arg(dir)
        .arg(name)
        .args(hosts)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "private-ca.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    )
}

/// An HTTP client that trusts only `ca`, as a user behind the proxy would be set up.
pub(crate) fn https_client(ca: &TestCa) -> Client {
    let root = reqwest::Certificate::from_pem(&std::fs::read(ca.cert_path()).unwrap()).unwrap();
    Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A node config reaching the gateway at `url` (through nginx), trusting `ca_cert`, with an
/// optional client certificate, and serving the mock's model `m`.
pub(crate) fn node_config(
    url: &str,
    key: &str,
    ca_cert: &Path,
    client: Option<(&Path, &Path)>,
    upstream: &MockUpstream,
) -> String {
    let client = client
        .map(|(cert, key)| {
            format!(
                "client_cert = \"{}\"\nclient_key = \"{}\"\n",
                cert.display(),
                key.display()
            )
        })
        .unwrap_or_default();
    format!(
        "[server]\nurl = \"{url}\"\napi_key = \"{key}\"\nca_cert = \"{}\"\n{client}\n[llm]\nbase_url = \"{}\"\napi_key = \"mock-key\"\n\n[node]\nname = \"behind-a-proxy\"\nfetch_wait_seconds = 2\nretry_backoff_ms = 20\n",
        ca_cert.display(),
        upstream.base_url()
    )
}

pub(crate) fn chat(content: &str) -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": content}]})
}

/// Sends `request` and returns once the response's headers arrived; a proxy that buffers
/// a held stream fails here.
pub(crate) async fn send(request: reqwest::RequestBuilder) -> Response {
    tokio::time::timeout(Duration::from_secs(15), request.send())
        .await
        .expect("the response's headers came through the proxy within 15 s")
        .unwrap()
}

/// Reads `response` into `seen` until what was read contains `marker`.
pub(crate) async fn read_until(response: &mut Response, seen: &mut String, marker: &str) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while !seen.contains(marker) {
            let chunk = response.chunk().await.unwrap();
            let chunk =
                chunk.unwrap_or_else(|| panic!("the stream ended before `{marker}`: {seen}"));
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no `{marker}` within 30 s; read so far: {seen:?}"));
}

/// Reads `response` into `seen` to its end.
pub(crate) async fn read_to_end(response: &mut Response, seen: &mut String) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = response.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the stream did not end within 30 s; read so far: {seen:?}"));
}

pub(crate) async fn status_of(gw: &Gateway, user: &str, id: &str) -> String {
    gw.job(user, id).await["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn the_readme_shows_the_tested_nginx_config_verbatim_with_timeouts_above_max_wait() {
    assert!(
        README.contains(&format!("```nginx\n{EXAMPLE}```")),
        "README.md must include examples/nginx/openbeepboop.conf verbatim in an nginx block"
    );
    let timeout = |directive: &str| -> u64 {
        let line = EXAMPLE
            .lines()
            .find(|l| l.trim_start().starts_with(directive))
            .unwrap_or_else(|| panic!("`{directive}` is set"));
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .trim_end_matches(";")
            .trim_end_matches('s')
            .parse()
            .unwrap()
    };
    // The gateway's default `max_wait_seconds`.
    let max_wait = 300;
    assert!(timeout("proxy_read_timeout") > max_wait);
    assert!(timeout("proxy_send_timeout") > max_wait);
    // The body limit is the gateway's default `max_submit_bytes` (64 MiB), the larger of its
    // two body limits, so that the proxy never refuses a node's submit the gateway takes.
    for directive in [
        "proxy_buffering off;",
        "proxy_request_buffering off;",
        "proxy_http_version 1.1;",
        "proxy_set_header Connection \"\";",
        "client_max_body_size 64m;",
    ] {
        assert!(
            EXAMPLE.contains(directive),
            "the example sets `{directive}`"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_over_https_through_nginx_runs_jobs_and_a_waited_submit_gets_the_completion() {
    let (gw, user, node_key, mock) = stack(&[]).await;
    let ca = TestCa::new();
    let nginx = nginx_for(&gw, &ca, false).await;
    let _node = NodeProcess::start(
        "run",
        &node_config(&nginx.url(""), &node_key, ca.cert_path(), None, &mock),
    );
    let https = https_client(&ca);

    let response = send(
        https
            .post(nginx.url("/v1/chat/completions?wait=60"))
            .bearer_auth(&user)
            .json(&chat("hello through nginx")),
    )
    .await;
    assert_eq!(response.status(), 200, "error log: {}", nginx.error_log());
    assert!(response.headers().contains_key("x-request-id"));
    assert!(response.headers().contains_key("x-obb-queue-ms"));
    let completion: Value = response.json().await.unwrap();
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(
        completion["choices"][0]["message"]["content"],
        "mock: hello through nginx"
    );
    assert_eq!(mock.calls(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_event_stream_through_nginx_arrives_as_each_status_happens() {
    let (gw, user, node_key, mock) = stack(&[]).await;
    let ca = TestCa::new();
    let nginx = nginx_for(&gw, &ca, false).await;
    let https = https_client(&ca);

    let submitted = send(
        https
            .post(nginx.url("/v1/chat/completions"))
            .bearer_auth(&user)
            .json(&chat("watch me")),
    )
    .await;
    assert_eq!(submitted.status(), 202);
    let id = submitted.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut events = send(
        https
            .get(nginx.url(&format!("/v1/jobs/{id}/stream")))
            .bearer_auth(&user),
    )
    .await;
    assert_eq!(events.status(), 200);
    assert!(
        events.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut seen = String::new();
    // No node runs yet: the first event reaches the client while the job waits in the queue.
    read_until(&mut events, &mut seen, "event: queued").await;
    assert_eq!(status_of(&gw, &user, &id).await, "queued");

    let _node = NodeProcess::start(
        "run",
        &node_config(&nginx.url(""), &node_key, ca.cert_path(), None, &mock),
    );
    read_to_end(&mut events, &mut seen).await;
    assert!(seen.contains("event: completed"), "{seen}");
    assert!(seen.contains("mock: watch me"), "{seen}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_through_nginx_gets_keepalives_while_queued_then_chunks_spread_over_time() {
    let (gw, user, node_key, mock) = stack(&[("OBB_STREAM_KEEPALIVE_SECONDS", "1")]).await;
    let ca = TestCa::new();
    let nginx = nginx_for(&gw, &ca, false).await;
    let proxy = Proxy {
        base: nginx.url(""),
        name: "nginx",
        log: &|| nginx.error_log(),
    };
    assert_streams_unbuffered(&proxy, &gw, &user, &node_key, &mock, &ca).await;
}

/// A proxy in front of the gateway, as the stream test sees it.
pub(crate) struct Proxy<'a> {
    pub base: String,
    pub name: &'static str,
    pub log: &'a dyn Fn() -> String,
}

/// A `stream: true` request through `proxy`, with no `wait` and no node yet: a keep-alive
/// comes through while the job is still queued, so nothing is buffered; once a node (which
/// reaches the gateway through `proxy` too) runs the job, the chunks the mock streams 100 ms
/// apart arrive spread over time, as live as they were made, and `[DONE]` follows.
pub(crate) async fn assert_streams_unbuffered(
    proxy: &Proxy<'_>,
    gw: &Gateway,
    user: &str,
    node_key: &str,
    mock: &MockUpstream,
    ca: &TestCa,
) {
    let https = https_client(ca);
    let text = format!("stream through {}", proxy.name);
    let mut body = chat(&text);
    body["stream"] = json!(true);
    let mut response = send(
        https
            .post(format!("{}/v1/chat/completions", proxy.base))
            .bearer_auth(user)
            .json(&body),
    )
    .await;
    assert_eq!(
        response.status(),
        200,
        "{}'s log: {}",
        proxy.name,
        (proxy.log)()
    );
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let id = response.headers()["x-obb-job-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut seen = String::new();
    read_until(&mut response, &mut seen, ": keep-alive").await;
    assert_eq!(status_of(gw, user, &id).await, "queued");
    assert!(!seen.contains("data:"), "{seen}");

    // The node reaches the gateway through the proxy too, so its relay request's body must
    // pass unbuffered as well: each chunk reaches the client about when the mock made it.
    mock.set_stream(10, Duration::from_millis(100));
    let _node = NodeProcess::start(
        "run",
        &node_config(&proxy.base, node_key, ca.cert_path(), None, mock),
    );
    let events = Sse::continuing(response, seen).rest().await;
    assert!(
        events.last().is_some_and(Event::is_done),
        "{}: {events:?}",
        proxy.name
    );
    assert!(
        events
            .iter()
            .filter(|e| !e.is_done())
            .all(|e| e.json()["object"] == "chat.completion.chunk"),
        "{events:?}"
    );
    let texts: Vec<&Event> = events.iter().filter(|e| e.content().is_some()).collect();
    let content: String = texts.iter().filter_map(|e| e.content()).collect();
    assert_eq!(
        content,
        (0..10).map(|i| format!("t{i} ")).collect::<String>()
    );
    let (first, last) = (texts[0], texts[texts.len() - 1]);
    let sent = Duration::from_micros(
        last.json()["obb_sent_us"].as_u64().unwrap()
            - first.json()["obb_sent_us"].as_u64().unwrap(),
    );
    let arrived = last.at - first.at;
    assert!(
        arrived.as_secs_f64() >= 0.8 * sent.as_secs_f64(),
        "through {}, chunks the mock spread over {sent:?} arrived over {arrived:?}",
        proxy.name
    );
    let job = eventually(Duration::from_secs(10), "the job to complete", || async {
        let job = gw.job(user, &id).await;
        (job["status"] == "completed").then_some(job)
    })
    .await;
    assert_eq!(job["result"]["choices"][0]["message"]["content"], content);
    println!(
        "figures: proxy={} mock_span_ms={} client_span_ms={}",
        proxy.name,
        sent.as_millis(),
        arrived.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_with_mutual_tls_lets_in_only_a_node_with_a_client_cert_of_the_private_ca() {
    let (gw, user, node_key, mock) = stack(&[]).await;
    // Certificates made as the README says, with openssl rather than the tests' own CA.
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = private_ca(certs.path(), "gateway", &["127.0.0.1", "localhost"]);
    let (node_cert, node_key_pem) = private_ca(certs.path(), "node-1", &[]);
    let ca = certs.path().join("ca.pem");
    let nginx = Nginx::start(|port| example_config(port, &gw, (&cert, &key), Some(&ca))).await;
    let url = nginx.url("");

    let stranger = TestCa::new();
    let (other_cert, other_key) = stranger.issue(&["node-2"]);
    for (client, refusal) in [
        (None, "No required SSL certificate was sent"),
        (
            Some((other_cert.as_path(), other_key.as_path())),
            "The SSL certificate error",
        ),
    ] {
        let mut check =
            NodeProcess::start("check", &node_config(&url, &node_key, &ca, client, &mock));
        let status = check
            .wait(Duration::from_secs(30))
            .expect("`obb-node check` ends");
        let log = check.log();
        assert!(!status.success(), "check passed: {log}");
        assert!(
            log.contains("400") && log.contains(refusal),
            "nginx's refusal is reported: {log}"
        );
    }

    // Users reach the gateway directly here; only the node's hop is mutual TLS.
    let id = gw.submit_id(&user, "m").await;
    let _node = NodeProcess::start(
        "run",
        &node_config(
            &url,
            &node_key,
            &ca,
            Some((&node_cert, &node_key_pem)),
            &mock,
        ),
    );
    eventually(Duration::from_secs(30), "the job to complete", || async {
        (status_of(&gw, &user, &id).await == "completed").then_some(())
    })
    .await;
    let access = std::fs::read_to_string(nginx.dir().join("access.log")).unwrap();
    assert!(access.contains("POST /internal/queue/submit"), "{access}");
}
