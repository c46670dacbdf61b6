//! The `stream` suite (issue 18): what the live relay adds to a `stream: true` request.
//! The mock upstream streams chunk `i` as `t{i} ` with `obb_sent_us`, the wall-clock
//! microseconds it was written at; the same requests go to the mock directly and through
//! gateway and node, and the difference is what the queue adds:
//! - time to the first content chunk at concurrency 1;
//! - per chunk, arrival minus `obb_sent_us`;
//! - 256 streams at once, 200 chunks each: every chunk arrives, in order, and the gateway's
//!   largest RSS while they run.

use crate::Args;
use crate::stats::{Latencies, row, rss_mib};
use futures_util::StreamExt;
use serde_json::{Value, json};
use sse_stream::SseByteStream;
use std::time::{Duration, Instant, SystemTime};
use testkit::mock::MockUpstream;
use testkit::{Gateway, NodeProcess};

/// What one streamed request saw.
struct Seen {
    /// From sending the request to the first content chunk.
    first: Duration,
    /// Per content chunk, its arrival minus its `obb_sent_us`, in microseconds.
    lags_us: Vec<f64>,
    /// The content, joined.
    text: String,
}

fn now_us() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_micros() as f64)
}

/// Sends one `stream: true` chat and reads its chunks until `[DONE]`.
async fn streamed(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    content: &str,
) -> anyhow::Result<Seen> {
    let body = json!({"model": "m", "stream": true,
                      "messages": [{"role": "user", "content": content}]});
    let mut request = http.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let started = Instant::now();
    let response = request.send().await?;
    anyhow::ensure!(response.status() == 200, "answered {}", response.status());
    let mut events = SseByteStream::new(response.bytes_stream());
    let mut seen = Seen {
        first: Duration::ZERO,
        lags_us: Vec::new(),
        text: String::new(),
    };
    while let Some(event) = events.next().await {
        let Some(data) = event?.data else { continue };
        if data == "[DONE]" {
            return Ok(seen);
        }
        let chunk: Value = serde_json::from_str(&data)?;
        anyhow::ensure!(chunk.get("error").is_none(), "an error event: {data}");
        let Some(text) = chunk["choices"][0]["delta"]["content"].as_str() else {
            continue;
        };
        if seen.text.is_empty() {
            seen.first = started.elapsed();
        }
        seen.text.push_str(text);
        if let Some(sent) = chunk["obb_sent_us"].as_f64() {
            seen.lags_us.push(now_us() - sent);
        }
    }
    anyhow::bail!("the stream ended without [DONE]")
}

/// The text a stream of `chunks` chunks from the mock has.
fn expected(chunks: usize) -> String {
    (0..chunks).map(|i| format!("t{i} ")).collect()
}

pub async fn stream(args: &Args) -> anyhow::Result<Value> {
    let gw = Gateway::start(&[("OBB_THREADS", "2")]).await;
    let (user, key) = (gw.key("user").await, gw.key("node").await);
    let mock = MockUpstream::start(&["m"]).await?;
    let _node = NodeProcess::start(
        "run",
        &NodeProcess::config(
            &gw,
            &key,
            "bench-stream",
            Some(&mock.base_url()),
            "models = [\"m\"]\nconcurrency = 256\nbatch_size = 64\nsummary_seconds = 3600",
        ),
    );
    let http = reqwest::Client::new();
    let direct_url = format!("{}/chat/completions", mock.base_url());
    let gateway_url = gw.url("/v1/chat/completions");

    // 1. One at a time: first chunk and per-chunk lag, direct and through.
    let (requests, chunks) = if args.quick { (5, 8) } else { (100, 8) };
    mock.set_stream(chunks, Duration::from_millis(10));
    let mut direct = (Vec::new(), Vec::new());
    let mut through = (Vec::new(), Vec::new(), Vec::new());
    // A warm-up, so that connections and the node's first fetch are not measured.
    streamed(&http, &gateway_url, Some(&user), "warm").await?;
    for i in 0..requests {
        let seen = streamed(&http, &direct_url, None, &format!("d {i}")).await?;
        direct.0.push(seen.first);
        direct.1.extend(seen.lags_us);
        let seen = streamed(&http, &gateway_url, Some(&user), &format!("g {i}")).await?;
        anyhow::ensure!(seen.text == expected(chunks), "through: {:?}", seen.text);
        through.0.push(seen.first);
        through
            .2
            .push(seen.lags_us.first().copied().unwrap_or_default());
        through.1.extend(seen.lags_us);
    }
    // The first chunk's own lag (mock to client) against the rest of its wait (the queue
    // and the node's call): where the first chunk's time goes.
    let first_lags: Vec<f64> = through.2.clone();
    let (direct_first, through_first) = (Latencies::new(direct.0), Latencies::new(through.0));
    let lag = |lags: &[f64], p: f64| {
        Latencies::new(
            lags.iter()
                .map(|us| Duration::from_micros(us.max(0.0) as u64))
                .collect(),
        )
        .percentile(p)
    };
    let ttft_p50 = through_first.percentile(50.0) - direct_first.percentile(50.0);
    let ttft_p99 = through_first.percentile(99.0) - direct_first.percentile(99.0);
    let chunk_p50 = lag(&through.1, 50.0) - lag(&direct.1, 50.0);
    let chunk_p99 = lag(&through.1, 99.0) - lag(&direct.1, 99.0);
    row(
        "stream",
        "first chunk, concurrency 1",
        &format!(
            "direct p50 {:.2} ms; added p50 {ttft_p50:.2} ms  p99 {ttft_p99:.2} ms",
            direct_first.percentile(50.0)
        ),
    );
    let first_lag_p50 = lag(&first_lags, 50.0);
    row(
        "stream",
        "first chunk's own lag, concurrency 1",
        &format!(
            "p50 {first_lag_p50:.2} ms (mock to client; the rest of its wait is the queue and the node's call)"
        ),
    );
    row(
        "stream",
        "added per chunk, concurrency 1",
        &format!("p50 {chunk_p50:.2} ms  p99 {chunk_p99:.2} ms"),
    );

    // 2. Many at once: nothing lost or reordered, and the gateway's memory.
    let (streams, chunks) = if args.quick { (8, 20) } else { (256, 200) };
    mock.set_stream(chunks, Duration::from_millis(5));
    let pid = gw
        .pid()
        .ok_or_else(|| anyhow::anyhow!("no gateway process"))?;
    let started = Instant::now();
    let running = (0..streams).map(|i| {
        let (http, url, user) = (http.clone(), gateway_url.clone(), user.clone());
        tokio::spawn(async move { streamed(&http, &url, Some(&user), &format!("many {i}")).await })
    });
    let running = futures_util::future::join_all(running);
    tokio::pin!(running);
    let mut max_rss = rss_mib(pid);
    let results = loop {
        tokio::select! {
            results = &mut running => break results,
            () = tokio::time::sleep(Duration::from_millis(100)) => max_rss = max_rss.max(rss_mib(pid)),
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let want = expected(chunks);
    let mut whole = 0;
    let mut lags = Vec::new();
    for result in results {
        let seen = result??;
        whole += usize::from(seen.text == want);
        lags.extend(seen.lags_us);
    }
    anyhow::ensure!(
        whole == streams,
        "{} of {streams} streams lost or reordered chunks",
        streams - whole
    );
    let many_p50 = lag(&lags, 50.0);
    let many_p99 = lag(&lags, 99.0);
    row(
        "stream",
        &format!("{streams} streams x {chunks} chunks"),
        &format!(
            "all whole and in order in {elapsed:.1} s; lag p50 {many_p50:.2} ms p99 {many_p99:.2} ms; gateway max RSS {max_rss:.0} MiB"
        ),
    );
    Ok(json!({
        "first_chunk": {"direct": direct_first.summary(), "through": through_first.summary(),
                        "added_p50_ms": ttft_p50, "added_p99_ms": ttft_p99},
        "first_chunk_lag_p50_ms": first_lag_p50,
        "per_chunk_added_p50_ms": chunk_p50, "per_chunk_added_p99_ms": chunk_p99,
        "many": {"streams": streams, "chunks": chunks, "seconds": elapsed, "whole": whole,
                 "lag_p50_ms": many_p50, "lag_p99_ms": many_p99, "gateway_max_rss_mib": max_rss},
    }))
}
