//! Job writes: enqueue, lease, heartbeat, submit, cancel and reap. They run inside the
//! writer's transactions, and every status change goes through [`transition`].

use super::reads::{self, JOB_COLUMNS};
use super::writer::WriteCtx;
use super::{Change, JobRecord, QueueEvent, StoreError, Visibility};
use openbeepboop::{
    ErrorBody, HeartbeatResponse, JobStatus, LeasedJob, NodeResult, NodeResultStatus,
    SubmitOutcome, SubmitOutcomeKind,
};
use rusqlite::{OptionalExtension, params, params_from_iter};
use serde_json::value::RawValue;
use std::time::{Duration, Instant};

/// A validated submit, ready to store.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Chosen before the job is stored, so a waiter can subscribe to it first.
    pub id: String,
    pub owner_key_id: String,
    pub model: String,
    pub priority: u8,
    /// The request body exactly as received.
    pub payload: String,
    /// A digest of the body's meaning, to tell a retried submit from a different one;
    /// empty when there is no idempotency key.
    pub request_hash: String,
    pub idempotency_key: Option<String>,
    pub request_id: Option<String>,
    pub ttl: Duration,
}

/// What one reaper pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapReport {
    pub requeued: usize,
    pub failed: usize,
    pub expired: usize,
}

/// Whether a job may move from one status to another. Final statuses never change.
pub fn allowed(from: JobStatus, to: JobStatus) -> bool {
    use JobStatus::*;
    matches!(
        (from, to),
        (Queued, Processing | Cancelled | Expired)
            | (Processing, Completed | Failed | Queued | Cancelled)
    )
}

/// Everything a status change may also set. Unset fields keep their value.
#[derive(Debug, Default)]
struct Effects<'a> {
    lease: Option<(&'a str, i64, &'a str)>,
    count_attempt: bool,
    result: Option<&'a str>,
    error: Option<(&'a ErrorBody, u16)>,
    not_before: Option<i64>,
}

/// What a status change reads back from the row it changed.
struct Moved {
    model: String,
    priority: u8,
    created_at: i64,
    locked_at: Option<i64>,
    node: Option<String>,
}

/// The one place a job's status changes. Returns false when the job was not in `from`
/// (someone else moved it first), and refuses transitions the life cycle forbids.
fn transition(
    ctx: &mut WriteCtx<'_>,
    id: &str,
    from: JobStatus,
    to: JobStatus,
    effects: Effects<'_>,
) -> Result<bool, StoreError> {
    if !allowed(from, to) {
        return Err(StoreError::Sqlite(format!(
            "refused transition of job `{id}` from {from} to {to}"
        )));
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
             attempts = attempts + ?8,
             result_payload = COALESCE(?9, result_payload),
             error_payload = COALESCE(?10, error_payload), error_status = COALESCE(?11, error_status),
             not_before = ?12, finished_at = ?13
         WHERE id = ?1 AND status = ?2
         RETURNING model, priority, created_at, locked_at, locked_by",
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
        effects.error.map(|(_, status)| status),
        effects.not_before,
        to.is_final().then_some(ctx.now),
    ], |row| Ok(Moved {
        model: row.get(0)?,
        priority: row.get(1)?,
        created_at: row.get(2)?,
        locked_at: row.get(3)?,
        node: row.get(4)?,
    })).optional()?;
    let changed = moved.is_some();
    if let Some(moved) = moved {
        if to.is_final() {
            ctx.events.push(QueueEvent::Finished {
                model: moved.model.clone(),
                status: to,
                node: moved.node,
                processing_ms: moved
                    .locked_at
                    .filter(|_| from == JobStatus::Processing)
                    .map(|at| ctx.now - at),
                total_ms: ctx.now - moved.created_at,
            });
        }
        ctx.changes.push(Change {
            job_id: id.to_owned(),
            status: to,
            from: Some(from),
            model: moved.model,
            priority: moved.priority,
        });
    }
    Ok(changed)
}

/// A new job id: time-ordered, so ids sort by submission.
pub fn new_job_id() -> String {
    format!("job-{}", uuid::Uuid::now_v7().simple())
}

pub fn enqueue(
    ctx: &mut WriteCtx<'_>,
    job: &NewJob,
    max_attempts: u32,
) -> Result<(JobRecord, bool), StoreError> {
    if let Some(key) = &job.idempotency_key {
        let existing = ctx
            .conn
            .prepare_cached(&format!(
                "SELECT {JOB_COLUMNS}, request_hash FROM jobs
                 WHERE owner_key_id = ?1 AND idempotency_key = ?2"
            ))?
            .query_row(params![job.owner_key_id, key], |row| {
                Ok((reads::record(row)?, row.get::<_, String>(15)?))
            })
            .optional()?;
        if let Some((record, hash)) = existing {
            return if hash == job.request_hash {
                Ok((record, false))
            } else {
                Err(StoreError::IdempotencyConflict(key.clone()))
            };
        }
    }
    let id = job.id.clone();
    let expires_at = ctx.now + job.ttl.as_millis() as i64;
    ctx.conn
        .prepare_cached(
            "INSERT INTO jobs (id, owner_key_id, model, status, priority, request_payload,
                 request_hash, idempotency_key, request_id, max_attempts, created_at, updated_at,
                 expires_at)
             VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11)",
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
        ])?;
    ctx.changes.push(Change {
        job_id: id.clone(),
        status: JobStatus::Queued,
        from: None,
        model: job.model.clone(),
        priority: job.priority,
    });
    ctx.events.push(QueueEvent::Submitted {
        model: job.model.clone(),
    });
    let record = JobRecord {
        id,
        owner_key_id: job.owner_key_id.clone(),
        model: job.model.clone(),
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
        error_status: None,
    };
    Ok((record, true))
}

/// Records that a node is alive and which models it serves.
pub fn record_node(
    ctx: &mut WriteCtx<'_>,
    node_id: &str,
    key_id: &str,
    models: &[String],
    capacity: Option<u32>,
) -> Result<(), StoreError> {
    let models = serde_json::to_string(models).unwrap_or_else(|_| "[]".to_owned());
    ctx.conn
        .prepare_cached(
            "INSERT INTO nodes (id, key_id, models, capacity, first_seen_at, last_seen_at)
             VALUES (?1, ?2, ?3, COALESCE(?4, 0), ?5, ?5)
             ON CONFLICT (id) DO UPDATE SET key_id = ?2, models = ?3,
                 capacity = COALESCE(?4, capacity), last_seen_at = ?5",
        )?
        .execute(params![node_id, key_id, models, capacity, ctx.now])?;
    Ok(())
}

/// Leases the best queued jobs: highest priority (lowest number) first, then oldest.
pub fn lease(
    ctx: &mut WriteCtx<'_>,
    node_id: &str,
    models: &[String],
    limit: u32,
    lease: Duration,
) -> Result<Vec<LeasedJob>, StoreError> {
    let any_model = models.iter().any(|m| m == "*");
    if limit == 0 || (models.is_empty() && !any_model) {
        return Ok(Vec::new());
    }
    let model_filter = if any_model {
        String::new()
    } else {
        format!(
            "AND model IN ({})",
            (0..models.len())
                .map(|i| format!("?{}", i + 3))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let sql = format!(
        "SELECT id, model, request_payload, attempts, request_id, created_at FROM jobs
         WHERE status = 'queued' {model_filter}
           AND expires_at > ?1 AND (not_before IS NULL OR not_before <= ?1)
         ORDER BY priority, seq LIMIT ?2"
    );
    let mut values: Vec<rusqlite::types::Value> = vec![ctx.now.into(), i64::from(limit).into()];
    if !any_model {
        values.extend(models.iter().map(|m| m.clone().into()));
    }
    let candidates = ctx
        .conn
        .prepare_cached(&sql)?
        .query_map(params_from_iter(values), |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, u32>(3)?,
                row.get::<_, Option<String>>(4)?,
                row.get::<_, i64>(5)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let expires = ctx.now + lease.as_millis() as i64;
    let mut leased = Vec::with_capacity(candidates.len());
    for (id, model, payload, attempts, request_id, created_at) in candidates {
        let lease_id = format!("lease-{}", uuid::Uuid::new_v4().simple());
        let effects = Effects {
            lease: Some((&lease_id, expires, node_id)),
            count_attempt: true,
            ..Effects::default()
        };
        if !transition(ctx, &id, JobStatus::Queued, JobStatus::Processing, effects)? {
            continue;
        }
        ctx.events.push(QueueEvent::Leased {
            model: model.clone(),
            waited_ms: ctx.now - created_at,
        });
        let request_payload = RawValue::from_string(payload).map_err(|e| {
            StoreError::Sqlite(format!("stored payload of `{id}` is not JSON: {e}"))
        })?;
        leased.push(LeasedJob {
            id,
            model,
            request_payload,
            lease_id,
            lease_expires_at: expires,
            lease_ttl_ms: lease.as_millis() as u64,
            attempt: attempts + 1,
            request_id,
        });
    }
    Ok(leased)
}

/// The state of the job a lease was issued for.
fn job_of_lease(
    ctx: &WriteCtx<'_>,
    lease_id: &str,
) -> Result<Option<(String, JobStatus)>, StoreError> {
    Ok(ctx
        .conn
        .prepare_cached("SELECT id, status FROM jobs WHERE lease_id = ?1")?
        .query_row([lease_id], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .optional()?
        .map(|(id, status)| (id, status.parse().unwrap_or(JobStatus::Failed))))
}

pub fn heartbeat(
    ctx: &mut WriteCtx<'_>,
    lease_ids: &[String],
    lease: Duration,
) -> Result<HeartbeatResponse, StoreError> {
    let expires = ctx.now + lease.as_millis() as i64;
    let mut response = HeartbeatResponse {
        extended: Vec::new(),
        cancelled: Vec::new(),
        lost: Vec::new(),
        lease_expires_at: expires,
        lease_ttl_ms: lease.as_millis() as u64,
    };
    for lease_id in lease_ids {
        match job_of_lease(ctx, lease_id)? {
            Some((_, JobStatus::Processing)) => {
                ctx.conn
                    .prepare_cached(
                        "UPDATE jobs SET lease_expires_at = ?2, updated_at = ?3
                         WHERE lease_id = ?1 AND status = 'processing'",
                    )?
                    .execute(params![lease_id, expires, ctx.now])?;
                response.extended.push(lease_id.clone());
            }
            Some((_, JobStatus::Cancelled)) => response.cancelled.push(lease_id.clone()),
            _ => response.lost.push(lease_id.clone()),
        }
    }
    Ok(response)
}

/// The token counts of a completion's `usage`, when it has one.
fn usage_of(completion: &str) -> Option<(u64, u64)> {
    #[derive(serde::Deserialize)]
    struct Usage {
        #[serde(default)]
        prompt_tokens: u64,
        #[serde(default)]
        completion_tokens: u64,
    }
    #[derive(serde::Deserialize)]
    struct WithUsage {
        usage: Option<Usage>,
    }
    let usage = serde_json::from_str::<WithUsage>(completion).ok()?.usage?;
    Some((usage.prompt_tokens, usage.completion_tokens))
}

/// The delay before retry number `attempt` (1-based) may run: doubling, capped at a minute.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    (base * factor).min(Duration::from_secs(60))
}

pub fn submit(
    ctx: &mut WriteCtx<'_>,
    results: &[NodeResult],
    backoff_base: Duration,
) -> Result<Vec<SubmitOutcome>, StoreError> {
    let mut outcomes = Vec::with_capacity(results.len());
    for item in results {
        let outcome = submit_one(ctx, item, backoff_base)?;
        outcomes.push(SubmitOutcome {
            id: item.id.clone(),
            outcome,
        });
    }
    Ok(outcomes)
}

fn submit_one(
    ctx: &mut WriteCtx<'_>,
    item: &NodeResult,
    backoff_base: Duration,
) -> Result<SubmitOutcomeKind, StoreError> {
    let state = ctx
        .conn
        .prepare_cached(
            "SELECT status, lease_id = ?2, attempts, max_attempts, model FROM jobs WHERE id = ?1",
        )?
        .query_row(params![item.id, item.lease_id], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, Option<bool>>(1)?.unwrap_or(false),
                row.get::<_, u32>(2)?,
                row.get::<_, u32>(3)?,
                row.get::<_, String>(4)?,
            ))
        })
        .optional()?;
    let Some((status, same_lease, attempts, max_attempts, model)) = state else {
        return Ok(SubmitOutcomeKind::Stale);
    };
    let status: JobStatus = status.parse().unwrap_or(JobStatus::Failed);
    if !same_lease {
        return Ok(SubmitOutcomeKind::Stale);
    }
    match status {
        JobStatus::Processing => {}
        JobStatus::Cancelled => return Ok(SubmitOutcomeKind::Cancelled),
        // The lease's run already ended here: this is a retried submit of the same result.
        JobStatus::Completed | JobStatus::Failed | JobStatus::Queued => {
            return Ok(SubmitOutcomeKind::Duplicate);
        }
        JobStatus::Expired => return Ok(SubmitOutcomeKind::Stale),
    }
    match (item.status, &item.result) {
        (NodeResultStatus::Released, _) => {
            transition(ctx, &item.id, status, JobStatus::Queued, Effects::default())?;
        }
        (NodeResultStatus::Completed, Some(result)) => {
            let effects = Effects {
                result: Some(result.get()),
                ..Effects::default()
            };
            if transition(ctx, &item.id, status, JobStatus::Completed, effects)?
                && let Some((prompt, completion)) = usage_of(result.get())
            {
                ctx.events.push(QueueEvent::Tokens {
                    model,
                    prompt,
                    completion,
                });
            }
        }
        _ => {
            let error = item.error.clone().unwrap_or_else(|| {
                ErrorBody::new(
                    "the node reported a failure without details",
                    "server_error",
                )
                .with_code("node_error")
            });
            // An upstream 4xx is the caller's problem and keeps its status; anything else
            // is a bad gateway from the caller's point of view.
            let http_status = item
                .upstream_status
                .filter(|s| (400..500).contains(s))
                .unwrap_or(502);
            if item.retryable && attempts < max_attempts {
                let delay = backoff(backoff_base, attempts);
                let effects = Effects {
                    error: Some((&error, http_status)),
                    not_before: Some(ctx.now + delay.as_millis() as i64),
                    ..Effects::default()
                };
                if transition(ctx, &item.id, status, JobStatus::Queued, effects)? {
                    ctx.due.push(Instant::now() + delay);
                    ctx.events.push(QueueEvent::Retried { model });
                }
            } else {
                let effects = Effects {
                    error: Some((&error, http_status)),
                    ..Effects::default()
                };
                transition(ctx, &item.id, status, JobStatus::Failed, effects)?;
            }
        }
    }
    Ok(SubmitOutcomeKind::Accepted)
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
        error: Some((&error, 409)),
        ..Effects::default()
    };
    transition(ctx, id, record.status, JobStatus::Cancelled, effects)?;
    reads::job(ctx.conn, id, who)?.ok_or_else(|| StoreError::JobNotFound(id.to_owned()))
}

/// One reaper pass. Bounded per pass so that a huge backlog cannot hold the writer long.
pub fn reap(ctx: &mut WriteCtx<'_>) -> Result<ReapReport, StoreError> {
    const PER_PASS: i64 = 1000;
    let mut report = ReapReport::default();
    let lapsed = ctx
        .conn
        .prepare_cached(
            // The planner, without statistics, would scan the whole queue index instead.
            "SELECT id, attempts, max_attempts, locked_by, model FROM jobs INDEXED BY jobs_by_lease_expiry
             WHERE status = 'processing' AND lease_expires_at < ?1 LIMIT ?2",
        )?
        .query_map(params![ctx.now, PER_PASS], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, u32>(1)?,
                row.get::<_, u32>(2)?,
                row.get::<_, Option<String>>(3)?,
                row.get::<_, String>(4)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for (id, attempts, max_attempts, node, model) in lapsed {
        ctx.events.push(QueueEvent::LeaseExpired {
            model: model.clone(),
        });
        if attempts >= max_attempts {
            let error = ErrorBody::new(
                format!(
                    "job `{id}` lost its lease {attempts} times (last on node `{}`) and will not be retried",
                    node.unwrap_or_default()
                ),
                "server_error",
            )
            .with_code("max_attempts_exceeded");
            let effects = Effects {
                error: Some((&error, 502)),
                ..Effects::default()
            };
            if transition(ctx, &id, JobStatus::Processing, JobStatus::Failed, effects)? {
                report.failed += 1;
            }
        } else if transition(
            ctx,
            &id,
            JobStatus::Processing,
            JobStatus::Queued,
            Effects::default(),
        )? {
            report.requeued += 1;
            ctx.events.push(QueueEvent::Retried { model });
        }
    }
    let overdue = ctx
        .conn
        .prepare_cached(
            "SELECT id FROM jobs INDEXED BY jobs_by_expiry
             WHERE status = 'queued' AND expires_at <= ?1 LIMIT ?2",
        )?
        .query_map(params![ctx.now, PER_PASS], |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    for id in overdue {
        let error = ErrorBody::new(
            format!("job `{id}` expired before a node ran it"),
            "invalid_request_error",
        )
        .with_code("job_expired");
        let effects = Effects {
            error: Some((&error, 410)),
            ..Effects::default()
        };
        if transition(ctx, &id, JobStatus::Queued, JobStatus::Expired, effects)? {
            report.expired += 1;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobStatus::*;

    #[test]
    fn final_statuses_never_change_and_queued_never_completes_directly() {
        for to in JobStatus::ALL {
            for from in [Completed, Failed, Cancelled, Expired] {
                assert!(!allowed(from, to), "{from} -> {to}");
            }
        }
        assert!(!allowed(Queued, Completed));
        assert!(allowed(Processing, Queued));
    }

    #[test]
    fn backoff_doubles_and_caps_at_a_minute() {
        let base = Duration::from_millis(500);
        assert_eq!(backoff(base, 1), Duration::from_millis(500));
        assert_eq!(backoff(base, 3), Duration::from_secs(2));
        assert_eq!(backoff(base, 40), Duration::from_secs(60));
    }
}
