//! The attempt budget when a real node is stopped with the documented two signals while it
//! runs a job (issue #22, kind 5): the first signal drains, the second aborts and hands the
//! job back (`RELEASED`). A hand-back counts as an attempt, so the job stops at
//! `max_attempts` instead of being queued again without end.

use crate::{run_node, stack};
use std::time::Duration;
use testkit::eventually;

#[tokio::test(flavor = "multi_thread")]
async fn a_node_stopped_twice_per_run_uses_up_the_attempts_and_no_more() {
    let (gw, user, key, mock) = stack(&[("OBB_MAX_ATTEMPTS", "2")]).await;
    // Longer than the test: every run is stopped while the upstream still works on it.
    mock.set_delay(Duration::from_secs(60));
    let id = gw.submit_id(&user, "m").await;
    for round in 1..=4u64 {
        let mut node = run_node(&gw, &key, &mock, "n", "models = [\"m\"]");
        let expected_calls = round.min(2);
        let leased = eventually(Duration::from_secs(20), "the job to run or end", || async {
            let job = gw.job(&user, &id).await;
            let running = job["status"] == "processing" && mock.calls() == expected_calls;
            (running || job["status"] == "failed").then_some(job)
        })
        .await;
        if leased["status"] == "failed" {
            assert!(round > 2, "failed in round {round}: {leased}");
            node.signal("-TERM");
            assert!(node.wait(Duration::from_secs(20)).is_some());
            continue;
        }
        assert!(
            round <= 2,
            "run {round} of a job with max_attempts 2: {leased}"
        );
        node.signal("-TERM");
        eventually(Duration::from_secs(10), "the node to drain", || async {
            node.log()
                .contains("finishing the jobs in flight")
                .then_some(())
        })
        .await;
        node.signal("-TERM");
        assert!(
            node.wait(Duration::from_secs(20)).is_some(),
            "the second signal stops the node"
        );
    }
    let job = gw.job(&user, &id).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 2);
    assert_eq!(job["error"]["code"], "max_attempts_exceeded");
    assert_eq!(mock.calls(), 2, "one upstream call per attempt, none after");
    eprintln!(
        "figures: max_attempts 2, a node stopped with two signals in 4 rounds: attempts 2, upstream calls 2, then failed (max_attempts_exceeded)"
    );
}
