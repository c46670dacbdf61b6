//! A client that reads nothing, beside ten that read: the gateway's writes to it block, and
//! nothing else waits for them.

use super::*;

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

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_client_does_not_slow_other_streams() {
    // A client that takes nothing for 2 s is let go.
    let (gw, user, key, mock) = streaming_stack(&[("OBB_STREAM_WRITE_TIMEOUT_SECONDS", "2")]).await;
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
    // The slow client read nothing: its write timed out and its stream was ended, so no
    // stream is left reading a relay.
    eventually(PATIENCE, "the slow client's stream to be ended", || async {
        (gw.metric("obb_stream_subscribers", "").await == 0.0).then_some(())
    })
    .await;
    drop(slow);
    println!(
        "figures: streams=10 chunks=20 gap_ms=20 p99_gap_ms={} mock_p99_gap_ms={} max_gap_ms={} slow_client_backlog_bytes={backlog}",
        p99.as_millis(),
        sent_p99.as_millis(),
        gaps.last().unwrap().as_millis()
    );
}
