//! Clock skew: a real `obb-node` whose clock libfaketime shifts 60 s back or 120 s ahead of
//! the gateway's. The node works from the lease's duration (`lease_ttl_ms`) and its
//! monotonic clock, so a job longer than the lease keeps it, and an idle node heartbeats at
//! a third of the lease, not in a tight loop.

use crate::stack;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use testkit::mock::MockUpstream;
use testkit::{Gateway, NodeProcess, eventually};

/// The gateway's lease, in seconds: shorter than the upstream's answer.
const LEASE_SECONDS: u64 = 6;
const UPSTREAM_DELAY: Duration = Duration::from_secs(9);

/// `obb-node run` with its clock shifted by `offset` (libfaketime's syntax: `-60s`).
fn skewed_node(gw: &Gateway, key: &str, mock: &MockUpstream, offset: &str) -> NodeProcess {
    let library = testkit::installed::libfaketime();
    let config = NodeProcess::config(
        gw,
        key,
        "skewed",
        Some(&mock.base_url()),
        "models = [\"m\"]",
    );
    NodeProcess::start_in_env(
        "run",
        &config,
        &[],
        &[
            ("LD_PRELOAD", library.to_str().unwrap()),
            ("FAKETIME", offset),
            // Only the wall clock is shifted, as between two machines.
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    )
}

/// How far ahead of ours the node's wall clock is, in seconds, from the time of day on the
/// first line of its log (`2026-11-29T18:59:01.123456Z  INFO …`).
fn clock_offset(log: &str) -> Option<i64> {
    let time = log.lines().next()?.split('T').nth(1)?;
    let mut parts = time.get(..8)?.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs() as i64 % 86_400;
    // The difference of two times of day, brought into -12 h..12 h.
    Some((h * 3600 + m * 60 + s - now + 43_200).rem_euclid(86_400) - 43_200)
}

async fn heartbeats(gw: &Gateway) -> f64 {
    gw.metric("obb_http_requests_total", "route=\"node_heartbeat\"")
        .await
}

/// Runs one job longer than the lease on a node shifted by `offset`, then watches the idle
/// node for one lease. Returns (heartbeats during the job, heartbeats while idle).
async fn job_longer_than_the_lease(offset: &str, expected_skew: i64) -> (f64, f64) {
    let lease = LEASE_SECONDS.to_string();
    let (gw, user, key, mock) =
        stack(&[("OBB_LEASE_SECONDS", &lease), ("OBB_MAX_ATTEMPTS", "3")]).await;
    mock.set_delay(UPSTREAM_DELAY);
    let node = skewed_node(&gw, &key, &mock, offset);
    let skew = eventually(
        Duration::from_secs(10),
        "the node's first log line",
        || async { clock_offset(&node.log()) },
    )
    .await;
    assert!(
        (skew - expected_skew).abs() <= 5,
        "libfaketime shifted the node's clock by {skew} s, not {expected_skew} s: {}",
        node.log()
    );
    let id = gw.submit_id(&user, "m").await;
    let job = eventually(Duration::from_secs(40), "the job to end", || async {
        let job = gw.job(&user, &id).await;
        matches!(job["status"].as_str(), Some("completed" | "failed")).then_some(job)
    })
    .await;
    assert_eq!(job["status"], "completed", "{job}\n{}", node.log());
    assert_eq!(job["attempts"], 1, "the lease never lapsed: {job}");
    assert_eq!(mock.calls(), 1, "one upstream call");
    let during = heartbeats(&gw).await;
    // A measuring window, not a wait for a condition: heartbeats are counted over one lease.
    tokio::time::sleep(Duration::from_secs(LEASE_SECONDS)).await;
    let idle = heartbeats(&gw).await - during;
    (during, idle)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_60_s_behind_the_gateway_keeps_a_lease_shorter_than_its_job() {
    let (during, idle) = job_longer_than_the_lease("-60s", -60).await;
    // 9 s of work on a 6 s lease: a heartbeat every 2 s.
    assert!(during >= 3.0, "{during} heartbeats in 9 s");
    assert!(idle <= 4.0, "{idle} heartbeats in {LEASE_SECONDS} s idle");
    println!(
        "figures: skew=-60s attempts=1 upstream_calls=1 heartbeats_during_job={during} heartbeats_idle_6s={idle}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_120_s_ahead_of_the_gateway_heartbeats_at_a_third_of_the_lease() {
    let (during, idle) = job_longer_than_the_lease("+120s", 120).await;
    assert!(
        (3.0..=7.0).contains(&during),
        "{during} heartbeats in 9 s of work on a {LEASE_SECONDS} s lease"
    );
    assert!(idle <= 4.0, "{idle} heartbeats in {LEASE_SECONDS} s idle");
    println!(
        "figures: skew=+120s attempts=1 upstream_calls=1 heartbeats_during_job={during} heartbeats_idle_6s={idle}"
    );
}
