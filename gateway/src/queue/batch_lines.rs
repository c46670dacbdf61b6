//! A batch's lines, which are jobs with a `batch_id`: their live counts, their enqueue
//! (once per batch and line number), their ending on a cancel or an expiry, and their pages
//! for the output files. Only SQL lives here.

use super::batch_rows::BatchRecord;
use super::db::{Conn, OptionalExtension, params};
use super::jobs::{self, Effects};
use super::notify::Change;
use super::reads;
use super::writer::WriteCtx;
use super::{QueueEvent, StoreError};
use openbeepboop::{BatchStatus, Endpoint, ErrorBody, JobStatus};

/// A batch's lines by how far they got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineCounts {
    pub total: u64,
    pub completed: u64,
    /// Failed, cancelled or expired: each goes to the error file.
    pub failed: u64,
    /// Queued or processing.
    pub open: u64,
    /// Expired: past the batch's deadline, which is their TTL (among `failed` too).
    pub expired: u64,
}

/// One validated line of a batch's input, ready to enqueue.
#[derive(Debug, Clone)]
pub struct NewLine {
    /// 1-based.
    pub line: u64,
    pub custom_id: String,
    pub model: String,
    /// The line's `body`, the job's request.
    pub payload: String,
}

/// A finished line, as the output and error files need it.
#[derive(Debug, Clone)]
pub struct LineRecord {
    pub line: u64,
    pub job_id: String,
    pub custom_id: String,
    pub status: JobStatus,
    pub result_payload: Option<String>,
    pub error: Option<ErrorBody>,
    pub upstream_status: Option<u16>,
}

/// The live counts of a batch's lines: one row, moved by every line's enqueue and ending
/// in the same transaction (`jobs::transition`), so never stale.
pub fn counts(conn: &Conn, batch_id: &str) -> Result<LineCounts, StoreError> {
    let counts = conn
        .prepare_cached(
            "SELECT lines_total, lines_completed, lines_failed, lines_expired
             FROM batches WHERE id = ?1",
        )?
        .query_row([batch_id], |row| {
            let n = |i: usize| row.get::<i64>(i).map(|n| n.max(0) as u64);
            Ok(LineCounts {
                total: n(0)?,
                completed: n(1)?,
                failed: n(2)?,
                open: 0,
                expired: n(3)?,
            })
        })
        .optional()?
        .unwrap_or_default();
    Ok(LineCounts {
        open: counts
            .total
            .saturating_sub(counts.completed + counts.failed),
        ..counts
    })
}

/// Enqueues lines of a batch still `validating`, each once: a line already stored (an
/// enqueue repeated after a crash) is skipped. Returns how many were added.
pub fn enqueue_lines(
    ctx: &mut WriteCtx<'_>,
    batch: &BatchRecord,
    lines: &[NewLine],
    priority: u8,
    max_attempts: u32,
) -> Result<usize, StoreError> {
    let status: Option<String> = ctx
        .conn
        .prepare_cached("SELECT status FROM batches WHERE id = ?1")?
        .query_row([&batch.id], |row| row.get(0))
        .optional()?;
    if status.as_deref() != Some(BatchStatus::Validating.as_str()) {
        return Ok(0);
    }
    // Only the endpoints `/v1/batches` accepts were stored; the column's check agrees.
    let endpoint: Endpoint =
        batch
            .endpoint
            .parse()
            .map_err(|message: String| StoreError::Column {
                index: 0,
                message: message.to_string(),
            })?;
    // The batch's lines run at the batch priority, but never earlier than the owner's
    // `max_priority` allows, as its own requests do.
    let earliest: Option<u8> = ctx
        .conn
        .prepare_cached("SELECT max_priority FROM api_keys WHERE id = ?1")?
        .query_row([&batch.owner_key_id], |row| row.get(0))
        .optional()?
        .flatten();
    let priority = priority.max(earliest.unwrap_or(1));
    let mut added = 0;
    for line in lines {
        // A response's id is its job's, so that a line's answer can be read and continued
        // through `/v1/responses` like any other.
        let id = match endpoint {
            Endpoint::Responses => jobs::new_response_id(),
            _ => jobs::new_job_id(),
        };
        let inserted = ctx
            .conn
            .prepare_cached(
                "INSERT INTO jobs (id, owner_key_id, model, status, priority,
                     request_payload, request_hash, request_id, max_attempts, created_at,
                     updated_at, expires_at, batch_id, custom_id, line, endpoint, est_tokens)
                 VALUES (?1, ?2, ?3, 'queued', ?4, ?5, '', ?1, ?6, ?7, ?7, ?8, ?9, ?10, ?11, ?12,
                     ?13)
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                id,
                batch.owner_key_id,
                line.model,
                priority,
                line.payload,
                max_attempts,
                ctx.now,
                batch.expires_at,
                batch.id,
                line.custom_id,
                line.line as i64,
                endpoint.as_str(),
                crate::limits::estimated_tokens(&line.payload) as i64,
            ])?;
        if inserted > 0 {
            added += 1;
            ctx.changes.push(Change {
                was_priority: None,
                batch_id: Some(batch.id.clone()),
                record: None,
                job_id: id,
                status: JobStatus::Queued,
                from: None,
                model: line.model.clone(),
                priority,
                owner: batch.owner_key_id.clone(),
                endpoint,
            });
            ctx.events.push(QueueEvent::Submitted {
                model: line.model.clone(),
                endpoint,
            });
        }
    }
    if added > 0 {
        ctx.conn
            .prepare_cached("UPDATE batches SET lines_total = lines_total + ?2 WHERE id = ?1")?
            .execute(params![batch.id, added as i64])?;
    }
    Ok(added)
}

/// Ends up to `limit` of a batch's open lines: queued ones as `to` (`cancelled` or
/// `expired`), running ones as `cancelled` (their node learns it at its next heartbeat).
/// Returns how many ended.
pub fn end_open_lines(
    ctx: &mut WriteCtx<'_>,
    batch_id: &str,
    to: JobStatus,
    error: &ErrorBody,
    limit: usize,
) -> Result<usize, StoreError> {
    let open = ctx
        .conn
        .prepare_cached(
            "SELECT id, status FROM jobs WHERE batch_id = ?1
             AND status IN ('queued', 'processing') LIMIT ?2",
        )?
        .query_map(params![batch_id, limit as i64], |row| {
            Ok((row.get::<String>(0)?, reads::status(row, 1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for (id, from) in &open {
        let to = if *from == JobStatus::Queued {
            to
        } else {
            JobStatus::Cancelled
        };
        let effects = Effects {
            error: Some((error, None)),
            ..Effects::default()
        };
        jobs::transition(ctx, id, *from, to, effects)?;
    }
    Ok(open.len())
}

/// Up to `limit` of a batch's lines after line `after`, in line order.
pub fn lines(
    conn: &Conn,
    batch_id: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<LineRecord>, StoreError> {
    let found = conn
        .prepare_cached(
            "SELECT line, id, custom_id, status, result_payload, error_payload, upstream_status
             FROM jobs WHERE batch_id = ?1 AND line > ?2 ORDER BY line LIMIT ?3",
        )?
        .query_map(params![batch_id, after as i64, limit as i64], |row| {
            let error: Option<String> = row.get(5)?;
            Ok(LineRecord {
                line: row.get::<i64>(0)?.max(0) as u64,
                job_id: row.get(1)?,
                custom_id: row.get::<Option<String>>(2)?.unwrap_or_default(),
                status: reads::status(row, 3)?,
                result_payload: row.get(4)?,
                error: error.and_then(|text| serde_json::from_str(&text).ok()),
                upstream_status: row.get(6)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(found)
}
