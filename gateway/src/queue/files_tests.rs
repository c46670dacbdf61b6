//! The file store on a real SQLite file and a real directory.

use super::*;
use crate::queue::{Queue, QueueSettings};
use tokio::io::AsyncReadExt;

fn open(dir: &Path) -> Queue {
    Queue::open_in(dir, QueueSettings::default())
}

fn new_file(owner: &str, key: Option<&str>, expires_after: Option<u64>) -> NewFile {
    NewFile {
        owner_key_id: owner.into(),
        purpose: FilePurpose::Batch,
        filename: "in.jsonl".into(),
        expires_after,
        idempotency_key: key.map(str::to_owned),
    }
}

async fn store(
    files: &FileStore,
    content: &[u8],
    file: NewFile,
) -> Result<(FileRecord, bool), StoreError> {
    let mut upload = files.begin().await.unwrap();
    for chunk in content.chunks(7) {
        upload.write(chunk).await.unwrap();
    }
    files.commit(upload, file).await
}

/// The names in the files directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_stored_file_reads_back_pages_and_deletes_row_then_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(dir.path());
    let files = queue.files();
    let (first, created) = store(files, b"{\"a\":1}\n{\"b\":2}\n", new_file("a", None, None))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(first.bytes, 16);
    assert!(first.id.starts_with("file-"));
    assert_eq!(names(files.dir()), [first.id.as_str()]);
    let (second, _) = store(files, b"x\n", new_file("a", None, Some(3600)))
        .await
        .unwrap();
    assert_eq!(second.expires_at, Some(second.created_at + 3_600_000));

    let mut opened = files
        .open(first.id.clone(), Visibility::Owner("a".into()))
        .await
        .unwrap();
    let mut text = String::new();
    opened.file.read_to_string(&mut text).await.unwrap();
    assert_eq!(text, "{\"a\":1}\n{\"b\":2}\n");

    let page = |order, after: Option<&str>| {
        files.list(
            Visibility::Owner("a".into()),
            None,
            1,
            order,
            after.map(str::to_owned),
        )
    };
    let (newest, more) = page(Order::Desc, None).await.unwrap();
    assert_eq!((newest[0].id.as_str(), more), (second.id.as_str(), true));
    let (older, more) = page(Order::Desc, Some(&second.id)).await.unwrap();
    assert_eq!((older[0].id.as_str(), more), (first.id.as_str(), false));
    let (oldest, _) = page(Order::Asc, None).await.unwrap();
    assert_eq!(oldest[0].id, first.id);
    let (past_end, _) = page(Order::Asc, Some("file-unknown")).await.unwrap();
    assert!(past_end.is_empty());
    let (outputs, _) = files
        .list(
            Visibility::All,
            Some(FilePurpose::BatchOutput),
            10,
            Order::Desc,
            None,
        )
        .await
        .unwrap();
    assert!(outputs.is_empty());

    files
        .delete(first.id.clone(), Visibility::Owner("a".into()))
        .await
        .unwrap();
    assert!(matches!(
        files.get(first.id.clone(), Visibility::All).await,
        Err(StoreError::FileNotFound(_))
    ));
    assert_eq!(names(files.dir()), [second.id.as_str()]);
}

#[tokio::test]
async fn another_owners_file_is_not_found_but_an_admin_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(dir.path());
    let files = queue.files();
    let (file, _) = store(files, b"x\n", new_file("a", None, None))
        .await
        .unwrap();
    let stranger = || Visibility::Owner("b".into());
    assert!(matches!(
        files.get(file.id.clone(), stranger()).await,
        Err(StoreError::FileNotFound(_))
    ));
    assert!(matches!(
        files.open(file.id.clone(), stranger()).await,
        Err(StoreError::FileNotFound(_))
    ));
    assert!(matches!(
        files.delete(file.id.clone(), stranger()).await,
        Err(StoreError::FileNotFound(_))
    ));
    let (page, _) = files
        .list(stranger(), None, 10, Order::Desc, None)
        .await
        .unwrap();
    assert!(page.is_empty());
    assert_eq!(
        files.get(file.id.clone(), Visibility::All).await.unwrap(),
        file
    );
}

#[tokio::test]
async fn a_retried_upload_returns_the_first_file_and_a_different_one_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(dir.path());
    let files = queue.files();
    let (first, _) = store(files, b"same\n", new_file("a", Some("k1"), None))
        .await
        .unwrap();
    let (again, created) = store(files, b"same\n", new_file("a", Some("k1"), None))
        .await
        .unwrap();
    assert_eq!((again.id.as_str(), created), (first.id.as_str(), false));
    let other = store(files, b"other\n", new_file("a", Some("k1"), None)).await;
    assert!(
        matches!(other, Err(StoreError::IdempotencyConflict { .. })),
        "{other:?}"
    );
    // Another owner's key is another key.
    let (theirs, created) = store(files, b"same\n", new_file("b", Some("k1"), None))
        .await
        .unwrap();
    assert!(created && theirs.id != first.id);
    let mut expected = vec![first.id.clone(), theirs.id.clone()];
    expected.sort();
    assert_eq!(
        names(files.dir()),
        expected,
        "the retries left no bytes behind"
    );
}

#[tokio::test]
async fn an_abandoned_upload_leaves_nothing_and_a_restart_sweeps_what_a_crash_left() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(dir.path());
    let files_dir = queue.files().dir().to_owned();
    let mut upload = queue.files().begin().await.unwrap();
    upload.write(b"half").await.unwrap();
    drop(upload);
    assert!(names(&files_dir).is_empty());
    let (kept, _) = store(queue.files(), b"kept\n", new_file("a", None, None))
        .await
        .unwrap();
    drop(queue);
    // What a kill leaves: a part being written, and bytes renamed before their row.
    std::fs::write(files_dir.join("file-0.part"), b"half").unwrap();
    std::fs::write(files_dir.join("file-1"), b"no row").unwrap();
    let queue = open(dir.path());
    assert_eq!(names(queue.files().dir()), [kept.id.as_str()]);
}

#[tokio::test]
async fn the_reaper_deletes_expired_files_rows_and_bytes_a_bounded_number_per_pass() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(dir.path());
    let files = queue.files();
    for _ in 0..3 {
        // Zero seconds: expired at once, which the HTTP API never allows (3600 at least).
        store(files, b"old\n", new_file("a", None, Some(0)))
            .await
            .unwrap();
    }
    let (young, _) = store(files, b"young\n", new_file("a", None, Some(3600)))
        .await
        .unwrap();
    let (forever, _) = store(files, b"kept\n", new_file("a", None, None))
        .await
        .unwrap();
    assert_eq!(files.reap(2).await.unwrap(), 2);
    assert_eq!(files.reap(2).await.unwrap(), 1);
    assert_eq!(files.reap(2).await.unwrap(), 0);
    let mut expected = vec![young.id.clone(), forever.id.clone()];
    expected.sort();
    assert_eq!(names(files.dir()), expected);
    let (left, _) = files
        .list(Visibility::All, None, 10, Order::Asc, None)
        .await
        .unwrap();
    assert_eq!(left.len(), 2);
}

#[tokio::test]
async fn what_is_stored_with_a_file_fails_with_it_and_leaves_no_row_and_no_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(dir.path());
    let files = queue.files();
    let output = || NewFile {
        purpose: FilePurpose::BatchOutput,
        ..new_file("a", None, None)
    };
    let mut upload = files.begin().await.unwrap();
    upload.write(b"{\"custom_id\":\"a\"}\n").await.unwrap();
    let failed = files
        .commit_with(upload, output(), |_, _| -> Result<(), _> {
            Err(StoreError::Closed)
        })
        .await;
    assert!(matches!(failed, Err(StoreError::Closed)), "{failed:?}");
    assert!(names(files.dir()).is_empty(), "no bytes stay");
    let (page, _) = files
        .list(Visibility::All, None, 10, Order::Desc, None)
        .await
        .unwrap();
    assert!(page.is_empty(), "no row stays");

    let mut upload = files.begin().await.unwrap();
    upload.write(b"{}\n").await.unwrap();
    let (record, created, seen) = files
        .commit_with(upload, output(), |ctx, record| {
            let rows: i64 = ctx.conn.query_row(
                "SELECT COUNT(*) FROM files WHERE id = ?1",
                [&record.id],
                |r| r.get(0),
            )?;
            Ok(rows)
        })
        .await
        .unwrap();
    assert_eq!(
        (created, seen, record.purpose),
        (true, 1, FilePurpose::BatchOutput)
    );
    assert_eq!(names(files.dir()), [record.id.as_str()]);
}
