//! The Rust user library: submit chat completions as jobs and collect the results, with
//! the same shape as the Python package.

mod batches;
mod embeddings;
mod files;
mod jobs;
mod responses;
mod submit;

pub use batches::{
    BatchRequests, BatchResults, Batches, CHAT_COMPLETIONS, LineError, Progress, RunOptions,
};
pub use embeddings::Embeddings;
pub use files::{Files, Upload};
pub use jobs::{JobHandle, Jobs};
pub use responses::Responses;

use crate::batch::Batch;
use crate::chat::ChatCompletionRequest;
use crate::error::ErrorEnvelope;
use crate::ids::JobId;
use crate::job::Job;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The longest single long-poll the client asks for.
const LONG_POLL: Duration = Duration::from_secs(60);
const MAX_POLL_IDS: usize = 1000;
/// The longest wait a `Retry-After` can ask of the client.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Errors, named like the OpenAI SDK's exceptions, plus the ways a job can end badly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("authentication failed (401): {0}")]
    Authentication(String),
    #[error("permission denied (403): {0}")]
    PermissionDenied(String),
    #[error("not found (404): {0}")]
    NotFound(String),
    #[error("rate limited (429): {0}")]
    RateLimit(String),
    #[error("the gateway answered {status}: {message}")]
    ApiStatus { status: u16, message: String },
    #[error("cannot reach the gateway: {0}")]
    ApiConnection(String),
    #[error("job `{}` failed: {}", .0.id, error_message(.0))]
    JobFailed(Box<Job>),
    #[error("job `{}` was cancelled", .0.id)]
    JobCancelled(Box<Job>),
    #[error("job `{}` expired before a node ran it", .0.id)]
    JobExpired(Box<Job>),
    #[error("job `{id}` did not finish within {waited:?}")]
    JobTimeout { id: JobId, waited: Duration },
    #[error("invalid client settings: {0}")]
    Config(String),
    /// The batch failed validation: its `errors.data` name each bad line (1-based).
    #[error("batch `{}` failed: {}", .0.id, batches::failure_summary(.0))]
    BatchFailed(Box<Batch>),
    /// The batch had not ended after `waited`; it goes on running on the gateway.
    #[error("batch `{}` is still {} after {waited:?}", .batch.id, .batch.status)]
    BatchTimeout { batch: Box<Batch>, waited: Duration },
    /// A local input could not be read or made into a batch.
    #[error("invalid batch input: {0}")]
    Input(String),
}

fn error_message(job: &Job) -> &str {
    job.error
        .as_ref()
        .map_or("no details", |e| e.message.as_str())
}

/// Options of one submit.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    /// The same key returns the same job; one is generated when absent.
    pub idempotency_key: Option<String>,
    /// 1 (first) to 5.
    pub priority: Option<u8>,
    /// How long the job may wait in the queue.
    pub ttl: Option<Duration>,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    key: String,
    max_retries: u32,
}

/// A client of an OpenBeepBoop gateway. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    pub fn new(base_url: &str, api_key: &str) -> Result<Self, Error> {
        let base = base_url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base).to_owned();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                key: api_key.to_owned(),
                max_retries: 3,
            }),
        })
    }

    /// Reads `OBB_BASE_URL` (default `http://localhost:8000`) and `OBB_API_KEY`.
    pub fn from_env() -> Result<Self, Error> {
        let base =
            std::env::var("OBB_BASE_URL").unwrap_or_else(|_| "http://localhost:8000".to_owned());
        let key = std::env::var("OBB_API_KEY")
            .map_err(|_| Error::Config("set OBB_API_KEY or use Client::new".to_owned()))?;
        Self::new(&base, &key)
    }

    /// How often connection errors, 429 and 5xx are retried (3 by default).
    #[must_use]
    pub fn with_max_retries(self, retries: u32) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(Inner {
                http: inner.http.clone(),
                base: inner.base.clone(),
                key: inner.key.clone(),
                max_retries: retries,
            }),
        }
    }

    pub fn chat(&self) -> Chat<'_> {
        Chat { client: self }
    }

    pub fn jobs(&self) -> Jobs<'_> {
        Jobs { client: self }
    }

    /// The Files API (`/v1/files`), for Batch API inputs and outputs.
    pub fn files(&self) -> Files<'_> {
        Files { client: self }
    }

    /// The Batch API (`/v1/batches`); `run` uploads, creates, waits and collects results.
    pub fn batches(&self) -> Batches<'_> {
        Batches { client: self }
    }

    /// Sends a JSON request and reads a JSON answer, retrying as `send_raw` does.
    async fn send<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        headers: &[(&str, String)],
        timeout: Duration,
    ) -> Result<T, Error> {
        let body = body
            .map(|b| serde_json::to_vec(b).map(|bytes| ("application/json".to_owned(), bytes)))
            .transpose()
            .map_err(|e| Error::Config(format!("unserializable request: {e}")))?;
        let (status, bytes) = self.send_raw(method, path, body, headers, timeout).await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::ApiStatus {
            status,
            message: format!("unreadable answer: {e}"),
        })
    }

    /// Sends a request with a body of its content type, retrying transient failures with
    /// backoff and `Retry-After`; the status and bytes of a success.
    async fn send_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(String, Vec<u8>)>,
        headers: &[(&str, String)],
        timeout: Duration,
    ) -> Result<(u16, Vec<u8>), Error> {
        let mut attempt = 0;
        loop {
            let mut request = self
                .inner
                .http
                .request(method.clone(), format!("{}{path}", self.inner.base))
                .bearer_auth(&self.inner.key)
                .timeout(timeout);
            for (name, value) in headers {
                request = request.header(*name, value);
            }
            if let Some((content_type, bytes)) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(bytes.clone());
            }
            let retry = match request.send().await {
                Err(error) => {
                    if attempt >= self.inner.max_retries {
                        return Err(Error::ApiConnection(error.to_string()));
                    }
                    None
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let no_retry = response
                        .headers()
                        .get("x-should-retry")
                        .is_some_and(|v| v.as_bytes() == b"false");
                    let headers = response.headers();
                    let retry_after = crate::retry_after::from_headers(
                        |name| headers.get(name).and_then(|v| v.to_str().ok()),
                        status,
                        SystemTime::now(),
                    )
                    .map(|delay| delay.min(MAX_RETRY_AFTER));
                    let bytes = response
                        .bytes()
                        .await
                        .map_err(|e| Error::ApiConnection(e.to_string()))?;
                    if status < 400 {
                        return Ok((status, bytes.to_vec()));
                    }
                    let transient = (status == 429 || status >= 500) && !no_retry;
                    if !transient || attempt >= self.inner.max_retries {
                        return Err(status_error(status, &String::from_utf8_lossy(&bytes)));
                    }
                    retry_after
                }
            };
            let delay = retry.unwrap_or_else(|| {
                let ceiling = Duration::from_millis(500 * (1 << attempt.min(4)));
                ceiling / 2 + (ceiling / 2).mul_f64(rand::random::<f64>())
            });
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<T, Error> {
        self.send::<(), T>(reqwest::Method::GET, path, None, &[], timeout)
            .await
    }
}

fn status_error(status: u16, text: &str) -> Error {
    let message = serde_json::from_str::<ErrorEnvelope>(text)
        .map(|e| e.error.message)
        .unwrap_or_else(|_| text.chars().take(300).collect());
    match status {
        401 => Error::Authentication(message),
        403 => Error::PermissionDenied(message),
        404 => Error::NotFound(message),
        429 => Error::RateLimit(message),
        _ => Error::ApiStatus { status, message },
    }
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Chat<'a> {
    client: &'a Client,
}

impl<'a> Chat<'a> {
    pub fn completions(&self) -> Completions<'a> {
        Completions {
            client: self.client,
        }
    }
}

pub struct Completions<'a> {
    client: &'a Client,
}

impl Completions<'_> {
    /// Submits a request and returns at once with its job.
    pub async fn create(&self, request: ChatCompletionRequest) -> Result<JobHandle, Error> {
        self.create_with(request, SubmitOptions::default()).await
    }

    /// Submits with options. Every submit carries an Idempotency-Key, so a retry after a
    /// lost answer never creates a second job.
    ///
    /// `stream` and `stream_options` are dropped: this client submits jobs and reads their
    /// results, and the gateway answers a `stream: true` request with an event stream.
    pub async fn create_with(
        &self,
        mut request: ChatCompletionRequest,
        options: SubmitOptions,
    ) -> Result<JobHandle, Error> {
        request.stream = None;
        request.extra.remove("stream_options");
        let job: Job = submit::post(self.client, "/v1/chat/completions", &request, options).await?;
        Ok(JobHandle {
            client: self.client.clone(),
            job,
        })
    }

    /// Submits many requests concurrently. Request `i` uses the key `{batch_id}-{i}`, so
    /// calling again with the same `batch_id` returns the same jobs.
    pub async fn create_many(
        &self,
        requests: Vec<ChatCompletionRequest>,
        batch_id: Option<&str>,
    ) -> Result<Vec<JobHandle>, Error> {
        let batch =
            batch_id.map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned);
        let mut tasks = tokio::task::JoinSet::new();
        for (index, request) in requests.into_iter().enumerate() {
            let client = self.client.clone();
            let key = format!("{batch}-{index}");
            tasks.spawn(async move {
                let options = SubmitOptions {
                    idempotency_key: Some(key),
                    ..SubmitOptions::default()
                };
                (
                    index,
                    client
                        .chat()
                        .completions()
                        .create_with(request, options)
                        .await,
                )
            });
        }
        let mut handles: Vec<Option<JobHandle>> = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (index, handle) =
                joined.map_err(|e| Error::Config(format!("a submit task failed: {e}")))?;
            if handles.len() <= index {
                handles.resize_with(index + 1, || None);
            }
            handles[index] = Some(handle?);
        }
        Ok(handles.into_iter().flatten().collect())
    }
}
