//! Limits that say what they count: the daemon checks its own config at start with the
//! rules `check` uses (a node name is 1 to 128 characters, not bytes), and a fetch the
//! gateway rejects for good (400) stops the daemon with the gateway's message instead of
//! being retried forever.

use crate::{run_node, stack};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn run_with_a_node_name_of_129_characters_exits_at_once_naming_the_rule() {
    let (gw, _user, key, mock) = stack(&[]).await;
    let started = Instant::now();
    let mut node = run_node(&gw, &key, &mock, &"n".repeat(129), "models = [\"m\"]");
    let status = node.wait(Duration::from_secs(20)).expect("the node exits");
    let log = node.log();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("`node.name` must be 1 to 128 characters, not 129"),
        "{log}"
    );
    // "At once" includes starting a debug binary on a loaded machine; the 0 fetches below
    // are what shows it never tried.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "at once, not {took:?}");
    assert_eq!(
        gw.metric("obb_http_requests_total", "route=\"node_fetch\"")
            .await,
        0.0,
        "it never asked the gateway"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_name_of_43_cjk_characters_is_129_bytes_and_runs_jobs() {
    let (gw, user, key, mock) = stack(&[]).await;
    let name = "節".repeat(43);
    assert_eq!((name.len(), name.chars().count()), (129, 43));
    let node = run_node(&gw, &key, &mock, &name, "models = [\"m\"]");
    let id = gw.submit_id(&user, "m").await;
    let job = gw.job(&user, &format!("{id}?wait=30")).await;
    assert_eq!(job["status"], "completed", "{job}\n{}", node.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fetch_the_gateway_rejects_with_400_stops_the_daemon_with_the_gateway_s_message() {
    let (gw, _user, key, mock) = stack(&[]).await;
    // The gateway leases at most 256 jobs per fetch; the node does not know that rule.
    let mut node = run_node(
        &gw,
        &key,
        &mock,
        "greedy",
        "models = [\"m\"]\nconcurrency = 300\nbatch_size = 300",
    );
    let status = node.wait(Duration::from_secs(10)).expect("the node stops");
    let log = node.log();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(
            "the gateway rejected `/internal/queue/fetch` (400): `limit` must be from 1 to 256"
        ),
        "{log}"
    );
    assert_eq!(
        gw.metric("obb_http_requests_total", "route=\"node_fetch\"")
            .await,
        1.0,
        "asked once, not retried"
    );
}
