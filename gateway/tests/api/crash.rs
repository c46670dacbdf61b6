//! Crash and fault suites: the gateway is killed or starved of disk, and nothing it
//! acknowledged is lost. Each prints its figures, which docs/RELIABILITY.md records.

use crate::harness::{Gateway, chat};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, Semaphore};

/// All jobs in the database, as (idempotency key, id), after checking its integrity.
fn stored_jobs(gw: &Gateway) -> Vec<(Option<String>, String)> {
    if !gw.on_postgres() {
        // SQLite's own check of the file a kill may have torn.
        assert_eq!(
            gw.query("PRAGMA integrity_check"),
            [[Some("ok".to_owned())]]
        );
    }
    gw.query("SELECT idempotency_key, id FROM jobs")
        .into_iter()
        .map(|row| (row[0].clone(), row[1].clone().expect("an id")))
        .collect()
}

/// Jobs by idempotency key; a key with two jobs fails the test.
fn jobs_by_key(gw: &Gateway) -> HashMap<String, String> {
    let mut jobs = HashMap::new();
    for (key, id) in stored_jobs(gw) {
        let key = key.unwrap_or_default();
        assert!(
            jobs.insert(key.clone(), id).is_none(),
            "key `{key}` has two jobs"
        );
    }
    jobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_10000_concurrent_submits_loses_no_acknowledged_job() {
    const TOTAL: usize = 10_000;
    let mut gw = Gateway::start(&[]).await;
    let user = gw.key("user").await;
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let slots = Arc::new(Semaphore::new(128));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..TOTAL {
        let (http, url, user) = (
            gw.http.clone(),
            gw.url("/v1/chat/completions"),
            user.clone(),
        );
        let (acked, count, slots) = (Arc::clone(&acked), Arc::clone(&count), Arc::clone(&slots));
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await.unwrap();
            let key = format!("crash-{i}");
            let answer = http
                .post(url)
                .bearer_auth(user)
                .header("Idempotency-Key", &key)
                .json(&chat("echo", &format!("request {i}")))
                .send()
                .await;
            if let Ok(response) = answer
                && response.status() == 202
                && let Ok(job) = response.json::<Value>().await
            {
                acked
                    .lock()
                    .await
                    .push((key, job["id"].as_str().unwrap_or_default().to_owned()));
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    // Kill the gateway once a good share of the submits was acknowledged.
    crate::harness::eventually(
        Duration::from_secs(120),
        "3000 acknowledgements",
        || async { (count.load(Ordering::SeqCst) >= 3000).then_some(()) },
    )
    .await;
    gw.stop_with("-KILL");
    while tasks.join_next().await.is_some() {}
    let acked = acked.lock().await.clone();
    assert!(acked.len() < TOTAL, "the kill came before the end");

    gw.spawn().await;
    let before_retry = jobs_by_key(&gw);
    let acked_keys: HashSet<&String> = acked.iter().map(|(k, _)| k).collect();
    for (key, id) in &acked {
        assert_eq!(
            before_retry.get(key),
            Some(id),
            "acknowledged job `{id}` survived the kill"
        );
    }
    let unacknowledged_stored = before_retry
        .keys()
        .filter(|k| !acked_keys.contains(k))
        .count();
    // The submitters of unanswered requests retry them with the same key.
    for i in 0..TOTAL {
        let key = format!("crash-{i}");
        if acked_keys.contains(&key) {
            continue;
        }
        let body = chat("echo", &format!("request {i}"));
        let response = gw
            .submit_with(&user, &body, None, &[("Idempotency-Key", &key)])
            .await;
        assert_eq!(response.status(), 202);
    }
    let after = jobs_by_key(&gw);
    assert_eq!(after.len(), TOTAL, "one job per key, none twice, none lost");
    assert!(after.keys().all(|k| k.starts_with("crash-")));
    println!(
        "figures: submits={TOTAL} acknowledged_before_kill={} committed_but_unanswered={} lost=0 duplicates=0 integrity=ok",
        acked.len(),
        unacknowledged_stored
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_gets_503_and_the_gateway_recovers_when_space_returns() {
    let mount = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(mount.path())
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "mounting a tmpfs needs root, which .ci/run has"
    );
    let db = mount.path().join("queue.db");
    let filler = mount.path().join("filler");
    std::fs::write(&filler, vec![0u8; 512 * 1024]).unwrap();
    let mut gw = Gateway::start_at(Some(db.clone()), &[]).await;
    let user = gw.key("user").await;
    let big = "x".repeat(32 * 1024);
    let mut accepted = 0;
    let mut refused = None;
    for i in 0..400 {
        let response = gw.submit(&user, &chat("echo", &format!("{i} {big}"))).await;
        match response.status().as_u16() {
            202 => accepted += 1,
            503 => {
                refused = Some(response);
                break;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let refused = refused.expect("the disk filled up");
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "service_unavailable");
    assert_eq!(
        gw.get_json(&user, "/healthz").await.0,
        200,
        "the server stays up"
    );
    let (_, listed) = gw.get_json(&user, "/v1/jobs?limit=1").await;
    assert!(listed["data"].is_array(), "reads still work");

    std::fs::remove_file(&filler).unwrap();
    crate::harness::eventually(Duration::from_secs(20), "submits to work again", || async {
        let response = gw.submit(&user, &chat("echo", "after")).await;
        (response.status() == 202).then_some(())
    })
    .await;
    gw.stop_with("-TERM");
    let stored = stored_jobs(&gw);
    assert_eq!(
        stored.len(),
        accepted + 1,
        "every acknowledged job is stored, the refused one is not"
    );
    println!(
        "figures: disk=3MiB accepted_before_full={accepted} refused_with=503 recovered=yes integrity=ok"
    );
    drop(gw);
    let _ = std::process::Command::new("umount")
        .arg(mount.path())
        .status();
}
