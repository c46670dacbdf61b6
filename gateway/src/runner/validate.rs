//! A `validating` batch: its input file read line by line, twice (judge every line, then
//! enqueue them in chunks), never held whole. Any bad line fails the batch, with its
//! 1-based number.

use super::{BatchRunner, BodyCheck};
use crate::queue::{BatchRecord, NewLine, StoreError, Visibility};
use openbeepboop::{BatchError, FilePurpose};
use serde_json::Value;
use std::collections::HashSet;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// Lines stored per writer operation.
const CHUNK: usize = 1000;
/// Problems reported at most; the first ones say enough.
const MAX_ERRORS: usize = 100;

/// A stored file read line by line, each line at most `max` bytes.
struct Lines {
    reader: BufReader<tokio::fs::File>,
    buf: Vec<u8>,
    number: u64,
    max: usize,
}

/// Why reading stopped early.
enum Stop {
    TooLong(u64),
    Io(std::io::Error),
}

impl Lines {
    /// The next non-blank line and its number, without its line break.
    async fn next(&mut self) -> Result<Option<(u64, &[u8])>, Stop> {
        loop {
            self.buf.clear();
            let limit = self.max as u64 + 1;
            let n = (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut self.buf)
                .await
                .map_err(Stop::Io)?;
            if n == 0 {
                return Ok(None);
            }
            self.number += 1;
            let len = strip_line_break(&self.buf).len();
            self.buf.truncate(len);
            if self.buf.len() > self.max {
                return Err(Stop::TooLong(self.number));
            }
            if !is_blank(&self.buf) {
                return Ok(Some((self.number, &self.buf)));
            }
        }
    }
}

/// A line as read, up to and including its `\n`, without its line break (`\n`, `\r\n`, or
/// any run of both at its end).
pub fn strip_line_break(raw: &[u8]) -> &[u8] {
    let end = raw
        .iter()
        .rposition(|b| !matches!(b, b'\n' | b'\r'))
        .map_or(0, |last| last + 1);
    &raw[..end]
}

/// Whether a line holds only ASCII whitespace: such lines are skipped, but still numbered.
pub fn is_blank(text: &[u8]) -> bool {
    text.iter().all(u8::is_ascii_whitespace)
}

fn problem(line: u64, code: &str, message: String, param: Option<&str>) -> BatchError {
    BatchError {
        code: Some(code.to_owned()),
        message: Some(message),
        param: param.map(str::to_owned),
        line: Some(line),
    }
}

/// OpenAI's limit of embedding inputs across all the lines of an embeddings batch.
pub const MAX_EMBEDDING_INPUTS: usize = 50_000;

/// How many inputs a judged line's body brings to an embeddings batch; 0 elsewhere.
fn embedding_inputs(endpoint: &str, payload: &str) -> usize {
    if endpoint != openbeepboop::Endpoint::Embeddings.as_str() {
        return 0;
    }
    serde_json::from_str::<Value>(payload)
        .ok()
        .and_then(|body| openbeepboop::embeddings::EmbeddingInput::read(&body["input"]).ok())
        .map_or(0, |input| input.len())
}

/// Validates and enqueues the batch's lines, then starts it; or fails it.
pub async fn run(runner: &BatchRunner, batch: BatchRecord) -> Result<(), StoreError> {
    let queue = &runner.queue;
    let mut lines = match open(runner, &batch).await? {
        Ok(lines) => lines,
        Err(error) => return queue.fail_batch(batch.id, vec![error]).await.map(drop),
    };
    // First pass: judge every line.
    let mut seen = HashSet::new();
    let mut errors = Vec::new();
    let mut count = 0usize;
    let mut inputs = 0usize;
    let mut model = None;
    loop {
        let (number, text) = match lines.next().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(stop) => {
                errors.push(stopped(stop, runner.settings.max_line_bytes)?);
                break;
            }
        };
        count += 1;
        if count > runner.settings.max_lines {
            errors.push(problem(
                number,
                "too_many_lines",
                format!(
                    "the input file has more than the {} lines allowed (`max_batch_lines`)",
                    runner.settings.max_lines
                ),
                None,
            ));
            break;
        }
        match judge_line(&*runner.check, &batch.endpoint, number, text, &mut seen) {
            Ok(line) => {
                inputs += embedding_inputs(&batch.endpoint, &line.payload);
                if inputs > MAX_EMBEDDING_INPUTS {
                    errors.push(problem(
                        number,
                        "too_many_embedding_inputs",
                        format!(
                            "the batch's lines hold more than {MAX_EMBEDDING_INPUTS} embedding inputs in all (OpenAI's limit for an embeddings batch)"
                        ),
                        Some("body.input"),
                    ));
                    break;
                }
                model.get_or_insert(line.model);
            }
            Err(error) if errors.len() < MAX_ERRORS => errors.push(error),
            Err(_) => break,
        }
    }
    let Some(model) = model.filter(|_| errors.is_empty()) else {
        if errors.is_empty() {
            errors.push(BatchError {
                code: Some("empty_file".to_owned()),
                message: Some("the input file holds no requests".to_owned()),
                param: None,
                line: None,
            });
        }
        return queue.fail_batch(batch.id, errors).await.map(drop);
    };
    // Second pass: enqueue, in chunks; lines stored before a crash are skipped.
    let mut lines = match open(runner, &batch).await? {
        Ok(lines) => lines,
        Err(error) => return queue.fail_batch(batch.id, vec![error]).await.map(drop),
    };
    let mut seen = HashSet::new();
    let mut chunk = Vec::with_capacity(CHUNK);
    loop {
        let next = match lines.next().await {
            Ok(Some((number, text))) => {
                judge_line(&*runner.check, &batch.endpoint, number, text, &mut seen).map_err(
                    |_| StoreError::FileIo {
                        what: "a batch's input file changed between its two reads",
                        source: std::sync::Arc::new(std::io::Error::other(batch.id.clone())),
                    },
                )?
            }
            Ok(None) => break,
            Err(stop) => {
                let error = stopped(stop, runner.settings.max_line_bytes)?;
                return queue.fail_batch(batch.id, vec![error]).await.map(drop);
            }
        };
        chunk.push(next);
        if chunk.len() == CHUNK {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
            queue
                .enqueue_lines(batch.clone(), full, runner.settings.priority)
                .await?;
        }
    }
    if !chunk.is_empty() {
        queue
            .enqueue_lines(batch.clone(), chunk, runner.settings.priority)
            .await?;
    }
    if queue.start_batch(batch.id.clone(), model).await? {
        tracing::info!(batch = %batch.id, lines = count, "batch validated and queued");
    }
    Ok(())
}

/// The input file opened for reading, or the problem that fails the batch.
async fn open(
    runner: &BatchRunner,
    batch: &BatchRecord,
) -> Result<Result<Lines, BatchError>, StoreError> {
    // Whether the creator may read the file was settled at create (an admin may use any).
    let stored = match runner
        .queue
        .files()
        .open(batch.input_file_id.clone(), Visibility::All)
        .await
    {
        Ok(stored) => stored,
        Err(StoreError::FileNotFound(id)) => {
            return Ok(Err(BatchError {
                code: Some("file_not_found".to_owned()),
                message: Some(format!("input file `{id}` no longer exists")),
                param: Some("input_file_id".to_owned()),
                line: None,
            }));
        }
        Err(other) => return Err(other),
    };
    if stored.record.purpose != FilePurpose::Batch {
        return Ok(Err(BatchError {
            code: Some("invalid_file".to_owned()),
            message: Some("the input file's purpose is not `batch`".to_owned()),
            param: Some("input_file_id".to_owned()),
            line: None,
        }));
    }
    Ok(Ok(Lines {
        reader: BufReader::with_capacity(64 * 1024, stored.file),
        buf: Vec::new(),
        number: 0,
        max: runner.settings.max_line_bytes,
    }))
}

/// A read that stopped early: a line too long fails the batch; an I/O error is retried.
fn stopped(stop: Stop, max: usize) -> Result<BatchError, StoreError> {
    match stop {
        Stop::TooLong(number) => Ok(problem(
            number,
            "line_too_long",
            format!("the line is longer than the {max} bytes allowed"),
            None,
        )),
        Stop::Io(error) => Err(StoreError::FileIo {
            what: "cannot read a batch's input file",
            source: std::sync::Arc::new(error),
        }),
    }
}

/// One line judged: `{custom_id, method: "POST", url: <endpoint>, body}`, its `custom_id`
/// new in the file (`seen` holds the earlier ones), its body a valid request that does not
/// stream, as `check` (a direct request's check) judges it. Any bytes get a verdict; a
/// refusal carries a code, a message, the line's number and, but for bad JSON, its field.
pub fn judge_line(
    check: &BodyCheck,
    endpoint: &str,
    number: u64,
    text: &[u8],
    seen: &mut HashSet<String>,
) -> Result<NewLine, BatchError> {
    let bad =
        |code: &str, message: String, param: Option<&str>| problem(number, code, message, param);
    let value: Value = serde_json::from_slice(text).map_err(|e| {
        bad(
            "invalid_json_line",
            format!("the line is not valid JSON: {e}"),
            None,
        )
    })?;
    let Value::Object(mut line) = value else {
        return Err(bad(
            "invalid_json_line",
            "the line is not a JSON object".to_owned(),
            None,
        ));
    };
    let custom_id = match line.get("custom_id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        None => {
            return Err(bad(
                "missing_custom_id",
                "missing `custom_id`: each line must have a non-empty string `custom_id`"
                    .to_owned(),
                Some("custom_id"),
            ));
        }
        Some(_) => {
            return Err(bad(
                "missing_custom_id",
                "`custom_id` must be a non-empty string".to_owned(),
                Some("custom_id"),
            ));
        }
    };
    match line.get("method") {
        Some(Value::String(method)) if method == "POST" => {}
        None => {
            return Err(bad(
                "invalid_method",
                "missing `method`: each line must have `\"method\": \"POST\"`".to_owned(),
                Some("method"),
            ));
        }
        Some(other) => {
            return Err(bad(
                "invalid_method",
                format!("`method` must be `POST`, not `{}`", shown(other)),
                Some("method"),
            ));
        }
    }
    match line.get("url") {
        Some(Value::String(url)) if url == endpoint => {}
        None => {
            return Err(bad(
                "mismatched_url",
                format!("missing `url`: each line must have `\"url\": \"{endpoint}\"`"),
                Some("url"),
            ));
        }
        Some(other) => {
            return Err(bad(
                "mismatched_url",
                format!(
                    "`url` `{}` differs from the batch's endpoint `{endpoint}`",
                    shown(other)
                ),
                Some("url"),
            ));
        }
    }
    let body = match line.remove("body") {
        Some(body @ Value::Object(_)) => body,
        None => {
            return Err(bad(
                "invalid_body",
                "missing `body`: each line must have a `body`, the request as a JSON object"
                    .to_owned(),
                Some("body"),
            ));
        }
        Some(_) => {
            return Err(bad(
                "invalid_body",
                "`body` must be a JSON object".to_owned(),
                Some("body"),
            ));
        }
    };
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(bad(
            "stream_not_allowed",
            "batch lines cannot ask for `stream: true`".to_owned(),
            Some("body.stream"),
        ));
    }
    // A Responses line is already run in the background, and a conversation is read from
    // stored responses only by a direct request.
    let responses = endpoint == openbeepboop::Endpoint::Responses.as_str();
    for (field, why) in [
        ("background", "batch lines run in the background already"),
        (
            "previous_response_id",
            "batch lines cannot continue a stored response",
        ),
    ] {
        if responses
            && body
                .get(field)
                .is_some_and(|v| !v.is_null() && v != &Value::Bool(false))
        {
            return Err(bad(
                "invalid_request",
                format!("`{field}` is not allowed in a batch line: {why}"),
                Some(&format!("body.{field}")),
            ));
        }
    }
    let payload = serde_json::to_string(&body).unwrap_or_default();
    let model = check(endpoint, payload.as_bytes()).map_err(|(message, param)| {
        let param = param.map(|p| format!("body.{p}"));
        bad("invalid_request", message, param.as_deref())
    })?;
    if !seen.insert(custom_id.clone()) {
        return Err(bad(
            "duplicate_custom_id",
            format!("`custom_id` `{custom_id}` is used by an earlier line"),
            Some("custom_id"),
        ));
    }
    Ok(NewLine {
        line: number,
        custom_id,
        model,
        payload,
    })
}

/// A field's value in a message: a string as itself, anything else as JSON, cut short.
fn shown(value: &Value) -> String {
    const MAX: usize = 100;
    let text = match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}
