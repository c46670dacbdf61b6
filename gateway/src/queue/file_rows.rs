//! The `files` table: inserts (with the idempotency key's rule), reads, pages, deletes and
//! the expired rows. Only SQL lives here; the bytes on disk are `files`' business.

use super::db::{Conn, OptionalExtension, Row, Value, params, params_from_iter};
use super::reads::{self, owner_filter};
use super::writer::WriteCtx;
use super::{StoreError, Visibility};
use openbeepboop::{FileObject, FilePurpose};

const COLUMNS: &str = "id, owner_key_id, purpose, filename, bytes, sha256, created_at, expires_at";

/// A file row as the store hands it out. Times are Unix ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    pub id: String,
    pub owner_key_id: String,
    pub purpose: FilePurpose,
    pub filename: String,
    pub bytes: u64,
    /// The SHA-256 of the content, in hex.
    pub sha256: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

impl FileRecord {
    /// OpenAI's `file` object. Times are Unix seconds.
    pub fn to_wire(&self) -> FileObject {
        FileObject {
            id: self.id.clone(),
            object: "file".to_owned(),
            bytes: self.bytes,
            created_at: self.created_at / 1000,
            expires_at: self.expires_at.map(|ms| ms / 1000),
            filename: self.filename.clone(),
            purpose: self.purpose,
            status: "processed".to_owned(),
            status_details: None,
        }
    }
}

/// The order of a page of files, by creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

/// A complete file's row, ready to insert.
pub struct NewRow<'a> {
    pub id: &'a str,
    pub owner_key_id: &'a str,
    pub purpose: FilePurpose,
    pub filename: &'a str,
    pub bytes: u64,
    pub sha256: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub request_hash: &'a str,
    /// Seconds after its creation when the file expires.
    pub expires_after: Option<u64>,
}

fn record(row: &Row<'_>) -> Result<FileRecord, StoreError> {
    let purpose: String = row.get(2)?;
    Ok(FileRecord {
        id: row.get(0)?,
        owner_key_id: row.get(1)?,
        purpose: purpose.parse().map_err(|e: String| StoreError::Column {
            index: 2,
            message: e.to_string(),
        })?,
        filename: row.get(3)?,
        bytes: row.get::<i64>(4)?.max(0) as u64,
        sha256: row.get(5)?,
        created_at: row.get(6)?,
        expires_at: row.get(7)?,
    })
}

/// Inserts the row, or returns the one an earlier upload with the same idempotency key
/// stored (`false`: not created). The same key with another request is a conflict.
pub fn insert(ctx: &WriteCtx<'_>, file: &NewRow<'_>) -> Result<(FileRecord, bool), StoreError> {
    if let Some(key) = file.idempotency_key {
        let existing = ctx
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS}, request_hash FROM files
                 WHERE owner_key_id = ?1 AND idempotency_key = ?2"
            ))?
            .query_row(params![file.owner_key_id, key], |row| {
                Ok((record(row)?, row.get::<String>(8)?))
            })
            .optional()?;
        if let Some((record, hash)) = existing {
            return if hash == file.request_hash {
                Ok((record, false))
            } else {
                Err(StoreError::IdempotencyConflict {
                    key: key.to_owned(),
                    used_on: None,
                })
            };
        }
    }
    let expires_at = file.expires_after.map(|seconds| {
        ctx.now
            .saturating_add((seconds as i64).saturating_mul(1000))
    });
    ctx.conn
        .prepare_cached(
            "INSERT INTO files (id, owner_key_id, purpose, filename, bytes, sha256,
                 idempotency_key, request_hash, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            file.id,
            file.owner_key_id,
            file.purpose.as_str(),
            file.filename,
            file.bytes as i64,
            file.sha256,
            file.idempotency_key,
            file.request_hash,
            ctx.now,
            expires_at,
        ])?;
    Ok((
        FileRecord {
            id: file.id.to_owned(),
            owner_key_id: file.owner_key_id.to_owned(),
            purpose: file.purpose,
            filename: file.filename.to_owned(),
            bytes: file.bytes,
            sha256: file.sha256.to_owned(),
            created_at: ctx.now,
            expires_at,
        },
        true,
    ))
}

pub fn by_id(conn: &Conn, id: &str, who: &Visibility) -> Result<Option<FileRecord>, StoreError> {
    let (owner, owner_value) = owner_filter(who, 2);
    let mut values = vec![Value::Text(id.to_owned())];
    values.extend(owner_value);
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM files WHERE id = ?1 {owner}"
    ))?
    .query_row(params_from_iter(values), record)
    .optional()
}

/// A page of the files `who` may see, after the file `after` in `order`, and whether more
/// follow. An `after` the caller cannot see ends the list.
pub fn list(
    conn: &Conn,
    who: &Visibility,
    purpose: Option<FilePurpose>,
    limit: usize,
    order: Order,
    after: Option<&str>,
) -> Result<(Vec<FileRecord>, bool), StoreError> {
    let (owner, owner_value) = owner_filter(who, 1);
    let mut values = vec![owner_value.unwrap_or(Value::Null)];
    let mut conditions = vec![owner.clone()];
    if let Some(purpose) = purpose {
        values.push(Value::Text(purpose.as_str().to_owned()));
        conditions.push(format!("AND purpose = ?{}", values.len()));
    }
    let (direction, compare, end) = match order {
        Order::Asc => ("ASC", ">", i64::MAX),
        Order::Desc => ("DESC", "<", -1),
    };
    if let Some(after) = after {
        values.push(Value::Text(after.to_owned()));
        conditions.push(format!(
            "AND seq {compare} COALESCE((SELECT seq FROM files WHERE id = ?{} {owner}), {end})",
            values.len()
        ));
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM files WHERE (CAST(?1 AS TEXT) IS NULL OR 1 = 1) {} ORDER BY seq {direction}",
        conditions.join(" "),
    );
    reads::page(conn, &sql, values, limit, record)
}

/// Deletes the row of a file `who` may see; `None` when there is none.
pub fn delete(conn: &Conn, id: &str, who: &Visibility) -> Result<Option<FileRecord>, StoreError> {
    let Some(found) = by_id(conn, id, who)? else {
        return Ok(None);
    };
    conn.prepare_cached("DELETE FROM files WHERE id = ?1")?
        .execute([id])?;
    Ok(Some(found))
}

/// Up to `limit` files whose `expires_at` (Unix ms) is at or before `now`.
pub fn expired(conn: &Conn, now: i64, limit: usize) -> Result<Vec<String>, StoreError> {
    let ids = conn
        .prepare_cached(
            "SELECT id FROM files WHERE expires_at IS NOT NULL AND expires_at <= ?1
             ORDER BY expires_at LIMIT ?2",
        )?
        .query_map(params![now, limit as i64], |row| row.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(ids)
}

/// Deletes the rows among `ids` that are still expired at `now`; returns those deleted.
pub fn delete_expired(conn: &Conn, ids: &[String], now: i64) -> Result<Vec<String>, StoreError> {
    let mut statement = conn.prepare_cached(
        "DELETE FROM files WHERE id = ?1 AND expires_at IS NOT NULL AND expires_at <= ?2",
    )?;
    let mut deleted = Vec::with_capacity(ids.len());
    for id in ids {
        if statement.execute(params![id, now])? > 0 {
            deleted.push(id.clone());
        }
    }
    Ok(deleted)
}

/// Every file id, for the sweep of the directory at start.
pub fn all_ids(conn: &Conn) -> Result<std::collections::HashSet<String>, StoreError> {
    let ids = conn
        .prepare("SELECT id FROM files")?
        .query_map(params![], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(ids)
}
