use crate::{run_node, stack};
use serde_json::{Value, json};
use std::time::Duration;
use testkit::mock::{Fault, MockUpstream};
use testkit::{Gateway, chat, eventually};

async fn finished(gw: &Gateway, key: &str, id: &str) -> Value {
    eventually(Duration::from_secs(20), "the job to finish", || async {
        let job = gw.job(key, id).await;
        matches!(job["status"].as_str(), Some("completed" | "failed")).then_some(job)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_go_only_to_nodes_that_serve_their_model() {
    let gw = Gateway::start(&[]).await;
    let (user, key) = (gw.key("user").await, gw.key("node").await);
    let (alpha, beta) = (
        MockUpstream::start(&["alpha"]).await.unwrap(),
        MockUpstream::start(&["beta"]).await.unwrap(),
    );
    // One node names its model; the other discovers it from its upstream's /v1/models.
    let _a = run_node(&gw, &key, &alpha, "node-a", "models = [\"alpha\"]");
    let _b = run_node(&gw, &key, &beta, "node-b", "");
    let mut ids = Vec::new();
    for model in ["alpha", "beta", "alpha", "beta"] {
        ids.push((model, gw.submit_id(&user, model).await));
    }
    for (model, id) in &ids {
        let job = finished(&gw, &user, id).await;
        assert_eq!(job["status"], "completed");
        assert_eq!(
            job["result"]["model"], *model,
            "the upstream got the job's own model"
        );
    }
    assert_eq!((alpha.calls(), beta.calls()), (2, 2));
    let (_, models) = gw.get_json(&user, "/v1/models").await;
    let names: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["alpha", "beta"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrency_bounds_the_upstream_calls_in_flight() {
    let (gw, user, key, mock) = stack(&[]).await;
    mock.set_delay(Duration::from_millis(300));
    let _node = run_node(
        &gw,
        &key,
        &mock,
        "n",
        "models = [\"m\"]\nconcurrency = 2\nbatch_size = 8",
    );
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(gw.submit_id(&user, "m").await);
    }
    for id in &ids {
        assert_eq!(finished(&gw, &user, id).await["status"], "completed");
    }
    assert_eq!(mock.max_in_flight(), 2, "two at once, never more");
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_upstream_errors_are_retried_and_a_4xx_fails_at_once() {
    let (gw, user, key, mock) = stack(&[]).await;
    let _node = run_node(&gw, &key, &mock, "n", "models = [\"m\"]");
    // A cut-off body is transient; a whole body that is not JSON would be final.
    mock.push_faults([
        Fault::Status(503, None),
        Fault::Status(429, Some(0)),
        Fault::Truncate,
    ]);
    let mut body = chat("m", "retry me");
    body["tools"] =
        json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    let response = gw
        .submit_with(&user, &body, Some(20), &[("x-request-id", "req-e2e-1")])
        .await;
    assert_eq!(response.status(), 200);
    let completion: Value = response.json().await.unwrap();
    // The request offered a tool, so the mock answered with a call to it.
    let call = &completion["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(
        (call["name"].as_str(), call["arguments"].as_str()),
        (Some("f"), Some(r#"{"query":"retry me"}"#))
    );
    assert_eq!(mock.calls(), 4, "three faults, then the answer");
    let (request_id, forwarded) = mock.state.last_request.lock().unwrap().clone().unwrap();
    assert_eq!(request_id.as_deref(), Some("req-e2e-1"));
    assert_eq!(
        forwarded["tools"], body["tools"],
        "the body is forwarded verbatim"
    );

    mock.push_faults([Fault::Status(404, None)]);
    let response = gw
        .submit_with(&user, &chat("m", "no such model"), Some(20), &[])
        .await;
    assert_eq!(response.status(), 404, "an upstream 4xx keeps its status");
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "model_not_found");
    assert_eq!(mock.calls(), 5, "a 4xx is not retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn exhausted_retries_go_back_to_the_queue_until_max_attempts() {
    let (gw, user, key, mock) = stack(&[("OBB_MAX_ATTEMPTS", "2")]).await;
    let _node = run_node(&gw, &key, &mock, "n", "models = [\"m\"]\nmax_retries = 1");
    mock.push_faults((0..4).map(|_| Fault::Status(500, None)));
    let id = gw.submit_id(&user, "m").await;
    let job = finished(&gw, &user, &id).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["attempts"], 2);
    assert_eq!(job["error"]["code"], "upstream_unavailable");
    assert_eq!(mock.calls(), 4, "two attempts of two calls each");
}

#[tokio::test(flavor = "multi_thread")]
async fn results_wait_in_the_spool_while_the_gateway_is_down() {
    let (mut gw, user, key, mock) = stack(&[]).await;
    mock.set_delay(Duration::from_millis(1500));
    let node = run_node(&gw, &key, &mock, "n", "models = [\"m\"]");
    let id = gw.submit_id(&user, "m").await;
    eventually(
        Duration::from_secs(10),
        "the node to call the upstream",
        || async { (mock.calls() == 1).then_some(()) },
    )
    .await;
    gw.stop_with("-KILL");
    let log = eventually(
        Duration::from_secs(20),
        "the result to be spooled",
        || async {
            let log = node.log();
            log.contains("results kept in the spool").then_some(log)
        },
    )
    .await;
    assert!(log.contains("job completed"), "{log}");
    gw.spawn().await;
    let job = finished(&gw, &user, &id).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(
        job["result"]["choices"][0]["message"]["content"],
        "mock: hello"
    );
    assert_eq!(mock.calls(), 1, "delivered from the spool, not run again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_node_s_job_is_finished_once_by_another_node() {
    let gw = Gateway::start(&[("OBB_LEASE_SECONDS", "1")]).await;
    let (user, key) = (gw.key("user").await, gw.key("node").await);
    let (slow, fast) = (
        MockUpstream::start(&["m"]).await.unwrap(),
        MockUpstream::start(&["m"]).await.unwrap(),
    );
    slow.set_delay(Duration::from_secs(30));
    let mut doomed = run_node(&gw, &key, &slow, "doomed", "models = [\"m\"]");
    let id = gw.submit_id(&user, "m").await;
    eventually(
        Duration::from_secs(10),
        "the doomed node to start the job",
        || async { (slow.calls() == 1).then_some(()) },
    )
    .await;
    doomed.signal("-KILL");
    assert!(doomed.wait(Duration::from_secs(5)).is_some());
    let _rescuer = run_node(&gw, &key, &fast, "rescuer", "models = [\"m\"]");
    let job = finished(&gw, &user, &id).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["attempts"], 2);
    assert_eq!(fast.calls(), 1);
    let (_, page) = gw
        .post_json(&user, "/v1/results/poll", &json!({"ids": [id]}))
        .await;
    assert_eq!(
        page["jobs"].as_array().unwrap().len(),
        1,
        "one stored result"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_signal_finishes_jobs_in_flight_and_the_second_hands_them_back() {
    let (gw, user, key, mock) = stack(&[]).await;
    mock.set_delay(Duration::from_millis(800));
    let mut graceful = run_node(&gw, &key, &mock, "g", "models = [\"m\"]");
    let id = gw.submit_id(&user, "m").await;
    eventually(Duration::from_secs(10), "the job to start", || async {
        (mock.calls() == 1).then_some(())
    })
    .await;
    graceful.signal("-TERM");
    let status = graceful
        .wait(Duration::from_secs(15))
        .expect("the node exits");
    assert!(status.success(), "{status:?}\n{}", graceful.log());
    assert_eq!(
        gw.job(&user, &id).await["status"],
        "completed",
        "finished before exiting"
    );

    mock.set_delay(Duration::from_secs(60));
    let mut forced = run_node(&gw, &key, &mock, "f", "models = [\"m\"]");
    let id = gw.submit_id(&user, "m").await;
    eventually(
        Duration::from_secs(10),
        "the second job to start",
        || async { (mock.calls() == 2).then_some(()) },
    )
    .await;
    forced.signal("-TERM");
    eventually(
        Duration::from_secs(5),
        "the node to say it drains",
        || async {
            forced
                .log()
                .contains("finishing the jobs in flight")
                .then_some(())
        },
    )
    .await;
    forced.signal("-TERM");
    assert!(
        forced.wait(Duration::from_secs(15)).is_some(),
        "{}",
        forced.log()
    );
    let job = gw.job(&user, &id).await;
    assert_eq!(
        job["status"], "queued",
        "handed back at once, not after the lease: {job}"
    );
    assert!(forced.log().contains("handing the job back"));
}
