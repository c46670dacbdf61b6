//! A `stream: true` response relayed live (issue 18, part 5): the test plays the node,
//! relaying item events with the upstream's numbers, and reads the user's event stream as
//! it comes. The gateway writes `response.created`, `response.in_progress` and the closing
//! event itself, under our `resp_…` id, and numbers every event from 0.

use crate::harness::Gateway;
use crate::relay::{Event, NodeStream, PATIENCE, Sse};
use crate::responses::{RESPONSES, answer, finish, lease};
use insta::assert_json_snapshot;
use serde_json::{Value, json};

/// The item events an upstream streams for the message `msg_up` saying "Hello", numbered
/// as that upstream numbers them (after its own two opening events).
fn upstream_items() -> Vec<Value> {
    let at = json!({"item_id": "msg_up", "output_index": 0, "content_index": 0});
    let with = |kind: &str, extra: Value| {
        let mut event = at.clone();
        event["type"] = json!(kind);
        for (key, value) in extra.as_object().unwrap() {
            event[key] = value.clone();
        }
        event
    };
    let message = |status: &str, content: Value| {
        json!({"type": "message", "id": "msg_up", "status": status, "role": "assistant",
               "content": content})
    };
    let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": []});
    let mut events = vec![
        json!({"type": "response.output_item.added", "output_index": 0,
               "item": message("in_progress", json!([]))}),
        with("response.content_part.added", json!({"part": part("")})),
        with(
            "response.output_text.delta",
            json!({"delta": "Hel", "logprobs": []}),
        ),
        with(
            "response.output_text.delta",
            json!({"delta": "lo", "logprobs": []}),
        ),
        with(
            "response.output_text.done",
            json!({"text": "Hello", "logprobs": []}),
        ),
        with("response.content_part.done", json!({"part": part("Hello")})),
        json!({"type": "response.output_item.done", "output_index": 0,
               "item": message("completed", json!([part("Hello")]))}),
    ];
    for (n, event) in events.iter_mut().enumerate() {
        event["sequence_number"] = json!(n + 2);
    }
    events
}

/// An event as the snapshot shows it: our ids and times redacted.
fn shown(event: &Event) -> Value {
    let mut data: Value = serde_json::from_str(&event.data).unwrap();
    if data["response"].is_object() {
        for field in ["id", "created_at"] {
            data["response"][field] = json!(format!("[{field}]"));
        }
    }
    json!({"id": event.id, "event": event.name, "data": data})
}

async fn started() -> (Gateway, String, String) {
    // Keep-alives every second: a stream's headers go out at the first one.
    let gw = Gateway::start(&[("OBB_STREAM_KEEPALIVE_SECONDS", "1")]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    (gw, user, node)
}

/// `POST /v1/responses` with `stream: true`, read as it comes, and its job as leased.
async fn streamed_create(gw: &Gateway, user: &str, node: &str) -> (Sse, Value) {
    let response = gw
        .http
        .post(gw.url(RESPONSES))
        .bearer_auth(user)
        .json(&json!({"model": "m", "input": "Say hello", "stream": true}))
        .send()
        .await
        .unwrap();
    let sse = Sse::new(response);
    let job = lease(gw, node, 5.0).await;
    assert_eq!(
        job["relay"], true,
        "a stream: true response is leased for relaying"
    );
    (sse, job)
}

/// Reads the stream's opening: `response.created` and `response.in_progress` under our id.
async fn opening(sse: &mut Sse, id: &str) -> Vec<Event> {
    let mut events = Vec::new();
    for (n, kind) in ["response.created", "response.in_progress"]
        .iter()
        .enumerate()
    {
        let event = sse.next(PATIENCE).await.expect("an opening event");
        let data: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(event.name.as_deref(), Some(*kind));
        assert_eq!(event.id.as_deref(), Some(n.to_string().as_str()));
        assert_eq!(
            (&data["type"], &data["sequence_number"]),
            (&json!(kind), &json!(n))
        );
        assert_eq!(
            (&data["response"]["id"], &data["response"]["status"]),
            (&json!(id), &json!("in_progress"))
        );
        events.push(event);
    }
    events
}

#[tokio::test]
async fn a_stream_true_response_relays_each_item_event_between_its_own_opening_and_closing() {
    let (gw, user, node) = started().await;
    let (mut sse, job) = streamed_create(&gw, &user, &node).await;
    let id = job["id"].as_str().unwrap();
    // The opening goes out before the node relays anything: the client has our id at once.
    let mut seen = opening(&mut sse, id).await;

    let relay = NodeStream::open(&gw, &node, id, job["lease_id"].as_str().unwrap());
    let items = upstream_items();
    for (seq, item) in items.iter().enumerate() {
        relay.send(json!({"seq": seq, "chunk": item}));
        // The client has each event before the node sends the next, renumbered after ours.
        let event = sse.next(PATIENCE).await.expect("an item event");
        let data: Value = serde_json::from_str(&event.data).unwrap();
        let number = seq as u64 + 2;
        assert_eq!(event.id, Some(number.to_string()));
        assert_eq!(
            event.name.as_ref(),
            item["type"].as_str().map(str::to_owned).as_ref()
        );
        assert_eq!(data["sequence_number"], number);
        let mut upstream = item.clone();
        upstream["sequence_number"] = json!(number);
        assert_eq!(
            data, upstream,
            "relayed as the upstream sent it but for its number"
        );
        seen.push(event);
    }
    relay.send(json!({"seq": items.len(), "end": true}));
    assert_eq!(relay.finish().await.1["outcome"], "accepted");
    finish(&gw, &node, &job, answer("Hello")).await;
    let rest = sse.rest().await;
    assert_eq!(rest.len(), 1, "only the closing event: {rest:?}");
    let closing: Value = serde_json::from_str(&rest[0].data).unwrap();
    assert_eq!(rest[0].name.as_deref(), Some("response.completed"));
    assert_eq!(closing["sequence_number"], 9);
    // The closing event carries the stored response, under our id, not the upstream's.
    let (_, stored) = gw.get_json(&user, &format!("{RESPONSES}/{id}")).await;
    assert_eq!(closing["response"], stored);
    assert_eq!(stored["id"], id);
    assert_eq!(stored["output"][0]["content"][0]["text"], "Hello");
    seen.extend(rest);
    let numbers: Vec<Option<String>> = seen.iter().map(|e| e.id.clone()).collect();
    let expected: Vec<Option<String>> = (0..10).map(|n| Some(n.to_string())).collect();
    assert_eq!(numbers, expected, "numbered from 0, without gaps");
    assert_json_snapshot!(
        "live_response_events",
        seen.iter().map(shown).collect::<Vec<_>>()
    );

    // Within the linger, a client resumes after the event it last had, by either name.
    let resumed = Sse::new(
        gw.http
            .get(gw.url(&format!("{RESPONSES}/{id}?stream=true")))
            .bearer_auth(&user)
            .header("last-event-id", "6")
            .send()
            .await
            .unwrap(),
    )
    .rest()
    .await;
    assert_eq!(resumed, seen[7..].to_vec());
    let resumed = Sse::new(
        gw.http
            .get(gw.url(&format!("{RESPONSES}/{id}?stream=true&starting_after=0")))
            .bearer_auth(&user)
            .send()
            .await
            .unwrap(),
    )
    .rest()
    .await;
    assert_eq!(resumed.len(), 9);
    assert_eq!(resumed[0].name.as_deref(), Some("response.in_progress"));
    assert_eq!(resumed[1..], seen[2..]);
}

#[tokio::test]
async fn a_lapsed_lease_after_an_item_event_ends_the_stream_with_response_failed_stream_interrupted()
 {
    let gw = Gateway::start(&[
        ("OBB_STREAM_KEEPALIVE_SECONDS", "1"),
        ("OBB_LEASE_SECONDS", "1"),
        ("OBB_MAX_ATTEMPTS", "3"),
    ])
    .await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let (mut sse, job) = streamed_create(&gw, &user, &node).await;
    let id = job["id"].as_str().unwrap();
    opening(&mut sse, id).await;
    let relay = NodeStream::open(&gw, &node, id, job["lease_id"].as_str().unwrap());
    relay.send(json!({"seq": 0, "chunk": upstream_items()[0]}));
    assert_eq!(
        sse.next(PATIENCE).await.unwrap().name.as_deref(),
        Some("response.output_item.added")
    );
    // The node dies: no heartbeat, no more events. The response fails, and is not retried.
    let rest = sse.rest().await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    let failed: Value = serde_json::from_str(&rest[0].data).unwrap();
    assert_eq!(rest[0].name.as_deref(), Some("response.failed"));
    assert_eq!(
        (rest[0].id.as_deref(), &failed["sequence_number"]),
        (Some("3"), &json!(3))
    );
    assert_eq!(failed["response"]["id"], id);
    assert_eq!(failed["response"]["status"], "failed");
    assert_eq!(
        failed["response"]["error"]["code"], "stream_interrupted",
        "{failed}"
    );
    assert_eq!(gw.job(&user, id).await["attempts"], 1);
    drop(relay);
}

#[tokio::test]
async fn a_relayed_response_whose_node_sent_no_item_is_replayed_after_the_opening() {
    let (gw, user, node) = started().await;
    let (mut sse, job) = streamed_create(&gw, &user, &node).await;
    let id = job["id"].as_str().unwrap();
    opening(&mut sse, id).await;
    // As a node does whose upstream answered whole: no item event, the response stored.
    finish(&gw, &node, &job, answer("Whole.")).await;
    let rest = sse.rest().await;
    let names: Vec<&str> = rest.iter().filter_map(|e| e.name.as_deref()).collect();
    assert_eq!(names.first(), Some(&"response.output_item.added"));
    assert_eq!(names.last(), Some(&"response.completed"));
    assert!(!names.contains(&"response.created"), "sent once: {names:?}");
    let numbers: Vec<String> = rest.iter().filter_map(|e| e.id.clone()).collect();
    let expected: Vec<String> = (2..2 + rest.len()).map(|n| n.to_string()).collect();
    assert_eq!(
        numbers, expected,
        "the replay goes on from the opening's numbers"
    );
    assert!(rest.iter().any(|e| e.data.contains("\"delta\":\"Whole.\"")));
}

#[tokio::test]
async fn the_official_python_sdk_reads_a_live_response_with_keepalives_between_its_numbered_events()
{
    let (gw, user, node) = started().await;
    let script = r#"
import json, os, openai
client = openai.OpenAI(base_url=os.environ["BASE"] + "/v1", api_key=os.environ["KEY"])
stream = client.responses.create(model="m", input="Say hello", stream=True)
print(json.dumps([[event.type, event.sequence_number] for event in stream]))
"#;
    let python = tokio::process::Command::new(testkit::installed::sdk_python())
        .args(["-c", script])
        .env("BASE", &gw.base)
        .env("KEY", &user)
        .output();
    let python = tokio::spawn(python);
    let job = lease(&gw, &node, 10.0).await;
    let id = job["id"].as_str().unwrap();
    let relay = NodeStream::open(&gw, &node, id, job["lease_id"].as_str().unwrap());
    let items = upstream_items();
    let before = gw.metric("obb_stream_keepalives_total", "").await;
    relay.send(json!({"seq": 0, "chunk": items[0]}));
    // Two keep-alives (one a second) fall after numbered events: the SDK must skip them.
    testkit::eventually(
        std::time::Duration::from_secs(20),
        "two keep-alives after the first event",
        || async {
            (gw.metric("obb_stream_keepalives_total", "").await >= before + 2.0).then_some(())
        },
    )
    .await;
    for (seq, item) in items.iter().enumerate().skip(1) {
        relay.send(json!({"seq": seq, "chunk": item}));
    }
    relay.send(json!({"seq": items.len(), "end": true}));
    relay.finish().await;
    finish(&gw, &node, &job, answer("Hello")).await;
    let output = python.await.unwrap().expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Vec<(String, u64)> = serde_json::from_slice(&output.stdout).unwrap();
    let numbers: Vec<u64> = seen.iter().map(|(_, n)| *n).collect();
    assert_eq!(numbers, (0..10).collect::<Vec<u64>>(), "{seen:?}");
    assert_eq!(seen[9].0, "response.completed");
}
