//! The `held` suite: what a held connection costs the gateway. It opens `--held`
//! connections, each a `?wait=60` submit of a model no node serves, so that every one is held
//! open waiting; reads the gateway's RSS once all are in flight; closes them; and reads the
//! RSS again once they are gone and after a 10 s rest (does the memory go back?).

use crate::Args;
use crate::stats::{row, rss_mib};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use testkit::Gateway;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Connections opened at once: the listener's backlog is the limit that matters.
const OPEN_AT_ONCE: usize = 256;

pub async fn held(args: &Args) -> anyhow::Result<Value> {
    let count = if args.quick { 100 } else { args.held };
    let gw = Gateway::start(&[("OBB_THREADS", "2"), ("OBB_MAX_WAIT_SECONDS", "120")]).await;
    let user = gw.key("user").await;
    let pid = gw
        .pid()
        .ok_or_else(|| anyhow::anyhow!("no gateway process"))?;
    let idle = rss_mib(pid);
    let address = gw.base.trim_start_matches("http://").to_owned();
    let body = json!({"model": "held-nobody", "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
    let request = format!(
        "POST /v1/chat/completions?wait=100 HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {user}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut held = Vec::with_capacity(count);
    let opened = Instant::now();
    while held.len() < count {
        let batch = (count - held.len()).min(OPEN_AT_ONCE);
        let opening = (0..batch).map(|_| {
            let (address, request) = (address.clone(), request.clone());
            async move {
                let mut stream = TcpStream::connect(&address).await?;
                stream.write_all(request.as_bytes()).await?;
                anyhow::Ok(stream)
            }
        });
        for stream in futures_util::future::join_all(opening).await {
            held.push(stream?);
        }
    }
    // Held: every request is in flight (the metrics scrape itself is one more).
    let deadline = Instant::now() + Duration::from_secs(120);
    while (gw.metric("obb_http_requests_in_flight", "").await as usize) < count + 1 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the gateway did not hold {count} requests"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let open_s = opened.elapsed().as_secs_f64();
    let while_held = rss_mib(pid);
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(60);
    while gw.metric("obb_http_requests_in_flight", "").await > 1.0 {
        anyhow::ensure!(Instant::now() < deadline, "the held requests did not end");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let closed = rss_mib(pid);
    // A rest for the allocator to give memory back; measured, not waited on by a test.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rested = rss_mib(pid);
    let per_connection_kib = (while_held - idle) * 1024.0 / count as f64;
    row(
        "held",
        &format!("{count} held ?wait requests"),
        &format!(
            "RSS idle {idle:.0} MiB, held {while_held:.0} MiB ({per_connection_kib:.1} KiB each), closed {closed:.0} MiB, after 10 s {rested:.0} MiB"
        ),
    );
    Ok(
        json!({"held": count, "open_s": open_s, "rss_idle_mib": idle, "rss_held_mib": while_held,
        "rss_closed_mib": closed, "rss_after_10s_mib": rested, "kib_per_connection": per_connection_kib}),
    )
}
