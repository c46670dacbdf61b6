//! The `api_keys` table. Secrets never reach it: only argon2id hashes and lookup prefixes.

use super::StoreError;
use openbeepboop::{ApiKeyInfo, CreatedKey, KeyId, Role};
use rusqlite::{Connection, OptionalExtension, Row, params};

/// A freshly generated key, hashed by `auth`, ready to store.
#[derive(Debug, Clone)]
pub struct MintedKey {
    /// The whole key, shown to its owner once.
    pub token: String,
    /// The part after `sk-obb-` that finds the row without scanning hashes.
    pub prefix: String,
    /// The argon2id PHC string of the whole key.
    pub hash: String,
}

/// A key row, as authentication needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub hash: String,
    pub revoked: bool,
}

const COLUMNS: &str = "id, name, role, prefix, created_at, revoked_at";

fn info(row: &Row<'_>) -> rusqlite::Result<ApiKeyInfo> {
    let role: String = row.get(2)?;
    Ok(ApiKeyInfo {
        id: KeyId::from(row.get::<_, String>(0)?),
        object: "api_key".to_owned(),
        name: row.get(1)?,
        role: role.parse().unwrap_or(Role::User),
        prefix: format!("sk-obb-{}", row.get::<_, String>(3)?),
        created_at: row.get::<_, i64>(4)? / 1000,
        revoked_at: row.get::<_, Option<i64>>(5)?.map(|ms| ms / 1000),
    })
}

pub fn insert(
    conn: &Connection,
    now: i64,
    key: &MintedKey,
    name: &str,
    role: Role,
) -> Result<CreatedKey, StoreError> {
    let id = format!("key_{}", key.prefix);
    conn.execute(
        "INSERT INTO api_keys (id, prefix, key_hash, name, role, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id, key.prefix, key.hash, name, role.as_db_str(), now],
    )?;
    let info = conn.query_row(
        &format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"),
        [&id],
        info,
    )?;
    Ok(CreatedKey {
        info,
        key: key.token.clone(),
    })
}

/// Marks a key revoked; revoking twice keeps the first time.
pub fn revoke(conn: &Connection, now: i64, id: &str) -> Result<ApiKeyInfo, StoreError> {
    conn.execute(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
        params![id, now],
    )?;
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"),
        [id],
        info,
    )
    .optional()?
    .ok_or_else(|| StoreError::KeyNotFound(id.to_owned()))
}

pub fn list(conn: &Connection) -> Result<Vec<ApiKeyInfo>, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id"
    ))?;
    let rows = statement.query_map([], info)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn by_prefix(conn: &Connection, prefix: &str) -> Result<Option<KeyRow>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT id, name, role, key_hash, revoked_at IS NOT NULL FROM api_keys WHERE prefix = ?1",
    )?;
    Ok(statement
        .query_row([prefix], |row| {
            let role: String = row.get(2)?;
            Ok(KeyRow {
                id: row.get(0)?,
                name: row.get(1)?,
                role: role.parse().unwrap_or(Role::User),
                hash: row.get(3)?,
                revoked: row.get(4)?,
            })
        })
        .optional()?)
}

/// The counter that every insert, update or delete of a key moves (a trigger keeps it).
pub fn generation(conn: &Connection) -> Result<i64, StoreError> {
    let mut statement =
        conn.prepare_cached("SELECT generation FROM api_key_generation WHERE id = 1")?;
    Ok(statement.query_row([], |row| row.get(0))?)
}
