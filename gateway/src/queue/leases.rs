//! Leases: which node holds which job, for how long. Leasing, heartbeats, the reaper's pass
//! (lapsed leases, expired jobs, retries that became due) and the grace period leases get
//! when the gateway starts. Runs inside the writer's transactions.

use super::db::{Conn, Engine, OptionalExtension, Row, Value, params, params_from_iter};
use super::fair::{Deferrals, Fair, Filter, Lane, Taken};
use super::jobs::{Effects, transition};
use super::reads;
use super::results::{self, LostRun};
use super::writer::WriteCtx;
use super::{QueueEvent, StoreError};
use openbeepboop::{Endpoint, ErrorBody, HeartbeatResponse, JobStatus, LeaseId, LeasedJob};
use serde_json::value::RawValue;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// What the reaper asks of one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReapPass {
    /// Unix ms: retries that fell due after this are counted as newly due.
    pub since: i64,
    /// The gateway stood still since the previous pass (it was frozen, its machine paused, or
    /// its clock jumped ahead): nodes could not heartbeat meanwhile, so running jobs get a
    /// fresh lease instead of being lapsed for it.
    pub stalled: bool,
}

/// What one reaper pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapReport {
    pub requeued: usize,
    pub failed: usize,
    pub expired: usize,
    /// Retries held back by backoff that became leasable since the previous pass.
    pub due: usize,
    /// The pass's clock (Unix ms): the next pass counts due retries from here.
    pub at: i64,
    /// Leases given a fresh grace period because the pass was `stalled`.
    pub granted: usize,
}

impl ReapReport {
    /// Whether the pass changed or found anything worth a log line.
    pub fn is_quiet(&self) -> bool {
        self.requeued == 0 && self.failed == 0 && self.expired == 0
    }
}

/// What a node's call says of it: a heartbeat gives its capacity and whether it knows it
/// is drained; a fetch neither.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reported {
    pub capacity: Option<u32>,
    pub draining: Option<bool>,
}

/// Records that a node is alive, which models it serves and what its call reported.
pub fn record_node(
    ctx: &mut WriteCtx<'_>,
    node_id: &str,
    key_id: &str,
    models: &[String],
    reported: Reported,
) -> Result<(), StoreError> {
    let models = serde_json::to_string(models).unwrap_or_else(|_| "[]".to_owned());
    ctx.conn
        .prepare_cached(
            "INSERT INTO nodes (id, key_id, models, capacity, first_seen_at, last_seen_at,
                 draining_reported)
             VALUES (?1, ?2, ?3, COALESCE(?4, 0), ?5, ?5, COALESCE(?6, 0))
             ON CONFLICT (id) DO UPDATE SET key_id = ?2, models = ?3,
                 capacity = COALESCE(?4, nodes.capacity), last_seen_at = ?5,
                 draining_reported = COALESCE(?6, nodes.draining_reported)",
        )?
        .execute(params![
            node_id,
            key_id,
            models,
            reported.capacity,
            ctx.now,
            reported.draining
        ])?;
    Ok(())
}

/// `?first, ?first+1, …` for `count` values.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The query of the jobs a lease may take, and its values: queued, of `models` (none
/// named with `*`) and `endpoints`, due, by priority then age.
fn candidates_query(
    now: i64,
    models: &[String],
    endpoints: &[Endpoint],
    limit: u32,
) -> (String, Vec<Value>) {
    let any_model = models.iter().any(|m| m == "*");
    let mut values: Vec<Value> = vec![now.into(), i64::from(limit).into()];
    let model_filter = if any_model {
        String::new()
    } else {
        let filter = format!(
            "AND model IN ({})",
            placeholders(values.len() + 1, models.len())
        );
        values.extend(models.iter().map(|m| m.clone().into()));
        filter
    };
    // The fair lease's fallback: plain queue order through `jobs_by_queue_order`; a node
    // serving fewer endpoints than the gateway queues skips the others' jobs as they come.
    let every_endpoint = Endpoint::QUEUED.iter().all(|e| endpoints.contains(e));
    let endpoint_filter = if every_endpoint {
        String::new()
    } else {
        let filter = format!(
            "AND endpoint IN ({})",
            placeholders(values.len() + 1, endpoints.len())
        );
        values.extend(endpoints.iter().map(|e| e.as_str().to_owned().into()));
        filter
    };
    let sql = format!(
        "SELECT {CANDIDATE_COLUMNS} FROM jobs
         WHERE status = 'queued' {model_filter} {endpoint_filter}
           AND expires_at > ?1 AND (not_before IS NULL OR not_before <= ?1)
         ORDER BY priority, seq LIMIT ?2"
    );
    (sql, values)
}

/// What a node asks a lease for.
pub struct Asked<'a> {
    pub node_id: &'a str,
    /// `*`: any model.
    pub models: &'a [String],
    pub endpoints: &'a [Endpoint],
    pub limit: u32,
    pub lease: Duration,
}

/// Keys picked whose lane queries found nothing (their jobs backing off, or expired and not
/// yet reaped) before a lease stops asking the fair share and fills the rest in queue order.
const MAX_MISSES: usize = 16;

/// A queued job read for leasing.
struct Candidate {
    id: String,
    model: String,
    payload: String,
    attempts: u32,
    request_id: Option<String>,
    created_at: i64,
    endpoint: Endpoint,
    seq: i64,
    est_tokens: u64,
    owner: String,
    priority: u8,
    relay: bool,
}

fn candidate(row: &Row<'_>) -> Result<Candidate, StoreError> {
    Ok(Candidate {
        id: row.get(0)?,
        model: row.get(1)?,
        payload: row.get(2)?,
        attempts: row.get(3)?,
        request_id: row.get(4)?,
        created_at: row.get(5)?,
        endpoint: reads::endpoint(row, 6)?,
        seq: row.get(7)?,
        est_tokens: row.get::<i64>(8)?.max(0) as u64,
        owner: row.get(9)?,
        priority: row.get(10)?,
        relay: row.get(11)?,
    })
}

/// The columns [`candidate`] reads, in its order.
const CANDIDATE_COLUMNS: &str = "id, model, request_payload, attempts, request_id, created_at, endpoint, seq, est_tokens, owner_key_id, priority, relay";

/// Leases up to `asked.limit` queued jobs the node serves: the highest priority (lowest
/// number) first; within a priority, shared between the keys with work queued in
/// proportion to their weight (see `fair`), each key's jobs oldest first.
pub fn lease(
    ctx: &mut WriteCtx<'_>,
    fair: &Fair,
    asked: &Asked<'_>,
) -> Result<Vec<LeasedJob>, StoreError> {
    let any_model = asked.models.iter().any(|m| m == "*");
    if asked.limit == 0 || (asked.models.is_empty() && !any_model) || asked.endpoints.is_empty() {
        return Ok(Vec::new());
    }
    let filter = Filter {
        models: asked.models,
        endpoints: asked.endpoints,
    };
    let mut leased = Vec::new();
    // What this lease took: the counts learn of it only when it commits.
    let mut taken = Taken::new();
    // And what earlier leases of the same group took, for the same reason.
    for change in ctx.earlier {
        if change.from == Some(JobStatus::Queued) && change.status == JobStatus::Processing {
            let lane = (change.model.clone(), change.endpoint);
            *taken
                .entry((change.priority, change.owner.clone(), lane))
                .or_default() += 1;
        }
    }
    let mut misses = 0;
    let mut deferred = Deferrals::default();
    for priority in 1..=5u8 {
        let mut skip = HashSet::new();
        while (leased.len() as u32) < asked.limit {
            let room = asked.limit - leased.len() as u32;
            let Some(pick) = fair.pick(priority, &filter, &taken, &skip, room, &mut deferred)
            else {
                break;
            };
            let mut candidates = Vec::new();
            for lane in &pick.lanes {
                candidates.extend(lane_candidates(ctx, &pick.key, lane, priority, pick.grant)?);
            }
            candidates.sort_by_key(|c| c.seq);
            candidates.truncate(pick.grant as usize);
            let before = leased.len();
            let mut tokens = 0;
            for candidate in candidates {
                let lane = (candidate.model.clone(), candidate.endpoint);
                let estimate = candidate.est_tokens;
                if let Some(job) = take(ctx, candidate, asked)? {
                    *taken.entry((priority, pick.key.clone(), lane)).or_default() += 1;
                    tokens += estimate;
                    leased.push(job);
                }
            }
            fair.spend(&pick.key, tokens);
            let got = (leased.len() - before) as u32;
            if got == 0 {
                fair.sleep(priority, &pick.key);
                skip.insert(pick.key);
                misses += 1;
                if misses > MAX_MISSES {
                    // Bounded work whatever the counts say: the rest in plain queue order.
                    let room = asked.limit - leased.len() as u32;
                    let fallback = Fallback {
                        fair,
                        taken: &mut taken,
                        deferred: &mut deferred,
                    };
                    leased.extend(in_queue_order(ctx, asked, room, fallback)?);
                    return Ok(deferrals(ctx, leased, deferred));
                }
                continue;
            }
            fair.charge(priority, &pick.key, got);
        }
    }
    let room = asked.limit - leased.len() as u32;
    if room > 0 && ctx.conn.engine() == Engine::Postgres {
        // Other gateways' commits reach the counts only at the next re-count (each second):
        // what the counts do not know of yet is leased in plain queue order.
        let fallback = Fallback {
            fair,
            taken: &mut taken,
            deferred: &mut deferred,
        };
        leased.extend(in_queue_order(ctx, asked, room, fallback)?);
    }
    Ok(deferrals(ctx, leased, deferred))
}

/// Records why a lease passed over keys with queued jobs, for the metrics; returns what
/// it leased.
fn deferrals(
    ctx: &mut WriteCtx<'_>,
    leased: Vec<LeasedJob>,
    deferred: Deferrals,
) -> Vec<LeasedJob> {
    for (reason, happened) in [
        ("max_concurrent_jobs", deferred.concurrency),
        ("tokens_per_minute", deferred.tokens),
    ] {
        if happened {
            ctx.events.push(QueueEvent::LeaseDeferred { reason });
        }
    }
    leased
}

/// Up to `limit` of `key`'s queued jobs of `lane` in band `priority` that may run now,
/// oldest first, through `jobs_queued_by_owner` (every column an equality: no sort).
fn lane_candidates(
    ctx: &WriteCtx<'_>,
    key: &str,
    (model, endpoint): &Lane,
    priority: u8,
    limit: u32,
) -> Result<Vec<Candidate>, StoreError> {
    ctx.conn
        .prepare_cached(&format!("{}{}", lane_query(), skip_locked(ctx.conn)))?
        .query_map(
            params![key, model, endpoint.as_str(), priority, ctx.now, limit],
            candidate,
        )?
        .collect::<Result<Vec<_>, _>>()
}

/// On PostgreSQL, what ends a lease's read of candidates: the rows are locked until the
/// group commits, and rows another gateway's lease holds are skipped, never waited on, so
/// two gateways never lease one job nor wait on each other. SQLite's one writer needs none.
fn skip_locked(conn: &Conn) -> &'static str {
    conn.pick("", " FOR UPDATE SKIP LOCKED")
}

fn lane_query() -> String {
    format!(
        "SELECT {CANDIDATE_COLUMNS} FROM jobs INDEXED BY jobs_queued_by_owner
         WHERE owner_key_id = ?1 AND model = ?2 AND endpoint = ?3 AND priority = ?4
           AND status = 'queued'
           AND expires_at > ?5 AND (not_before IS NULL OR not_before <= ?5)
         ORDER BY seq LIMIT ?6"
    )
}

/// What the queue-order fallback keeps of the fair lease: the keys' caps and budgets.
struct Fallback<'a> {
    fair: &'a Fair,
    taken: &'a mut Taken,
    deferred: &'a mut Deferrals,
}

/// How many jobs in queue order the fallback reads for each one it may lease: a key at its
/// cap or out of tokens has its jobs passed over, not leased.
const FALLBACK_READ_AHEAD: u32 = 4;

/// Up to `limit` jobs in plain queue order, whoever queued them, within each key's
/// `max_concurrent_jobs` and `tokens_per_minute`.
fn in_queue_order(
    ctx: &mut WriteCtx<'_>,
    asked: &Asked<'_>,
    limit: u32,
    keep: Fallback<'_>,
) -> Result<Vec<LeasedJob>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let read = limit.saturating_mul(FALLBACK_READ_AHEAD);
    let (sql, values) = candidates_query(ctx.now, asked.models, asked.endpoints, read);
    let candidates = ctx
        .conn
        .prepare_cached(&format!("{sql}{}", skip_locked(ctx.conn)))?
        .query_map(params_from_iter(values), candidate)?
        .collect::<Result<Vec<_>, _>>()?;
    let mut leased = Vec::with_capacity(limit as usize);
    for candidate in candidates {
        if leased.len() as u32 >= limit {
            break;
        }
        if !keep
            .fair
            .may_take(&candidate.owner, keep.taken, keep.deferred)
        {
            continue;
        }
        let slot = (
            candidate.priority,
            candidate.owner.clone(),
            (candidate.model.clone(), candidate.endpoint),
        );
        let (owner, estimate) = (candidate.owner.clone(), candidate.est_tokens);
        if let Some(job) = take(ctx, candidate, asked)? {
            *keep.taken.entry(slot).or_default() += 1;
            keep.fair.spend(&owner, estimate);
            leased.push(job);
        }
    }
    Ok(leased)
}

/// Moves one candidate to `processing` under a new lease; `None` when another change moved
/// it first.
fn take(
    ctx: &mut WriteCtx<'_>,
    candidate: Candidate,
    asked: &Asked<'_>,
) -> Result<Option<LeasedJob>, StoreError> {
    let expires = ctx.now + asked.lease.as_millis() as i64;
    let lease_id = format!("lease-{}", uuid::Uuid::new_v4().simple());
    let effects = Effects {
        lease: Some((&lease_id, expires, asked.node_id)),
        count_attempt: true,
        ..Effects::default()
    };
    let id = candidate.id;
    if !transition(ctx, &id, JobStatus::Queued, JobStatus::Processing, effects)? {
        return Ok(None);
    }
    ctx.events.push(QueueEvent::Leased {
        model: candidate.model.clone(),
        waited_ms: ctx.now - candidate.created_at,
    });
    let request_payload =
        RawValue::from_string(candidate.payload).map_err(|e| StoreError::CorruptPayload {
            id: id.clone(),
            source: Arc::new(e),
        })?;
    Ok(Some(LeasedJob {
        id: id.into(),
        model: candidate.model,
        endpoint: candidate.endpoint,
        request_payload,
        lease_id: lease_id.into(),
        lease_expires_at: expires,
        lease_ttl_ms: asked.lease.as_millis() as u64,
        attempt: candidate.attempts + 1,
        request_id: candidate.request_id,
        relay: candidate.relay,
    }))
}

/// The job a lease was issued for, and whether that lease's outcome is already stored.
struct LeaseState {
    job_id: String,
    status: JobStatus,
    outcome_stored: bool,
    holder: Option<String>,
    /// Unix ms: the job's TTL.
    expires_at: i64,
}

fn lease_state(ctx: &WriteCtx<'_>, lease_id: &str) -> Result<Option<LeaseState>, StoreError> {
    ctx.conn
        .prepare_cached(
            "SELECT id, status, result_lease_id IS NOT DISTINCT FROM ?1, locked_by, expires_at
             FROM jobs WHERE lease_id = ?1",
        )?
        .query_row([lease_id], |row| {
            Ok(LeaseState {
                job_id: row.get(0)?,
                status: reads::status(row, 1)?,
                outcome_stored: row.get(2)?,
                holder: row.get(3)?,
                expires_at: row.get(4)?,
            })
        })
        .optional()
}

/// Extends `lease_ids` held by `node_id`. A lease that lapsed while no other node took its
/// job is the node's again: it is still running the job, and running it twice helps no one.
/// Cancelled jobs and leases superseded (or whose outcome is stored) are reported.
pub fn heartbeat(
    ctx: &mut WriteCtx<'_>,
    node_id: &str,
    lease_ids: &[LeaseId],
    lease: Duration,
) -> Result<HeartbeatResponse, StoreError> {
    let expires = ctx.now + lease.as_millis() as i64;
    let mut response = HeartbeatResponse {
        extended: Vec::new(),
        cancelled: Vec::new(),
        lost: Vec::new(),
        lease_expires_at: expires,
        lease_ttl_ms: lease.as_millis() as u64,
        draining: false,
    };
    for typed in lease_ids {
        let lease_id = typed.as_str();
        let state = lease_state(ctx, lease_id)?;
        let extended = match state {
            Some(LeaseState {
                status: JobStatus::Processing,
                ..
            }) => {
                ctx.conn
                    .prepare_cached(
                        "UPDATE jobs SET lease_expires_at = ?2, updated_at = ?3
                         WHERE lease_id = ?1 AND status = 'processing'",
                    )?
                    .execute(params![lease_id, expires, ctx.now])?;
                true
            }
            Some(LeaseState {
                job_id,
                status: JobStatus::Queued,
                outcome_stored: false,
                holder,
                expires_at,
            }) if holder.as_deref() == Some(node_id) && expires_at > ctx.now => {
                let effects = Effects {
                    lease: Some((lease_id, expires, node_id)),
                    ..Effects::default()
                };
                transition(
                    ctx,
                    &job_id,
                    JobStatus::Queued,
                    JobStatus::Processing,
                    effects,
                )?
            }
            Some(LeaseState {
                status: JobStatus::Cancelled,
                ..
            }) => {
                response.cancelled.push(typed.clone());
                continue;
            }
            _ => false,
        };
        if extended {
            response.extended.push(typed.clone());
        } else {
            response.lost.push(typed.clone());
        }
    }
    Ok(response)
}

/// Gives every processing lease a fresh `lease` from `now` (Unix ms), when the gateway
/// starts or stood still: the time it was down must not count against nodes that kept
/// working. Returns how many leases it extended. On PostgreSQL only when no other gateway
/// is connected to the database: the others served the nodes meanwhile, and extending
/// their leases at each restart of one would keep the leases of dead nodes alive.
pub fn grant_grace(conn: &Conn, now: i64, lease: Duration) -> Result<usize, StoreError> {
    if conn.engine() == Engine::Postgres && other_gateways(conn)? > 0 {
        return Ok(0);
    }
    conn.execute(
        "UPDATE jobs SET lease_expires_at =
             CASE WHEN lease_expires_at > ?1 THEN lease_expires_at ELSE ?1 END
         WHERE status = 'processing'",
        [now + lease.as_millis() as i64],
    )
}

/// How many other gateways are connected to the PostgreSQL database, by their connections'
/// `application_name` (`db::pg::APPLICATION`, then each gateway's name).
fn other_gateways(conn: &Conn) -> Result<i64, StoreError> {
    conn.query_row(
        "SELECT COUNT(DISTINCT application_name) FROM pg_stat_activity
         WHERE application_name LIKE ?1 AND application_name <> current_setting('application_name')",
        params![format!("{} %", super::db::pg::APPLICATION)],
        |row| row.get(0),
    )
}

/// One reaper pass: lapsed leases go back to the queue or fail (the attempt rule in
/// `results`), queued jobs past their TTL expire, and retries whose backoff ended since
/// `pass.since` are counted so that nodes are woken. The store is the one record of due
/// times, so none is forgotten, across restarts included. A lease on a job's last attempt
/// fails it only one `lease` after it lapsed: no other node may take the job, so its holder,
/// perhaps only late, keeps the chance to heartbeat or deliver. Bounded per pass so that a
/// huge backlog cannot hold the writer long.
pub fn reap(
    ctx: &mut WriteCtx<'_>,
    pass: ReapPass,
    lease: Duration,
) -> Result<ReapReport, StoreError> {
    let mut report = ReapReport {
        at: ctx.now,
        ..ReapReport::default()
    };
    // Several gateways on one PostgreSQL database reap one at a time; a pass that finds
    // another at it only counts what became due, for its own waiting nodes.
    if reaper_lock(ctx.conn)? {
        requeue_and_expire(ctx, pass, lease, &mut report)?;
    }
    report.due =
        ctx.conn
            .prepare_cached(
                "SELECT COUNT(*) FROM jobs INDEXED BY jobs_by_not_before
             WHERE status = 'queued' AND not_before > ?1 AND not_before <= ?2",
            )?
            .query_row(params![pass.since, ctx.now], |row| row.get::<i64>(0))? as usize;
    Ok(report)
}

/// The advisory lock every gateway's reaper pass takes, any number shared by all.
const REAPER_LOCK: i64 = 0x0bb_4ea9;

/// Takes the reaper's lock until the end of the transaction, on PostgreSQL; whether it was
/// free. SQLite's single writer needs none.
fn reaper_lock(conn: &Conn) -> Result<bool, StoreError> {
    match conn.engine() {
        Engine::Sqlite => Ok(true),
        Engine::Postgres => conn.query_row(
            "SELECT pg_try_advisory_xact_lock(?1)",
            params![REAPER_LOCK],
            |row| row.get(0),
        ),
    }
}

fn requeue_and_expire(
    ctx: &mut WriteCtx<'_>,
    pass: ReapPass,
    lease: Duration,
    report: &mut ReapReport,
) -> Result<(), StoreError> {
    const PER_PASS: i64 = 1000;
    if pass.stalled {
        report.granted = grant_grace(ctx.conn, ctx.now, lease)?;
    }
    let last_chance = ctx.now - lease.as_millis() as i64;
    let lapsed = ctx
        .conn
        .prepare_cached(
            // The planner, without statistics, would scan the whole queue index instead.
            "SELECT id FROM jobs INDEXED BY jobs_by_lease_expiry
             WHERE status = 'processing' AND lease_expires_at < ?1
               AND ((attempts < max_attempts AND first_relayed_at IS NULL)
                    OR lease_expires_at < ?3)
             LIMIT ?2",
        )?
        .query_map(params![ctx.now, PER_PASS, last_chance], |row| {
            row.get::<String>(0)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for id in lapsed {
        match results::end_lost_run(ctx, &id, LostRun::LeaseLapsed)? {
            Some(JobStatus::Queued) => report.requeued += 1,
            Some(_) => report.failed += 1,
            None => {}
        }
    }
    let overdue = ctx
        .conn
        .prepare_cached(
            "SELECT id, attempts, error_payload FROM jobs INDEXED BY jobs_by_expiry
             WHERE status = 'queued' AND expires_at <= ?1 LIMIT ?2",
        )?
        .query_map(params![ctx.now, PER_PASS], |row| {
            Ok((
                row.get::<String>(0)?,
                row.get::<u32>(1)?,
                row.get::<Option<String>>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for (id, attempts, last_error) in overdue {
        let last_error = last_error.and_then(|text| serde_json::from_str::<ErrorBody>(&text).ok());
        let error = expiry_error(&id, attempts, last_error.as_ref());
        let effects = Effects {
            error: Some((&error, None)),
            ..Effects::default()
        };
        if transition(ctx, &id, JobStatus::Queued, JobStatus::Expired, effects)? {
            report.expired += 1;
        }
    }
    Ok(())
}

/// The error of a job that expired in the queue. It says truthfully whether a node ever ran
/// it, and keeps the last attempt's error, which the expiry would otherwise replace.
fn expiry_error(id: &str, attempts: u32, last_error: Option<&ErrorBody>) -> ErrorBody {
    let runs = if attempts == 1 { "attempt" } else { "attempts" };
    let message = match (attempts, last_error) {
        (0, _) => format!("job `{id}` expired before a node ran it"),
        (n, Some(last)) => format!(
            "job `{id}` expired waiting to be retried after {n} {runs}; its last error: {}",
            last.message
        ),
        (n, None) => {
            format!("job `{id}` expired waiting to run again after {n} {runs} without a result")
        }
    };
    ErrorBody::new(message, "invalid_request_error").with_code("job_expired")
}

#[cfg(test)]
#[path = "leases_tests.rs"]
pub(super) mod fair_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::notify::Change;
    use std::collections::HashMap;

    /// How SQLite runs the lease query for these models and endpoints.
    fn plan(models: &[&str], endpoints: &[Endpoint]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::db::Conn::Sqlite(
            super::super::schema::open_and_migrate(&dir.path().join("q.db")).unwrap(),
        );
        let models: Vec<String> = models.iter().map(|m| (*m).to_owned()).collect();
        let (sql, values) = candidates_query(0, &models, endpoints, 4);
        let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = statement
            .query_map(params_from_iter(values), |row| row.get::<String>(3))
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn the_fallback_reads_through_the_queue_order_index_whatever_the_endpoints() {
        // Every endpoint: no filter on the endpoint.
        let all = plan(&["m"], &Endpoint::QUEUED);
        assert!(all.contains("jobs_by_queue_order"), "{all}");
        assert!(!all.contains("TEMP B-TREE"), "{all}");
        // One endpoint of one model: the same index, the others' jobs skipped, no sort.
        let one = plan(&["m"], &[Endpoint::Embeddings]);
        assert!(one.contains("jobs_by_queue_order"), "{one}");
        assert!(!one.contains("TEMP B-TREE"), "{one}");
        // Several endpoints (llama.cpp's default: all but embeddings): queue order, the
        // other endpoints' jobs skipped as they come, never a sort of every queued job.
        let several = plan(
            &["m"],
            &[
                Endpoint::ChatCompletions,
                Endpoint::Completions,
                Endpoint::Responses,
            ],
        );
        assert!(!several.contains("TEMP B-TREE"), "{several}");
        assert!(several.contains("USING INDEX"), "{several}");
    }

    #[test]
    fn a_keys_lane_is_read_in_queue_order_through_its_index_without_a_sort() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::db::Conn::Sqlite(
            super::super::schema::open_and_migrate(&dir.path().join("q.db")).unwrap(),
        );
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", lane_query()))
            .unwrap()
            .query_map(params!["k", "m", "/v1/chat/completions", 3, 0, 4], |row| {
                row.get::<String>(3)
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let plan = plan.join("; ");
        assert!(plan.contains("jobs_queued_by_owner"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }

    #[test]
    fn two_leases_in_one_group_keep_a_keys_max_concurrent_jobs_together() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::db::Conn::Sqlite(
            super::super::schema::open_and_migrate(&dir.path().join("q.db")).unwrap(),
        );
        let mut ctx = WriteCtx {
            conn: &conn,
            now: super::super::now_ms(),
            changes: Vec::new(),
            events: Vec::new(),
            earlier: &[],
            watched: &|_| false,
        };
        for _ in 0..3 {
            let job = super::fair_tests::job("c", 3);
            super::super::jobs::enqueue(&mut ctx, &job, 3, &|_| 0).unwrap();
        }
        let lane = ("m".to_owned(), Endpoint::ChatCompletions);
        let fair = Fair::seeded(vec![("c".into(), 3, lane, 3)], HashMap::new(), Vec::new());
        fair.set_cap("c", Some(1));
        let models = ["*".to_owned()];
        let asked = Asked {
            node_id: "n",
            models: &models,
            endpoints: &Endpoint::QUEUED,
            limit: 2,
            lease: Duration::from_secs(60),
        };
        let lease_after = |earlier: &[Change]| {
            let mut ctx = WriteCtx {
                conn: &conn,
                now: super::super::now_ms(),
                changes: Vec::new(),
                events: Vec::new(),
                earlier,
                watched: &|_| false,
            };
            let leased = lease(&mut ctx, &fair, &asked).unwrap();
            (leased.len(), ctx.changes)
        };
        // The group's first fetch takes the one job the cap allows; a second fetch in the
        // same group, before the counts learn of it, takes none.
        let (first, changes) = lease_after(&[]);
        assert_eq!(first, 1);
        assert_eq!(lease_after(&changes).0, 0);
        // Without the group's earlier changes it would have taken another.
        assert_eq!(lease_after(&[]).0, 1);
    }

    #[test]
    fn an_expiry_says_whether_a_node_ran_the_job_and_keeps_the_last_error() {
        assert_eq!(
            expiry_error("job-1", 0, None).message,
            "job `job-1` expired before a node ran it"
        );
        let upstream = ErrorBody::new("upstream answered 503", "server_error");
        let kept = expiry_error("job-1", 1, Some(&upstream));
        assert_eq!(
            kept.message,
            "job `job-1` expired waiting to be retried after 1 attempt; its last error: upstream answered 503"
        );
        assert_eq!(kept.code.as_deref(), Some("job_expired"));
        assert!(
            expiry_error("job-1", 2, None)
                .message
                .contains("without a result")
        );
    }
}
