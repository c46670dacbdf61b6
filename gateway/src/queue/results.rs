//! How a run ends: a node's submitted result, and the one attempt rule every ending obeys.
//!
//! **The attempt rule.** Every lease is an attempt, whether or not the run reached the
//! upstream. A run that ends without a completion (a retryable failure, a lapsed lease, a
//! hand-back) puts the job back in the queue while `attempts < max_attempts`, and otherwise
//! fails it: `max_attempts_exceeded` for a lost run, the run's own error for a failure. A
//! gateway restart is not an ending: leases get a fresh grace period (`leases::grant_grace`).
//!
//! **The relay rule.** A run that relayed a chunk to a client (`first_relayed_at`) is never
//! retried, since a retry would repeat tokens the client already has: a lost run fails
//! with `stream_interrupted`, a retryable failure is stored as failed.
//! Runs inside the writer's transactions.

use super::db::{OptionalExtension, params};
use super::jobs::{Effects, transition};
use super::reads;
use super::writer::WriteCtx;
use super::{QueueEvent, StoreError};
use openbeepboop::{
    ErrorBody, JobStatus, NodeResult, NodeResultStatus, SubmitOutcome, SubmitOutcomeKind,
};
use std::time::Duration;

/// The delay before retry number `attempt` (1-based) may run: doubling, capped at a minute.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    (base * factor).min(Duration::from_secs(60))
}

/// A run that ended without a result from its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostRun {
    /// No heartbeat came before the lease's end.
    LeaseLapsed,
    /// The node gave the job back (`RELEASED`), for instance on a forced stop.
    HandedBack,
}

/// What the store knows of a job when one of its runs ends.
struct Run {
    status: JobStatus,
    lease_id: Option<String>,
    /// The lease whose outcome is stored, if any.
    result_lease: Option<String>,
    attempts: u32,
    max_attempts: u32,
    model: String,
    node: Option<String>,
    last_error: Option<ErrorBody>,
    owner: String,
    est_tokens: u64,
    /// Unix ms when a chunk of this run first reached a client: the run is not retried.
    first_relayed_at: Option<i64>,
}

/// The columns of a job's run, as [`run_of`] reads them.
macro_rules! run_of_sql {
    () => {
        "SELECT status, lease_id, result_lease_id, attempts, max_attempts, model, locked_by,
                error_payload, owner_key_id, est_tokens, first_relayed_at
         FROM jobs WHERE id = ?1"
    };
}
const RUN_OF: &str = run_of_sql!();

fn run_of(ctx: &WriteCtx<'_>, id: &str) -> Result<Option<Run>, StoreError> {
    // On PostgreSQL the row is locked until the group commits: another gateway's reaper,
    // cancel or result for the job waits, so what is decided here from the row stays true
    // (SQLite's one writer gives that by itself).
    ctx.conn
        .prepare_cached(ctx.conn.pick(RUN_OF, concat!(run_of_sql!(), " FOR UPDATE")))?
        .query_row([id], |row| {
            Ok(Run {
                status: reads::status(row, 0)?,
                lease_id: row.get(1)?,
                result_lease: row.get(2)?,
                attempts: row.get(3)?,
                max_attempts: row.get(4)?,
                model: row.get(5)?,
                node: row.get(6)?,
                last_error: row
                    .get::<Option<String>>(7)?
                    .and_then(|text| serde_json::from_str(&text).ok()),
                owner: row.get(8)?,
                est_tokens: row.get::<i64>(9)?.max(0) as u64,
                first_relayed_at: row.get(10)?,
            })
        })
        .optional()
}

/// Ends a processing run that produced no result, by the attempt rule. Returns the job's
/// new status, or `None` when it was not processing.
pub fn end_lost_run(
    ctx: &mut WriteCtx<'_>,
    id: &str,
    how: LostRun,
) -> Result<Option<JobStatus>, StoreError> {
    let Some(run) = run_of(ctx, id)?.filter(|run| run.status == JobStatus::Processing) else {
        return Ok(None);
    };
    if how == LostRun::LeaseLapsed {
        ctx.events.push(QueueEvent::LeaseExpired {
            model: run.model.clone(),
        });
    }
    let result_lease = match how {
        // A hand-back is this lease's outcome: its retried submit is a `duplicate`.
        LostRun::HandedBack => run.lease_id.as_deref(),
        LostRun::LeaseLapsed => None,
    };
    if run.attempts < run.max_attempts && run.first_relayed_at.is_none() {
        let effects = Effects {
            result_lease,
            ..Effects::default()
        };
        let moved = transition(ctx, id, JobStatus::Processing, JobStatus::Queued, effects)?;
        if moved {
            ctx.events.push(QueueEvent::Retried { model: run.model });
        }
        return Ok(moved.then_some(JobStatus::Queued));
    }
    let error = match run.first_relayed_at {
        Some(_) => interrupted(id, &run),
        None => exhausted(id, &run, how),
    };
    let effects = Effects {
        error: Some((&error, None)),
        result_lease,
        ..Effects::default()
    };
    let moved = transition(ctx, id, JobStatus::Processing, JobStatus::Failed, effects)?;
    Ok(moved.then_some(JobStatus::Failed))
}

/// The error of a job whose last allowed run was lost. It keeps the error of an earlier
/// attempt, when there was one.
fn exhausted(id: &str, run: &Run, how: LostRun) -> ErrorBody {
    let node = run.node.as_deref().unwrap_or_default();
    let attempts = run.attempts;
    let mut message = match how {
        LostRun::LeaseLapsed => format!(
            "job `{id}` lost its lease {attempts} times (last on node `{node}`) and will not be retried"
        ),
        LostRun::HandedBack => format!(
            "job `{id}` ran {attempts} times, the last handed back by node `{node}`, and will not be retried"
        ),
    };
    if let Some(last) = &run.last_error {
        message.push_str(&format!("; an earlier attempt failed: {}", last.message));
    }
    ErrorBody::new(message, "server_error").with_code("max_attempts_exceeded")
}

/// The error of a job whose run was lost after its answer began streaming to a client.
fn interrupted(id: &str, run: &Run) -> ErrorBody {
    let node = run.node.as_deref().unwrap_or_default();
    ErrorBody::new(
        format!(
            "job `{id}` lost node `{node}` after its answer began streaming; it is not retried, as a retry would repeat what was sent"
        ),
        "server_error",
    )
    .with_code("stream_interrupted")
}

/// Stores what nodes report, one outcome per result, in order.
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

/// One result. The words are exact: `duplicate` only when this lease's outcome is already
/// stored; `stale` when another lease superseded this one or the job ended without it;
/// `cancelled` when the job was cancelled. A lease that lapsed while no other node took the
/// job still counts: its holder's result is accepted from the queue.
fn submit_one(
    ctx: &mut WriteCtx<'_>,
    item: &NodeResult,
    backoff_base: Duration,
) -> Result<SubmitOutcomeKind, StoreError> {
    let id = item.id.as_str();
    let Some(run) = run_of(ctx, id)? else {
        return Ok(SubmitOutcomeKind::Stale);
    };
    if run.lease_id.as_deref() != Some(item.lease_id.as_str()) {
        return Ok(SubmitOutcomeKind::Stale);
    }
    if run.result_lease.as_deref() == Some(item.lease_id.as_str()) {
        return Ok(SubmitOutcomeKind::Duplicate);
    }
    let from = match run.status {
        JobStatus::Processing | JobStatus::Queued => run.status,
        JobStatus::Cancelled => return Ok(SubmitOutcomeKind::Cancelled),
        JobStatus::Completed | JobStatus::Failed | JobStatus::Expired => {
            return Ok(SubmitOutcomeKind::Stale);
        }
    };
    let lease = Some(item.lease_id.as_str());
    match (item.status, &item.result) {
        (NodeResultStatus::Released, _) if from == JobStatus::Processing => {
            end_lost_run(ctx, id, LostRun::HandedBack)?;
        }
        // Already back in the queue: only remember that this lease has answered.
        (NodeResultStatus::Released, _) => record_outcome(ctx, id, lease, None, None)?,
        (NodeResultStatus::Completed, Some(result)) => {
            let effects = Effects {
                result: Some(result.get()),
                result_lease: lease,
                ..Effects::default()
            };
            if transition(ctx, id, from, JobStatus::Completed, effects)?
                && let Some((prompt, completion)) = usage_of(result.get())
            {
                ctx.events.push(QueueEvent::Tokens {
                    model: run.model,
                    prompt,
                    completion,
                    owner: run.owner,
                    estimated: run.est_tokens,
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
            let error = Some((&error, item.upstream_status));
            // A run that streamed a chunk is not retried: a retry would repeat it.
            if item.retryable && run.attempts < run.max_attempts && run.first_relayed_at.is_none() {
                let not_before = ctx.now + backoff(backoff_base, run.attempts).as_millis() as i64;
                if from == JobStatus::Queued {
                    record_outcome(ctx, id, lease, error, Some(not_before))?;
                } else {
                    let effects = Effects {
                        error,
                        not_before: Some(not_before),
                        result_lease: lease,
                        ..Effects::default()
                    };
                    if transition(ctx, id, from, JobStatus::Queued, effects)? {
                        ctx.events.push(QueueEvent::Retried { model: run.model });
                    }
                }
            } else {
                let effects = Effects {
                    error,
                    result_lease: lease,
                    ..Effects::default()
                };
                transition(ctx, id, from, JobStatus::Failed, effects)?;
            }
        }
    }
    Ok(SubmitOutcomeKind::Accepted)
}

/// Records a lease's outcome on a job that stays queued: no status changes, so this is not
/// a transition.
fn record_outcome(
    ctx: &mut WriteCtx<'_>,
    id: &str,
    lease: Option<&str>,
    error: Option<(&ErrorBody, Option<u16>)>,
    not_before: Option<i64>,
) -> Result<(), StoreError> {
    let error_json = error.map(|(body, _)| serde_json::to_string(body).unwrap_or_default());
    ctx.conn
        .prepare_cached(
            "UPDATE jobs SET result_lease_id = ?2, updated_at = ?3,
                 error_payload = COALESCE(?4, error_payload),
                 upstream_status = CASE WHEN ?4 IS NULL THEN upstream_status ELSE ?5 END,
                 not_before = COALESCE(?6, not_before)
             WHERE id = ?1 AND status = 'queued'",
        )?
        .execute(params![
            id,
            lease,
            ctx.now,
            error_json,
            error.and_then(|(_, status)| status),
            not_before
        ])?;
    Ok(())
}

/// The token counts of an answer's `usage`: chat's and completions' `prompt_tokens` and
/// `completion_tokens`, or a response's `input_tokens` and `output_tokens`.
fn usage_of(completion: &str) -> Option<(u64, u64)> {
    #[derive(serde::Deserialize)]
    struct Usage {
        #[serde(default, alias = "input_tokens")]
        prompt_tokens: u64,
        #[serde(default, alias = "output_tokens")]
        completion_tokens: u64,
    }
    #[derive(serde::Deserialize)]
    struct WithUsage {
        usage: Option<Usage>,
    }
    let usage = serde_json::from_str::<WithUsage>(completion).ok()?.usage?;
    Some((usage.prompt_tokens, usage.completion_tokens))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{NewJob, Queue, QueueSettings, Visibility, new_job_id};

    /// A failure the node reports for `leased`, as the wire carries it.
    fn failure(leased: &openbeepboop::LeasedJob, upstream_status: u16) -> NodeResult {
        serde_json::from_value(serde_json::json!({
            "id": leased.id, "lease_id": leased.lease_id, "status": "FAILED",
            "error": {"message": "slow down", "type": "rate_limit_error"},
            "upstream_status": upstream_status, "retryable": true,
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn an_upstream_status_is_kept_with_its_error_and_dropped_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        Queue::setup(&crate::queue::Location::File(path.clone())).unwrap();
        let settings = QueueSettings {
            lease: Duration::ZERO,
            max_attempts: 2,
            retry_backoff_base: Duration::ZERO,
            ..QueueSettings::default()
        };
        let queue = Queue::open(
            &crate::queue::Location::File(path.clone()),
            settings,
            std::sync::Arc::new(|_, _| {}),
        )
        .unwrap();
        let job = NewJob {
            id: new_job_id(),
            owner_key_id: "k".into(),
            model: "m".into(),
            endpoint: openbeepboop::Endpoint::ChatCompletions,
            priority: 3,
            payload: "{}".into(),
            request_hash: String::new(),
            idempotency_key: None,
            request_id: None,
            ttl: Duration::from_secs(60),
            max_queued: None,
            est_tokens: 0,
            relay: false,
        };
        let (record, _) = queue.enqueue(job).await.unwrap();
        let lease = || queue.lease("n".into(), "k".into(), vec!["*".into()], 1);
        let first = lease().await.unwrap().remove(0);
        queue.submit(vec![failure(&first, 429)]).await.unwrap();
        let read = || queue.job(record.id.clone(), Visibility::All);
        let retried = read().await.unwrap().unwrap();
        assert_eq!(
            (retried.status, retried.upstream_status),
            (JobStatus::Queued, Some(429))
        );
        // The second and last run's lease lapses: the job fails for the gateway's reasons,
        // and the upstream's 429 no longer describes how it ended.
        lease().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        queue.reap(crate::queue::ReapPass::default()).await.unwrap();
        let failed = read().await.unwrap().unwrap();
        assert_eq!(
            (failed.status, failed.upstream_status),
            (JobStatus::Failed, None)
        );
        assert_eq!(
            failed.error.and_then(|e| e.code).as_deref(),
            Some("max_attempts_exceeded")
        );
    }

    #[test]
    fn backoff_doubles_and_caps_at_a_minute() {
        let base = Duration::from_millis(500);
        assert_eq!(backoff(base, 1), Duration::from_millis(500));
        assert_eq!(backoff(base, 3), Duration::from_secs(2));
        assert_eq!(backoff(base, 40), Duration::from_secs(60));
    }
}
