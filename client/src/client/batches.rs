//! The Batch API of the Rust client (`/v1/batches`): create, retrieve, list, cancel, wait,
//! and `run`, which uploads requests, waits with progress and returns results by
//! `custom_id`. It mirrors the Python client's `batches`; it must not parse chat bodies.

use super::files::idempotency_key;
use super::{Client, Error, REQUEST_TIMEOUT, Upload};
use crate::batch::{Batch, BatchList, BatchOutputLine, BatchStatus, CreateBatchRequest};
use crate::file::FilePurpose;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The endpoint a batch runs by default.
pub const CHAT_COMPLETIONS: &str = "/v1/chat/completions";

/// What `run` sends: request bodies (custom ids `request-0`, `request-1`, …, unless a body
/// has its own `custom_id` field), `(custom_id, body)` pairs, or the path of a JSONL input
/// file of `{"custom_id","method","url","body"}` lines.
#[derive(Debug, Clone)]
pub enum BatchRequests {
    Bodies(Vec<Value>),
    Pairs(Vec<(String, Value)>),
    Path(PathBuf),
}

/// Called with the batch at each read while `run` or `wait` waits.
pub type Progress = Arc<dyn Fn(&Batch) + Send + Sync>;

/// Options of `run` and `wait`.
#[derive(Clone)]
pub struct RunOptions {
    /// `/v1/chat/completions` by default.
    pub endpoint: String,
    /// `24h` by default, as at OpenAI.
    pub completion_window: String,
    /// Up to 16 string pairs, kept on the batch.
    pub metadata: Option<Map<String, Value>>,
    /// Time between two reads of the batch (1 s by default).
    pub poll_interval: Duration,
    /// How long to wait for the batch to end; `None` waits as long as it takes.
    pub timeout: Option<Duration>,
    /// Called with the batch at each read, e.g. to show `request_counts`.
    pub progress: Option<Progress>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            endpoint: CHAT_COMPLETIONS.to_owned(),
            completion_window: "24h".to_owned(),
            metadata: None,
            poll_interval: Duration::from_secs(1),
            timeout: None,
            progress: None,
        }
    }
}

impl fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunOptions")
            .field("endpoint", &self.endpoint)
            .field("completion_window", &self.completion_window)
            .field("metadata", &self.metadata)
            .field("poll_interval", &self.poll_interval)
            .field("timeout", &self.timeout)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// A line of a batch that ended without a completion: `status_code` and `body` for an
/// upstream's refusal, else `code` (`batch_cancelled`, `batch_expired`, `missing_result`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct LineError {
    pub custom_id: String,
    pub status_code: Option<u16>,
    pub body: Option<Value>,
    pub code: Option<String>,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LineError {}

/// The results of an ended batch: each request's response body or `LineError`, in input
/// order (then any other custom ids, in file order).
#[derive(Debug, Clone)]
pub struct BatchResults {
    /// The batch as it ended.
    pub batch: Batch,
    pub results: Vec<(String, Result<Value, Box<LineError>>)>,
}

impl BatchResults {
    pub fn get(&self, custom_id: &str) -> Option<&Result<Value, Box<LineError>>> {
        self.results
            .iter()
            .find(|(id, _)| id == custom_id)
            .map(|(_, result)| result)
    }

    pub fn len(&self) -> usize {
        self.results.len()
    }

    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }
}

pub struct Batches<'a> {
    pub(super) client: &'a Client,
}

impl Batches<'_> {
    /// Creates a batch (status `validating`). A fresh Idempotency-Key, reused by the
    /// client's retries, makes a retried create one batch.
    pub async fn create(&self, request: &CreateBatchRequest) -> Result<Batch, Error> {
        let key = idempotency_key();
        self.client
            .send(
                reqwest::Method::POST,
                "/v1/batches",
                Some(request),
                &[("Idempotency-Key", key)],
                REQUEST_TIMEOUT,
            )
            .await
    }

    pub async fn retrieve(&self, batch_id: &str) -> Result<Batch, Error> {
        self.client
            .get_json(&format!("/v1/batches/{batch_id}"), REQUEST_TIMEOUT)
            .await
    }

    /// Every batch of the caller, newest first, all pages.
    pub async fn list(&self) -> Result<Vec<Batch>, Error> {
        let mut batches = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = "/v1/batches?limit=100".to_owned();
            if let Some(after) = &after {
                path.push_str(&format!("&after={after}"));
            }
            let page: BatchList = self.client.get_json(&path, REQUEST_TIMEOUT).await?;
            batches.extend(page.data);
            if !page.has_more || page.last_id.is_none() {
                return Ok(batches);
            }
            after = page.last_id;
        }
    }

    /// Asks the batch to stop: queued lines end at once, running ones at their next
    /// heartbeat; the answer is usually in status `cancelling`.
    pub async fn cancel(&self, batch_id: &str) -> Result<Batch, Error> {
        let path = format!("/v1/batches/{batch_id}/cancel");
        self.client
            .send::<(), Batch>(reqwest::Method::POST, &path, None, &[], REQUEST_TIMEOUT)
            .await
    }

    /// Reads the batch every `poll_interval` until it ends, calling `progress` at each
    /// read; `BatchTimeout` after `timeout` (the batch goes on, and waiting again resumes).
    pub async fn wait(&self, batch_id: &str, options: &RunOptions) -> Result<Batch, Error> {
        let started = Instant::now();
        loop {
            let batch = self.retrieve(batch_id).await?;
            if let Some(progress) = &options.progress {
                progress(&batch);
            }
            if batch.status.is_final() {
                return Ok(batch);
            }
            let pause = match options.timeout {
                None => options.poll_interval,
                Some(timeout) => {
                    let remaining = timeout.saturating_sub(started.elapsed());
                    if remaining.is_zero() {
                        return Err(Error::BatchTimeout {
                            batch: Box::new(batch),
                            waited: timeout,
                        });
                    }
                    remaining.min(options.poll_interval)
                }
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// The results of an ended batch, in `order` and then in file order. A batch that
    /// failed validation is `Error::BatchFailed`.
    pub async fn results(&self, batch: Batch, order: &[String]) -> Result<BatchResults, Error> {
        if batch.status == BatchStatus::Failed {
            return Err(Error::BatchFailed(Box::new(batch)));
        }
        let mut found: HashMap<String, Result<Value, Box<LineError>>> = HashMap::new();
        let mut seen = Vec::new();
        for file_id in [&batch.output_file_id, &batch.error_file_id]
            .into_iter()
            .flatten()
        {
            let content = self.client.files().content(file_id).await?;
            for raw in content.split(|b| *b == b'\n') {
                if raw.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let line: BatchOutputLine =
                    serde_json::from_slice(raw).map_err(|e| Error::ApiStatus {
                        status: 200,
                        message: format!("unreadable line in `{file_id}`: {e}"),
                    })?;
                seen.push(line.custom_id.clone());
                found.insert(line.custom_id.clone(), line_outcome(line));
            }
        }
        let mut results = Vec::with_capacity(seen.len().max(order.len()));
        for custom_id in order.iter().chain(seen.iter()) {
            if results.len() >= order.len() && !found.contains_key(custom_id) {
                continue;
            }
            let outcome = found.remove(custom_id).unwrap_or_else(|| {
                Err(Box::new(LineError {
                    custom_id: custom_id.clone(),
                    status_code: None,
                    body: None,
                    code: Some("missing_result".to_owned()),
                    message: format!(
                        "request `{custom_id}` has no result in batch `{}` ({})",
                        batch.id, batch.status
                    ),
                }))
            });
            results.push((custom_id.clone(), outcome));
        }
        Ok(BatchResults { batch, results })
    }

    /// Runs requests through the Batch API: uploads them as JSONL, creates the batch,
    /// waits (see `wait`) and returns the results by custom id, in input order.
    pub async fn run(
        &self,
        requests: BatchRequests,
        options: RunOptions,
    ) -> Result<BatchResults, Error> {
        let (upload, order) = batch_input(requests, &options.endpoint).await?;
        let file = self
            .client
            .files()
            .create(upload, FilePurpose::Batch)
            .await?;
        let request = CreateBatchRequest {
            input_file_id: file.id,
            endpoint: options.endpoint.clone(),
            completion_window: options.completion_window.clone(),
            metadata: options.metadata.clone(),
            output_expires_after: None,
        };
        let batch = self.create(&request).await?;
        let batch = self.wait(&batch.id, &options).await?;
        self.results(batch, &order).await
    }
}

/// What `run` uploads, and the custom ids in input order.
async fn batch_input(
    requests: BatchRequests,
    endpoint: &str,
) -> Result<(Upload, Vec<String>), Error> {
    let pairs = match requests {
        BatchRequests::Path(path) => {
            let (filename, bytes) = Upload::Path(path).read().await?;
            // Lines the gateway will refuse are skipped: the batch fails with their numbers.
            let order = bytes
                .split(|b| *b == b'\n')
                .filter_map(|raw| serde_json::from_slice::<Value>(raw).ok())
                .filter_map(|line| line.get("custom_id")?.as_str().map(str::to_owned))
                .collect();
            return Ok((Upload::Bytes { filename, bytes }, order));
        }
        BatchRequests::Pairs(pairs) => pairs,
        BatchRequests::Bodies(bodies) => bodies
            .into_iter()
            .enumerate()
            .map(|(index, mut body)| {
                let own = body
                    .as_object_mut()
                    .and_then(|fields| fields.remove("custom_id"));
                let custom_id = match own {
                    Some(Value::String(id)) => id,
                    _ => format!("request-{index}"),
                };
                (custom_id, body)
            })
            .collect(),
    };
    if pairs.is_empty() {
        return Err(Error::Input(
            "a batch needs at least one request".to_owned(),
        ));
    }
    let mut unique = HashSet::new();
    let mut bytes = Vec::new();
    let mut order = Vec::with_capacity(pairs.len());
    for (custom_id, body) in pairs {
        if !unique.insert(custom_id.clone()) {
            return Err(Error::Input(format!(
                "custom_id `{custom_id}` is used twice: each request needs its own"
            )));
        }
        let line = serde_json::json!({
            "custom_id": custom_id, "method": "POST", "url": endpoint, "body": body,
        });
        serde_json::to_writer(&mut bytes, &line)
            .map_err(|e| Error::Input(format!("unserializable request `{custom_id}`: {e}")))?;
        bytes.push(b'\n');
        order.push(custom_id);
    }
    let filename = "requests.jsonl".to_owned();
    Ok((Upload::Bytes { filename, bytes }, order))
}

/// The response body of an output line, or the `LineError` of an error line.
fn line_outcome(line: BatchOutputLine) -> Result<Value, Box<LineError>> {
    let custom_id = line.custom_id;
    match (line.response, line.error) {
        (Some(response), None) if response.status_code < 400 => Ok(response.body),
        (Some(response), _) => {
            let detail = response.body.get("error");
            let field = |name: &str| detail.and_then(|d| d.get(name)?.as_str().map(str::to_owned));
            let shown = field("message").unwrap_or_else(|| response.body.to_string());
            Err(Box::new(LineError {
                message: format!(
                    "request `{custom_id}` failed with status {}: {shown}",
                    response.status_code
                ),
                code: field("code"),
                status_code: Some(response.status_code),
                body: Some(response.body),
                custom_id,
            }))
        }
        (None, error) => {
            let (code, message) = error.map_or((None, "no details".to_owned()), |e| {
                (Some(e.code), e.message)
            });
            Err(Box::new(LineError {
                message: format!(
                    "request `{custom_id}` failed: {}: {message}",
                    code.as_deref().unwrap_or("unknown")
                ),
                custom_id,
                status_code: None,
                body: None,
                code,
            }))
        }
    }
}

/// The first three validation errors of a failed batch, with their line numbers.
pub(super) fn failure_summary(batch: &Batch) -> String {
    let errors = batch.errors.as_ref().map_or(&[][..], |e| &e.data[..]);
    let mut shown: Vec<String> = errors
        .iter()
        .take(3)
        .map(|e| {
            let line = e.line.map_or_else(|| "?".to_owned(), |l| l.to_string());
            format!("line {line}: {}", e.message.as_deref().unwrap_or("invalid"))
        })
        .collect();
    if errors.len() > 3 {
        shown.push(format!("(and {} more)", errors.len() - 3));
    }
    if shown.is_empty() {
        return "no details".to_owned();
    }
    shown.join("; ")
}
