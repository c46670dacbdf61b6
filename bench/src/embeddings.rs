//! Suite 8, embeddings packing: 10,000 single-input `/v1/embeddings` jobs queued, then run
//! by ONE node against the mock upstream (0 ms, or `--upstream-ms` per call, whatever the
//! call carries), once with `embeddings_pack_max = 64`
//! (the default) and once with `= 1` (packing off). Reports the jobs per second of each
//! and the upstream calls each made, which shows whether packing happened.
//!
//! The jobs are queued before the node starts, so that both runs find the same full queue
//! and the node's work is timed alone; the node is `obb-node batch`, which runs the fetch
//! loop `run` does and exits once nothing is left and every result is delivered.

use crate::Args;
use crate::remote::MockHost;
use crate::stats::row;
use crate::wire;
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime};
use testkit::{Gateway, NodeProcess};

const EMBEDDINGS: &str = "/v1/embeddings";
/// The two settings compared: packed as shipped, and each job its own call.
const PACK_MAX: [u32; 2] = [64, 1];

/// One input text of about 150 bytes, as a document chunk sent for indexing.
fn input(i: u64) -> String {
    format!(
        "Chunk {i} of the handbook: returns are accepted within 30 days of delivery when the \
         item is unused and in its original packaging; refunds take 5 to 7 days."
    )
}

/// The one-minute load average, so that a figure says what else the machine was doing.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

pub async fn embeddings(args: &Args) -> anyhow::Result<Value> {
    let jobs: u64 = if args.quick { 200 } else { 10_000 };
    let mut results = Vec::new();
    for pack_max in PACK_MAX {
        results.push(one_setting(args, jobs, pack_max).await?);
    }
    let rate = |i: usize| results[i]["jobs_per_s"].as_f64().unwrap_or(f64::NAN);
    let speedup = rate(0) / rate(1);
    row(
        "embed",
        "packed / unpacked",
        &format!("{speedup:.2}x the jobs per second"),
    );
    Ok(json!({"jobs": jobs, "runs": results, "speedup": speedup}))
}

/// Queues `jobs` single-input embeddings jobs, runs one node with `pack_max`, and checks
/// that every job completed and every input went upstream exactly once.
async fn one_setting(args: &Args, jobs: u64, pack_max: u32) -> anyhow::Result<Value> {
    let gw = Gateway::start(&[("OBB_THREADS", "2"), ("OBB_REAPER_INTERVAL_MS", "1000")]).await;
    let (user, key) = (gw.key("user").await, gw.key("node").await);
    // Its own runtime, so that the mock's answers do not queue behind this process's tasks.
    let host = MockHost::start(&["m"], 0).await?;
    let mock = &host.mock;
    mock.set_delay(Duration::from_millis(args.upstream_ms));
    let load_before = load_average();

    let address = gw
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let (target, token) = (address.clone(), user.clone());
    let (_, queued_in, failed) = wire::load(&address, jobs, 64, 202, move |i| {
        let body = json!({"model": "m", "input": input(i), "encoding_format": "float"});
        wire::post(&target, EMBEDDINGS, &token, &body.to_string())
    })
    .await?;
    anyhow::ensure!(failed == 0, "{failed} embeddings submits were not accepted");

    let started = Instant::now();
    let mut node = NodeProcess::start(
        "batch",
        &NodeProcess::config(
            &gw,
            &key,
            &format!("bench-embed-{pack_max}"),
            Some(&mock.base_url()),
            &format!(
                "models = [\"m\"]\nconcurrency = 32\nbatch_size = 64\n\
                 embeddings_pack_max = {pack_max}\nsummary_seconds = 3600"
            ),
        ),
    );
    let within = Duration::from_secs(if args.quick { 60 } else { 900 });
    let (node, exited) = tokio::task::spawn_blocking(move || {
        let exited = node.wait(within);
        (node, exited)
    })
    .await?;
    let ran_in = started.elapsed();
    let ended = SystemTime::now();
    let log = node.log();
    anyhow::ensure!(
        exited.is_some_and(|status| status.success()),
        "the node did not finish {jobs} jobs in {within:?}: {log}"
    );
    anyhow::ensure!(
        log.contains(&format!("batch done: {jobs} completed, 0 failed")),
        "the node did not complete every job: {log}"
    );
    let finished = gw.metric("obb_jobs_finished_total", "").await as u64;
    anyhow::ensure!(
        finished == jobs,
        "the gateway counts {finished} finished jobs, not {jobs}"
    );

    let calls = mock.embedding_calls();
    let inputs: usize = calls.iter().sum();
    anyhow::ensure!(
        inputs as u64 == jobs,
        "the upstream saw {inputs} inputs for {jobs} jobs"
    );
    let largest = calls.iter().copied().max().unwrap_or(0);
    // From the first upstream call to the node's exit: the run without the node's start.
    let first_call = mock.arrivals().first().copied().unwrap_or(ended);
    let calling = ended.duration_since(first_call).unwrap_or(ran_in);

    let rate = jobs as f64 / ran_in.as_secs_f64();
    let label = if pack_max == 1 {
        format!("1 node, pack_max 1, upstream {} ms", args.upstream_ms)
    } else {
        format!(
            "1 node, pack_max {pack_max}, upstream {} ms",
            args.upstream_ms
        )
    };
    row(
        "embed",
        &label,
        &format!(
            "{rate:>8.0} jobs/s  ({:.2} s; {} upstream calls, {:.1} inputs each, at most {largest})",
            ran_in.as_secs_f64(),
            calls.len(),
            inputs as f64 / calls.len().max(1) as f64,
        ),
    );
    Ok(json!({
        "embeddings_pack_max": pack_max, "jobs": jobs, "upstream_ms": args.upstream_ms,
        "queue_s": queued_in.as_secs_f64(), "queue_per_s": jobs as f64 / queued_in.as_secs_f64(),
        "run_s": ran_in.as_secs_f64(), "jobs_per_s": rate,
        "from_first_call_s": calling.as_secs_f64(),
        "from_first_call_per_s": jobs as f64 / calling.as_secs_f64(),
        "upstream_calls": calls.len(), "largest_call_inputs": largest,
        "load_average_before": load_before,
    }))
}
