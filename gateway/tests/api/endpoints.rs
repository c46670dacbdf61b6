//! `/v1/embeddings` and `/v1/completions` as jobs, with the tests as the node: their job
//! objects, leases by endpoint, waiting, idempotency, priority and TTL, the replayed
//! `text_completion` stream, cancel and events, metrics, and batches of them.

use crate::batches;
use crate::harness::{Gateway, eventually, observed};
use insta::assert_json_snapshot;
use serde_json::{Value, json};
use std::time::Duration;

const EMBEDDINGS: &str = "/v1/embeddings";
const COMPLETIONS: &str = "/v1/completions";

fn embedding_list(vectors: &[&[f64]]) -> Value {
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, v)| json!({"object": "embedding", "index": index, "embedding": v}))
        .collect();
    json!({"object": "list", "data": data, "model": "e",
           "usage": {"prompt_tokens": 4, "total_tokens": 4}})
}

fn text_completion(text: &str) -> Value {
    json!({"id": "cmpl-test", "object": "text_completion", "created": 1_700_000_000,
           "model": "c", "system_fingerprint": "fp_test",
           "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": "length"}],
           "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}})
}

/// Leases the next job of `endpoints` as node `bg` (waiting for it) and completes it with
/// `result`; returns the leased job.
fn answer_in_background(
    gw: &Gateway,
    node: String,
    endpoints: Value,
    result: Value,
) -> tokio::task::JoinHandle<Value> {
    gw.answer_next(
        &node,
        endpoints,
        move |_| json!({"status": "COMPLETED", "result": result}),
    )
}

async fn post(
    gw: &Gateway,
    key: &str,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = gw.http.post(gw.url(path)).bearer_auth(key).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("post")
}

async fn fetch(gw: &Gateway, node: &str, endpoints: Option<Value>) -> Vec<Value> {
    let mut body = json!({"node_id": "n", "models": ["*"], "limit": 10});
    if let Some(endpoints) = endpoints {
        body["endpoints"] = endpoints;
    }
    let (status, answer) = gw.post_json(node, "/internal/queue/fetch", &body).await;
    assert_eq!(status, 200, "{answer}");
    answer["jobs"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn embeddings_and_completions_submits_return_202_with_their_job_objects() {
    let gw = Gateway::start(&[]).await;
    let user = gw.key("user").await;
    let redactions = |seen: &Value| {
        let mut seen = seen.clone();
        let id = seen["body"]["id"].as_str().unwrap().to_owned();
        assert_eq!(seen["headers"]["location"], format!("/v1/jobs/{id}"));
        for field in ["id", "created_at", "updated_at", "expires_at"] {
            seen["body"][field] = json!("[redacted]");
        }
        seen["headers"]["location"] = json!("[location]");
        seen
    };
    let embeddings = post(
        &gw,
        &user,
        EMBEDDINGS,
        &json!({"model": "e", "input": ["a", "b"], "encoding_format": "float"}),
        &[],
    )
    .await;
    assert_json_snapshot!("embeddings_job", redactions(&observed(embeddings).await));
    let completions = post(
        &gw,
        &user,
        COMPLETIONS,
        &json!({"model": "c", "prompt": "Once", "max_tokens": 4}),
        &[],
    )
    .await;
    assert_json_snapshot!("completions_job", redactions(&observed(completions).await));
}

#[tokio::test]
async fn a_fetch_leases_only_the_endpoints_the_node_names_and_a_node_naming_none_gets_chat() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let embeddings = post(
        &gw,
        &user,
        EMBEDDINGS,
        &json!({"model": "m", "input": "x"}),
        &[],
    )
    .await;
    let embeddings: Value = embeddings.json().await.unwrap();
    let completions = post(
        &gw,
        &user,
        COMPLETIONS,
        &json!({"model": "m", "prompt": "x"}),
        &[],
    )
    .await;
    let completions: Value = completions.json().await.unwrap();
    let chat = gw.submit_id(&user, "m").await;

    let old = fetch(&gw, &node, None).await;
    assert_eq!(
        old.len(),
        1,
        "a node that names no endpoint is a chat node: {old:?}"
    );
    assert_eq!(old[0]["id"], chat.as_str());
    assert_eq!(old[0]["endpoint"], "/v1/chat/completions");

    let leased = fetch(&gw, &node, Some(json!([EMBEDDINGS]))).await;
    assert_eq!(leased.len(), 1);
    assert_eq!(
        (&leased[0]["id"], &leased[0]["endpoint"]),
        (&embeddings["id"], &json!(EMBEDDINGS))
    );
    assert_eq!(
        leased[0]["request_payload"],
        json!({"model": "m", "input": "x"})
    );
    let rest = fetch(
        &gw,
        &node,
        Some(json!(["/v1/chat/completions", COMPLETIONS])),
    )
    .await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["id"], completions["id"]);

    let (status, refused) = gw
        .post_json(
            &node,
            "/internal/queue/fetch",
            &json!({"node_id": "n", "models": ["*"], "endpoints": ["/v1/images"]}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
}

#[tokio::test]
async fn a_waited_embeddings_submit_answers_with_the_nodes_list_verbatim() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let list = embedding_list(&[&[0.5, 1.5]]);
    let worker = answer_in_background(&gw, node.clone(), json!([EMBEDDINGS]), list.clone());
    let response = post(
        &gw,
        &user,
        &format!("{EMBEDDINGS}?wait=20"),
        &json!({"model": "e", "input": "hello"}),
        &[("x-obb-priority", "1"), ("x-obb-ttl", "600")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer, list, "the node's answer, verbatim");
    let leased = worker.await.unwrap();
    let job = gw.job(&user, leased["id"].as_str().unwrap()).await;
    assert_eq!(job["priority"], 1);
    assert_eq!(
        job["expires_at"].as_i64().unwrap() - job["created_at"].as_i64().unwrap(),
        600
    );

    // `Prefer: wait`, and an idempotency key: the retry is the same job.
    let worker = answer_in_background(&gw, node.clone(), json!([EMBEDDINGS]), list.clone());
    let body = json!({"model": "e", "input": [1, 2, 3]});
    let headers = [("prefer", "wait=20"), ("idempotency-key", "emb-1")];
    let first = post(&gw, &user, EMBEDDINGS, &body, &headers).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.json::<Value>().await.unwrap(), list);
    worker.await.unwrap();
    let again = post(&gw, &user, EMBEDDINGS, &body, &headers).await;
    assert_eq!(again.status(), 200);
    assert_eq!(
        again.json::<Value>().await.unwrap(),
        list,
        "the first job's answer"
    );
    let (_, jobs) = gw.get_json(&user, "/v1/jobs?limit=10").await;
    assert_eq!(
        jobs["data"].as_array().unwrap().len(),
        2,
        "the retry made no job"
    );
    let conflict = post(
        &gw,
        &user,
        EMBEDDINGS,
        &json!({"model": "e", "input": "other"}),
        &headers,
    )
    .await;
    assert_eq!(conflict.status(), 422);
}

#[tokio::test]
async fn the_same_idempotency_key_and_body_on_another_endpoint_gets_422_and_stores_nothing() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    // A body both endpoints accept: extra fields pass, `prompt` and `input` are each one's.
    let body = json!({"model": "m", "prompt": "same", "input": "same"});
    let headers = [("idempotency-key", "both-1")];
    let first = post(&gw, &user, COMPLETIONS, &body, &headers).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["endpoint"], COMPLETIONS);

    let conflict = observed(post(&gw, &user, EMBEDDINGS, &body, &headers).await).await;
    assert_json_snapshot!("idempotency_key_used_on_another_endpoint", conflict);
    let (_, jobs) = gw.get_json(&user, "/v1/jobs?limit=10").await;
    let ids: Vec<&Value> = jobs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| &j["id"])
        .collect();
    assert_eq!(ids, [&first["id"]], "the refused submit stored no job");
    assert!(
        fetch(&gw, &node, Some(json!([EMBEDDINGS])))
            .await
            .is_empty(),
        "no embeddings job to lease"
    );
    // The key still names its first request.
    let again: Value = post(&gw, &user, COMPLETIONS, &body, &headers)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["id"], first["id"]);
}

#[tokio::test]
async fn a_streamed_completion_is_replayed_as_text_completion_chunks() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let worker = answer_in_background(
        &gw,
        node,
        json!([COMPLETIONS]),
        text_completion(" upon a time"),
    );
    let response = post(
        &gw,
        &user,
        COMPLETIONS,
        &json!({"model": "c", "prompt": "Once", "stream": true,
                "stream_options": {"include_usage": true}}),
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let joined: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(joined, " upon a time");
    assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 5);
    assert_json_snapshot!(chunks, {"[].created" => "[time]"});
    worker.await.unwrap();
}

#[tokio::test]
async fn an_embeddings_job_is_cancelled_polled_and_streamed_like_a_chat_job() {
    let gw = Gateway::start(&[]).await;
    let user = gw.key("user").await;
    let response = post(
        &gw,
        &user,
        EMBEDDINGS,
        &json!({"model": "e", "input": "x"}),
        &[],
    )
    .await;
    let job: Value = response.json().await.unwrap();
    let id = job["id"].as_str().unwrap();
    let (status, cancelled) = gw
        .post_json(&user, &format!("/v1/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (cancelled["status"].as_str(), cancelled["object"].as_str()),
        (Some("cancelled"), Some("embedding.job"))
    );
    let (_, polled) = gw
        .post_json(&user, "/v1/results/poll", &json!({"ids": [id]}))
        .await;
    assert_eq!(polled["jobs"][0]["endpoint"], EMBEDDINGS);
    let events = gw
        .http
        .get(gw.url(&format!("/v1/jobs/{id}/stream")))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(events.starts_with("event: cancelled\ndata: "), "{events}");
    assert!(
        events.contains("\"endpoint\":\"/v1/embeddings\""),
        "{events}"
    );
    let waited = post(
        &gw,
        &user,
        &format!("{EMBEDDINGS}?wait=1"),
        &json!({"model": "e", "input": "y"}),
        &[],
    )
    .await;
    assert_eq!(
        waited.status(),
        202,
        "not done within the wait: the job object"
    );
}

#[tokio::test]
async fn metrics_count_submits_and_endings_by_endpoint() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    for (path, body) in [
        (EMBEDDINGS, json!({"model": "m", "input": "x"})),
        (EMBEDDINGS, json!({"model": "m", "input": "y"})),
        (COMPLETIONS, json!({"model": "m", "prompt": "x"})),
    ] {
        post(&gw, &user, path, &body, &[]).await;
    }
    let leased = fetch(&gw, &node, Some(json!([EMBEDDINGS]))).await;
    assert_eq!(leased.len(), 2);
    gw.post_json(
        &node,
        "/internal/queue/submit",
        &json!([{"id": leased[0]["id"], "lease_id": leased[0]["lease_id"],
                 "status": "COMPLETED", "result": embedding_list(&[&[1.0]])}]),
    )
    .await;
    assert_eq!(
        gw.metric("obb_jobs_submitted_total", "endpoint=\"/v1/embeddings\"")
            .await,
        2.0
    );
    assert_eq!(
        gw.metric("obb_jobs_submitted_total", "endpoint=\"/v1/completions\"")
            .await,
        1.0
    );
    assert_eq!(
        gw.metric(
            "obb_jobs_submitted_total",
            "endpoint=\"/v1/chat/completions\""
        )
        .await,
        0.0
    );
    assert_eq!(
        gw.metric(
            "obb_jobs_finished_total",
            "endpoint=\"/v1/embeddings\",model=\"m\",status=\"completed\""
        )
        .await,
        1.0
    );
    let text = gw
        .http
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let endpoints: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("obb_jobs_submitted_total{"))
        .filter_map(|l| l.split("endpoint=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(
        endpoints.into_iter().collect::<Vec<_>>(),
        vec![
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/embeddings",
            "/v1/responses"
        ],
        "the label takes the fixed set only"
    );
}

#[tokio::test]
async fn a_batch_of_embeddings_lines_runs_each_line_as_its_own_job() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let lines: String = ["a", "b", "c"]
        .iter()
        .map(|id| {
            json!({"custom_id": id, "method": "POST", "url": EMBEDDINGS,
                   "body": {"model": "e", "input": format!("text {id}")}})
            .to_string()
                + "\n"
        })
        .collect();
    let file = batches::upload(&gw, &user, lines, "batch").await;
    let batch = batches::create_on(&gw, &user, &file, EMBEDDINGS).await;
    assert_eq!(batch["endpoint"], EMBEDDINGS);
    let leased = eventually(
        Duration::from_secs(20),
        "the lines to be queued",
        || async {
            let jobs = fetch(&gw, &node, Some(json!([EMBEDDINGS]))).await;
            (!jobs.is_empty()).then_some(jobs)
        },
    )
    .await;
    assert_eq!(leased.len(), 3);
    let results: Vec<Value> = leased
        .iter()
        .map(|job| {
            assert_eq!(job["endpoint"], EMBEDDINGS);
            json!({"id": job["id"], "lease_id": job["lease_id"], "status": "COMPLETED",
                   "result": embedding_list(&[&[1.0]])})
        })
        .collect();
    gw.post_json(&node, "/internal/queue/submit", &json!(results))
        .await;
    let id = batch["id"].as_str().unwrap();
    let done = batches::batch_until(&gw, &user, id, "completed").await;
    assert_eq!(
        done["request_counts"],
        json!({"total": 3, "completed": 3, "failed": 0})
    );
    let mut custom_ids: Vec<String> = batches::content(&gw, &user, &done["output_file_id"])
        .await
        .into_iter()
        .map(|l| {
            assert_eq!(l["response"]["body"]["object"], "list");
            l["custom_id"].as_str().unwrap().to_owned()
        })
        .collect();
    custom_ids.sort();
    assert_eq!(
        custom_ids,
        ["a", "b", "c"],
        "one output line per input line"
    );

    // A line whose body is not a valid embeddings request fails the batch, naming its field.
    let bad = json!({"custom_id": "x", "method": "POST", "url": EMBEDDINGS,
                     "body": {"model": "e", "input": ["ok", 7]}})
    .to_string();
    let file = batches::upload(&gw, &user, bad, "batch").await;
    let batch = batches::create_on(&gw, &user, &file, EMBEDDINGS).await;
    let failed = batches::batch_until(&gw, &user, batch["id"].as_str().unwrap(), "failed").await;
    assert_eq!(
        failed["errors"]["data"][0]["param"], "body.input[1]",
        "{failed}"
    );
    assert_eq!(failed["errors"]["data"][0]["line"], 1);
}

#[tokio::test]
async fn a_held_completion_stream_gets_text_completion_chunks_once_its_job_ends() {
    let gw = Gateway::start(&[("OBB_STREAM_KEEPALIVE_SECONDS", "1")]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    // No node yet: the headers come with the first keep-alive, the job still queued.
    let response = post(
        &gw,
        &user,
        COMPLETIONS,
        &json!({"model": "c", "prompt": "Once", "stream": true}),
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let job_id = response.headers()["x-obb-job-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(gw.job(&user, &job_id).await["status"], "queued");
    let leased = fetch(&gw, &node, Some(json!([COMPLETIONS]))).await;
    assert_eq!(leased[0]["id"], job_id.as_str());
    gw.post_json(
        &node,
        "/internal/queue/submit",
        &json!([{"id": leased[0]["id"], "lease_id": leased[0]["lease_id"],
                 "status": "COMPLETED", "result": text_completion(" upon")}]),
    )
    .await;
    let text = response.text().await.unwrap();
    let data: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks.iter().all(|c| c["object"] == "text_completion"),
        "{text}"
    );
    assert_eq!(chunks[0]["choices"][0]["text"], " upon");
    assert_eq!(chunks[1]["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn an_embeddings_batch_of_more_than_50000_inputs_in_all_fails_at_the_line_that_passes_it() {
    let gw = Gateway::start(&[]).await;
    let user = gw.key("user").await;
    // 2048 inputs a line (OpenAI's most per request): line 25 brings the sum past 50,000.
    let inputs = vec!["a"; 2048];
    let lines: String = (1..=26)
        .map(|n| {
            json!({"custom_id": format!("c{n}"), "method": "POST", "url": EMBEDDINGS,
                   "body": {"model": "e", "input": inputs}})
            .to_string()
                + "\n"
        })
        .collect();
    let file = batches::upload(&gw, &user, lines, "batch").await;
    let batch = batches::create_on(&gw, &user, &file, EMBEDDINGS).await;
    let failed = batches::batch_until(&gw, &user, batch["id"].as_str().unwrap(), "failed").await;
    let error = &failed["errors"]["data"][0];
    assert_eq!(error["code"], "too_many_embedding_inputs", "{failed}");
    assert_eq!(error["line"], 25);
    assert_eq!(error["param"], "body.input");
    let (_, jobs) = gw.get_json(&user, "/v1/jobs").await;
    assert_eq!(jobs["data"], json!([]), "no line was queued");
}
