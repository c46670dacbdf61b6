//! The relay against a small fake of the gateway's route on loopback: it reads the chunked
//! NDJSON body as it comes, reports each frame to the test, and answers as scripted.

use super::super::streamed;
use super::*;
use crate::config::ServerSection;
use crate::upstream::{RetryPolicy, UpstreamClient};
use openbeepboop::Endpoint;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;
use testkit::mock::MockUpstream;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// How the fake answers one connection.
#[derive(Debug, Clone, Copy)]
enum Script {
    /// Takes every frame in order and answers `accepted` when the body ends.
    Accept,
    /// Loses the frame with this `seq`, and answers `gap` when the body ends.
    Lose(u64),
    /// Answers 404 at once, as a gateway that predates the route.
    NotFound,
    /// Closes the connection once the head is read.
    Reset,
    /// Answers `stale` once the first frame is read, leaving the rest of the body unread,
    /// as the gateway does for a lease that is no longer current.
    Stale,
}

/// A frame as the fake read it: on which connection, when, in which body, and the frame.
#[derive(Debug)]
struct Seen {
    connection: usize,
    at: SystemTime,
    chunked: bool,
    frame: Value,
}

struct FakeGateway {
    url: String,
    seen: mpsc::UnboundedReceiver<Seen>,
    connections: Arc<AtomicUsize>,
}

impl FakeGateway {
    /// Answers connection `i` as `scripts[i]`, and later ones as the last script.
    async fn start(scripts: Vec<Script>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (report, seen) = mpsc::unbounded_channel();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&connections);
        // As the gateway's, per job: kept across requests.
        let next_seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let connection = count.fetch_add(1, Ordering::SeqCst);
                let script = scripts[connection.min(scripts.len() - 1)];
                let report = report.clone();
                let next_seq = Arc::clone(&next_seq);
                tokio::spawn(async move {
                    let _ = serve(socket, connection, script, report, &next_seq).await;
                });
            }
        });
        Self {
            url,
            seen,
            connections,
        }
    }

    /// The next frame the fake read, within 5 s.
    async fn next(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(5), self.seen.recv())
            .await
            .expect("a frame within 5 s")
            .expect("the fake runs")
    }
}

async fn serve(
    socket: tokio::net::TcpStream,
    connection: usize,
    script: Script,
    report: mpsc::UnboundedSender<Seen>,
    next_seq: &std::sync::atomic::AtomicU64,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(socket);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        if line.trim_end().is_empty() {
            break;
        }
        head.push(line.trim_end().to_ascii_lowercase());
    }
    assert_eq!(head[0], "post /internal/queue/stream http/1.1");
    for header in [
        "authorization: bearer node-key",
        "x-obb-job-id: job-1",
        "x-obb-lease-id: lease-1",
        "content-type: application/x-ndjson",
    ] {
        assert!(head.iter().any(|h| h == header), "{header} in {head:?}");
    }
    let chunked = head.iter().any(|h| h == "transfer-encoding: chunked");
    let length = head
        .iter()
        .find_map(|h| h.strip_prefix("content-length: "))
        .map(|n| n.parse::<usize>().unwrap());
    assert!(chunked != length.is_some(), "chunked or sized: {head:?}");
    let answer = |status: &str, body: Value| {
        let body = body.to_string();
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let lost = match script {
        Script::Reset => return Ok(()),
        Script::NotFound => {
            let body = json!({"error": {"message": "not found", "type": "invalid_request_error"}});
            let text = answer("404 Not Found", body);
            return reader.get_mut().write_all(text.as_bytes()).await;
        }
        Script::Accept | Script::Stale => None,
        Script::Lose(seq) => Some(seq),
    };
    let mut pending = Vec::new();
    let mut done = false;
    while !done {
        // A chunk of a chunked body, as it comes; or the whole sized body at once.
        let size = match length {
            Some(length) => {
                done = true;
                length
            }
            None => {
                let mut size = String::new();
                reader.read_line(&mut size).await?;
                usize::from_str_radix(size.trim(), 16).unwrap()
            }
        };
        let mut data = vec![0; size + if chunked { 2 } else { 0 }];
        reader.read_exact(&mut data).await?;
        if size == 0 {
            break;
        }
        pending.extend_from_slice(&data[..size]);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let frame: Value = serde_json::from_slice(&line).unwrap();
            let seq = frame["seq"].as_u64().unwrap();
            // As the gateway: the end frame names the next `seq` without taking it.
            let chunk = frame.get("chunk").is_some();
            if chunk && seq == next_seq.load(Ordering::SeqCst) && lost != Some(seq) {
                next_seq.fetch_add(1, Ordering::SeqCst);
            }
            let at = SystemTime::now();
            let _ = report.send(Seen {
                connection,
                at,
                chunked,
                frame,
            });
            if matches!(script, Script::Stale) {
                let text = answer("200 OK", json!({"outcome": "stale", "next_seq": 0}));
                return reader.get_mut().write_all(text.as_bytes()).await;
            }
        }
    }
    let outcome = if lost.is_some() { "gap" } else { "accepted" };
    let next_seq = next_seq.load(Ordering::SeqCst);
    let text = answer("200 OK", json!({"outcome": outcome, "next_seq": next_seq}));
    reader.get_mut().write_all(text.as_bytes()).await
}

/// Where a node relays to the fake, in `mode`.
fn node_of(fake: &FakeGateway, mode: RelayMode) -> RelayTo {
    let server = ServerSection {
        url: fake.url.clone(),
        ..ServerSection::default()
    };
    let gateway = Arc::new(GatewayClient::new(&server, "node-key", "node-1").unwrap());
    RelayTo {
        gateway,
        metrics: Arc::new(NodeMetrics::new()),
        mode,
    }
}

/// `job-1`, leased under `lease-1`, asking for a relayed chat stream.
fn job() -> LeasedJob {
    let payload = json!({"model": "m", "messages": [], "stream": true});
    LeasedJob {
        id: JobId::new("job-1"),
        model: "m".to_owned(),
        endpoint: Endpoint::ChatCompletions,
        request_payload: serde_json::value::to_raw_value(&payload).unwrap(),
        lease_id: LeaseId::new("lease-1"),
        lease_expires_at: 0,
        lease_ttl_ms: 60_000,
        attempt: 1,
        request_id: None,
        relay: true,
    }
}

/// The relay of `job()` to the fake, in stream mode.
fn sender(fake: &FakeGateway) -> (RelaySender, Arc<GatewayClient>, Arc<NodeMetrics>) {
    let to = node_of(fake, RelayMode::Stream);
    let relay = RelaySender::open(&to, &job());
    (relay, to.gateway, to.metrics)
}

/// An upstream client of the mock, without retries.
fn upstream_of(mock: &MockUpstream) -> UpstreamClient {
    let upstream = crate::routing::Upstream {
        base_url: mock.base_url(),
        api_key: None,
        key_source: None,
        section: "llm",
        ca_cert: None,
    };
    let retry = RetryPolicy {
        max_retries: 0,
        backoff: Duration::from_millis(1),
    };
    let timeout = Duration::from_secs(5);
    UpstreamClient::new(upstream, timeout, timeout, retry).unwrap()
}

fn chunk(i: usize) -> Box<RawValue> {
    serde_json::value::to_raw_value(&json!({"n": i})).unwrap()
}

#[tokio::test]
async fn each_frame_reaches_the_gateway_before_the_next_is_sent_and_the_end_is_taken() {
    let mut fake = FakeGateway::start(vec![Script::Accept]).await;
    let (mut relay, gateway, metrics) = sender(&fake);
    for i in 0..3 {
        relay.send(&chunk(i));
        let seen = fake.next().await;
        assert_eq!(seen.frame, json!({"seq": i, "chunk": {"n": i}}));
    }
    relay.finish().await;
    assert_eq!(fake.next().await.frame, json!({"seq": 3, "end": true}));
    assert_eq!(fake.connections.load(Ordering::SeqCst), 1);
    assert!(gateway.relays());
    assert_eq!(metrics.relay_failures.get(), 0);
}

#[tokio::test]
async fn a_gap_is_resent_from_the_gateways_next_seq() {
    let mut fake = FakeGateway::start(vec![Script::Lose(1), Script::Accept]).await;
    let (mut relay, _, metrics) = sender(&fake);
    for i in 0..3 {
        relay.send(&chunk(i));
    }
    relay.finish().await;
    let mut resent = Vec::new();
    while let Ok(seen) = fake.seen.try_recv() {
        if seen.connection == 1 {
            resent.push(seen.frame["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(resent, [1, 2, 3], "from the lost frame to the end");
    assert_eq!(metrics.relay_failures.get(), 0);
}

#[tokio::test]
async fn a_gateway_without_the_route_is_remembered_and_nothing_is_resent() {
    let fake = FakeGateway::start(vec![Script::NotFound]).await;
    let (mut relay, gateway, metrics) = sender(&fake);
    relay.send(&chunk(0));
    relay.finish().await;
    assert!(!gateway.relays(), "later relayed jobs run unstreamed");
    assert_eq!(fake.connections.load(Ordering::SeqCst), 1);
    assert_eq!(metrics.relay_failures.get(), 0);
}

#[tokio::test]
async fn a_stale_answer_mid_stream_stops_the_relay_without_a_retry() {
    let mut fake = FakeGateway::start(vec![Script::Stale]).await;
    let (mut relay, _, metrics) = sender(&fake);
    relay.send(&chunk(0));
    fake.next().await;
    // The early answer is seen on a later frame; every frame after it stays home.
    let stopped = tokio::time::timeout(Duration::from_secs(5), async {
        let mut i = 1;
        while matches!(relay.state, State::Open { .. }) {
            relay.send(&chunk(i));
            i += 1;
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(stopped.is_ok(), "the relay stops on `stale`");
    relay.finish().await;
    assert_eq!(fake.connections.load(Ordering::SeqCst), 1, "not reopened");
    assert_eq!(metrics.relay_failures.get(), 0);
}

#[tokio::test]
async fn a_request_that_keeps_breaking_is_retried_three_times_then_given_up() {
    let fake = FakeGateway::start(vec![Script::Reset]).await;
    let (mut relay, gateway, metrics) = sender(&fake);
    relay.send(&chunk(0));
    relay.finish().await;
    assert_eq!(fake.connections.load(Ordering::SeqCst), 4);
    assert_eq!(metrics.relay_failures.get(), 1);
    assert!(gateway.relays(), "a broken request is no missing route");
}

#[tokio::test]
async fn a_relayed_job_sends_chunks_while_the_upstream_still_streams_and_stores_the_whole() {
    let mock = MockUpstream::start(&["m"]).await.unwrap();
    mock.set_stream(4, Duration::from_millis(50));
    let mut fake = FakeGateway::start(vec![Script::Accept]).await;
    let to = node_of(&fake, RelayMode::Stream);
    let client = upstream_of(&mock);
    let job = job();
    let stream = client
        .stream(job.endpoint, &job.request_payload, "m", None)
        .await
        .unwrap();
    let completion = streamed::relay(&to, &job, stream).await.unwrap();
    let mut frames = Vec::new();
    while let Ok(seen) = fake.seen.try_recv() {
        frames.push(seen);
    }
    let chunks: Vec<&Seen> = frames
        .iter()
        .filter(|s| s.frame.get("chunk").is_some())
        .collect();
    assert_eq!(chunks.len(), 5, "4 texts and the finish; no usage, unasked");
    let sent_last = chunks[3].frame["chunk"]["obb_sent_us"].as_u64().unwrap();
    let first_at = chunks[0]
        .at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    assert!(
        first_at < sent_last,
        "the first chunk reached the gateway before the upstream sent the last"
    );
    assert_eq!(frames.last().unwrap().frame["end"], true);
    let stored: Value = serde_json::from_str(completion.body.get()).unwrap();
    assert_eq!(stored["object"], "chat.completion");
    assert_eq!(stored["choices"][0]["message"]["content"], "t0 t1 t2 t3 ");
    assert_eq!(stored["choices"][0]["finish_reason"], "stop");
    assert_eq!(stored["usage"]["completion_tokens"], 4, "{stored}");
    assert_eq!(
        (completion.prompt_tokens, completion.completion_tokens),
        (3, 4)
    );
}

#[tokio::test]
async fn append_mode_posts_the_frames_ready_in_short_sized_requests_until_the_end() {
    let mut fake = FakeGateway::start(vec![Script::Accept]).await;
    let to = node_of(&fake, RelayMode::Append);
    let mut relay = RelaySender::open(&to, &job());
    relay.send(&chunk(0));
    let first = fake.next().await;
    assert_eq!(
        (first.connection, first.frame["seq"].as_u64()),
        (0, Some(0)),
        "the first frame goes at once"
    );
    for i in 1..4 {
        relay.send(&chunk(i));
    }
    relay.finish().await;
    let mut seen = vec![first];
    while let Ok(frame) = fake.seen.try_recv() {
        seen.push(frame);
    }
    let seqs: Vec<u64> = seen
        .iter()
        .map(|s| s.frame["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4], "each frame once, in order");
    assert_eq!(seen[4].frame["end"], true);
    assert!(seen.iter().all(|s| !s.chunked), "sized bodies only");
    let requests = fake.connections.load(Ordering::SeqCst);
    assert!((2..=5).contains(&requests), "{requests} requests");
    assert!(seen.windows(2).all(|w| w[0].connection <= w[1].connection));
    let spans: Vec<SystemTime> = seen.iter().map(|s| s.at).collect();
    let apart = spans[4].duration_since(spans[0]).unwrap_or_default();
    // The second request waits for 50 ms after the first was sent; half of it leaves room
    // for the two requests' different trips, and is far above one that did not wait.
    assert!(apart >= APPEND_EVERY / 2, "at most every 50 ms: {apart:?}");
    assert_eq!(to.metrics.relay_failures.get(), 0);
}

#[tokio::test]
async fn a_relayed_completions_job_relays_the_usage_chunk_when_its_user_asked() {
    let mock = MockUpstream::start(&["m"]).await.unwrap();
    mock.set_stream(2, Duration::ZERO);
    let mut fake = FakeGateway::start(vec![Script::Accept]).await;
    let to = node_of(&fake, RelayMode::Stream);
    let client = upstream_of(&mock);
    let mut job = job();
    job.endpoint = Endpoint::Completions;
    let payload = json!({"model": "m", "prompt": "x", "stream": true,
        "stream_options": {"include_usage": true}});
    job.request_payload = serde_json::value::to_raw_value(&payload).unwrap();
    let stream = client
        .stream(job.endpoint, &job.request_payload, "m", None)
        .await
        .unwrap();
    let completion = streamed::relay(&to, &job, stream).await.unwrap();
    let mut chunks = Vec::new();
    while let Ok(seen) = fake.seen.try_recv() {
        if let Some(chunk) = seen.frame.get("chunk") {
            chunks.push(chunk.clone());
        }
    }
    assert_eq!(chunks.len(), 4, "2 texts, the finish and the usage");
    assert_eq!(chunks[3]["choices"], json!([]));
    assert_eq!(chunks[3]["usage"]["total_tokens"], 5);
    let stored: Value = serde_json::from_str(completion.body.get()).unwrap();
    assert_eq!(stored["object"], "text_completion");
    assert_eq!(stored["choices"][0]["text"], "t0 t1 ");
    assert_eq!(stored["choices"][0]["finish_reason"], "stop");
    assert_eq!(stored["usage"]["completion_tokens"], 2);
}
