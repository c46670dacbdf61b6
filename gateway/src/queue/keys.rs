//! The `api_keys` table. Secrets never reach it: only argon2id hashes and lookup prefixes.

use super::StoreError;
use super::db::{Conn, OptionalExtension, Row, params};
use super::fair::KeyShare;
use openbeepboop::{ApiKeyInfo, CreatedKey, KeyId, KeyLimits, Role};

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
    pub priorities: KeyPriorities,
    /// Submits a minute, when the key is limited.
    pub requests_per_minute: Option<u32>,
    /// Jobs it may have queued, when the key is limited.
    pub max_queued_jobs: Option<u32>,
}

/// The priorities a key's requests get: `default` when they name none (3 when unset), and
/// none earlier than `max` (1 runs first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyPriorities {
    pub max: Option<u8>,
    pub default: Option<u8>,
}

impl KeyPriorities {
    /// The priority a request gets: `asked`, or the key's default, or 3; never earlier than
    /// the key's `max`.
    pub fn apply(self, asked: Option<u8>) -> u8 {
        let priority = asked.or(self.default).unwrap_or(3);
        priority.max(self.max.unwrap_or(1))
    }
}

const COLUMNS: &str = "id, name, role, prefix, created_at, revoked_at";

fn info(row: &Row<'_>) -> Result<ApiKeyInfo, StoreError> {
    let role: String = row.get(2)?;
    Ok(ApiKeyInfo {
        id: KeyId::from(row.get::<String>(0)?),
        object: "api_key".to_owned(),
        name: row.get(1)?,
        role: role.parse().unwrap_or(Role::User),
        prefix: format!("sk-obb-{}", row.get::<String>(3)?),
        created_at: row.get::<i64>(4)? / 1000,
        revoked_at: row.get::<Option<i64>>(5)?.map(|ms| ms / 1000),
    })
}

pub fn insert(
    conn: &Conn,
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
pub fn revoke(conn: &Conn, now: i64, id: &str) -> Result<ApiKeyInfo, StoreError> {
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

pub fn list(conn: &Conn) -> Result<Vec<ApiKeyInfo>, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id"
    ))?;
    let rows = statement.query_map(params![], info)?;
    rows.collect::<Result<_, _>>()
}

pub fn by_prefix(conn: &Conn, prefix: &str) -> Result<Option<KeyRow>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT id, name, role, key_hash, revoked_at IS NOT NULL, max_priority, default_priority,
             requests_per_minute, max_queued_jobs
         FROM api_keys WHERE prefix = ?1",
    )?;
    statement
        .query_row([prefix], |row| {
            let role: String = row.get(2)?;
            Ok(KeyRow {
                id: row.get(0)?,
                name: row.get(1)?,
                role: role.parse().unwrap_or(Role::User),
                hash: row.get(3)?,
                revoked: row.get(4)?,
                priorities: KeyPriorities {
                    max: row.get(5)?,
                    default: row.get(6)?,
                },
                requests_per_minute: row.get(7)?,
                max_queued_jobs: row.get(8)?,
            })
        })
        .optional()
}

/// The counter that every insert, update or delete of a key moves (a trigger keeps it).
pub fn generation(conn: &Conn) -> Result<i64, StoreError> {
    let mut statement =
        conn.prepare_cached("SELECT generation FROM api_key_generation WHERE id = 1")?;
    statement.query_row(params![], |row| row.get(0))
}

/// The limit columns, in the order [`limits_of`] reads them.
const LIMIT_COLUMNS: &str = "requests_per_minute, tokens_per_minute, max_queued_jobs, \
     max_concurrent_jobs, weight, max_priority, default_priority, metrics_label";

fn limits_of(row: &Row<'_>) -> Result<KeyLimits, StoreError> {
    Ok(KeyLimits {
        requests_per_minute: row.get(0)?,
        tokens_per_minute: row.get(1)?,
        max_queued_jobs: row.get(2)?,
        max_concurrent_jobs: row.get(3)?,
        weight: row.get(4)?,
        max_priority: row.get(5)?,
        default_priority: row.get(6)?,
        metrics_label: row.get(7)?,
    })
}

/// Key `id`'s limits; `KeyNotFound` for no such key.
pub fn limits(conn: &Conn, id: &str) -> Result<KeyLimits, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {LIMIT_COLUMNS} FROM api_keys WHERE id = ?1"
    ))?
    .query_row([id], limits_of)
    .optional()?
    .ok_or_else(|| StoreError::KeyNotFound(id.to_owned()))
}

/// Replaces key `id`'s limits with `limits` (checked by the caller); returns them as stored.
pub fn set_limits(conn: &Conn, id: &str, new: &KeyLimits) -> Result<KeyLimits, StoreError> {
    let role: Option<String> = conn
        .prepare_cached("SELECT role FROM api_keys WHERE id = ?1")?
        .query_row([id], |row| row.get(0))
        .optional()?;
    match role.map(|role| role.parse::<Role>()) {
        None => return Err(StoreError::KeyNotFound(id.to_owned())),
        Some(Ok(Role::Node)) => return Err(StoreError::LimitsOnNodeKey(id.to_owned())),
        Some(_) => {}
    }
    let changed = conn
        .prepare_cached(
            "UPDATE api_keys SET requests_per_minute = ?2, tokens_per_minute = ?3,
                 max_queued_jobs = ?4, max_concurrent_jobs = ?5, weight = ?6, max_priority = ?7,
                 default_priority = ?8, metrics_label = ?9
             WHERE id = ?1",
        )?
        .execute(params![
            id,
            new.requests_per_minute,
            new.tokens_per_minute,
            new.max_queued_jobs,
            new.max_concurrent_jobs,
            new.weight,
            new.max_priority,
            new.default_priority,
            new.metrics_label,
        ])?;
    if changed == 0 {
        return Err(StoreError::KeyNotFound(id.to_owned()));
    }
    limits(conn, id)
}

/// The share, cap and metrics label of every key that has one, for the fair share.
pub fn shares(conn: &Conn) -> Result<Vec<KeyShare>, StoreError> {
    conn.prepare_cached(
        "SELECT id, weight, max_concurrent_jobs, metrics_label, tokens_per_minute FROM api_keys
             WHERE weight != 1 OR max_concurrent_jobs IS NOT NULL OR metrics_label IS NOT NULL
                OR tokens_per_minute IS NOT NULL",
    )?
    .query_map(params![], |row| {
        Ok(KeyShare {
            key: row.get(0)?,
            weight: row.get(1)?,
            max_concurrent: row.get(2)?,
            metrics_label: row.get(3)?,
            tokens_per_minute: row.get(4)?,
        })
    })?
    .collect::<Result<_, _>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_gets_its_own_priority_or_the_keys_default_never_earlier_than_the_max() {
        let none = KeyPriorities::default();
        assert_eq!((none.apply(None), none.apply(Some(1))), (3, 1));
        let key = KeyPriorities {
            max: Some(2),
            default: Some(4),
        };
        assert_eq!(key.apply(None), 4);
        assert_eq!(
            key.apply(Some(1)),
            2,
            "1 runs before the key's max: it gets 2"
        );
        assert_eq!(key.apply(Some(5)), 5);
    }
}
