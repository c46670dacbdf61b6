//! Nodes as operators see them: the list, draining and forgetting. A node's row is written
//! by its own calls (`leases::record_node`); here only `draining` changes, or the row goes.

use super::StoreError;
use super::writer::WriteCtx;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{HashMap, HashSet};

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
pub fn list(conn: &Connection) -> Result<Vec<NodeRow>, StoreError> {
    let mut running: HashMap<String, u64> = HashMap::new();
    let mut counts = conn.prepare_cached(
        "SELECT locked_by, count(*) FROM jobs WHERE status = 'processing' GROUP BY locked_by",
    )?;
    for row in counts.query_map([], |row| {
        Ok((row.get::<_, Option<String>>(0)?, row.get::<_, i64>(1)?))
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
        .query_map([], |row| {
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
pub fn draining(conn: &Connection) -> Result<HashSet<String>, StoreError> {
    let mut rows = conn.prepare_cached("SELECT id FROM nodes WHERE draining = 1")?;
    let ids = rows
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(ids)
}

/// Sets node `id`'s `draining`. Returns false when no such node is known.
pub fn set_draining(ctx: &mut WriteCtx<'_>, id: &str, draining: bool) -> Result<bool, StoreError> {
    Ok(ctx
        .conn
        .prepare_cached("UPDATE nodes SET draining = ?2 WHERE id = ?1")?
        .execute(params![id, draining])?
        > 0)
}

/// Forgets node `id`. Returns false when no such node is known.
pub fn remove(ctx: &mut WriteCtx<'_>, id: &str) -> Result<bool, StoreError> {
    let existed: Option<String> = ctx
        .conn
        .prepare_cached("DELETE FROM nodes WHERE id = ?1 RETURNING id")?
        .query_row(params![id], |row| row.get(0))
        .optional()?;
    Ok(existed.is_some())
}
