//! The Files API against the real gateway: uploads streamed to disk, pages, content
//! streamed back, ownership, idempotency, a kill in the middle of an upload, bad input,
//! and the official Python SDK.

use crate::harness::{Gateway, eventually};
use bytes::Bytes;
use insta::assert_json_snapshot;
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

const LINES: &str = "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{}}\n\
{\"custom_id\":\"b\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{}}\n";

pub(crate) fn form(content: impl Into<Vec<u8>>, filename: &str, purpose: &str) -> Form {
    Form::new().text("purpose", purpose.to_owned()).part(
        "file",
        Part::bytes(content.into()).file_name(filename.to_owned()),
    )
}

pub(crate) async fn upload(gw: &Gateway, key: &str, form: Form) -> (StatusCode, Value) {
    let response = gw
        .http
        .post(gw.url("/v1/files"))
        .bearer_auth(key)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn upload_id(gw: &Gateway, key: &str, content: &str) -> String {
    let (status, file) = upload(gw, key, form(content, "in.jsonl", "batch")).await;
    assert_eq!(status, 200, "{file}");
    file["id"].as_str().expect("id").to_owned()
}

async fn send(gw: &Gateway, key: &str, method: reqwest::Method, path: &str) -> reqwest::Response {
    gw.http
        .request(method, gw.url(path))
        .bearer_auth(key)
        .send()
        .await
        .expect("request")
}

/// What the files directory holds, sorted.
fn stored(gw: &Gateway) -> Vec<String> {
    let dir = gw.dir.path().join("files");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|f| f["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn a_file_is_uploaded_listed_retrieved_read_back_and_deleted() {
    let gw = Gateway::start(&[]).await;
    let user = gw.key("user").await;
    let with_expiry = form(LINES, "requests.jsonl", "batch")
        .text("expires_after[anchor]", "created_at")
        .text("expires_after[seconds]", "3600");
    let (status, file) = upload(&gw, &user, with_expiry).await;
    assert_eq!(status, 200, "{file}");
    assert_eq!(
        file["expires_at"].as_i64().unwrap() - file["created_at"].as_i64().unwrap(),
        3600
    );
    assert_json_snapshot!(file, {".id" => "[id]", ".created_at" => "[time]", ".expires_at" => "[time]"});
    let first = file["id"].as_str().unwrap().to_owned();
    let second = upload_id(&gw, &user, "{}\n").await;
    let third = upload_id(&gw, &user, "{}\n{}\n").await;

    let (_, page) = gw.get_json(&user, "/v1/files").await;
    assert_eq!(
        ids(&page),
        [third.clone(), second.clone(), first.clone()],
        "newest first"
    );
    assert_json_snapshot!(page, {
        ".data[].id" => "[id]", ".data[].created_at" => "[time]",
        ".data[].expires_at" => "[time]", ".first_id" => "[id]", ".last_id" => "[id]",
    });
    let (_, asc) = gw.get_json(&user, "/v1/files?order=asc&limit=2").await;
    assert_eq!(
        (ids(&asc), asc["has_more"].as_bool()),
        (vec![first.clone(), second.clone()], Some(true))
    );
    let (_, rest) = gw
        .get_json(
            &user,
            &format!("/v1/files?order=asc&limit=2&after={second}"),
        )
        .await;
    assert_eq!(
        (ids(&rest), rest["has_more"].as_bool()),
        (vec![third.clone()], Some(false))
    );
    let (_, batch) = gw.get_json(&user, "/v1/files?purpose=batch&limit=1").await;
    assert_eq!(
        (ids(&batch), batch["last_id"].as_str()),
        (vec![third.clone()], Some(third.as_str()))
    );
    let (_, outputs) = gw.get_json(&user, "/v1/files?purpose=batch_output").await;
    assert_eq!(outputs["data"], json!([]));

    let (status, retrieved) = gw.get_json(&user, &format!("/v1/files/{first}")).await;
    assert_eq!((status.as_u16(), &retrieved), (200, &file));
    let content = send(
        &gw,
        &user,
        reqwest::Method::GET,
        &format!("/v1/files/{first}/content"),
    )
    .await;
    assert_eq!(content.status(), 200);
    assert_eq!(
        content.headers()["content-type"],
        "application/octet-stream"
    );
    assert_eq!(content.headers()["content-length"], LINES.len().to_string());
    assert_eq!(content.text().await.unwrap(), LINES, "byte for byte");
    let head = send(
        &gw,
        &user,
        reqwest::Method::HEAD,
        &format!("/v1/files/{first}/content"),
    )
    .await;
    assert_eq!(head.headers()["content-length"], LINES.len().to_string());

    let deleted = send(
        &gw,
        &user,
        reqwest::Method::DELETE,
        &format!("/v1/files/{first}"),
    )
    .await;
    assert_eq!(deleted.status(), 200);
    assert_eq!(
        deleted.json::<Value>().await.unwrap(),
        json!({"id": first, "object": "file", "deleted": true})
    );
    for path in [
        format!("/v1/files/{first}"),
        format!("/v1/files/{first}/content"),
    ] {
        let (status, body) = gw.get_json(&user, &path).await;
        assert_eq!(
            (status.as_u16(), body["error"]["code"].as_str()),
            (404, Some("not_found"))
        );
    }
    let mut left = vec![second, third];
    left.sort();
    assert_eq!(stored(&gw), left, "the bytes went with the row");
}

#[tokio::test]
async fn another_users_file_is_not_found_and_an_admin_sees_it() {
    let gw = Gateway::start(&[]).await;
    let (alice, bob) = (gw.key("user").await, gw.key("user").await);
    let id = upload_id(&gw, &alice, LINES).await;
    for (method, path) in [
        (reqwest::Method::GET, format!("/v1/files/{id}")),
        (reqwest::Method::GET, format!("/v1/files/{id}/content")),
        (reqwest::Method::DELETE, format!("/v1/files/{id}")),
    ] {
        let response = send(&gw, &bob, method.clone(), &path).await;
        assert_eq!(response.status(), 404, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }
    let (_, page) = gw.get_json(&bob, "/v1/files").await;
    assert_eq!(page["data"], json!([]), "bob lists nothing of alice's");
    let (_, all) = gw.get_json(&gw.admin, "/v1/files").await;
    assert_eq!(ids(&all), [id.as_str()]);
    let content = send(
        &gw,
        &gw.admin,
        reqwest::Method::GET,
        &format!("/v1/files/{id}/content"),
    )
    .await;
    assert_eq!(content.text().await.unwrap(), LINES);
    let node = gw.key("node").await;
    let (status, _) = gw.get_json(&node, "/v1/files").await;
    assert_eq!(status, 403, "nodes have no files");
    let response = send(
        &gw,
        &gw.admin,
        reqwest::Method::DELETE,
        &format!("/v1/files/{id}"),
    )
    .await;
    assert_eq!(response.status(), 200, "an admin may delete it");
}

#[tokio::test]
async fn a_retried_upload_with_its_idempotency_key_returns_the_same_file() {
    let gw = Gateway::start(&[]).await;
    let user = gw.key("user").await;
    let attempt = |content: &'static str| {
        gw.http
            .post(gw.url("/v1/files"))
            .bearer_auth(&user)
            .header("idempotency-key", "upload-1")
            .multipart(form(content, "in.jsonl", "batch"))
            .send()
    };
    let first: Value = attempt(LINES).await.unwrap().json().await.unwrap();
    let again: Value = attempt(LINES).await.unwrap().json().await.unwrap();
    assert_eq!(first, again);
    let other = attempt("{}\n").await.unwrap();
    assert_eq!(other.status(), 422, "the same key with other content");
    assert_eq!(
        stored(&gw),
        [first["id"].as_str().unwrap()],
        "no second copy"
    );
}

/// The gateway's peak resident memory (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb * 1024
}

/// `n` JSONL lines of about 100 bytes, made as they are sent.
fn big_body(n: usize) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::iter((0..n).step_by(1000).map(move |start| {
        let mut chunk = String::new();
        for i in start..(start + 1000).min(n) {
            chunk.push_str(&format!(
                "{{\"custom_id\":\"{i:08}\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{{}}}}\n"
            ));
        }
        Ok(Bytes::from(chunk))
    }))
}

#[tokio::test]
async fn a_50_mb_upload_streams_to_disk_and_back_without_growing_the_gateway() {
    use futures_util::StreamExt;
    let gw = Gateway::start(&[]).await;
    let user = gw.key("user").await;
    let pid = gw.pid().expect("running");
    upload_id(&gw, &user, LINES).await;
    let lines = 700_000;
    let (mut sent, mut hasher) = (0usize, Sha256::new());
    let mut local = big_body(lines);
    while let Some(chunk) = local.next().await {
        let chunk = chunk.unwrap();
        sent += chunk.len();
        hasher.update(&chunk);
    }
    assert!(sent > 50_000_000, "{sent}");
    let expected = format!("{:x}", hasher.finalize());
    let before = peak_rss(pid);

    let part = Part::stream_with_length(reqwest::Body::wrap_stream(big_body(lines)), sent as u64)
        .file_name("big.jsonl");
    let (status, file) = upload(
        &gw,
        &user,
        Form::new().text("purpose", "batch").part("file", part),
    )
    .await;
    assert_eq!(status, 200, "{file}");
    assert_eq!(file["bytes"].as_u64(), Some(sent as u64));
    let id = file["id"].as_str().unwrap();
    let response = send(
        &gw,
        &user,
        reqwest::Method::GET,
        &format!("/v1/files/{id}/content"),
    )
    .await;
    assert_eq!(response.headers()["content-length"], sent.to_string());
    let (mut got, mut hasher) = (0usize, Sha256::new());
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        got += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!((got, format!("{:x}", hasher.finalize())), (sent, expected));
    let grown = peak_rss(pid).saturating_sub(before);
    eprintln!("the peak RSS grew by {grown} bytes");
    assert!(
        grown < 10 * 1024 * 1024,
        "the peak RSS grew by {grown} bytes"
    );
}

#[tokio::test]
async fn a_gateway_killed_mid_upload_keeps_no_row_and_no_part_and_the_next_upload_works() {
    let mut gw = Gateway::start(&[]).await;
    let user = gw.key("user").await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let slow =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let part = Part::stream(reqwest::Body::wrap_stream(slow)).file_name("slow.jsonl");
    let request = gw
        .http
        .post(gw.url("/v1/files"))
        .bearer_auth(&user)
        .multipart(Form::new().text("purpose", "batch").part("file", part))
        .send();
    // The upload is never finished: its sender is held open until the gateway dies.
    let pending = tokio::spawn(request);
    tx.send(Ok(Bytes::from("{}\n".repeat(100_000))))
        .await
        .unwrap();
    let dir = gw.dir.path().join("files");
    eventually(
        Duration::from_secs(10),
        "the upload's part on disk",
        || async {
            let names = stored(&gw);
            (names.len() == 1 && names[0].ends_with(".part") && part_len(&dir.join(&names[0])) > 0)
                .then_some(())
        },
    )
    .await;
    gw.stop_with("-KILL");
    assert_eq!(stored(&gw).len(), 1, "the kill left the part behind");
    drop(tx);
    let _ = pending.await;

    if gw.on_postgres() {
        // Gateways that share a PostgreSQL database share the files directory: a restart
        // leaves a young part alone (another gateway may be writing it), and sweeps it once
        // it is a day old.
        gw.spawn().await;
        let left = stored(&gw);
        assert_eq!(left.len(), 1, "a young part stays: {left:?}");
        gw.stop_with("-KILL");
        std::fs::File::options()
            .write(true)
            .open(dir.join(&left[0]))
            .and_then(|file| {
                file.set_modified(std::time::SystemTime::now() - Duration::from_secs(2 * 86_400))
            })
            .expect("the part's time moves back");
    }
    gw.spawn().await;
    assert!(
        stored(&gw).is_empty(),
        "the restart swept it: {:?}",
        stored(&gw)
    );
    let (_, page) = gw.get_json(&user, "/v1/files").await;
    assert_eq!(page["data"], json!([]), "no row");
    let id = upload_id(&gw, &user, LINES).await;
    assert_eq!(stored(&gw), [id]);
}

fn part_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test]
async fn bad_uploads_get_openai_errors_and_store_nothing() {
    let gw = Gateway::start(&[]).await;
    let user = gw.key("user").await;
    let seconds = |value: &str| {
        form(LINES, "in.jsonl", "batch")
            .text("expires_after[anchor]", "created_at")
            .text("expires_after[seconds]", value.to_owned())
    };
    let cases: Vec<(&str, Form, u16, Option<&str>)> = vec![
        (
            "missing file",
            Form::new().text("purpose", "batch"),
            400,
            Some("file"),
        ),
        (
            "missing purpose",
            Form::new().part("file", Part::bytes(LINES.as_bytes()).file_name("in.jsonl")),
            400,
            Some("purpose"),
        ),
        (
            "wrong purpose",
            form(LINES, "in.jsonl", "fine-tune"),
            400,
            Some("purpose"),
        ),
        (
            "output purpose",
            form(LINES, "in.jsonl", "batch_output"),
            400,
            Some("purpose"),
        ),
        (
            "not jsonl",
            form(LINES, "in.csv", "batch"),
            400,
            Some("file"),
        ),
        (
            "file without a filename",
            Form::new().text("purpose", "batch").text("file", LINES),
            400,
            Some("file"),
        ),
        (
            "unknown field",
            form(LINES, "in.jsonl", "batch").text("model", "m"),
            400,
            Some("model"),
        ),
        (
            "expiry too short",
            seconds("60"),
            400,
            Some("expires_after[seconds]"),
        ),
        (
            "expiry too long",
            seconds("2592001"),
            400,
            Some("expires_after[seconds]"),
        ),
        (
            "expiry text",
            seconds("soon"),
            400,
            Some("expires_after[seconds]"),
        ),
        (
            "expiry without seconds",
            form(LINES, "in.jsonl", "batch").text("expires_after[anchor]", "created_at"),
            400,
            Some("expires_after"),
        ),
        (
            "expiry wrong anchor",
            form(LINES, "in.jsonl", "batch")
                .text("expires_after[anchor]", "now")
                .text("expires_after[seconds]", "3600"),
            400,
            Some("expires_after[anchor]"),
        ),
    ];
    let mut seen = serde_json::Map::new();
    for (name, form, expected, param) in cases {
        let (status, body) = upload(&gw, &user, form).await;
        assert_eq!(status.as_u16(), expected, "{name}: {body}");
        assert_eq!(body["error"]["param"].as_str(), param, "{name}: {body}");
        seen.insert(name.to_owned(), body["error"]["message"].clone());
    }
    assert_json_snapshot!(seen);
    let not_multipart = gw
        .http
        .post(gw.url("/v1/files"))
        .bearer_auth(&user)
        .json(&json!({"purpose": "batch"}))
        .send()
        .await
        .unwrap();
    assert_eq!(not_multipart.status(), 400);
    let stranger = gw
        .http
        .post(gw.url("/v1/files"))
        .multipart(form(LINES, "in.jsonl", "batch"))
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 401, "a stranger cannot upload");
    let (_, page) = gw.get_json(&gw.admin, "/v1/files").await;
    assert_eq!(page["data"], json!([]), "nothing stored");
    assert!(
        stored(&gw).is_empty(),
        "nothing left on disk: {:?}",
        stored(&gw)
    );
    assert_eq!(
        upload(&gw, &user, form(LINES, "in.jsonl", "batch")).await.0,
        200
    );
}

#[tokio::test]
async fn an_upload_over_max_batch_file_bytes_gets_413_naming_it_and_leaves_nothing() {
    let gw = Gateway::start(&[("OBB_MAX_BATCH_FILE_BYTES", "1000")]).await;
    let user = gw.key("user").await;
    let (status, body) = upload(&gw, &user, form("{}\n".repeat(400), "in.jsonl", "batch")).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(
        body["error"]["message"],
        "the file is larger than the 1000 bytes allowed (`max_batch_file_bytes`)"
    );
    let (status, _) = upload(&gw, &user, form("{}\n".repeat(300), "in.jsonl", "batch")).await;
    assert_eq!(status, 200, "a file within the limit is taken");
    let (_, page) = gw.get_json(&user, "/v1/files").await;
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(stored(&gw).len(), 1, "the refused upload left nothing");
}

#[tokio::test]
async fn an_upload_declared_over_the_limit_gets_413_before_its_body_is_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gateway::start(&[]).await;
    let user = gw.key("user").await;
    let mut socket = tokio::net::TcpStream::connect(gw.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {user}\r\n\
         Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 300000000\r\n\
         Expect: 100-continue\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("209715200 bytes"),
        "the limit is named: {answer}"
    );
    assert!(stored(&gw).is_empty());
}

/// Reads from `socket` until `until` appears in what came, or 10 s pass.
async fn read_until(socket: &mut tokio::net::TcpStream, until: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&seen).contains(until) {
        let mut buf = [0; 4096];
        match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn expect_100_continue_is_answered_only_when_the_head_passes_and_chunked_uploads_work() {
    use tokio::io::AsyncWriteExt;
    let gw = Gateway::start(&[]).await;
    let user = gw.key("user").await;
    let address = gw.base.trim_start_matches("http://").to_owned();
    let head = |auth: &str| {
        format!(
            "POST /v1/files HTTP/1.1\r\nHost: x\r\n{auth}\
             Content-Type: multipart/form-data; boundary=b\r\n\
             Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
        )
    };
    let mut stranger = tokio::net::TcpStream::connect(&address).await.unwrap();
    stranger.write_all(head("").as_bytes()).await.unwrap();
    let answer = read_until(&mut stranger, "}}").await;
    assert!(
        answer.starts_with("HTTP/1.1 401"),
        "no 100 for a stranger: {answer}"
    );

    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    let auth = format!("Authorization: Bearer {user}\r\n");
    socket.write_all(head(&auth).as_bytes()).await.unwrap();
    let go_on = read_until(&mut socket, "\r\n\r\n").await;
    assert!(go_on.starts_with("HTTP/1.1 100"), "{go_on}");
    let form = "--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
        --b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"raw.jsonl\"\r\n\
        Content-Type: application/jsonl\r\n\r\n{}\n{}\n\r\n--b--\r\n";
    let (first, second) = form.split_at(60);
    for piece in [first, second] {
        let chunk = format!("{:x}\r\n{piece}\r\n", piece.len());
        socket.write_all(chunk.as_bytes()).await.unwrap();
    }
    socket.write_all(b"0\r\n\r\n").await.unwrap();
    let answer = read_until(&mut socket, "status_details").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"filename\":\"raw.jsonl\""), "{answer}");
    assert!(answer.contains("\"bytes\":6"), "{answer}");
}

#[tokio::test]
async fn the_official_python_sdk_uploads_lists_reads_and_deletes_a_file() {
    let gw = Gateway::start(&[]).await;
    let user = gw.key("user").await;
    let python = testkit::installed::sdk_python();
    let path = gw.dir.path().join("requests.jsonl");
    std::fs::write(&path, LINES).unwrap();
    let script = r#"
import os, sys, openai
client = openai.OpenAI(base_url=os.environ["BASE"] + "/v1", api_key=os.environ["KEY"])
path = os.environ["UPLOAD"]
created = client.files.create(file=open(path, "rb"), purpose="batch")
assert created.id.startswith("file-") and created.object == "file", created
assert created.purpose == "batch" and created.status == "processed", created
assert created.bytes == os.path.getsize(path) and created.filename == "requests.jsonl", created
assert created.expires_at is not None and created.expires_at > created.created_at, created
listed = client.files.list(purpose="batch")
assert [f.id for f in listed.data] == [created.id], listed
assert client.files.retrieve(created.id) == created
assert client.files.content(created.id).text == open(path).read()
deleted = client.files.delete(created.id)
assert deleted.deleted and deleted.id == created.id, deleted
try:
    client.files.retrieve(created.id)
    sys.exit("a deleted file was found")
except openai.NotFoundError:
    pass
print("python files passed with openai", openai.__version__)
"#;
    let output = tokio::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .env("BASE", &gw.base)
        .env("KEY", &user)
        .env("UPLOAD", &path)
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("python files passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
