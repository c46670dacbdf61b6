//! Job reads. They run on pooled connections, never on the writer's.

use super::db::{Conn, OptionalExtension, Param, Row, Value, params, params_from_iter};
use super::{DepthRow, JobFilter, JobRecord, StoreError, Visibility};
use openbeepboop::{Endpoint, ErrorBody, JobStatus};

/// Jobs `ids` as [`Change`]s to their present status, from nowhere in particular (`from`
/// unknown): how a gateway learns of another's commits (see `shared`).
pub fn changes_of(conn: &Conn, ids: &[String]) -> Result<Vec<super::Change>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT id, status, model, priority, owner_key_id, endpoint, batch_id FROM jobs
         WHERE id IN ({})",
        super::shared::placeholders(ids.len())
    );
    conn.prepare_cached(&sql)?
        .query_map(super::shared::id_params(ids).as_slice(), |row| {
            Ok(super::Change {
                job_id: row.get(0)?,
                status: status(row, 1)?,
                from: None,
                model: row.get(2)?,
                priority: row.get(3)?,
                owner: row.get(4)?,
                endpoint: endpoint(row, 5)?,
                record: None,
                was_priority: None,
                batch_id: row.get(6)?,
            })
        })?
        .collect()
}

/// The columns [`record`] reads, in its order.
pub const JOB_COLUMNS: &str = "id, owner_key_id, model, status, priority, created_at, updated_at, \
     expires_at, attempts, locked_by, locked_at, finished_at, result_payload, error_payload, upstream_status, \
     endpoint, events";

/// The status in column `index`. An unreadable one is an error, never a guess.
pub fn status(row: &Row<'_>, index: usize) -> Result<JobStatus, StoreError> {
    let text: String = row.get(index)?;
    text.parse().map_err(|_| StoreError::Column {
        index,
        message: format!("unknown job status `{text}`"),
    })
}

pub fn record(row: &Row<'_>) -> Result<JobRecord, StoreError> {
    let error: Option<String> = row.get(13)?;
    Ok(JobRecord {
        id: row.get(0)?,
        owner_key_id: row.get(1)?,
        model: row.get(2)?,
        status: status(row, 3)?,
        priority: row.get(4)?,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
        expires_at: row.get(7)?,
        attempts: row.get(8)?,
        locked_by: row.get(9)?,
        locked_at: row.get(10)?,
        finished_at: row.get(11)?,
        result_payload: row.get(12)?,
        error: error.and_then(|text| serde_json::from_str::<ErrorBody>(&text).ok()),
        upstream_status: row.get(14)?,
        endpoint: endpoint(row, 15)?,
        events: row.get(16)?,
    })
}

/// The endpoint in column `index`. An unreadable one is an error, never a guess.
pub fn endpoint(row: &Row<'_>, index: usize) -> Result<Endpoint, StoreError> {
    let text: String = row.get(index)?;
    text.parse().map_err(|message: String| StoreError::Column {
        index,
        message: message.to_string(),
    })
}

/// The owner condition and its parameter, for queries that take `who` into account.
pub fn owner_filter(who: &Visibility, param: usize) -> (String, Option<Value>) {
    match who {
        Visibility::Owner(key_id) => (
            format!("AND owner_key_id = ?{param}"),
            Some(Value::Text(key_id.clone())),
        ),
        Visibility::All => (String::new(), None),
    }
}

pub fn job(conn: &Conn, id: &str, who: &Visibility) -> Result<Option<JobRecord>, StoreError> {
    by_id(conn, id, who, "", record)
}

/// The job and the request it was submitted with, as stored.
pub fn job_with_request(
    conn: &Conn,
    id: &str,
    who: &Visibility,
) -> Result<Option<(JobRecord, String)>, StoreError> {
    by_id(conn, id, who, ", request_payload", |row| {
        Ok((record(row)?, row.get::<String>(17)?))
    })
}

/// Job `id` if `who` may see it, read as [`JOB_COLUMNS`] then `more` columns by `read`.
fn by_id<T>(
    conn: &Conn,
    id: &str,
    who: &Visibility,
    more: &str,
    read: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let (owner, owner_value) = owner_filter(who, 2);
    let mut values = vec![Value::Text(id.to_owned())];
    values.extend(owner_value);
    conn.prepare_cached(&format!(
        "SELECT {JOB_COLUMNS}{more} FROM jobs WHERE id = ?1 {owner}"
    ))?
    .query_row(params_from_iter(values), read)
    .optional()
}

pub fn jobs(conn: &Conn, ids: &[String], who: &Visibility) -> Result<Vec<JobRecord>, StoreError> {
    let mut found = Vec::with_capacity(ids.len());
    for id in ids {
        found.extend(job(conn, id, who)?);
    }
    Ok(found)
}

/// The SQL conditions (each starting with `AND`) and their values, numbered from `?1`,
/// that keep the jobs of `filter` that `who` may see, its statuses aside (see [`ordered`]).
pub fn filter_conditions(filter: &JobFilter, who: &Visibility) -> (String, Vec<Value>) {
    let mut values: Vec<Value> = Vec::new();
    let mut conditions = String::new();
    let mut add = |condition: &str, value: Value, values: &mut Vec<Value>| {
        values.push(value);
        conditions.push_str(&format!(" AND {condition} ?{}", values.len()));
    };
    if let Visibility::Owner(key_id) = who {
        add("owner_key_id =", key_id.clone().into(), &mut values);
    }
    if let Some(key_id) = &filter.key_id {
        add("owner_key_id =", key_id.clone().into(), &mut values);
    }
    if let Some(model) = &filter.model {
        add("model =", model.clone().into(), &mut values);
    }
    if let Some(batch_id) = &filter.batch_id {
        add("batch_id =", batch_id.clone().into(), &mut values);
    }
    if let Some(since) = filter.since {
        add("created_at >=", since.into(), &mut values);
    }
    if let Some(until) = filter.until {
        add("created_at <", until.into(), &mut values);
    }
    (conditions, values)
}

/// The query of at most `limit` jobs of `filter` that `who` may see and `bound` admits (a
/// condition on `seq` written with `?` for its value), selecting `columns` (plain column
/// names) in `seq` order (`"DESC"` or `"ASC"`), and its values. One status is read through
/// `jobs_by_status` (or the owner's, the model's or the batch's index); several are one such
/// read each, merged, so that neither a rare status nor a common one is a scan or a sort of
/// the table.
pub fn ordered(
    filter: &JobFilter,
    who: &Visibility,
    columns: &str,
    bound: Option<(&str, Value)>,
    order: &str,
    limit: usize,
) -> (String, Vec<Value>) {
    let (conditions, mut values) = filter_conditions(filter, who);
    let bound = match bound {
        Some((condition, value)) => {
            values.push(value);
            format!(" {}", condition.replace('?', &format!("?{}", values.len())))
        }
        None => String::new(),
    };
    // A key's jobs are read through its own index (`jobs_by_owner`), the status filtered
    // there: through `jobs_by_status` a key with few jobs would be searched for among all.
    let status_column = if matches!(who, Visibility::Owner(_)) || filter.key_id.is_some() {
        "+status"
    } else {
        "status"
    };
    let read = |status: &str| {
        format!(
            "SELECT {columns}, seq AS sort_seq FROM jobs WHERE 1 = 1 {conditions}{status}{bound}
             ORDER BY seq {order} LIMIT {limit}"
        )
    };
    match filter.statuses.as_slice() {
        [] => (read(""), values),
        [status] => {
            values.push(status.as_str().to_owned().into());
            (
                read(&format!(" AND {status_column} = ?{}", values.len())),
                values,
            )
        }
        statuses => {
            let parts: Vec<String> = statuses
                .iter()
                .map(|status| {
                    values.push(status.as_str().to_owned().into());
                    format!(
                        "SELECT * FROM ({}) AS part",
                        read(&format!(" AND {status_column} = ?{}", values.len()))
                    )
                })
                .collect();
            let sql = format!(
                "SELECT {columns}, sort_seq FROM ({}) AS merged ORDER BY sort_seq {order} LIMIT {limit}",
                parts.join(" UNION ALL ")
            );
            (sql, values)
        }
    }
}

/// A page of the jobs of `filter` that `who` may see, newest first, older than job
/// `after` (an id; one that does not exist gives an empty page), and whether more follow.
pub fn list(
    conn: &Conn,
    who: &Visibility,
    filter: &JobFilter,
    limit: usize,
    after: Option<&str>,
) -> Result<(Vec<JobRecord>, bool), StoreError> {
    let bound = after.map(|id| {
        (
            "AND seq < COALESCE((SELECT seq FROM jobs WHERE id = ?), -1)",
            Value::Text(id.to_owned()),
        )
    });
    let (sql, values) = ordered(filter, who, JOB_COLUMNS, bound, "DESC", limit + 1);
    let mut rows = conn
        .prepare_cached(&sql)?
        .query_map(params_from_iter(values), record)?
        .collect::<Result<Vec<_>, _>>()?;
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    Ok((rows, has_more))
}

/// Up to `limit` jobs of `filter` that `who` may see after row `after_seq`, oldest first,
/// each with its request body and its row's seq (the next page's `after_seq`): one page
/// of an export.
pub fn export_page(
    conn: &Conn,
    who: &Visibility,
    filter: &JobFilter,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<(i64, JobRecord, String)>, StoreError> {
    let columns = format!("{JOB_COLUMNS}, request_payload");
    let bound = Some(("AND seq > ?", Value::Int(after_seq)));
    let (sql, values) = ordered(filter, who, &columns, bound, "ASC", limit);
    conn.prepare_cached(&sql)?
        .query_map(params_from_iter(values), |row| {
            Ok((row.get(18)?, record(row)?, row.get(17)?))
        })?
        .collect::<Result<_, _>>()
}

/// Runs `query` (without its `LIMIT`) for a page of at most `limit` rows, asking for one
/// more to tell whether more follow.
pub fn page<T>(
    conn: &Conn,
    query: &str,
    mut values: Vec<Value>,
    limit: usize,
    map: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
) -> Result<(Vec<T>, bool), StoreError> {
    values.push(Value::Int(limit as i64 + 1));
    let sql = format!("{query} LIMIT ?{}", values.len());
    let mut rows = conn
        .prepare_cached(&sql)?
        .query_map(params_from_iter(values), map)?
        .collect::<Result<Vec<_>, _>>()?;
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    Ok((rows, has_more))
}

pub fn live_models(conn: &Conn, since: i64) -> Result<Vec<String>, StoreError> {
    let lists = conn
        .prepare_cached("SELECT models FROM nodes WHERE last_seen_at >= ?1")?
        .query_map([since], |row| row.get::<String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut models: Vec<String> = lists
        .iter()
        .filter_map(|text| serde_json::from_str::<Vec<String>>(text).ok())
        .flatten()
        .filter(|model| model != "*")
        .collect();
    models.sort();
    models.dedup();
    Ok(models)
}

/// Jobs waiting or running, by status, model and priority: a walk of the queue index, done
/// once when the store opens.
pub fn depth(conn: &Conn) -> Result<Vec<DepthRow>, StoreError> {
    depth_rows(
        conn,
        "SELECT status, model, priority, COUNT(*) FROM jobs
         WHERE status IN ('queued', 'processing') GROUP BY status, model, priority",
        &[],
    )
}

/// [`depth`] of one key's jobs: its queued ones through `jobs_queued_by_owner`, its running
/// ones through `jobs_by_status`, so that neither is a scan of the key's history.
pub fn depth_of(conn: &Conn, key: &str) -> Result<Vec<DepthRow>, StoreError> {
    depth_rows(
        conn,
        "SELECT 'queued', model, priority, COUNT(*) FROM jobs
         WHERE owner_key_id = ?1 AND status = 'queued' GROUP BY model, priority
         UNION ALL
         SELECT 'processing', model, priority, COUNT(*) FROM jobs
         WHERE status = 'processing' AND owner_key_id = ?1 GROUP BY model, priority",
        &[&key],
    )
}

fn depth_rows(conn: &Conn, sql: &str, values: &[&dyn Param]) -> Result<Vec<DepthRow>, StoreError> {
    conn.prepare_cached(sql)?
        .query_map(values, |row| {
            Ok(DepthRow {
                status: status(row, 0)?,
                model: row.get(1)?,
                priority: row.get(2)?,
                count: row.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()
}

/// The fair share's starting point: queued jobs counted by key, priority, model and
/// endpoint (an index-only scan of `jobs_queued_by_owner`), running jobs by key, and the
/// keys' weights and concurrency caps.
pub fn fair_share(conn: &Conn) -> Result<super::fair::Fair, StoreError> {
    let (rows, running) = fair_counts(conn)?;
    Ok(super::fair::Fair::seeded(
        rows,
        running,
        super::keys::shares(conn)?,
    ))
}

/// Queued jobs by key, priority and lane, and running jobs by key: what
/// [`super::fair::Fair`] counts.
#[expect(clippy::type_complexity)]
pub fn fair_counts(
    conn: &Conn,
) -> Result<
    (
        Vec<(String, u8, super::fair::Lane, i64)>,
        std::collections::HashMap<String, i64>,
    ),
    StoreError,
> {
    let rows = conn
        .prepare_cached(
            "SELECT owner_key_id, priority, model, endpoint, COUNT(*)
             FROM jobs INDEXED BY jobs_queued_by_owner WHERE status = 'queued'
             GROUP BY owner_key_id, model, endpoint, priority",
        )?
        .query_map(params![], |row| {
            Ok((
                row.get::<String>(0)?,
                row.get::<u8>(1)?,
                (row.get::<String>(2)?, endpoint(row, 3)?),
                row.get::<i64>(4)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let running = conn
        .prepare_cached(
            "SELECT owner_key_id, COUNT(*) FROM jobs INDEXED BY jobs_by_lease_expiry
             WHERE status = 'processing' GROUP BY owner_key_id",
        )?
        .query_map(params![], |row| {
            Ok((row.get::<String>(0)?, row.get::<i64>(1)?))
        })?
        .collect::<Result<_, _>>()?;
    Ok((rows, running))
}

/// How many of its key's jobs of its model, endpoint and priority are queued ahead of
/// queued job `id` (through `jobs_queued_by_owner`).
pub fn ahead_of_in_its_lane(conn: &Conn, job: &JobRecord) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "SELECT COUNT(*) FROM jobs INDEXED BY jobs_queued_by_owner
             WHERE owner_key_id = ?1 AND model = ?2 AND endpoint = ?3 AND priority = ?4
               AND status = 'queued' AND seq < (SELECT seq FROM jobs WHERE id = ?5)",
    )?
    .query_row(
        params![
            job.owner_key_id,
            job.model,
            job.endpoint.as_str(),
            job.priority,
            job.id
        ],
        |row| row.get(0),
    )
}

/// The creation time of the oldest queued job, and how many nodes were seen since
/// `alive_since`: the parts of a queue snapshot that are read, not counted in memory.
pub fn oldest_and_alive(conn: &Conn, alive_since: i64) -> Result<(Option<i64>, i64), StoreError> {
    let oldest: Option<i64> = conn
        .prepare_cached(
            "SELECT MIN(created_at) FROM jobs INDEXED BY jobs_queued_by_age WHERE status = 'queued'",
        )?
        .query_row(params![], |row| row.get(0))?;
    let nodes_alive = conn
        .prepare_cached("SELECT COUNT(*) FROM nodes WHERE last_seen_at >= ?1")?
        .query_row([alive_since], |row| row.get(0))?;
    Ok((oldest, nodes_alive))
}
