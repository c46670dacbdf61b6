//! How a relayed stream survives its way: a client that resumes, a gateway restart, a relay
//! request cut mid-way, and a proxy that buffers request bodies.

use super::*;

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
