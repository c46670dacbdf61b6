//! `/v1/responses` as jobs, with the tests as the node: background create, retrieve in each
//! status, a held create, the replayed event stream, `previous_response_id`, cancel,
//! delete, input items, bad input, and Responses batches.

use crate::batches;
use crate::harness::{Gateway, observed};
use insta::assert_json_snapshot;
use serde_json::{Value, json};

pub(crate) const RESPONSES: &str = "/v1/responses";

/// A `response` object as an upstream answers it, with its own id (the gateway's replaces it).
pub(crate) fn answer(text: &str) -> Value {
    json!({"id": "resp_upstream", "object": "response", "created_at": 1_700_000_000,
           "status": "completed", "model": "m-upstream", "error": null,
           "output": [{"type": "message", "id": "msg_up", "status": "completed",
                       "role": "assistant",
                       "content": [{"type": "output_text", "text": text, "annotations": []}]}],
           "usage": {"input_tokens": 4, "output_tokens": 2, "total_tokens": 6}})
}

async fn create(gw: &Gateway, key: &str, body: &Value) -> (u16, Value) {
    let response = gw
        .http
        .post(gw.url(RESPONSES))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Leases the next Responses job as a node serving only `/v1/responses`.
pub(crate) async fn lease(gw: &Gateway, node: &str, wait: f64) -> Value {
    let (status, body) = gw
        .post_json(
            node,
            "/internal/queue/fetch",
            &json!({"node_id": "r", "models": ["*"], "limit": 1, "wait": wait,
                    "endpoints": [RESPONSES]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["jobs"][0].clone()
}

pub(crate) async fn finish(gw: &Gateway, node: &str, job: &Value, result: Value) {
    let outcome = gw
        .report(
            node,
            &json!([{"id": job["id"], "lease_id": job["lease_id"], "status": "COMPLETED",
                     "result": result}]),
        )
        .await;
    assert_eq!(outcome, "accepted");
}

/// Leases the next Responses job in the background and answers it with `text`.
fn answer_in_background(gw: &Gateway, node: &str, text: &str) -> tokio::task::JoinHandle<Value> {
    let answer = answer(text);
    gw.answer_next(
        node,
        json!([RESPONSES]),
        move |_| json!({"status": "COMPLETED", "result": answer}),
    )
}

fn redacted(mut response: Value) -> Value {
    for field in ["id", "created_at"] {
        if !response[field].is_null() {
            response[field] = json!(format!("[{field}]"));
        }
    }
    response
}

#[tokio::test]
async fn a_background_response_is_queued_then_in_progress_then_completed_under_its_own_id() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let (status, queued) = create(
        &gw,
        &user,
        &json!({"model": "m", "input": "Say hi", "background": true,
                "instructions": "Be brief.", "metadata": {"topic": "greeting"}}),
    )
    .await;
    assert_eq!(status, 200, "{queued}");
    let id = queued["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("resp_"), "{id}");
    assert_json_snapshot!("response_queued", redacted(queued.clone()));

    let (status, read) = gw.get_json(&user, &format!("{RESPONSES}/{id}")).await;
    assert_eq!((status.as_u16(), &read["status"]), (200, &json!("queued")));
    // The response is a job like any other.
    let job = gw.job(&user, &id).await;
    assert_eq!(
        (&job["object"], &job["endpoint"]),
        (&json!("response.job"), &json!(RESPONSES))
    );

    let leased = lease(&gw, &node, 0.0).await;
    assert_eq!(leased["id"], id.as_str());
    assert_eq!(leased["endpoint"], RESPONSES);
    assert_eq!(leased["request_payload"]["input"], "Say hi");
    let (_, running) = gw.get_json(&user, &format!("{RESPONSES}/{id}")).await;
    assert_eq!(running["status"], "in_progress");

    finish(&gw, &node, &leased, answer("Hi!")).await;
    let (_, done) = gw.get_json(&user, &format!("{RESPONSES}/{id}")).await;
    assert_eq!(done["id"], id.as_str());
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], "Hi!");
    assert_eq!(done["usage"]["total_tokens"], 6);
    assert_eq!(done["background"], true);
    assert_json_snapshot!("response_completed", redacted(done));
    // The job's result is the response under its own id too, and its tokens are counted.
    let job = gw.job(&user, &id).await;
    assert_eq!(job["result"]["id"], id.as_str());
    assert_eq!(job["result"]["output"][0]["content"][0]["text"], "Hi!");
    assert_eq!(
        gw.metric("obb_tokens_total", "kind=\"completion\",model=\"m\"")
            .await,
        2.0
    );

    // Another user's response, or a chat job's id, is no response of theirs.
    let other = gw.key("user").await;
    let (status, missing) = gw.get_json(&other, &format!("{RESPONSES}/{id}")).await;
    assert_eq!(status, 404, "{missing}");
    let chat = gw.submit_id(&user, "m").await;
    let (status, _) = gw.get_json(&user, &format!("{RESPONSES}/{chat}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn without_background_the_create_is_held_and_answered_with_the_finished_response() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let worker = answer_in_background(&gw, &node, "Held and answered.");
    let (status, done) = create(&gw, &user, &json!({"model": "m", "input": "Hello"})).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "completed");
    assert_eq!(done["background"], false);
    assert_eq!(
        done["output"][0]["content"][0]["text"],
        "Held and answered."
    );
    assert_eq!(worker.await.unwrap()["id"], done["id"]);

    // A request the upstream refused is answered with its error, as chat's are.
    let refusing = gw.answer_next(&node, json!([RESPONSES]), |_| {
        json!({"status": "FAILED", "upstream_status": 400,
               "error": {"message": "bad tool", "type": "invalid_request_error",
                         "param": "tools", "code": null}})
    });
    let (status, refused) = create(&gw, &user, &json!({"model": "m", "input": "x"})).await;
    refusing.await.unwrap();
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["message"], "bad tool");
    assert_eq!(refused["error"]["param"], "tools");

    // Not done within the wait: 202 with the response as it stands, and where to read it.
    let response = gw
        .http
        .post(gw.url(&format!("{RESPONSES}?wait=1")))
        .bearer_auth(&user)
        .json(&json!({"model": "m", "input": "slow"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let pending = observed(response).await;
    let id = pending["body"]["id"].as_str().unwrap();
    assert_eq!(pending["headers"]["location"], format!("{RESPONSES}/{id}"));
    assert_eq!(pending["body"]["status"], "queued");
}

#[tokio::test]
async fn a_streamed_response_is_the_responses_event_stream_of_the_finished_answer() {
    let gw = Gateway::start(&[("OBB_STREAM_KEEPALIVE_SECONDS", "1")]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let leasing = {
        let (base, node) = (gw.base.clone(), node.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let fetched: Value = http
                .post(format!("{base}/internal/queue/fetch"))
                .bearer_auth(&node)
                .json(
                    &json!({"node_id": "bg", "models": ["*"], "limit": 1, "wait": 20,
                              "endpoints": [RESPONSES]}),
                )
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap();
            fetched["jobs"][0].clone()
        })
    };
    // The headers come with the first keep-alive, while the job is still running: the
    // stream is held open, and its events are written when the job ends.
    let response = gw
        .http
        .post(gw.url(RESPONSES))
        .bearer_auth(&user)
        .json(&json!({"model": "m", "input": "Stream it", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let leased = leasing.await.unwrap();
    assert_eq!(
        gw.job(&user, leased["id"].as_str().unwrap()).await["status"],
        "processing"
    );
    finish(&gw, &node, &leased, answer("Streamed.")).await;
    let text = response.text().await.unwrap();
    let events: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("event: "))
        .collect();
    assert_eq!(events.first(), Some(&"response.created"));
    assert_eq!(events.last(), Some(&"response.completed"));
    assert!(events.contains(&"response.output_text.delta"), "{text}");
    assert!(text.contains("\"delta\":\"Streamed.\""), "{text}");
    assert!(
        text.contains(leased["id"].as_str().unwrap()),
        "the gateway's id: {text}"
    );
    assert!(!text.contains("[DONE]"), "{text}");

    // A finished response read with `?stream=true` replays the same events.
    let id = leased["id"].as_str().unwrap();
    let replayed = gw
        .http
        .get(gw.url(&format!("{RESPONSES}/{id}?stream=true")))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(replayed.ends_with("\n\n") && replayed.contains("event: response.completed"));
}

#[tokio::test]
async fn previous_response_id_expands_into_the_conversation_the_node_receives() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let (_, first) = create(
        &gw,
        &user,
        &json!({"model": "m", "input": "What is 2+2?", "background": true,
                "instructions": "Answer with a number."}),
    )
    .await;
    let first_id = first["id"].as_str().unwrap().to_owned();

    // Not finished yet: nothing to continue.
    let (status, early) = create(
        &gw,
        &user,
        &json!({"model": "m", "input": "And 3+3?", "previous_response_id": first_id}),
    )
    .await;
    assert_eq!(status, 400, "{early}");
    assert_eq!(early["error"]["param"], "previous_response_id");
    assert!(
        early["error"]["message"]
            .as_str()
            .unwrap()
            .contains("queued")
    );

    let leased = lease(&gw, &node, 0.0).await;
    finish(&gw, &node, &leased, answer("4")).await;

    let (status, second) = create(
        &gw,
        &user,
        &json!({"model": "m", "input": "And 3+3?", "previous_response_id": first_id,
                "background": true}),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["previous_response_id"], first_id.as_str());
    let leased = lease(&gw, &node, 0.0).await;
    let input = leased["request_payload"]["input"]
        .as_array()
        .unwrap()
        .clone();
    let texts: Vec<&str> = input
        .iter()
        .map(|item| item["content"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["What is 2+2?", "4", "And 3+3?"]);
    assert_eq!(input[1]["role"], "assistant");
    assert!(leased["request_payload"].get("instructions").is_none());

    // Another user cannot continue it, and an unknown id is named.
    let other = gw.key("user").await;
    for (key, previous) in [(&other, first_id.as_str()), (&user, "resp_nope")] {
        let (status, refused) = create(
            &gw,
            key,
            &json!({"model": "m", "input": "x", "previous_response_id": previous}),
        )
        .await;
        assert_eq!(status, 400, "{refused}");
        assert_eq!(refused["error"]["param"], "previous_response_id");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not found")
        );
    }
}

#[tokio::test]
async fn cancel_and_delete_end_a_response_and_input_items_page_through_its_input() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let (_, queued) = create(
        &gw,
        &user,
        &json!({"model": "m", "background": true, "input": [
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": [{"type": "input_text", "text": "three"}]}]}),
    )
    .await;
    let id = queued["id"].as_str().unwrap().to_owned();

    let (status, page) = gw
        .get_json(&user, &format!("{RESPONSES}/{id}/input_items?limit=2"))
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["object"], "list");
    assert_eq!(page["has_more"], true);
    let texts = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["content"][0]["text"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(texts(&page), ["three", "two"], "newest first by default");
    let after = page["last_id"].as_str().unwrap();
    let (_, rest) = gw
        .get_json(
            &user,
            &format!("{RESPONSES}/{id}/input_items?after={after}"),
        )
        .await;
    assert_eq!(texts(&rest), ["one"]);
    assert_eq!(rest["has_more"], false);
    let (_, ascending) = gw
        .get_json(&user, &format!("{RESPONSES}/{id}/input_items?order=asc"))
        .await;
    assert_eq!(texts(&ascending), ["one", "two", "three"]);
    assert_eq!(ascending["data"][0]["type"], "message");
    assert_eq!(ascending["data"][1]["content"][0]["type"], "output_text");

    let (status, cancelled) = gw
        .post_json(&user, &format!("{RESPONSES}/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(
        (status.as_u16(), &cancelled["status"]),
        (200, &json!("cancelled"))
    );
    assert!(
        lease(&gw, &node, 0.0).await.is_null(),
        "a cancelled response is not leased"
    );

    // A finished response cannot be cancelled.
    let worker = answer_in_background(&gw, &node, "done");
    let (_, done) = create(&gw, &user, &json!({"model": "m", "input": "x"})).await;
    worker.await.unwrap();
    let done_id = done["id"].as_str().unwrap();
    let (status, refused) = gw
        .post_json(&user, &format!("{RESPONSES}/{done_id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 409, "{refused}");

    // Delete: gone for every route, and a queued one is never leased.
    for target in [done_id.to_owned(), id.clone()] {
        let deleted = gw
            .http
            .delete(gw.url(&format!("{RESPONSES}/{target}")))
            .bearer_auth(&user)
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), 200);
        let body: Value = deleted.json().await.unwrap();
        assert_eq!(
            body,
            json!({"id": target, "object": "response", "deleted": true})
        );
        let (status, _) = gw.get_json(&user, &format!("{RESPONSES}/{target}")).await;
        assert_eq!(status, 404);
        let (status, _) = gw.get_json(&user, &format!("/v1/jobs/{target}")).await;
        assert_eq!(status, 404);
    }
    let (_, queued) = create(
        &gw,
        &user,
        &json!({"model": "m", "input": "x", "background": true}),
    )
    .await;
    let queued_id = queued["id"].as_str().unwrap();
    let deleted = gw
        .http
        .delete(gw.url(&format!("{RESPONSES}/{queued_id}")))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert!(
        lease(&gw, &node, 0.0).await.is_null(),
        "a deleted response is not leased"
    );
}

#[tokio::test]
async fn bad_responses_requests_name_their_field_and_store_nothing() {
    let gw = Gateway::start(&[]).await;
    let user = gw.key("user").await;
    for (body, param) in [
        (json!({"input": "x"}), "model"),
        (json!({"model": "m"}), "input"),
        (json!({"model": "m", "input": [1]}), "input[0]"),
        (
            json!({"model": "m", "input": "x", "background": 1}),
            "background",
        ),
        (
            json!({"model": "m", "input": "x", "max_output_tokens": -1}),
            "max_output_tokens",
        ),
    ] {
        let (status, refused) = create(&gw, &user, &body).await;
        assert_eq!(status, 400, "{body}: {refused}");
        assert_eq!(refused["error"]["type"], "invalid_request_error");
        assert_eq!(refused["error"]["param"], param, "{body}");
    }
    let (status, listed) = gw.get_json(&user, "/v1/jobs").await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"], json!([]), "nothing stored");
    let (status, bad) = gw
        .get_json(&user, &format!("{RESPONSES}/resp_x/input_items?order=up"))
        .await;
    assert_eq!(
        (status.as_u16(), &bad["error"]["param"]),
        (400, &json!("order"))
    );
}

#[tokio::test]
async fn a_response_takes_idempotency_priority_and_ttl_like_any_job() {
    let gw = Gateway::start(&[]).await;
    let user = gw.key("user").await;
    let body = json!({"model": "m", "input": "once", "background": true});
    let send = || {
        gw.http
            .post(gw.url(RESPONSES))
            .bearer_auth(&user)
            .header("Idempotency-Key", "resp-key-1")
            .header("X-OBB-Priority", "1")
            .header("X-OBB-TTL", "600")
            .json(&body)
            .send()
    };
    let first: Value = send().await.unwrap().json().await.unwrap();
    let again: Value = send().await.unwrap().json().await.unwrap();
    assert_eq!(
        first["id"], again["id"],
        "the same key and body: the same response"
    );
    let id = first["id"].as_str().unwrap();
    let job = gw.job(&user, id).await;
    assert_eq!(job["priority"], 1);
    assert_eq!(
        job["expires_at"].as_i64().unwrap() - job["created_at"].as_i64().unwrap(),
        600
    );
    // The same key for another request is refused.
    let reused = gw
        .http
        .post(gw.url("/v1/completions"))
        .bearer_auth(&user)
        .header("Idempotency-Key", "resp-key-1")
        .json(&json!({"model": "m", "prompt": "once"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), 422);
}

#[tokio::test]
async fn a_responses_batch_line_is_a_response_that_can_be_read_and_continued() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let line = json!({"custom_id": "r1", "method": "POST", "url": RESPONSES,
                      "body": {"model": "m", "input": "From a batch"}});
    let file = batches::upload(&gw, &user, format!("{line}\n"), "batch").await;
    let batch = batches::create_on(&gw, &user, &file, RESPONSES).await;
    let leased = answer_in_background(&gw, &node, "Batched.").await.unwrap();
    let id = leased["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("resp_"), "{id}");
    let done = batches::batch_until(&gw, &user, batch["id"].as_str().unwrap(), "completed").await;
    let mut lines = batches::content(&gw, &user, &done["output_file_id"]).await;
    assert_eq!(lines.len(), 1);
    let entry = lines.remove(0);
    assert_eq!(entry["response"]["body"]["id"], id.as_str(), "{entry}");
    let (status, read) = gw.get_json(&user, &format!("{RESPONSES}/{id}")).await;
    assert_eq!(
        (status.as_u16(), &read["status"]),
        (200, &json!("completed"))
    );
    let (status, next) = create(
        &gw,
        &user,
        &json!({"model": "m", "input": "More", "previous_response_id": id, "background": true}),
    )
    .await;
    assert_eq!(status, 200, "{next}");
}

#[tokio::test]
async fn a_held_create_whose_client_hangs_up_stops_waiting_at_once() {
    let gw = Gateway::start(&[("OBB_MAX_WAIT_SECONDS", "600")]).await;
    let user = gw.key("user").await;
    let before = gw.metric("obb_http_requests_in_flight", "").await;
    // Held (no `background`), then abandoned: the client's timeout closes the connection.
    let abandoned = gw
        .http
        .post(gw.url(RESPONSES))
        .bearer_auth(&user)
        .timeout(std::time::Duration::from_millis(300))
        .json(&json!({"model": "m", "input": "nobody waits for me"}))
        .send()
        .await;
    assert!(abandoned.is_err(), "held past the client's timeout");
    crate::harness::eventually(
        std::time::Duration::from_secs(10),
        "the abandoned request to end",
        || async {
            let now = gw.metric("obb_http_requests_in_flight", "").await;
            (now <= before).then_some(())
        },
    )
    .await;
    // The response itself stays queued for a node.
    let (_, jobs) = gw.get_json(&user, "/v1/jobs").await;
    assert_eq!(jobs["data"][0]["status"], "queued");
}
