//! The `dashboard` suite: with 1,000,000 jobs stored (`--scale-jobs`), how long the calls
//! behind each dashboard view's first paint take: the overview, the job table unfiltered and
//! by status, model and key, a job's detail, batches, nodes and keys. The page paints a view
//! when its calls have answered, so these times bound its first paint from the server's
//! side (issue 21: ≤ 1 s). Jobs are written straight into the database, a month of them:
//! 90 % completed, 5 % failed, 2 % cancelled, 3 % queued, over 8 models and 4 keys.

use crate::Args;
use crate::stats::{Latencies, row};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use testkit::Gateway;

const DAY_MS: i64 = 86_400_000;

fn status_of(i: u64) -> &'static str {
    match i % 100 {
        0..=89 => "completed",
        90..=94 => "failed",
        95..=96 => "cancelled",
        _ => "queued",
    }
}

/// Writes `count` jobs of `owners` into the stopped gateway's database.
fn fill(db: &std::path::Path, count: u64, owners: &[String]) -> anyhow::Result<()> {
    let mut conn = rusqlite::Connection::open(db)?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let start = now - 30 * DAY_MS;
    let step = (30 * DAY_MS) / count.max(1) as i64;
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO jobs (id, owner_key_id, model, status, priority, request_payload,
                 request_hash, max_attempts, created_at, updated_at, expires_at, attempts,
                 locked_at, finished_at, result_payload)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, '', 3, ?7, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for i in 0..count {
            let status = status_of(i);
            let created = start + i as i64 * step;
            let model = format!("m{}", i % 8);
            let ended = status != "queued";
            let result = (status == "completed").then(|| {
                format!(
                    r#"{{"id":"c{i}","object":"chat.completion","created":1,"model":"{model}","choices":[{{"index":0,"finish_reason":"stop","message":{{"role":"assistant","content":"answer {i}"}}}}]}}"#
                )
            });
            insert.execute(rusqlite::params![
                format!("job-{i:032x}"),
                owners[(i % owners.len() as u64) as usize],
                model,
                status,
                (i % 5 + 1) as i64,
                format!(
                    r#"{{"model":"{model}","messages":[{{"role":"user","content":"dashboard {i}"}}]}}"#
                ),
                created,
                if ended { created + DAY_MS } else { now + DAY_MS },
                i64::from(ended),
                ended.then_some(created + 20),
                ended.then_some(created + 500),
                result,
            ])?;
        }
    }
    tx.commit()?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(())
}

/// `paths` fetched at once with `key`, as a view does; the time until the last answered.
async fn view(
    http: &reqwest::Client,
    gw: &Gateway,
    key: &str,
    paths: &[String],
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let calls = paths.iter().map(|path| {
        let request = http.get(gw.url(path)).bearer_auth(key);
        async move {
            let response = request.send().await?;
            anyhow::ensure!(response.status() == 200, "{path}: {}", response.status());
            response.bytes().await?;
            anyhow::Ok(())
        }
    });
    for answered in futures_util::future::join_all(calls).await {
        answered?;
    }
    Ok(started.elapsed())
}

pub async fn dashboard(args: &Args) -> anyhow::Result<Value> {
    let count = if args.quick { 10_000 } else { args.scale_jobs };
    let mut gw = Gateway::start(&[("OBB_THREADS", "2")]).await;
    let users = [gw.key("user").await, gw.key("user").await];
    let admin = gw.admin.clone();
    let http = reqwest::Client::new();
    let owners: Vec<String> = {
        let (_, keys) = gw.get_json(&admin, "/admin/keys").await;
        let mut ids: Vec<String> = keys["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|k| k["role"] == "user")
            .filter_map(|k| k["id"].as_str().map(str::to_owned))
            .collect();
        ids.extend(["key_bench2".to_owned(), "key_bench3".to_owned()]);
        ids
    };
    let user_key_id = owners[0].clone();
    gw.stop_with("-TERM");
    let filled = Instant::now();
    fill(&gw.db(), count, &owners)?;
    let fill_s = filled.elapsed().as_secs_f64();
    let started = Instant::now();
    gw.spawn().await;
    let start_s = started.elapsed().as_secs_f64();
    // A node, so that the nodes view lists one.
    let node = gw.key("node").await;
    gw.fetch(&node, "bench-node", &["none"], 1, 0.0).await;
    let some_job = format!("job-{:032x}", count / 2);
    let views: Vec<(&str, &str, Vec<String>)> = vec![
        (
            "overview",
            &admin,
            vec![
                "/v1/dashboard/whoami".into(),
                "/v1/dashboard/overview".into(),
            ],
        ),
        (
            "overview, a user's",
            &users[0],
            vec![
                "/v1/dashboard/whoami".into(),
                "/v1/dashboard/overview".into(),
            ],
        ),
        ("jobs", &admin, vec!["/v1/jobs?limit=50".into()]),
        (
            "jobs, failed",
            &admin,
            vec!["/v1/jobs?limit=50&status=failed".into()],
        ),
        (
            "jobs, expired (none stored)",
            &admin,
            vec!["/v1/jobs?limit=50&status=expired".into()],
        ),
        (
            "jobs, one model",
            &admin,
            vec!["/v1/jobs?limit=50&model=m3".into()],
        ),
        (
            "jobs, failed of one model",
            &admin,
            vec!["/v1/jobs?limit=50&status=failed&model=m3".into()],
        ),
        (
            "jobs, one key",
            &admin,
            vec![format!("/v1/jobs?limit=50&key_id={user_key_id}")],
        ),
        (
            "jobs, a user's own",
            &users[0],
            vec!["/v1/jobs?limit=50".into()],
        ),
        (
            "jobs, a user's failed",
            &users[0],
            vec!["/v1/jobs?limit=50&status=failed".into()],
        ),
        (
            "jobs, page 100 (by cursor)",
            &admin,
            vec![format!("/v1/jobs?limit=50&after={some_job}")],
        ),
        (
            "job detail",
            &admin,
            vec![format!("/v1/jobs/{some_job}?include=request")],
        ),
        ("batches", &admin, vec!["/v1/batches?limit=20".into()]),
        ("nodes", &admin, vec!["/admin/nodes".into()]),
        ("keys", &admin, vec!["/admin/keys".into()]),
    ];
    let repeats = if args.quick { 3 } else { 20 };
    let mut results = Vec::new();
    for (name, key, paths) in &views {
        let mut samples = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            samples.push(view(&http, &gw, key, paths).await?);
        }
        let latencies = Latencies::new(samples);
        row(
            "dashboard",
            name,
            &format!(
                "p50 {:.2} ms  p99 {:.2} ms  ({count} jobs stored)",
                latencies.percentile(50.0),
                latencies.percentile(99.0)
            ),
        );
        results.push(json!({"view": name, "paths": paths, "latency": latencies.summary()}));
    }
    row(
        "dashboard",
        "gateway start with them stored",
        &format!("{start_s:.2} s (filled in {fill_s:.1} s)"),
    );
    let painted = match &args.ui_python {
        Some(python) => first_paint(python, &gw, &admin, &some_job)?,
        None => Value::Null,
    };
    Ok(
        json!({"jobs": count, "fill_s": fill_s, "start_s": start_s, "views": results,
            "first_paint_ms": painted}),
    )
}

/// Each view's first paint in headless Chromium (`dashboard_paint.py`), in ms.
fn first_paint(
    python: &std::path::Path,
    gw: &Gateway,
    admin: &str,
    job: &str,
) -> anyhow::Result<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboard_paint.py");
    let output = std::process::Command::new(python)
        .args([script, &gw.url(""), admin, job])
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "dashboard_paint.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let painted: Value = serde_json::from_slice(&output.stdout)?;
    if let Some(views) = painted.as_object() {
        for (view, ms) in views {
            row(
                "dashboard",
                &format!("first paint in Chromium: {view}"),
                &format!("{ms} ms (median of 5 loads)"),
            );
        }
    }
    Ok(painted)
}
