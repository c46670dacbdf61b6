use crate::harness::{Gateway, chat, completion, eventually};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[tokio::test]
async fn an_expired_lease_is_released_and_its_late_result_is_stale() {
    let gw = Gateway::start(&[("OBB_LEASE_SECONDS", "1")]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let id = gw.submit_id(&user, "echo").await;
    let first = gw.fetch(&node, "slow", &["echo"], 1, 0.0).await;
    assert_eq!(first[0]["attempt"], 1);
    // No heartbeat: the reaper hands the job to the next node.
    let second = eventually(
        Duration::from_secs(10),
        "the job to be leased again",
        || async {
            let jobs = gw.fetch(&node, "fast", &["echo"], 1, 0.5).await;
            jobs.into_iter().next()
        },
    )
    .await;
    assert_eq!(
        (second["id"].as_str(), second["attempt"].as_u64()),
        (Some(id.as_str()), Some(2))
    );
    assert_eq!(gw.complete(&node, &first[0], "late").await, "stale");
    assert_eq!(gw.complete(&node, &second, "right").await, "accepted");
    assert_eq!(gw.complete(&node, &second, "right").await, "duplicate");
    let job = gw.job(&user, &id).await;
    assert_eq!(job["result"]["choices"][0]["message"]["content"], "right");
    assert_eq!(job["attempts"], 2);
    let (_, beat) = gw
        .post_json(
            &node,
            "/internal/queue/heartbeat",
            &json!({"node_id": "slow", "lease_ids": [first[0]["lease_id"], "lease-unknown"]}),
        )
        .await;
    assert_eq!(beat["lost"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn heartbeats_keep_a_lease_alive_past_its_first_expiry() {
    let gw = Gateway::start(&[("OBB_LEASE_SECONDS", "1")]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    gw.submit_id(&user, "echo").await;
    let leased = gw.fetch(&node, "n", &["echo"], 1, 0.0).await;
    let lease = &leased[0]["lease_id"];
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        let (_, beat) = gw
            .post_json(
                &node,
                "/internal/queue/heartbeat",
                &json!({"node_id": "n", "lease_ids": [lease]}),
            )
            .await;
        assert_eq!(beat["extended"], json!([lease]), "the lease stays ours");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(gw.complete(&node, &leased[0], "kept").await, "accepted");
}

#[tokio::test]
async fn a_job_out_of_attempts_fails_with_a_clear_error() {
    let gw = Gateway::start(&[("OBB_LEASE_SECONDS", "1"), ("OBB_MAX_ATTEMPTS", "1")]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let id = gw.submit_id(&user, "echo").await;
    gw.fetch(&node, "n", &["echo"], 1, 0.0).await;
    let job = eventually(Duration::from_secs(10), "the job to fail", || async {
        let job = gw.job(&user, &id).await;
        (job["status"] == "failed").then_some(job)
    })
    .await;
    assert_eq!(job["error"]["code"], "max_attempts_exceeded");
}

#[tokio::test]
async fn retryable_failures_requeue_until_max_attempts_and_others_fail_at_once() {
    let gw = Gateway::start(&[("OBB_MAX_ATTEMPTS", "2")]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let id = gw.submit_id(&user, "echo").await;
    let fail = |job: &Value, retryable: bool| {
        json!([{"id": job["id"], "lease_id": job["lease_id"], "status": "FAILED",
            "error": {"message": "upstream answered 503", "type": "server_error", "param": null, "code": null},
            "upstream_status": 503, "retryable": retryable}])
    };
    let first = gw.fetch(&node, "n", &["echo"], 1, 0.0).await;
    assert_eq!(gw.report(&node, &fail(&first[0], true)).await, "accepted");
    assert_eq!(gw.job(&user, &id).await["status"], "queued");
    // The retry waits out its backoff, then a waiting node is woken for it.
    let second = gw.fetch(&node, "n", &["echo"], 1, 10.0).await;
    assert_eq!(second[0]["attempt"], 2);
    assert_eq!(gw.report(&node, &fail(&second[0], true)).await, "accepted");
    let job = gw.job(&user, &id).await;
    assert_eq!(
        (job["status"].as_str(), job["attempts"].as_u64()),
        (Some("failed"), Some(2))
    );
    assert_eq!(job["error"]["message"], "upstream answered 503");

    let other = gw.submit_id(&user, "echo").await;
    let leased = gw.fetch(&node, "n", &["echo"], 1, 0.0).await;
    gw.report(&node, &fail(&leased[0], false)).await;
    assert_eq!(gw.job(&user, &other).await["status"], "failed");
}

#[tokio::test]
async fn a_waiting_fetch_is_woken_by_a_submit_for_its_model_only() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let fetcher = {
        let (http, url, node) = (
            gw.http.clone(),
            gw.url("/internal/queue/fetch"),
            node.clone(),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let body: Value = http
                .post(url)
                .bearer_auth(node)
                .json(&json!({"node_id": "w", "models": ["wanted"], "limit": 4, "wait": 25}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (body, started.elapsed())
        })
    };
    gw.submit_id(&user, "unwanted").await;
    let wanted = gw
        .submit_with(
            &user,
            &chat("wanted", "hi"),
            None,
            &[("x-request-id", "trace-123")],
        )
        .await;
    assert_eq!(wanted.headers()["x-request-id"], "trace-123");
    let (body, waited) = fetcher.await.unwrap();
    assert!(
        waited < Duration::from_secs(20),
        "woken by the submit, not by the timeout"
    );
    let jobs = body["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["model"], "wanted");
    assert_eq!(jobs[0]["request_id"], "trace-123");
    assert_eq!(jobs[0]["request_payload"], chat("wanted", "hi"));
}

#[tokio::test]
async fn submit_accepts_the_wrapped_form_and_names_bad_fields() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    gw.submit_id(&user, "echo").await;
    let leased = gw.fetch(&node, "n", &["*"], 1, 0.0).await;
    let outcome = gw
        .report(
            &node,
            &json!({"results": [{"id": leased[0]["id"], "lease_id": leased[0]["lease_id"],
            "status": "COMPLETED", "result": completion("wrapped")}]}),
        )
        .await;
    assert_eq!(outcome, "accepted");
    let (status, body) = gw
        .post_json(
            &node,
            "/internal/queue/submit",
            &json!([{"id": "x", "lease_id": "y", "status": "DONE"}]),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("status"),
        "{body}"
    );
    let (status, _) = gw
        .post_json(
            &node,
            "/internal/queue/submit",
            &json!([{"id": "x", "lease_id": "y", "status": "COMPLETED"}]),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        gw.report(
            &node,
            &json!([{"id": "job-x", "lease_id": "l", "status": "COMPLETED", "result": {}}])
        )
        .await,
        "stale"
    );
}
