//! Results too large for the gateway, and answers that can never succeed. With
//! `max_submit_bytes` at 1 MiB, thirty 60 KB results spooled during an outage reach the
//! gateway in submits under the limit, and a 1.2 MB result fails its job with
//! `result_too_large` instead of holding the others back; nothing runs upstream twice. A
//! spooled result the gateway rejects (400) fails its job alone with `result_rejected` and
//! the gateway's message, so that the job is not run again. A refused node key (revoked:
//! 401; a USER key: 403) or a server URL with no node API (404) stops the daemon with the
//! gateway's message instead of hammering the gateway, and the results stay in the spool.

use crate::{spool_lines, stack};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use testkit::mock::MockUpstream;
use testkit::{Gateway, NodeProcess, chat, eventually};

const LIMIT: usize = 1024 * 1024;
const SMALL: usize = 60 * 1024;
const SMALL_JOBS: usize = 30;
const LARGE: usize = 1_200_000;

/// What an earlier run left in the spool at `spool`: the results of `count` jobs leased by
/// `node`, each completed with "spooled {i}", except those `malformed` says, which are
/// COMPLETED without a completion (the gateway rejects that with 400). Returns the jobs.
async fn spool_left_behind(
    gw: &Gateway,
    user: &str,
    key: &str,
    node: &str,
    count: usize,
    spool: &Path,
    malformed: impl Fn(usize) -> bool,
) -> Vec<Value> {
    for _ in 0..count {
        gw.submit_id(user, "m").await;
    }
    let jobs = gw.fetch(key, node, &["m"], count as u32, 0.0).await;
    assert_eq!(jobs.len(), count);
    let lines: Vec<String> = jobs
        .iter()
        .enumerate()
        .map(|(i, job)| {
            let mut result =
                json!({"id": job["id"], "lease_id": job["lease_id"], "status": "COMPLETED"});
            if !malformed(i) {
                result["result"] = testkit::completion(&format!("spooled {i}"));
            }
            result.to_string() + "\n"
        })
        .collect();
    std::fs::write(spool, lines.concat()).unwrap();
    jobs
}

/// The gateway's own words for a node submit to `path` with `key`, and their status.
async fn gateway_says(gw: &Gateway, key: &str, path: &str) -> (u16, String) {
    let response = gw
        .http
        .post(gw.url(path))
        .bearer_auth(key)
        .json(&json!([]))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"]["message"].as_str().unwrap().to_owned(),
    )
}

/// The daemon stops on its own, unsuccessfully and without a panic, its last line the
/// error `said`, asked the gateway at most a few times, and keeps `spooled` results in the
/// spool. Returns its log.
fn stops_with(node: &mut NodeProcess, said: &str, spool: &Path, spooled: usize) -> String {
    let status = node.wait(Duration::from_secs(20)).expect("the node stops");
    let log = node.log();
    assert!(!status.success(), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let last = log.lines().rev().find(|line| !line.trim().is_empty());
    assert_eq!(last, Some(format!("error: {said}").as_str()), "{log}");
    let refusals = log.matches(said).count();
    assert!(refusals <= 4, "no hammering: {refusals} refusals\n{log}");
    assert_eq!(spool_lines(spool), spooled, "the results are kept: {log}");
    log
}

/// A node that takes all the jobs at once, its results spooled at `spool`.
fn wide_node(gw: &Gateway, key: &str, mock: &MockUpstream, spool: &Path) -> NodeProcess {
    let extra = format!(
        "models = [\"m\"]\nconcurrency = 32\nbatch_size = 32\nspool = \"{}\"",
        spool.display()
    );
    NodeProcess::start(
        "run",
        &NodeProcess::config(gw, key, "wide", Some(&mock.base_url()), &extra),
    )
}

/// Thirty 60 KB jobs and one of 1.2 MB, all running on a node when the gateway is killed;
/// returns once the node has spooled every result. (small ids, large id, the node).
async fn results_spooled_in_an_outage(
    gw: &mut Gateway,
    user: &str,
    key: &str,
    mock: &MockUpstream,
    spool: &Path,
) -> (Vec<String>, String, NodeProcess) {
    let mut small = Vec::new();
    for i in 0..SMALL_JOBS {
        let text = format!("{i:02}{}", "s".repeat(SMALL));
        small.push(submit(gw, user, &text).await);
    }
    let large = submit(gw, user, &"L".repeat(LARGE)).await;
    // Long enough for all 31 calls, one of them 1.2 MB, to be seen before the kill on a
    // loaded machine: a result delivered before the outage would spoil the case.
    mock.set_delay(Duration::from_secs(6));
    let node = wide_node(gw, key, mock, spool);
    let jobs = SMALL_JOBS as u64 + 1;
    eventually(
        Duration::from_secs(30),
        "every job to be running",
        || async { (mock.calls() == jobs).then_some(()) },
    )
    .await;
    gw.stop_with("-KILL");
    eventually(
        Duration::from_secs(30),
        "every result in the spool",
        || async { (spool_lines(spool) == jobs as usize).then_some(()) },
    )
    .await;
    (small, large, node)
}

async fn submit(gw: &Gateway, user: &str, text: &str) -> String {
    let response = gw.submit(user, &chat("m", text)).await;
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.unwrap();
    job["id"].as_str().unwrap().to_owned()
}

async fn final_jobs(gw: &Gateway, user: &str, ids: &[String]) -> Vec<Value> {
    eventually(Duration::from_secs(60), "every job to end", || async {
        let (_, page) = gw
            .post_json(user, "/v1/results/poll", &json!({"ids": ids}))
            .await;
        let jobs = page["jobs"].as_array().cloned().unwrap_or_default();
        (jobs.len() == ids.len()
            && jobs
                .iter()
                .all(|j| matches!(j["status"].as_str(), Some("completed" | "failed"))))
        .then_some(jobs)
    })
    .await
}

/// The small jobs completed with their 60 KB answer and the large one failed with
/// `result_too_large`, each in one attempt; returns the large job's error message.
async fn assert_outcomes(gw: &Gateway, user: &str, small: &[String], large: &str) -> String {
    let jobs = final_jobs(gw, user, small).await;
    for job in &jobs {
        assert_eq!(job["status"], "completed", "{}", job["error"]);
        assert_eq!(job["attempts"], 1);
        let content = job["result"]["choices"][0]["message"]["content"]
            .as_str()
            .unwrap();
        assert!(content.len() > SMALL, "the whole answer was stored");
    }
    let job = final_jobs(gw, user, &[large.to_owned()]).await.remove(0);
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    assert_eq!(job["error"]["code"], "result_too_large", "{job}");
    let message = job["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains(&format!("limit of {LIMIT} bytes")),
        "the gateway's limit is named: {message}"
    );
    assert!(message.contains(large), "the job is named: {message}");
    message
}

#[tokio::test(flavor = "multi_thread")]
async fn results_spooled_in_an_outage_reach_a_gateway_with_a_1_mib_limit_and_one_too_large_fails_alone()
 {
    let limit = LIMIT.to_string();
    let (mut gw, user, key, mock) = stack(&[("OBB_MAX_SUBMIT_BYTES", &limit)]).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool.jsonl");
    let (small, large, node) =
        results_spooled_in_an_outage(&mut gw, &user, &key, &mock, &spool).await;
    gw.spawn().await;
    let message = assert_outcomes(&gw, &user, &small, &large).await;
    assert_eq!(mock.calls(), SMALL_JOBS as u64 + 1, "nothing ran twice");
    eventually(Duration::from_secs(10), "the spool to empty", || async {
        (spool_lines(&spool) == 0).then_some(())
    })
    .await;
    let log = node.log();
    assert!(
        !log.contains("sending it in halves"),
        "packed under the announced limit, never refused: {log}"
    );
    assert_eq!(log.matches("the job fails instead").count(), 1, "{log}");
    println!(
        "figures: limit_bytes={LIMIT} small_results={SMALL_JOBS}x{SMALL}B completed={SMALL_JOBS} large_result={LARGE}B failed=1 upstream_calls={} refusals_413=0 message={message:?}",
        mock.calls()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_node_that_does_not_know_the_limit_splits_on_413_and_fails_only_the_result_that_cannot_fit()
 {
    let limit = LIMIT.to_string();
    let (mut gw, user, key, mock) = stack(&[("OBB_MAX_SUBMIT_BYTES", &limit)]).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool.jsonl");
    let (small, large, mut node) =
        results_spooled_in_an_outage(&mut gw, &user, &key, &mock, &spool).await;
    node.signal("-KILL");
    assert!(node.wait(Duration::from_secs(5)).is_some());
    gw.spawn().await;
    // A new process knows no limit before its first fetch, and delivers the spool first.
    let node = wide_node(&gw, &key, &mock, &spool);
    let message = assert_outcomes(&gw, &user, &small, &large).await;
    assert_eq!(mock.calls(), SMALL_JOBS as u64 + 1, "nothing ran twice");
    let log = node.log();
    let halvings = log.matches("sending it in halves").count();
    assert!(halvings >= 1, "{log}");
    assert_eq!(log.matches("the job fails instead").count(), 1, "{log}");
    println!(
        "figures: limit_bytes={LIMIT} spooled=31 halvings_after_413={halvings} completed={SMALL_JOBS} failed=1 upstream_calls={} message={message:?}",
        mock.calls()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_node_key_stops_the_daemon_with_a_message_and_the_result_stays_in_the_spool() {
    let (gw, user, key, mock) = stack(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool.jsonl");
    mock.set_delay(Duration::from_secs(2));
    let extra = format!("models = [\"m\"]\nspool = \"{}\"", spool.display());
    let mut node = NodeProcess::start(
        "run",
        &NodeProcess::config(&gw, &key, "revoked", Some(&mock.base_url()), &extra),
    );
    gw.submit_id(&user, "m").await;
    eventually(Duration::from_secs(10), "the job to start", || async {
        (mock.calls() == 1).then_some(())
    })
    .await;
    let (_, keys) = gw.get_json(&gw.admin, "/admin/keys").await;
    let id = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["role"] == "node")
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .unwrap();
    let revoked = gw
        .http
        .delete(gw.url(&format!("/admin/keys/{id}")))
        .bearer_auth(&gw.admin)
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    let (status, message) = gateway_says(&gw, &key, "/internal/queue/submit").await;
    assert_eq!(status, 401, "{message}");
    let said = format!("the gateway refused the node key (401): {message}");
    stops_with(&mut node, &said, &spool, 1);
    assert_eq!(mock.calls(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_key_as_the_node_key_stops_the_daemon_on_403_with_the_gateway_s_message_and_keeps_the_spool()
 {
    let (gw, user, key, mock) = stack(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool.jsonl");
    // Results in the spool make the submit the first request, so that the submitter is
    // the one that meets the refusal.
    spool_left_behind(&gw, &user, &key, "user-keyed", 2, &spool, |_| false).await;
    let (status, message) = gateway_says(&gw, &user, "/internal/queue/submit").await;
    assert_eq!(status, 403, "{message}");
    let extra = format!("models = [\"m\"]\nspool = \"{}\"", spool.display());
    let mut node = NodeProcess::start(
        "run",
        &NodeProcess::config(&gw, &user, "user-keyed", Some(&mock.base_url()), &extra),
    );
    let said = format!("the gateway refused the node key (403): {message}");
    let log = stops_with(&mut node, &said, &spool, 2);
    println!(
        "figures: refusal=403 spooled_kept=2 panics=0 refusals={} last_line={said:?}",
        log.matches(&said).count()
    );
    assert_eq!(mock.calls(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_url_without_the_node_api_stops_the_daemon_on_404_with_the_gateway_s_message_and_keeps_the_spool()
 {
    let (gw, user, key, mock) = stack(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool.jsonl");
    spool_left_behind(&gw, &user, &key, "misdirected", 2, &spool, |_| false).await;
    let (status, message) = gateway_says(&gw, &key, "/bogus/internal/queue/submit").await;
    assert_eq!(status, 404, "{message}");
    let extra = format!("models = [\"m\"]\nspool = \"{}\"", spool.display());
    let config = NodeProcess::config(&gw, &key, "misdirected", Some(&mock.base_url()), &extra)
        .replace(
            &format!("url = \"{}\"", gw.base),
            &format!("url = \"{}/bogus\"", gw.base),
        );
    assert!(config.contains("/bogus"), "{config}");
    let mut node = NodeProcess::start("run", &config);
    let said = format!("the gateway rejected `/internal/queue/submit` (404): {message}");
    let log = stops_with(&mut node, &said, &spool, 2);
    println!(
        "figures: refusal=404 spooled_kept=2 panics=0 refusals={} last_line={said:?}",
        log.matches(&said).count()
    );
    assert_eq!(mock.calls(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spooled_result_the_gateway_rejects_fails_its_job_alone_with_the_gateway_s_message_and_the_others_are_delivered()
 {
    let (gw, user, key, mock) = stack(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool.jsonl");
    // The middle result is COMPLETED without a completion, which the gateway rejects with
    // 400 however often it is sent.
    let jobs = spool_left_behind(&gw, &user, &key, "spooler", 3, &spool, |i| i == 1).await;
    let extra = format!("models = [\"m\"]\nspool = \"{}\"", spool.display());
    let node = NodeProcess::start(
        "run",
        &NodeProcess::config(&gw, &key, "spooler", Some(&mock.base_url()), &extra),
    );
    eventually(Duration::from_secs(20), "the spool to empty", || async {
        (spool_lines(&spool) == 0).then_some(())
    })
    .await;
    for i in [0, 2] {
        let id = jobs[i]["id"].as_str().unwrap();
        let job = gw.job(&user, id).await;
        assert_eq!(job["status"], "completed", "{job}");
        assert_eq!(
            job["result"]["choices"][0]["message"]["content"],
            format!("spooled {i}")
        );
    }
    let bad = jobs[1]["id"].as_str().unwrap();
    let job = gw.job(&user, bad).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "not run again: {job}");
    assert_eq!(job["error"]["code"], "result_rejected", "{job}");
    let message = job["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "the gateway rejected the result of job `{bad}` (400): "
        )),
        "{message}"
    );
    let log = node.log();
    let failed: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("the job fails instead"))
        .collect();
    assert_eq!(failed.len(), 1, "{log}");
    assert!(
        failed[0].contains(bad) && failed[0].contains("(400)"),
        "{log}"
    );
    assert!(!log.contains("dropped from the spool"), "{log}");
    assert_eq!(mock.calls(), 0, "nothing ran upstream");
    println!(
        "figures: rejected=1 status=400 failed_with=result_rejected attempts=1 others_completed=2 upstream_calls=0 message={message:?}"
    );
}
