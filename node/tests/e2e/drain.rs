//! An admin drains a real node (issue 21): the node logs it, finishes the job it runs,
//! takes nothing new while drained, and takes work again once undrained.

use crate::{run_node, stack};
use serde_json::json;
use std::time::Duration;
use testkit::eventually;

#[tokio::test(flavor = "multi_thread")]
async fn a_drained_node_finishes_its_job_logs_the_drain_and_takes_nothing_until_undrained() {
    // Leases of 3 s: the node heartbeats every second, and its fetches wait 2 s (testkit),
    // so it hears of a drain, and says so, within seconds.
    let (gw, user, key, mock) = stack(&[("OBB_LEASE_SECONDS", "3")]).await;
    let node = run_node(&gw, &key, &mock, "gpu-1", "models = [\"m\"]");
    let warm = gw.submit_id(&user, "m").await;
    assert_eq!(
        gw.job(&user, &format!("{warm}?wait=20")).await["status"],
        "completed",
        "{}",
        node.log()
    );

    // A slow job is running when the drain comes.
    mock.set_delay(Duration::from_millis(1500));
    let running = gw.submit_id(&user, "m").await;
    eventually(
        Duration::from_secs(10),
        "the node to lease the slow job",
        || async { (gw.job(&user, &running).await["status"] == "processing").then_some(()) },
    )
    .await;
    let (status, drained) = gw
        .post_json(&gw.admin, "/admin/nodes/gpu-1/drain", &json!({}))
        .await;
    assert_eq!(
        (status.as_u16(), drained["draining"].as_bool()),
        (200, Some(true)),
        "{drained}"
    );
    eventually(
        Duration::from_secs(10),
        "the node to log its drain",
        || async {
            node.log()
                .contains("drained by the gateway's admin")
                .then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "its heartbeat to report the drain",
        || async {
            let (_, nodes) = gw.get_json(&gw.admin, "/admin/nodes").await;
            (nodes["data"][0]["draining_reported"] == true).then_some(())
        },
    )
    .await;
    mock.set_delay(Duration::ZERO);
    assert_eq!(
        gw.job(&user, &format!("{running}?wait=20")).await["status"],
        "completed"
    );

    // While drained, a new job waits through several of the node's fetches.
    let waiting = gw.submit_id(&user, "m").await;
    let fetches = gw
        .metric("obb_http_requests_total", "route=\"node_fetch\"")
        .await;
    eventually(
        Duration::from_secs(15),
        "three more fetches of the drained node",
        || async {
            (gw.metric("obb_http_requests_total", "route=\"node_fetch\"")
                .await
                >= fetches + 3.0)
                .then_some(())
        },
    )
    .await;
    assert_eq!(gw.job(&user, &waiting).await["status"], "queued");

    let (_, undrained) = gw
        .post_json(&gw.admin, "/admin/nodes/gpu-1/undrain", &json!({}))
        .await;
    assert_eq!(undrained["draining"], false);
    assert_eq!(
        gw.job(&user, &format!("{waiting}?wait=20")).await["status"],
        "completed"
    );
    eventually(
        Duration::from_secs(10),
        "the node to log its undrain",
        || async {
            node.log()
                .contains("undrained by the gateway's admin")
                .then_some(())
        },
    )
    .await;
}
