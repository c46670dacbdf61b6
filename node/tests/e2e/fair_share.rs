//! Fair share between keys, as two users meet it: A queues 400 jobs, then B queues 5; one
//! node of two slots on a 20 ms upstream runs B's 5 long before A's backlog is through.

use crate::{run_node, stack};
use serde_json::{Value, json};
use std::time::Duration;
use testkit::eventually;

#[tokio::test(flavor = "multi_thread")]
async fn b_s_5_jobs_are_done_before_a_has_finished_50_of_its_400() {
    let (gw, a, key, mock) = stack(&[]).await;
    let b = gw.key("user").await;
    mock.set_delay(Duration::from_millis(20));
    for n in 0..400 {
        let response = gw
            .submit_with(&a, &testkit::chat("m", &format!("a-{n}")), Some(0), &[])
            .await;
        assert_eq!(response.status(), 202);
    }
    let _node = run_node(
        &gw,
        &key,
        &mock,
        "fair",
        "models = [\"m\"]\nconcurrency = 2\nbatch_size = 2",
    );
    // The node is at work on A's backlog when B's jobs arrive.
    eventually(Duration::from_secs(30), "A's first jobs to run", || async {
        (mock.chat_messages().len() >= 2).then_some(())
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let response = gw
            .submit_with(&b, &testkit::chat("m", &format!("b-{n}")), Some(0), &[])
            .await;
        ids.push(response.json::<Value>().await.unwrap()["id"].clone());
    }
    eventually(
        Duration::from_secs(60),
        "B's 5 jobs to complete",
        || async {
            let (_, polled) = gw
                .post_json(&b, "/v1/results/poll", &json!({"ids": ids}))
                .await;
            polled["jobs"]
                .as_array()
                .is_some_and(|jobs| jobs.iter().all(|job| job["status"] == "completed"))
                .then_some(())
        },
    )
    .await;
    // The upstream saw the jobs in the order the node ran them: count A's ahead of B's last.
    let order = mock.chat_messages();
    let last_b = order
        .iter()
        .rposition(|text| text.starts_with("b-"))
        .expect("B's jobs reached the upstream");
    let a_before = order[..last_b]
        .iter()
        .filter(|text| text.starts_with("a-"))
        .count();
    assert!(
        a_before < 50,
        "A ran {a_before} jobs before B's 5 were done: {:?}",
        &order[..=last_b]
    );
}
