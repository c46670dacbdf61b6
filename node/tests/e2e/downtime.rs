//! The gateway's own downtime, longer than a lease, while a real node runs a job (issue #22,
//! kind 2): the time the gateway was down does not count against the lease, and the node's
//! result, delivered after the restart, is the job's only run. A result that finished early
//! in a long outage waits in the spool with its lease kept alive by the node's heartbeat, and
//! is delivered as soon as the gateway answers again, not when the submit's backoff ends.

use crate::{run_node, stack};
use std::time::{Duration, Instant};
use testkit::eventually;

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_down_longer_than_the_lease_costs_the_running_job_nothing() {
    for max_attempts in ["1", "3"] {
        let (mut gw, user, key, mock) = stack(&[
            ("OBB_LEASE_SECONDS", "3"),
            ("OBB_MAX_ATTEMPTS", max_attempts),
            ("OBB_REAPER_INTERVAL_MS", "200"),
        ])
        .await;
        // The upstream answers after 6 s: the gateway is away for 5 s of it.
        mock.set_delay(Duration::from_secs(6));
        let _node = run_node(&gw, &key, &mock, "n", "models = [\"m\"]");
        let id = gw.submit_id(&user, "m").await;
        eventually(
            Duration::from_secs(10),
            "the node to call the upstream",
            || async { (mock.calls() == 1).then_some(()) },
        )
        .await;
        let down = Instant::now();
        gw.stop_with("-KILL");
        // The outage itself: a fixed 5 s, longer than the 3 s lease.
        tokio::time::sleep(Duration::from_secs(5).saturating_sub(down.elapsed())).await;
        gw.spawn().await;
        let job = eventually(Duration::from_secs(30), "the job to finish", || async {
            let job = gw.job(&user, &id).await;
            matches!(job["status"].as_str(), Some("completed" | "failed")).then_some(job)
        })
        .await;
        assert_eq!(
            job["status"], "completed",
            "max_attempts {max_attempts}: {job}"
        );
        assert_eq!(job["attempts"], 1, "max_attempts {max_attempts}");
        assert_eq!(mock.calls(), 1, "max_attempts {max_attempts}: run once");
        eprintln!(
            "figures: max_attempts {max_attempts}, lease 3 s, gateway down 5 s mid-job: completed, attempts 1, upstream calls 1"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_finished_early_in_a_long_outage_keeps_its_lease_and_is_delivered_right_after_the_restart()
 {
    let (mut gw, user, key, mock) = stack(&[
        ("OBB_LEASE_SECONDS", "3"),
        ("OBB_MAX_ATTEMPTS", "1"),
        ("OBB_REAPER_INTERVAL_MS", "200"),
    ])
    .await;
    // The job ends about 1 s into the outage; its submits then fail for 14 s, long enough
    // for their backoff to grow far past the 3 s lease the gateway grants when it starts.
    mock.set_delay(Duration::from_secs(2));
    let node = run_node(&gw, &key, &mock, "n", "models = [\"m\"]");
    let id = gw.submit_id(&user, "m").await;
    eventually(
        Duration::from_secs(10),
        "the node to call the upstream",
        || async { (mock.calls() == 1).then_some(()) },
    )
    .await;
    let down = Instant::now();
    gw.stop_with("-KILL");
    eventually(
        Duration::from_secs(10),
        "the result to wait in the spool",
        || async {
            node.log()
                .contains("results kept in the spool")
                .then_some(())
        },
    )
    .await;
    // The outage itself: a fixed 15 s, five leases long.
    tokio::time::sleep(Duration::from_secs(15).saturating_sub(down.elapsed())).await;
    gw.spawn().await;
    let restarted = Instant::now();
    let job = eventually(Duration::from_secs(40), "the job to finish", || async {
        let job = gw.job(&user, &id).await;
        matches!(job["status"].as_str(), Some("completed" | "failed")).then_some(job)
    })
    .await;
    let delivered_after = restarted.elapsed();
    assert_eq!(job["status"], "completed", "{job}\n{}", node.log());
    assert_eq!(job["attempts"], 1, "{job}");
    assert_eq!(mock.calls(), 1, "run once");
    assert!(
        delivered_after < Duration::from_secs(5),
        "delivered {delivered_after:?} after the restart, not when the backoff ran out\n{}",
        node.log()
    );
    println!(
        "figures: max_attempts 1, lease 3 s, result finished ~1 s into a 15 s outage: completed, attempts 1, upstream calls 1, delivered {} ms after the restart",
        delivered_after.as_millis()
    );
}
