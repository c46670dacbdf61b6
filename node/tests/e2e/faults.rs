//! Upstream faults (slow, 500, 429 with Retry-After, a 503 with a Retry-After HTTP-date, a
//! broken body, and invalid JSON, which is final) and a node killed mid-batch: every job
//! ends as the rules say, and the counts in the database, the metrics and the clients all
//! match.

use crate::{run_node, stack};
use serde_json::Value;
use std::time::{Duration, SystemTime};
use testkit::mock::{Fault, MockUpstream};
use testkit::{Gateway, NodeProcess, chat, eventually};

#[tokio::test(flavor = "multi_thread")]
async fn every_upstream_fault_ends_as_the_rules_say_and_all_counts_agree() {
    let (gw, user, key, mock) = stack(&[("OBB_MAX_ATTEMPTS", "2")]).await;
    let _node = run_node(
        &gw,
        &key,
        &mock,
        "faulty",
        "models = [\"m\"]\nconcurrency = 1\nmax_retries = 1\nrequest_timeout_seconds = 1",
    );
    // (faults before the answer, expected final status): one upstream attempt per node
    // attempt is retried once in the node, and a job gets two gateway attempts.
    let cases: Vec<(Vec<Fault>, &str)> = vec![
        (vec![], "completed"),
        (vec![Fault::Delay(Duration::from_millis(300))], "completed"),
        (vec![Fault::Status(500, None)], "completed"),
        (vec![Fault::Status(429, Some(0))], "completed"),
        (vec![Fault::Truncate], "completed"),
        // A 200 that is not JSON is final: one call, and the job fails.
        (vec![Fault::InvalidJson], "failed"),
        (vec![Fault::Delay(Duration::from_secs(3))], "completed"),
        (
            vec![Fault::Status(500, None), Fault::Status(503, None)],
            "completed",
        ),
        (vec![Fault::Status(500, None); 4], "failed"),
        (vec![Fault::Status(400, None)], "failed"),
    ];
    let mut client_seen = Vec::new();
    for (faults, expected) in &cases {
        mock.push_faults(faults.clone());
        let response = gw
            .submit_with(&user, &chat("m", "fault"), Some(60), &[])
            .await;
        let status = response.status().as_u16();
        let outcome = if status == 200 { "completed" } else { "failed" };
        assert_eq!(outcome, *expected, "faults {faults:?} gave {status}");
        client_seen.push(outcome);
    }
    let (_, jobs) = gw.get_json(&user, "/v1/jobs?limit=100").await;
    let db_seen: Vec<String> = jobs["data"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|j| j["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(db_seen, client_seen, "the database agrees with the clients");
    let completed = client_seen.iter().filter(|s| **s == "completed").count() as f64;
    let failed = client_seen.len() as f64 - completed;
    assert_eq!(
        gw.metric("obb_jobs_finished_total", "status=\"completed\"")
            .await,
        completed
    );
    assert_eq!(
        gw.metric("obb_jobs_finished_total", "status=\"failed\"")
            .await,
        failed
    );
    assert_eq!(
        gw.metric("obb_jobs_submitted_total", "model=\"m\"").await,
        client_seen.len() as f64
    );
    println!(
        "figures: fault_cases={} completed={completed} failed={failed} mismatches=0",
        cases.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_success_that_is_not_json_fails_its_job_after_one_call_with_a_clear_message() {
    let (gw, user, key, mock) = stack(&[("OBB_MAX_ATTEMPTS", "3")]).await;
    let _node = run_node(
        &gw,
        &key,
        &mock,
        "strict",
        "models = [\"m\"]\nmax_retries = 3",
    );
    mock.push_faults([Fault::InvalidJson]);
    let id = gw.submit_id(&user, "m").await;
    let job = gw.job(&user, &format!("{id}?wait=60")).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "not handed back for another try: {job}");
    let message = job["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("not a JSON object"), "{job}");
    assert_eq!(mock.calls(), 1, "the node did not ask again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_http_date_two_seconds_ahead_is_waited_for_despite_a_short_backoff() {
    let (gw, user, key, mock) = stack(&[]).await;
    // `retry_backoff_ms = 20` (the test config's): without the date the node would ask
    // again within 20 ms.
    let _node = run_node(
        &gw,
        &key,
        &mock,
        "patient",
        "models = [\"m\"]\nmax_retries = 1",
    );
    let run = || async {
        let response = gw
            .submit_with(&user, &chat("m", "later"), Some(60), &[])
            .await;
        response.status().as_u16()
    };
    // A first job, so that the node is up and the fault's date is not spent on its start.
    assert_eq!(run().await, 200);

    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3));
    // An HTTP-date has whole seconds: `until` is 2 to 3 s ahead.
    let until = httpdate::parse_http_date(&date).unwrap();
    mock.push_faults([Fault::StatusWithRetryAfter(503, date.clone())]);
    assert_eq!(run().await, 200);

    let arrivals = mock.arrivals();
    assert_eq!(arrivals.len(), 3, "one refused call and one retry");
    let (refused, retried) = (arrivals[1], arrivals[2]);
    let ahead = until.duration_since(refused).unwrap();
    assert!(
        ahead >= Duration::from_millis(1500),
        "the date `{date}` was {ahead:?} ahead of the refused call"
    );
    // The node slept until the date (the slack is for the monotonic clock it sleeps by
    // drifting from the wall clock the mock stamps arrivals with).
    assert!(
        retried + Duration::from_millis(20) >= until,
        "the retry came {:?} before `{date}`",
        until.duration_since(retried).unwrap_or_default()
    );
    let waited = retried.duration_since(refused).unwrap();
    assert!(
        waited < ahead + Duration::from_secs(5),
        "the retry came {waited:?} after the refusal, long after `{date}`"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_mid_batch_leaves_every_job_completed_exactly_once() {
    let gw = Gateway::start(&[("OBB_LEASE_SECONDS", "1")]).await;
    let (user, key) = (gw.key("user").await, gw.key("node").await);
    let (slow, fast) = (
        MockUpstream::start(&["m"]).await.unwrap(),
        MockUpstream::start(&["m"]).await.unwrap(),
    );
    slow.set_delay(Duration::from_millis(400));
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(gw.submit_id(&user, "m").await);
    }
    let mut doomed = NodeProcess::start(
        "batch",
        &NodeProcess::config(
            &gw,
            &key,
            "doomed",
            Some(&slow.base_url()),
            "models = [\"m\"]\nconcurrency = 4\nbatch_size = 4",
        ),
    );
    eventually(
        Duration::from_secs(20),
        "the batch to be under way",
        || async { (slow.calls() >= 6).then_some(()) },
    )
    .await;
    doomed.signal("-KILL");
    assert!(doomed.wait(Duration::from_secs(5)).is_some());
    let _rescuer = run_node(
        &gw,
        &key,
        &fast,
        "rescuer",
        "models = [\"m\"]\nconcurrency = 4",
    );
    let jobs: Vec<Value> = eventually(Duration::from_secs(30), "every job to complete", || async {
        let (_, page) = gw
            .post_json(&user, "/v1/results/poll", &serde_json::json!({"ids": ids}))
            .await;
        let jobs = page["jobs"].as_array().cloned().unwrap_or_default();
        jobs.iter()
            .all(|j| j["status"] == "completed")
            .then_some(jobs)
    })
    .await;
    assert_eq!(jobs.len(), 20);
    assert!(
        jobs.iter()
            .all(|j| j["result"]["choices"][0]["message"]["content"] == "mock: hello"),
        "one stored result each"
    );
    let rerun = jobs.iter().filter(|j| j["attempts"] == 2).count();
    assert!(rerun >= 1, "the killed node's leases were run again");
    let (_, processing) = gw.get_json(&user, "/v1/jobs?status=processing").await;
    assert!(
        processing["data"].as_array().unwrap().is_empty(),
        "nothing is stuck in processing"
    );
    println!(
        "figures: jobs=20 killed_node_upstream_calls={} rerun_after_lease_expiry={rerun} lost=0 duplicates=0",
        slow.calls()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_restart_under_load_loses_nothing_and_runs_nothing_twice() {
    // Waiting clients are answered during the grace period, before the runtime stops.
    let (mut gw, user, key, mock) = stack(&[("OBB_GRACE_PERIOD_SECONDS", "1")]).await;
    mock.set_delay(Duration::from_millis(1500));
    let _node = run_node(
        &gw,
        &key,
        &mock,
        "steady",
        "models = [\"m\"]\nconcurrency = 4",
    );
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(gw.submit_id(&user, "m").await);
    }
    eventually(Duration::from_secs(10), "the jobs to be leased", || async {
        (mock.calls() == 4).then_some(())
    })
    .await;
    let waiters: Vec<_> = ids
        .iter()
        .map(|id| {
            let (http, url, user) = (
                gw.http.clone(),
                gw.url(&format!("/v1/jobs/{id}?wait=30")),
                user.clone(),
            );
            tokio::spawn(async move {
                let response = http.get(url).bearer_auth(user).send().await.unwrap();
                (
                    response.status().as_u16(),
                    response.headers().get("retry-after").is_some(),
                )
            })
        })
        .collect();
    // Restart only once the four long-polls are being held (the fifth request is the scrape).
    eventually(
        Duration::from_secs(10),
        "the long-polls to be waiting",
        || async { (gw.metric("obb_http_requests_in_flight", "").await >= 5.0).then_some(()) },
    )
    .await;
    gw.stop_with("-TERM");
    for waiter in waiters {
        let (status, retry_after) = waiter.await.unwrap();
        assert!(
            status == 503 && retry_after,
            "a waiting client gets a clean, retryable 503: {status}"
        );
    }
    gw.spawn().await;
    for id in &ids {
        let job = gw.job(&user, &format!("{id}?wait=30")).await;
        assert_eq!(job["status"], "completed", "{job}");
        assert_eq!(job["attempts"], 1, "nothing ran twice");
    }
    assert_eq!(mock.calls(), 4, "each job reached the upstream once");
    println!(
        "figures: in_flight_at_restart=4 completed_after=4 upstream_calls=4 lost=0 ran_twice=0"
    );
}
