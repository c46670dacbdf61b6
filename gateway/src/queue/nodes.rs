//! Nodes as operators see them: the list, draining and forgetting. A node's row is written
//! by its own calls (`leases::record_node`); here only `draining` changes, or the row goes.

use super::StoreError;
use super::db::{Conn, OptionalExtension, params};
use super::writer::WriteCtx;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// The drained nodes' ids, in memory for the lease's check. Changed only inside the
/// writer's transactions (by [`set_draining`] and [`remove`]), which also lease: a lease
/// that runs after a drain's commit sees it, and concurrent drains apply in commit order.
#[derive(Debug, Clone, Default)]
pub struct Drained(Arc<Mutex<HashSet<String>>>);

impl Drained {
    pub fn new(ids: HashSet<String>) -> Self {
        Self(Arc::new(Mutex::new(ids)))
    }

    /// Replaces the set with the one stored: on PostgreSQL, where an admin may drain a node
    /// through another gateway.
    pub fn replace(&self, ids: HashSet<String>) {
        *self.lock() = ids;
    }

    pub fn contains(&self, id: &str) -> bool {
        self.lock().contains(id)
    }

    fn set(&self, id: &str, drained: bool) {
        let mut ids = self.lock();
        if drained {
            ids.insert(id.to_owned());
        } else {
            ids.remove(id);
        }
    }

    /// Replaces the set with what the database says: after a commit failed, whose
    /// transaction had changed the set.
    pub fn reload(&self, ids: HashSet<String>) {
        *self.lock() = ids;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A node's row, with its jobs running now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub id: String,
    pub key_id: String,
    pub models: Vec<String>,
    pub capacity: u32,
    /// Unix ms.
    pub first_seen_at: i64,
    /// Unix ms.
    pub last_seen_at: i64,
    pub draining: bool,
    /// The node's last heartbeat said it knows it is drained.
    pub draining_reported: bool,
    pub in_flight: u64,
}

/// Every node, the most recently seen first.
pub fn list(conn: &Conn) -> Result<Vec<NodeRow>, StoreError> {
    let mut running: HashMap<String, u64> = HashMap::new();
    let mut counts = conn.prepare_cached(
        "SELECT locked_by, count(*) FROM jobs WHERE status = 'processing' GROUP BY locked_by",
    )?;
    for row in counts.query_map(params![], |row| {
        Ok((row.get::<Option<String>>(0)?, row.get::<i64>(1)?))
    })? {
        let (node, count) = row?;
        if let Some(node) = node {
            running.insert(node, count as u64);
        }
    }
    let mut rows = conn.prepare_cached(
        "SELECT id, key_id, models, capacity, first_seen_at, last_seen_at, draining,
             draining_reported
         FROM nodes ORDER BY last_seen_at DESC, id",
    )?;
    let nodes = rows
        .query_map(params![], |row| {
            let id: String = row.get(0)?;
            let models: String = row.get(2)?;
            Ok(NodeRow {
                in_flight: running.get(&id).copied().unwrap_or(0),
                id,
                key_id: row.get(1)?,
                models: serde_json::from_str(&models).unwrap_or_default(),
                capacity: row.get(3)?,
                first_seen_at: row.get(4)?,
                last_seen_at: row.get(5)?,
                draining: row.get(6)?,
                draining_reported: row.get(7)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(nodes)
}

/// The drained nodes' ids, read once at start.
pub fn draining(conn: &Conn) -> Result<HashSet<String>, StoreError> {
    let mut rows = conn.prepare_cached("SELECT id FROM nodes WHERE draining = 1")?;
    let ids = rows
        .query_map(params![], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(ids)
}

/// Sets node `id`'s `draining`, in the database and in `drained`. `NodeNotFound` for a
/// node never seen.
pub fn set_draining(
    ctx: &mut WriteCtx<'_>,
    drained: &Drained,
    id: &str,
    draining: bool,
) -> Result<(), StoreError> {
    let changed = ctx
        .conn
        .prepare_cached("UPDATE nodes SET draining = ?2 WHERE id = ?1")?
        .execute(params![id, draining])?;
    if changed == 0 {
        return Err(StoreError::NodeNotFound(id.to_owned()));
    }
    drained.set(id, draining);
    Ok(())
}

/// Forgets node `id` if it was last seen before `alive_since` (Unix ms): a node still
/// calling would come back at its next call, and undrained. `NodeAlive` for one seen
/// since, `NodeNotFound` for one never seen.
pub fn remove(
    ctx: &mut WriteCtx<'_>,
    drained: &Drained,
    id: &str,
    alive_since: i64,
) -> Result<(), StoreError> {
    let removed: Option<String> = ctx
        .conn
        .prepare_cached("DELETE FROM nodes WHERE id = ?1 AND last_seen_at < ?2 RETURNING id")?
        .query_row(params![id, alive_since], |row| row.get(0))
        .optional()?;
    if removed.is_some() {
        drained.set(id, false);
        return Ok(());
    }
    let exists: Option<i64> = ctx
        .conn
        .prepare_cached("SELECT 1 FROM nodes WHERE id = ?1")?
        .query_row(params![id], |row| row.get(0))
        .optional()?;
    Err(match exists {
        Some(_) => StoreError::NodeAlive(id.to_owned()),
        None => StoreError::NodeNotFound(id.to_owned()),
    })
}
