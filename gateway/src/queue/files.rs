//! The file store of `/v1/files`: the `files/` directory beside the database and, through
//! `file_rows`, its table. It decides nothing about HTTP.
//!
//! A file is written to `files/<id>.part`, fsynced, renamed to `files/<id>` (the directory
//! fsynced too), and only then gets its row, through the writer. A deletion removes the row,
//! then the bytes. So a row always has its bytes, and a crash leaves at most a `.part` or a
//! file without a row, both swept away when the store opens.

use super::db::Conn;
use super::file_rows::{self, FileRecord, NewRow, Order};
use super::pool::{self, ReadPool};
use super::writer::{WriteCtx, Writer};
use super::{StoreError, Visibility, now_ms};
use openbeepboop::FilePurpose;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Bytes gathered before a write to the file: few system calls, little memory. The one
/// buffer goes to the blocking thread that writes it and comes back, so an upload of any
/// size costs this much memory, however fast its client sends.
const WRITE_BUFFER: usize = 256 * 1024;

/// The store's handle on the files: cheap to share.
pub struct FileStore {
    dir: PathBuf,
    writer: Writer,
    pool: ReadPool,
}

/// What a complete upload is stored as, besides its bytes.
#[derive(Debug, Clone)]
pub struct NewFile {
    pub owner_key_id: String,
    pub purpose: FilePurpose,
    pub filename: String,
    /// Seconds after its creation when the file expires; `None` keeps it until deleted.
    pub expires_after: Option<u64>,
    /// A retried upload with the same key and the same content returns the first file.
    pub idempotency_key: Option<String>,
}

/// A stored file opened for reading: its row and its bytes. The bytes stay readable even
/// if the file is deleted while they are read.
pub struct StoredFile {
    pub record: FileRecord,
    pub file: tokio::fs::File,
}

/// Where an upload's bytes are, which its drop cleans up unless they were kept.
enum Stage {
    Writing,
    Renamed,
    Kept,
}

/// A file being written. Dropped before [`FileStore::commit`] keeps it, it leaves nothing.
pub struct Upload {
    id: String,
    part: PathBuf,
    done: PathBuf,
    dir: PathBuf,
    /// The open part and the bytes not yet written to it; `None` while a write runs.
    out: Option<std::fs::File>,
    buf: Vec<u8>,
    bytes: u64,
    hasher: Sha256,
    stage: Stage,
}

impl Upload {
    /// Appends `chunk` to the file.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(chunk);
        self.bytes += chunk.len() as u64;
        self.buf.extend_from_slice(chunk);
        if self.buf.len() >= WRITE_BUFFER {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes the buffered bytes on a blocking thread; the buffer comes back empty.
    async fn flush(&mut self) -> Result<(), StoreError> {
        let mut file = self.out.take().ok_or(StoreError::Closed)?;
        let mut buf = std::mem::take(&mut self.buf);
        let (file, buf) = blocking(move || {
            file.write_all(&buf)?;
            buf.clear();
            Ok((file, buf))
        })
        .await
        .map_err(|e| io_error("cannot write an uploaded file", e))?;
        self.out = Some(file);
        self.buf = buf;
        Ok(())
    }

    /// The bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Flushes, fsyncs and renames the part into place, and fsyncs the directory.
    async fn finish(&mut self) -> Result<String, StoreError> {
        self.flush().await?;
        let file = self.out.take().ok_or(StoreError::Closed)?;
        blocking(move || file.sync_all())
            .await
            .map_err(|e| io_error("cannot sync an uploaded file", e))?;
        let (part, done) = (self.part.clone(), self.done.clone());
        blocking(move || std::fs::rename(part, done))
            .await
            .map_err(|e| io_error("cannot move an uploaded file into place", e))?;
        self.stage = Stage::Renamed;
        let dir = self.dir.clone();
        blocking(move || std::fs::File::open(&dir)?.sync_all())
            .await
            .map_err(|e| io_error("cannot sync the files directory", e))?;
        Ok(format!("{:x}", std::mem::take(&mut self.hasher).finalize()))
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let leftover = match self.stage {
            Stage::Writing => &self.part,
            Stage::Renamed => &self.done,
            Stage::Kept => return,
        };
        if let Err(error) = std::fs::remove_file(leftover)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%error, path = %leftover.display(), "cannot remove an unfinished file");
        }
    }
}

/// Runs file I/O on tokio's blocking threads. A task that did not finish (the runtime is
/// shutting down) is an I/O error like any other.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

fn io_error(what: &'static str, source: std::io::Error) -> StoreError {
    StoreError::FileIo {
        what,
        source: Arc::new(source),
    }
}

/// A new file id: `file-` and 32 hex digits, which is also its name on disk.
pub fn new_file_id() -> String {
    format!("file-{}", uuid::Uuid::now_v7().simple())
}

impl FileStore {
    /// The `files/` directory beside the SQLite database at `db`.
    pub fn beside(db: &Path) -> PathBuf {
        db.parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join("files")
    }

    /// Opens the files directory `dir`, creating it, and sweeps away what a crash left:
    /// `.part` files and files without a row. Runs before the writer starts, on its
    /// connection; returns the directory for [`FileStore::new`]. A directory `shared` by
    /// several gateways (PostgreSQL) is swept only of what is a day old, since another
    /// gateway may be writing a file whose row is not yet committed.
    pub fn prepare(dir: PathBuf, conn: &Conn, shared: bool) -> Result<PathBuf, StoreError> {
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::DataDir {
            path: dir.display().to_string(),
            source: Arc::new(e),
        })?;
        let min_age = if shared {
            SHARED_SWEEP_AGE
        } else {
            Duration::ZERO
        };
        let swept = sweep(&dir, &file_rows::all_ids(conn)?, min_age)?;
        if swept > 0 {
            tracing::info!(files = swept, dir = %dir.display(), "removed unfinished uploads");
        }
        Ok(dir)
    }

    /// The store of the prepared directory `dir`.
    pub fn new(dir: PathBuf, writer: Writer, pool: ReadPool) -> Self {
        Self { dir, writer, pool }
    }

    /// The directory the bytes live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts a new file, `files/<id>.part`.
    pub async fn begin(&self) -> Result<Upload, StoreError> {
        let id = new_file_id();
        let part = self.dir.join(format!("{id}.part"));
        let path = part.clone();
        let file = blocking(move || std::fs::File::create(path))
            .await
            .map_err(|e| io_error("cannot create an uploaded file", e))?;
        Ok(Upload {
            done: self.dir.join(&id),
            id,
            part,
            dir: self.dir.clone(),
            out: Some(file),
            buf: Vec::with_capacity(2 * WRITE_BUFFER),
            bytes: 0,
            hasher: Sha256::new(),
            stage: Stage::Writing,
        })
    }

    /// Makes the upload durable and stores its row. Returns the file and whether this call
    /// created it: an earlier upload with the same idempotency key and the same content is
    /// returned instead, and this one's bytes are removed.
    pub async fn commit(
        &self,
        upload: Upload,
        file: NewFile,
    ) -> Result<(FileRecord, bool), StoreError> {
        self.commit_with(upload, file, |_, _| Ok(()))
            .await
            .map(|(record, created, ())| (record, created))
    }

    /// [`FileStore::commit`], with `then` run in the same transaction once the row is in,
    /// so that what refers to the file (a batch's `output_file_id`) is stored with it or
    /// not at all: when `then` fails, neither the row nor the bytes stay.
    pub async fn commit_with<T: Send + 'static>(
        &self,
        mut upload: Upload,
        file: NewFile,
        then: impl FnOnce(&mut WriteCtx<'_>, &FileRecord) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<(FileRecord, bool, T), StoreError> {
        let sha256 = upload.finish().await?;
        let request_hash = request_hash(&file, &sha256);
        let (id, bytes) = (upload.id.clone(), upload.bytes);
        let (record, created, extra) = self
            .writer
            .write(move |ctx| {
                let (record, created) = file_rows::insert(
                    ctx,
                    &NewRow {
                        id: &id,
                        owner_key_id: &file.owner_key_id,
                        purpose: file.purpose,
                        filename: &file.filename,
                        bytes,
                        sha256: &sha256,
                        idempotency_key: file.idempotency_key.as_deref(),
                        request_hash: &request_hash,
                        expires_after: file.expires_after,
                    },
                )?;
                let extra = then(ctx, &record)?;
                Ok((record, created, extra))
            })
            .await?;
        if created {
            upload.stage = Stage::Kept;
        }
        Ok((record, created, extra))
    }

    /// The row of a file `who` may see.
    pub async fn get(&self, id: String, who: Visibility) -> Result<FileRecord, StoreError> {
        pool::read(&self.pool, move |conn| {
            file_rows::by_id(conn, &id, &who)?.ok_or(StoreError::FileNotFound(id))
        })
        .await
    }

    /// A page of the files `who` may see, and whether more follow.
    pub async fn list(
        &self,
        who: Visibility,
        purpose: Option<FilePurpose>,
        limit: usize,
        order: Order,
        after: Option<String>,
    ) -> Result<(Vec<FileRecord>, bool), StoreError> {
        pool::read(&self.pool, move |conn| {
            file_rows::list(conn, &who, purpose, limit, order, after.as_deref())
        })
        .await
    }

    /// Opens a file `who` may see for reading: how the content is served, and how a batch
    /// reads its input, line by line, without holding it whole.
    pub async fn open(&self, id: String, who: Visibility) -> Result<StoredFile, StoreError> {
        let record = self.get(id, who).await?;
        match tokio::fs::File::open(self.dir.join(&record.id)).await {
            Ok(file) => Ok(StoredFile { record, file }),
            // Deleted between the read of its row and the open.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::FileNotFound(record.id))
            }
            Err(e) => Err(io_error("cannot open a stored file", e)),
        }
    }

    /// Deletes a file `who` may see: its row, then its bytes.
    pub async fn delete(&self, id: String, who: Visibility) -> Result<FileRecord, StoreError> {
        let record = self
            .writer
            .write(move |ctx| {
                file_rows::delete(ctx.conn, &id, &who)?.ok_or(StoreError::FileNotFound(id))
            })
            .await?;
        self.remove_bytes(&record.id).await;
        Ok(record)
    }

    /// Deletes up to `limit` files past their `expires_at`, rows then bytes. Returns how
    /// many went. Reads first, so a pass with nothing to do costs no commit.
    pub async fn reap(&self, limit: usize) -> Result<usize, StoreError> {
        let now = now_ms();
        let due = pool::read(&self.pool, move |conn| file_rows::expired(conn, now, limit)).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let deleted = self
            .writer
            .write(move |ctx| file_rows::delete_expired(ctx.conn, &due, now))
            .await?;
        for id in &deleted {
            self.remove_bytes(id).await;
        }
        Ok(deleted.len())
    }

    /// A file whose row is gone; one left behind is swept at the next start.
    async fn remove_bytes(&self, id: &str) {
        if let Err(error) = tokio::fs::remove_file(self.dir.join(id)).await
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%error, file = id, "cannot remove a deleted file's bytes");
        }
    }
}

/// What tells a retried upload from a different one under the same idempotency key.
fn request_hash(file: &NewFile, sha256: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [
        file.purpose.as_str(),
        &file.filename,
        &file
            .expires_after
            .map(|s| s.to_string())
            .unwrap_or_default(),
        sha256,
    ] {
        hasher.update(part.len().to_le_bytes());
        hasher.update(part.as_bytes());
    }
    format!("{:x}", hasher.finalize())
}

/// Removes `.part` files and files no row names. Returns how many went.
/// How old a leftover in a shared files directory must be to be swept: longer than any
/// upload takes.
const SHARED_SWEEP_AGE: Duration = Duration::from_secs(24 * 3600);

fn sweep(
    dir: &Path,
    ids: &std::collections::HashSet<String>,
    min_age: Duration,
) -> Result<usize, StoreError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| io_error("cannot list the files directory", e))?;
    let mut removed = 0;
    let old_enough = |entry: &std::fs::DirEntry| {
        min_age.is_zero()
            || entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= min_age)
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if (name.ends_with(".part") || !ids.contains(&name)) && old_enough(&entry) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(error) => tracing::warn!(%error, file = %name, "cannot remove a leftover file"),
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
#[path = "files_tests.rs"]
mod tests;
