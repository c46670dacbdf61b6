//! The live official SDKs (Python and Node) against the real stack, covering the catalogue;
//! the node serves a model whose id holds `/` and `:`, for `models.retrieve()`.
//! The SDKs' own retries are exercised through a loopback proxy that answers its first
//! request with 429 or 503 and forwards the rest to the gateway.
//!
//! Live streams (issue 18): each SDK's `stream=True` iterator, timed chunk by chunk against
//! a mock that streams 100 ms apart, and with `X-OBB-Progress: true` while the job waits in
//! the queue (the scripts say what the SDK hands over; this file says what that must be).

use crate::stack::{LATE_MODEL, MODEL, SLASHED_MODEL, Stack};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Starts a proxy to `gateway` that answers every other request (the first, third, ...) with
/// `status`, so that a retrying SDK succeeds and a non-retrying one fails. Returns its URL.
async fn fault_proxy(gateway: String, status: u16) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        while let Ok((stream, _)) = listener.accept().await {
            let (http, gateway, seen) = (http.clone(), gateway.clone(), Arc::clone(&seen));
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                reader.read_line(&mut line).await.unwrap();
                let mut parts = line.split_whitespace();
                let (method, target) = (
                    parts.next().unwrap().to_owned(),
                    parts.next().unwrap().to_owned(),
                );
                let mut headers = Vec::new();
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).await.unwrap();
                    let header = header.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    if let Some((name, value)) = header.split_once(':') {
                        let (name, value) =
                            (name.trim().to_ascii_lowercase(), value.trim().to_owned());
                        if name == "content-length" {
                            length = value.parse().unwrap_or(0);
                        }
                        if [
                            "authorization",
                            "content-type",
                            "accept",
                            "prefer",
                            "idempotency-key",
                        ]
                        .contains(&name.as_str())
                        {
                            headers.push((name, value));
                        }
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).await.unwrap();
                let (code, content_type, payload) = if seen.fetch_add(1, Ordering::SeqCst) % 2 == 0
                {
                    let error = r#"{"error":{"message":"injected fault","type":"server_error","param":null,"code":null}}"#;
                    (
                        status,
                        "application/json".to_owned(),
                        error.as_bytes().to_vec(),
                    )
                } else {
                    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
                    let mut request = http
                        .request(method, format!("{gateway}{target}"))
                        .body(body);
                    for (name, value) in &headers {
                        request = request.header(name, value);
                    }
                    let response = request.send().await.unwrap();
                    let code = response.status().as_u16();
                    let content_type = response
                        .headers()
                        .get("content-type")
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default();
                    (code, content_type, response.bytes().await.unwrap().to_vec())
                };
                let head = format!(
                    "HTTP/1.1 {code} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nretry-after: 0\r\nconnection: close\r\n\r\n",
                    payload.len()
                );
                let stream = reader.get_mut();
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&payload).await;
            });
        }
    });
    base
}

/// `live/<script>` of this crate (found from its own manifest, not testkit's: with a target
/// dir shared between worktrees, testkit may have been built in another one).
fn live_script(script: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("live")
        .join(script)
}

async fn run_live(stack: &Stack, program: &Path, script: &str) -> String {
    let proxy_429 = fault_proxy(stack.gw.base.clone(), 429).await;
    let proxy_503 = fault_proxy(stack.gw.base.clone(), 503).await;
    let output = Command::new(program)
        .arg(live_script(script))
        .env("OBB_BASE_URL", &stack.gw.base)
        .env("OBB_USER_KEY", &stack.user)
        .env("OBB_NODE_KEY", &stack.node_key)
        .env("OBB_JOB_ID", &stack.finished_job)
        .env("OBB_FAULT_429_URL", proxy_429)
        .env("OBB_FAULT_503_URL", proxy_503)
        .env("NODE_PATH", testkit::installed::node_modules())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_python_sdk_passes_the_catalogue() {
    let stack = Stack::serving(&[MODEL, SLASHED_MODEL]).await;
    let python = testkit::installed::sdk_python();
    let out = run_live(&stack, &python, "live_python.py").await;
    assert!(
        out.contains("python live catalogue passed with openai 3.54.0"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_node_sdk_passes_the_catalogue() {
    let stack = Stack::serving(&[MODEL, SLASHED_MODEL]).await;
    let node = testkit::installed::program("node", "Node.js (Debian's `nodejs`)");
    testkit::installed::node_modules();
    let out = run_live(&stack, &node, "live_node.cjs").await;
    assert!(
        out.contains("node live catalogue passed with openai 7.57.0"),
        "{out}"
    );
}

/// Runs a `live/stream_*` script against `stack` and returns its JSON lines. When the script
/// says its `X-OBB-Progress` stream is open, the job must still be queued (so an `obb.queue`
/// event went out while it waited); only then does a node for `LATE_MODEL` start.
async fn run_streams(stack: &Stack, program: &Path, script: &str) -> Vec<Value> {
    let mut child = tokio::process::Command::new(program)
        .arg(live_script(script))
        .env("OBB_BASE_URL", &stack.gw.base)
        .env("OBB_USER_KEY", &stack.user)
        .env("OBB_MODEL", MODEL)
        .env("OBB_LATE_MODEL", LATE_MODEL)
        .env("NODE_PATH", testkit::installed::node_modules())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", program.display()));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut cases, mut late) = (Vec::new(), None);
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{script} said nothing for 60 s after {cases:?}"))
            .unwrap();
        let Some(line) = line else { break };
        let Ok(case) = serde_json::from_str::<Value>(&line) else {
            cases.push(Value::String(line));
            continue;
        };
        if case["case"] == "open" {
            let job = stack
                .gw
                .job(&stack.user, case["job"].as_str().unwrap())
                .await;
            assert_eq!(job["status"], "queued", "{job}");
            late = Some(stack.start_node("late-node", &[LATE_MODEL]));
        }
        cases.push(case);
    }
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "{script} failed after {cases:?}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(late.is_some(), "{script} opened its progress stream");
    cases
}

fn case<'a>(cases: &'a [Value], name: &str) -> &'a [Value] {
    cases
        .iter()
        .find(|c| c["case"] == name)
        .unwrap_or_else(|| panic!("no `{name}` case in {cases:?}"))["items"]
        .as_array()
        .unwrap()
}

/// The items that carried text, and the text they join to.
fn texts(items: &[Value]) -> (Vec<&Value>, String) {
    let texts: Vec<&Value> = items
        .iter()
        .filter(|i| i["text"].as_str().is_some_and(|t| !t.is_empty()))
        .collect();
    let joined = texts.iter().filter_map(|i| i["text"].as_str()).collect();
    (texts, joined)
}

/// What a streamed call with `include_usage` must hand the caller: the mock's ten chunks
/// whole, and its usage chunk.
fn assert_whole(items: &[Value], what: &str) {
    let whole: String = (0..10).map(|i| format!("t{i} ")).collect();
    assert_eq!(texts(items).1, whole, "{what}: {items:?}");
    let usage: Vec<&Value> = items.iter().filter(|i| i["usage"].is_object()).collect();
    assert_eq!(usage.len(), 1, "{what}: one usage chunk: {items:?}");
    assert_eq!(usage[0]["usage"]["completion_tokens"], 10, "{what}");
    assert_eq!(
        usage[0]["text"],
        Value::Null,
        "{what}: no text in the usage chunk"
    );
}

/// Both scripts' cases, checked alike.
fn assert_streams(cases: &[Value], sdk: &str) {
    // `stream=True` with `include_usage`: every item a chunk, arriving as the mock sends them.
    let live = case(cases, "live");
    assert!(
        live.iter().all(|i| i["object"] == "chat.completion.chunk"),
        "{sdk}: {live:?}"
    );
    assert_whole(live, &format!("{sdk} live"));
    let (texts, _) = texts(live);
    let (first, last) = (texts[0], texts[texts.len() - 1]);
    let at = |item: &Value, field: &str| item[field].as_u64().unwrap();
    let sent = at(last, "sent_us") - at(first, "sent_us");
    let arrived = at(last, "at_us") - at(first, "at_us");
    assert!(
        arrived as f64 >= 0.8 * sent as f64,
        "{sdk}: the mock spread its chunks over {sent} µs, the SDK handed them over in {arrived} µs"
    );
    assert!(
        at(first, "at_us") < at(last, "sent_us"),
        "{sdk}: the first chunk reached the caller before the mock wrote the last"
    );

    // `X-OBB-Progress: true` while queued: the gateway sent `obb.queue`, and the iterator
    // went on to the whole answer. The SDK does not skip the named event: it hands it over as
    // one more item, without `choices`, which a caller must step over.
    let progress = case(cases, "progress");
    let raw = cases.iter().find(|c| c["case"] == "progress").unwrap()["raw"]
        .as_str()
        .unwrap();
    let sent_events = raw.matches("event: obb.queue\n").count();
    assert!(sent_events >= 1, "{sdk}: the raw stream: {raw}");
    assert_whole(progress, &format!("{sdk} progress"));
    let queue_items: Vec<&Value> = progress
        .iter()
        .filter(|i| i["object"] != "chat.completion.chunk")
        .collect();
    assert_eq!(
        queue_items.len(),
        sent_events,
        "{sdk}: each obb.queue event is one item: {progress:?}"
    );
    assert!(
        queue_items
            .iter()
            .all(|i| i["object"] == "obb.queue" && i["choices"] == false),
        "{sdk}: {queue_items:?}"
    );
    println!(
        "figures: sdk={sdk} mock_span_us={sent} sdk_span_us={arrived} obb_queue_events={sent_events} handed_over_as_items={}",
        queue_items.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_sdk_streams_chunks_as_the_mock_sends_them_and_survives_obb_queue() {
    let stack = Stack::streaming(&[]).await;
    let python = testkit::installed::sdk_python();
    let cases = run_streams(&stack, &python, "stream_python.py").await;
    assert_streams(&cases, "python");
    assert!(
        cases
            .last()
            .is_some_and(|c| c == "python stream cases passed with openai 3.54.0"),
        "{cases:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_node_sdk_streams_chunks_as_the_mock_sends_them_and_survives_obb_queue() {
    let stack = Stack::streaming(&[]).await;
    let node = testkit::installed::program("node", "Node.js (Debian's `nodejs`)");
    testkit::installed::node_modules();
    let cases = run_streams(&stack, &node, "stream_node.cjs").await;
    assert_streams(&cases, "node");
    assert!(
        cases
            .last()
            .is_some_and(|c| c == "node stream cases passed with openai 7.57.0"),
        "{cases:?}"
    );
}
