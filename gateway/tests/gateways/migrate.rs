//! `obb-gateway migrate`: a SQLite queue with jobs in every state, a file and a finished
//! batch, moved into PostgreSQL and served from there.

use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use testkit::{Gateway, chat, eventually, gateway_bin, postgres};

fn migrate(from: &std::path::Path, to: &str, files: &std::path::Path) -> std::process::Output {
    Command::new(gateway_bin())
        .args(["migrate", "--from"])
        .arg(from)
        .args(["--to", to, "--files-dir"])
        .arg(files)
        .env("OBB_LOG", "warn")
        .output()
        .expect("obb-gateway runs")
}

async fn get(gw: &Gateway, key: &str, path: &str) -> Value {
    let (status, body) = gw.get_json(key, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

async fn file_text(gw: &Gateway, key: &str, id: &str) -> String {
    let response = gw
        .http
        .get(gw.url(&format!("/v1/files/{id}/content")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[tokio::test]
async fn a_sqlite_queue_moves_to_postgresql_with_its_states_files_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let db: PathBuf = dir.path().join("queue.db");
    let mut old = Gateway::start_at(Some(db.clone()), &[]).await;
    let user = old.key("user").await;
    let node = old.key("node").await;

    // Jobs in four states: completed, failed, cancelled and still queued.
    let done = old.submit_id(&user, "m").await;
    let failed = old.submit_id(&user, "m").await;
    let leased = old.fetch(&node, "n1", &["m"], 2, 1.0).await;
    assert_eq!(leased.len(), 2);
    old.complete(&node, &leased[0], "kept across the move")
        .await;
    let outcome = old
        .report(
            &node,
            &json!([{"id": leased[1]["id"], "lease_id": leased[1]["lease_id"],
                     "status": "FAILED", "retryable": false,
                     "error": {"message": "the upstream refused", "type": "invalid_request_error"}}]),
        )
        .await;
    assert_eq!(outcome, "accepted");
    let cancelled = old.submit_id(&user, "m").await;
    let (status, _) = old
        .post_json(&user, &format!("/v1/jobs/{cancelled}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let queued = old.submit_id(&user, "m").await;

    // A batch of two lines, run to the end, with its input and output files.
    let input = (1..=2)
        .map(|i| {
            json!({"custom_id": format!("r{i}"), "method": "POST", "url": "/v1/chat/completions",
                   "body": chat("b", &format!("line {i}"))})
            .to_string()
                + "\n"
        })
        .collect::<String>();
    let form = Form::new().text("purpose", "batch").part(
        "file",
        Part::bytes(input.clone().into_bytes()).file_name("in.jsonl"),
    );
    let file: Value = old
        .http
        .post(old.url("/v1/files"))
        .bearer_auth(&user)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let file_id = file["id"].as_str().unwrap().to_owned();
    let (status, batch) = old
        .post_json(
            &user,
            "/v1/batches",
            &json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                    "completion_window": "24h"}),
        )
        .await;
    assert_eq!(status, 200, "{batch}");
    let batch_id = batch["id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let jobs = old.fetch(&node, "n1", &["b"], 1, 10.0).await;
        old.complete(&node, &jobs[0], "a batch line").await;
    }
    let finished = eventually(Duration::from_secs(20), "the batch to complete", || async {
        let batch = get(&old, &user, &format!("/v1/batches/{batch_id}")).await;
        (batch["status"] == "completed").then_some(batch)
    })
    .await;
    let output_id = finished["output_file_id"].as_str().unwrap().to_owned();
    let output = file_text(&old, &user, &output_id).await;
    let before: Vec<Value> = {
        let mut jobs = Vec::new();
        for id in [&done, &failed, &cancelled, &queued] {
            jobs.push(old.job(&user, id).await);
        }
        jobs
    };
    old.stop_with("-TERM");

    let server = postgres::shared();
    let url = server.fresh_database();
    let files = dir.path().join("shared-files");
    let moved = migrate(&db, &url, &files);
    assert!(moved.status.success(), "migrate: {moved:?}");
    let printed = String::from_utf8_lossy(&moved.stdout);
    for row in [
        "jobs\t6",
        "api_keys\t3",
        "batches\t1",
        "files\t2",
        "nodes\t1",
    ] {
        assert!(printed.contains(row), "`{row}` in {printed}");
    }

    let files_setting = files.display().to_string();
    let mut new = Gateway::start_at(
        Some(PathBuf::from(&url)),
        &[("OBB_FILES_DIR", files_setting.as_str())],
    )
    .await;
    new.admin.clone_from(&old.admin);
    // The same keys, the same jobs in the same states, the same files and batch.
    for (was, id) in before.iter().zip([&done, &failed, &cancelled, &queued]) {
        let now = new.job(&user, id).await;
        for field in ["status", "result", "error", "created_at", "model"] {
            assert_eq!(now[field], was[field], "{id}'s {field}");
        }
    }
    assert_eq!(file_text(&new, &user, &file_id).await, input);
    assert_eq!(file_text(&new, &user, &output_id).await, output);
    let batch = get(&new, &user, &format!("/v1/batches/{batch_id}")).await;
    assert_eq!(batch["status"], "completed");
    assert_eq!(batch["request_counts"], finished["request_counts"]);
    // The queued job still runs, and new jobs come after the old ones.
    let jobs = new.fetch(&node, "n2", &["m"], 5, 5.0).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["id"], queued.as_str());
    let newest = new.submit_id(&user, "m").await;
    let listed = get(&new, &user, "/v1/jobs?limit=1").await;
    assert_eq!(listed["data"][0]["id"], newest.as_str(), "{listed}");

    // A second copy into a database that holds a queue is refused, and changes nothing.
    let again = migrate(&db, &url, &files);
    assert!(!again.status.success());
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(
        said.contains("migrate only into an empty database"),
        "{said}"
    );
    assert_eq!(
        new.query("SELECT COUNT(*) FROM jobs"),
        [[Some("7".to_owned())]]
    );
    new.stop_with("-TERM");
}

#[test]
fn start_refuses_a_database_without_the_schema_or_with_a_newer_one() {
    let server = postgres::shared();
    let url = server.fresh_database();
    let check = || {
        Command::new(gateway_bin())
            .args(["start", "--check-config", "--db", &url])
            .env("OBB_LOG", "warn")
            .env("OBB_FILES_DIR", std::env::temp_dir())
            .output()
            .expect("obb-gateway runs")
    };
    let empty = check();
    assert!(!empty.status.success());
    let said = String::from_utf8_lossy(&empty.stderr);
    assert!(said.contains("run `obb-gateway setup` first"), "{said}");
    assert!(
        testkit::cli(std::path::Path::new(&url), &["setup", "--yes"])
            .status
            .success()
    );
    assert!(check().status.success(), "a set-up database is valid");
    server.query(&url, "UPDATE obb_schema SET version = 99");
    let newer = check();
    assert!(!newer.status.success());
    let said = String::from_utf8_lossy(&newer.stderr);
    assert!(
        said.contains("schema version 99") && said.contains("upgrade obb-gateway"),
        "{said}"
    );
}
