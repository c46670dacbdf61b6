use crate::harness::{Gateway, chat, completion, observed};
use insta::assert_json_snapshot;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[tokio::test]
async fn submit_returns_202_with_the_job_object_and_its_location() {
    let gw = Gateway::start(&[]).await;
    let user = gw.key("user").await;
    let response = gw.submit(&user, &chat("echo", "hi")).await;
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let seen = observed(response).await;
    assert_eq!(
        location,
        format!("/v1/jobs/{}", seen["body"]["id"].as_str().unwrap())
    );
    assert_json_snapshot!(seen, {
        ".headers.location" => "[location]", ".body.id" => "[id]",
        ".body.created_at" => "[time]", ".body.updated_at" => "[time]", ".body.expires_at" => "[time]",
    });
}

/// Plays a node that leases the next job once it appears and reports `outcome` for it (the
/// fields of a node result besides `id` and `lease_id`).
fn answer_in_background(gw: &Gateway, node: String, outcome: Value) -> tokio::task::JoinHandle<()> {
    let base = gw.base.clone();
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let fetched: Value = http
            .post(format!("{base}/internal/queue/fetch"))
            .bearer_auth(&node)
            .json(&json!({"node_id": "bg", "models": ["*"], "limit": 1, "wait": 20}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut item = outcome;
        item["id"] = fetched["jobs"][0]["id"].clone();
        item["lease_id"] = fetched["jobs"][0]["lease_id"].clone();
        http.post(format!("{base}/internal/queue/submit"))
            .bearer_auth(&node)
            .json(&json!([item]))
            .send()
            .await
            .unwrap();
    })
}

/// Plays a node that completes the next job with `content` once it appears.
fn complete_in_background(
    gw: &Gateway,
    node: String,
    content: &'static str,
) -> tokio::task::JoinHandle<()> {
    answer_in_background(
        gw,
        node,
        json!({"status": "COMPLETED", "result": completion(content)}),
    )
}

#[tokio::test]
async fn waited_submit_returns_the_completion_exactly_as_the_node_sent_it() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let worker = complete_in_background(&gw, node, "pong");
    let response = gw
        .submit_with(&user, &chat("echo", "ping"), Some(20), &[])
        .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-obb-queue-ms"));
    assert!(response.headers().contains_key("x-obb-processing-ms"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, completion("pong"));
    worker.await.unwrap();
}

#[tokio::test]
async fn prefer_wait_streams_the_finished_completion_as_chunks() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let worker = complete_in_background(&gw, node, "streamed text");
    let mut request = chat("echo", "ping");
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let response = gw
        .submit_with(&user, &request, None, &[("Prefer", "wait=20")])
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
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(joined, "streamed text");
    assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 7);
    assert_json_snapshot!(chunks, {"[].created" => "[time]"});
    worker.await.unwrap();
}

#[tokio::test]
async fn a_wait_that_runs_out_answers_202_with_retry_after() {
    let gw = Gateway::start(&[("OBB_MAX_WAIT_SECONDS", "1")]).await;
    let user = gw.key("user").await;
    let started = Instant::now();
    let response = gw
        .submit_with(&user, &chat("echo", "nobody serves this"), Some(30), &[])
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the wait is capped by max_wait_seconds"
    );
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["retry-after"], "1");
    let job: Value = response.json().await.unwrap();
    assert_eq!(job["status"], "queued");
}

#[tokio::test]
async fn default_wait_seconds_makes_plain_submits_synchronous() {
    let gw = Gateway::start(&[("OBB_DEFAULT_WAIT_SECONDS", "20")]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let worker = complete_in_background(&gw, node, "sync");
    let response = gw.submit(&user, &chat("echo", "ping")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["choices"][0]["message"]["content"],
        "sync"
    );
    worker.await.unwrap();
}

#[tokio::test]
async fn failed_jobs_answer_waiters_with_the_error_and_no_retry() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    for (upstream_status, expected) in [(Some(400), 400), (Some(503), 502), (None, 502)] {
        let failer = answer_in_background(
            &gw,
            node.clone(),
            json!({"status": "FAILED", "upstream_status": upstream_status, "retryable": false,
                "error": {"message": "model `x` does not exist", "type": "invalid_request_error",
                          "param": null, "code": "model_not_found"}}),
        );
        let response = gw.submit_with(&user, &chat("x", "hi"), Some(20), &[]).await;
        assert_eq!(response.status(), expected);
        assert_eq!(response.headers()["x-should-retry"], "false");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "model_not_found");
        failer.await.unwrap();
    }
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_job_and_a_different_body_gets_422() {
    let gw = Gateway::start(&[]).await;
    let user = gw.key("user").await;
    let send = async |body: Value| {
        gw.submit_with(&user, &body, None, &[("Idempotency-Key", "order-42")])
            .await
    };
    let first: Value = send(chat("echo", "a")).await.json().await.unwrap();
    // The same request with its keys in another order is the same request.
    let reordered = json!({"messages": [{"content": "a", "role": "user"}], "model": "echo"});
    let again: Value = send(reordered).await.json().await.unwrap();
    assert_eq!(first["id"], again["id"]);
    let conflict = observed(send(chat("echo", "b")).await).await;
    assert_json_snapshot!(conflict);
    let (_, list) = gw.get_json(&user, "/v1/jobs").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    // Another user's identical key is their own.
    let other = gw.key("user").await;
    let theirs: Value = gw
        .submit_with(
            &other,
            &chat("echo", "a"),
            None,
            &[("Idempotency-Key", "order-42")],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(theirs["id"], first["id"]);
}

#[tokio::test]
async fn jobs_are_leased_by_priority_then_age() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let mut ids = Vec::new();
    for (priority, via_header) in [(5, true), (3, false), (1, true), (1, false)] {
        let mut body = chat("echo", "x");
        let priority_text = priority.to_string();
        let header = [("X-OBB-Priority", priority_text.as_str())];
        let headers: &[(&str, &str)] = if via_header {
            &header
        } else {
            body["metadata"] = json!({"obb_priority": priority_text});
            &[]
        };
        let job: Value = gw
            .submit_with(&user, &body, None, headers)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(job["priority"], priority);
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    let leased = gw.fetch(&node, "n", &["echo"], 10, 0.0).await;
    let order: Vec<&str> = leased.iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(order, vec![&ids[2], &ids[3], &ids[1], &ids[0]]);
}

#[tokio::test]
async fn a_job_past_its_ttl_expires_and_its_waiter_hears_so() {
    let gw = Gateway::start(&[]).await;
    let user = gw.key("user").await;
    let response = gw
        .submit_with(
            &user,
            &chat("nobody", "hi"),
            Some(20),
            &[("X-OBB-TTL", "1")],
        )
        .await;
    let seen = observed(response).await;
    assert_json_snapshot!(seen, {".body.error.message" => "[message]"});
}

/// Sends a `stream: true` request that waits for its job, and returns the `data:` payloads
/// of the event stream, checking that every event is one `data:` field.
async fn streamed(gw: &Gateway, user: &str) -> Vec<String> {
    let mut request = chat("echo", "call the tools");
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let response = gw
        .submit_with(user, &request, None, &[("Prefer", "wait=20")])
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text:?}");
    text.split("\n\n")
        .filter(|event| !event.is_empty() && !event.starts_with(':'))
        .map(|event| {
            // SSE ends a line at CR as well as LF: one line per event, or the data is cut.
            assert!(
                !event.contains(['\n', '\r']),
                "one line per event: {event:?}"
            );
            event.strip_prefix("data: ").unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_streamed_multi_choice_tool_call_completion_replays_as_valid_chunks() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    // What a lax upstream returns for `n: 2` with tools: no `index` on the choices, no
    // `role` on one message, `content: null` beside tool calls, logprobs and a refusal.
    let result = json!({
        "id": "chatcmpl-tools", "object": "chat.completion", "created": 1_700_000_000,
        "model": "echo", "system_fingerprint": "fp_test", "service_tier": "default",
        "choices": [
            {"message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_a", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_b", "function": {"name": "get_time", "arguments": {"tz": "CET"}}}]},
             "logprobs": null, "finish_reason": "tool_calls"},
            {"message": {"content": null, "refusal": "I can't call tools for that."},
             "logprobs": {"content": null, "refusal": [{"token": "I", "logprob": -0.01,
                 "bytes": [73], "top_logprobs": []}]}}
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
    });
    let worker = answer_in_background(&gw, node, json!({"status": "COMPLETED", "result": result}));
    let events = streamed(&gw, &user).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        for choice in chunk["choices"].as_array().unwrap() {
            assert!(
                choice["index"].is_u64() && choice["delta"].is_object(),
                "{chunk}"
            );
        }
    }
    let calls = &chunks[0]["choices"][0]["delta"]["tool_calls"];
    assert_eq!(calls[0]["index"], 0);
    assert_eq!(calls[1]["index"], 1);
    // The second choice has logprobs, so its role opens alone, as OpenAI's stream does.
    assert_eq!(chunks[2]["choices"][0]["index"], 1);
    assert_eq!(
        chunks[2]["choices"][0]["delta"],
        json!({"role": "assistant"})
    );
    assert!(chunks[3]["choices"][0]["logprobs"]["refusal"].is_array());
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert_json_snapshot!(chunks, {"[].id" => "[id]", "[].created" => "[time]"});
    worker.await.unwrap();
}

#[tokio::test]
async fn a_result_that_is_no_chat_completion_streams_whole_as_one_data_event() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let base = gw.base.clone();
    // Sent as raw text, so the stored result keeps the upstream's line breaks, CRLF
    // included: SSE ends a line at either, so neither may reach the event.
    let worker = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let fetched: Value = http
            .post(format!("{base}/internal/queue/fetch"))
            .bearer_auth(&node)
            .json(&json!({"node_id": "bg", "models": ["*"], "limit": 1, "wait": 20}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let job = &fetched["jobs"][0];
        let body = format!(
            "[{{\"id\": {}, \"lease_id\": {}, \"status\": \"COMPLETED\",\n \"result\": {{\r\n  \"object\": \"list\",\r\n  \"data\": [\"a\\nb\"]\n }}}}]",
            job["id"], job["lease_id"]
        );
        let response = http
            .post(format!("{base}/internal/queue/submit"))
            .bearer_auth(&node)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    });
    let events = streamed(&gw, &user).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&events[0]).unwrap(),
        json!({"object": "list", "data": ["a\nb"]})
    );
    assert_eq!(events[1], "[DONE]");
    worker.await.unwrap();
}
