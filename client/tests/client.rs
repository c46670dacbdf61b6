//! The Rust client against a real gateway and a real node serving the `echo` model.

use openbeepboop::chat::ChatMessage;
use openbeepboop::job::PollEntry;
use openbeepboop::{ChatCompletionRequest, Client, Error, JobId, JobStatus, SubmitOptions};
use std::time::{Duration, SystemTime};
use testkit::{Gateway, NodeProcess};

fn hello(model: &str, text: &str) -> ChatCompletionRequest {
    ChatCompletionRequest::new(model, vec![ChatMessage::new("user", text)])
}

#[tokio::test(flavor = "multi_thread")]
async fn every_client_method_works_against_a_real_gateway_and_node() {
    let gw = Gateway::start(&[]).await;
    let (user, node_key) = (gw.key("user").await, gw.key("node").await);
    let _node = NodeProcess::start(
        "run",
        &NodeProcess::config(
            &gw,
            &node_key,
            "rust-client-node",
            None,
            "models = [\"echo\"]",
        ),
    );
    let client = Client::new(&format!("{}/v1", gw.base), &user).unwrap();

    let request = hello("echo", "Hello!")
        .temperature(0.2)
        .max_completion_tokens(16)
        .seed(7)
        .metadata("team", "qa");
    let mut handle = client.chat().completions().create(request).await.unwrap();
    assert_eq!(handle.status(), JobStatus::Queued);
    let completion = handle.get(Duration::from_secs(30)).await.unwrap();
    assert_eq!(completion.choices[0].message.text(), Some("echo: Hello!"));

    // A request that asks for a stream still becomes a job: the client reads results.
    let mut streamed = hello("echo", "as a job");
    streamed.stream = Some(true);
    let streamed = streamed.field("stream_options", serde_json::json!({"include_usage": true}));
    let mut job = client.chat().completions().create(streamed).await.unwrap();
    let completion = job.get(Duration::from_secs(30)).await.unwrap();
    assert_eq!(completion.choices[0].message.text(), Some("echo: as a job"));
    assert_eq!(
        handle.id(),
        &client.jobs().get(handle.id()).await.unwrap().id
    );

    let requests: Vec<_> = (0..4).map(|i| hello("echo", &format!("n{i}"))).collect();
    let batch = client
        .chat()
        .completions()
        .create_many(requests.clone(), Some("rust-batch"))
        .await
        .unwrap();
    let again = client
        .chat()
        .completions()
        .create_many(requests, Some("rust-batch"))
        .await
        .unwrap();
    let ids: Vec<&JobId> = batch.iter().map(|h| h.id()).collect();
    assert_eq!(
        ids,
        again.iter().map(|h| h.id()).collect::<Vec<_>>(),
        "a retried batch makes no new jobs"
    );
    let done = client
        .jobs()
        .wait_all(&batch, Duration::from_secs(60))
        .await
        .unwrap();
    let contents: Vec<String> = done
        .iter()
        .map(|job| {
            job.result.as_ref().unwrap()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        contents,
        vec!["echo: n0", "echo: n1", "echo: n2", "echo: n3"]
    );

    let polled = client
        .jobs()
        .poll(&[ids[0].clone(), JobId::from("job-unknown")])
        .await
        .unwrap();
    assert!(matches!(&polled[0], PollEntry::Found(job) if job.status == JobStatus::Completed));
    assert!(matches!(&polled[1], PollEntry::NotFound { .. }));
    let listed = client
        .jobs()
        .list(Some(JobStatus::Completed))
        .await
        .unwrap();
    assert_eq!(listed.len(), 6, "1 + the stream request + 4 of the batch");

    // Endings: cancelled, expired, timed out.
    let options = SubmitOptions {
        priority: Some(1),
        ttl: Some(Duration::from_secs(60)),
        ..SubmitOptions::default()
    };
    let mut stuck = client
        .chat()
        .completions()
        .create_with(hello("nobody", "x"), options)
        .await
        .unwrap();
    assert!(matches!(
        stuck.get(Duration::from_millis(300)).await,
        Err(Error::JobTimeout { .. })
    ));
    assert!(matches!(
        client
            .jobs()
            .wait_all(std::slice::from_ref(&stuck), Duration::from_millis(200))
            .await,
        Err(Error::JobTimeout { .. })
    ));
    assert_eq!(stuck.cancel().await.unwrap().status, JobStatus::Cancelled);
    assert!(matches!(
        stuck.get(Duration::from_secs(5)).await,
        Err(Error::JobCancelled(_))
    ));
    let expiring = SubmitOptions {
        ttl: Some(Duration::from_secs(1)),
        ..SubmitOptions::default()
    };
    let mut expired = client
        .chat()
        .completions()
        .create_with(hello("nobody", "x"), expiring)
        .await
        .unwrap();
    let error = expired.get(Duration::from_secs(30)).await.unwrap_err();
    assert!(matches!(error, Error::JobExpired(_)), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_map_to_the_openai_kinds() {
    let gw = Gateway::start(&[]).await;
    let (user, node_key) = (gw.key("user").await, gw.key("node").await);
    let client = Client::new(&gw.base, &user).unwrap();
    let bad = Client::new(&gw.base, "sk-obb-nope").unwrap();
    assert!(
        matches!(bad.jobs().get(&JobId::from("job-x")).await, Err(Error::Authentication(m)) if m.contains("invalid API key"))
    );
    let node = Client::new(&gw.base, &node_key).unwrap();
    assert!(matches!(
        node.jobs().get(&JobId::from("job-x")).await,
        Err(Error::PermissionDenied(_))
    ));
    assert!(matches!(
        client.jobs().get(&JobId::from("job-x")).await,
        Err(Error::NotFound(_))
    ));
    let empty = ChatCompletionRequest::new("echo", Vec::new());
    let error = client
        .chat()
        .completions()
        .create(empty)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&error, Error::ApiStatus { status: 400, message } if message.contains("messages")),
        "{error}"
    );

    // A failed job, reported by hand as a node would.
    let mut failing = client
        .chat()
        .completions()
        .create(hello("fails", "x"))
        .await
        .unwrap();
    let leased = gw.fetch(&node_key, "n", &["fails"], 1, 5.0).await;
    gw.report(&node_key, &serde_json::json!([{"id": leased[0]["id"], "lease_id": leased[0]["lease_id"], "status": "FAILED",
        "error": {"message": "bad prompt", "type": "invalid_request_error", "param": null, "code": null}, "upstream_status": 400}])).await;
    let error = failing.get(Duration::from_secs(30)).await.unwrap_err();
    assert!(
        matches!(&error, Error::JobFailed(_)) && error.to_string().contains("bad prompt"),
        "{error}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = Client::new(&format!("http://127.0.0.1:{closed}"), "k")
        .unwrap()
        .with_max_retries(1);
    assert!(matches!(
        unreachable.jobs().get(&JobId::from("x")).await,
        Err(Error::ApiConnection(_))
    ));
}

/// When each request reached a [`scripted`] server, in order.
type Arrivals = std::sync::Arc<std::sync::Mutex<Vec<SystemTime>>>;

#[cfg(test)]
fn arrivals(seen: &Arrivals) -> Vec<SystemTime> {
    seen.lock().unwrap().clone()
}

/// A loopback server answering each request with the next of `answers` (status, extra
/// header lines), which records when each request arrived.
#[cfg(test)]
async fn scripted(answers: Vec<(u16, String)>) -> (String, Arrivals) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arrivals::default();
    let record = seen.clone();
    tokio::spawn(async move {
        let mut answers = answers.into_iter();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buffer = [0u8; 8192];
            let _ = stream.read(&mut buffer).await;
            record.lock().unwrap().push(SystemTime::now());
            let (status, extra) = answers.next().unwrap_or((200, String::new()));
            let body = if status < 400 {
                r#"{"id":"job-x","object":"chat.completion.job","model":"m","status":"queued","priority":3,"created_at":0,"updated_at":0,"expires_at":0,"attempts":0}"#
            } else {
                r#"{"error":{"message":"scripted","type":"x","param":null,"code":null}}"#
            };
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
        }
    });
    (base, seen)
}

#[cfg(test)]
fn answer(status: u16, extra: &str) -> (u16, String) {
    (status, extra.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_errors_are_retried_and_rate_limits_surface() {
    let (base, seen) = scripted(vec![
        answer(503, ""),
        answer(429, "retry-after: 0\r\n"),
        answer(200, ""),
    ])
    .await;
    let client = Client::new(&base, "k").unwrap();
    let handle = client
        .chat()
        .completions()
        .create(hello("m", "x"))
        .await
        .unwrap();
    assert_eq!(handle.id(), "job-x");
    assert_eq!(arrivals(&seen).len(), 3);

    let (base, _) = scripted(vec![
        answer(429, "retry-after: 0\r\n"),
        answer(429, "retry-after: 0\r\n"),
    ])
    .await;
    let limited = Client::new(&base, "k").unwrap().with_max_retries(1);
    assert!(matches!(
        limited.jobs().get(&JobId::from("x")).await,
        Err(Error::RateLimit(_))
    ));
    let (base, seen) = scripted(vec![answer(502, "x-should-retry: false\r\n")]).await;
    let failed = Client::new(&base, "k").unwrap();
    assert!(matches!(
        failed.jobs().get(&JobId::from("x")).await,
        Err(Error::ApiStatus { status: 502, .. })
    ));
    assert_eq!(arrivals(&seen).len(), 1, "x-should-retry: false is final");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_http_date_is_waited_for_and_a_past_one_is_not() {
    // Two seconds ahead, truncated to the whole second an HTTP-date can say: the retry must
    // not arrive before that instant, which the client's own first backoff (at most 0.5 s)
    // would reach long before.
    let date = SystemTime::now() + Duration::from_secs(2);
    let formatted = httpdate::fmt_http_date(date);
    let not_before = httpdate::parse_http_date(&formatted).unwrap();
    let (base, seen) = scripted(vec![
        (503, format!("retry-after: {formatted}\r\n")),
        answer(429, "retry-after: Sun, 06 Nov 1994 08:49:37 GMT\r\n"),
        answer(200, ""),
    ])
    .await;
    let client = Client::new(&base, "k").unwrap();
    assert_eq!(
        client.jobs().get(&JobId::from("job-x")).await.unwrap().id,
        "job-x"
    );
    let times = arrivals(&seen);
    assert_eq!(
        times.len(),
        3,
        "both errors were retried, the past date at once"
    );
    assert!(
        times[1] >= not_before,
        "the retry came {:?} before the date it was given",
        not_before.duration_since(times[1]).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_with_only_a_spent_budgets_reset_is_retried_after_that_reset() {
    // The client's own first backoff is at most 0.5 s; the spent budget resets in 1.5 s (the
    // tokens' 9 s does not count: that budget has room).
    let (base, seen) = scripted(vec![
        answer(
            429,
            "x-ratelimit-remaining-requests: 0\r\nx-ratelimit-reset-requests: 1500ms\r\nx-ratelimit-remaining-tokens: 90\r\nx-ratelimit-reset-tokens: 9s\r\n",
        ),
        answer(200, ""),
    ])
    .await;
    let client = Client::new(&base, "k").unwrap();
    assert_eq!(
        client.jobs().get(&JobId::from("job-x")).await.unwrap().id,
        "job-x"
    );
    let times = arrivals(&seen);
    assert_eq!(times.len(), 2);
    let gap = times[1].duration_since(times[0]).unwrap();
    assert!(
        gap >= Duration::from_millis(1450) && gap < Duration::from_secs(5),
        "{gap:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rust_example_runs_against_a_real_gateway_and_node() {
    let gw = Gateway::start(&[]).await;
    let (user, node_key) = (gw.key("user").await, gw.key("node").await);
    let _node = NodeProcess::start(
        "run",
        &NodeProcess::config(&gw, &node_key, "example-node", None, "models = [\"echo\"]"),
    );
    let output = std::process::Command::new(testkit::workspace_bin("examples/rust_client"))
        .env("OBB_BASE_URL", &gw.base)
        .env("OBB_API_KEY", &user)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("answer: echo: Hello!"), "{stdout}");
    assert!(
        stdout.contains("Say goodbye. -> echo: Say goodbye."),
        "{stdout}"
    );
}
