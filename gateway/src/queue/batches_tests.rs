//! The batch store on a real SQLite file: idempotent enqueue, live counts, cancel, and the
//! status rule.

use super::*;
use crate::queue::{QueueSettings, batch_rows::allowed};
use std::sync::Arc;

fn open(dir: &std::path::Path) -> Queue {
    Queue::open_in(dir, QueueSettings::default())
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
    Queue::setup(&crate::queue::Location::File(path.clone())).unwrap();
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = events.clone();
    let on_commit: crate::queue::OnCommit = Arc::new(move |_, batch: &[QueueEvent]| {
        seen.lock().unwrap().extend_from_slice(batch);
    });
    let queue = Queue::open(
        &crate::queue::Location::File(path.clone()),
        QueueSettings::default(),
        on_commit,
    )
    .unwrap();
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

/// The batch as the database has it, bypassing `live_batches`.
async fn stored(queue: &Queue, id: &str) -> BatchRecord {
    let id = id.to_owned();
    queue
        .read(move |conn| Ok(batch_rows::by_id(conn, &id, &Visibility::All)?.unwrap()))
        .await
        .unwrap()
}

/// Ends line `n` of a batch (1-based) the way a node's result does: through
/// `jobs::transition`, which moves the batch's counts in the same transaction.
async fn complete_line(queue: &Queue, batch_id: &str, n: u64) {
    let job = queue
        .batch_lines(batch_id.to_owned(), n - 1, 1)
        .await
        .unwrap();
    let job_id = job[0].job_id.clone();
    let effects = || super::super::jobs::Effects {
        result: Some("{}"),
        ..Default::default()
    };
    queue
        .writer
        .write(move |ctx| {
            super::super::jobs::transition(
                ctx,
                &job_id,
                JobStatus::Queued,
                JobStatus::Completed,
                effects(),
            )
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_running_batch_is_read_from_memory_exactly_as_stored_and_an_ended_one_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(dir.path());
    let (batch, _) = queue.create_batch(new_batch()).await.unwrap();
    let id = batch.id.clone();
    let read = || queue.batch(id.clone(), Visibility::All);
    assert_eq!(queue.live_batches.len(), 1, "a new batch is in memory");
    assert_eq!(read().await.unwrap(), stored(&queue, &id).await);

    let lines = (1..=3).map(line).collect();
    queue.enqueue_lines(batch.clone(), lines, 4).await.unwrap();
    assert!(queue.start_batch(id.clone(), "echo".into()).await.unwrap());
    let running = read().await.unwrap();
    assert_eq!(running, stored(&queue, &id).await);
    assert_eq!(
        (running.status, running.model.as_deref()),
        (BatchStatus::InProgress, Some("echo"))
    );
    assert_eq!((running.counts.total, running.counts.open), (3, 3));

    // Each line's ending is read at once, with the count the same commit moved.
    for n in 1..=3 {
        complete_line(&queue, &id, n).await;
        let live = read().await.unwrap();
        assert_eq!(live, stored(&queue, &id).await);
        assert_eq!((live.counts.completed, live.counts.open), (n, 3 - n));
    }

    let to = |from, to| queue.move_batch(id.clone(), from, to);
    assert!(
        to(BatchStatus::InProgress, BatchStatus::Finalizing)
            .await
            .unwrap()
    );
    assert_eq!(read().await.unwrap().status, BatchStatus::Finalizing);
    assert!(
        to(BatchStatus::Finalizing, BatchStatus::Completed)
            .await
            .unwrap()
    );
    assert_eq!(queue.live_batches.len(), 0, "an ended batch leaves memory");
    let ended = read().await.unwrap();
    assert_eq!(ended, stored(&queue, &id).await);
    assert_eq!(
        (ended.status, ended.counts.completed),
        (BatchStatus::Completed, 3)
    );
}

#[tokio::test]
async fn a_change_rolled_back_with_its_operation_never_reaches_the_batch_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(dir.path());
    let (batch, _) = queue.create_batch(new_batch()).await.unwrap();
    let id = batch.id.clone();
    let failed = queue
        .writer
        .write(move |ctx| -> Result<(), StoreError> {
            ctx.conn.execute(
                "UPDATE batches SET lines_total = 99, status = 'in_progress' WHERE id = ?1",
                [&id],
            )?;
            Err(StoreError::Closed)
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(queue.live_batches.len(), 1);
    let read = queue
        .batch(batch.id.clone(), Visibility::All)
        .await
        .unwrap();
    assert_eq!(read, stored(&queue, &batch.id).await);
    assert_eq!(
        (read.status, read.counts.total),
        (BatchStatus::Validating, 0)
    );
}

#[tokio::test]
async fn after_a_restart_a_running_batch_is_read_from_memory_with_its_stored_counts() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(dir.path());
    let (batch, _) = queue.create_batch(new_batch()).await.unwrap();
    let lines = (1..=2).map(line).collect();
    queue.enqueue_lines(batch.clone(), lines, 4).await.unwrap();
    assert!(
        queue
            .start_batch(batch.id.clone(), "echo".into())
            .await
            .unwrap()
    );
    complete_line(&queue, &batch.id, 1).await;
    drop(queue);

    let path = dir.path().join("queue.db");
    let queue = Queue::open(
        &crate::queue::Location::File(path.clone()),
        QueueSettings::default(),
        Arc::new(|_, _| {}),
    )
    .unwrap();
    assert_eq!(queue.live_batches.len(), 1, "loaded when the store opens");
    let read = queue
        .batch(batch.id.clone(), Visibility::All)
        .await
        .unwrap();
    assert_eq!(read, stored(&queue, &batch.id).await);
    assert_eq!((read.counts.completed, read.counts.open), (1, 1));
    assert!(matches!(
        queue
            .batch(batch.id.clone(), Visibility::Owner("someone else".into()))
            .await,
        Err(StoreError::BatchNotFound(_))
    ));
}

#[tokio::test]
async fn a_batch_row_that_is_gone_empties_memory_and_its_owner_reads_the_rest_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(dir.path());
    let (gone, _) = queue.create_batch(new_batch()).await.unwrap();
    let (kept, _) = queue.create_batch(new_batch()).await.unwrap();
    let owner = || Visibility::Owner("k".into());
    assert_eq!(
        queue.live_batches.get(&kept.id, &owner()).map(|b| b.id),
        Some(kept.id.clone()),
        "its owner reads it from memory"
    );
    assert!(
        queue
            .live_batches
            .get(&kept.id, &Visibility::Owner("x".into()))
            .is_none()
    );

    let id = gone.id.clone();
    queue
        .writer
        .write(move |ctx| -> Result<(), StoreError> {
            ctx.conn
                .execute("DELETE FROM batches WHERE id = ?1", [&id])?;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(queue.live_batches.len(), 0, "nothing stale is kept");
    assert!(matches!(
        queue.batch(gone.id.clone(), owner()).await,
        Err(StoreError::BatchNotFound(_))
    ));
    assert_eq!(
        queue.batch(kept.id.clone(), owner()).await.unwrap(),
        stored(&queue, &kept.id).await
    );
}

#[tokio::test]
async fn a_batchs_lines_run_no_earlier_than_its_owners_max_priority() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(dir.path());
    // A made-up hash: the key is never presented, only its limits are read.
    let minted = crate::queue::MintedKey {
        token: "sk-obb-test".into(),
        prefix: "test".into(),
        hash: "unused".into(),
    };
    let key = queue
        .create_key(minted, "late".into(), openbeepboop::Role::User)
        .await
        .unwrap();
    let limits = openbeepboop::KeyLimits {
        max_priority: Some(5),
        ..openbeepboop::KeyLimits::default()
    };
    queue
        .set_key_limits(key.info.id.to_string(), limits)
        .await
        .unwrap();
    let (batch, _) = queue
        .create_batch(NewBatch {
            owner_key_id: key.info.id.to_string(),
            ..new_batch()
        })
        .await
        .unwrap();
    queue
        .enqueue_lines(batch.clone(), vec![line(1)], 4)
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("queue.db")).unwrap();
    let priority: u8 = conn
        .query_row(
            "SELECT priority FROM jobs WHERE batch_id = ?1",
            [&batch.id],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(
        priority, 5,
        "the batch priority 4 is earlier than the key may ask for"
    );
}
