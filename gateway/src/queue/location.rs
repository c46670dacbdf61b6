//! Where the store lives: a SQLite file, or a PostgreSQL database (`db` in the config).

use super::StoreError;
use super::db::{Conn, pg};
use super::{schema, schema_pg};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A store's place. A `db` that starts with `postgres://` or `postgresql://` (libpq's URL
/// forms) is a PostgreSQL database; anything else is the path of a SQLite file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    Postgres(String),
}

impl Location {
    pub fn parse(db: &Path) -> Self {
        let text = db.to_string_lossy();
        match text.split_once("://") {
            // The driver reads the scheme in lower case only.
            Some((scheme, rest)) if is_postgres_url(&text) => {
                Location::Postgres(format!("{}://{rest}", scheme.to_ascii_lowercase()))
            }
            _ => Location::File(db.to_owned()),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Location::Postgres(_))
    }

    /// Opens a connection and creates or migrates the schema: `setup`.
    pub(super) fn open_and_migrate(&self) -> Result<Opened, StoreError> {
        match self {
            Location::File(path) => Ok(Opened::sqlite(schema::open_and_migrate(path)?, path)),
            Location::Postgres(url) => {
                let opened = Opened::postgres(url)?;
                schema_pg::migrate(&opened.conn, &self.to_string())?;
                Ok(opened)
            }
        }
    }

    /// Opens a connection to an existing store, migrated forward, refusing a newer one.
    pub(super) fn open_existing(&self) -> Result<Opened, StoreError> {
        match self {
            Location::File(path) => Ok(Opened::sqlite(schema::open_existing(path)?, path)),
            Location::Postgres(url) => {
                let opened = Opened::postgres(url)?;
                schema_pg::open_existing(&opened.conn, &self.to_string())?;
                Ok(opened)
            }
        }
    }
}

/// `postgres://…` or `postgresql://…` (any case), as libpq accepts them.
pub fn is_postgres_url(text: &str) -> bool {
    ["postgres://", "postgresql://"].iter().any(|scheme| {
        text.get(..scheme.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(scheme))
    })
}

/// Shown in logs and errors: a path, or a URL with its password hidden.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => f.write_str(&pg::redacted(url)),
        }
    }
}

/// A connection, and what its engine needs beside it (dropped after it).
pub(super) struct Opened {
    pub conn: Conn,
    pub backing: Backing,
}

/// What stands behind an open store.
pub(super) enum Backing {
    /// The SQLite file.
    File(PathBuf),
    /// The runtime PostgreSQL's driver runs on.
    Postgres(Arc<pg::Runtime>),
}

impl Opened {
    fn sqlite(conn: rusqlite::Connection, path: &Path) -> Self {
        Self {
            conn: Conn::Sqlite(conn),
            backing: Backing::File(path.to_owned()),
        }
    }

    fn postgres(url: &str) -> Result<Self, StoreError> {
        let runtime = pg::Runtime::new(url)?;
        Ok(Self {
            conn: Conn::Postgres(runtime.connect()?),
            backing: Backing::Postgres(runtime),
        })
    }
}
