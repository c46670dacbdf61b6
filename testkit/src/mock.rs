//! A mock OpenAI-compatible upstream on loopback, for tests and benchmarks. It is not an
//! LLM: it answers `mock: <last user message>` and can be told to be slow, fail, rate-limit
//! or answer garbage. It counts calls and the most calls it saw in flight at once. It can
//! serve over TLS (tokio-rustls, with a certificate the test makes) and answer compressed.
//!
//! Besides `/v1/chat/completions` it serves `/v1/completions` (`mock: <prompt>`),
//! `/v1/responses` (a `response` whose output text is `mock: <last user text>`; it can be
//! told to lack the route and answer 404, as llama.cpp's server does for a path it does not
//! know) and `/v1/embeddings`, whose vectors are made from each input alone ([`mock_embedding`]), so a
//! test can tell whose vectors a job got; an input text holding `mock:drop` is left out of
//! the answer, as a part that failed, and one holding `mock:reject` gets the whole call a
//! 400, as an input the upstream cannot take.
//!
//! A chat or completions call with `"stream": true` is answered as a stream ([`stream`]):
//! chunks whose text is `t0 `, `t1 `, … (how many and how far apart: [`MockUpstream::set_stream`]),
//! each stamped with the time it was written, the usage chunk when `stream_options.include_usage`
//! asks for it, then `[DONE]`. A `/v1/responses` call with `"stream": true` gets the same
//! texts as `response.output_text.delta` events, between the events of one message item and
//! a `response.completed` whose response holds the whole text. A stream can be held before
//! its first chunk, cut, or broken by an error event ([`StreamFault`]); the [`Fault`]s still
//! apply before its head. It is a mock: none of this is a model.

mod stream;

pub use stream::{StreamFault, StreamShape};

use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What the next call (chat, completions or embeddings) does instead of answering normally.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer with this status and an OpenAI error body, with an optional `Retry-After`.
    Status(u16, Option<u64>),
    /// Like `Status`, with this raw `Retry-After` value: an HTTP-date, or anything else.
    StatusWithRetryAfter(u16, String),
    /// Answer 200 with a body that is not JSON.
    InvalidJson,
    /// Answer normally after this delay.
    Delay(Duration),
    /// Promise a body, send half of it, and close the connection.
    Truncate,
}

/// A content coding the mock can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Brotli,
    Deflate,
    Zstd,
}

impl Coding {
    pub const ALL: [Coding; 4] = [Coding::Gzip, Coding::Brotli, Coding::Deflate, Coding::Zstd];

    /// The `Content-Encoding` token.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Brotli => "br",
            Coding::Deflate => "deflate",
            Coding::Zstd => "zstd",
        }
    }

    /// `body` in this coding; `deflate` is the zlib format HTTP means by it.
    pub fn encode(self, body: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Coding::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(body)?;
                encoder.finish()
            }
            Coding::Deflate => {
                let mut encoder =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(body)?;
                encoder.finish()
            }
            Coding::Brotli => {
                let mut encoder = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
                encoder.write_all(body)?;
                Ok(encoder.into_inner())
            }
            Coding::Zstd => zstd::encode_all(body, 3),
        }
    }
}

#[derive(Debug, Default)]
pub struct MockState {
    pub calls: AtomicU64,
    /// When each chat call arrived, by the wall clock (a `Retry-After` date is one too).
    arrivals: Mutex<Vec<SystemTime>>,
    in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
    faults: Mutex<VecDeque<Fault>>,
    delay: Mutex<Duration>,
    models: Mutex<Vec<String>>,
    /// The last request's `x-request-id` and body.
    pub last_request: Mutex<Option<(Option<String>, Value)>>,
    /// The inputs of each embeddings call, in order of arrival.
    embedding_calls: Mutex<Vec<usize>>,
    /// The path of each call, in order of arrival.
    paths: Mutex<Vec<String>>,
    /// The last message of each chat call, in order of arrival.
    chat_messages: Mutex<Vec<String>>,
    /// The `Accept-Encoding` of the last request that sent one.
    accept_encoding: Mutex<Option<String>>,
    /// The coding every answer is sent in, if any.
    coding: Mutex<Option<Coding>>,
    /// `/v1/responses` answers 404, as on a server that predates the Responses API.
    lacks_responses: AtomicBool,
    /// How streamed answers are made.
    stream_shape: Mutex<StreamShape>,
    /// What the next streamed answers do instead of ending well, in order.
    stream_faults: Mutex<VecDeque<StreamFault>>,
    /// While true, streams wait before their first chunk.
    hold: tokio::sync::watch::Sender<bool>,
    /// Streams waiting before their first chunk now.
    streams_held: AtomicU64,
}

pub struct MockUpstream {
    pub port: u16,
    pub state: Arc<MockState>,
    tls: bool,
    task: tokio::task::JoinHandle<()>,
}

impl MockUpstream {
    /// Starts the mock on a free loopback port; it stops when dropped.
    pub async fn start(models: &[&str]) -> std::io::Result<Self> {
        Self::listen(models, None).await
    }

    /// Starts the mock serving HTTPS with the PEM certificate chain `cert` and its key.
    pub async fn start_tls(models: &[&str], cert: &Path, key: &Path) -> std::io::Result<Self> {
        let config = server_config(cert, key, None)?;
        Self::listen(models, Some(TlsAcceptor::from(Arc::new(config)))).await
    }

    /// Like `start_tls`, and it refuses clients without a certificate signed by `client_ca`.
    pub async fn start_mutual_tls(
        models: &[&str],
        cert: &Path,
        key: &Path,
        client_ca: &Path,
    ) -> std::io::Result<Self> {
        let config = server_config(cert, key, Some(client_ca))?;
        Self::listen(models, Some(TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn listen(models: &[&str], tls: Option<TlsAcceptor>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(MockState::default());
        *lock(&state.models) = models.iter().map(|m| (*m).to_owned()).collect();
        let shared = Arc::clone(&state);
        let secure = tls.is_some();
        // Owned by the returned value: aborted on drop.
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                let tls = tls.clone();
                // One task per connection; it ends when the client hangs up.
                tokio::spawn(async move {
                    match tls {
                        // A failed handshake is the client's refusal: tests look at the client.
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = serve(stream, &state).await;
                            }
                        }
                        None => {
                            let _ = serve(stream, &state).await;
                        }
                    }
                });
            }
        });
        Ok(Self {
            port,
            state,
            tls: secure,
            task,
        })
    }

    pub fn base_url(&self) -> String {
        self.base_url_at("127.0.0.1")
    }

    /// The `/v1` base URL with `host` (which must resolve to loopback) in it.
    pub fn base_url_at(&self, host: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{host}:{}/v1", self.port)
    }

    /// Sends every answer compressed with `coding` (`None`: plain), whatever the client
    /// accepts; `accept_encoding` tells what it asked for.
    pub fn set_coding(&self, coding: Option<Coding>) {
        *lock(&self.state.coding) = coding;
    }

    /// The `Accept-Encoding` header of the last request that sent one.
    pub fn accept_encoding(&self) -> Option<String> {
        lock(&self.state.accept_encoding).clone()
    }

    /// Queues faults for the next calls (of any endpoint), in order.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.state.faults).extend(faults);
    }

    /// Delays every normal answer.
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.state.delay) = delay;
    }

    /// Whether `/v1/responses` exists; when it does not, calls to it get llama.cpp's 404
    /// (`paths` still lists them, `calls` does not count them).
    pub fn set_responses_route(&self, exists: bool) {
        self.state.lacks_responses.store(!exists, Ordering::SeqCst);
    }

    /// Streams `chunks` text chunks, `gap` apart (by default 3, at once).
    pub fn set_stream(&self, chunks: usize, gap: Duration) {
        *lock(&self.state.stream_shape) = StreamShape { chunks, gap };
    }

    /// Queues faults for the next streamed answers, in order; each applies to one stream.
    pub fn push_stream_faults(&self, faults: impl IntoIterator<Item = StreamFault>) {
        lock(&self.state.stream_faults).extend(faults);
    }

    /// Holds every stream after its head, before its first chunk, until
    /// [`Self::release_streams`].
    pub fn hold_streams(&self) {
        self.state.hold.send_replace(true);
    }

    /// Lets the held streams (and later ones) go on.
    pub fn release_streams(&self) {
        self.state.hold.send_replace(false);
    }

    /// How many streams are held before their first chunk now.
    pub fn streams_held(&self) -> u64 {
        self.state.streams_held.load(Ordering::SeqCst)
    }

    /// The calls to `path` (`/v1/responses`, …) so far.
    pub fn calls_to(&self, path: &str) -> usize {
        lock(&self.state.paths)
            .iter()
            .filter(|p| *p == path)
            .count()
    }

    pub fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// When each chat call arrived, in order.
    pub fn arrivals(&self) -> Vec<SystemTime> {
        lock(&self.state.arrivals).clone()
    }

    pub fn max_in_flight(&self) -> u64 {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// How many inputs each `/v1/embeddings` call carried, in order.
    pub fn embedding_calls(&self) -> Vec<usize> {
        lock(&self.state.embedding_calls).clone()
    }

    /// The last message's text of each chat call, in order of arrival: the order in which
    /// the node ran the jobs.
    pub fn chat_messages(&self) -> Vec<String> {
        lock(&self.state.chat_messages).clone()
    }

    /// The path of each call (`/v1/embeddings`, …), in order.
    pub fn paths(&self) -> Vec<String> {
        lock(&self.state.paths).clone()
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

/// A rustls server config from PEM files, asking for client certificates signed by
/// `client_ca` when given.
fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> std::io::Result<rustls::ServerConfig> {
    let invalid = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| invalid(&e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&e))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| invalid(&e))? {
                roots
                    .add(cert.map_err(|e| invalid(&e))?)
                    .map_err(|e| invalid(&e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| invalid(&e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(chain, key)
        .map_err(|e| invalid(&e))
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    state: &MockState,
) -> std::io::Result<()> {
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
                    "accept-encoding" => {
                        *lock(&state.accept_encoding) = Some(value.trim().to_owned());
                    }
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await?;
        let truncate = request_line.starts_with("POST ")
            && lock(&state.faults).front() == Some(&Fault::Truncate);
        let (status, headers, text) = match respond(&request_line, &body, request_id, state).await {
            Answer::Whole(status, headers, text) => (status, headers, text),
            Answer::Stream(streamed) => {
                if stream::write(reader.get_mut(), state, streamed).await? {
                    continue;
                }
                return Ok(());
            }
        };
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
            reader.get_mut().shutdown().await?;
            return Ok(());
        }
        let coding = *lock(&state.coding);
        let body = match coding {
            Some(coding) => coding.encode(text.as_bytes())?,
            None => text.into_bytes(),
        };
        let mut head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        );
        if let Some(coding) = coding {
            head.push_str(&format!("content-encoding: {}\r\n", coding.name()));
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut response = head.into_bytes();
        response.extend(body);
        reader.get_mut().write_all(&response).await?;
        reader.get_mut().flush().await?;
    }
}

/// A call's answer: whole, or a stream to write.
enum Answer {
    Whole(u16, Vec<(&'static str, String)>, String),
    Stream(stream::Streamed),
}

impl From<(u16, Vec<(&'static str, String)>, String)> for Answer {
    fn from((status, headers, text): (u16, Vec<(&'static str, String)>, String)) -> Self {
        Answer::Whole(status, headers, text)
    }
}

async fn respond(
    request_line: &str,
    body: &[u8],
    request_id: Option<String>,
    state: &MockState,
) -> Answer {
    if request_line.starts_with("GET ") && request_line.contains("/models") {
        let data: Vec<Value> = lock(&state.models)
            .iter()
            .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "mock"}))
            .collect();
        return (
            200,
            Vec::new(),
            json!({"object": "list", "data": data}).to_string(),
        )
            .into();
    }
    let path = request_line.split(' ').nth(1).unwrap_or_default();
    let kind = match path.strip_prefix("/v1") {
        Some("/chat/completions") => Kind::Chat,
        Some("/completions") => Kind::Completions,
        Some("/embeddings") => Kind::Embeddings,
        Some("/responses") => Kind::Responses,
        _ => Kind::Unknown,
    };
    if kind == Kind::Responses && state.lacks_responses.load(Ordering::SeqCst) {
        lock(&state.paths).push(path.to_owned());
        // llama.cpp's answer to a path it does not serve.
        let body =
            json!({"error": {"message": "File Not Found", "type": "not_found_error", "code": 404}});
        return (404, Vec::new(), body.to_string()).into();
    }
    if !request_line.starts_with("POST ") || kind == Kind::Unknown {
        return (404, Vec::new(), json!({"error": {"message": "not found", "type": "invalid_request_error", "param": null, "code": null}}).to_string()).into();
    }
    lock(&state.paths).push(path.to_owned());
    state.calls.fetch_add(1, Ordering::SeqCst);
    lock(&state.arrivals).push(SystemTime::now());
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if kind == Kind::Chat {
        let last = request["messages"]
            .as_array()
            .and_then(|messages| messages.last())
            .and_then(|message| message["content"].as_str())
            .unwrap_or_default()
            .to_owned();
        lock(&state.chat_messages).push(last);
    }
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
    let answer = match fault {
        Some(Fault::Status(status, retry_after)) => {
            let retry_after = retry_after.map(|s| s.to_string());
            fault_answer(status, retry_after)
        }
        Some(Fault::StatusWithRetryAfter(status, retry_after)) => {
            fault_answer(status, Some(retry_after))
        }
        Some(Fault::InvalidJson) => (200, Vec::new(), "{\"choices\": [".to_owned()),
        // As OpenAI does: embeddings and legacy completions refuse `metadata`.
        _ if matches!(kind, Kind::Completions | Kind::Embeddings)
            && request.get("metadata").is_some() =>
        {
            let body = json!({"error": {"message": "Unrecognized request argument supplied: metadata",
                "type": "invalid_request_error", "param": null, "code": null}});
            (400, Vec::new(), body.to_string())
        }
        // As an upstream refuses an input it cannot take (too long, say): the whole call.
        _ if kind == Kind::Embeddings
            && embedding_inputs(&request["input"])
                .iter()
                .any(|input| input.as_str().is_some_and(|t| t.contains("mock:reject"))) =>
        {
            lock(&state.embedding_calls).push(embedding_inputs(&request["input"]).len());
            let body = json!({"error": {"message": "an input is too long (mock:reject)",
                "type": "invalid_request_error", "param": "input", "code": null}});
            (400, Vec::new(), body.to_string())
        }
        // A streamed answer, unless a fault shapes it (a `Truncate` cuts a whole answer).
        None | Some(Fault::Delay(_)) if stream::wants_stream(kind, &request) => {
            let include_usage = request["stream_options"]["include_usage"] == true;
            let call = state.calls.load(Ordering::SeqCst);
            return Answer::Stream(stream::Streamed {
                kind,
                model: request["model"].clone(),
                call,
                include_usage,
                response: (kind == Kind::Responses).then(|| responses_answer(&request, call)),
            });
        }
        _ => {
            let call = state.calls.load(Ordering::SeqCst);
            let body = match kind {
                Kind::Embeddings => {
                    let inputs = embedding_inputs(&request["input"]);
                    lock(&state.embedding_calls).push(inputs.len());
                    embeddings_answer(&request, &inputs)
                }
                Kind::Completions => completions_answer(&request, call),
                Kind::Responses => responses_answer(&request, call),
                Kind::Chat | Kind::Unknown => answer(&request, call),
            };
            (200, Vec::new(), body.to_string())
        }
    };
    answer.into()
}

/// Which endpoint a call is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completions,
    Embeddings,
    Responses,
    Unknown,
}

/// The inputs of an embeddings request, each as a text or a token array.
fn embedding_inputs(input: &Value) -> Vec<Value> {
    match input {
        Value::Array(items) if items.iter().all(Value::is_number) && !items.is_empty() => {
            vec![input.clone()]
        }
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    }
}

/// The mock's vector for one input, made from that input alone: its length, the sum of
/// its bytes (or tokens) and its first byte (or token). Not an embedding of any meaning.
pub fn mock_embedding(input: &Value) -> Vec<f64> {
    let numbers: Vec<u64> = match input {
        Value::String(text) => text.bytes().map(u64::from).collect(),
        Value::Array(tokens) => tokens.iter().filter_map(Value::as_u64).collect(),
        _ => Vec::new(),
    };
    vec![
        numbers.len() as f64,
        numbers.iter().sum::<u64>() as f64,
        numbers.first().copied().unwrap_or(0) as f64,
    ]
}

/// The mock's token count of one input: words of a text, or the tokens of a token array.
pub fn mock_tokens(input: &Value) -> u64 {
    match input {
        Value::String(text) => text.split_whitespace().count().max(1) as u64,
        Value::Array(tokens) => tokens.len() as u64,
        _ => 0,
    }
}

fn embeddings_answer(request: &Value, inputs: &[Value]) -> Value {
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .filter(|(_, input)| !input.as_str().is_some_and(|t| t.contains("mock:drop")))
        .map(|(index, input)| {
            let vector = mock_embedding(input);
            // As OpenAI does: `base64` is the vector's little-endian `f32`s, encoded.
            let embedding = if request["encoding_format"] == "base64" {
                use base64::Engine as _;
                let bytes: Vec<u8> = vector
                    .iter()
                    .flat_map(|x| (*x as f32).to_le_bytes())
                    .collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens: u64 = inputs.iter().map(mock_tokens).sum();
    json!({
        "object": "list", "data": data, "model": request["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
    })
}

fn completions_answer(request: &Value, call: u64) -> Value {
    let prompts: Vec<String> = match &request["prompt"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(|p| p.as_str().map(str::to_owned))
            .collect(),
        Value::Array(items) if items.iter().all(Value::is_number) => {
            vec![format!("{} tokens", items.len())]
        }
        Value::Array(items) => items
            .iter()
            .map(|t| format!("{} tokens", t.as_array().map_or(0, Vec::len)))
            .collect(),
        _ => vec![String::new()],
    };
    let choices: Vec<Value> = prompts
        .iter()
        .enumerate()
        .map(|(index, prompt)| {
            json!({"text": format!("mock: {prompt}"), "index": index, "logprobs": null,
                   "finish_reason": "stop"})
        })
        .collect();
    let n = choices.len() as u64;
    json!({
        "id": format!("cmpl-mock-{call}"), "object": "text_completion",
        "created": 1_700_000_000, "model": request["model"], "system_fingerprint": "mock",
        "choices": choices,
        "usage": {"prompt_tokens": 3 * n, "completion_tokens": 2 * n, "total_tokens": 5 * n}
    })
}

/// A Responses `response` (OpenAI's shape, trimmed) answering `mock: <last user text>`.
fn responses_answer(request: &Value, call: u64) -> Value {
    let text_of = |content: &Value| match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    let last_user = match &request["input"] {
        Value::String(text) => text.clone(),
        Value::Array(items) => items
            .iter()
            .rev()
            .find(|item| item["role"] == "user")
            .map(|item| text_of(&item["content"]))
            .unwrap_or_default(),
        _ => String::new(),
    };
    json!({
        "id": format!("resp_mock_{call}"), "object": "response", "created_at": 1_700_000_000,
        "status": "completed", "error": null, "incomplete_details": null,
        "model": request["model"], "instructions": request["instructions"],
        "output": [{"type": "message", "id": format!("msg_mock_{call}"), "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": format!("mock: {last_user}"), "annotations": []}]}],
        "usage": {"input_tokens": 3, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 5}
    })
}

/// An OpenAI error answer with `status`, and `Retry-After: <retry_after>` when given.
fn fault_answer(
    status: u16,
    retry_after: Option<String>,
) -> (u16, Vec<(&'static str, String)>, String) {
    let headers = retry_after
        .map(|value| vec![("retry-after", value)])
        .unwrap_or_default();
    let body = json!({"error": {"message": format!("mock upstream fault {status}"),
                "type": if status < 500 { "invalid_request_error" } else { "server_error" },
                "param": null, "code": if status == 404 { json!("model_not_found") } else { Value::Null }}});
    (status, headers, body.to_string())
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
