//! The front door of operators' and the dashboard's calls: retries, priorities, nodes,
//! exports and the overview. The SQL lives in `retry`, `nodes` and `reads`.

use super::db::{Conn, params};
use super::history::{Ended, History};
use super::{JobFilter, JobRecord, Queue, StoreError, Visibility, nodes, now_ms, reads, retry};
use openbeepboop::{JobStatus, NodeInfo, OverviewDepth, OverviewHour};
use std::collections::BTreeMap;
use std::time::Duration;

/// Jobs read at start to seed the hour's history: at most this many of the newest rows,
/// so that a huge table does not slow the start.
const SEED_ROWS: i64 = 200_000;
const HOUR_MS: i64 = 3_600_000;

/// Counts the jobs that ended in the hour before `now` (Unix ms) into `history`.
pub fn seed_history(conn: &Conn, history: &History, now: i64) -> Result<(), StoreError> {
    let mut rows = conn.prepare(
        "SELECT owner_key_id, locked_by, status, created_at, locked_at, finished_at FROM jobs
         WHERE seq > (SELECT COALESCE(max(seq), 0) FROM jobs) - ?1 AND finished_at >= ?2",
    )?;
    let ended = rows.query_map(params![SEED_ROWS, now - HOUR_MS], |row| {
        Ok((
            row.get::<String>(0)?,
            row.get::<Option<String>>(1)?,
            reads::status(row, 2)?,
            (
                row.get::<i64>(3)?,
                row.get::<Option<i64>>(4)?,
                row.get::<i64>(5)?,
            ),
        ))
    })?;
    for found in ended {
        let (owner, node, status, (created, locked, finished)) = found?;
        let ran = locked.filter(|_| status != JobStatus::Expired);
        let ended = Ended {
            owner: &owner,
            node: node.as_deref(),
            status,
            processing_ms: ran.map(|at| finished - at),
            total_ms: finished - created,
        };
        history.seed(&ended, finished);
    }
    Ok(())
}

impl Queue {
    /// Queues an ended job again (see `retry::retry`).
    pub async fn retry(&self, id: String) -> Result<JobRecord, StoreError> {
        self.writer.write(move |ctx| retry::retry(ctx, &id)).await
    }

    /// Retries every job of `filter` (default: failed, expired and cancelled), a chunk of
    /// `retry::BULK_CHUNK` a transaction. Returns how many were retried.
    pub async fn retry_matching(&self, filter: JobFilter) -> Result<u64, StoreError> {
        let mut total = 0;
        let mut after = 0;
        loop {
            let filter = filter.clone();
            let (retried, last) = self
                .writer
                .write(move |ctx| retry::retry_chunk(ctx, &filter, after))
                .await?;
            total += retried;
            match last {
                Some(seq) => after = seq,
                None => return Ok(total),
            }
        }
    }

    /// Moves a queued job to `priority` (1 to 5).
    pub async fn set_priority(&self, id: String, priority: u8) -> Result<JobRecord, StoreError> {
        self.writer
            .write(move |ctx| retry::set_priority(ctx, &id, priority))
            .await
    }

    /// Whether an admin drained node `id`.
    pub fn is_draining(&self, id: &str) -> bool {
        self.draining.contains(id)
    }

    /// Every known node, the most recently seen first; alive when seen within `alive`.
    pub async fn nodes(&self, alive: Duration) -> Result<Vec<NodeInfo>, StoreError> {
        let rows = self.read(nodes::list).await?;
        let now = now_ms();
        let completed = self.history.completed_by_node(now);
        let since = now - alive.as_millis() as i64;
        Ok(rows
            .into_iter()
            .map(|row| NodeInfo {
                object: "node".to_owned(),
                completed_last_hour: completed.get(&row.id).copied().unwrap_or(0),
                alive: row.last_seen_at >= since,
                id: row.id,
                key_id: row.key_id,
                models: row.models,
                capacity: row.capacity,
                in_flight: row.in_flight,
                first_seen_at: row.first_seen_at / 1000,
                last_seen_at: row.last_seen_at / 1000,
                draining: row.draining,
                draining_reported: row.draining_reported,
            })
            .collect())
    }

    /// Drains (or undrains) node `id`: from now on its fetches lease nothing; its running
    /// jobs finish. `NodeNotFound` for a node never seen.
    pub async fn set_draining(&self, id: String, draining: bool) -> Result<(), StoreError> {
        let drained = self.draining.clone();
        let done = self
            .writer
            .write(move |ctx| nodes::set_draining(ctx, &drained, &id, draining))
            .await;
        self.reload_drained_after(done).await
    }

    /// Forgets node `id` unless it was seen within `alive` (`NodeAlive`): a node still
    /// calling would come back at its next call.
    pub async fn remove_node(&self, id: String, alive: Duration) -> Result<(), StoreError> {
        let drained = self.draining.clone();
        let since = now_ms() - alive.as_millis() as i64;
        let done = self
            .writer
            .write(move |ctx| nodes::remove(ctx, &drained, &id, since))
            .await;
        self.reload_drained_after(done).await
    }

    /// A change of the drained set happens inside its transaction; when the commit failed
    /// after it, the set is read again from the database.
    async fn reload_drained_after(&self, done: Result<(), StoreError>) -> Result<(), StoreError> {
        if let Err(error) = &done
            && !matches!(
                error,
                StoreError::NodeNotFound(_) | StoreError::NodeAlive(_)
            )
            && let Ok(ids) = self.read(nodes::draining).await
        {
            self.draining.reload(ids);
        }
        done
    }

    /// One page of an export: up to `limit` jobs after row `after_seq`, oldest first, each
    /// with its request and its row's seq.
    pub async fn export_page(
        &self,
        who: Visibility,
        filter: JobFilter,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<(i64, JobRecord, String)>, StoreError> {
        self.read(move |conn| reads::export_page(conn, &who, &filter, after_seq, limit))
            .await
    }

    /// Queued and running jobs by model and priority: everyone's from the counts the writer
    /// keeps, or one key's read from its rows.
    pub async fn depth_of(&self, who: Visibility) -> Result<Vec<OverviewDepth>, StoreError> {
        let rows = match who {
            Visibility::All => self.depth.rows(),
            Visibility::Owner(key) => self.read(move |conn| reads::depth_of(conn, &key)).await?,
        };
        let mut by_lane: BTreeMap<(String, u8), OverviewDepth> = BTreeMap::new();
        for row in rows {
            let entry = by_lane
                .entry((row.model.clone(), row.priority))
                .or_insert_with(|| OverviewDepth {
                    model: row.model.clone(),
                    priority: row.priority,
                    queued: 0,
                    processing: 0,
                });
            match row.status {
                JobStatus::Queued => entry.queued += row.count.max(0) as u64,
                JobStatus::Processing => entry.processing += row.count.max(0) as u64,
                _ => {}
            }
        }
        Ok(by_lane
            .into_values()
            .filter(|d| d.queued + d.processing > 0)
            .collect())
    }

    /// Nodes seen within `alive`.
    pub async fn nodes_alive(&self, alive: Duration) -> Result<u64, StoreError> {
        let since = now_ms() - alive.as_millis() as i64;
        let (_, alive) = self
            .read(move |conn| reads::oldest_and_alive(conn, since))
            .await?;
        Ok(alive.max(0) as u64)
    }

    /// The last hour of ended jobs: everyone's, or one key's.
    pub fn last_hour(&self, who: &Visibility) -> OverviewHour {
        let owner = match who {
            Visibility::All => None,
            Visibility::Owner(key) => Some(key.as_str()),
        };
        self.history.hour(owner, now_ms())
    }
}
