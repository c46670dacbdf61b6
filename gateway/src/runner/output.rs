//! A batch's ending: its output file (the lines that completed) and its error file (the
//! others), streamed from the store into `batch_output` files, then its final status. A
//! file already recorded on the batch is not written again, so a restart finishes the job.

use crate::queue::{BatchFile, BatchRecord, LineRecord, NewFile, Queue, StoreError, stored_answer};
use openbeepboop::{
    BatchLineError, BatchOutputLine, BatchResponse, BatchStatus, Endpoint, FilePurpose, JobStatus,
};
use serde_json::Value;

/// Lines read from the store per page.
const PAGE: usize = 1000;

/// Writes the files the batch still lacks, then moves it from `from` to `to`.
pub async fn finish(
    queue: &Queue,
    batch: &BatchRecord,
    from: BatchStatus,
    to: BatchStatus,
) -> Result<(), StoreError> {
    if batch.output_file_id.is_none() && batch.counts.completed > 0 {
        write(queue, batch, BatchFile::Output, to).await?;
    }
    if batch.error_file_id.is_none() && batch.counts.failed > 0 {
        write(queue, batch, BatchFile::Error, to).await?;
    }
    if queue.move_batch(batch.id.clone(), from, to).await? {
        tracing::info!(
            batch = %batch.id,
            status = %to,
            completed = batch.counts.completed,
            failed = batch.counts.failed,
            "batch ended"
        );
    }
    Ok(())
}

/// Streams one of the batch's files from its lines and records it on the batch.
pub(super) async fn write(
    queue: &Queue,
    batch: &BatchRecord,
    which: BatchFile,
    ending: BatchStatus,
) -> Result<(), StoreError> {
    // Only the endpoints `/v1/batches` accepts are stored; one this gateway cannot read
    // would leave the answers exactly as the nodes gave them.
    let endpoint: Endpoint = batch.endpoint.parse().unwrap_or_default();
    let mut upload = queue.files().begin().await?;
    let mut after = 0;
    let mut written = 0u64;
    loop {
        let page = queue.batch_lines(batch.id.clone(), after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.line;
        for line in &page {
            let entry = match (which, line.status) {
                (BatchFile::Output, JobStatus::Completed) => output_line(line, endpoint),
                (
                    BatchFile::Error,
                    JobStatus::Failed | JobStatus::Cancelled | JobStatus::Expired,
                ) => error_line(line, ending),
                _ => continue,
            };
            let mut text = serde_json::to_vec(&entry).unwrap_or_default();
            text.push(b'\n');
            upload.write(&text).await?;
            written += 1;
        }
    }
    let kind = match which {
        BatchFile::Output => "output",
        BatchFile::Error => "error",
    };
    let file = NewFile {
        owner_key_id: batch.owner_key_id.clone(),
        purpose: FilePurpose::BatchOutput,
        filename: format!("{}_{kind}.jsonl", batch.id),
        expires_after: batch.output_expires_after,
        idempotency_key: None,
    };
    let id = queue
        .store_batch_file(upload, file, batch.id.clone(), which)
        .await?;
    tracing::debug!(batch = %batch.id, file = %id, lines = written, "batch file written");
    Ok(())
}

/// The id of a line's entry: `batch_req_` and its job's hex digits.
fn entry_id(line: &LineRecord) -> String {
    format!(
        "batch_req_{}",
        line.job_id
            .strip_prefix("job-")
            .or_else(|| line.job_id.strip_prefix("resp_"))
            .unwrap_or(&line.job_id)
    )
}

fn output_line(line: &LineRecord, endpoint: Endpoint) -> BatchOutputLine {
    let body = stored_answer(endpoint, &line.job_id, line.result_payload.as_deref())
        .unwrap_or(Value::Null);
    BatchOutputLine {
        id: entry_id(line),
        custom_id: line.custom_id.clone(),
        response: Some(BatchResponse {
            status_code: 200,
            request_id: line.job_id.clone(),
            body,
        }),
        error: None,
    }
}

/// An upstream's 4xx keeps its status and body; anything else is an `error`.
fn error_line(line: &LineRecord, ending: BatchStatus) -> BatchOutputLine {
    let upstream = line
        .upstream_status
        .filter(|status| (400..500).contains(status) && line.status == JobStatus::Failed);
    if let Some(status_code) = upstream {
        return BatchOutputLine {
            id: entry_id(line),
            custom_id: line.custom_id.clone(),
            response: Some(BatchResponse {
                status_code,
                request_id: line.job_id.clone(),
                body: serde_json::json!({ "error": line.error }),
            }),
            error: None,
        };
    }
    let code = match (line.status, ending) {
        (JobStatus::Expired, _) | (JobStatus::Cancelled, BatchStatus::Expired) => {
            "batch_expired".to_owned()
        }
        (JobStatus::Cancelled, _) => "batch_cancelled".to_owned(),
        _ => line
            .error
            .as_ref()
            .and_then(|e| e.code.clone())
            .unwrap_or_else(|| "request_failed".to_owned()),
    };
    let message = line.error.as_ref().map_or_else(
        || format!("the line ended {}", line.status),
        |e| e.message.clone(),
    );
    BatchOutputLine {
        id: entry_id(line),
        custom_id: line.custom_id.clone(),
        response: None,
        error: Some(BatchLineError { code, message }),
    }
}
