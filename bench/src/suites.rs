//! Every suite but the Batch API (batch.rs): each starts what it needs, measures, prints
//! rows and returns JSON.

use crate::Args;
use crate::drive::drive;
use crate::stats::{Latencies, cpu_ms, row, rss_mib};
use crate::wire;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use testkit::mock::MockUpstream;
use testkit::{Gateway, NodeProcess, chat};

/// Runs `total` calls of `call` on `concurrency` workers; returns the latencies and wall time.
async fn load<F, Fut>(total: u64, concurrency: u64, call: F) -> (Latencies, Duration)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    drive(total, vec![(); concurrency as usize], move |(), i| {
        let call = Arc::clone(&call);
        async move { (Some(()), call(i).await) }
    })
    .await
}

/// The gateway's `host:port`, for the lean load generator.
fn host_of(gw: &Gateway) -> String {
    gw.url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

fn fast_settings() -> Vec<(&'static str, &'static str)> {
    vec![("OBB_THREADS", "2"), ("OBB_REAPER_INTERVAL_MS", "1000")]
}

/// 1. Durable 202 submits at 1, 16, 64 and 256 connections.
pub async fn submit(args: &Args) -> anyhow::Result<Value> {
    let gw = Gateway::start(&fast_settings()).await;
    let user = gw.key("user").await;
    let mut results = Vec::new();
    for connections in [1u64, 16, 64, 256] {
        let total = if args.quick {
            40
        } else if connections == 1 {
            3_000
        } else {
            20_000
        };
        let (host, token) = (host_of(&gw), user.clone());
        let path = "/v1/chat/completions";
        let (latencies, elapsed, failed) =
            wire::load(&host.clone(), total, connections, 202, move |i| {
                wire::post(
                    &host,
                    path,
                    &token,
                    &chat("m", &format!("job {i}")).to_string(),
                )
            })
            .await?;
        anyhow::ensure!(
            failed == 0,
            "{failed} submits at {connections} connections were not accepted"
        );
        let rate = total as f64 / elapsed.as_secs_f64();
        row(
            "submit",
            &format!("{connections} connections"),
            &format!(
                "{rate:>8.0} jobs/s  p50 {:.2} ms  p99 {:.2} ms",
                latencies.percentile(50.0),
                latencies.percentile(99.0)
            ),
        );
        results.push(json!({"connections": connections, "jobs": total, "jobs_per_s": rate, "latency": latencies.summary()}));
    }
    Ok(json!(results))
}

/// 2. Jobs per second from submit to stored result with 1, 4 and 16 nodes; latency at low load.
pub async fn end_to_end(args: &Args) -> anyhow::Result<Value> {
    let mut results = Vec::new();
    let node_counts: &[u32] = if args.quick { &[1] } else { &[1, 4, 16] };
    for &nodes in node_counts {
        let gw = Gateway::start(&fast_settings()).await;
        let (user, key) = (gw.key("user").await, gw.key("node").await);
        let mock = MockUpstream::start(&["m"]).await?;
        mock.set_delay(Duration::from_millis(args.upstream_ms));
        let _nodes: Vec<NodeProcess> = (0..nodes)
            .map(|n| {
                NodeProcess::start("run", &NodeProcess::config(&gw, &key, &format!("bench-{n}"), Some(&mock.base_url()),
                    "models = [\"m\"]\nconcurrency = 32\nbatch_size = 64\nsummary_seconds = 3600"))
            })
            .collect();
        let total = if args.quick { 100 } else { 20_000 };
        let started = Instant::now();
        let (host, token) = (host_of(&gw), user.clone());
        let (_, _, failed) = wire::load(&host.clone(), total, 64, 202, move |i| {
            wire::post(
                &host,
                "/v1/chat/completions",
                &token,
                &chat("m", &format!("e2e {i}")).to_string(),
            )
        })
        .await?;
        anyhow::ensure!(failed == 0, "{failed} end-to-end submits were not accepted");
        let deadline = Instant::now() + Duration::from_secs(if args.quick { 60 } else { 900 });
        while (gw.metric("obb_jobs_finished_total", "").await as u64) < total {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the nodes did not finish {total} jobs in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rate = total as f64 / started.elapsed().as_secs_f64();
        row(
            "e2e",
            &format!("{nodes} nodes, upstream {} ms", args.upstream_ms),
            &format!("{rate:>8.0} jobs/s"),
        );
        results.push(json!({"nodes": nodes, "jobs": total, "jobs_per_s": rate, "upstream_ms": args.upstream_ms}));
        if nodes == 1 {
            let (http, url, token) = (
                reqwest::Client::new(),
                gw.url("/v1/chat/completions?wait=30"),
                user.clone(),
            );
            let (latencies, _) = load(if args.quick { 10 } else { 300 }, 1, move |i| {
                let (http, url, token) = (http.clone(), url.clone(), token.clone());
                async move { matches!(http.post(url).bearer_auth(token).json(&chat("m", &format!("low {i}"))).send().await, Ok(r) if r.status() == 200) }
            })
            .await;
            row(
                "e2e",
                "submit to result, low load",
                &format!(
                    "p50 {:.2} ms  p99 {:.2} ms",
                    latencies.percentile(50.0),
                    latencies.percentile(99.0)
                ),
            );
            results.push(json!({"low_load_latency": latencies.summary()}));
        }
    }
    Ok(json!(results))
}

/// 3. A `?wait` round trip minus the same request sent straight to the mock upstream.
pub async fn wait_overhead(args: &Args) -> anyhow::Result<Value> {
    let gw = Gateway::start(&fast_settings()).await;
    let (user, key) = (gw.key("user").await, gw.key("node").await);
    let mock = MockUpstream::start(&["m"]).await?;
    let _node = NodeProcess::start(
        "run",
        &NodeProcess::config(
            &gw,
            &key,
            "bench-wait",
            Some(&mock.base_url()),
            "models = [\"m\"]\nconcurrency = 64\nbatch_size = 64\nsummary_seconds = 3600",
        ),
    );
    let total = if args.quick { 20 } else { 2_000 };
    let mut results = Vec::new();
    for concurrency in [1u64, 32] {
        let (http, direct_url) = (
            reqwest::Client::new(),
            format!("{}/chat/completions", mock.base_url()),
        );
        let (direct, _) = load(total, concurrency, move |i| {
            let (http, url) = (http.clone(), direct_url.clone());
            async move {
                http.post(url)
                    .json(&chat("m", &format!("d {i}")))
                    .send()
                    .await
                    .is_ok()
            }
        })
        .await;
        let (http, url, token) = (
            reqwest::Client::new(),
            gw.url("/v1/chat/completions?wait=30"),
            user.clone(),
        );
        let gateway = gw.pid().map_or(f64::NAN, cpu_ms);
        let (waited, elapsed) = load(total, concurrency, move |i| {
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            async move { matches!(http.post(url).bearer_auth(token).json(&chat("m", &format!("w {i}"))).send().await, Ok(r) if r.status() == 200) }
        })
        .await;
        // The gateway's CPU for the waited round trips: the submits, the node's fetches and
        // submits, and the answers.
        let cpu_per_round_trip = (gw.pid().map_or(f64::NAN, cpu_ms) - gateway) / total as f64;
        let per_s = total as f64 / elapsed.as_secs_f64();
        let p50 = waited.percentile(50.0) - direct.percentile(50.0);
        let p99 = waited.percentile(99.0) - direct.percentile(99.0);
        row(
            "wait",
            &format!("overhead at concurrency {concurrency}"),
            &format!(
                "p50 {p50:.2} ms  p99 {p99:.2} ms  {per_s:.0} round trips/s  gateway CPU {cpu_per_round_trip:.3} ms each"
            ),
        );
        results.push(json!({"concurrency": concurrency, "direct": direct.summary(), "through_gateway": waited.summary(),
            "overhead_p50_ms": p50, "overhead_p99_ms": p99, "round_trips_per_s": per_s,
            "gateway_cpu_ms_per_round_trip": cpu_per_round_trip}));
    }
    Ok(json!(results))
}

/// Writes `count` queued jobs straight into the database, as a fast stand-in for submits.
/// Queues `count` jobs over `keys` keys in turn (the first is the user key the gateway made;
/// the others exist only as owners, which is all the queue reads of them).
fn prefill(db: &std::path::Path, count: u64, keys: u64) -> anyhow::Result<()> {
    let mut conn = rusqlite::Connection::open(db)?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;")?;
    let owner: String = conn.query_row(
        "SELECT id FROM api_keys WHERE role = 'USER' LIMIT 1",
        [],
        |r| r.get(0),
    )?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO jobs (id, owner_key_id, model, status, priority, request_payload, request_hash,
                 max_attempts, created_at, updated_at, expires_at)
             VALUES (?1, ?2, ?3, 'queued', ?4, ?5, 'bench', 3, ?6, ?6, ?7)",
        )?;
        for i in 0..count {
            let payload = format!(
                r#"{{"model":"m{}","messages":[{{"role":"user","content":"scale {i}"}}]}}"#,
                i % 8
            );
            let key = i % keys.max(1);
            let owner = if key == 0 {
                owner.clone()
            } else {
                format!("key_bench{key}")
            };
            insert.execute(rusqlite::params![
                format!("job-{i:032x}"),
                owner,
                format!("m{}", i % 8),
                (i % 5 + 1) as i64,
                payload,
                now + i as i64,
                now + 86_400_000
            ])?;
        }
    }
    tx.commit()?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(())
}

/// 4. Lease latency at 1,000 versus `--scale-jobs` queued, RSS, and bytes per job.
pub async fn scale(args: &Args) -> anyhow::Result<Value> {
    let sizes = if args.quick {
        vec![100, 1_000]
    } else {
        vec![1_000, args.scale_jobs]
    };
    let mut results = Vec::new();
    for queued in sizes {
        let mut gw = Gateway::start(&fast_settings()).await;
        let (_user, key) = (gw.key("user").await, gw.key("node").await);
        gw.stop_with("-TERM");
        let filled = Instant::now();
        prefill(&gw.db(), queued, args.scale_keys)?;
        let fill_s = filled.elapsed().as_secs_f64();
        gw.spawn().await;
        let leases = if args.quick { 20 } else { 300 };
        let (http, url, token) = (
            reqwest::Client::new(),
            gw.url("/internal/queue/fetch"),
            key.clone(),
        );
        let (lease, _) = load(leases, 1, move |i| {
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            async move {
                let body = json!({"node_id": "bench", "models": [format!("m{}", i % 8)], "limit": 1, "wait": 0});
                matches!(http.post(url).bearer_auth(token).json(&body).send().await, Ok(r) if r.status() == 200)
            }
        })
        .await;
        let (http, url) = (reqwest::Client::new(), gw.url("/metrics"));
        let (scrape, _) = load(if args.quick { 3 } else { 20 }, 1, move |_| {
            let (http, url) = (http.clone(), url.clone());
            async move { http.get(url).send().await.is_ok() }
        })
        .await;
        let rss = gw.pid().map_or(f64::NAN, rss_mib);
        let db_bytes = ["", "-wal"]
            .iter()
            .filter_map(|suffix| std::fs::metadata(format!("{}{suffix}", gw.db().display())).ok())
            .map(|m| m.len())
            .sum::<u64>();
        let per_job = db_bytes as f64 / queued as f64;
        row(
            "scale",
            &format!("{queued} queued, {} keys", args.scale_keys),
            &format!(
                "lease p50 {:.2} ms p99 {:.2} ms  /metrics p50 {:.1} ms  RSS {rss:.0} MiB  {per_job:.0} B/job",
                lease.percentile(50.0),
                lease.percentile(99.0),
                scrape.percentile(50.0)
            ),
        );
        results.push(json!({"queued": queued, "keys": args.scale_keys, "prefill_s": fill_s, "lease": lease.summary(), "metrics_scrape": scrape.summary(),
            "rss_mib": rss, "db_bytes": db_bytes, "bytes_per_job": per_job}));
    }
    Ok(json!(results))
}

/// llama.cpp's server (the `xllamacpp` wheel) serving SmolLM2-135M-Instruct, from the
/// Python of `--python` (else `target/test-venv`), once its model is loaded; and its port.
pub async fn start_smollm2(args: &Args) -> anyhow::Result<(std::process::Child, u16)> {
    let python = args
        .python
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("target/test-venv/bin/python"));
    let port = testkit::free_port();
    let server = std::process::Command::new(&python)
        .arg("scripts/serve_smollm2.py")
        .arg(port.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let up = Instant::now();
    // llama.cpp's server answers `/health` with 503 until the model is loaded.
    while !reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        anyhow::ensure!(
            up.elapsed() < Duration::from_secs(120),
            "the llama.cpp server did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((server, port))
}

/// A gateway and one node serving SmolLM2 from the llama.cpp server on `port` through the
/// `local_llm` shortcut, `concurrency` jobs at once; and a USER key.
pub async fn smollm2_stack(port: u16, concurrency: u64) -> (Gateway, String, NodeProcess) {
    let gw = Gateway::start(&fast_settings()).await;
    let (user, key) = (gw.key("user").await, gw.key("node").await);
    let node = NodeProcess::start(
        "run",
        &format!(
            "[server]\nurl = \"{}\"\napi_key = \"{key}\"\n[local_llm]\nenabled = true\nport = {port}\n[node]\nname = \"bench-llm\"\nconcurrency = {concurrency}\nmodels = [\"smollm2\"]\n",
            gw.base
        ),
    );
    (gw, user, node)
}

/// 5. SmolLM2 on llama.cpp's server: through gateway and node versus direct, same concurrency.
pub async fn real_model(args: &Args) -> anyhow::Result<Value> {
    let (mut server, port) = start_smollm2(args).await?;
    let concurrency = 2u64;
    let (gw, user, _node) = smollm2_stack(port, concurrency).await;
    let total = if args.quick { 4 } else { 40 };
    // Both sides must do the same work. At temperature 0 an answer's length still varies
    // with how the server batches its two slots (20 direct requests ranged from 4 to 32
    // tokens), so `ignore_eos`, llama.cpp's own field, which gateway and node pass through
    // untouched, makes every answer exactly `max_tokens` long. The sides alternate over two
    // rounds, so that neither gains from the prompt cache or from going second. Completion
    // tokens are counted as a check.
    let body = |i: u64| json!({"model": "smollm2", "messages": [{"role": "user", "content": format!("Count to ten, attempt {i}.")}], "max_tokens": 32, "temperature": 0, "ignore_eos": true});
    let mut sides = [(Duration::ZERO, 0u64); 2];
    for round in 0..2u64 {
        let order = if round == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let straight = side == 0;
            let (http, token) = (reqwest::Client::new(), user.clone());
            let tokens = Arc::new(AtomicU64::new(0));
            let counted = Arc::clone(&tokens);
            let url = if straight {
                format!("http://127.0.0.1:{port}/v1/chat/completions")
            } else {
                gw.url("/v1/chat/completions?wait=120")
            };
            let (answered, took) = load(total / 2, concurrency, move |i| {
                let (http, url, token) = (http.clone(), url.clone(), token.clone());
                let counted = Arc::clone(&counted);
                async move {
                    let request = http.post(url).json(&body(round * total + i));
                    let request = if straight {
                        request
                    } else {
                        request.bearer_auth(token)
                    };
                    let Ok(response) = request.send().await else {
                        return false;
                    };
                    let ok = response.status() == 200;
                    let answer: Value = response.json().await.unwrap_or_default();
                    let used = answer["usage"]["completion_tokens"].as_u64().unwrap_or(0);
                    counted.fetch_add(used, Ordering::Relaxed);
                    ok
                }
            })
            .await;
            anyhow::ensure!(
                answered.count() as u64 == total / 2,
                "{} of {} requests {} failed",
                total / 2 - answered.count() as u64,
                total / 2,
                if straight {
                    "to the server"
                } else {
                    "through the queue"
                }
            );
            sides[side].0 += took;
            sides[side].1 += tokens.load(Ordering::Relaxed);
        }
    }
    let _ = server.kill();
    let [(direct, direct_tokens), (through, through_tokens)] = sides;
    let direct_rate = total as f64 / direct.as_secs_f64();
    let through_rate = total as f64 / through.as_secs_f64();
    let ratio = through_rate / direct_rate;
    row(
        "real",
        &format!("SmolLM2, concurrency {concurrency}"),
        &format!(
            "direct {direct_rate:.2} req/s  through the queue {through_rate:.2} req/s  ({:.0}%), {direct_tokens} and {through_tokens} tokens",
            ratio * 100.0
        ),
    );
    Ok(
        json!({"requests": total, "concurrency": concurrency, "direct_per_s": direct_rate, "through_per_s": through_rate,
        "ratio": ratio, "direct_completion_tokens": direct_tokens, "through_completion_tokens": through_tokens}),
    )
}

/// Size of the gateway's write-ahead log, in MiB.
fn wal_mib(gw: &Gateway) -> f64 {
    std::fs::metadata(format!("{}-wal", gw.db().display()))
        .map_or(0.0, |m| m.len() as f64 / 1_048_576.0)
}

/// Suite 6, the soak: mixed traffic for `--soak-minutes` (waited and queued submits, polls
/// and lists) against two nodes. Reports errors, RSS and WAL size over time.
pub async fn soak(args: &Args) -> anyhow::Result<Value> {
    let minutes = if args.quick { 0.1 } else { args.soak_minutes };
    let gw = Gateway::start(&fast_settings()).await;
    let (user, key) = (gw.key("user").await, gw.key("node").await);
    let mock = MockUpstream::start(&["m"]).await?;
    mock.set_delay(Duration::from_millis(5));
    let _nodes: Vec<NodeProcess> = (0..2)
        .map(|n| {
            NodeProcess::start(
                "run",
                &NodeProcess::config(
                    &gw,
                    &key,
                    &format!("soak-{n}"),
                    Some(&mock.base_url()),
                    "models = [\"m\"]\nconcurrency = 16\nbatch_size = 16\nsummary_seconds = 3600",
                ),
            )
        })
        .collect();
    let errors = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let mut samples = Vec::new();
    let mut next_sample = Instant::now();
    let http = reqwest::Client::new();
    while Instant::now() < end {
        let mut wave = tokio::task::JoinSet::new();
        for i in 0..40u64 {
            let (http, base, user, errors, requests) = (
                http.clone(),
                gw.base.clone(),
                user.clone(),
                Arc::clone(&errors),
                Arc::clone(&requests),
            );
            wave.spawn(async move {
                let ok = match i % 4 {
                    0 => http
                        .post(format!("{base}/v1/chat/completions?wait=30"))
                        .bearer_auth(&user)
                        .json(&chat("m", "soak"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200),
                    1 => http
                        .post(format!("{base}/v1/chat/completions"))
                        .bearer_auth(&user)
                        .json(&chat("m", "soak"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 202),
                    2 => http
                        .post(format!("{base}/v1/results/poll"))
                        .bearer_auth(&user)
                        .json(&json!({}))
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200),
                    _ => http
                        .get(format!("{base}/v1/jobs?limit=20"))
                        .bearer_auth(&user)
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200),
                };
                requests.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        while wave.join_next().await.is_some() {}
        if Instant::now() >= next_sample {
            next_sample = Instant::now() + Duration::from_secs(if args.quick { 1 } else { 30 });
            let rss = gw.pid().map_or(f64::NAN, rss_mib);
            samples.push(json!({"seconds": (minutes * 60.0 - end.saturating_duration_since(Instant::now()).as_secs_f64()).round(),
                "rss_mib": rss, "wal_mib": wal_mib(&gw), "requests": requests.load(Ordering::Relaxed)}));
        }
    }
    let errors = errors.load(Ordering::Relaxed);
    let total = requests.load(Ordering::Relaxed);
    let rss: Vec<f64> = samples
        .iter()
        .filter_map(|s| s["rss_mib"].as_f64())
        .collect();
    let wal: Vec<f64> = samples
        .iter()
        .filter_map(|s| s["wal_mib"].as_f64())
        .collect();
    let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    row(
        "soak",
        &format!("{minutes} min mixed traffic"),
        &format!(
            "{total} requests, {errors} errors, RSS {:.0} -> {:.0} MiB (max {:.0}), WAL max {:.1} MiB",
            rss.first().copied().unwrap_or(f64::NAN),
            rss.last().copied().unwrap_or(f64::NAN),
            max(&rss),
            max(&wal)
        ),
    );
    Ok(json!({"minutes": minutes, "requests": total, "errors": errors, "samples": samples}))
}
