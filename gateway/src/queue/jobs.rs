//! A job's life cycle: the allowed transitions and [`transition`], the only place a status
//! changes; enqueue and cancel. Leasing lives in `leases`, results in `results`. Everything
//! here runs inside the writer's transactions.

use super::db::{OptionalExtension, params};
use super::reads::{self, JOB_COLUMNS};
use super::writer::WriteCtx;
use super::{Change, JobRecord, QueueEvent, StoreError, Visibility};
use openbeepboop::{Endpoint, ErrorBody, JobStatus};
use std::sync::Arc;
use std::time::Duration;

/// A validated submit, ready to store.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Chosen before the job is stored, so a waiter can subscribe to it first.
    pub id: String,
    pub owner_key_id: String,
    pub model: String,
    pub endpoint: Endpoint,
    pub priority: u8,
    /// The request body exactly as received.
    pub payload: String,
    /// A digest of the body's meaning, to tell a retried submit from a different one;
    /// empty when there is no idempotency key.
    pub request_hash: String,
    pub idempotency_key: Option<String>,
    pub request_id: Option<String>,
    pub ttl: Duration,
    /// The most jobs its key may have queued (`max_queued_jobs`); none: no limit.
    pub max_queued: Option<u32>,
    /// Its tokens as its key's `tokens_per_minute` counts them until its usage is known.
    pub est_tokens: u64,
    /// Its node relays the upstream's chunks as they come (`stream: true`, see `relay`).
    pub relay: bool,
}

/// Whether a job may move from one status to another. Final statuses never change.
/// `queued → completed | failed` is the late result of a lease that lapsed while no other
/// node took the job (see `results::submit`).
pub fn allowed(from: JobStatus, to: JobStatus) -> bool {
    use JobStatus::*;
    matches!(
        (from, to),
        (
            Queued,
            Processing | Completed | Failed | Cancelled | Expired
        ) | (Processing, Completed | Failed | Queued | Cancelled)
    )
}

/// Everything a status change may also set. Unset fields keep their value, except
/// `not_before` and `lease_expires_at`, which every change clears unless given.
#[derive(Debug, Default)]
pub struct Effects<'a> {
    /// A new lease: its id, expiry (Unix ms) and node.
    pub lease: Option<(&'a str, i64, &'a str)>,
    pub count_attempt: bool,
    pub result: Option<&'a str>,
    /// The error, and the upstream's HTTP status when the error is an upstream's answer.
    /// The two are stored together: a new error replaces the status of an older one.
    pub error: Option<(&'a ErrorBody, Option<u16>)>,
    /// Unix ms before which the job may not be leased (retry backoff).
    pub not_before: Option<i64>,
    /// The lease whose outcome this change stores, so that its retried submit is a
    /// `duplicate` and anything else from it is `stale`.
    pub result_lease: Option<&'a str>,
    /// An admin's retry (`retry::retry`): the one way out of a final status other than
    /// `completed`, back to `queued`.
    pub retry: bool,
}

/// Whether an admin may queue a job in `from` again: it ended without an answer.
pub fn retryable(from: JobStatus) -> bool {
    matches!(
        from,
        JobStatus::Failed | JobStatus::Expired | JobStatus::Cancelled
    )
}

/// What a status change reads back from the row it changed.
struct Moved {
    owner: String,
    model: String,
    endpoint: Endpoint,
    priority: u8,
    created_at: i64,
    locked_at: Option<i64>,
    node: Option<String>,
    batch_id: Option<String>,
    est_tokens: i64,
}

/// The one place a job's status changes. Returns false when the job was not in `from`
/// (someone else moved it first), and refuses transitions the life cycle forbids.
pub fn transition(
    ctx: &mut WriteCtx<'_>,
    id: &str,
    from: JobStatus,
    to: JobStatus,
    effects: Effects<'_>,
) -> Result<bool, StoreError> {
    let retried = effects.retry && retryable(from) && to == JobStatus::Queued;
    if !(allowed(from, to) || retried) {
        return Err(StoreError::IllegalTransition {
            id: id.to_owned(),
            from,
            to,
        });
    }
    let error_json = effects
        .error
        .map(|(body, _)| serde_json::to_string(body).unwrap_or_default());
    let (lease_id, lease_expires_at, node) = match effects.lease {
        Some((lease_id, expires, node)) => (Some(lease_id), Some(expires), Some(node)),
        None => (None, None, None),
    };
    let moved: Option<Moved> = ctx.conn.prepare_cached(
        "UPDATE jobs SET status = ?3, updated_at = ?4,
             lease_id = COALESCE(?5, lease_id), lease_expires_at = ?6,
             locked_by = COALESCE(?7, locked_by), locked_at = CASE WHEN ?7 IS NULL THEN locked_at ELSE ?4 END,
             first_relayed_at = CASE WHEN ?5 IS NULL THEN first_relayed_at ELSE NULL END,
             attempts = attempts + ?8,
             result_payload = COALESCE(?9, result_payload),
             error_payload = COALESCE(?10, error_payload),
             upstream_status = CASE WHEN ?10 IS NULL THEN upstream_status ELSE ?11 END,
             not_before = ?12, finished_at = ?13,
             result_lease_id = COALESCE(?14, result_lease_id)
         WHERE id = ?1 AND status = ?2
         RETURNING model, priority, created_at, locked_at, locked_by, batch_id, endpoint,
             owner_key_id, est_tokens",
    )?.query_row(params![
        id,
        from.as_str(),
        to.as_str(),
        ctx.now,
        lease_id,
        lease_expires_at,
        node,
        i64::from(effects.count_attempt),
        effects.result,
        error_json,
        effects.error.and_then(|(_, status)| status),
        effects.not_before,
        to.is_final().then_some(ctx.now),
        effects.result_lease,
    ], |row| Ok(Moved {
        model: row.get(0)?,
        priority: row.get(1)?,
        created_at: row.get(2)?,
        locked_at: row.get(3)?,
        node: row.get(4)?,
        batch_id: row.get(5)?,
        endpoint: reads::endpoint(row, 6)?,
        owner: row.get(7)?,
        est_tokens: row.get(8)?,
    })).optional()?;
    let changed = moved.is_some();
    if let Some(moved) = moved {
        if to.is_final()
            && let Some(batch_id) = &moved.batch_id
        {
            count_line_ending(ctx, batch_id, to)?;
            ctx.events
                .push(QueueEvent::BatchLineFinished { status: to });
        }
        if to.is_final() {
            ctx.events.push(QueueEvent::Finished {
                owner: moved.owner.clone(),
                model: moved.model.clone(),
                endpoint: moved.endpoint,
                status: to,
                node: moved.node,
                processing_ms: moved
                    .locked_at
                    .filter(|_| from == JobStatus::Processing)
                    .map(|at| ctx.now - at),
                total_ms: ctx.now - moved.created_at,
            });
        }
        // A run that ends without a completion (failed, handed back, lapsed, cancelled) used
        // no tokens we know of: its key gets the estimate it was charged at lease back. A
        // completion is settled from its usage instead (`results`).
        if from == JobStatus::Processing && to != JobStatus::Completed && moved.est_tokens > 0 {
            ctx.events.push(QueueEvent::TokensReturned {
                owner: moved.owner.clone(),
                estimated: moved.est_tokens as u64,
            });
        }
        // A waiter answers from this, without a read of its own.
        let record = if to.is_final() && (ctx.watched)(id) {
            reads::job(ctx.conn, id, &Visibility::All)?.map(Arc::new)
        } else {
            None
        };
        ctx.changes.push(Change {
            was_priority: None,
            batch_id: moved.batch_id,
            record,
            job_id: id.to_owned(),
            status: to,
            from: Some(from),
            model: moved.model,
            priority: moved.priority,
            owner: moved.owner,
            endpoint: moved.endpoint,
        });
    }
    Ok(changed)
}

/// Moves a batch's line counts by one line that reached final status `to`, in the same
/// transaction: a final status never changes, so each line is counted once.
fn count_line_ending(ctx: &WriteCtx<'_>, batch_id: &str, to: JobStatus) -> Result<(), StoreError> {
    let completed = i64::from(to == JobStatus::Completed);
    let expired = i64::from(to == JobStatus::Expired);
    ctx.conn
        .prepare_cached(
            "UPDATE batches SET lines_completed = lines_completed + ?2,
                 lines_failed = lines_failed + 1 - ?2, lines_expired = lines_expired + ?3
             WHERE id = ?1",
        )?
        .execute(params![batch_id, completed, expired])?;
    Ok(())
}

/// A new job id: time-ordered, so ids sort by submission.
pub fn new_job_id() -> String {
    format!("job-{}", uuid::Uuid::now_v7().simple())
}

/// A new response id (`resp_…`, the Responses API's prefix), time-ordered like a job's:
/// a job of `/v1/responses` is known by it on every route.
pub fn new_response_id() -> String {
    format!("resp_{}", uuid::Uuid::now_v7().simple())
}

/// The job `job`'s idempotency key already made, as [`enqueue`] answers with it: that job
/// (`false`: not created now), or a conflict when the key was used for another request.
/// `None` when the key is new, or there is none.
#[expect(clippy::type_complexity)]
fn idempotent(
    ctx: &WriteCtx<'_>,
    job: &NewJob,
) -> Result<Option<Result<(JobRecord, bool), StoreError>>, StoreError> {
    let Some(key) = &job.idempotency_key else {
        return Ok(None);
    };
    let existing = ctx
        .conn
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS}, request_hash FROM jobs
             WHERE owner_key_id = ?1 AND idempotency_key = ?2"
        ))?
        .query_row(params![job.owner_key_id, key], |row| {
            Ok((reads::record(row)?, row.get::<String>(17)?))
        })
        .optional()?;
    // The digest covers the body alone (stored keys keep their digests); the same body
    // sent to another endpoint is another request all the same.
    Ok(existing.map(|(record, hash)| {
        if hash != job.request_hash {
            Err(StoreError::IdempotencyConflict {
                key: key.clone(),
                used_on: None,
            })
        } else if record.endpoint != job.endpoint {
            Err(StoreError::IdempotencyConflict {
                key: key.clone(),
                used_on: Some(record.endpoint),
            })
        } else {
            Ok((record, false))
        }
    }))
}

/// Stores `job`, or finds the job its idempotency key already made (`false`). `queued`
/// tells how many jobs a key has queued as of the last commit (the fair share's count): a
/// key at its `max_queued_jobs` is refused (`QueueFull`) without a count of its rows.
pub fn enqueue(
    ctx: &mut WriteCtx<'_>,
    job: &NewJob,
    max_attempts: u32,
    queued: &dyn Fn(&str) -> i64,
) -> Result<(JobRecord, bool), StoreError> {
    if let Some(found) = idempotent(ctx, job)? {
        return found;
    }
    // After the idempotency lookup: a retried submit finds its job whatever the queue holds.
    if let Some(max) = job.max_queued {
        let owner = job.owner_key_id.as_str();
        // And what this group's earlier operations queued or took of the key's.
        let group: i64 = ctx
            .earlier
            .iter()
            .filter(|change| change.owner == owner)
            .map(|change| {
                i64::from(change.status == JobStatus::Queued)
                    - i64::from(change.from == Some(JobStatus::Queued))
            })
            .sum();
        if queued(owner) + group >= i64::from(max) {
            return Err(StoreError::QueueFull {
                key: job.owner_key_id.clone(),
                max,
            });
        }
    }
    let id = job.id.clone();
    let expires_at = ctx.now + job.ttl.as_millis() as i64;
    let inserted = ctx
        .conn
        .prepare_cached(
            "INSERT INTO jobs (id, owner_key_id, model, status, priority, request_payload,
                 request_hash, idempotency_key, request_id, max_attempts, created_at, updated_at,
                 expires_at, endpoint, est_tokens, relay, ttl_ms)
             VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12, ?13, ?14,
                 ?15)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            id,
            job.owner_key_id,
            job.model,
            job.priority,
            job.payload,
            job.request_hash,
            job.idempotency_key,
            job.request_id,
            max_attempts,
            ctx.now,
            expires_at,
            job.endpoint.as_str(),
            job.est_tokens as i64,
            job.relay,
            job.ttl.as_millis() as i64,
        ])?;
    if inserted == 0 {
        // Another gateway on the same PostgreSQL database stored a job under the same
        // idempotency key since the lookup above (the insert waited for its commit): that one
        // is the job. Nothing else can conflict but the job's own random id.
        return idempotent(ctx, job)?.unwrap_or(Err(StoreError::DuplicateId(id)));
    }
    ctx.changes.push(Change {
        was_priority: None,
        batch_id: None,
        record: None,
        job_id: id.clone(),
        status: JobStatus::Queued,
        from: None,
        model: job.model.clone(),
        priority: job.priority,
        owner: job.owner_key_id.clone(),
        endpoint: job.endpoint,
    });
    ctx.events.push(QueueEvent::Submitted {
        model: job.model.clone(),
        endpoint: job.endpoint,
    });
    let record = JobRecord {
        id,
        owner_key_id: job.owner_key_id.clone(),
        model: job.model.clone(),
        endpoint: job.endpoint,
        status: JobStatus::Queued,
        priority: job.priority,
        created_at: ctx.now,
        updated_at: ctx.now,
        expires_at,
        attempts: 0,
        locked_by: None,
        locked_at: None,
        finished_at: None,
        result_payload: None,
        error: None,
        upstream_status: None,
        events: None,
    };
    Ok((record, true))
}

pub fn cancel(ctx: &mut WriteCtx<'_>, id: &str, who: &Visibility) -> Result<JobRecord, StoreError> {
    let record =
        reads::job(ctx.conn, id, who)?.ok_or_else(|| StoreError::JobNotFound(id.to_owned()))?;
    match record.status {
        JobStatus::Cancelled => return Ok(record),
        status if status.is_final() => {
            return Err(StoreError::AlreadyFinal {
                id: id.to_owned(),
                status,
            });
        }
        _ => {}
    }
    let error = ErrorBody::new(format!("job `{id}` was cancelled"), "invalid_request_error")
        .with_code("job_cancelled");
    let effects = Effects {
        error: Some((&error, None)),
        ..Effects::default()
    };
    transition(ctx, id, record.status, JobStatus::Cancelled, effects)?;
    reads::job(ctx.conn, id, who)?.ok_or_else(|| StoreError::JobNotFound(id.to_owned()))
}

/// Deletes a job `who` may see, cancelling it first when it has not ended, so that its
/// waiters and a node still running it hear that it is gone. Returns the job as it was
/// before the delete (cancelled, when it was still running). A batch's line is refused.
pub fn delete(ctx: &mut WriteCtx<'_>, id: &str, who: &Visibility) -> Result<JobRecord, StoreError> {
    // Another owner's job is as absent as a missing one, batch line or not.
    if reads::job(ctx.conn, id, who)?.is_none() {
        return Err(StoreError::JobNotFound(id.to_owned()));
    }
    let batch_id: Option<String> = ctx
        .conn
        .prepare_cached("SELECT batch_id FROM jobs WHERE id = ?1")?
        .query_row(params![id], |row| row.get(0))
        .optional()?
        .flatten();
    if let Some(batch_id) = batch_id {
        return Err(StoreError::InBatch {
            id: id.to_owned(),
            batch_id,
        });
    }
    let record = cancel(ctx, id, who).or_else(|error| match error {
        StoreError::AlreadyFinal { .. } => {
            reads::job(ctx.conn, id, who)?.ok_or_else(|| StoreError::JobNotFound(id.to_owned()))
        }
        other => Err(other),
    })?;
    ctx.conn
        .prepare_cached("DELETE FROM jobs WHERE id = ?1")?
        .execute(params![id])?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobStatus::*;

    #[test]
    fn final_statuses_never_change_and_a_queued_job_never_goes_back_to_queued() {
        for to in JobStatus::ALL {
            for from in [Completed, Failed, Cancelled, Expired] {
                assert!(!allowed(from, to), "{from} -> {to}");
            }
        }
        assert!(!allowed(Queued, Queued));
        assert!(
            allowed(Queued, Completed),
            "a late result of the last lease"
        );
        assert!(allowed(Processing, Queued));
    }
}
