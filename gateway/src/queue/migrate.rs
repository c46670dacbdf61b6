//! `obb-gateway migrate --from PATH --to postgres://…`: moves a stopped gateway's queue from
//! SQLite to PostgreSQL, rows and uploaded files, and checks the counts after.
//!
//! Every table is copied as it is, ids and states included, in chunks of [`CHUNK`] rows,
//! each chunk in one transaction. The target's schema is created first and must hold no
//! jobs, keys, files or batches: the copy never merges two queues. Its identity sequences
//! are moved past the copied `seq`s, so that new rows follow the old ones. The counts are
//! compared after, by table and, for jobs and batches, by status.

use super::db::{Conn, Param, Value, params};
use super::location::Location;
use super::{FileStore, StoreError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Rows per transaction.
const CHUNK: usize = 1000;

/// The tables copied, in an order that needs nothing not yet there, and the column each
/// is read in order of.
const TABLES: &[(&str, &str)] = &[
    ("api_keys", "id"),
    ("nodes", "id"),
    ("files", "seq"),
    ("batches", "seq"),
    ("jobs", "seq"),
];

/// The tables with an identity `seq` on PostgreSQL.
const SEQUENCED: &[&str] = &["files", "batches", "jobs"];

/// What was copied: rows by table, and the counts both stores agree on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Moved {
    pub rows: BTreeMap<String, i64>,
    pub files: usize,
}

/// Copies the SQLite store `from` into the empty PostgreSQL store `to`, and the uploaded
/// files from `files/` beside `from` into `files_dir`. Errors name what differs.
pub fn migrate(from: &Path, to: &Location, files_dir: &Path) -> Result<Moved, StoreError> {
    let source = Location::File(from.to_owned()).open_existing()?;
    if !to.is_postgres() {
        return Err(StoreError::Migrate(format!(
            "`{to}` is not a PostgreSQL URL: migrate moves a SQLite queue to PostgreSQL"
        )));
    }
    let target = to.open_and_migrate()?;
    let (source, target) = (&source.conn, &target.conn);
    for (table, _) in TABLES {
        let found: i64 =
            target.query_row(&format!("SELECT COUNT(*) FROM {table}"), params![], |row| {
                row.get(0)
            })?;
        if found > 0 {
            return Err(StoreError::Migrate(format!(
                "`{to}` already holds {found} rows of `{table}`: migrate only into an empty database"
            )));
        }
    }
    let mut moved = Moved::default();
    for (table, order) in TABLES {
        let copied = copy_table(source, target, table, order)?;
        moved.rows.insert((*table).to_owned(), copied);
    }
    for table in SEQUENCED {
        target.execute_batch(&format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'seq'),
                 GREATEST((SELECT MAX(seq) FROM {table}), 1))"
        ))?;
    }
    moved.files = copy_files(source, &FileStore::beside(from), files_dir)?;
    check_counts(source, target)?;
    Ok(moved)
}

/// The columns of `table` in the SQLite source.
fn columns(source: &Conn, table: &str) -> Result<Vec<String>, StoreError> {
    source
        .prepare(&format!(
            "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
        ))?
        .query_map(params![], |row| row.get(0))?
        .collect()
}

/// Copies every row of `table`, `CHUNK` a transaction; returns how many.
fn copy_table(source: &Conn, target: &Conn, table: &str, order: &str) -> Result<i64, StoreError> {
    let columns = columns(source, table)?;
    let names = columns.join(", ");
    let slots = (1..=columns.len())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let insert = format!("INSERT INTO {table} ({names}) VALUES ({slots})");
    let read = format!("SELECT {names} FROM {table} WHERE {order} > ?1 ORDER BY {order} LIMIT ?2");
    let mut after = match order {
        "seq" => Value::Int(i64::MIN),
        _ => Value::Text(String::new()),
    };
    let mut copied = 0;
    loop {
        let rows: Vec<Vec<Value>> = source
            .prepare(&read)?
            .query_map(params![after, CHUNK], |row| {
                (0..columns.len()).map(|i| row.get::<Value>(i)).collect()
            })?
            .collect::<Result<_, _>>()?;
        let Some(last) = rows.last() else {
            return Ok(copied);
        };
        let key = columns.iter().position(|c| c == order).unwrap_or(0);
        after = last[key].clone();
        target.execute_batch("BEGIN")?;
        let written = rows.iter().try_for_each(|row| {
            let args: Vec<&dyn Param> = row.iter().map(|v| v as &dyn Param).collect();
            target.execute(&insert, args.as_slice()).map(drop)
        });
        match written {
            Ok(()) => target.execute_batch("COMMIT")?,
            Err(error) => {
                let _ = target.execute_batch("ROLLBACK");
                return Err(error);
            }
        }
        copied += rows.len() as i64;
    }
}

/// Copies the bytes of every file row from `from_dir` to `to_dir`, synced; returns how many.
fn copy_files(source: &Conn, from_dir: &Path, to_dir: &Path) -> Result<usize, StoreError> {
    let io = |what: &'static str| {
        move |e: std::io::Error| StoreError::FileIo {
            what,
            source: std::sync::Arc::new(e),
        }
    };
    std::fs::create_dir_all(to_dir).map_err(io("cannot create the files directory"))?;
    let ids: Vec<String> = source
        .prepare("SELECT id FROM files ORDER BY seq")?
        .query_map(params![], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for id in &ids {
        let (from, to): (PathBuf, PathBuf) = (from_dir.join(id), to_dir.join(id));
        std::fs::copy(&from, &to).map_err(io("cannot copy an uploaded file"))?;
        std::fs::File::open(&to)
            .and_then(|f| f.sync_all())
            .map_err(io("cannot sync a copied file"))?;
    }
    Ok(ids.len())
}

/// Compares the stores: rows by table, jobs and batches by status too.
fn check_counts(source: &Conn, target: &Conn) -> Result<(), StoreError> {
    let mut queries: Vec<String> = TABLES
        .iter()
        .map(|(table, _)| format!("SELECT '{table}', COUNT(*) FROM {table}"))
        .collect();
    for table in ["jobs", "batches"] {
        queries.push(format!(
            "SELECT '{table} ' || status, COUNT(*) FROM {table} GROUP BY status"
        ));
    }
    for query in queries {
        let counts = |conn: &Conn| -> Result<BTreeMap<String, i64>, StoreError> {
            conn.prepare(&query)?
                .query_map(params![], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        };
        let (before, after) = (counts(source)?, counts(target)?);
        if before != after {
            return Err(StoreError::Migrate(format!(
                "the counts differ after the copy: {before:?} in SQLite, {after:?} in PostgreSQL"
            )));
        }
    }
    Ok(())
}
