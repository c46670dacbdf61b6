//! Live relay (issue 18): the test plays the node over HTTP, streaming frames to
//! `POST /internal/queue/stream` one by one, and reads the user's stream as it comes.

use crate::harness::{Gateway, eventually};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::mpsc;

pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub(crate) id: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) data: String,
}

/// A `text/event-stream` read as it arrives.
pub(crate) struct Sse {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<Bytes>> + Send>>,
    pending: String,
}

impl Sse {
    pub(crate) fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        Self {
            body: Box::pin(response.bytes_stream()),
            pending: String::new(),
        }
    }

    /// The next event (comments skipped), or `None` when the stream ends or `within` passes.
    pub(crate) async fn next(&mut self, within: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(at) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..at + 2).collect();
                let mut event = Event {
                    id: None,
                    name: None,
                    data: String::new(),
                };
                let mut comment_only = true;
                for line in block.lines() {
                    if let Some(id) = line.strip_prefix("id: ") {
                        event.id = Some(id.to_owned());
                    } else if let Some(name) = line.strip_prefix("event: ") {
                        event.name = Some(name.to_owned());
                    } else if let Some(data) = line.strip_prefix("data: ") {
                        event.data.push_str(data);
                    } else {
                        continue;
                    }
                    comment_only = false;
                }
                if !comment_only {
                    return Some(event);
                }
            }
            let read = tokio::time::timeout_at(deadline, self.body.next()).await;
            match read {
                Ok(Some(Ok(bytes))) => self.pending.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// Every event until the stream ends.
    pub(crate) async fn rest(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(event) = self.next(PATIENCE).await {
            events.push(event);
        }
        events
    }
}

/// A node's relay request, its body sent frame by frame.
pub(crate) struct NodeStream {
    frames: mpsc::UnboundedSender<Bytes>,
    answer: tokio::task::JoinHandle<(u16, Value)>,
}

impl NodeStream {
    pub(crate) fn open(gw: &Gateway, node: &str, job_id: &str, lease_id: &str) -> Self {
        let (frames, receiver) = mpsc::unbounded_channel::<Bytes>();
        let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
            let frame = receiver.recv().await?;
            Some((Ok::<_, std::io::Error>(frame), receiver))
        });
        let request = gw
            .http
            .post(gw.url("/internal/queue/stream"))
            .bearer_auth(node)
            .header("x-obb-job-id", job_id)
            .header("x-obb-lease-id", lease_id)
            .header("content-type", "application/x-ndjson")
            .body(reqwest::Body::wrap_stream(body));
        let answer = tokio::spawn(async move {
            let response = request.send().await.expect("relay request");
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        });
        Self { frames, answer }
    }

    pub(crate) fn send(&self, frame: Value) {
        let mut line = frame.to_string();
        line.push('\n');
        // The request may have been answered (a refusal) and its body dropped.
        let _ = self.frames.send(Bytes::from(line));
    }

    fn chunk(&self, seq: u64, content: &str) {
        self.send(json!({"seq": seq, "chunk": chunk(content)}));
    }

    /// Ends the body and returns the gateway's answer.
    pub(crate) async fn finish(self) -> (u16, Value) {
        drop(self.frames);
        tokio::time::timeout(PATIENCE, self.answer)
            .await
            .expect("the relay request is answered")
            .expect("relay task")
    }
}

fn chunk(content: &str) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
}

fn content_of(event: &Event) -> String {
    let data: Value = serde_json::from_str(&event.data).expect("chunk json");
    data["choices"][0]["delta"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A `stream: true` chat submit, answered as a stream, and its job once a node leased it.
async fn streamed_submit(gw: &Gateway, user: &str, node: &str) -> (Sse, Value) {
    let response = gw
        .submit(
            user,
            &json!({"model": "m", "stream": true,
                    "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    let job_id = response.headers()["x-obb-job-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let sse = Sse::new(response);
    let leased = gw.fetch(node, "n", &["m"], 1, 5.0).await;
    assert_eq!(leased[0]["id"], job_id.as_str());
    (sse, leased[0].clone())
}

async fn started(settings: &[(&str, &str)]) -> (Gateway, String, String) {
    // Keep-alives every second: a stream's headers go out at the first one.
    let mut all = vec![("OBB_STREAM_KEEPALIVE_SECONDS", "1")];
    all.extend_from_slice(settings);
    let gw = Gateway::start(&all).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    (gw, user, node)
}

#[tokio::test]
async fn a_stream_true_submit_gets_each_chunk_before_the_next_is_sent() {
    let (gw, user, node) = started(&[]).await;
    let (mut sse, job) = streamed_submit(&gw, &user, &node).await;
    assert_eq!(
        job["relay"], true,
        "a stream: true job is leased for relaying"
    );
    let id = job["id"].as_str().unwrap();
    let relay = NodeStream::open(&gw, &node, id, job["lease_id"].as_str().unwrap());
    for (seq, word) in ["Hel", "lo", "!"].iter().enumerate() {
        relay.chunk(seq as u64, word);
        // The client has chunk `seq` before the node sends the next one.
        let event = sse.next(PATIENCE).await.expect("a chunk");
        assert_eq!(event.id.as_deref(), Some(seq.to_string().as_str()));
        assert_eq!(content_of(&event), *word);
    }
    relay.send(json!({"seq": 3, "end": true}));
    let (status, ack) = relay.finish().await;
    assert_eq!(
        (status, ack),
        (200, json!({"outcome": "accepted", "next_seq": 3}))
    );
    assert_eq!(gw.complete(&node, &job, "Hello!").await, "accepted");
    let rest = sse.rest().await;
    assert_eq!(
        rest.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
        ["[DONE]"]
    );
    // The stored result is what the node submitted: poll does not care how it ran.
    let stored = gw.job(&user, id).await;
    assert_eq!(stored["status"], "completed");
    assert_eq!(
        stored["result"]["choices"][0]["message"]["content"],
        "Hello!"
    );

    // Within the linger, a client resumes after the chunk it last had.
    let resumed = gw
        .http
        .get(gw.url(&format!("/v1/jobs/{id}/stream?format=openai")))
        .bearer_auth(&user)
        .header("last-event-id", "0")
        .send()
        .await
        .unwrap();
    let events = Sse::new(resumed).rest().await;
    let ids: Vec<_> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, [Some("1".into()), Some("2".into()), None]);
    assert_eq!(events[2].data, "[DONE]");

    let events = gw
        .http
        .get(gw.url(&format!("/v1/jobs/{id}/stream?starting_after=1")))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    let events = Sse::new(events).rest().await;
    let names: Vec<_> = events.iter().map(|e| e.name.clone().unwrap()).collect();
    assert_eq!(names, ["chunk", "completed"]);
    assert_eq!(events[0].id.as_deref(), Some("2"));
    assert_eq!(content_of(&events[0]), "!");
}

#[tokio::test]
async fn the_job_stream_carries_chunk_events_while_the_job_runs() {
    let (gw, user, node) = started(&[]).await;
    let (_sse, job) = streamed_submit(&gw, &user, &node).await;
    let id = job["id"].as_str().unwrap();
    let mut events = Sse::new(
        gw.http
            .get(gw.url(&format!("/v1/jobs/{id}/stream")))
            .bearer_auth(&user)
            .send()
            .await
            .unwrap(),
    );
    let processing = events.next(PATIENCE).await.unwrap();
    assert_eq!(processing.name.as_deref(), Some("processing"));
    let relay = NodeStream::open(&gw, &node, id, job["lease_id"].as_str().unwrap());
    relay.chunk(0, "a");
    let first = events.next(PATIENCE).await.unwrap();
    assert_eq!(
        (first.name.as_deref(), first.id.as_deref()),
        (Some("chunk"), Some("0"))
    );
    relay.send(json!({"seq": 1, "end": true}));
    relay.finish().await;
    gw.complete(&node, &job, "a").await;
    let last = events.next(PATIENCE).await.unwrap();
    assert_eq!(last.name.as_deref(), Some("completed"));
}

#[tokio::test]
async fn a_chunk_of_a_superseded_lease_is_refused_stale_and_gaps_answer_next_seq() {
    let (gw, user, node) = started(&[]).await;
    let (_sse, job) = streamed_submit(&gw, &user, &node).await;
    let id = job["id"].as_str().unwrap();
    let stale = NodeStream::open(&gw, &node, id, "lease-not-this-one");
    stale.chunk(0, "x");
    assert_eq!(
        stale.finish().await,
        (200, json!({"outcome": "stale", "next_seq": 0}))
    );
    let relay = NodeStream::open(&gw, &node, id, job["lease_id"].as_str().unwrap());
    relay.chunk(0, "a");
    relay.chunk(0, "a");
    relay.chunk(2, "c");
    assert_eq!(
        relay.finish().await,
        (200, json!({"outcome": "gap", "next_seq": 1}))
    );
    // An end past a missing chunk is a gap too, not the stream's end.
    let early_end = NodeStream::open(&gw, &node, id, job["lease_id"].as_str().unwrap());
    early_end.send(json!({"seq": 3, "end": true}));
    assert_eq!(
        early_end.finish().await,
        (200, json!({"outcome": "gap", "next_seq": 1}))
    );
    // The node resends from `next_seq` on a new request.
    let again = NodeStream::open(&gw, &node, id, job["lease_id"].as_str().unwrap());
    again.chunk(1, "b");
    again.send(json!({"seq": 2, "end": true}));
    assert_eq!(
        again.finish().await,
        (200, json!({"outcome": "accepted", "next_seq": 2}))
    );
    // A cancelled job's relay is refused as cancelled.
    let (status, _) = gw
        .post_json(&user, &format!("/v1/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let late = NodeStream::open(&gw, &node, id, job["lease_id"].as_str().unwrap());
    late.chunk(2, "c");
    assert_eq!(late.finish().await.1["outcome"], "cancelled");
}

#[tokio::test]
async fn a_lapsed_lease_before_any_chunk_requeues_and_the_client_sees_only_keepalives() {
    let (gw, user, node) = started(&[("OBB_LEASE_SECONDS", "1")]).await;
    let (mut sse, first) = streamed_submit(&gw, &user, &node).await;
    let id = first["id"].as_str().unwrap().to_owned();
    // Opened, nothing sent, and no heartbeat: the lease lapses and the job is queued again.
    let silent = NodeStream::open(&gw, &node, &id, first["lease_id"].as_str().unwrap());
    let second = eventually(PATIENCE, "the job to be leased again", || async {
        gw.fetch(&node, "n2", &["m"], 1, 0.5)
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(second["attempt"], 2);
    let relay = NodeStream::open(&gw, &node, &id, second["lease_id"].as_str().unwrap());
    relay.chunk(0, "fresh");
    let event = sse.next(PATIENCE).await.unwrap();
    assert_eq!(content_of(&event), "fresh");
    silent.chunk(0, "old");
    assert_eq!(silent.finish().await.1["outcome"], "stale");
    relay.send(json!({"seq": 1, "end": true}));
    relay.finish().await;
    assert_eq!(gw.complete(&node, &second, "fresh").await, "accepted");
    assert_eq!(sse.rest().await.last().unwrap().data, "[DONE]");
}

#[tokio::test]
async fn a_lapsed_lease_after_a_chunk_fails_the_job_with_stream_interrupted() {
    let (gw, user, node) = started(&[("OBB_LEASE_SECONDS", "1"), ("OBB_MAX_ATTEMPTS", "3")]).await;
    let (mut sse, job) = streamed_submit(&gw, &user, &node).await;
    let id = job["id"].as_str().unwrap();
    let relay = NodeStream::open(&gw, &node, id, job["lease_id"].as_str().unwrap());
    relay.chunk(0, "partial");
    assert_eq!(content_of(&sse.next(PATIENCE).await.unwrap()), "partial");
    // The node dies: no heartbeat, no more chunks. The job is not retried.
    let rest = sse.rest().await;
    let error: Value = serde_json::from_str(&rest.last().unwrap().data).unwrap();
    assert_eq!(error["error"]["code"], "stream_interrupted", "{error}");
    let stored = gw.job(&user, id).await;
    assert_eq!(stored["status"], "failed");
    assert_eq!(stored["error"]["code"], "stream_interrupted");
    assert_eq!(stored["attempts"], 1);
    assert!(gw.fetch(&node, "n2", &["m"], 1, 0.0).await.is_empty());
    drop(relay);
}

#[tokio::test]
async fn a_retryable_failure_after_a_chunk_is_stored_failed_not_retried() {
    let (gw, user, node) = started(&[("OBB_MAX_ATTEMPTS", "3")]).await;
    let (mut sse, job) = streamed_submit(&gw, &user, &node).await;
    let id = job["id"].as_str().unwrap();
    let relay = NodeStream::open(&gw, &node, id, job["lease_id"].as_str().unwrap());
    relay.chunk(0, "partial");
    sse.next(PATIENCE).await.unwrap();
    let outcome = gw
        .report(
            &node,
            &json!([{"id": id, "lease_id": job["lease_id"], "status": "FAILED", "retryable": true,
                     "error": {"message": "the upstream's stream broke off", "type": "server_error",
                               "param": null, "code": "stream_interrupted"}}]),
        )
        .await;
    assert_eq!(outcome, "accepted");
    let stored = gw.job(&user, id).await;
    assert_eq!(
        (stored["status"].as_str(), stored["attempts"].as_u64()),
        (Some("failed"), Some(1))
    );
    let error: Value = serde_json::from_str(&sse.rest().await.last().unwrap().data).unwrap();
    assert_eq!(error["error"]["message"], "the upstream's stream broke off");
    drop(relay);
}

#[tokio::test]
async fn a_late_joiner_behind_the_buffer_gets_stream_resume_unavailable() {
    // Room for about two chunks per job.
    let (gw, user, node) = started(&[("OBB_STREAM_REPLAY_BYTES", "300")]).await;
    let (mut sse, job) = streamed_submit(&gw, &user, &node).await;
    let id = job["id"].as_str().unwrap();
    let relay = NodeStream::open(&gw, &node, id, job["lease_id"].as_str().unwrap());
    for seq in 0..6 {
        relay.chunk(seq, &format!("w{seq} "));
        sse.next(PATIENCE).await.expect("the live client keeps up");
    }
    let resumed = gw
        .http
        .get(gw.url(&format!(
            "/v1/jobs/{id}/stream?format=openai&starting_after=0"
        )))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    let events = Sse::new(resumed).rest().await;
    let error: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(error["error"]["code"], "stream_resume_unavailable");
    // A late joiner that has nothing yet gets the stored result whole at the end.
    let whole = gw
        .http
        .get(gw.url(&format!("/v1/jobs/{id}/stream?format=openai")))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    relay.send(json!({"seq": 6, "end": true}));
    relay.finish().await;
    gw.complete(&node, &job, "w0 w1 w2 w3 w4 w5 ").await;
    let events = Sse::new(whole).rest().await;
    let text: String = events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .map(content_of)
        .collect();
    assert_eq!(text, "w0 w1 w2 w3 w4 w5 ");
    assert_eq!(events.last().unwrap().data, "[DONE]");
}

#[tokio::test]
async fn bad_relay_and_resume_input_is_refused_in_the_openai_envelope() {
    let (gw, user, node) = started(&[]).await;
    let (_sse, job) = streamed_submit(&gw, &user, &node).await;
    let id = job["id"].as_str().unwrap();
    let missing = gw
        .http
        .post(gw.url("/internal/queue/stream"))
        .bearer_auth(&node)
        .body("{\"seq\":0}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    let body: Value = missing.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-obb-job-id")
    );
    let as_user = NodeStream::open(&gw, &user, id, job["lease_id"].as_str().unwrap());
    assert_eq!(as_user.finish().await.0, 403);
    let garbled = NodeStream::open(&gw, &node, id, job["lease_id"].as_str().unwrap());
    garbled.send(json!({"seq": "zero"}));
    let (status, body) = garbled.finish().await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    for (query, param) in [
        ("starting_after=soon", "starting_after"),
        ("starting_after=18446744073709551615", "starting_after"),
        ("format=xml", "format"),
    ] {
        let (status, body) = gw
            .get_json(&user, &format!("/v1/jobs/{id}/stream?{query}"))
            .await;
        assert_eq!(
            (status.as_u16(), body["error"]["param"].as_str()),
            (400, Some(param))
        );
    }
    // Nothing was changed by the refusals: the job still runs, and completes.
    assert_eq!(gw.complete(&node, &job, "fine").await, "accepted");
}

/// A `stream: true` chat submit with `headers`, its headers read.
async fn stream_with(gw: &Gateway, user: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let response = gw
        .submit_with(
            user,
            &json!({"model": "m", "stream": true,
                    "messages": [{"role": "user", "content": "hi"}]}),
            None,
            headers,
        )
        .await;
    assert_eq!(response.status(), 200);
    response
}

#[tokio::test]
async fn x_obb_progress_sends_obb_queue_events_while_queued_and_only_when_asked() {
    let (gw, user, node) = started(&[]).await;
    // One run of the model ended, so the gateway knows its pace.
    let first = gw.submit_id(&user, "m").await;
    let leased = gw.fetch(&node, "n", &["m"], 1, 5.0).await;
    assert_eq!(leased[0]["id"], first.as_str());
    gw.complete(&node, &leased[0], "done").await;

    let mut asked = Sse::new(stream_with(&gw, &user, &[("X-OBB-Progress", "true")]).await);
    let progress = asked.next(PATIENCE).await.unwrap();
    assert_eq!(progress.name.as_deref(), Some("obb.queue"));
    let data: Value = serde_json::from_str(&progress.data).unwrap();
    assert_eq!(data["object"], "obb.queue");
    assert_eq!(data["position"], 1);
    assert_eq!(data["priority"], 3);
    assert!(
        data["estimated_wait_seconds"].as_f64().unwrap() > 0.0,
        "{data}"
    );

    let mut silent = Sse::new(stream_with(&gw, &user, &[]).await);
    for job in gw.fetch(&node, "n", &["m"], 2, 5.0).await {
        let relay = NodeStream::open(
            &gw,
            &node,
            job["id"].as_str().unwrap(),
            job["lease_id"].as_str().unwrap(),
        );
        relay.chunk(0, "x");
        relay.send(json!({"seq": 1, "end": true}));
        relay.finish().await;
        gw.complete(&node, &job, "x").await;
    }
    let events = silent.rest().await;
    assert!(events.iter().all(|e| e.name.is_none()), "{events:?}");
    assert_eq!(events.last().unwrap().data, "[DONE]");
    assert_eq!(asked.rest().await.last().unwrap().data, "[DONE]");
    assert!(gw.metric("obb_stream_chunks_total", "").await >= 2.0);
}

#[tokio::test]
async fn x_obb_cancel_on_disconnect_cancels_and_leaving_alone_does_not() {
    let (gw, user, _node) = started(&[]).await;
    let job_of = |response: &reqwest::Response| {
        response.headers()["x-obb-job-id"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let kept = stream_with(&gw, &user, &[]).await;
    let kept_id = job_of(&kept);
    drop(kept);
    let left = stream_with(&gw, &user, &[("X-OBB-Cancel-On-Disconnect", "true")]).await;
    let left_id = job_of(&left);
    drop(left);
    eventually(
        PATIENCE,
        "the abandoned stream's job to be cancelled",
        || async { (gw.job(&user, &left_id).await["status"] == "cancelled").then_some(()) },
    )
    .await;
    assert_eq!(gw.job(&user, &kept_id).await["status"], "queued");

    // A held `?wait` submit whose client gives up cancels its job too.
    let held = gw
        .http
        .post(gw.url("/v1/chat/completions?wait=30"))
        .bearer_auth(&user)
        .header("X-OBB-Cancel-On-Disconnect", "true")
        .header("Idempotency-Key", "held-1")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(held.is_err(), "the client gave up first");
    let (_, list) = gw.get_json(&user, "/v1/jobs?limit=10").await;
    let held_id = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["id"] != kept_id.as_str() && job["id"] != left_id.as_str())
        .expect("the held job")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually(PATIENCE, "the held job to be cancelled", || async {
        (gw.job(&user, &held_id).await["status"] == "cancelled").then_some(())
    })
    .await;

    let refused = gw
        .submit_with(
            &user,
            &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
            None,
            &[("X-OBB-Progress", "sometimes")],
        )
        .await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["param"], "X-OBB-Progress");
    let (_, after) = gw.get_json(&user, "/v1/jobs?limit=10").await;
    assert_eq!(
        after["data"].as_array().unwrap().len(),
        3,
        "nothing was stored"
    );
}

#[tokio::test]
async fn the_official_python_sdk_reads_a_chat_stream_with_keepalives_between_its_chunks() {
    let (gw, user, node) = started(&[]).await;
    let script = r#"
import json, os, openai
client = openai.OpenAI(base_url=os.environ["BASE"] + "/v1", api_key=os.environ["KEY"])
stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                        stream=True)
print(json.dumps([chunk.choices[0].delta.content for chunk in stream]))
"#;
    let python = tokio::spawn(
        tokio::process::Command::new(testkit::installed::sdk_python())
            .args(["-c", script])
            .env("BASE", &gw.base)
            .env("KEY", &user)
            .output(),
    );
    let job = eventually(PATIENCE, "the job to be leased", || async {
        gw.fetch(&node, "n", &["m"], 1, 0.5)
            .await
            .into_iter()
            .next()
    })
    .await;
    let id = job["id"].as_str().unwrap();
    let relay = NodeStream::open(&gw, &node, id, job["lease_id"].as_str().unwrap());
    let before = gw.metric("obb_stream_keepalives_total", "").await;
    relay.chunk(0, "Hel");
    // Keep-alives (one a second) after a numbered chunk: the SDK's decoder keeps the last
    // id and would read a blank line after one as an event with no data.
    eventually(
        PATIENCE,
        "two keep-alives after the first chunk",
        || async {
            (gw.metric("obb_stream_keepalives_total", "").await >= before + 2.0).then_some(())
        },
    )
    .await;
    relay.chunk(1, "lo");
    relay.send(json!({"seq": 2, "end": true}));
    relay.finish().await;
    assert_eq!(gw.complete(&node, &job, "Hello").await, "accepted");
    let output = python.await.unwrap().expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let contents: Vec<Option<String>> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(contents, [Some("Hel".to_owned()), Some("lo".to_owned())]);
}
