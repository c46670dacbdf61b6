//! Operators' changes on a real SQLite file: retries and priorities keep the in-memory
//! depth and fair share true to a fresh count, a retried job keeps its time to live, a
//! drained node is leased nothing, a live node is not forgotten, and the hour's history is
//! read again at open.

use crate::queue::{JobFilter, NewJob, Queue, QueueSettings, StoreError, Visibility};
use openbeepboop::{ErrorBody, JobStatus, LeasedJob, NodeResult, NodeResultStatus};
use std::sync::Arc;
use std::time::Duration;

fn open(dir: &std::path::Path) -> Queue {
    Queue::open_in(dir, QueueSettings::default())
}

fn job(owner: &str) -> NewJob {
    crate::queue::leases::fair_tests::job(owner, 3)
}

async fn lease(queue: &Queue, node: &str) -> Vec<LeasedJob> {
    queue
        .lease(node.into(), "node".into(), vec!["*".into()], 1)
        .await
        .unwrap()
}

async fn fail(queue: &Queue, job: &LeasedJob) {
    let outcome = queue
        .submit(vec![NodeResult {
            id: job.id.clone(),
            lease_id: job.lease_id.clone(),
            status: NodeResultStatus::Failed,
            result: None,
            error: Some(ErrorBody::new("no", "server_error")),
            upstream_status: None,
            retryable: false,
        }])
        .await
        .unwrap();
    assert_eq!(outcome.len(), 1);
}

/// The in-memory depth and fair share equal a fresh count of the database.
fn assert_counts_true(queue: &Queue, dir: &std::path::Path) {
    let conn =
        crate::queue::db::Conn::Sqlite(rusqlite::Connection::open(dir.join("queue.db")).unwrap());
    let fresh = crate::queue::reads::fair_share(&conn).unwrap();
    assert_eq!(queue.fair.counts(), fresh.counts());
    let mut depth = queue.depth.rows();
    let mut counted = crate::queue::reads::depth(&conn).unwrap();
    depth.retain(|row| row.count != 0);
    depth.sort_by_key(|row| (row.status, row.model.clone(), row.priority));
    counted.sort_by_key(|row| (row.status, row.model.clone(), row.priority));
    assert_eq!(depth, counted);
}

#[tokio::test]
async fn retries_and_priorities_keep_the_counts_true_and_the_time_to_live() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(dir.path());
    let first = queue.enqueue(job("a")).await.unwrap().0.id;
    let second = queue.enqueue(job("a")).await.unwrap().0.id;
    let leased = lease(&queue, "n").await;
    assert_eq!(leased[0].id.as_str(), first);
    fail(&queue, &leased[0]).await;
    assert_counts_true(&queue, dir.path());

    for round in 1..=2 {
        let retried = queue.retry(first.clone()).await.unwrap();
        assert_eq!((retried.status, retried.attempts), (JobStatus::Queued, 0));
        assert_eq!(
            retried.expires_at - retried.updated_at,
            600_000,
            "round {round}: the time to live it was submitted with, not more"
        );
        assert_counts_true(&queue, dir.path());
        if round == 1 {
            let again = lease(&queue, "n").await;
            fail(&queue, &again[0]).await;
        }
    }
    let history: Vec<openbeepboop::JobEvent> = serde_json::from_str(
        queue
            .job(first.clone(), Visibility::All)
            .await
            .unwrap()
            .unwrap()
            .events
            .as_deref()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(history.len(), 2);

    let moved = queue.set_priority(second.clone(), 1).await.unwrap();
    assert_eq!(moved.priority, 1);
    assert_counts_true(&queue, dir.path());
    assert_eq!(
        lease(&queue, "n").await[0].id.as_str(),
        second,
        "priority 1 first"
    );
    assert!(matches!(
        queue.set_priority(second.clone(), 2).await,
        Err(StoreError::NotQueued { .. })
    ));
    assert!(matches!(
        queue.retry(second.clone()).await,
        Err(StoreError::NotRetryable { .. })
    ));
    assert!(matches!(
        queue.retry("job-missing".into()).await,
        Err(StoreError::JobNotFound(_))
    ));
    // A bulk retry finds nothing left to retry: the first job is queued again already.
    assert_eq!(queue.retry_matching(JobFilter::default()).await.unwrap(), 0);
    assert_counts_true(&queue, dir.path());
}

#[tokio::test]
async fn a_drained_node_is_leased_nothing_and_a_live_node_is_not_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(dir.path());
    queue.enqueue(job("a")).await.unwrap();
    assert_eq!(
        lease(&queue, "idle").await.len(),
        1,
        "an idle node takes work"
    );
    // The node is known once it called; draining an unknown node is refused.
    assert!(matches!(
        queue.set_draining("ghost".into(), true).await,
        Err(StoreError::NodeNotFound(_))
    ));
    queue.enqueue(job("a")).await.unwrap();
    queue.set_draining("idle".into(), true).await.unwrap();
    assert!(queue.is_draining("idle"));
    assert!(
        lease(&queue, "idle").await.is_empty(),
        "drained: leased nothing"
    );
    assert_eq!(lease(&queue, "other").await.len(), 1);
    queue.set_draining("idle".into(), false).await.unwrap();
    let nodes = queue.nodes(Duration::from_secs(60)).await.unwrap();
    assert!(nodes.iter().all(|n| n.alive && !n.draining), "{nodes:?}");
    assert!(matches!(
        queue
            .remove_node("idle".into(), Duration::from_secs(60))
            .await,
        Err(StoreError::NodeAlive(_))
    ));
    queue.set_draining("idle".into(), true).await.unwrap();
    queue
        .remove_node("idle".into(), Duration::ZERO)
        .await
        .unwrap();
    assert!(!queue.is_draining("idle"), "forgotten with its row");
    assert!(matches!(
        queue.remove_node("idle".into(), Duration::ZERO).await,
        Err(StoreError::NodeNotFound(_))
    ));
}

#[tokio::test]
async fn the_hours_history_is_read_again_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let queue = open(dir.path());
        queue.enqueue(job("a")).await.unwrap();
        let leased = lease(&queue, "n").await;
        fail(&queue, &leased[0]).await;
        // Counted after the commit answered its callers: soon, not at once.
        testkit::eventually(
            Duration::from_secs(5),
            "the failure in the hour",
            || async { (queue.last_hour(&Visibility::All).failed == 1).then_some(()) },
        )
        .await;
    }
    let path = dir.path().join("queue.db");
    let reopened = Queue::open(
        &crate::queue::Location::File(path.clone()),
        QueueSettings::default(),
        Arc::new(|_, _| {}),
    )
    .unwrap();
    let hour = reopened.last_hour(&Visibility::Owner("a".into()));
    assert_eq!((hour.completed, hour.failed), (0, 1));
    assert_eq!(reopened.last_hour(&Visibility::Owner("b".into())).failed, 0);
}
