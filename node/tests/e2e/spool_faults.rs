//! The spool holds every finished result. A node is killed with SIGKILL at each stage of a
//! result's life, then started again on the same spool: while its jobs run upstream, while
//! a submit hangs on a frozen gateway (SIGSTOP) with finished results behind it, and while
//! it retries a submit to a gateway that is down. No finished result is lost, and each
//! job's upstream is called exactly once per lease it had (a lapsed lease is a new
//! attempt). A SIGTERM in an outage reports the spool's true size.

use crate::{spool_lines, stack};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use testkit::mock::{Fault, MockUpstream};
use testkit::{Gateway, NodeProcess, eventually, free_port};

const JOBS: usize = 3;

/// A node that takes the three jobs in one fetch, its results spooled at `spool`.
fn spool_node(
    gw: &Gateway,
    key: &str,
    mock: &MockUpstream,
    spool: &Path,
    args: &[&str],
) -> NodeProcess {
    let extra = format!(
        "models = [\"m\"]\nconcurrency = {JOBS}\nbatch_size = {JOBS}\nspool = \"{}\"",
        spool.display()
    );
    let config = NodeProcess::config(gw, key, "spooler", Some(&mock.base_url()), &extra);
    NodeProcess::start_with("run", &config, args)
}

async fn submit_jobs(gw: &Gateway, user: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..JOBS {
        ids.push(gw.submit_id(user, "m").await);
    }
    ids
}

async fn all_running(mock: &MockUpstream, calls: u64) {
    eventually(
        Duration::from_secs(20),
        "the jobs to be running",
        || async { (mock.calls() == calls).then_some(()) },
    )
    .await;
}

async fn spooled(path: &Path, count: usize) {
    eventually(
        Duration::from_secs(20),
        "the results in the spool",
        || async { (spool_lines(path) == count).then_some(()) },
    )
    .await;
}

fn kill(node: &mut NodeProcess) {
    node.signal("-KILL");
    assert!(node.wait(Duration::from_secs(5)).is_some(), "the node died");
}

/// Every job completed with the mock's answer, and the upstream was called once per lease
/// each job had, beyond `earlier_calls` for other jobs. Returns the attempts of each job.
async fn every_job_completed_once_per_lease(
    gw: &Gateway,
    user: &str,
    ids: &[String],
    mock: &MockUpstream,
    earlier_calls: u64,
) -> Vec<u64> {
    let jobs: Vec<Value> = eventually(Duration::from_secs(60), "every job to complete", || async {
        let (_, page) = gw
            .post_json(user, "/v1/results/poll", &json!({"ids": ids}))
            .await;
        let jobs = page["jobs"].as_array().cloned().unwrap_or_default();
        (jobs.len() == ids.len() && jobs.iter().all(|j| j["status"] == "completed")).then_some(jobs)
    })
    .await;
    for job in &jobs {
        assert_eq!(
            job["result"]["choices"][0]["message"]["content"], "mock: hello",
            "{job}"
        );
    }
    let attempts: Vec<u64> = jobs
        .iter()
        .map(|j| j["attempts"].as_u64().unwrap())
        .collect();
    assert_eq!(
        mock.calls() - earlier_calls,
        attempts.iter().sum::<u64>(),
        "one upstream call per lease: attempts {attempts:?}"
    );
    attempts
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_while_its_jobs_run_upstream_loses_nothing_and_runs_each_once_more_after_its_lease()
 {
    let (gw, user, key, mock) = stack(&[("OBB_LEASE_SECONDS", "3")]).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool.jsonl");
    let ids = submit_jobs(&gw, &user).await;
    mock.set_delay(Duration::from_secs(30));
    let mut node = spool_node(&gw, &key, &mock, &spool, &[]);
    all_running(&mock, JOBS as u64).await;
    kill(&mut node);
    assert_eq!(spool_lines(&spool), 0, "nothing had finished");
    mock.set_delay(Duration::ZERO);
    let _node = spool_node(&gw, &key, &mock, &spool, &[]);
    let attempts = every_job_completed_once_per_lease(&gw, &user, &ids, &mock, 0).await;
    assert_eq!(
        attempts,
        vec![2; JOBS],
        "each lease lapsed once, with the killed node"
    );
    println!(
        "figures: stage=running jobs={JOBS} lapsed_leases={JOBS} upstream_calls={} lost=0",
        mock.calls()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_with_a_submit_hanging_on_a_frozen_gateway_and_finished_results_behind_it_loses_nothing()
 {
    let (gw, user, key, mock) = stack(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool.jsonl");
    let ids = submit_jobs(&gw, &user).await;
    // The jobs end one after another: the first result's submit hangs on the frozen
    // gateway, and the two others finish behind it. The first ends 3 s after its call, so
    // that the SIGSTOP lands before it on a loaded machine.
    mock.push_faults([
        Fault::Delay(Duration::from_secs(3)),
        Fault::Delay(Duration::from_secs(4)),
        Fault::Delay(Duration::from_secs(5)),
    ]);
    let mut node = spool_node(&gw, &key, &mock, &spool, &[]);
    all_running(&mock, JOBS as u64).await;
    gw.signal("-STOP");
    spooled(&spool, JOBS).await;
    let log = node.log();
    assert_eq!(log.matches("job completed").count(), JOBS, "{log}");
    assert!(
        !log.contains("results kept in the spool"),
        "the first submit is still in flight: {log}"
    );
    kill(&mut node);
    assert_eq!(spool_lines(&spool), JOBS, "the spool outlived the node");
    let _node = spool_node(&gw, &key, &mock, &spool, &[]);
    gw.signal("-CONT");
    let attempts = every_job_completed_once_per_lease(&gw, &user, &ids, &mock, 0).await;
    assert_eq!(attempts, vec![1; JOBS], "nothing ran twice");
    eventually(Duration::from_secs(10), "the spool to empty", || async {
        (spool_lines(&spool) == 0).then_some(())
    })
    .await;
    println!(
        "figures: stage=sending+finished_unsent jobs={JOBS} spooled_at_kill={JOBS} upstream_calls={} lost=0",
        mock.calls()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_while_retrying_a_submit_to_a_gateway_that_is_down_loses_nothing() {
    let (mut gw, user, key, mock) = stack(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool.jsonl");
    let ids = submit_jobs(&gw, &user).await;
    // Long enough for the gateway's kill to land before the first result, on a loaded
    // machine.
    mock.set_delay(Duration::from_secs(3));
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let mut node = spool_node(&gw, &key, &mock, &spool, &["--metrics-addr", &metrics]);
    all_running(&mock, JOBS as u64).await;
    gw.stop_with("-KILL");
    spooled(&spool, JOBS).await;
    eventually(
        Duration::from_secs(20),
        "a submit to be retried",
        || async {
            node.log()
                .contains("results kept in the spool")
                .then_some(())
        },
    )
    .await;
    let scraped = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        scraped
            .lines()
            .any(|line| line == format!("obb_node_spool_size {JOBS}")),
        "the gauge is the spool's size: {scraped}"
    );
    kill(&mut node);
    gw.spawn().await;
    let _node = spool_node(&gw, &key, &mock, &spool, &[]);
    let attempts = every_job_completed_once_per_lease(&gw, &user, &ids, &mock, 0).await;
    assert_eq!(attempts, vec![1; JOBS], "nothing ran twice");
    println!(
        "figures: stage=retrying jobs={JOBS} spooled_at_kill={JOBS} upstream_calls={} lost=0",
        mock.calls()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_an_outage_reports_the_spool_s_true_size() {
    let (mut gw, user, key, mock) = stack(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool.jsonl");
    // Long enough for the gateway's kill to land before the first result, on a loaded
    // machine.
    mock.set_delay(Duration::from_secs(3));
    let mut node = spool_node(&gw, &key, &mock, &spool, &[]);
    // One job delivered before the outage: the node finished four, and three stay.
    let first = gw.submit_id(&user, "m").await;
    let job = gw.job(&user, &format!("{first}?wait=30")).await;
    assert_eq!(job["status"], "completed");
    let ids = submit_jobs(&gw, &user).await;
    all_running(&mock, JOBS as u64 + 1).await;
    gw.stop_with("-KILL");
    spooled(&spool, JOBS).await;
    node.signal("-TERM");
    eventually(
        Duration::from_secs(10),
        "the node to deliver its last results",
        || async {
            node.log()
                .contains("delivering the last results")
                .then_some(())
        },
    )
    .await;
    // The second signal leaves them in the spool instead of waiting for the flush timeout.
    node.signal("-TERM");
    let status = node.wait(Duration::from_secs(10)).expect("the node exits");
    let log = node.log();
    assert!(!status.success(), "{log}");
    let said = format!(
        "{JOBS} results could not be delivered and stay in the spool `{}`",
        spool.display()
    );
    assert!(log.contains(&said), "{log}");
    assert_eq!(spool_lines(&spool), JOBS);
    gw.spawn().await;
    let _node = spool_node(&gw, &key, &mock, &spool, &[]);
    let attempts = every_job_completed_once_per_lease(&gw, &user, &ids, &mock, 1).await;
    assert_eq!(attempts, vec![1; JOBS]);
    assert_eq!(mock.calls(), JOBS as u64 + 1);
    println!(
        "figures: stage=sigterm_in_outage finished=4 delivered_before=1 reported_in_spool={JOBS} spool_lines={JOBS}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_node_delivers_its_spool_before_it_fetches_and_runs_none_of_its_finished_jobs_again()
 {
    let (gw, user, key, mock) = stack(&[("OBB_LEASE_SECONDS", "2")]).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool.jsonl");
    let ids = submit_jobs(&gw, &user).await;
    // Long enough for the SIGSTOP to land before the first result, on a loaded machine.
    mock.set_delay(Duration::from_secs(2));
    let mut node = spool_node(&gw, &key, &mock, &spool, &[]);
    all_running(&mock, JOBS as u64).await;
    gw.signal("-STOP");
    spooled(&spool, JOBS).await;
    kill(&mut node);
    // Not a wait for a condition: the leases run out on the frozen gateway's clock. Thawed,
    // its reaper sees it stood still and grants them a fresh lease rather than queueing the
    // jobs again; either way the restarted node must deliver before it fetches.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let node = spool_node(&gw, &key, &mock, &spool, &[]);
    eventually(
        Duration::from_secs(10),
        "the node to deliver before fetching",
        || async {
            node.log()
                .contains("delivering the results an earlier run left in the spool")
                .then_some(())
        },
    )
    .await;
    gw.signal("-CONT");
    let attempts = every_job_completed_once_per_lease(&gw, &user, &ids, &mock, 0).await;
    assert_eq!(attempts, vec![1; JOBS], "no finished job was leased again");
    assert_eq!(mock.calls(), JOBS as u64);
    println!(
        "figures: stage=restart_after_lapse jobs={JOBS} upstream_calls={} reruns=0",
        mock.calls()
    );
}
