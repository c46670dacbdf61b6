//! `obb-bench postgres`: one gateway on SQLite against one, two and three gateways on one
//! PostgreSQL database (Debian's server, started here with its defaults: `fsync` on), all on
//! this machine. For each: durable submits at 64 connections spread over the gateways, jobs
//! end to end with 4 nodes spread over them, and `?wait` round trips with 32 waiters; the CPU
//! each job cost the gateways and the PostgreSQL server.

use crate::Args;
use crate::stats::{Latencies, cpu_ms, row};
use crate::wire;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use testkit::mock::MockUpstream;
use testkit::postgres::Postgres;
use testkit::{Gateway, NodeProcess, chat};

/// Connections of the submit and end-to-end loads, spread over the gateways.
const CONNECTIONS: u64 = 64;
/// Waiters of the wait load, spread over the gateways.
const WAITERS: u64 = 32;

fn settings() -> Vec<(&'static str, &'static str)> {
    vec![("OBB_THREADS", "2"), ("OBB_REAPER_INTERVAL_MS", "1000")]
}

/// CPU used so far, in milliseconds, by the PostgreSQL server: the postmaster and every
/// process it started (a backend per connection, the WAL writer, the checkpointer).
fn server_cpu_ms(server: &Postgres) -> f64 {
    let Some(postmaster) = server.pid() else {
        return f64::NAN;
    };
    let children = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat
                        .rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .to_owned();
                    rest.parse::<u32>().ok()
                })
                == Some(postmaster)
        });
    cpu_ms(postmaster) + children.map(cpu_ms).sum::<f64>()
}

/// An `obb-node` on `gw` serving model `m` of `mock`, `concurrency` jobs at once.
fn node(gw: &Gateway, key: &str, name: &str, mock: &MockUpstream, concurrency: u32) -> NodeProcess {
    NodeProcess::start(
        "run",
        &NodeProcess::config(
            gw,
            key,
            name,
            Some(&mock.base_url()),
            &format!(
                "models = [\"m\"]\nconcurrency = {concurrency}\nbatch_size = 64\nsummary_seconds = 3600"
            ),
        ),
    )
}

/// CPU (gateways, server) between two readings, in milliseconds per job of `jobs`.
fn per_job(before: (f64, f64), after: (f64, f64), jobs: u64) -> (f64, f64) {
    (
        (after.0 - before.0) / jobs as f64,
        (after.1 - before.1) / jobs as f64,
    )
}

fn gateways_cpu_ms(gateways: &[Gateway]) -> f64 {
    gateways
        .iter()
        .map(|gw| gw.pid().map_or(f64::NAN, cpu_ms))
        .sum()
}

fn host_of(gw: &Gateway) -> String {
    gw.url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// `total` submits (rounded down to a multiple of the gateways), `CONNECTIONS` split over
/// the gateways; every latency, the slowest gateway's wall time and how many were sent.
async fn spread_load(
    gateways: &[Gateway],
    total: u64,
    user: &str,
    model: &'static str,
) -> anyhow::Result<(Latencies, Duration, u64)> {
    let each = CONNECTIONS / gateways.len() as u64;
    let share = total / gateways.len() as u64;
    let mut loads = Vec::new();
    for (g, gw) in gateways.iter().enumerate() {
        let (host, token) = (host_of(gw), user.to_owned());
        loads.push(tokio::spawn(async move {
            wire::load(&host.clone(), share, each, 202, move |i| {
                wire::post(
                    &host,
                    "/v1/chat/completions",
                    &token,
                    &chat(model, &format!("{g} {i}")).to_string(),
                )
            })
            .await
        }));
    }
    let mut all = Vec::new();
    let mut slowest = Duration::ZERO;
    for load in loads {
        let (latencies, elapsed, failed) = load.await??;
        anyhow::ensure!(failed == 0, "{failed} submits were not accepted");
        all.push(latencies);
        slowest = slowest.max(elapsed);
    }
    Ok((
        Latencies::merged(all),
        slowest,
        share * gateways.len() as u64,
    ))
}

/// One point: `count` gateways on the store `db`.
async fn point(
    args: &Args,
    db: PathBuf,
    count: usize,
    server: Option<&Postgres>,
) -> anyhow::Result<Value> {
    let engine = if server.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let label = format!(
        "{count} gateway{} on {engine}",
        if count > 1 { "s" } else { "" }
    );
    let first = Gateway::start_at(Some(db), &settings()).await;
    let mut gateways = vec![first];
    for _ in 1..count {
        let next = gateways[0].alongside(&settings()).await;
        gateways.push(next);
    }
    let (user, key) = (gateways[0].key("user").await, gateways[0].key("node").await);
    let cpu = |gateways: &[Gateway]| (gateways_cpu_ms(gateways), server.map_or(0.0, server_cpu_ms));

    // Durable submits, of a model no node serves: they stay queued.
    let total = if args.quick { 60 } else { 30_000 };
    let before = cpu(&gateways);
    let (latencies, elapsed, total) = spread_load(&gateways, total, &user, "queued").await?;
    let after = cpu(&gateways);
    let submits = total as f64 / elapsed.as_secs_f64();
    let submit_cpu = per_job(before, after, total);
    row(
        "postgres",
        &format!("{label}: submits, {CONNECTIONS} connections"),
        &format!(
            "{submits:>7.0} jobs/s  p50 {:.2} ms  p99 {:.2} ms  CPU per job: gateways {:.3} ms, PostgreSQL {:.3} ms",
            latencies.percentile(50.0),
            latencies.percentile(99.0),
            submit_cpu.0,
            submit_cpu.1
        ),
    );
    // End to end: 4 nodes, spread over the gateways, on a 0 ms mock.
    let mock = MockUpstream::start(&["m"]).await?;
    let nodes: Vec<NodeProcess> = (0..4)
        .map(|n| {
            node(
                &gateways[n % count],
                &key,
                &format!("bench-pg-{n}"),
                &mock,
                32,
            )
        })
        .collect();
    // Each job ends on the gateway its node reports through: the sum counts each once.
    let finished = async |gateways: &[Gateway]| {
        let mut sum = 0.0;
        for gw in gateways {
            sum += gw.metric("obb_jobs_finished_total", "").await;
        }
        sum as u64
    };
    let already = finished(&gateways).await;
    let total = if args.quick { 100 } else { 20_000 };
    let before = cpu(&gateways);
    let started = Instant::now();
    let (_, _, total) = spread_load(&gateways, total, &user, "m").await?;
    let deadline = Instant::now() + Duration::from_secs(if args.quick { 60 } else { 900 });
    while finished(&gateways).await < already + total {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the nodes did not finish {total} jobs in time: {:?}",
            gateways[0]
                .query("SELECT status, COUNT(*) FROM jobs WHERE model = 'm' GROUP BY status")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let end_to_end = total as f64 / started.elapsed().as_secs_f64();
    let after = cpu(&gateways);
    let e2e_cpu = per_job(before, after, total);
    row(
        "postgres",
        &format!("{label}: end to end, 4 nodes"),
        &format!(
            "{end_to_end:>7.0} jobs/s  CPU per job: gateways {:.3} ms, PostgreSQL {:.3} ms",
            e2e_cpu.0, e2e_cpu.1
        ),
    );
    drop(nodes);

    // `?wait` round trips: waiters spread over the gateways, one node on the first.
    let node = node(&gateways[0], &key, "bench-pg-wait", &mock, 64);
    let total = if args.quick { 20 } else { 3_000 };
    let urls: Vec<String> = gateways
        .iter()
        .map(|gw| gw.url("/v1/chat/completions?wait=30"))
        .collect();
    let (http, token) = (reqwest::Client::new(), user.clone());
    let before = cpu(&gateways);
    let (waited, elapsed) = crate::drive::drive(total, vec![(); WAITERS as usize], move |(), i| {
        let (http, url, token) = (
            http.clone(),
            urls[i as usize % urls.len()].clone(),
            token.clone(),
        );
        async move {
            let ok = matches!(http.post(url).bearer_auth(token)
                    .json(&chat("m", &format!("w {i}"))).send().await, Ok(r) if r.status() == 200);
            (Some(()), ok)
        }
    })
    .await;
    let wait_cpu = per_job(before, cpu(&gateways), total);
    let waits = total as f64 / elapsed.as_secs_f64();
    row(
        "postgres",
        &format!("{label}: ?wait, {WAITERS} waiters"),
        &format!(
            "{waits:>7.0} round trips/s  p50 {:.2} ms  p99 {:.2} ms  CPU each: gateways {:.3} ms, PostgreSQL {:.3} ms",
            waited.percentile(50.0),
            waited.percentile(99.0),
            wait_cpu.0,
            wait_cpu.1
        ),
    );
    drop(node);
    Ok(json!({
        "engine": engine, "gateways": count,
        "submits_per_s": submits, "submit_latency": latencies.summary(),
        "submit_cpu_ms_per_job": {"gateways": submit_cpu.0, "postgresql": submit_cpu.1},
        "end_to_end_jobs_per_s": end_to_end,
        "end_to_end_cpu_ms_per_job": {"gateways": e2e_cpu.0, "postgresql": e2e_cpu.1},
        "wait_round_trips_per_s": waits, "wait_latency": waited.summary(),
        "wait_cpu_ms_per_round_trip": {"gateways": wait_cpu.0, "postgresql": wait_cpu.1},
    }))
}

pub async fn postgres(args: &Args) -> anyhow::Result<Value> {
    let mut results = Vec::new();
    let dir = tempfile::tempdir()?;
    results.push(point(args, dir.path().join("queue.db"), 1, None).await?);
    let server = Postgres::start_durable();
    for count in [1, 2, 3] {
        let url = server.fresh_database();
        results.push(point(args, PathBuf::from(url), count, Some(&server)).await?);
    }
    Ok(json!(results))
}
