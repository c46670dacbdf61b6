//! The Rust client's Files and Batch APIs against a real gateway, and a real node serving
//! the `echo` model where lines must run.

use openbeepboop::client::{BatchRequests, RunOptions};
use openbeepboop::{BatchStatus, Client, Error, FilePurpose};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::{Gateway, NodeProcess};

fn chat(text: &str) -> Value {
    json!({"model": "echo", "messages": [{"role": "user", "content": text}]})
}

fn answer(body: &Value) -> &str {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
}

async fn client_of(gw: &Gateway) -> Result<Client, Error> {
    let user = gw.key("user").await;
    Client::new(&format!("{}/v1", gw.base), &user)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_returns_results_in_input_order_and_reports_moving_counts() {
    let gw = Gateway::start(&[]).await;
    let node_key = gw.key("node").await;
    let config = NodeProcess::config(
        &gw,
        &node_key,
        "rust-batch-node",
        None,
        "models = [\"echo\"]",
    );
    let _node = NodeProcess::start("run", &config);
    let client = client_of(&gw).await.unwrap();

    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let options = RunOptions {
        poll_interval: Duration::from_millis(20),
        timeout: Some(Duration::from_secs(60)),
        metadata: Some(json!({"run": "rust"}).as_object().cloned().unwrap()),
        progress: Some(Arc::new(move |batch| {
            let counts = batch.request_counts;
            record.lock().unwrap().push((
                batch.status,
                counts.completed + counts.failed,
                counts.total,
            ));
        })),
        ..RunOptions::default()
    };
    let bodies = (0..20).map(|i| chat(&format!("n{i}"))).collect();
    let run = client
        .batches()
        .run(BatchRequests::Bodies(bodies), options.clone())
        .await
        .unwrap();
    assert_eq!(run.batch.status, BatchStatus::Completed);
    assert_eq!(run.len(), 20);
    for (i, (custom_id, result)) in run.results.iter().enumerate() {
        assert_eq!(custom_id, &format!("request-{i}"));
        assert_eq!(answer(result.as_ref().unwrap()), format!("echo: n{i}"));
    }
    let seen = seen.lock().unwrap().clone();
    let done: Vec<u64> = seen.iter().map(|(_, done, _)| *done).collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(
        seen.last().map(|s| (s.0, s.1, s.2)),
        Some((BatchStatus::Completed, 20, 20))
    );
    assert!(
        seen.len() >= 2 && done[0] < 20,
        "progress saw the counts move: {seen:?}"
    );

    // Pairs keep their ids; the batch is listed and its metadata kept.
    let pairs = vec![("b".to_owned(), chat("two")), ("a".to_owned(), chat("one"))];
    let run = client
        .batches()
        .run(
            BatchRequests::Pairs(pairs),
            RunOptions {
                progress: None,
                ..options
            },
        )
        .await
        .unwrap();
    let ids: Vec<&str> = run.results.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["b", "a"]);
    assert_eq!(answer(run.get("a").unwrap().as_ref().unwrap()), "echo: one");
    let listed = client.batches().list().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, run.batch.id, "newest first");
    assert_eq!(
        listed[1].metadata,
        Some(json!({"run": "rust"}).as_object().cloned().unwrap())
    );

    // The Files API on its own: the same upload again is another file (keys are per call).
    let upload = openbeepboop::client::Upload::Bytes {
        filename: "mine.jsonl".to_owned(),
        bytes: b"{\"x\":1}\n".to_vec(),
    };
    let file = client
        .files()
        .create(upload.clone(), FilePurpose::Batch)
        .await
        .unwrap();
    let again = client
        .files()
        .create(upload, FilePurpose::Batch)
        .await
        .unwrap();
    assert_eq!((file.filename.as_str(), file.bytes), ("mine.jsonl", 8));
    assert_ne!(again.id, file.id);
    assert!(client.files().delete(&again.id).await.unwrap().deleted);
    assert_eq!(client.files().retrieve(&file.id).await.unwrap(), file);
    assert_eq!(
        client.files().content(&file.id).await.unwrap(),
        b"{\"x\":1}\n"
    );
    assert!(client.files().delete(&file.id).await.unwrap().deleted);
    assert!(matches!(
        client.files().retrieve(&file.id).await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_of_a_file_with_bad_lines_fails_with_their_line_numbers() {
    let gw = Gateway::start(&[]).await;
    let client = client_of(&gw).await.unwrap();
    let dir = std::env::temp_dir().join(format!("obb-rust-batch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.jsonl");
    let good = json!({"custom_id": "ok", "method": "POST", "url": "/v1/chat/completions",
        "body": chat("fine")});
    let wrong_url = json!({"custom_id": "url", "method": "POST", "url": "/v1/embeddings",
        "body": chat("x")});
    std::fs::write(&path, format!("{good}\nnot json\n{wrong_url}\n")).unwrap();

    let outcome = client
        .batches()
        .run(BatchRequests::Path(path), RunOptions::default())
        .await;
    let _ = std::fs::remove_dir_all(&dir);
    let Err(Error::BatchFailed(batch)) = outcome else {
        panic!("expected BatchFailed, got {outcome:?}");
    };
    assert_eq!(batch.status, BatchStatus::Failed);
    let lines: Vec<Option<u64>> = batch
        .errors
        .as_ref()
        .unwrap()
        .data
        .iter()
        .map(|e| e.line)
        .collect();
    assert!(lines.contains(&Some(2)), "{lines:?}");
    let message = Error::BatchFailed(batch).to_string();
    assert!(message.contains("line 2"), "{message}");

    let empty = client
        .batches()
        .run(BatchRequests::Bodies(Vec::new()), RunOptions::default())
        .await;
    assert!(matches!(empty, Err(Error::Input(_))), "{empty:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_times_out_leaves_the_batch_running_and_cancel_ends_it() {
    // No node: the lines stay queued.
    let gw = Gateway::start(&[]).await;
    let client = client_of(&gw).await.unwrap();
    let options = RunOptions {
        poll_interval: Duration::from_millis(50),
        timeout: Some(Duration::from_millis(500)),
        ..RunOptions::default()
    };
    let bodies = vec![chat("never"), chat("run")];
    let outcome = client
        .batches()
        .run(BatchRequests::Bodies(bodies), options.clone())
        .await;
    let Err(Error::BatchTimeout { batch, waited }) = outcome else {
        panic!("expected BatchTimeout, got {outcome:?}");
    };
    assert_eq!(waited, Duration::from_millis(500));
    assert!(!batch.status.is_final(), "{:?}", batch.status);
    assert!(
        !client
            .batches()
            .retrieve(&batch.id)
            .await
            .unwrap()
            .status
            .is_final()
    );

    let cancelling = client.batches().cancel(&batch.id).await.unwrap();
    assert!(
        matches!(
            cancelling.status,
            BatchStatus::Cancelling | BatchStatus::Cancelled
        ),
        "{:?}",
        cancelling.status
    );
    let waiting = RunOptions {
        timeout: Some(Duration::from_secs(30)),
        ..options
    };
    let ended = client.batches().wait(&batch.id, &waiting).await.unwrap();
    assert_eq!(ended.status, BatchStatus::Cancelled);
    let order = vec!["request-0".to_owned(), "request-1".to_owned()];
    let results = client.batches().results(ended, &order).await.unwrap();
    for (custom_id, result) in &results.results {
        let error = result.as_ref().unwrap_err();
        assert_eq!(&error.custom_id, custom_id);
        assert!(error.code.is_some(), "{error:?}");
    }
    assert_eq!(results.len(), 2);
}
