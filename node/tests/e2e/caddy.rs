//! A real Caddy terminating TLS in front of the gateway, configured with the very file the
//! README shows (`examples/caddy/Caddyfile`) and a private CA: a node over `https://` with
//! `[server] ca_cert` runs jobs, and a `stream: true` request arrives unbuffered (keep-alive
//! comments while its job is queued, then the chunks and `[DONE]`).

use crate::proxy::{
    Proxy, assert_streams_unbuffered, chat, https_client, node_config, send, swap_in,
};
use crate::stack;
use serde_json::Value;
use std::path::Path;
use testkit::{Caddy, Gateway, NodeProcess, TestCa};

/// The Caddyfile users are given, as the README includes it.
const EXAMPLE: &str = include_str!("../../../examples/caddy/Caddyfile");
const README: &str = include_str!("../../../README.md");

fn swap(text: &str, from: &str, to: &str) -> String {
    swap_in("examples/caddy/Caddyfile", text, from, to)
}

/// The example with this deployment's port, gateway address and certificate. Nothing else
/// changes.
fn example_config(port: u16, gateway: &Gateway, (cert, key): (&Path, &Path)) -> String {
    let address = gateway.base.trim_start_matches("http://");
    let mut config = swap(
        EXAMPLE,
        "obb.example.com {",
        &format!("https://127.0.0.1:{port} {{"),
    );
    config = swap(
        &config,
        "reverse_proxy 127.0.0.1:8000 {",
        &format!("reverse_proxy {address} {{"),
    );
    config = swap(
        &config,
        "/etc/caddy/obb/gateway.pem",
        &cert.display().to_string(),
    );
    swap(
        &config,
        "/etc/caddy/obb/gateway.key",
        &key.display().to_string(),
    )
}

/// Caddy in front of `gateway` with a server certificate of `ca` for 127.0.0.1.
async fn caddy_for(gateway: &Gateway, ca: &TestCa) -> Caddy {
    let (cert, key) = ca.issue(&["127.0.0.1", "localhost"]);
    Caddy::start(|port| example_config(port, gateway, (&cert, &key))).await
}

#[test]
fn the_readme_shows_the_tested_caddyfile_verbatim_with_timeouts_above_max_wait() {
    assert!(
        README.contains(&format!("```caddyfile\n{EXAMPLE}```")),
        "README.md must include examples/caddy/Caddyfile verbatim in a caddyfile block"
    );
    let timeout = |directive: &str| -> u64 {
        let line = EXAMPLE
            .lines()
            .find(|l| l.trim_start().starts_with(directive))
            .unwrap_or_else(|| panic!("`{directive}` is set"));
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .trim_end_matches('s')
            .parse()
            .unwrap()
    };
    // The gateway's default `max_wait_seconds`.
    let max_wait = 300;
    assert!(timeout("read_timeout") > max_wait);
    assert!(timeout("write_timeout") > max_wait);
    // `max_size` is the gateway's default `max_submit_bytes`, the larger of its body limits.
    for directive in ["flush_interval -1", "max_size 64MiB", "transport http {"] {
        assert!(
            EXAMPLE.contains(directive),
            "the example sets `{directive}`"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_over_https_through_caddy_with_server_ca_cert_runs_a_waited_job() {
    let (gw, user, node_key, mock) = stack(&[]).await;
    let ca = TestCa::new();
    let caddy = caddy_for(&gw, &ca).await;
    let _node = NodeProcess::start(
        "run",
        &node_config(&caddy.url(""), &node_key, ca.cert_path(), None, &mock),
    );
    let https = https_client(&ca);

    let response = send(
        https
            .post(caddy.url("/v1/chat/completions?wait=60"))
            .bearer_auth(&user)
            .json(&chat("hello through caddy")),
    )
    .await;
    assert_eq!(response.status(), 200, "caddy's log: {}", caddy.log());
    assert_eq!(
        response.headers()["server"],
        "Caddy",
        "the answer came through Caddy"
    );
    assert!(response.headers().contains_key("x-request-id"));
    let completion: Value = response.json().await.unwrap();
    assert_eq!(
        completion["choices"][0]["message"]["content"],
        "mock: hello through caddy"
    );
    // The node knows only Caddy's URL: its fetch and submit went through Caddy too.
    assert_eq!(mock.calls(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_through_caddy_gets_keepalives_while_queued_then_the_chunks_and_done() {
    let (gw, user, node_key, mock) = stack(&[("OBB_STREAM_KEEPALIVE_SECONDS", "1")]).await;
    let ca = TestCa::new();
    let caddy = caddy_for(&gw, &ca).await;
    let proxy = Proxy {
        base: caddy.url(""),
        name: "caddy",
        log: &|| caddy.log(),
    };
    assert_streams_unbuffered(&proxy, &gw, &user, &node_key, &mock, &ca).await;
}
