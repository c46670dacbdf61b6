//! Live streaming with real processes (issue 18): the real gateway, real `obb-node run`
//! processes relaying what the streaming mock upstream makes, and clients reading the SSE as
//! it arrives. Node kills are SIGKILLs; every wait is on a condition with a deadline.

use crate::{run_node, stack};
use reqwest::Response;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use testkit::mock::{MockUpstream, StreamFault};
use testkit::{Gateway, NodeProcess, eventually};
use tokio::io::AsyncWriteExt;

/// The longest wait for any one event.
const PATIENCE: Duration = Duration::from_secs(20);

/// The `[node]` settings of the nodes here: enough slots for every stream of a test.
const NODE: &str = "models = [\"m\"]\nconcurrency = 16\nbatch_size = 16";

/// One server-sent event and when its last byte arrived.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub id: Option<u64>,
    pub name: Option<String>,
    pub data: String,
    pub at: Instant,
}

impl Event {
    /// The event's data as JSON (`Null` for `[DONE]`).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }

    /// The text a chat chunk adds, if it adds any.
    pub fn content(&self) -> Option<String> {
        let chunk = self.json();
        let text = chunk["choices"][0]["delta"]["content"]
            .as_str()
            .or_else(|| chunk["choices"][0]["text"].as_str())?;
        (!text.is_empty()).then(|| text.to_owned())
    }

    pub fn is_done(&self) -> bool {
        self.data == "[DONE]"
    }

    pub fn error_code(&self) -> Option<String> {
        self.json()["error"]["code"].as_str().map(str::to_owned)
    }
}

/// A `text/event-stream` read as it arrives; comments (keep-alives) are counted, not returned.
pub(crate) struct Sse {
    response: Response,
    pending: String,
    pub comments: usize,
}

impl Sse {
    pub fn new(response: Response) -> Self {
        assert_eq!(response.status(), 200, "a stream is answered 200");
        let kind = response.headers()["content-type"].to_str().unwrap_or("");
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        Self {
            response,
            pending: String::new(),
            comments: 0,
        }
    }

    /// The rest of `response`, of which `read` was read already.
    pub fn continuing(response: Response, read: String) -> Self {
        Self {
            response,
            pending: read,
            comments: 0,
        }
    }

    /// The next event, or `None` when the stream ends.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            while let Some(at) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..at + 2).collect();
                let mut event = Event {
                    id: None,
                    name: None,
                    data: String::new(),
                    at: Instant::now(),
                };
                let mut comment = true;
                for line in block.lines() {
                    if let Some(id) = line.strip_prefix("id: ") {
                        event.id = id.parse().ok();
                    } else if let Some(name) = line.strip_prefix("event: ") {
                        event.name = Some(name.to_owned());
                    } else if let Some(data) = line.strip_prefix("data: ") {
                        event.data.push_str(data);
                    } else {
                        continue;
                    }
                    comment = false;
                }
                if comment {
                    self.comments += 1;
                } else {
                    return Some(event);
                }
            }
            let read = tokio::time::timeout(PATIENCE, self.response.chunk()).await;
            match read.expect("an event, a keep-alive or the end within the patience") {
                Ok(Some(bytes)) => self.pending.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(None) => return None,
                Err(e) => panic!("the stream broke: {e}"),
            }
        }
    }

    /// Every event until the stream ends.
    pub async fn rest(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

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

/// The bytes the loopback connection from local port `from` to port `to` has sent but the
/// other end has not yet taken (`tx_queue` in `/proc/net/tcp`).
fn unsent_bytes(from: u16, to: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port = |address: &str| {
        address
            .rsplit(':')
            .next()
            .and_then(|hex| u16::from_str_radix(hex, 16).ok())
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let ours = port(fields.get(1)?)? == from && port(fields.get(2)?)? == to;
            let queue = fields.get(4)?.split(':').next()?;
            ours.then(|| u64::from_str_radix(queue, 16).ok())?
        })
        .sum()
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
async fn a_slow_client_does_not_slow_other_streams() {
    let (gw, user, key, mock) = streaming_stack(&[]).await;
    let _node = run_node(&gw, &key, &mock, "busy", NODE);
    // The slow client's answer is large (about 300 KB) and sent at once, so the gateway's
    // writes to it block as soon as the socket buffers are full.
    mock.set_stream(1000, Duration::ZERO);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let address = gw.base.trim_start_matches("http://").parse().unwrap();
    let mut slow = socket.connect(address).await.unwrap();
    let body = json!({"model": "m", "stream": true,
                      "messages": [{"role": "user", "content": "slow"}]})
    .to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {user}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    slow.write_all(request.as_bytes()).await.unwrap();
    let (gateway_port, slow_port) = (address.port(), slow.local_addr().unwrap().port());
    // The premise: the gateway has more for the slow client than its socket takes.
    let backlog = eventually(
        PATIENCE,
        "the slow client's connection to back up",
        || async {
            let unsent = unsent_bytes(gateway_port, slow_port);
            (mock.calls() == 1 && unsent > 0).then_some(unsent)
        },
    )
    .await;

    let gap = Duration::from_millis(20);
    mock.set_stream(20, gap);
    let readers: Vec<_> = (0..10)
        .map(|i| {
            let (http, url, user) = (
                gw.http.clone(),
                gw.url("/v1/chat/completions"),
                user.clone(),
            );
            tokio::spawn(async move {
                let body = json!({"model": "m", "stream": true,
                                  "messages": [{"role": "user", "content": format!("fast {i}")}]});
                let response = http
                    .post(url)
                    .bearer_auth(user)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let id = response.headers()["x-obb-job-id"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                (id, Sse::new(response).rest().await)
            })
        })
        .collect();
    let (mut gaps, mut sent_gaps, mut fast) = (Vec::new(), Vec::new(), Vec::new());
    for reader in readers {
        let (id, events) = reader.await.unwrap();
        fast.push(id);
        assert!(events.last().is_some_and(Event::is_done), "{events:?}");
        assert_eq!(joined(&events), mock_text(20), "whole and in order");
        assert!(
            events.iter().all(|e| e.json()["choices"] != json!([])),
            "no usage chunk, as none was asked for: {events:?}"
        );
        let texts = contents(&events);
        gaps.extend(texts.windows(2).map(|pair| pair[1].at - pair[0].at));
        sent_gaps.extend(
            texts
                .windows(2)
                .map(|pair| Duration::from_micros(sent_us(pair[1]) - sent_us(pair[0]))),
        );
    }
    let p99 = |gaps: &mut Vec<Duration>| {
        gaps.sort();
        gaps[(gaps.len() * 99).div_ceil(100) - 1]
    };
    // Against the gaps the mock really left (its timer runs late on a busy machine too).
    let (p99, sent_p99) = (p99(&mut gaps), p99(&mut sent_gaps));
    assert!(
        p99 <= sent_p99.max(gap) + Duration::from_millis(50),
        "p99 gap between chunks {p99:?} with a slow client (the mock's: {gap:?}, p99 {sent_p99:?})"
    );

    let (_, listed) = gw.get_json(&user, "/v1/jobs?limit=20").await;
    let slow_ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|job| job["id"].as_str())
        .filter(|id| !fast.iter().any(|f| f == id))
        .collect();
    assert_eq!(slow_ids.len(), 1, "{listed}");
    let job = final_job(&gw, &user, slow_ids[0]).await;
    assert_eq!(
        job["status"], "completed",
        "the slow client's run was not held back: {job}"
    );
    assert_eq!(
        job["result"]["choices"][0]["message"]["content"],
        mock_text(1000)
    );
    drop(slow);
    println!(
        "figures: streams=10 chunks=20 gap_ms=20 p99_gap_ms={} mock_p99_gap_ms={} max_gap_ms={} slow_client_backlog_bytes={backlog}",
        p99.as_millis(),
        sent_p99.as_millis(),
        gaps.last().unwrap().as_millis()
    );
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

#[tokio::test(flavor = "multi_thread")]
async fn a_job_stream_and_a_resumed_openai_stream_get_the_same_chunks() {
    let (gw, user, key, mock) = streaming_stack(&[]).await;
    mock.set_stream(20, Duration::from_millis(100));
    let _node = run_node(&gw, &key, &mock, "watched", NODE);
    let (id, mut posted) = stream_chat(&gw, &user, "watched", &[]).await;
    let post = tokio::spawn(async move { posted.rest().await });
    let response = gw
        .http
        .get(gw.url(&format!("/v1/jobs/{id}/stream")))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    let mut watched = Sse::new(response);
    let mut job_events = Vec::new();
    while job_events
        .iter()
        .filter(|e: &&Event| e.name.as_deref() == Some("chunk"))
        .count()
        < 4
    {
        job_events.push(watched.next().await.expect("the job stream goes on"));
    }
    let response = gw
        .http
        .get(gw.url(&format!("/v1/jobs/{id}/stream?format=openai")))
        .bearer_auth(&user)
        .header("Last-Event-ID", "1")
        .send()
        .await
        .unwrap();
    let resumed = Sse::new(response).rest().await;
    job_events.extend(watched.rest().await);
    let posted = post.await.unwrap();

    assert!(posted.last().is_some_and(Event::is_done), "{posted:?}");
    assert!(resumed.last().is_some_and(Event::is_done), "{resumed:?}");
    let numbered = |events: &[Event]| -> Vec<(u64, String)> {
        events
            .iter()
            .filter_map(|e| Some((e.id?, e.data.clone())))
            .collect()
    };
    let all = numbered(&posted);
    let from_2: Vec<(u64, String)> = all.iter().filter(|(n, _)| *n >= 2).cloned().collect();
    assert_eq!(
        numbered(&resumed),
        from_2,
        "the resumed stream is the POST's from chunk 2"
    );
    assert!(
        resumed.iter().all(|e| e.name.is_none()),
        "OpenAI's unnamed events"
    );
    let chunks: Vec<Event> = job_events
        .iter()
        .filter(|e| e.name.as_deref() == Some("chunk"))
        .cloned()
        .collect();
    assert_eq!(
        numbered(&chunks),
        all,
        "`chunk` events carry the same ids and data"
    );
    assert_eq!(
        job_events.last().and_then(|e| e.name.as_deref()),
        Some("completed")
    );
    assert_eq!(joined(&resumed), mock_text(20)[6..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn append_mode_relays_through_a_buffering_proxy() {
    let (gw, user, key, mock) = streaming_stack(&[]).await;
    mock.set_stream(10, Duration::from_millis(100));
    // nginx with its defaults: request bodies buffered whole before they are passed on.
    let address = gw.base.trim_start_matches("http://").to_owned();
    let nginx = testkit::Nginx::start(|port| {
        format!(
            "server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://{address}; proxy_http_version 1.1; proxy_buffering off; }} }}"
        )
    })
    .await;
    let proxied = nginx.url("").replacen("https://", "http://", 1);
    let _node = NodeProcess::start(
        "run",
        &format!(
            "[server]\nurl = \"{proxied}\"\napi_key = \"{key}\"\n\n[llm]\nbase_url = \"{}\"\napi_key = \"mock-key\"\n\n[node]\nname = \"appender\"\nfetch_wait_seconds = 2\nretry_backoff_ms = 20\nrelay = \"append\"\n{NODE}\n",
            mock.base_url()
        ),
    );
    let (id, mut sse) = stream_chat(&gw, &user, "appended", &[]).await;
    let events = sse.rest().await;
    assert!(events.last().is_some_and(Event::is_done), "{events:?}");
    assert_eq!(joined(&events), mock_text(10));
    let texts = contents(&events);
    let (first, last) = (texts[0], texts[texts.len() - 1]);
    let sent = Duration::from_micros(sent_us(last) - sent_us(first));
    let arrived = last.at - first.at;
    assert!(
        arrived.as_secs_f64() >= 0.8 * sent.as_secs_f64(),
        "sent over {sent:?}, arrived over {arrived:?}"
    );
    let job = gw.job(&user, &id).await;
    assert_eq!(
        job["result"]["choices"][0]["message"]["content"],
        mock_text(10)
    );
    let access = std::fs::read_to_string(nginx.dir().join("access.log")).unwrap_or_default();
    let appends = access.matches("POST /internal/queue/stream").count();
    assert!(
        appends >= 5,
        "the relay went through nginx in short appends: {appends}\n{access}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_restart_mid_stream_is_resumed_by_last_event_id() {
    let (mut gw, user, key, mock) = streaming_stack(&[]).await;
    mock.set_stream(30, Duration::from_millis(100));
    let _node = run_node(&gw, &key, &mock, "steady", NODE);
    let (id, mut sse) = stream_chat(&gw, &user, "restarted", &[]).await;
    let before = read_chunks(&mut sse, 3).await;
    let seen = contents(&before).last().unwrap().id.unwrap();
    // The replay buffer is memory: the node's relay, reopened after the restart, refills it.
    gw.stop_with("-TERM");
    gw.spawn().await;
    drop(sse);
    let response = gw
        .http
        .get(gw.url(&format!("/v1/jobs/{id}/stream?format=openai")))
        .bearer_auth(&user)
        .header("Last-Event-ID", seen.to_string())
        .send()
        .await
        .unwrap();
    let after = Sse::new(response).rest().await;
    assert!(after.last().is_some_and(Event::is_done), "{after:?}");
    let ids: Vec<u64> = after.iter().filter_map(|e| e.id).collect();
    assert_eq!(ids.first(), Some(&(seen + 1)), "{after:?}");
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    let text = format!("{}{}", joined(&before), joined(&after));
    assert_eq!(text, mock_text(30), "nothing lost or repeated");
    let job = final_job(&gw, &user, &id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    assert_eq!(
        job["result"]["choices"][0]["message"]["content"],
        mock_text(30)
    );
    assert_eq!(mock.calls(), 1);
}

/// A loopback proxy from the node to the gateway that cuts, once, the connection carrying
/// the first relay request, right after it forwarded the frame `{"seq":3,…}`. Returns its URL
/// and whether it has cut.
async fn cutting_proxy(gateway: &str) -> (String, Arc<AtomicBool>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let gateway = gateway.trim_start_matches("http://").to_owned();
    let cut = Arc::new(AtomicBool::new(false));
    let has_cut = Arc::clone(&cut);
    // Lives as long as the test's runtime.
    tokio::spawn(async move {
        while let Ok((node, _)) = listener.accept().await {
            let (gateway, cut) = (gateway.clone(), Arc::clone(&cut));
            tokio::spawn(async move {
                let upstream = tokio::net::TcpStream::connect(&gateway).await.unwrap();
                let (mut node_read, mut node_write) = node.into_split();
                let (mut gw_read, mut gw_write) = upstream.into_split();
                let back = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut gw_read, &mut node_write).await;
                });
                let (mut buffer, mut seen) = (vec![0; 16 * 1024], String::new());
                loop {
                    let n = match node_read.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if gw_write.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                    if cut.load(Ordering::SeqCst) {
                        continue;
                    }
                    seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
                    if let Some(at) = seen.find("POST /internal/queue/stream") {
                        seen.drain(..at);
                        if seen.contains("{\"seq\":3,") && !cut.swap(true, Ordering::SeqCst) {
                            back.abort();
                            return;
                        }
                    } else {
                        let keep = seen.len().saturating_sub(64);
                        seen.drain(..keep);
                    }
                }
                let _ = back.await;
            });
        }
    });
    (url, has_cut)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_request_cut_mid_way_is_resent_and_the_client_gets_each_chunk_once() {
    let (gw, user, key, mock) = streaming_stack(&[]).await;
    mock.set_stream(10, Duration::from_millis(100));
    let (proxy, cut) = cutting_proxy(&gw.base).await;
    let node = NodeProcess::start(
        "run",
        &format!(
            "[server]\nurl = \"{proxy}\"\napi_key = \"{key}\"\n\n[llm]\nbase_url = \"{}\"\napi_key = \"mock-key\"\n\n[node]\nname = \"cut\"\nfetch_wait_seconds = 2\nretry_backoff_ms = 20\n{NODE}\n",
            mock.base_url()
        ),
    );
    let (id, mut sse) = stream_chat(&gw, &user, "cut", &[]).await;
    let events = sse.rest().await;
    assert!(
        events.last().is_some_and(Event::is_done),
        "{events:?}\n{}",
        node.log()
    );
    let ids: Vec<u64> = events.iter().filter_map(|e| e.id).collect();
    assert_eq!(ids, (0..ids.len() as u64).collect::<Vec<_>>(), "{events:?}");
    assert_eq!(joined(&events), mock_text(10), "each chunk once, in order");
    let job = gw.job(&user, &id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(
        job["result"]["choices"][0]["message"]["content"],
        mock_text(10)
    );
    assert!(cut.load(Ordering::SeqCst), "the relay request was cut");
    assert_eq!(mock.calls(), 1);
    assert!(!node.log().contains("broke too often"), "{}", node.log());
}
