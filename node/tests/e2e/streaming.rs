//! Live streaming with real processes (issue 18): the real gateway, real `obb-node run`
//! processes relaying what the streaming mock upstream makes, and clients reading the SSE as
//! it arrives. Node kills are SIGKILLs; every wait is on a condition with a deadline.
//! `sse` reads the streams; `slow_client` holds one that reads nothing; `transport` covers
//! how a relay survives its way: resumes, a gateway restart, a cut request, a buffering proxy.

use crate::{run_node, stack};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use testkit::mock::{MockUpstream, StreamFault};
use testkit::{Gateway, NodeProcess, eventually};
use tokio::io::AsyncWriteExt;

mod slow_client;
mod sse;
mod transport;

pub(crate) use sse::{Event, Sse};

/// The longest wait for any one event.
const PATIENCE: Duration = Duration::from_secs(20);

/// The `[node]` settings of the nodes here: enough slots for every stream of a test.
const NODE: &str = "models = [\"m\"]\nconcurrency = 16\nbatch_size = 16";

/// A `stream: true` chat request (asking for the usage chunk) with `headers`; its job id and
/// its stream.
async fn stream_chat(
    gw: &Gateway,
    user: &str,
    message: &str,
    headers: &[(&str, &str)],
) -> (String, Sse) {
    let body = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": message}]});
    let response = gw.submit_with(user, &body, None, headers).await;
    let id = response.headers()["x-obb-job-id"]
        .to_str()
        .unwrap()
        .to_owned();
    (id, Sse::new(response))
}

/// The text chunks of `events`, in order.
fn contents(events: &[Event]) -> Vec<&Event> {
    events.iter().filter(|e| e.content().is_some()).collect()
}

fn joined(events: &[Event]) -> String {
    events.iter().filter_map(Event::content).collect()
}

/// `t0 t1 … t{n-1} `: what the mock streams.
fn mock_text(n: usize) -> String {
    (0..n).map(|i| format!("t{i} ")).collect()
}

/// The wall-clock microseconds the mock wrote a chunk at.
fn sent_us(event: &Event) -> u64 {
    event.json()["obb_sent_us"]
        .as_u64()
        .expect("every mock chunk carries obb_sent_us")
}

/// Reads `sse` until it holds `n` text chunks; the events read.
async fn read_chunks(sse: &mut Sse, n: usize) -> Vec<Event> {
    let mut events = Vec::new();
    while contents(&events).len() < n {
        let event = sse
            .next()
            .await
            .unwrap_or_else(|| panic!("the stream ended before {n} chunks: {events:?}"));
        events.push(event);
    }
    events
}

async fn final_job(gw: &Gateway, user: &str, id: &str) -> Value {
    eventually(PATIENCE, "the job to end", || async {
        let job = gw.job(user, id).await;
        matches!(job["status"].as_str(), Some("completed" | "failed")).then_some(job)
    })
    .await
}

/// Kills `node` with SIGKILL and waits until it is gone.
fn kill_9(node: &mut NodeProcess) {
    node.signal("-KILL");
    assert!(
        node.wait(Duration::from_secs(10)).is_some(),
        "the node died"
    );
}

/// Keep-alives every second, so that a stream's head goes out while the job waits.
async fn streaming_stack(settings: &[(&str, &str)]) -> (Gateway, String, String, MockUpstream) {
    let mut all = vec![("OBB_STREAM_KEEPALIVE_SECONDS", "1")];
    all.extend_from_slice(settings);
    stack(&all).await
}

#[tokio::test(flavor = "multi_thread")]
async fn chunks_reach_the_client_spread_over_time() {
    let (gw, user, key, mock) = streaming_stack(&[]).await;
    mock.set_stream(10, Duration::from_millis(100));
    let node = run_node(&gw, &key, &mock, "live", NODE);
    let (id, mut sse) = stream_chat(&gw, &user, "spread", &[]).await;
    let events = sse.rest().await;
    assert!(events.last().is_some_and(Event::is_done), "{events:?}");
    let texts = contents(&events);
    assert_eq!(joined(&events), mock_text(10), "{events:?}");
    let ids: Vec<Option<u64>> = events.iter().take(11).map(|e| e.id).collect();
    assert_eq!(
        ids,
        (0..11).map(Some).collect::<Vec<_>>(),
        "numbered from 0"
    );

    let (first, last) = (texts[0], texts[texts.len() - 1]);
    let sent = Duration::from_micros(sent_us(last) - sent_us(first));
    let arrived = last.at - first.at;
    assert!(
        arrived.as_secs_f64() >= 0.8 * sent.as_secs_f64(),
        "the mock spread its chunks over {sent:?}, the client got them over {arrived:?}"
    );

    let usage = events
        .iter()
        .map(Event::json)
        .find(|chunk| chunk["choices"] == json!([]) && chunk["usage"].is_object())
        .expect("the usage chunk asked for");
    let job = gw.job(&user, &id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["attempts"], 1);
    let result = &job["result"];
    assert_eq!(result["object"], "chat.completion", "{result}");
    assert_eq!(result["choices"][0]["message"]["content"], mock_text(10));
    assert_eq!(result["choices"][0]["message"]["role"], "assistant");
    assert_eq!(result["choices"][0]["finish_reason"], "stop");
    assert_eq!(result["usage"], usage["usage"], "{result}");
    assert_eq!(mock.calls(), 1);
    // The node's relay ended at once, with no resend: `[DONE]` follows the last chunk
    // about as soon as the job's result is stored.
    let done = events.last().unwrap().at - events[events.len() - 2].at;
    assert!(
        done < Duration::from_millis(500),
        "[DONE] came {done:?} after the last chunk"
    );
    assert!(!node.log().contains("WARN"), "{}", node.log());
    println!(
        "figures: chunks=10 mock_span_ms={} client_span_ms={} last_chunk_to_done_ms={}",
        sent.as_millis(),
        arrived.as_millis(),
        done.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_legacy_completions_stream_is_relayed_live_and_stored_as_a_text_completion() {
    let (gw, user, key, mock) = streaming_stack(&[]).await;
    mock.set_stream(10, Duration::from_millis(100));
    let _node = run_node(&gw, &key, &mock, "legacy", NODE);
    let response = gw
        .http
        .post(gw.url("/v1/completions"))
        .bearer_auth(&user)
        .json(&json!({"model": "m", "prompt": "Say", "stream": true,
                      "stream_options": {"include_usage": true}}))
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-obb-job-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let events = Sse::new(response).rest().await;
    assert!(events.last().is_some_and(Event::is_done), "{events:?}");
    assert!(
        events
            .iter()
            .filter(|e| !e.is_done())
            .all(|e| e.json()["object"] == "text_completion"),
        "{events:?}"
    );
    assert_eq!(joined(&events), mock_text(10));
    let texts = contents(&events);
    let sent = Duration::from_micros(sent_us(texts[9]) - sent_us(texts[0]));
    let arrived = texts[9].at - texts[0].at;
    assert!(
        arrived.as_secs_f64() >= 0.8 * sent.as_secs_f64(),
        "sent over {sent:?}, arrived over {arrived:?}: {events:?}"
    );
    let usage = events
        .iter()
        .map(Event::json)
        .find(|chunk| chunk["usage"].is_object())
        .expect("the usage chunk asked for");
    let job = gw.job(&user, &id).await;
    assert_eq!(job["status"], "completed", "{job}");
    let result = &job["result"];
    assert_eq!(result["object"], "text_completion", "{result}");
    assert_eq!(result["choices"][0]["text"], mock_text(10));
    assert_eq!(result["choices"][0]["finish_reason"], "stop");
    assert_eq!(result["usage"], usage["usage"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_before_the_first_chunk_requeues_and_the_client_gets_its_answer() {
    let (gw, user, key, mock) = streaming_stack(&[("OBB_LEASE_SECONDS", "2")]).await;
    mock.set_stream(5, Duration::from_millis(20));
    mock.hold_streams();
    let mut first = run_node(&gw, &key, &mock, "doomed", NODE);
    let (id, mut sse) = stream_chat(&gw, &user, "again", &[]).await;
    eventually(PATIENCE, "the first run's stream to be held", || async {
        (mock.streams_held() == 1).then_some(())
    })
    .await;
    kill_9(&mut first);
    let _second = run_node(&gw, &key, &mock, "rescuer", NODE);
    // The killed run's held stream stays counted until release: the rescuer's makes two.
    eventually(PATIENCE, "the rescuer's stream to be held", || async {
        (mock.calls() == 2 && mock.streams_held() == 2).then_some(())
    })
    .await;
    mock.release_streams();
    let events = sse.rest().await;
    assert!(events.last().is_some_and(Event::is_done), "{events:?}");
    assert!(
        events.iter().all(|e| e.error_code().is_none()),
        "{events:?}"
    );
    assert_eq!(joined(&events), mock_text(5), "{events:?}");
    assert!(sse.comments >= 1, "keep-alives while the job was requeued");
    let job = gw.job(&user, &id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    assert_eq!(
        job["result"]["choices"][0]["message"]["content"],
        mock_text(5)
    );
    assert_eq!(mock.calls(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_after_a_chunk_ends_the_stream_with_an_error_and_one_stored_outcome() {
    let (gw, user, key, mock) = streaming_stack(&[("OBB_LEASE_SECONDS", "2")]).await;
    mock.set_stream(50, Duration::from_millis(100));
    let mut first = run_node(&gw, &key, &mock, "doomed", NODE);
    let (id, mut sse) = stream_chat(&gw, &user, "doomed", &[]).await;
    let mut events = read_chunks(&mut sse, 2).await;
    kill_9(&mut first);
    let _second = run_node(&gw, &key, &mock, "bystander", NODE);
    events.extend(sse.rest().await);
    let last = events.last().expect("events");
    assert_eq!(
        last.error_code().as_deref(),
        Some("stream_interrupted"),
        "the stream ends with an error event: {events:?}"
    );
    assert!(!events.iter().any(Event::is_done), "{events:?}");
    let got = joined(&events);
    assert!(
        got.starts_with("t0 t1 ") && mock_text(50).starts_with(&got),
        "the chunks before the kill, in order: {got}"
    );

    let job = final_job(&gw, &user, &id).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "stream_interrupted", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    // The bystander node is up and leasing: it runs the next job, and never ran the first.
    mock.set_stream(1, Duration::ZERO);
    let (_, mut after) = stream_chat(&gw, &user, "after", &[]).await;
    assert!(after.rest().await.last().is_some_and(Event::is_done));
    assert_eq!(mock.chat_messages(), ["doomed", "after"]);
    assert_eq!(gw.job(&user, &id).await["status"], "failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_error_after_a_chunk_fails_the_job_without_retry() {
    let (gw, user, key, mock) = streaming_stack(&[("OBB_MAX_ATTEMPTS", "3")]).await;
    mock.set_stream(10, Duration::from_millis(20));
    mock.push_stream_faults([StreamFault::ErrorAfter(2)]);
    let _node = run_node(
        &gw,
        &key,
        &mock,
        "unlucky",
        &format!("{NODE}\nmax_retries = 3"),
    );
    let (id, mut sse) = stream_chat(&gw, &user, "break", &[]).await;
    let events = sse.rest().await;
    assert_eq!(joined(&events), "t0 t1 t2 ", "{events:?}");
    let last = events.last().expect("events");
    assert!(last.json()["error"].is_object(), "{events:?}");
    assert!(!events.iter().any(Event::is_done), "{events:?}");
    let job = final_job(&gw, &user, &id).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "not retried: {job}");
    assert_eq!(
        last.json()["error"]["message"],
        job["error"]["message"],
        "the client got the stored error: {job}"
    );
    assert_eq!(mock.calls(), 1, "not asked again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_mid_stream_cancels_the_run_only_when_it_asked() {
    let (gw, user, key, mock) = streaming_stack(&[("OBB_LEASE_SECONDS", "3")]).await;
    mock.set_stream(20, Duration::from_millis(50));
    let node = run_node(&gw, &key, &mock, "left", NODE);
    let (kept, mut sse) = stream_chat(&gw, &user, "kept", &[]).await;
    read_chunks(&mut sse, 2).await;
    drop(sse);
    let job = final_job(&gw, &user, &kept).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(
        job["result"]["choices"][0]["message"]["content"],
        mock_text(20)
    );

    mock.set_stream(200, Duration::from_millis(50));
    let (id, mut sse) = stream_chat(
        &gw,
        &user,
        "cancelled",
        &[("X-OBB-Cancel-On-Disconnect", "true")],
    )
    .await;
    read_chunks(&mut sse, 2).await;
    drop(sse);
    eventually(PATIENCE, "the job to be cancelled", || async {
        (gw.job(&user, &id).await["status"] == "cancelled").then_some(())
    })
    .await;
    // The node hears it at its next heartbeat and stops the run, and so the upstream call.
    eventually(PATIENCE, "the node to stop the run", || async {
        node.log()
            .contains("aborted: the job was cancelled or its lease lost")
            .then_some(())
    })
    .await;
    assert_eq!(gw.job(&user, &id).await["status"], "cancelled");
    assert_eq!(mock.calls(), 2);
}
