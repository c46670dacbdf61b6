//! Operators' changes to jobs: a retry of an ended job, a bulk retry by filter, and a
//! queued job's new priority. Each is recorded in the job's `events`. Everything here runs
//! inside the writer's transactions; the status change itself goes through
//! [`jobs::transition`].

use super::db::{params, params_from_iter};
use super::jobs::{self, Effects};
use super::writer::WriteCtx;
use super::{Change, JobFilter, JobRecord, StoreError, Visibility, reads};
use openbeepboop::{JobEvent, JobStatus};

/// A job keeps its latest operator events only: a job retried in a loop must not grow
/// without bound.
const MAX_EVENTS: usize = 100;

/// Jobs a bulk retry changes in one transaction: a big retry must not hold the writer
/// (and every submit behind it) for long.
pub const BULK_CHUNK: usize = 1_000;

/// `events` with `event` appended, as stored.
fn appended(events: Option<&str>, event: JobEvent) -> String {
    let mut list: Vec<JobEvent> = events
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    list.push(event);
    let skip = list.len().saturating_sub(MAX_EVENTS);
    serde_json::to_string(&list[skip..]).unwrap_or_else(|_| "[]".to_owned())
}

/// Queues failed, expired or cancelled job `id` again: attempts reset, a new expiry (now +
/// the time to live it was submitted with; a batch's line keeps its batch's deadline), its
/// answer and error cleared, a `retried` event added. A line of a batch that is no longer
/// in progress is refused.
pub fn retry(ctx: &mut WriteCtx<'_>, id: &str) -> Result<JobRecord, StoreError> {
    let record = reads::job(ctx.conn, id, &Visibility::All)?
        .ok_or_else(|| StoreError::JobNotFound(id.to_owned()))?;
    if !jobs::retryable(record.status) {
        return Err(StoreError::NotRetryable {
            id: id.to_owned(),
            status: record.status,
        });
    }
    let (ttl, batch): (Option<i64>, Option<(String, String)>) = ctx
        .conn
        .prepare_cached(
            "SELECT j.ttl_ms, b.id, b.status FROM jobs j LEFT JOIN batches b ON b.id = j.batch_id
             WHERE j.id = ?1",
        )?
        .query_row(params![id], |row| {
            let batch: Option<String> = row.get(1)?;
            let status: Option<String> = row.get(2)?;
            Ok((row.get(0)?, batch.zip(status)))
        })?;
    if let Some((batch_id, status)) = &batch
        && status != "in_progress"
    {
        return Err(StoreError::BatchNotRunning {
            id: id.to_owned(),
            batch_id: batch_id.clone(),
            status: status.clone(),
        });
    }
    let effects = Effects {
        retry: true,
        ..Effects::default()
    };
    if !jobs::transition(ctx, id, record.status, JobStatus::Queued, effects)? {
        return Err(StoreError::JobNotFound(id.to_owned()));
    }
    let event = JobEvent::Retried {
        at: ctx.now / 1000,
        from: record.status,
        attempts: record.attempts,
        error: record.error.clone(),
    };
    // A line keeps its batch's deadline; a job gets the time to live it was submitted with
    // (read from its times when it predates `ttl_ms`, before any retry moved them).
    let expires_at = if batch.is_some() {
        record.expires_at
    } else {
        ctx.now + ttl.unwrap_or(record.expires_at - record.created_at).max(0)
    };
    ctx.conn
        .prepare_cached(
            "UPDATE jobs SET attempts = 0, result_payload = NULL, error_payload = NULL,
                 upstream_status = NULL, lease_id = NULL, result_lease_id = NULL,
                 locked_by = NULL, locked_at = NULL, first_relayed_at = NULL,
                 expires_at = ?2, events = ?3, ttl_ms = COALESCE(ttl_ms, ?4)
             WHERE id = ?1",
        )?
        .execute(params![
            id,
            expires_at,
            appended(record.events.as_deref(), event),
            // A job stored before `ttl_ms` keeps the one read from its times: a later retry
            // must not count the time it waited as time to live.
            (batch.is_none()).then_some(expires_at - ctx.now),
        ])?;
    if let Some((batch_id, _)) = batch {
        // The line is counted again when it ends again (`jobs::count_line_ending`).
        ctx.conn
            .prepare_cached(
                "UPDATE batches SET lines_failed = lines_failed - 1,
                     lines_expired = lines_expired - ?2
                 WHERE id = ?1",
            )?
            .execute(params![
                batch_id,
                i64::from(record.status == JobStatus::Expired)
            ])?;
    }
    reads::job(ctx.conn, id, &Visibility::All)?
        .ok_or_else(|| StoreError::JobNotFound(id.to_owned()))
}

/// Retries up to [`BULK_CHUNK`] jobs matching `filter` after `after_seq` (oldest first),
/// skipping those a retry refuses (a line of a batch no longer in progress). Returns how
/// many were retried and the last seq looked at, `None` when no job was left to look at.
pub fn retry_chunk(
    ctx: &mut WriteCtx<'_>,
    filter: &JobFilter,
    after_seq: i64,
) -> Result<(u64, Option<i64>), StoreError> {
    let statuses: Vec<JobStatus> = if filter.statuses.is_empty() {
        vec![JobStatus::Failed, JobStatus::Expired, JobStatus::Cancelled]
    } else {
        filter.statuses.clone()
    };
    let filter = JobFilter {
        statuses,
        ..filter.clone()
    };
    let bound = Some(("AND seq > ?", after_seq.into()));
    let (sql, values) = reads::ordered(
        &filter,
        &Visibility::All,
        "seq, id",
        bound,
        "ASC",
        BULK_CHUNK,
    );
    let found: Vec<(i64, String)> = ctx
        .conn
        .prepare_cached(&sql)?
        .query_map(params_from_iter(values), |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut retried = 0;
    for (_, id) in &found {
        match retry(ctx, id) {
            Ok(_) => retried += 1,
            Err(StoreError::BatchNotRunning { .. } | StoreError::NotRetryable { .. }) => {}
            Err(other) => return Err(other),
        }
    }
    Ok((retried, found.last().map(|(seq, _)| *seq)))
}

/// Moves queued job `id` to `priority`, with a `reprioritized` event.
pub fn set_priority(
    ctx: &mut WriteCtx<'_>,
    id: &str,
    priority: u8,
) -> Result<JobRecord, StoreError> {
    let record = reads::job(ctx.conn, id, &Visibility::All)?
        .ok_or_else(|| StoreError::JobNotFound(id.to_owned()))?;
    if record.status != JobStatus::Queued {
        return Err(StoreError::NotQueued {
            id: id.to_owned(),
            status: record.status,
        });
    }
    if record.priority == priority {
        return Ok(record);
    }
    let event = JobEvent::Reprioritized {
        at: ctx.now / 1000,
        from: record.priority,
        to: priority,
    };
    let changed = ctx
        .conn
        .prepare_cached(
            "UPDATE jobs SET priority = ?2, updated_at = ?3, events = ?4
             WHERE id = ?1 AND status = 'queued'",
        )?
        .execute(params![
            id,
            priority,
            ctx.now,
            appended(record.events.as_deref(), event)
        ])?;
    if changed == 0 {
        return Err(StoreError::JobNotFound(id.to_owned()));
    }
    // Queued to queued at another priority: the depth and the fair share's lanes move it.
    ctx.changes.push(Change {
        record: None,
        was_priority: Some(record.priority),
        batch_id: None,
        job_id: id.to_owned(),
        status: JobStatus::Queued,
        from: Some(JobStatus::Queued),
        model: record.model.clone(),
        priority,
        owner: record.owner_key_id.clone(),
        endpoint: record.endpoint,
    });
    reads::job(ctx.conn, id, &Visibility::All)?
        .ok_or_else(|| StoreError::JobNotFound(id.to_owned()))
}

#[cfg(test)]
#[path = "retry_tests.rs"]
mod tests;
