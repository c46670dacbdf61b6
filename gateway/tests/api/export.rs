//! The export's memory (issue 21): 100,000 stored jobs stream out as NDJSON while the
//! gateway's resident memory stays flat, since it reads and writes a page at a time.

use crate::harness::Gateway;
use std::time::Duration;

const JOBS: usize = 100_000;

/// The gateway's resident set, in KiB, from `/proc`.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("the gateway's VmRSS in /proc")
}

/// The request every stored job was submitted with.
const REQUEST: &str = r#"{"model":"m","messages":[{"role":"user","content":"a stored request of a few hundred bytes, as a data lake would load it"}]}"#;

/// Writes `JOBS` completed jobs straight into the database, in one transaction: the
/// export reads what is stored, however it got there.
fn store_jobs(gw: &Gateway) {
    if gw.on_postgres() {
        // The same rows, made by the server in one statement (psql has no parameters).
        gw.query(&format!(
            "INSERT INTO jobs (id, owner_key_id, model, status, priority, request_payload,
                 request_hash, max_attempts, created_at, updated_at, expires_at, attempts,
                 locked_at, finished_at, result_payload)
             SELECT 'job-seeded-' || lpad(i::text, 6, '0'), 'key_seeded', 'm', 'completed', 3,
                 '{REQUEST}', '', 3, 1764000000000 + i, 1764000000000 + i,
                 1764000000000 + i, 1, 1764000000000 + i, 1764000000000 + i,
                 '{{\"id\": \"c' || i || '\", \"object\": \"chat.completion\", \"created\": 1,
                 \"model\": \"m\", \"choices\": [{{\"index\": 0, \"finish_reason\": \"stop\",
                 \"message\": {{\"role\": \"assistant\", \"content\": \"answer ' || i || '\"}}}}]}}'
             FROM generate_series(0, {}) AS i",
            JOBS - 1
        ));
        return;
    }
    let mut conn = rusqlite::Connection::open(gw.db()).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO jobs (id, owner_key_id, model, status, priority, request_payload,
                     request_hash, max_attempts, created_at, updated_at, expires_at, attempts,
                     locked_at, finished_at, result_payload)
                 VALUES (?1, 'key_seeded', 'm', 'completed', 3, ?2, '', 3, ?3, ?3, ?3, 1, ?3,
                     ?3, ?4)",
            )
            .unwrap();
        let request = REQUEST;
        for i in 0..JOBS {
            let result = serde_json::json!({"id": format!("c{i}"), "object": "chat.completion",
                "created": 1, "model": "m", "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": format!("answer {i}")}}]})
            .to_string();
            insert
                .execute(rusqlite::params![
                    format!("job-seeded-{i:06}"),
                    request,
                    1_764_000_000_000i64 + i as i64,
                    result
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

#[tokio::test]
async fn exporting_100_000_jobs_streams_them_all_in_order_with_flat_memory() {
    let gw = Gateway::start(&[]).await;
    store_jobs(&gw);
    let pid = gw.pid().unwrap();
    let before = rss_kib(pid);
    let mut response = gw
        .http
        .get(gw.url("/v1/jobs/export?status=completed"))
        .bearer_auth(&gw.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (mut lines, mut bytes, mut peak) = (0usize, 0usize, before);
    let mut last = String::new();
    let mut pending = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        bytes += chunk.len();
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let job: serde_json::Value = serde_json::from_slice(&line).unwrap();
            let id = job["id"].as_str().unwrap().to_owned();
            assert!(id > last, "oldest first: {id} after {last}");
            last = id;
            lines += 1;
            if lines % 5_000 == 0 {
                peak = peak.max(rss_kib(pid));
            }
        }
    }
    assert_eq!(lines, JOBS);
    assert!(pending.is_empty(), "the last line ends with a newline");
    // About 60 MB went out; holding it would take far more than the bound.
    assert!(bytes > 50_000_000, "{bytes} bytes");
    let grew = peak.saturating_sub(before);
    assert!(
        grew < 32 * 1024,
        "RSS grew {grew} KiB during the export (from {before} KiB)"
    );
}
