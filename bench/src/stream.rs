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
use crate::suites;
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
    /// Content chunks, and from sending the request to the last of them.
    chunks: usize,
    last: Duration,
}

fn now_us() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_micros() as f64)
}

/// A `stream: true` chat for the mock's model `m`.
fn mock_chat(content: &str) -> Value {
    json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": content}]})
}

/// Sends one `stream: true` chat and reads its chunks until `[DONE]`.
async fn streamed(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &Value,
) -> anyhow::Result<Seen> {
    let mut request = http.post(url).json(body);
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
        chunks: 0,
        last: Duration::ZERO,
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
        if seen.chunks == 0 {
            seen.first = started.elapsed();
        }
        seen.chunks += 1;
        seen.last = started.elapsed();
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
    let node = NodeProcess::start(
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
    streamed(&http, &gateway_url, Some(&user), &mock_chat("warm")).await?;
    for i in 0..requests {
        let seen = streamed(&http, &direct_url, None, &mock_chat(&format!("d {i}"))).await?;
        direct.0.push(seen.first);
        direct.1.extend(seen.lags_us);
        let seen = streamed(
            &http,
            &gateway_url,
            Some(&user),
            &mock_chat(&format!("g {i}")),
        )
        .await?;
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
        tokio::spawn(async move {
            streamed(&http, &url, Some(&user), &mock_chat(&format!("many {i}"))).await
        })
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
    drop(node);
    drop(gw);
    let real = real(args).await?;
    Ok(json!({
        "smollm2": real,
        "first_chunk": {"direct": direct_first.summary(), "through": through_first.summary(),
                        "added_p50_ms": ttft_p50, "added_p99_ms": ttft_p99},
        "first_chunk_lag_p50_ms": first_lag_p50,
        "per_chunk_added_p50_ms": chunk_p50, "per_chunk_added_p99_ms": chunk_p99,
        "many": {"streams": streams, "chunks": chunks, "seconds": elapsed, "whole": whole,
                 "lag_p50_ms": many_p50, "lag_p99_ms": many_p99, "gateway_max_rss_mib": max_rss},
    }))
}

/// The third part: the real SmolLM2 at concurrency 2, time to the first token and tokens a second while
/// a stream runs, directly from llama.cpp's server and through gateway and node. The two
/// sides alternate over two rounds, so that neither gains from the prompt cache or from
/// going second; `ignore_eos` makes every answer `max_tokens` long (see `real_model`).
async fn real(args: &Args) -> anyhow::Result<Value> {
    let (mut server, port) = suites::start_smollm2(args).await?;
    let (gw, user, _node) = suites::smollm2_stack(port, 2).await;
    let per_side: usize = if args.quick { 2 } else { 20 };
    let direct_url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let through_url = gw.url("/v1/chat/completions");
    let http = reqwest::Client::new();
    let body = |i: usize| {
        json!({"model": "smollm2", "stream": true, "max_tokens": 32,
        "temperature": 0, "ignore_eos": true,
        "messages": [{"role": "user", "content": format!("Count to ten, attempt {i}.")}]})
    };
    // One request each way first: the server's first answer after loading its model, and
    // the node's first fetch, are not what is measured.
    streamed(&http, &direct_url, None, &body(1_000_000)).await?;
    streamed(&http, &through_url, Some(&user), &body(2_000_000)).await?;
    let mut sides: [Vec<Seen>; 2] = [Vec::new(), Vec::new()];
    for round in 0..2 {
        let order = if round == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (url, token) = match side {
                0 => (direct_url.as_str(), None),
                _ => (through_url.as_str(), Some(user.as_str())),
            };
            // Two at a time: the node's and the server's concurrency.
            for pair in 0..per_side.div_ceil(4) {
                // Each side its own prompts, so that neither reads the other's from the
                // server's prompt cache.
                let i = side * 10_000 + round * per_side + pair * 2;
                let (one, two) = (body(i), body(i + 1));
                let (a, b) = tokio::join!(
                    streamed(&http, url, token, &one),
                    streamed(&http, url, token, &two)
                );
                sides[side].extend([a?, b?]);
            }
        }
    }
    let _ = server.kill();
    let summary = |seen: &[Seen]| {
        let first = Latencies::new(seen.iter().map(|s| s.first).collect()).percentile(50.0);
        // Tokens a second while a stream runs: its chunks after the first, over their span.
        let rates: Vec<f64> = seen
            .iter()
            .filter(|s| s.chunks > 1 && s.last > s.first)
            .map(|s| (s.chunks - 1) as f64 / (s.last - s.first).as_secs_f64())
            .collect();
        let rate = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
        (first, rate)
    };
    let (direct_first, direct_rate) = summary(&sides[0]);
    let (through_first, through_rate) = summary(&sides[1]);
    anyhow::ensure!(
        sides[1].iter().all(|s| s.chunks >= 10),
        "a stream through the queue had fewer than 10 chunks"
    );
    row(
        "stream",
        "SmolLM2, concurrency 2",
        &format!(
            "first token direct p50 {direct_first:.1} ms, through {:+.1} ms; {through_rate:.1} tokens/s through vs {direct_rate:.1} direct ({:.0}%)",
            through_first - direct_first,
            through_rate / direct_rate * 100.0
        ),
    );
    Ok(
        json!({"streams_per_side": sides[0].len(), "first_token_direct_p50_ms": direct_first,
        "first_token_added_p50_ms": through_first - direct_first,
        "tokens_per_s_direct": direct_rate, "tokens_per_s_through": through_rate}),
    )
}
