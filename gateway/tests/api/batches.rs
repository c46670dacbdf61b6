//! The Batch API against the real gateway: the whole flow with the tests as the node, bad
//! lines, cancel, ownership, request-level refusals, kills during validation, the run and
//! finalizing, and the official Python SDK.

use crate::files;
use crate::harness::{Gateway, eventually};
use insta::assert_json_snapshot;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

const CHAT: &str = "/v1/chat/completions";

fn line(custom_id: &str, content: &str) -> String {
    json!({"custom_id": custom_id, "method": "POST", "url": CHAT,
        "body": {"model": "echo", "messages": [{"role": "user", "content": content}]}})
    .to_string()
}

fn jsonl(ids: &[&str]) -> String {
    ids.iter().map(|id| line(id, id) + "\n").collect()
}

pub(crate) async fn upload(gw: &Gateway, key: &str, content: String, purpose: &str) -> String {
    let (status, file) = files::upload(gw, key, files::form(content, "in.jsonl", purpose)).await;
    assert_eq!(status, 200, "{file}");
    file["id"].as_str().expect("id").to_owned()
}

/// A batch of `file`'s lines on `endpoint`, in the 24 h window.
pub(crate) async fn create_on(gw: &Gateway, key: &str, file: &str, endpoint: &str) -> Value {
    let (status, batch) = gw
        .post_json(
            key,
            "/v1/batches",
            &json!({"input_file_id": file, "endpoint": endpoint, "completion_window": "24h"}),
        )
        .await;
    assert_eq!(status, 200, "{batch}");
    batch
}

async fn create(gw: &Gateway, key: &str, file: &str) -> Value {
    let (status, batch) = gw
        .post_json(
            key,
            "/v1/batches",
            &json!({"input_file_id": file, "endpoint": CHAT, "completion_window": "24h",
                "metadata": {"run": "nightly"}}),
        )
        .await;
    assert_eq!(status, 200, "{batch}");
    batch
}

pub(crate) async fn batch_until(gw: &Gateway, key: &str, id: &str, status: &str) -> Value {
    eventually(
        Duration::from_secs(20),
        &format!("batch {id} {status}"),
        || async {
            let (_, batch) = gw.get_json(key, &format!("/v1/batches/{id}")).await;
            (batch["status"] == status).then_some(batch)
        },
    )
    .await
}

pub(crate) async fn content(gw: &Gateway, key: &str, file: &Value) -> Vec<Value> {
    let id = file.as_str().expect("a file id");
    let response = gw
        .http
        .get(gw.url(&format!("/v1/files/{id}/content")))
        .bearer_auth(key)
        .send()
        .await
        .expect("content");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("text");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Leases `want` lines, as they come, and finishes each with `finish`.
async fn run_lines(gw: &Gateway, node: &str, want: usize, finish: impl Fn(&Value) -> Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut done = 0;
    while done < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{done} of {want} lines ran"
        );
        let jobs = gw.fetch(node, "n1", &["echo"], 100, 2.0).await;
        if jobs.is_empty() {
            continue;
        }
        let results: Vec<Value> = jobs.iter().map(&finish).collect();
        assert_eq!(gw.report(node, &Value::Array(results)).await, "accepted");
        done += jobs.len();
    }
}

fn completed(job: &Value) -> Value {
    let text = job["request_payload"]["messages"][0]["content"]
        .as_str()
        .unwrap_or("");
    json!({"id": job["id"], "lease_id": job["lease_id"], "status": "COMPLETED",
        "result": testkit::completion(&format!("echo {text}"))})
}

fn by_custom_id(lines: &[Value]) -> BTreeMap<String, Value> {
    lines
        .iter()
        .map(|l| (l["custom_id"].as_str().unwrap_or("").to_owned(), l.clone()))
        .collect()
}

#[tokio::test]
async fn a_batch_runs_every_line_as_a_job_and_writes_its_output_and_error_files() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let file = upload(&gw, &user, jsonl(&["a", "b", "c"]), "batch").await;
    let created = create(&gw, &user, &file).await;
    assert_eq!(created["status"], "validating");
    assert_json_snapshot!("created", created, {
        ".id" => "[id]", ".input_file_id" => "[id]", ".created_at" => "[time]",
        ".expires_at" => "[time]",
    });
    let id = created["id"].as_str().unwrap().to_owned();
    let running = batch_until(&gw, &user, &id, "in_progress").await;
    assert_eq!(
        running["request_counts"],
        json!({"total": 3, "completed": 0, "failed": 0})
    );
    assert_eq!(running["model"], "echo");

    let jobs = gw.fetch(&node, "n1", &["echo"], 10, 5.0).await;
    assert_eq!(jobs.len(), 3);
    let line_job = gw.job(&user, jobs[0]["id"].as_str().unwrap()).await;
    assert_eq!(line_job["priority"], 4, "batch_priority");
    let (a, rest): (Vec<_>, Vec<_>) = jobs
        .iter()
        .partition(|j| j["request_payload"]["messages"][0]["content"] == "a");
    assert_eq!(
        gw.report(&node, &json!([completed(a[0])])).await,
        "accepted"
    );
    let (_, live) = gw.get_json(&user, &format!("/v1/batches/{id}")).await;
    assert_eq!(
        live["request_counts"],
        json!({"total": 3, "completed": 1, "failed": 0}),
        "live"
    );
    for job in rest {
        let text = job["request_payload"]["messages"][0]["content"]
            .as_str()
            .unwrap();
        let result = if text == "b" {
            json!({"id": job["id"], "lease_id": job["lease_id"], "status": "FAILED",
                "error": {"message": "bad request", "type": "invalid_request_error",
                    "param": null, "code": null},
                "upstream_status": 400, "retryable": false})
        } else {
            json!({"id": job["id"], "lease_id": job["lease_id"], "status": "FAILED",
                "error": {"message": "the upstream hung up", "type": "server_error",
                    "param": null, "code": "upstream_error"},
                "retryable": false})
        };
        assert_eq!(gw.report(&node, &json!([result])).await, "accepted");
    }
    let done = batch_until(&gw, &user, &id, "completed").await;
    assert_eq!(
        done["request_counts"],
        json!({"total": 3, "completed": 1, "failed": 2})
    );
    assert!(
        done["finalizing_at"].is_i64() && done["completed_at"].is_i64(),
        "{done}"
    );
    assert_json_snapshot!("completed", done, {
        ".id" => "[id]", ".input_file_id" => "[id]", ".output_file_id" => "[id]",
        ".error_file_id" => "[id]", ".created_at" => "[time]", ".expires_at" => "[time]",
        ".in_progress_at" => "[time]", ".finalizing_at" => "[time]", ".completed_at" => "[time]",
    });
    let (_, output_file) = gw
        .get_json(
            &user,
            &format!("/v1/files/{}", done["output_file_id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(output_file["purpose"], "batch_output");
    let output = content(&gw, &user, &done["output_file_id"]).await;
    assert_eq!(output.len(), 1);
    assert_json_snapshot!("output", output, {
        "[].id" => "[id]", "[].response.request_id" => "[id]", "[].response.body.id" => "[id]",
        "[].response.body.created" => "[time]",
    });
    let errors = by_custom_id(&content(&gw, &user, &done["error_file_id"]).await);
    assert_json_snapshot!("errors", errors, {
        ".*.id" => "[id]", ".*.response.request_id" => "[id]",
    });

    // The metrics count only what was committed: one completed batch, its three lines, and
    // the bytes of both files it wrote.
    assert_eq!(gw.metric("obb_batches", "status=\"completed\"").await, 1.0);
    assert_eq!(
        gw.metric("obb_batches", "status=\"in_progress\"").await,
        0.0
    );
    let lines = (
        gw.metric("obb_batch_lines_finished_total", "status=\"completed\"")
            .await,
        gw.metric("obb_batch_lines_finished_total", "status=\"failed\"")
            .await,
    );
    assert_eq!(lines, (1.0, 2.0));
    let output = gw
        .metric("obb_batch_output_bytes_total", "file=\"output\"")
        .await;
    let errors = gw
        .metric("obb_batch_output_bytes_total", "file=\"error\"")
        .await;
    assert!(output > 0.0 && errors > 0.0, "{output} {errors}");

    let (_, page) = gw.get_json(&user, "/v1/batches?limit=1").await;
    assert_eq!(page["object"], "list");
    assert_eq!(page["data"][0]["id"], id.as_str());
    assert_eq!(
        (page["first_id"].clone(), page["has_more"].clone()),
        (json!(id), json!(false))
    );
}

#[tokio::test]
async fn a_batch_with_bad_lines_fails_with_their_line_numbers_and_queues_nothing() {
    let gw = Gateway::start(&[]).await;
    let user = gw.key("user").await;
    let streaming = json!({"custom_id": "s", "method": "POST", "url": CHAT,
        "body": {"model": "echo", "stream": true, "messages": [{"role": "user", "content": "x"}]}});
    let lines = [
        line("a", "fine"),
        line("a", "duplicate"),
        json!({"custom_id": "u", "method": "POST", "url": "/v1/embeddings",
            "body": {"model": "echo", "messages": [{"role": "user", "content": "x"}]}})
        .to_string(),
        "{not json".to_owned(),
        json!({"method": "POST", "url": CHAT, "body": {}}).to_string(),
        streaming.to_string(),
        json!({"custom_id": "m", "method": "POST", "url": CHAT, "body": {"model": "echo"}})
            .to_string(),
        json!({"custom_id": "n", "url": CHAT, "body": {}}).to_string(),
    ];
    let file = upload(&gw, &user, lines.join("\n") + "\n", "batch").await;
    let id = create(&gw, &user, &file).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let failed = batch_until(&gw, &user, &id, "failed").await;
    assert!(failed["failed_at"].is_i64());
    assert_eq!(
        failed["request_counts"],
        json!({"total": 0, "completed": 0, "failed": 0})
    );
    assert_json_snapshot!("bad_lines", failed["errors"]);
    let (_, jobs) = gw.get_json(&user, "/v1/jobs").await;
    assert_eq!(jobs["data"], json!([]), "nothing queued");
}

#[tokio::test]
async fn request_level_problems_are_400s_and_store_nothing() {
    let gw = Gateway::start(&[]).await;
    let (user, other) = (gw.key("user").await, gw.key("user").await);
    let file = upload(&gw, &user, jsonl(&["a"]), "batch").await;
    let cases = [
        (
            json!({"input_file_id": file, "endpoint": "/v1/images/generations", "completion_window": "24h"}),
            "endpoint",
        ),
        (
            json!({"input_file_id": file, "endpoint": CHAT, "completion_window": "1h"}),
            "completion_window",
        ),
        (
            json!({"input_file_id": "file-nope", "endpoint": CHAT, "completion_window": "24h"}),
            "input_file_id",
        ),
        (
            json!({"input_file_id": file, "endpoint": CHAT, "completion_window": "24h",
            "metadata": {"k": "v".repeat(513)}}),
            "metadata",
        ),
        (
            json!({"input_file_id": file, "endpoint": CHAT, "completion_window": "24h",
            "output_expires_after": {"anchor": "created_at", "seconds": 60}}),
            "output_expires_after.seconds",
        ),
    ];
    for (body, param) in cases {
        let (status, error) = gw.post_json(&user, "/v1/batches", &body).await;
        assert_eq!(
            (status, error["error"]["param"].as_str()),
            (StatusCode::BAD_REQUEST, Some(param)),
            "{error}"
        );
    }
    let (status, error) = gw
        .post_json(
            &other,
            "/v1/batches",
            &json!({"input_file_id": file, "endpoint": CHAT, "completion_window": "24h"}),
        )
        .await;
    assert_eq!(status, 400, "another user's file: {error}");
    assert_json_snapshot!(
        "unknown_window",
        gw.post_json(
            &user,
            "/v1/batches",
            &json!({"input_file_id": file, "endpoint": CHAT, "completion_window": "7d"})
        )
        .await
        .1
    );
    let (_, page) = gw.get_json(&user, "/v1/batches").await;
    assert_eq!(page["data"], json!([]), "nothing stored");
    // An operator may allow more windows; the window is echoed back as sent.
    let wide = Gateway::start(&[("OBB_BATCH_COMPLETION_WINDOWS", "24h,7d")]).await;
    let user = wide.key("user").await;
    let file = upload(&wide, &user, jsonl(&["a"]), "batch").await;
    let (status, batch) = wide
        .post_json(
            &user,
            "/v1/batches",
            &json!({"input_file_id": file, "endpoint": CHAT, "completion_window": "7d"}),
        )
        .await;
    assert_eq!(
        (status, batch["completion_window"].as_str()),
        (StatusCode::OK, Some("7d"))
    );
    assert_eq!(
        batch["expires_at"].as_i64().unwrap() - batch["created_at"].as_i64().unwrap(),
        7 * 86_400
    );
}

#[tokio::test]
async fn another_users_batch_is_404_an_admin_sees_it_and_a_retried_create_returns_the_first() {
    let gw = Gateway::start(&[]).await;
    let (user, other, admin) = (
        gw.key("user").await,
        gw.key("user").await,
        gw.key("admin").await,
    );
    let file = upload(&gw, &user, jsonl(&["a"]), "batch").await;
    let body = json!({"input_file_id": file, "endpoint": CHAT, "completion_window": "24h"});
    let post = |key: &str| {
        gw.http
            .post(gw.url("/v1/batches"))
            .bearer_auth(key)
            .header("idempotency-key", "once")
            .json(&body)
            .send()
    };
    let first: Value = post(&user).await.unwrap().json().await.unwrap();
    let again: Value = post(&user).await.unwrap().json().await.unwrap();
    assert_eq!(first["id"], again["id"], "idempotent create");
    let id = first["id"].as_str().unwrap();
    let (status, _) = gw.get_json(&other, &format!("/v1/batches/{id}")).await;
    assert_eq!(status, 404);
    let (status, _) = gw
        .post_json(&other, &format!("/v1/batches/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 404);
    let (_, page) = gw.get_json(&other, "/v1/batches").await;
    assert_eq!(page["data"], json!([]));
    let (status, seen) = gw.get_json(&admin, &format!("/v1/batches/{id}")).await;
    assert_eq!((status, seen["id"].as_str()), (StatusCode::OK, Some(id)));
}

#[tokio::test]
async fn a_cancelled_batch_keeps_its_finished_lines_and_ends_the_others() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let file = upload(&gw, &user, jsonl(&["a", "b", "c"]), "batch").await;
    let id = create(&gw, &user, &file).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    batch_until(&gw, &user, &id, "in_progress").await;
    let jobs = gw.fetch(&node, "n1", &["echo"], 2, 5.0).await;
    assert_eq!(jobs.len(), 2);
    assert_eq!(
        gw.report(&node, &json!([completed(&jobs[0])])).await,
        "accepted"
    );
    let (status, cancelling) = gw
        .post_json(&user, &format!("/v1/batches/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    assert!(
        matches!(
            cancelling["status"].as_str(),
            Some("cancelling" | "cancelled")
        ),
        "{cancelling}"
    );
    let done = batch_until(&gw, &user, &id, "cancelled").await;
    assert!(done["cancelling_at"].is_i64() && done["cancelled_at"].is_i64());
    assert_eq!(
        done["request_counts"],
        json!({"total": 3, "completed": 1, "failed": 2})
    );
    assert_eq!(content(&gw, &user, &done["output_file_id"]).await.len(), 1);
    let errors = content(&gw, &user, &done["error_file_id"]).await;
    assert!(
        errors
            .iter()
            .all(|e| e["error"]["code"] == "batch_cancelled"),
        "{errors:?}"
    );
    // The running line's node hears of it; its late result is not stored.
    let late = gw.report(&node, &json!([completed(&jobs[1])])).await;
    assert_eq!(late, "cancelled");
    let (status, _) = gw
        .post_json(&user, &format!("/v1/batches/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "cancelling again is harmless");
}

/// A gateway with a user and a node key, and a batch of `lines` lines `line-0`… created.
struct Created {
    gw: Gateway,
    user: String,
    node: String,
    file: String,
    id: String,
}

async fn created_batch(lines: usize) -> Created {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let ids: Vec<String> = (0..lines).map(|i| format!("line-{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let file = upload(&gw, &user, jsonl(&refs), "batch").await;
    let id = create(&gw, &user, &file).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    Created {
        gw,
        user,
        node,
        file,
        id,
    }
}

/// Kills the gateway at `moment`, restarts it, runs the rest: one result per line.
async fn survives_a_kill(lines: usize, kill_when_validating: bool) {
    let Created {
        mut gw,
        user,
        node,
        id,
        ..
    } = created_batch(lines).await;
    if kill_when_validating {
        // As soon as some lines are queued, before all are.
        eventually(Duration::from_secs(20), "some lines queued", || async {
            let (_, jobs) = gw.get_json(&user, "/v1/jobs?limit=1").await;
            (!jobs["data"].as_array().unwrap().is_empty()).then_some(())
        })
        .await;
        let (_, batch) = gw.get_json(&user, &format!("/v1/batches/{id}")).await;
        assert_eq!(
            batch["status"], "validating",
            "killed while lines are queued"
        );
    } else {
        batch_until(&gw, &user, &id, "in_progress").await;
        let jobs = gw.fetch(&node, "n1", &["echo"], 10, 5.0).await;
        for job in &jobs {
            assert_eq!(gw.report(&node, &json!([completed(job)])).await, "accepted");
        }
    }
    gw.stop_with("-KILL");
    gw.spawn().await;
    batch_until(&gw, &user, &id, "in_progress").await;
    let (_, batch) = gw.get_json(&user, &format!("/v1/batches/{id}")).await;
    let open = lines as u64 - batch["request_counts"]["completed"].as_u64().unwrap();
    assert_eq!(
        batch["request_counts"]["total"], lines,
        "no line lost or doubled"
    );
    run_lines(&gw, &node, open as usize, completed).await;
    let done = batch_until(&gw, &user, &id, "completed").await;
    assert_eq!(
        done["request_counts"],
        json!({"total": lines, "completed": lines, "failed": 0})
    );
    let output = content(&gw, &user, &done["output_file_id"]).await;
    assert_eq!(output.len(), lines, "one output line per completed line");
    assert_eq!(by_custom_id(&output).len(), lines, "each custom_id once");
}

#[tokio::test]
async fn a_gateway_killed_during_validation_resumes_and_queues_each_line_once() {
    survives_a_kill(10_000, true).await;
}

#[tokio::test]
async fn a_gateway_killed_during_the_run_resumes_and_keeps_one_result_per_line() {
    survives_a_kill(30, false).await;
}

/// The batch's status as its row holds it, read from the database file while the gateway
/// is down.
fn stored_status(gw: &Gateway, id: &str) -> String {
    let rows = gw.query(&format!("SELECT status FROM batches WHERE id = '{id}'"));
    rows.first()
        .and_then(|row| row[0].clone())
        .expect("the batch's row")
}

/// The names in the data directory's `files/`, sorted.
fn stored_files(gw: &Gateway) -> Vec<String> {
    let dir = gw.files_dir();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("files/")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_gateway_killed_while_finalizing_resumes_and_writes_each_line_once() {
    // Results big enough (10 MB in all) that writing the output file takes a while (about a
    // second in a debug build): the kill lands in it.
    const LINES: usize = 1_200;
    let padding = "x".repeat(8 * 1024);
    let Created {
        mut gw,
        user,
        node,
        file,
        id,
    } = created_batch(LINES).await;
    batch_until(&gw, &user, &id, "in_progress").await;
    assert_eq!(stored_files(&gw), std::slice::from_ref(&file));
    run_lines(&gw, &node, LINES, |job| {
        let text = job["request_payload"]["messages"][0]["content"]
            .as_str()
            .unwrap_or("");
        json!({"id": job["id"], "lease_id": job["lease_id"], "status": "COMPLETED",
            "result": testkit::completion(&format!("{text} {padding}"))})
    })
    .await;
    // The output file being written is a part beside the input file.
    let part = eventually(
        Duration::from_secs(30),
        "the output's part file",
        || async {
            stored_files(&gw)
                .into_iter()
                .find(|name| name.ends_with(".part"))
        },
    )
    .await;
    gw.stop_with("-KILL");
    let status = stored_status(&gw, &id);
    assert!(
        stored_files(&gw).contains(&part),
        "killed before {part} was complete"
    );
    assert_eq!(
        status, "finalizing",
        "killed while {part} was written, before the batch completed"
    );

    gw.spawn().await;
    let done = batch_until(&gw, &user, &id, "completed").await;
    assert_eq!(
        done["request_counts"],
        json!({"total": LINES, "completed": LINES, "failed": 0})
    );
    assert!(done["error_file_id"].is_null(), "{done}");
    let output_id = done["output_file_id"].as_str().unwrap().to_owned();
    let output = content(&gw, &user, &done["output_file_id"]).await;
    assert_eq!(output.len(), LINES, "one output line per completed line");
    let by_id = by_custom_id(&output);
    assert_eq!(by_id.len(), LINES, "each custom_id once");
    assert!(
        by_id["line-7"]["response"]["body"]["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|c| c.starts_with("line-7 ")),
        "each line keeps its own result"
    );
    // Nothing of the interrupted write is left: no part, no file without its batch.
    let mut kept = vec![file, output_id];
    kept.sort();
    let mut stored = stored_files(&gw);
    if gw.on_postgres() {
        // A files directory shared by the gateways of one PostgreSQL database keeps a part
        // until it is a day old (another gateway may be writing it); `files` tests that.
        stored.retain(|name| !name.ends_with(".part"));
    }
    assert_eq!(stored, kept);
    let (_, listed) = gw.get_json(&gw.admin, "/v1/files?order=asc").await;
    let rows: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["id"].as_str())
        .collect();
    assert_eq!(rows.len(), 2, "{listed}");
    assert!(rows.iter().all(|r| kept.iter().any(|k| k == r)), "{listed}");
}

#[tokio::test]
async fn the_official_python_sdk_runs_a_batch() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let python = testkit::installed::sdk_python();
    let path = gw.dir.path().join("requests.jsonl");
    std::fs::write(&path, jsonl(&["x", "y"])).unwrap();
    let script = r#"
import os, sys, time, openai
client = openai.OpenAI(base_url=os.environ["BASE"] + "/v1", api_key=os.environ["KEY"])
upload = client.files.create(file=open(os.environ["UPLOAD"], "rb"), purpose="batch")
batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
    completion_window="24h", metadata={"from": "sdk"})
assert batch.status == "validating" and batch.object == "batch", batch
assert client.batches.retrieve(batch.id).id == batch.id
assert [b.id for b in client.batches.list(limit=5).data] == [batch.id]
print("created", batch.id, flush=True)
deadline = time.time() + 30
while time.time() < deadline:
    batch = client.batches.retrieve(batch.id)
    if batch.status == "completed":
        break
    time.sleep(0.2)
assert batch.status == "completed", batch
assert batch.request_counts.completed == 2 and batch.usage is not None, batch
lines = client.files.content(batch.output_file_id).text.splitlines()
assert len(lines) == 2, lines
other = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
    completion_window="24h")
assert client.batches.cancel(other.id).status in ("cancelling", "cancelled")
print("python batches passed with openai", openai.__version__)
"#;
    let child = tokio::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .env("BASE", &gw.base)
        .env("KEY", &user)
        .env("UPLOAD", &path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    run_lines(&gw, &node, 2, completed).await;
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("python ends")
        .expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("python batches passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn an_expired_batch_keeps_its_finished_lines_and_ends_the_others_as_batch_expired() {
    let gw = Gateway::start(&[("OBB_BATCH_COMPLETION_WINDOWS", "24h,1m")]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let file = upload(&gw, &user, jsonl(&["a", "b", "c"]), "batch").await;
    let (status, created) = gw
        .post_json(
            &user,
            "/v1/batches",
            &json!({"input_file_id": file, "endpoint": CHAT, "completion_window": "1m"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    batch_until(&gw, &user, &id, "in_progress").await;
    let jobs = gw.fetch(&node, "n1", &["echo"], 2, 5.0).await;
    assert_eq!(
        gw.report(&node, &json!([completed(&jobs[0])])).await,
        "accepted"
    );
    let done = eventually(Duration::from_secs(90), "the batch expired", || async {
        let (_, batch) = gw.get_json(&user, &format!("/v1/batches/{id}")).await;
        (batch["status"] == "expired").then_some(batch)
    })
    .await;
    assert!(done["expired_at"].is_i64(), "{done}");
    assert_eq!(
        done["request_counts"],
        json!({"total": 3, "completed": 1, "failed": 2})
    );
    let output = content(&gw, &user, &done["output_file_id"]).await;
    assert_eq!(output.len(), 1, "the finished line stays");
    let errors = content(&gw, &user, &done["error_file_id"]).await;
    assert_eq!(errors.len(), 2);
    assert!(
        errors
            .iter()
            .all(|e| e["error"]["code"] == "batch_expired" && e["response"].is_null()),
        "{errors:?}"
    );
}
