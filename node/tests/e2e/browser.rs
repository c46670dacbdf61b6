//! A real browser calls the gateway from another origin: headless Chromium loads a page
//! from a loopback origin the gateway allows (`cors_allowed_origins`), whose `fetch`es
//! submit with `?wait`, read `x-request-id`, and read a `stream: true` answer and a job's
//! event stream as they arrive; a page from an origin not in the list is refused.
//!
//! The pages report back to the test's page server instead of being driven: Chromium's
//! command line is the whole interface, with no driver (Playwright, CDP) to install or keep
//! in step with the browser.

use crate::stack;
use serde_json::Value;
use std::time::Duration;
use testkit::browser::group_members;
use testkit::{Chromium, NodeProcess, PageServer};

/// The allowed origin's page. `gw`, `key` and `other` (the refused origin) come in its
/// query. It reports `{waited, streamed, events}` or `{error}` to `/report`.
const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>OpenBeepBoop from a browser</title>
<script>
const query = new URLSearchParams(location.search);
const gw = query.get("gw");
const auth = { "Authorization": "Bearer " + query.get("key") };
const json = Object.assign({ "Content-Type": "application/json" }, auth);
const chat = (content, extra) =>
  JSON.stringify(Object.assign({ model: "m", messages: [{ role: "user", content }] }, extra));

// The body as it arrives, chunk by chunk, through the Streams API.
async function readAll(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return text + decoder.decode();
    text += decoder.decode(value, { stream: true });
  }
}

async function run() {
  const waited = await fetch(gw + "/v1/chat/completions?wait=30",
    { method: "POST", headers: json, body: chat("hello from a browser") });
  const report = { origin: location.origin };
  report.waited = {
    status: waited.status,
    requestId: waited.headers.get("x-request-id"),
    queueMs: waited.headers.get("x-obb-queue-ms"),
    body: await waited.json(),
  };

  const streamed = await fetch(gw + "/v1/chat/completions",
    { method: "POST", headers: json, body: chat("stream to a browser", { stream: true }) });
  report.streamed = {
    status: streamed.status,
    contentType: streamed.headers.get("content-type"),
    jobId: streamed.headers.get("x-obb-job-id"),
    text: await readAll(streamed),
  };

  const submitted = await fetch(gw + "/v1/chat/completions",
    { method: "POST", headers: json, body: chat("events for a browser") });
  const job = await submitted.json();
  const events = await fetch(gw + "/v1/jobs/" + job.id + "/stream", { headers: auth });
  report.events = { status: events.status, text: await readAll(events) };
  return report;
}

// The refused origin's page runs beside this one, in a frame.
const frame = document.createElement("iframe");
frame.src = query.get("other") + "/refused.html" + location.search;
document.documentElement.appendChild(frame);

run()
  .catch((e) => ({ error: String(e), stack: e.stack }))
  .then((report) => fetch("/report", { method: "POST", body: JSON.stringify(report) }));
</script>
"#;

/// The page of an origin the gateway does not allow: its submit must fail in the browser.
const REFUSED: &str = r#"<!doctype html>
<meta charset="utf-8">
<script>
const query = new URLSearchParams(location.search);
fetch(query.get("gw") + "/v1/chat/completions?wait=5", {
  method: "POST",
  headers: { "Authorization": "Bearer " + query.get("key"), "Content-Type": "application/json" },
  body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "from elsewhere" }] }),
})
  .then((r) => ({ origin: location.origin, refused: false, status: r.status }),
        (e) => ({ origin: location.origin, refused: true, error: e.name + ": " + e.message }))
  .then((report) => fetch("/report", { method: "POST", body: JSON.stringify(report) }));
</script>
"#;

/// The text of the `chat.completion.chunk` deltas of an event stream, and whether it
/// ended with `[DONE]`.
fn chunks_text(stream: &str) -> (String, bool) {
    let data: Vec<&str> = stream
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .collect();
    let text = data
        .iter()
        .filter(|d| **d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    (text, data.last() == Some(&"[DONE]"))
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_on_an_allowed_origin_waits_and_streams_and_another_origin_is_refused() {
    let mut allowed = PageServer::start(vec![("/page.html".to_owned(), PAGE.to_owned())]).await;
    let mut refused =
        PageServer::start(vec![("/refused.html".to_owned(), REFUSED.to_owned())]).await;
    let origin = allowed.origin();
    let (gw, user, node_key, mock) = stack(&[
        ("OBB_CORS_ALLOWED_ORIGINS", &origin),
        ("OBB_STREAM_KEEPALIVE_SECONDS", "1"),
    ])
    .await;
    // Slow enough that the `stream: true` answer is held: headers and keep-alives first.
    mock.set_delay(Duration::from_millis(3500));
    let _node = NodeProcess::start(
        "run",
        &NodeProcess::config(&gw, &node_key, "browser-node", Some(&mock.base_url()), ""),
    );

    let mut browser = Chromium::open(&format!(
        "{origin}/page.html?gw={}&key={user}&other={}",
        gw.base,
        refused.origin()
    ));
    let Some(report) = allowed.report(Duration::from_secs(90)).await else {
        panic!("the page reported nothing; chromium:\n{}", browser.log());
    };
    let Some(refusal) = refused.report(Duration::from_secs(30)).await else {
        panic!(
            "the refused page reported nothing; chromium:\n{}",
            browser.log()
        );
    };
    let group = browser.pid().unwrap();
    browser.kill();
    assert!(
        group_members(group).is_empty(),
        "chromium left processes behind"
    );

    assert!(report.get("error").is_none(), "the page failed: {report}");
    assert_eq!(report["origin"], origin.as_str());
    let waited = &report["waited"];
    assert_eq!(waited["status"], 200, "{waited}");
    assert_eq!(
        waited["body"]["choices"][0]["message"]["content"],
        "mock: hello from a browser"
    );
    // Readable only because the gateway exposes them to the page.
    assert!(
        waited["requestId"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{waited}"
    );
    assert!(
        waited["queueMs"]
            .as_str()
            .is_some_and(|ms| ms.parse::<u64>().is_ok()),
        "{waited}"
    );

    let streamed = &report["streamed"];
    assert_eq!(streamed["status"], 200, "{streamed}");
    assert!(
        streamed["contentType"]
            .as_str()
            .is_some_and(|t| t.starts_with("text/event-stream")),
        "{streamed}"
    );
    assert!(
        streamed["jobId"]
            .as_str()
            .is_some_and(|id| id.starts_with("job-")),
        "{streamed}"
    );
    let text = streamed["text"].as_str().unwrap();
    assert!(
        text.starts_with(": keep-alive"),
        "held while queued: {text}"
    );
    assert_eq!(
        chunks_text(text),
        // The mock streams its chunks, which the node relays live: `t0 t1 t2 `.
        ("t0 t1 t2 ".to_owned(), true)
    );

    let events = &report["events"];
    assert_eq!(events["status"], 200, "{events}");
    let text = events["text"].as_str().unwrap();
    assert!(text.contains("event: completed"), "{text}");
    assert!(text.contains("mock: events for a browser"), "{text}");

    assert_eq!(refusal["origin"], refused.origin().as_str());
    assert_eq!(refusal["refused"], true, "{refusal}");
    assert!(
        refusal["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("TypeError")),
        "{refusal}"
    );
    // The preflight failed, so the refused page's submit never reached the API.
    let (_, jobs) = gw.get_json(&user, "/v1/jobs?limit=100").await;
    assert_eq!(jobs["data"].as_array().unwrap().len(), 3, "{jobs}");
    assert_eq!(mock.calls(), 3);
}
