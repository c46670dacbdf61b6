//! The store's side of `/v1/batches`: `Queue`'s batch methods over `batch_rows`. It runs
//! nothing on its own: the runner decides when each is called.

use super::batch_lines::{self, LineRecord, NewLine};
use super::batch_rows::{self, BatchFile, BatchRecord, NewBatch};
use super::files::{NewFile, Upload};
use super::{Queue, QueueEvent, StoreError, Visibility};
use openbeepboop::{BatchError, BatchStatus, ErrorBody, JobStatus};

/// Lines ended per writer operation when a batch is cancelled or expires.
const END_CHUNK: usize = 1000;

impl Queue {
    /// Stores a new batch in `validating`, or returns the one already stored under the same
    /// idempotency key. Returns whether this call created it.
    pub async fn create_batch(&self, batch: NewBatch) -> Result<(BatchRecord, bool), StoreError> {
        self.writer
            .write(move |ctx| batch_rows::insert(ctx, &batch))
            .await
    }

    /// A batch `who` may see, with its live request counts. A batch not yet ended is read
    /// from memory, as the writer's last commit left it (see `live_batches`); the others,
    /// which no longer change, from the database.
    pub async fn batch(&self, id: String, who: Visibility) -> Result<BatchRecord, StoreError> {
        if let Some(batch) = self.live_batches.get(&id, &who) {
            return Ok(batch);
        }
        self.read(move |conn| {
            batch_rows::by_id(conn, &id, &who)?.ok_or(StoreError::BatchNotFound(id))
        })
        .await
    }

    /// A page of the batches `who` may see, newest first, and whether more follow.
    pub async fn batches(
        &self,
        who: Visibility,
        limit: usize,
        after: Option<String>,
    ) -> Result<(Vec<BatchRecord>, bool), StoreError> {
        self.read(move |conn| batch_rows::list(conn, &who, limit, after.as_deref()))
            .await
    }

    /// Moves a batch `who` may see to `cancelling`; the runner ends its lines. A batch
    /// already cancelling or cancelled is returned as it is.
    pub async fn cancel_batch(
        &self,
        id: String,
        who: Visibility,
    ) -> Result<BatchRecord, StoreError> {
        self.writer
            .write(move |ctx| {
                let batch = batch_rows::by_id(ctx.conn, &id, &who)?
                    .ok_or_else(|| StoreError::BatchNotFound(id.clone()))?;
                match batch.status {
                    BatchStatus::Cancelling | BatchStatus::Cancelled => return Ok(batch),
                    BatchStatus::Validating | BatchStatus::InProgress => {
                        batch_rows::transition(ctx, &id, batch.status, BatchStatus::Cancelling)?;
                    }
                    status => return Err(StoreError::BatchNotCancellable { id, status }),
                }
                batch_rows::by_id(ctx.conn, &id, &who)?.ok_or(StoreError::BatchNotFound(id))
            })
            .await
    }

    /// The batches the runner has work on, with their counts.
    pub async fn active_batches(&self) -> Result<Vec<BatchRecord>, StoreError> {
        self.read(batch_rows::active).await
    }

    /// Fails a `validating` batch with the problems found in its input.
    pub async fn fail_batch(
        &self,
        id: String,
        errors: Vec<BatchError>,
    ) -> Result<bool, StoreError> {
        self.writer
            .write(move |ctx| batch_rows::fail(ctx, &id, &errors))
            .await
    }

    /// Enqueues validated lines of a `validating` batch at `priority`, each at most once
    /// however often this is repeated. Returns how many were added.
    pub async fn enqueue_lines(
        &self,
        batch: BatchRecord,
        lines: Vec<NewLine>,
        priority: u8,
    ) -> Result<usize, StoreError> {
        let max_attempts = self.settings.max_attempts;
        self.writer
            .write(move |ctx| {
                batch_lines::enqueue_lines(ctx, &batch, &lines, priority, max_attempts)
            })
            .await
    }

    /// Starts a validated batch: `in_progress`, with its model.
    pub async fn start_batch(&self, id: String, model: String) -> Result<bool, StoreError> {
        self.writer
            .write(move |ctx| {
                batch_rows::set_model(ctx, &id, &model)?;
                batch_rows::transition(ctx, &id, BatchStatus::Validating, BatchStatus::InProgress)
            })
            .await
    }

    /// Moves a batch from one status to another (see `batch_rows::allowed`).
    pub async fn move_batch(
        &self,
        id: String,
        from: BatchStatus,
        to: BatchStatus,
    ) -> Result<bool, StoreError> {
        self.writer
            .write(move |ctx| batch_rows::transition(ctx, &id, from, to))
            .await
    }

    /// Ends every open line of a batch, a chunk per commit: queued lines as `to`, running
    /// ones as `cancelled`, each through `jobs::transition`.
    pub async fn end_batch_lines(
        &self,
        batch_id: String,
        to: JobStatus,
        error: ErrorBody,
    ) -> Result<(), StoreError> {
        loop {
            let (id, error) = (batch_id.clone(), error.clone());
            let ended = self
                .writer
                .write(move |ctx| batch_lines::end_open_lines(ctx, &id, to, &error, END_CHUNK))
                .await?;
            if ended < END_CHUNK {
                return Ok(());
            }
        }
    }

    /// Up to `limit` of a batch's lines after line `after`, in line order.
    pub async fn batch_lines(
        &self,
        batch_id: String,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LineRecord>, StoreError> {
        self.read(move |conn| batch_lines::lines(conn, &batch_id, after, limit))
            .await
    }

    /// Stores a written output or error file and records it on the batch, in one
    /// transaction: both are stored or neither.
    pub async fn store_batch_file(
        &self,
        upload: Upload,
        file: NewFile,
        batch_id: String,
        which: BatchFile,
    ) -> Result<String, StoreError> {
        let (record, _, ()) = self
            .files
            .commit_with(upload, file, move |ctx, record| {
                batch_rows::set_file(ctx, &batch_id, which, &record.id)?;
                ctx.events.push(QueueEvent::BatchFileStored {
                    file: which,
                    bytes: record.bytes,
                });
                Ok(())
            })
            .await?;
        Ok(record.id)
    }
}

#[cfg(test)]
#[path = "batches_tests.rs"]
mod tests;
