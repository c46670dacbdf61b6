//! The `batches` table: inserts, reads, pages and the batch's status changes. Its lines are
//! `batch_lines`'. Only SQL lives here; what runs a batch is `runner`'s.

use super::batch_lines::{LineCounts, counts};
use super::db::{Conn, OptionalExtension, Row, Value, params, params_from_iter};
use super::reads::{self, owner_filter};
use super::writer::WriteCtx;
use super::{StoreError, Visibility};
use openbeepboop::{
    Batch, BatchError, BatchErrors, BatchRequestCounts, BatchStatus, BatchUsage,
    InputTokensDetails, OutputTokensDetails,
};
use serde_json::Map;

const COLUMNS: &str = "id, owner_key_id, status, endpoint, model, input_file_id, \
    completion_window, metadata, output_expires_after, errors, output_file_id, error_file_id, \
    usage, created_at, expires_at, in_progress_at, finalizing_at, completed_at, failed_at, \
    expired_at, cancelling_at, cancelled_at";

/// A batch as the store hands it out, its request counts counted from its lines. Times are
/// Unix ms.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRecord {
    pub id: String,
    pub owner_key_id: String,
    pub status: BatchStatus,
    pub endpoint: String,
    pub model: Option<String>,
    pub input_file_id: String,
    pub completion_window: String,
    pub metadata: Option<Map<String, serde_json::Value>>,
    /// Seconds the output files live after their creation.
    pub output_expires_after: Option<u64>,
    pub errors: Option<Vec<BatchError>>,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    pub usage: Option<BatchUsage>,
    pub created_at: i64,
    pub expires_at: i64,
    /// `in_progress_at`, `finalizing_at`, `completed_at`, `failed_at`, `expired_at`,
    /// `cancelling_at`, `cancelled_at`, in that order.
    pub times: [Option<i64>; 7],
    pub counts: LineCounts,
}

impl BatchRecord {
    /// OpenAI's `batch` object. Times are Unix seconds.
    pub fn to_wire(&self) -> Batch {
        let s = |ms: Option<i64>| ms.map(|ms| ms / 1000);
        let [
            in_progress,
            finalizing,
            completed,
            failed,
            expired,
            cancelling,
            cancelled,
        ] = self.times;
        Batch {
            id: self.id.clone(),
            object: "batch".to_owned(),
            endpoint: self.endpoint.clone(),
            model: self.model.clone(),
            input_file_id: self.input_file_id.clone(),
            completion_window: self.completion_window.clone(),
            status: self.status,
            errors: self.errors.clone().map(|data| BatchErrors {
                object: "list".to_owned(),
                data,
            }),
            output_file_id: self.output_file_id.clone(),
            error_file_id: self.error_file_id.clone(),
            created_at: self.created_at / 1000,
            in_progress_at: s(in_progress),
            expires_at: Some(self.expires_at / 1000),
            finalizing_at: s(finalizing),
            completed_at: s(completed),
            failed_at: s(failed),
            expired_at: s(expired),
            cancelling_at: s(cancelling),
            cancelled_at: s(cancelled),
            request_counts: BatchRequestCounts {
                total: self.counts.total,
                completed: self.counts.completed,
                failed: self.counts.failed,
            },
            usage: self.usage,
            metadata: self.metadata.clone(),
        }
    }
}

/// A validated `POST /v1/batches`, ready to store.
#[derive(Debug, Clone)]
pub struct NewBatch {
    pub owner_key_id: String,
    pub endpoint: String,
    pub input_file_id: String,
    pub completion_window: String,
    /// The window's length in ms: the batch expires that long after its creation.
    pub window_ms: i64,
    pub metadata: Option<Map<String, serde_json::Value>>,
    pub output_expires_after: Option<u64>,
    pub idempotency_key: Option<String>,
    pub request_hash: String,
}

fn json<T: serde::de::DeserializeOwned>(
    row: &Row<'_>,
    index: usize,
) -> Result<Option<T>, StoreError> {
    let text: Option<String> = row.get(index)?;
    text.map(|text| {
        serde_json::from_str(&text).map_err(|e| StoreError::Column {
            index,
            message: e.to_string(),
        })
    })
    .transpose()
}

fn record(row: &Row<'_>) -> Result<BatchRecord, StoreError> {
    let status: String = row.get(2)?;
    let mut times = [None; 7];
    for (i, time) in times.iter_mut().enumerate() {
        *time = row.get(15 + i)?;
    }
    Ok(BatchRecord {
        id: row.get(0)?,
        owner_key_id: row.get(1)?,
        status: status.parse().map_err(|e: String| StoreError::Column {
            index: 2,
            message: e.to_string(),
        })?,
        endpoint: row.get(3)?,
        model: row.get(4)?,
        input_file_id: row.get(5)?,
        completion_window: row.get(6)?,
        metadata: json(row, 7)?,
        output_expires_after: row.get::<Option<i64>>(8)?.map(|s| s.max(0) as u64),
        errors: json(row, 9)?,
        output_file_id: row.get(10)?,
        error_file_id: row.get(11)?,
        usage: json(row, 12)?,
        created_at: row.get(13)?,
        expires_at: row.get(14)?,
        times,
        counts: LineCounts::default(),
    })
}

fn with_counts(conn: &Conn, mut batch: BatchRecord) -> Result<BatchRecord, StoreError> {
    batch.counts = counts(conn, &batch.id)?;
    Ok(batch)
}

/// A new batch id: `batch_` and 32 hex digits, time-ordered.
pub fn new_batch_id() -> String {
    format!("batch_{}", uuid::Uuid::now_v7().simple())
}

/// Inserts the batch in `validating`, or returns the one an earlier create with the same
/// idempotency key stored (`false`: not created). The same key with another request is a
/// conflict.
pub fn insert(ctx: &WriteCtx<'_>, batch: &NewBatch) -> Result<(BatchRecord, bool), StoreError> {
    if let Some(key) = &batch.idempotency_key {
        let existing = ctx
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS}, request_hash FROM batches
                 WHERE owner_key_id = ?1 AND idempotency_key = ?2"
            ))?
            .query_row(params![batch.owner_key_id, key], |row| {
                Ok((record(row)?, row.get::<String>(22)?))
            })
            .optional()?;
        if let Some((record, hash)) = existing {
            return if hash == batch.request_hash {
                Ok((with_counts(ctx.conn, record)?, false))
            } else {
                Err(StoreError::IdempotencyConflict {
                    key: key.clone(),
                    used_on: None,
                })
            };
        }
    }
    let id = new_batch_id();
    let metadata = batch
        .metadata
        .as_ref()
        .map(|m| serde_json::to_string(m).unwrap_or_default());
    ctx.conn
        .prepare_cached(
            "INSERT INTO batches (id, owner_key_id, status, endpoint, input_file_id,
                 completion_window, metadata, output_expires_after, idempotency_key,
                 request_hash, created_at, expires_at)
             VALUES (?1, ?2, 'validating', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            id,
            batch.owner_key_id,
            batch.endpoint,
            batch.input_file_id,
            batch.completion_window,
            metadata,
            batch.output_expires_after.map(|s| s as i64),
            batch.idempotency_key,
            batch.request_hash,
            ctx.now,
            ctx.now.saturating_add(batch.window_ms),
        ])?;
    let record = by_id(ctx.conn, &id, &Visibility::All)?.ok_or(StoreError::BatchNotFound(id))?;
    Ok((record, true))
}

/// The batch, with its live counts, when `who` may see it.
pub fn by_id(conn: &Conn, id: &str, who: &Visibility) -> Result<Option<BatchRecord>, StoreError> {
    let (owner, owner_value) = owner_filter(who, 2);
    let mut values = vec![Value::Text(id.to_owned())];
    values.extend(owner_value);
    let found = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM batches WHERE id = ?1 {owner}"
        ))?
        .query_row(params_from_iter(values), record)
        .optional()?;
    found.map(|b| with_counts(conn, b)).transpose()
}

/// The batch in row `seq`, with its live counts, whoever owns it: what the writer re-reads
/// after a commit changed the row (see `live_batches`).
pub fn by_seq(conn: &Conn, seq: i64) -> Result<Option<BatchRecord>, StoreError> {
    let found = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM batches WHERE seq = ?1"))?
        .query_row([seq], record)
        .optional()?;
    found.map(|b| with_counts(conn, b)).transpose()
}

/// A page of the batches `who` may see, newest first, older than the batch `after`.
pub fn list(
    conn: &Conn,
    who: &Visibility,
    limit: usize,
    after: Option<&str>,
) -> Result<(Vec<BatchRecord>, bool), StoreError> {
    let (owner, owner_value) = owner_filter(who, 1);
    let mut values = vec![owner_value.unwrap_or(Value::Null)];
    let mut conditions = vec![owner.clone()];
    if let Some(after) = after {
        values.push(Value::Text(after.to_owned()));
        conditions.push(format!(
            "AND seq < COALESCE((SELECT seq FROM batches WHERE id = ?2 {owner}), -1)"
        ));
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM batches WHERE (CAST(?1 AS TEXT) IS NULL OR 1 = 1) {} ORDER BY seq DESC",
        conditions.join(" "),
    );
    let (page, more) = reads::page(conn, &sql, values, limit, record)?;
    let page = page
        .into_iter()
        .map(|b| with_counts(conn, b))
        .collect::<Result<_, _>>()?;
    Ok((page, more))
}

/// The batches the runner has work on.
pub fn active(conn: &Conn) -> Result<Vec<BatchRecord>, StoreError> {
    let found = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM batches
             WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling')
             ORDER BY seq"
        ))?
        .query_map(params![], record)?
        .collect::<Result<Vec<_>, _>>()?;
    found.into_iter().map(|b| with_counts(conn, b)).collect()
}

/// Whether a batch may move from one status to another. Final statuses never change.
pub fn allowed(from: BatchStatus, to: BatchStatus) -> bool {
    use BatchStatus::*;
    matches!(
        (from, to),
        (Validating, InProgress | Failed | Cancelling)
            | (InProgress, Finalizing | Cancelling | Expired)
            | (Finalizing, Completed | Expired)
            | (Cancelling, Cancelled)
    )
}

/// The one place a batch's status changes, with the timestamp of the status it reaches. A
/// final status also gets the usage totalled from the completed lines. Returns false when
/// the batch was not in `from`.
pub fn transition(
    ctx: &WriteCtx<'_>,
    id: &str,
    from: BatchStatus,
    to: BatchStatus,
) -> Result<bool, StoreError> {
    if !allowed(from, to) {
        return Err(StoreError::IllegalBatchTransition {
            id: id.to_owned(),
            from,
            to,
        });
    }
    let usage = if to.is_final() {
        Some(serde_json::to_string(&usage(ctx.conn, id)?).unwrap_or_default())
    } else {
        None
    };
    let column = format!("{}_at", to.as_str());
    // Finalizing writes the output from the lines as they are: a line an admin queued again
    // since the caller counted them (`retry`) keeps the batch in progress.
    let settled = if to == BatchStatus::Finalizing {
        "AND NOT EXISTS (SELECT 1 FROM jobs WHERE batch_id = ?1 AND status IN ('queued', 'processing'))"
    } else {
        ""
    };
    let changed = ctx
        .conn
        .prepare_cached(&format!(
            "UPDATE batches SET status = ?3, {column} = ?4, usage = COALESCE(?5, usage)
             WHERE id = ?1 AND status = ?2 {settled}"
        ))?
        .execute(params![id, from.as_str(), to.as_str(), ctx.now, usage])?;
    Ok(changed > 0)
}

/// The completed lines' tokens, totalled from their stored completions.
fn usage(conn: &Conn, batch_id: &str) -> Result<BatchUsage, StoreError> {
    conn.prepare_cached(conn.pick(
        "SELECT COALESCE(SUM(json_extract(result_payload, '$.usage.prompt_tokens')), 0),
                 COALESCE(SUM(json_extract(result_payload,
                     '$.usage.prompt_tokens_details.cached_tokens')), 0),
                 COALESCE(SUM(json_extract(result_payload, '$.usage.completion_tokens')), 0),
                 COALESCE(SUM(json_extract(result_payload,
                     '$.usage.completion_tokens_details.reasoning_tokens')), 0)
             FROM jobs WHERE batch_id = ?1 AND status = 'completed' AND json_valid(result_payload)",
        // `obb_json` (the schema's) is null for what is not JSON, as `json_valid` skips it.
        "SELECT CAST(COALESCE(SUM((obb_json(result_payload)
                     #>> '{usage,prompt_tokens}')::numeric), 0) AS BIGINT),
                 CAST(COALESCE(SUM((obb_json(result_payload)
                     #>> '{usage,prompt_tokens_details,cached_tokens}')::numeric), 0) AS BIGINT),
                 CAST(COALESCE(SUM((obb_json(result_payload)
                     #>> '{usage,completion_tokens}')::numeric), 0) AS BIGINT),
                 CAST(COALESCE(SUM((obb_json(result_payload)
                     #>> '{usage,completion_tokens_details,reasoning_tokens}')::numeric), 0)
                     AS BIGINT)
             FROM jobs WHERE batch_id = ?1 AND status = 'completed'",
    ))?
    .query_row([batch_id], |row| {
        let n = |i: usize| row.get::<i64>(i).map(|v| v.max(0) as u64);
        let (input, output) = (n(0)?, n(2)?);
        Ok(BatchUsage {
            input_tokens: input,
            input_tokens_details: InputTokensDetails {
                cached_tokens: n(1)?,
            },
            output_tokens: output,
            output_tokens_details: OutputTokensDetails {
                reasoning_tokens: n(3)?,
            },
            total_tokens: input + output,
        })
    })
}

/// Fails a `validating` batch with the problems found in its input.
pub fn fail(ctx: &WriteCtx<'_>, id: &str, errors: &[BatchError]) -> Result<bool, StoreError> {
    let errors = serde_json::to_string(errors).unwrap_or_default();
    ctx.conn
        .prepare_cached("UPDATE batches SET errors = ?2 WHERE id = ?1 AND status = 'validating'")?
        .execute(params![id, errors])?;
    transition(ctx, id, BatchStatus::Validating, BatchStatus::Failed)
}

/// Records the batch's model (its first line's) as it starts.
pub fn set_model(ctx: &WriteCtx<'_>, id: &str, model: &str) -> Result<(), StoreError> {
    ctx.conn
        .prepare_cached("UPDATE batches SET model = ?2 WHERE id = ?1")?
        .execute(params![id, model])?;
    Ok(())
}

/// Which of a batch's files a new file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchFile {
    Output,
    Error,
}

impl BatchFile {
    pub const ALL: [BatchFile; 2] = [BatchFile::Output, BatchFile::Error];

    /// Its name in metrics' labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchFile::Output => "output",
            BatchFile::Error => "error",
        }
    }
}

/// How many batches are in each status, for the metrics. Batches are few (each holds up to
/// 50,000 lines), so counting the table at a scrape costs far less than the jobs it holds.
pub fn count_by_status(conn: &Conn) -> Result<Vec<(BatchStatus, i64)>, StoreError> {
    let mut statement =
        conn.prepare_cached("SELECT status, COUNT(*) FROM batches GROUP BY status")?;
    let rows = statement.query_map(params![], |row| {
        Ok((row.get::<String>(0)?, row.get::<i64>(1)?))
    })?;
    let mut counts = Vec::new();
    for row in rows {
        let (status, count) = row?;
        // A status this build does not know is left out rather than failing the scrape.
        if let Ok(status) = status.parse::<BatchStatus>() {
            counts.push((status, count));
        }
    }
    Ok(counts)
}

/// Records a batch's output or error file, in the file row's transaction.
pub fn set_file(
    ctx: &WriteCtx<'_>,
    id: &str,
    which: BatchFile,
    file_id: &str,
) -> Result<(), StoreError> {
    let column = match which {
        BatchFile::Output => "output_file_id",
        BatchFile::Error => "error_file_id",
    };
    ctx.conn
        .prepare_cached(&format!("UPDATE batches SET {column} = ?2 WHERE id = ?1"))?
        .execute(params![id, file_id])?;
    Ok(())
}
