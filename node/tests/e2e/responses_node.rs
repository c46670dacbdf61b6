//! `/v1/responses` jobs through the real gateway and a real `obb-node` whose upstream (the
//! mock) lacks the route: the node translates to chat completions, once finds the route
//! missing, and hands the gateway a `response` object.

use crate::stack;
use serde_json::{Value, json};
use std::time::Duration;
use testkit::{Gateway, NodeProcess};

/// `POST /v1/responses` in the background as `user`: the response's id.
async fn queue(gw: &Gateway, user: &str, body: Value) -> String {
    let (status, response) = gw.post_json(user, "/v1/responses", &body).await;
    assert!(status.is_success(), "{status}: {response}");
    response["id"].as_str().expect("response id").to_owned()
}

/// Runs `obb-node batch` until the queue holds nothing it serves, one job at a time: jobs
/// running together may each try `/v1/responses` before the first learns it is missing.
fn run_batch(gw: &Gateway, key: &str, upstream: &str) {
    let extra = "models = [\"m\"]\nconcurrency = 1";
    let mut node = NodeProcess::start(
        "batch",
        &NodeProcess::config(gw, key, "translator", Some(upstream), extra),
    );
    let status = node.wait(Duration::from_secs(60)).expect("batch exits");
    assert!(status.success(), "{}", node.log());
}

fn output_text(response: &Value) -> &str {
    response["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_jobs_on_an_upstream_without_the_route_are_translated_to_chat_once_found_missing()
{
    let (gw, user, key, mock) = stack(&[]).await;
    mock.set_responses_route(false);
    let first = queue(
        &gw,
        &user,
        json!({"model": "m", "input": "first", "background": true}),
    )
    .await;
    let second = queue(
        &gw,
        &user,
        json!({"model": "m", "input": "second", "background": true, "metadata": {"k": "v"}}),
    )
    .await;
    run_batch(&gw, &key, &mock.base_url());
    assert_eq!(
        mock.paths(),
        [
            "/v1/responses",
            "/v1/chat/completions",
            "/v1/chat/completions"
        ],
        "only the first job asked for /v1/responses"
    );
    for (id, text) in [(&first, "first"), (&second, "second")] {
        let (status, response) = gw.get_json(&user, &format!("/v1/responses/{id}")).await;
        assert_eq!(status, 200, "{response}");
        assert_eq!(response["object"], "response");
        assert_eq!(&response["id"], id.as_str());
        assert_eq!(response["status"], "completed", "{response}");
        assert_eq!(output_text(&response), format!("mock: {text}"));
        assert_eq!(response["usage"]["input_tokens"], 3);
    }

    // A follow-up turn: the gateway expands `previous_response_id` into items, and the
    // node sends the whole conversation to chat.
    let third = queue(
        &gw,
        &user,
        json!({"model": "m", "input": "third", "previous_response_id": first, "background": true}),
    )
    .await;
    run_batch(&gw, &key, &mock.base_url());
    let (_, sent) = mock.state.last_request.lock().unwrap().clone().unwrap();
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "mock: first"},
            {"role": "user", "content": "third"},
        ])
    );
    let (_, response) = gw.get_json(&user, &format!("/v1/responses/{third}")).await;
    assert_eq!(output_text(&response), "mock: third", "{response}");
    assert_eq!(response["previous_response_id"], first.as_str());
}

/// Two `stream: true` responses read by the official Python SDK as they come: one with
/// `responses.create(stream=True)`, each event with its arrival time (seconds from the
/// call), and one with the `responses.stream()` helper, which checks that the items of
/// its events and of its final response agree, and gives that final response.
async fn python_streams(gw: &Gateway, user: &str) -> Value {
    let script = r#"
import json, os, time, openai
client = openai.OpenAI(base_url=os.environ["BASE"] + "/v1", api_key=os.environ["KEY"])
start = time.monotonic()
events = []
for event in client.responses.create(model="m", input="hi", stream=True):
    seen = {"at": time.monotonic() - start, "type": event.type,
            "sequence_number": event.sequence_number}
    if event.type == "response.output_text.delta":
        seen["delta"] = event.delta
    if getattr(event, "response", None) is not None:
        seen["response"] = event.response.model_dump(mode="json", exclude_unset=True)
    events.append(seen)
with client.responses.stream(model="m", input="hi again") as stream:
    for _ in stream:
        pass
    final = stream.get_final_response()
print(json.dumps({"events": events, "final_text": final.output_text, "final_id": final.id}))
"#;
    let output = tokio::process::Command::new(testkit::installed::sdk_python())
        .args(["-c", script])
        .env("BASE", &gw.base)
        .env("KEY", user)
        .output()
        .await
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}

/// A response with what differs between two runs of the same request blanked: ids,
/// times, the text and the usage (the mock streams other words than it answers whole).
fn shape(mut response: Value) -> Value {
    for field in ["id", "created_at", "usage"] {
        response[field] = json!(format!("[{field}]"));
    }
    for item in response["output"].as_array_mut().into_iter().flatten() {
        item["id"] = json!("[item id]");
        for part in item["content"].as_array_mut().into_iter().flatten() {
            part["text"] = json!("[text]");
        }
    }
    response
}

/// Streams a response through a real node whose upstream has `/v1/responses` (`native`)
/// or not, with the mock's deltas 200 ms apart, and checks what the SDK saw and stored.
async fn a_streamed_response_arrives_as_the_upstream_makes_it(native: bool) {
    let (gw, user, key, mock) = stack(&[("OBB_STREAM_KEEPALIVE_SECONDS", "1")]).await;
    mock.set_responses_route(native);
    let gap = Duration::from_millis(200);
    mock.set_stream(6, gap);
    let _node = crate::run_node(
        &gw,
        &key,
        &mock,
        "live",
        "models = [\"m\"]\nconcurrency = 1",
    );
    let seen = python_streams(&gw, &user).await;
    let events = seen["events"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let deltas: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .collect();
    assert_eq!(
        types[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ],
        "{types:?}"
    );
    assert_eq!(types.last(), Some(&"response.completed"), "{types:?}");
    assert_eq!(deltas.len(), 6, "{types:?}");
    for (n, event) in events.iter().enumerate() {
        assert_eq!(
            event["sequence_number"], n,
            "numbered from 0 without gaps: {event}"
        );
    }
    // Live: the deltas arrive spread as the mock spread them, not together at the end
    // (with room for a busy machine: some may bunch while the SDK warms up).
    let at = |event: &Value| event["at"].as_f64().unwrap();
    let span = at(deltas[5]) - at(deltas[0]);
    assert!(
        span >= 0.5 * 5.0 * gap.as_secs_f64(),
        "deltas over {span} s: {events:?}"
    );
    let closed = at(events.last().unwrap()) - at(deltas[5]);
    assert!(
        closed < 1.0,
        "the closing event came {closed} s after the last delta"
    );
    let text: String = deltas
        .iter()
        .map(|d| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "t0 t1 t2 t3 t4 t5 ");

    // Every event that carries the response carries ours, and the last the stored one.
    let id = events[0]["response"]["id"].as_str().unwrap();
    assert!(id.starts_with("resp_") && !id.contains("mock"), "{id}");
    let completed = &events.last().unwrap()["response"];
    assert_eq!(completed["id"], id);
    let (_, stored) = gw.get_json(&user, &format!("/v1/responses/{id}")).await;
    assert_eq!(stored["output"][0]["content"][0]["text"], text.as_str());
    assert_eq!(stored["output"], completed["output"]);
    assert_eq!(stored["status"], "completed");
    assert_eq!(
        (
            seen["final_text"].as_str(),
            seen["final_id"].as_str().map(|f| f != id)
        ),
        (Some(text.as_str()), Some(true)),
        "the stream() helper's final response is its own run's, whole"
    );

    // The stored response has the shape a non-streamed run of the same request stores.
    let (status, whole) = gw
        .post_json(
            &user,
            "/v1/responses",
            &json!({"model": "m", "input": "hi"}),
        )
        .await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(shape(stored), shape(whole));
    let responses_calls = mock
        .paths()
        .iter()
        .filter(|p| *p == "/v1/responses")
        .count();
    assert_eq!(responses_calls > 1, native, "{:?}", mock.paths());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_response_relays_a_native_upstreams_events_as_they_come() {
    a_streamed_response_arrives_as_the_upstream_makes_it(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_response_on_a_chat_only_upstream_relays_translated_events_as_they_come() {
    a_streamed_response_arrives_as_the_upstream_makes_it(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_failing_after_its_first_deltas_ends_the_stream_with_response_failed_once() {
    let (gw, user, key, mock) = stack(&[("OBB_STREAM_KEEPALIVE_SECONDS", "1")]).await;
    mock.set_stream(4, Duration::from_millis(50));
    mock.push_stream_faults([testkit::mock::StreamFault::ErrorAfter(1)]);
    let _node = crate::run_node(
        &gw,
        &key,
        &mock,
        "live",
        "models = [\"m\"]\nconcurrency = 1",
    );
    let text = gw
        .http
        .post(gw.url("/v1/responses"))
        .bearer_auth(&user)
        .json(&json!({"model": "m", "input": "hi", "stream": true}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<Value> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).unwrap())
        .collect();
    let deltas: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(deltas, ["t0 ", "t1 "], "{text}");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.failed", "{text}");
    assert_eq!(last["sequence_number"], events.len() - 1);
    assert_eq!(
        last["response"]["error"]["code"], "stream_interrupted",
        "{last}"
    );
    // What was relayed cannot be taken back: the job is not tried again.
    let id = last["response"]["id"].as_str().unwrap();
    let job = gw.job(&user, id).await;
    assert_eq!(
        (&job["status"], &job["attempts"]),
        (&json!("failed"), &json!(1))
    );
    assert_eq!(mock.paths(), ["/v1/responses"]);
}
