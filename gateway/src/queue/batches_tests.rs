//! The batch store on a real SQLite file: idempotent enqueue, live counts, cancel, and the
//! status rule.

use super::*;
use crate::queue::{QueueSettings, batch_rows::allowed};
use std::sync::Arc;

fn open(dir: &std::path::Path) -> Queue {
    let path = dir.join("queue.db");
    Queue::setup(&path).unwrap();
    Queue::open(&path, QueueSettings::default(), Arc::new(|_, _| {})).unwrap()
}

fn new_batch() -> NewBatch {
    NewBatch {
        owner_key_id: "k".into(),
        endpoint: "/v1/chat/completions".into(),
        input_file_id: "file-1".into(),
        completion_window: "24h".into(),
        window_ms: 86_400_000,
        metadata: None,
        output_expires_after: None,
        idempotency_key: None,
        request_hash: String::new(),
    }
}

fn line(n: u64) -> NewLine {
    NewLine {
        line: n,
        custom_id: format!("c{n}"),
        model: "echo".into(),
        payload: "{}".into(),
    }
}

#[tokio::test]
async fn lines_enqueued_twice_are_stored_once_and_counted_live() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(dir.path());
    let (batch, created) = queue.create_batch(new_batch()).await.unwrap();
    assert!(created && batch.id.starts_with("batch_"));
    assert_eq!(batch.status, BatchStatus::Validating);
    let lines: Vec<_> = (1..=3).map(line).collect();
    assert_eq!(
        queue
            .enqueue_lines(batch.clone(), lines.clone(), 4)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        queue.enqueue_lines(batch.clone(), lines, 4).await.unwrap(),
        0,
        "a repeat adds nothing"
    );
    let read = queue
        .batch(batch.id.clone(), Visibility::All)
        .await
        .unwrap();
    assert_eq!((read.counts.total, read.counts.open), (3, 3));
    assert!(
        queue
            .start_batch(batch.id.clone(), "echo".into())
            .await
            .unwrap()
    );

    let other = Visibility::Owner("someone else".into());
    assert!(matches!(
        queue.batch(batch.id.clone(), other.clone()).await,
        Err(StoreError::BatchNotFound(_))
    ));
    let cancelling = queue
        .cancel_batch(batch.id.clone(), Visibility::All)
        .await
        .unwrap();
    assert_eq!(cancelling.status, BatchStatus::Cancelling);
    let error = ErrorBody::new("cancelled", "invalid_request_error");
    queue
        .end_batch_lines(batch.id.clone(), JobStatus::Cancelled, error)
        .await
        .unwrap();
    let ended = queue
        .batch(batch.id.clone(), Visibility::All)
        .await
        .unwrap();
    assert_eq!((ended.counts.failed, ended.counts.open), (3, 0));
    let page = queue.batch_lines(batch.id, 1, 10).await.unwrap();
    assert_eq!(page.iter().map(|l| l.line).collect::<Vec<_>>(), [2, 3]);
}

#[test]
fn final_batch_statuses_never_change() {
    for from in BatchStatus::ALL.into_iter().filter(|s| s.is_final()) {
        for to in BatchStatus::ALL {
            assert!(!allowed(from, to), "{from} -> {to}");
        }
    }
    assert!(allowed(BatchStatus::Validating, BatchStatus::InProgress));
    assert!(!allowed(BatchStatus::Validating, BatchStatus::Completed));
}

#[tokio::test]
async fn ended_lines_are_reported_for_the_metrics_and_the_snapshot_counts_batches_by_status() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    Queue::setup(&path).unwrap();
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = events.clone();
    let on_commit: crate::queue::OnCommit = Arc::new(move |_, batch: &[QueueEvent]| {
        seen.lock().unwrap().extend_from_slice(batch);
    });
    let queue = Queue::open(&path, QueueSettings::default(), on_commit).unwrap();
    let (batch, _) = queue.create_batch(new_batch()).await.unwrap();
    let lines = (1..=2).map(line).collect();
    queue.enqueue_lines(batch.clone(), lines, 4).await.unwrap();
    queue
        .cancel_batch(batch.id.clone(), Visibility::All)
        .await
        .unwrap();
    let error = ErrorBody::new("cancelled", "invalid_request_error");
    queue
        .end_batch_lines(batch.id.clone(), JobStatus::Cancelled, error)
        .await
        .unwrap();
    // A later commit: the writer reports each commit's events before it starts the next.
    let id = batch.id.clone();
    let moved = queue.move_batch(id, BatchStatus::Cancelling, BatchStatus::Cancelled);
    assert!(moved.await.unwrap());
    let ended = events
        .lock()
        .unwrap()
        .iter()
        .filter(|event| {
            **event
                == QueueEvent::BatchLineFinished {
                    status: JobStatus::Cancelled,
                }
        })
        .count();
    assert_eq!(ended, 2);
    let snapshot = queue.snapshot(std::time::Duration::from_secs(60)).await;
    assert_eq!(snapshot.unwrap().batches, vec![(BatchStatus::Cancelled, 1)]);
}
