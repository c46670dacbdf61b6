//! A mock OpenAI-compatible upstream on loopback, for tests and benchmarks. It is not an
//! LLM: it answers `mock: <last user message>` and can be told to be slow, fail, rate-limit
//! or answer garbage. It counts calls and the most calls it saw in flight at once.

use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What the next chat call does instead of answering normally.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer with this status and an OpenAI error body, with an optional `Retry-After`.
    Status(u16, Option<u64>),
    /// Answer 200 with a body that is not JSON.
    InvalidJson,
    /// Answer normally after this delay.
    Delay(Duration),
    /// Promise a body, send half of it, and close the connection.
    Truncate,
}

#[derive(Debug, Default)]
pub struct MockState {
    pub calls: AtomicU64,
    in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
    faults: Mutex<VecDeque<Fault>>,
    delay: Mutex<Duration>,
    models: Mutex<Vec<String>>,
    /// The last chat request's `x-request-id` and body.
    pub last_request: Mutex<Option<(Option<String>, Value)>>,
}

pub struct MockUpstream {
    pub port: u16,
    pub state: Arc<MockState>,
    task: tokio::task::JoinHandle<()>,
}

impl MockUpstream {
    /// Starts the mock on a free loopback port; it stops when dropped.
    pub async fn start(models: &[&str]) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(MockState::default());
        *lock(&state.models) = models.iter().map(|m| (*m).to_owned()).collect();
        let shared = Arc::clone(&state);
        // Owned by the returned value: aborted on drop.
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let _ = serve(stream, &state).await;
                });
            }
        });
        Ok(Self { port, state, task })
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Queues faults for the next chat calls, in order.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.state.faults).extend(faults);
    }

    /// Delays every normal answer.
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.state.delay) = delay;
    }

    pub fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> u64 {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

async fn serve(stream: TcpStream, state: &MockState) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut length = 0usize;
        let mut request_id = None;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "x-request-id" => request_id = Some(value.trim().to_owned()),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await?;
        let truncate = request_line.starts_with("POST ")
            && lock(&state.faults).front() == Some(&Fault::Truncate);
        let (status, headers, text) = respond(&request_line, &body, request_id, state).await;
        if truncate {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                text.len() * 2
            );
            reader.get_mut().write_all(head.as_bytes()).await?;
            reader
                .get_mut()
                .write_all(&text.as_bytes()[..text.len() / 2])
                .await?;
            return Ok(());
        }
        let mut response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            text.len()
        );
        for (name, value) in headers {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
        response.push_str("\r\n");
        response.push_str(&text);
        reader.get_mut().write_all(response.as_bytes()).await?;
    }
}

async fn respond(
    request_line: &str,
    body: &[u8],
    request_id: Option<String>,
    state: &MockState,
) -> (u16, Vec<(&'static str, String)>, String) {
    if request_line.starts_with("GET ") && request_line.contains("/models") {
        let data: Vec<Value> = lock(&state.models)
            .iter()
            .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "mock"}))
            .collect();
        return (
            200,
            Vec::new(),
            json!({"object": "list", "data": data}).to_string(),
        );
    }
    if !request_line.starts_with("POST ") || !request_line.contains("/chat/completions") {
        return (404, Vec::new(), json!({"error": {"message": "not found", "type": "invalid_request_error", "param": null, "code": null}}).to_string());
    }
    state.calls.fetch_add(1, Ordering::SeqCst);
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    *lock(&state.last_request) = Some((request_id, request.clone()));
    let fault = lock(&state.faults).pop_front();
    let delay = match &fault {
        Some(Fault::Delay(delay)) => *delay,
        _ => *lock(&state.delay),
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    match fault {
        Some(Fault::Status(status, retry_after)) => {
            let headers = retry_after
                .map(|s| vec![("retry-after", s.to_string())])
                .unwrap_or_default();
            let body = json!({"error": {"message": format!("mock upstream fault {status}"),
                "type": if status < 500 { "invalid_request_error" } else { "server_error" },
                "param": null, "code": if status == 404 { json!("model_not_found") } else { Value::Null }}});
            (status, headers, body.to_string())
        }
        Some(Fault::InvalidJson) => (200, Vec::new(), "{\"choices\": [".to_owned()),
        _ => (
            200,
            Vec::new(),
            answer(&request, state.calls.load(Ordering::SeqCst)).to_string(),
        ),
    }
}

/// A normal answer, shaped like OpenAI's for what the request asks: a tool call when it
/// offers tools (or the tool's result echoed once one is sent back), JSON content for a
/// `json_schema` response format, and `n` choices.
fn answer(request: &Value, call: u64) -> Value {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    let tool_result = messages
        .last()
        .filter(|m| m["role"] == "tool")
        .and_then(|m| m["content"].as_str());
    let wants_tool = request["tools"].is_array() && tool_result.is_none();
    let n = request["n"].as_u64().unwrap_or(1).clamp(1, 8);
    let choices: Vec<Value> = (0..n)
        .map(|index| {
            let (message, finish) = if wants_tool {
                let name = request["tool_choice"]["function"]["name"]
                    .as_str()
                    .or_else(|| request["tools"][0]["function"]["name"].as_str())
                    .unwrap_or("tool");
                (
                    json!({"role": "assistant", "content": null, "tool_calls": [{
                        "id": format!("call_mock_{call}_{index}"), "type": "function",
                        "function": {"name": name, "arguments": json!({"query": last_user}).to_string()}
                    }]}),
                    "tool_calls",
                )
            } else if request["response_format"]["type"] == "json_schema" {
                let content = json!({"answer": format!("mock: {last_user}"), "confidence": 1}).to_string();
                (json!({"role": "assistant", "content": content}), "stop")
            } else if let Some(result) = tool_result {
                (json!({"role": "assistant", "content": format!("mock: the tool said {result}")}), "stop")
            } else {
                (json!({"role": "assistant", "content": format!("mock: {last_user}")}), "stop")
            };
            json!({"index": index, "message": message, "logprobs": null, "finish_reason": finish})
        })
        .collect();
    json!({
        "id": format!("chatcmpl-mock-{call}"),
        "object": "chat.completion", "created": 1_700_000_000,
        "model": request["model"], "system_fingerprint": "mock",
        "choices": choices,
        "usage": {"prompt_tokens": 3, "completion_tokens": 2 * n, "total_tokens": 3 + 2 * n}
    })
}
