//! The runner on a real store: a batch from its input file to its output, and a restart in
//! the middle of finalizing (the output file stored, the status not yet moved), and the
//! wording of a bad line.

use super::*;
use crate::queue::{FileRecord, NewFile, Order, QueueSettings, Visibility};
use openbeepboop::{FilePurpose, NodeResult, NodeResultStatus};

fn open(dir: &std::path::Path) -> Arc<Queue> {
    Arc::new(Queue::open_in(dir, QueueSettings::default()))
}

fn runner(queue: &Arc<Queue>) -> BatchRunner {
    BatchRunner::new(
        Arc::clone(queue),
        Arc::new(|_: &str, _: &[u8]| Ok("echo".to_owned())),
        RunnerSettings {
            priority: 4,
            max_lines: 100,
            max_line_bytes: 4096,
            tick: Duration::from_millis(10),
        },
    )
}

async fn input(queue: &Queue, lines: usize) -> String {
    let mut upload = queue.files().begin().await.unwrap();
    for i in 0..lines {
        let line = format!(
            "{{\"custom_id\":\"c{i}\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{{}}}}\n"
        );
        upload.write(line.as_bytes()).await.unwrap();
    }
    let file = NewFile {
        owner_key_id: "k".into(),
        purpose: FilePurpose::Batch,
        filename: "in.jsonl".into(),
        expires_after: None,
        idempotency_key: None,
    };
    queue.files().commit(upload, file).await.unwrap().0.id
}

/// Leases and completes every queued line.
async fn run_all(queue: &Queue) {
    let leased = queue
        .lease("n".into(), "node".into(), vec!["*".into()], 100)
        .await
        .unwrap();
    let results = leased
        .into_iter()
        .map(|job| NodeResult {
            id: job.id,
            lease_id: job.lease_id,
            status: NodeResultStatus::Completed,
            result: serde_json::value::RawValue::from_string(
                r#"{"id":"c","object":"chat.completion","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#
                    .to_owned(),
            )
            .ok(),
            error: None,
            upstream_status: None,
            retryable: false,
        })
        .collect();
    queue.submit(results).await.unwrap();
}

async fn outputs(queue: &Queue) -> Vec<FileRecord> {
    let purpose = Some(FilePurpose::BatchOutput);
    let (files, _) = queue
        .files()
        .list(Visibility::All, purpose, 100, Order::Asc, None)
        .await
        .unwrap();
    files
}

#[tokio::test]
async fn a_restart_after_the_output_file_was_stored_completes_without_writing_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(dir.path());
    let runner = runner(&queue);
    let file = input(&queue, 3).await;
    let new = crate::queue::NewBatch {
        owner_key_id: "k".into(),
        endpoint: "/v1/chat/completions".into(),
        input_file_id: file,
        completion_window: "24h".into(),
        window_ms: 86_400_000,
        metadata: None,
        output_expires_after: Some(3600),
        idempotency_key: None,
        request_hash: String::new(),
    };
    let (batch, _) = queue.create_batch(new).await.unwrap();
    runner.pass().await.unwrap();
    let running = queue
        .batch(batch.id.clone(), Visibility::All)
        .await
        .unwrap();
    assert_eq!(
        (running.status, running.counts.total),
        (BatchStatus::InProgress, 3)
    );
    run_all(&queue).await;
    // The first run of finalizing stores the output file, then the gateway dies.
    queue
        .move_batch(
            batch.id.clone(),
            BatchStatus::InProgress,
            BatchStatus::Finalizing,
        )
        .await
        .unwrap();
    let finalizing = queue
        .batch(batch.id.clone(), Visibility::All)
        .await
        .unwrap();
    output::write(
        &queue,
        &finalizing,
        crate::queue::BatchFile::Output,
        BatchStatus::Completed,
    )
    .await
    .unwrap();
    assert_eq!(outputs(&queue).await.len(), 1);
    // The restarted runner finds it finalizing with its output recorded.
    runner.pass().await.unwrap();
    let done = queue
        .batch(batch.id.clone(), Visibility::All)
        .await
        .unwrap();
    assert_eq!(done.status, BatchStatus::Completed);
    let files = outputs(&queue).await;
    assert_eq!(files.len(), 1, "the output is not written twice");
    assert_eq!(done.output_file_id.as_deref(), Some(files[0].id.as_str()));
    assert_eq!(done.error_file_id, None, "no file for an empty set");
    assert_eq!(done.usage.map(|u| u.total_tokens), Some(9));
    let text = std::fs::read_to_string(queue.files().dir().join(&files[0].id)).unwrap();
    assert_eq!(text.lines().count(), 3);
}

/// Judges one line of the chat endpoint with a direct request's check.
fn judged(line: &serde_json::Value) -> Result<crate::queue::NewLine, openbeepboop::BatchError> {
    let text = line.to_string();
    let check = crate::server::check_line_body;
    judge_line(
        &check,
        "/v1/chat/completions",
        7,
        text.as_bytes(),
        &mut Default::default(),
    )
}

#[test]
fn a_line_missing_a_field_is_told_which_one_is_missing() {
    use serde_json::json;
    let body = json!({"model": "echo", "messages": [{"role": "user", "content": "x"}]});
    let full = json!({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
        "body": body});
    let line = judged(&full).unwrap();
    assert_eq!((line.line, line.model.as_str()), (7, "echo"));
    for field in ["custom_id", "method", "url", "body"] {
        let mut partial = full.clone();
        partial.as_object_mut().unwrap().remove(field);
        let error = judged(&partial).unwrap_err();
        let message = error.message.unwrap();
        assert!(
            message.starts_with(&format!("missing `{field}`: each line must have ")),
            "{message}"
        );
        assert_eq!((error.param.as_deref(), error.line), (Some(field), Some(7)));
    }
    let mut get = full.clone();
    get["method"] = json!("GET");
    let error = judged(&get).unwrap_err();
    assert_eq!(
        (error.code.as_deref(), error.message.as_deref()),
        (
            Some("invalid_method"),
            Some("`method` must be `POST`, not `GET`")
        )
    );
    let mut bad_body = full.clone();
    bad_body["body"] = json!({"model": "echo"});
    let error = judged(&bad_body).unwrap_err();
    assert_eq!(
        (error.code.as_deref(), error.param.as_deref()),
        (Some("invalid_request"), Some("body.messages"))
    );
}

#[test]
fn a_responses_line_is_judged_as_a_direct_request_and_may_not_ask_for_background() {
    use serde_json::json;
    let judge = |body: serde_json::Value| {
        let line = json!({"custom_id": "r", "method": "POST", "url": "/v1/responses",
                          "body": body});
        judge_line(
            &crate::server::check_line_body,
            "/v1/responses",
            3,
            line.to_string().as_bytes(),
            &mut Default::default(),
        )
    };
    let line = judge(json!({"model": "m", "input": "hi", "background": false})).unwrap();
    assert_eq!(line.model, "m");
    for (field, value) in [
        ("background", json!(true)),
        ("previous_response_id", json!("resp_1")),
    ] {
        let mut body = json!({"model": "m", "input": "hi"});
        body[field] = value;
        let error = judge(body).unwrap_err();
        assert_eq!(
            (error.code.as_deref(), error.param.as_deref(), error.line),
            (
                Some("invalid_request"),
                Some(format!("body.{field}").as_str()),
                Some(3)
            )
        );
    }
    let error = judge(json!({"model": "m", "input": []})).unwrap_err();
    assert_eq!(error.param.as_deref(), Some("body.input"));
}
