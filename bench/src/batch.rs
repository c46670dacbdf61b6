//! Suite 7, the Batch API: a 50,000-line JSONL file uploaded, validated and queued, run by
//! four nodes against the mock upstream at 0 ms, `GET /v1/batches/{id}` timed while it
//! runs, the output file downloaded, and the gateway's memory sampled throughout. The mock
//! has a runtime of its own; `--nodes-nice` lowers the nodes' and the mock's CPU priority,
//! as if they ran on other machines (see `remote`).

use crate::Args;
use crate::remote::{MockHost, check_reniced, renice_process};
use crate::stats::{Latencies, row, status_mib};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use testkit::{Gateway, NodeProcess};

const CHAT: &str = "/v1/chat/completions";
const BOUNDARY: &str = "obb-bench-batch-boundary-7d1f0c";

/// One input line of about 500 bytes: a system prompt, a user question and sampling options,
/// as a real chat batch has.
fn line(i: u64) -> String {
    let question = format!(
        "Ticket {i}: a customer writes that order #{} arrived late and the box was damaged. \
         Classify the complaint (shipping, product, billing or other), rate its urgency from \
         1 to 5 and draft a two-sentence reply that apologises and offers a next step.",
        100_000 + i * 7
    );
    json!({"custom_id": format!("ticket-{i:06}"), "method": "POST", "url": CHAT,
        "body": {"model": "m", "messages": [
            {"role": "system", "content": "You are a support triage assistant. Answer in JSON with the keys category, urgency and reply."},
            {"role": "user", "content": question}],
            "max_tokens": 200, "temperature": 0.2}})
    .to_string()
}

/// A `multipart/form-data` body with `purpose=batch` and the file, built by hand (the
/// workspace's reqwest has no multipart feature).
fn multipart(file: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(file.len() + 512);
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
             --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"bench.jsonl\"\r\n\
             Content-Type: application/jsonl\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// Samples the gateway's VmRSS every 20 ms until `stop`; returns the highest sample.
fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(f64, usize)> {
    tokio::spawn(async move {
        let (mut max, mut samples) = (0f64, 0usize);
        while !stop.load(Ordering::Relaxed) {
            let rss = status_mib(pid, "VmRSS");
            if rss.is_finite() {
                max = max.max(rss);
                samples += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (max, samples)
    })
}

pub async fn batch(args: &Args) -> anyhow::Result<Value> {
    let lines: u64 = if args.quick { 200 } else { 50_000 };
    let gw = Gateway::start(&[("OBB_THREADS", "2"), ("OBB_REAPER_INTERVAL_MS", "1000")]).await;
    let pid = gw.pid().ok_or_else(|| anyhow::anyhow!("no gateway pid"))?;
    let (user, key) = (gw.key("user").await, gw.key("node").await);
    let nice = args.nodes_nice;
    // Its own runtime: on the timed client's, the mock's ~6,000 answers a second queued
    // ahead of the client's tasks and were timed as the gateway's.
    let host = MockHost::start(&["m"], nice).await?;
    let mock = &host.mock;
    mock.set_delay(Duration::ZERO);
    let nodes: Vec<NodeProcess> = (0..4)
        .map(|n| {
            NodeProcess::start(
                "run",
                &NodeProcess::config(
                    &gw,
                    &key,
                    &format!("batch-{n}"),
                    Some(&mock.base_url()),
                    "models = [\"m\"]\nconcurrency = 32\nbatch_size = 64\nsummary_seconds = 3600",
                ),
            )
        })
        .collect();
    let renice_nodes = || {
        if nice > 0 {
            for node in &nodes {
                if let Some(pid) = node.pid() {
                    renice_process(pid, nice);
                }
            }
        }
    };
    renice_nodes();
    check_reniced()?;
    let mut file = String::with_capacity(lines as usize * 520);
    for i in 0..lines {
        file.push_str(&line(i));
        file.push('\n');
    }
    let file_mb = file.len() as f64 / 1e6;
    let body = multipart(file.as_bytes());
    drop(file);
    let rss_start = status_mib(pid, "VmRSS");
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(pid, Arc::clone(&stop));
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(if args.quick { 60 } else { 900 });

    // Upload, create, and wait until every line is queued.
    let started = Instant::now();
    let response = http
        .post(gw.url("/v1/files"))
        .bearer_auth(&user)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 200,
        "upload: {} {}",
        response.status(),
        response.text().await?
    );
    let uploaded: Value = response.json().await?;
    let upload_s = started.elapsed().as_secs_f64();
    let file_id = uploaded["id"].as_str().unwrap_or_default().to_owned();
    let response = http
        .post(gw.url("/v1/batches"))
        .bearer_auth(&user)
        .json(&json!({"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"}))
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 200,
        "create: {} {}",
        response.status(),
        response.text().await?
    );
    let created: Value = response.json().await?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let retrieve = gw.url(&format!("/v1/batches/{id}"));

    // One loop polls the batch: until it is queued, then, timing every read, until it ends.
    let mut queued_s = None;
    let mut samples = Vec::new();
    let done = loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "batch {id} did not finish in time"
        );
        let one = Instant::now();
        let response = http.get(&retrieve).bearer_auth(&user).send().await?;
        let ok = response.status() == 200;
        let batch: Value = response.json().await?;
        let took = one.elapsed();
        anyhow::ensure!(ok, "retrieve: {batch}");
        let status = batch["status"].as_str().unwrap_or_default();
        match status {
            "validating" => {}
            "in_progress" | "finalizing" => {
                if queued_s.is_none() && batch["request_counts"]["total"] == lines {
                    queued_s = Some(started.elapsed().as_secs_f64());
                    // Again, now that every node runs all its threads.
                    renice_nodes();
                } else if queued_s.is_some() && samples.len() < 100_000 {
                    samples.push(took);
                }
            }
            "completed" => break batch,
            other => anyhow::bail!("batch {id} ended {other}: {batch}"),
        }
        tokio::time::sleep(Duration::from_millis(if queued_s.is_some() {
            5
        } else {
            2
        }))
        .await;
    };
    let ended_s = started.elapsed().as_secs_f64();
    check_reniced()?;
    let queued_s = queued_s.unwrap_or(ended_s);
    let counts = &done["request_counts"];
    anyhow::ensure!(
        counts["completed"] == lines && counts["failed"] == 0,
        "batch {id} counts {counts}"
    );
    // The run by the batch's own timestamps (seconds): in_progress_at to completed_at.
    let by_stamps = done["completed_at"].as_f64().unwrap_or(0.0)
        - done["in_progress_at"].as_f64().unwrap_or(0.0);
    let run_s = ended_s - queued_s;
    let lines_per_s = lines as f64 / run_s;

    // The output file, streamed.
    let output = done["output_file_id"].as_str().unwrap_or_default();
    let fetched = Instant::now();
    let mut response = http
        .get(gw.url(&format!("/v1/files/{output}/content")))
        .bearer_auth(&user)
        .send()
        .await?;
    anyhow::ensure!(response.status() == 200, "download: {}", response.status());
    let (mut bytes, mut newlines) = (0usize, 0usize);
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len();
        newlines += chunk.iter().filter(|&&b| b == b'\n').count();
    }
    let download_s = fetched.elapsed().as_secs_f64();
    anyhow::ensure!(
        newlines as u64 == lines,
        "the output file has {newlines} lines, not {lines}"
    );
    let download_mb_s = bytes as f64 / 1e6 / download_s;

    // For contrast, the same read on the idle gateway once the batch has ended.
    let mut idle = Vec::new();
    for _ in 0..if args.quick { 20 } else { 500 } {
        let one = Instant::now();
        let response = http.get(&retrieve).bearer_auth(&user).send().await?;
        let ok = response.status() == 200;
        response.bytes().await?;
        if ok {
            idle.push(one.elapsed());
        }
    }
    let idle = Latencies::new(idle);
    stop.store(true, Ordering::Relaxed);
    let (rss_max, rss_samples) = sampler.await?;
    let hwm = status_mib(pid, "VmHWM");
    let retrieve = Latencies::new(samples);

    row(
        "batch",
        &format!("{lines} lines, {file_mb:.1} MB"),
        &format!("upload {upload_s:.2} s, queued {queued_s:.2} s"),
    );
    let nodes_label = if nice > 0 {
        format!("4 nodes at nice {nice}, upstream 0 ms")
    } else {
        "4 nodes, upstream 0 ms".to_owned()
    };
    row(
        "batch",
        &nodes_label,
        &format!("{lines_per_s:>8.0} lines/s  ({run_s:.1} s; {by_stamps:.0} s by its stamps)"),
    );
    row(
        "batch",
        "retrieve while it runs",
        &format!(
            "p50 {:.2} ms  p99 {:.2} ms  ({} reads)",
            retrieve.percentile(50.0),
            retrieve.percentile(99.0),
            retrieve.count()
        ),
    );
    row(
        "batch",
        "retrieve once it has ended",
        &format!(
            "p50 {:.2} ms  p99 {:.2} ms  ({} reads)",
            idle.percentile(50.0),
            idle.percentile(99.0),
            idle.count()
        ),
    );
    row(
        "batch",
        "output download",
        &format!(
            "{download_mb_s:.0} MB/s  ({:.1} MB in {download_s:.2} s)",
            bytes as f64 / 1e6
        ),
    );
    row(
        "batch",
        "gateway memory",
        &format!(
            "RSS {rss_start:.0} -> max {rss_max:.0} MiB ({rss_samples} samples), VmHWM {hwm:.0} MiB"
        ),
    );
    Ok(
        json!({"lines": lines, "nodes_nice": nice, "file_mb": file_mb, "upload_s": upload_s, "queued_s": queued_s,
        "run_s": run_s, "run_s_by_stamps": by_stamps, "lines_per_s": lines_per_s,
        "retrieve": retrieve.summary(), "retrieve_idle": idle.summary(), "output_mb": bytes as f64 / 1e6, "download_s": download_s,
        "download_mb_per_s": download_mb_s, "rss_start_mib": rss_start, "rss_max_mib": rss_max,
        "rss_samples": rss_samples, "vm_hwm_mib": hwm}),
    )
}
