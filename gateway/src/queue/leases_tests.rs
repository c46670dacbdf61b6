//! The fair share on a real SQLite file: leases between keys, and the in-memory counts
//! against a fresh count from the database after every kind of change.

use crate::queue::{NewJob, Queue, QueueSettings, ReapPass, Visibility, new_job_id};
use openbeepboop::{Endpoint, LeasedJob, NodeResult, NodeResultStatus};
use std::time::Duration;

fn open(dir: &std::path::Path, settings: QueueSettings) -> Queue {
    Queue::open_in(dir, settings)
}

/// A chat job of model `m` for key `owner`, with a 600 s time to live.
pub(in crate::queue) fn job(owner: &str, priority: u8) -> NewJob {
    NewJob {
        id: new_job_id(),
        owner_key_id: owner.into(),
        model: "m".into(),
        endpoint: Endpoint::ChatCompletions,
        priority,
        payload: "{}".into(),
        request_hash: String::new(),
        idempotency_key: None,
        request_id: None,
        ttl: Duration::from_secs(600),
        max_queued: None,
        est_tokens: 0,
        relay: false,
    }
}

async fn queue_jobs(queue: &Queue, owner: &str, priority: u8, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(queue.enqueue(job(owner, priority)).await.unwrap().0.id);
    }
    ids
}

async fn lease(queue: &Queue, limit: u32) -> Vec<LeasedJob> {
    queue
        .lease("n".into(), "node".into(), vec!["*".into()], limit)
        .await
        .unwrap()
}

fn result(job: &LeasedJob, status: NodeResultStatus, retryable: bool) -> NodeResult {
    NodeResult {
        id: job.id.clone(),
        lease_id: job.lease_id.clone(),
        status,
        result: (status == NodeResultStatus::Completed)
            .then(|| serde_json::value::RawValue::from_string("{}".to_owned()).unwrap()),
        error: None,
        upstream_status: None,
        retryable,
    }
}

async fn complete(queue: &Queue, jobs: &[LeasedJob]) {
    let results = jobs
        .iter()
        .map(|job| result(job, NodeResultStatus::Completed, false))
        .collect();
    queue.submit(results).await.unwrap();
}

/// The in-memory counts equal a fresh count of the database's queued jobs.
fn assert_counts_true(queue: &Queue, dir: &std::path::Path) {
    let conn =
        crate::queue::db::Conn::Sqlite(rusqlite::Connection::open(dir.join("queue.db")).unwrap());
    let fresh = crate::queue::reads::fair_share(&conn).unwrap();
    assert_eq!(queue.fair.counts(), fresh.counts());
}

/// How many jobs the database holds leased to a node.
fn processing(dir: &std::path::Path) -> i64 {
    let conn =
        crate::queue::db::Conn::Sqlite(rusqlite::Connection::open(dir.join("queue.db")).unwrap());
    conn.query_row(
        "SELECT count(*) FROM jobs WHERE status = 'processing'",
        crate::queue::db::params![],
        |row| row.get(0),
    )
    .unwrap()
}

#[tokio::test]
async fn b_queued_behind_400_of_a_gets_its_5_within_the_next_12_leases() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(dir.path(), QueueSettings::default());
    queue_jobs(&queue, "a", 3, 400).await;
    // A node of two slots is at work on A's backlog when B queues 5.
    let first = lease(&queue, 2).await;
    complete(&queue, &first).await;
    let b = queue_jobs(&queue, "b", 3, 5).await;
    let mut order = Vec::new();
    while order.iter().filter(|owner| **owner == "b").count() < 5 {
        let leased = lease(&queue, 2).await;
        assert!(!leased.is_empty());
        for job in &leased {
            order.push(if b.contains(&job.id.to_string()) {
                "b"
            } else {
                "a"
            });
        }
        complete(&queue, &leased).await;
    }
    assert!(
        order.len() <= 12,
        "A went {} times first: {order:?}",
        order.len() - 5
    );
    assert_counts_true(&queue, dir.path());
}

#[tokio::test]
async fn a_higher_priority_goes_first_whatever_the_shares() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(dir.path(), QueueSettings::default());
    queue_jobs(&queue, "a", 3, 3).await;
    let urgent = queue_jobs(&queue, "b", 1, 2).await;
    let leased = lease(&queue, 2).await;
    let ids: Vec<String> = leased.iter().map(|j| j.id.to_string()).collect();
    assert_eq!(ids, urgent);
    // One key alone gets a whole fetch, oldest first.
    let rest = lease(&queue, 8).await;
    assert_eq!(rest.len(), 3);
}

#[tokio::test]
async fn the_counts_stay_true_through_every_kind_of_change() {
    let dir = tempfile::tempdir().unwrap();
    let settings = QueueSettings {
        max_attempts: 3,
        retry_backoff_base: Duration::ZERO,
        lease: Duration::from_millis(1),
        ..QueueSettings::default()
    };
    let queue = open(dir.path(), settings);
    let a = queue_jobs(&queue, "a", 3, 6).await;
    queue_jobs(&queue, "b", 2, 3).await;
    assert_counts_true(&queue, dir.path());
    // Leased, completed, failed for a retry (queued again), cancelled, deleted.
    let leased = lease(&queue, 4).await;
    assert_counts_true(&queue, dir.path());
    complete(&queue, &leased[..1]).await;
    queue
        .submit(vec![result(&leased[1], NodeResultStatus::Failed, true)])
        .await
        .unwrap();
    assert_counts_true(&queue, dir.path());
    queue.cancel(a[5].clone(), Visibility::All).await.unwrap();
    queue.delete(a[4].clone(), Visibility::All).await.unwrap();
    assert_counts_true(&queue, dir.path());
    // Leases that lapse put their jobs back in the queue: the reaper passes until the two
    // still leased have lapsed (1 ms leases) and are queued again.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut requeued = 0;
    loop {
        let report = queue.reap(ReapPass::default()).await.unwrap();
        assert_eq!(report.failed, 0, "{report:?}");
        requeued += report.requeued;
        if requeued >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lapsed leases were requeued within 5 s ({requeued} of 2)"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(requeued, 2);
    assert_eq!(processing(dir.path()), 0, "no job is left leased");
    assert_counts_true(&queue, dir.path());
    // And a store opened again counts the same.
    drop(queue);
    let again = open(dir.path(), QueueSettings::default());
    assert_counts_true(&again, dir.path());
}

#[tokio::test]
async fn one_fetch_takes_every_band_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(dir.path(), QueueSettings::default());
    let five = queue_jobs(&queue, "a", 5, 1).await;
    let three = queue_jobs(&queue, "a", 3, 1).await;
    let one = queue_jobs(&queue, "a", 1, 2).await;
    let leased: Vec<String> = lease(&queue, 10)
        .await
        .iter()
        .map(|j| j.id.to_string())
        .collect();
    assert_eq!(leased, [one.clone(), three, five].concat());
}

#[tokio::test]
async fn the_queue_order_fallback_keeps_a_keys_max_concurrent_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let settings = QueueSettings {
        max_attempts: 3,
        retry_backoff_base: Duration::from_secs(600),
        ..QueueSettings::default()
    };
    let queue = open(dir.path(), settings);
    // More keys than a lease may miss, each with one job backing off after a failure: the
    // counts say queued, the lane queries find nothing due, and the lease falls back to
    // queue order.
    for n in 0..20 {
        queue_jobs(&queue, &format!("k{n:02}"), 3, 1).await;
    }
    let failing = lease(&queue, 20).await;
    assert_eq!(failing.len(), 20);
    let failures = failing
        .iter()
        .map(|job| result(job, NodeResultStatus::Failed, true))
        .collect();
    queue.submit(failures).await.unwrap();
    queue.fair.set_cap("c", Some(1));
    let c = queue_jobs(&queue, "c", 3, 3).await;
    let leased = lease(&queue, 3).await;
    let ids: Vec<String> = leased.iter().map(|j| j.id.to_string()).collect();
    assert_eq!(ids, c[..1], "one job at a time for a key capped at 1");
    // Its job ends: the next one may run, through the fallback as well.
    complete(&queue, &leased).await;
    let next = lease(&queue, 3).await;
    let ids: Vec<String> = next.iter().map(|j| j.id.to_string()).collect();
    assert_eq!(ids, c[1..2]);
    assert_counts_true(&queue, dir.path());
}

#[tokio::test]
async fn a_run_that_fails_gives_its_token_estimate_back() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(dir.path(), QueueSettings::default());
    queue.fair.set_tokens("a", Some(100));
    for _ in 0..2 {
        let job = NewJob {
            est_tokens: 150,
            relay: false,
            ..job("a", 3)
        };
        queue.enqueue(job).await.unwrap();
    }
    let first = lease(&queue, 2).await;
    assert_eq!(
        first.len(),
        1,
        "one at a time for a key with a token budget"
    );
    assert!(
        lease(&queue, 2).await.is_empty(),
        "150 charged of 100: none left"
    );
    // The run fails: it used no tokens we know of, and the estimate comes back at once.
    queue
        .submit(vec![result(&first[0], NodeResultStatus::Failed, false)])
        .await
        .unwrap();
    assert_eq!(lease(&queue, 2).await.len(), 1);
}
