//! The queue's promises under faults (issue #22), driven over the node API so that each
//! race happens exactly: timers, the gateway's own downtime, the attempt budget, limits
//! that count characters, and errors that keep their history.

use crate::harness::{Gateway, chat, eventually};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A retryable failure of a leased job, as a node reports an upstream 503.
fn retryable_failure(job: &Value, message: &str) -> Value {
    json!([{
        "id": job["id"], "lease_id": job["lease_id"], "status": "FAILED",
        "error": {"message": message, "type": "server_error", "param": null, "code": "upstream_unavailable"},
        "upstream_status": 503, "retryable": true,
    }])
}

/// A hand-back (`RELEASED`), as a node sends on a forced stop.
fn hand_back(job: &Value) -> Value {
    json!([{"id": job["id"], "lease_id": job["lease_id"], "status": "RELEASED", "retryable": true}])
}

/// Heartbeats `job`'s lease as node `node_id` and returns the answer.
async fn heartbeat(gw: &Gateway, node_key: &str, node_id: &str, job: &Value) -> Value {
    let body = json!({"node_id": node_id, "lease_ids": [job["lease_id"]]});
    let (status, beat) = gw
        .post_json(node_key, "/internal/queue/heartbeat", &body)
        .await;
    assert_eq!(status, 200, "heartbeat: {beat}");
    beat
}

/// Waits until job `id`'s lease lapsed and the reaper put it back in the queue.
async fn lapsed(gw: &Gateway, user_key: &str, id: &str) {
    eventually(Duration::from_secs(10), "the lease to lapse", || async {
        (gw.job(user_key, id).await["status"] == "queued").then_some(())
    })
    .await;
}

/// A gateway with 1 s leases and a reaper every 100 ms, and a USER and a NODE key.
async fn short_leases() -> (Gateway, String, String) {
    let gw = Gateway::start(&[
        ("OBB_LEASE_SECONDS", "1"),
        ("OBB_REAPER_INTERVAL_MS", "100"),
    ])
    .await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    (gw, user, node)
}

/// Leases one job, long-polling up to `wait` seconds; `None` when none came.
async fn lease_one(gw: &Gateway, node: &str, wait: f64) -> Option<Value> {
    gw.fetch(node, "n", &["echo"], 1, wait)
        .await
        .into_iter()
        .next()
}

#[tokio::test]
async fn retries_with_scattered_due_times_are_each_leased_within_one_reaper_tick() {
    const TICK: Duration = Duration::from_millis(200);
    const BACKOFF: Duration = Duration::from_millis(1000);
    let gw = Gateway::start(&[
        ("OBB_REAPER_INTERVAL_MS", "200"),
        ("OBB_RETRY_BACKOFF_BASE_MS", "1000"),
        ("OBB_MAX_WAIT_SECONDS", "30"),
    ])
    .await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    for _ in 0..6 {
        gw.submit_id(&user, "echo").await;
    }
    let leased = gw.fetch(&node, "n", &["echo"], 6, 0.0).await;
    assert_eq!(leased.len(), 6);
    // Each failure is reported 230 ms after the previous one, so the retries fall due at six
    // different times while earlier ones are still pending.
    let start = tokio::time::Instant::now();
    let mut due = std::collections::HashMap::new();
    for (i, job) in leased.iter().enumerate() {
        tokio::time::sleep_until(start + Duration::from_millis(230) * i as u32).await;
        let reported = Instant::now();
        assert_eq!(
            gw.report(&node, &retryable_failure(job, "upstream answered 503"))
                .await,
            "accepted"
        );
        due.insert(job["id"].as_str().unwrap().to_owned(), reported + BACKOFF);
    }
    // One node long-polls with a wait much longer than the test: only a wake-up at each
    // due time can hand it the jobs on time.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut worst = Duration::ZERO;
    while !due.is_empty() && Instant::now() < deadline {
        let Some(job) = lease_one(&gw, &node, 30.0).await else {
            continue;
        };
        let at = Instant::now();
        let id = job["id"].as_str().unwrap();
        let due_at = due.remove(id).expect("a job failed in this test");
        assert_eq!(job["attempt"], 2);
        assert!(
            at + Duration::from_millis(50) >= due_at,
            "`{id}` was leased before its backoff ended"
        );
        let late = at.saturating_duration_since(due_at);
        worst = worst.max(late);
        assert!(
            late <= TICK + Duration::from_millis(800),
            "`{id}` was leased {late:?} after it fell due; the reaper ticks every {TICK:?}"
        );
    }
    assert!(due.is_empty(), "never leased again: {:?}", due.keys());
    eprintln!(
        "figures: 6 retries due 230 ms apart, each leased at most {worst:?} after its due time (reaper tick {TICK:?}, long-poll 30 s)"
    );
}

#[tokio::test]
async fn a_retry_that_falls_due_after_a_restart_is_leased_on_time() {
    let mut gw = Gateway::start(&[
        ("OBB_REAPER_INTERVAL_MS", "200"),
        ("OBB_RETRY_BACKOFF_BASE_MS", "6000"),
        ("OBB_MAX_WAIT_SECONDS", "30"),
    ])
    .await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    gw.submit_id(&user, "echo").await;
    let job = lease_one(&gw, &node, 0.0).await.expect("a job");
    let due = Instant::now() + Duration::from_secs(6);
    assert_eq!(
        gw.report(&node, &retryable_failure(&job, "503")).await,
        "accepted"
    );
    gw.stop_with("-INT");
    gw.spawn().await;
    // Measured from the due time, or from the restart when that took longer.
    let ready = Instant::now();
    let again = eventually(
        Duration::from_secs(20),
        "the retry to be leased",
        || async { lease_one(&gw, &node, 30.0).await },
    )
    .await;
    let late = Instant::now().saturating_duration_since(due.max(ready));
    assert_eq!(again["id"], job["id"]);
    assert!(
        late <= Duration::from_millis(1500),
        "leased {late:?} after it fell due"
    );
    eprintln!(
        "figures: a retry due 6 s after its failure, gateway restarted meanwhile: leased {late:?} after its due time"
    );
}

#[tokio::test]
async fn a_frozen_gateway_gives_running_jobs_a_fresh_lease_when_it_thaws() {
    let gw = Gateway::start(&[
        ("OBB_LEASE_SECONDS", "2"),
        ("OBB_REAPER_INTERVAL_MS", "100"),
    ])
    .await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let id = gw.submit_id(&user, "echo").await;
    let job = lease_one(&gw, &node, 0.0).await.expect("a job");
    // Frozen for twice the lease: nodes cannot heartbeat a gateway that answers nothing.
    gw.signal("-STOP");
    tokio::time::sleep(Duration::from_secs(4)).await;
    gw.signal("-CONT");
    let beat = heartbeat(&gw, &node, "n", &job).await;
    assert_eq!(beat["extended"], json!([job["lease_id"]]));
    assert!(
        gw.fetch(&node, "other", &["echo"], 1, 0.0).await.is_empty(),
        "no other node is handed the running job"
    );
    assert_eq!(gw.complete(&node, &job, "thawed").await, "accepted");
    let stored = gw.job(&user, &id).await;
    assert_eq!(
        (&stored["status"], &stored["attempts"]),
        (&json!("completed"), &json!(1))
    );
}

#[tokio::test]
async fn a_lapse_on_the_last_attempt_leaves_its_holder_one_more_lease_before_the_job_fails() {
    let gw = Gateway::start(&[
        ("OBB_LEASE_SECONDS", "1"),
        ("OBB_MAX_ATTEMPTS", "1"),
        ("OBB_REAPER_INTERVAL_MS", "100"),
    ])
    .await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let late = gw.submit_id(&user, "echo").await;
    let job = lease_one(&gw, &node, 0.0).await.expect("a job");
    let leased = tokio::time::Instant::now();
    // Half a lease past the lapse: the job has no attempt left, so nobody else may take it,
    // and its holder's result still counts.
    tokio::time::sleep_until(leased + Duration::from_millis(1500)).await;
    assert_eq!(gw.job(&user, &late).await["status"], "processing");
    assert_eq!(gw.complete(&node, &job, "late").await, "accepted");
    assert_eq!(gw.job(&user, &late).await["status"], "completed");
    // A holder that never comes back: the job fails one lease after the lapse.
    let lost = gw.submit_id(&user, "echo").await;
    lease_one(&gw, &node, 0.0).await.expect("a job");
    let leased = Instant::now();
    let failed = eventually(Duration::from_secs(10), "the job to fail", || async {
        let job = gw.job(&user, &lost).await;
        (job["status"] == "failed").then_some(job)
    })
    .await;
    assert!(
        leased.elapsed() >= Duration::from_secs(2),
        "failed at {:?}",
        leased.elapsed()
    );
    assert_eq!(failed["error"]["code"], "max_attempts_exceeded");
}

#[tokio::test]
async fn only_the_node_that_held_a_lapsed_lease_can_revive_it() {
    let (gw, user, node) = short_leases().await;
    let id = gw.submit_id(&user, "echo").await;
    let job = lease_one(&gw, &node, 0.0).await.expect("a job");
    lapsed(&gw, &user, &id).await;
    let beat = heartbeat(&gw, &node, "impostor", &job).await;
    assert_eq!(beat["lost"], json!([job["lease_id"]]));
    assert_eq!(gw.job(&user, &id).await["status"], "queued");
}

#[tokio::test]
async fn a_result_finished_while_the_gateway_was_down_is_accepted_and_the_job_runs_once() {
    let mut gw = Gateway::start(&[("OBB_LEASE_SECONDS", "3"), ("OBB_MAX_ATTEMPTS", "1")]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let id = gw.submit_id(&user, "echo").await;
    let job = lease_one(&gw, &node, 0.0).await.expect("a job");
    // The gateway is killed and stays down longer than the lease, while the node works on.
    gw.stop_with("-KILL");
    tokio::time::sleep(Duration::from_secs(5)).await;
    gw.spawn().await;
    assert_eq!(
        gw.complete(&node, &job, "finished offline").await,
        "accepted"
    );
    assert_eq!(
        gw.complete(&node, &job, "finished offline").await,
        "duplicate"
    );
    let stored = gw.job(&user, &id).await;
    assert_eq!(stored["status"], "completed");
    assert_eq!(stored["attempts"], 1);
    assert_eq!(
        stored["result"]["choices"][0]["message"]["content"],
        "finished offline"
    );
}

#[tokio::test]
async fn the_last_lease_holder_keeps_its_job_while_no_other_node_took_it() {
    let (gw, user, node) = short_leases().await;
    // A late result: the lease lapsed, the job went back to the queue, nobody took it.
    let late = gw.submit_id(&user, "echo").await;
    let job = lease_one(&gw, &node, 0.0).await.expect("a job");
    lapsed(&gw, &user, &late).await;
    assert_eq!(gw.complete(&node, &job, "late but first").await, "accepted");
    assert_eq!(gw.job(&user, &late).await["status"], "completed");
    // A late heartbeat: the lease is the node's again, and the job is not run twice.
    let beaten = gw.submit_id(&user, "echo").await;
    let job = lease_one(&gw, &node, 0.0).await.expect("a job");
    lapsed(&gw, &user, &beaten).await;
    let beat = heartbeat(&gw, &node, "n", &job).await;
    assert_eq!(beat["extended"], json!([job["lease_id"]]));
    assert_eq!(beat["lease_ttl_ms"], 1000);
    assert_eq!(gw.job(&user, &beaten).await["status"], "processing");
    assert_eq!(gw.complete(&node, &job, "kept").await, "accepted");
    assert_eq!(gw.job(&user, &beaten).await["attempts"], 1);
}

#[tokio::test]
async fn submit_outcomes_say_duplicate_only_for_this_leases_stored_outcome() {
    let (gw, user, node) = short_leases().await;
    let id = gw.submit_id(&user, "echo").await;
    let first = lease_one(&gw, &node, 0.0).await.expect("a job");
    let failure = retryable_failure(&first, "503");
    assert_eq!(gw.report(&node, &failure).await, "accepted");
    assert_eq!(
        gw.report(&node, &failure).await,
        "duplicate",
        "a retried submit"
    );
    let second = eventually(Duration::from_secs(10), "the retry", || async {
        lease_one(&gw, &node, 1.0).await
    })
    .await;
    assert_eq!(second["id"].as_str(), Some(id.as_str()));
    // The first lease's completion now comes too late: another lease holds the job.
    assert_eq!(gw.complete(&node, &first, "late").await, "stale");
    let third_party = json!([{"id": id, "lease_id": "lease-other", "status": "COMPLETED",
        "result": crate::harness::completion("x")}]);
    assert_eq!(gw.report(&node, &third_party).await, "stale");
    assert_eq!(gw.complete(&node, &second, "right").await, "accepted");
    assert_eq!(gw.complete(&node, &second, "right").await, "duplicate");
    // A job cancelled while it ran says so.
    let cancelled = gw.submit_id(&user, "echo").await;
    let job = lease_one(&gw, &node, 0.0).await.expect("a job");
    let (_, body) = gw
        .post_json(&user, &format!("/v1/jobs/{cancelled}/cancel"), &json!({}))
        .await;
    assert_eq!(body["status"], "cancelled");
    assert_eq!(gw.complete(&node, &job, "after cancel").await, "cancelled");
}

#[tokio::test]
async fn hand_backs_count_against_max_attempts_like_every_other_ending() {
    let gw = Gateway::start(&[("OBB_MAX_ATTEMPTS", "2")]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let id = gw.submit_id(&user, "echo").await;
    let first = lease_one(&gw, &node, 0.0).await.expect("a job");
    assert_eq!(gw.report(&node, &hand_back(&first)).await, "accepted");
    assert_eq!(gw.report(&node, &hand_back(&first)).await, "duplicate");
    assert_eq!(gw.job(&user, &id).await["status"], "queued");
    let second = lease_one(&gw, &node, 0.0).await.expect("the job again");
    assert_eq!(second["attempt"], 2);
    assert_eq!(gw.report(&node, &hand_back(&second)).await, "accepted");
    let job = gw.job(&user, &id).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 2);
    assert_eq!(job["error"]["code"], "max_attempts_exceeded");
    let message = job["error"]["message"].as_str().unwrap();
    assert!(message.contains("handed back by node `n`"), "{message}");
    assert!(lease_one(&gw, &node, 0.0).await.is_none(), "no third run");
}

#[tokio::test]
async fn a_job_that_expires_waiting_for_its_retry_keeps_the_last_error() {
    let gw = Gateway::start(&[
        ("OBB_RETRY_BACKOFF_BASE_MS", "30000"),
        ("OBB_REAPER_INTERVAL_MS", "100"),
    ])
    .await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let response = gw
        .submit_with(&user, &chat("echo", "hello"), None, &[("x-obb-ttl", "2")])
        .await;
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = lease_one(&gw, &node, 0.0).await.expect("a job");
    let failure = retryable_failure(&job, "upstream answered 503: model loading");
    assert_eq!(gw.report(&node, &failure).await, "accepted");
    let expired = eventually(Duration::from_secs(10), "the job to expire", || async {
        let job = gw.job(&user, &id).await;
        (job["status"] == "expired").then_some(job)
    })
    .await;
    assert_eq!(expired["error"]["code"], "job_expired");
    assert_eq!(
        expired["error"]["message"],
        format!(
            "job `{id}` expired waiting to be retried after 1 attempt; its last error: upstream answered 503: model loading"
        )
    );
}

#[tokio::test]
async fn length_limits_count_characters_and_node_submits_have_their_own_byte_limit() {
    let gw = Gateway::start(&[
        ("OBB_MAX_BODY_BYTES", "4096"),
        ("OBB_MAX_SUBMIT_BYTES", "65536"),
    ])
    .await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    // 43 CJK characters are 129 bytes: within 128 characters.
    let cjk = "節".repeat(43);
    assert_eq!(cjk.len(), 129);
    let (status, body) = gw
        .post_json(
            &node,
            "/internal/queue/fetch",
            &json!({"node_id": cjk, "models": ["echo"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["max_submit_bytes"], 65536);
    let (status, body) = gw
        .post_json(
            &node,
            "/internal/queue/fetch",
            &json!({"node_id": "節".repeat(129), "models": ["echo"]}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        "`node_id` must be 1 to 128 characters"
    );
    // A 10 KB completion is over `max_body_bytes` but well within `max_submit_bytes`.
    gw.submit_id(&user, "echo").await;
    let job = lease_one(&gw, &node, 0.0).await.expect("a job");
    let big = "x".repeat(10_000);
    assert_eq!(gw.complete(&node, &job, &big).await, "accepted");
    // Past `max_submit_bytes`, the 413 names the limit in bytes.
    let huge = json!([{"id": job["id"], "lease_id": job["lease_id"], "status": "COMPLETED",
        "result": crate::harness::completion(&"y".repeat(70_000))}]);
    let (status, body) = gw.post_json(&node, "/internal/queue/submit", &huge).await;
    assert_eq!(status, 413);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("65536 bytes"),
        "{body}"
    );
}
