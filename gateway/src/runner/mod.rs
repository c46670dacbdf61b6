//! The batch runner: moves each batch of `/v1/batches` through its life from its stored
//! status, a pass at a time (`server.rs` runs the passes as the `obb-batch-runner` service).
//! It runs no SQL (that is `queue`'s) and names no HTTP or pingora type: the check of a
//! line's body is handed in by the composition root.
//!
//! Every step can be repeated after a crash: validation re-reads the file and enqueues lines
//! that are unique per batch and line number, ending lines skips ended ones, and a file
//! already recorded on the batch is not written again.

mod output;
mod validate;

pub use validate::{is_blank, judge_line, strip_line_break};

use crate::queue::{BatchRecord, Queue, StoreError, now_ms};
use openbeepboop::{BatchStatus, ErrorBody, JobStatus};
use std::sync::Arc;
use std::time::Duration;

/// Judges a line's `body` as a direct request to the batch's endpoint would be judged: its
/// model, or the message and parameter of its refusal.
pub type LineCheck = Arc<BodyCheck>;
/// The check behind a [`LineCheck`]: the endpoint, then the body.
pub type BodyCheck = dyn Fn(&str, &[u8]) -> Result<String, (String, Option<String>)> + Send + Sync;

/// What the runner needs besides the store.
pub struct RunnerSettings {
    pub priority: u8,
    pub max_lines: usize,
    /// The longest line read, in bytes.
    pub max_line_bytes: usize,
    /// How often [`BatchRunner::pass`] runs.
    pub tick: Duration,
}

/// The `obb-batch-runner` service.
pub struct BatchRunner {
    queue: Arc<Queue>,
    check: LineCheck,
    settings: RunnerSettings,
}

impl BatchRunner {
    pub fn new(queue: Arc<Queue>, check: LineCheck, settings: RunnerSettings) -> Self {
        Self {
            queue,
            check,
            settings,
        }
    }

    pub fn tick(&self) -> Duration {
        self.settings.tick
    }

    /// One pass over the batches with work to do. Each step of it is a commit that a
    /// restart repeats or skips, so stopping between passes is enough.
    pub async fn pass(&self) -> Result<(), StoreError> {
        for batch in self.queue.active_batches().await? {
            let id = batch.id.clone();
            if let Err(error) = self.advance(batch).await {
                tracing::warn!(batch = %id, error = %error.detail(), "batch step failed; retried");
            }
        }
        Ok(())
    }

    /// Takes one batch as far as it can go now.
    async fn advance(&self, batch: BatchRecord) -> Result<(), StoreError> {
        match batch.status {
            BatchStatus::Validating => validate::run(self, batch).await,
            // Lines that all ended by themselves complete it, even when read after its
            // deadline; a line that expired (its TTL is the deadline) expires it.
            BatchStatus::InProgress if batch.counts.open == 0 && batch.counts.expired == 0 => {
                let moved = self
                    .queue
                    .move_batch(
                        batch.id.clone(),
                        BatchStatus::InProgress,
                        BatchStatus::Finalizing,
                    )
                    .await?;
                // Not moved: a line was queued again meanwhile (an admin's retry), or
                // someone else moved the batch; the next pass reads it afresh.
                if !moved {
                    return Ok(());
                }
                self.complete(&batch).await
            }
            BatchStatus::Finalizing => self.complete(&batch).await,
            BatchStatus::InProgress if now_ms() >= batch.expires_at || batch.counts.expired > 0 => {
                self.end(batch, JobStatus::Expired, BatchStatus::Expired)
                    .await
            }
            BatchStatus::Cancelling => {
                self.end(batch, JobStatus::Cancelled, BatchStatus::Cancelled)
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Writes a finalizing batch's files and completes it.
    async fn complete(&self, batch: &BatchRecord) -> Result<(), StoreError> {
        output::finish(
            &self.queue,
            batch,
            BatchStatus::Finalizing,
            BatchStatus::Completed,
        )
        .await
    }

    /// Ends the batch's open lines (queued ones as `lines`), writes its files and moves it
    /// to `to`.
    async fn end(
        &self,
        batch: BatchRecord,
        lines: JobStatus,
        to: BatchStatus,
    ) -> Result<(), StoreError> {
        let code = if to == BatchStatus::Expired {
            "batch_expired"
        } else {
            "batch_cancelled"
        };
        let error = ErrorBody::new(
            format!("the line did not run: batch `{}` was {to}", batch.id),
            "invalid_request_error",
        )
        .with_code(code);
        self.queue
            .end_batch_lines(batch.id.clone(), lines, error)
            .await?;
        let batch = self
            .queue
            .batch(batch.id, crate::queue::Visibility::All)
            .await?;
        output::finish(&self.queue, &batch, batch.status, to).await
    }
}

#[cfg(test)]
mod tests;
