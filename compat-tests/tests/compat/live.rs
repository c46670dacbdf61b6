//! The live official SDKs (Python and Node) against the real stack, covering the catalogue;
//! the node serves a model whose id holds `/` and `:`, for `models.retrieve()`.
//! The SDKs' own retries are exercised through a loopback proxy that answers its first
//! request with 429 or 503 and forwards the rest to the gateway.

use crate::stack::{MODEL, SLASHED_MODEL, Stack};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

async fn run_live(stack: &Stack, program: &Path, script: &str) -> String {
    let proxy_429 = fault_proxy(stack.gw.base.clone(), 429).await;
    let proxy_503 = fault_proxy(stack.gw.base.clone(), 503).await;
    let output = Command::new(program)
        .arg(
            testkit::installed::root()
                .join("compat-tests/live")
                .join(script),
        )
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
