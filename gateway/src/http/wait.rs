//! Waiting for a job to end, for `?wait` and the waited submit: woken by the writer's
//! commits, never by polling, and cut short by the deadline or the gateway's shutdown.

use super::Ctx;
use super::error::ApiError;
use crate::queue::{JobRecord, JobWatch};
use openbeepboop::JobStatus;
use std::time::Duration;

/// Holds until the job is final or `wait` runs out, woken by the writer's commits rather
/// than by polling. On shutdown, answers 503 so that the client retries elsewhere or later.
pub async fn wait_for_final(
    ctx: &Ctx<'_>,
    id: &str,
    wait: Duration,
) -> Result<JobRecord, ApiError> {
    let watch = ctx.state.queue.notifier().watch(id);
    // Read after subscribing, so that no change falls between the read and the wait.
    let record = ctx.job(id).await?;
    wait_with(ctx, record, watch, wait).await
}

/// Waits on `watch`, subscribed before `record` was read. The job is read again only when
/// it reaches a final status or the wait runs out: the changes in between (leased,
/// requeued) need no read, because the notification says what they are.
pub async fn wait_with(
    ctx: &Ctx<'_>,
    record: JobRecord,
    mut watch: JobWatch<'_>,
    wait: Duration,
) -> Result<JobRecord, ApiError> {
    if record.status.is_final() {
        return Ok(record);
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut shutdown = ctx.shutdown.clone();
    loop {
        if *shutdown.borrow() {
            return Err(shutting_down());
        }
        let woke = ctx
            .waiting(async {
                tokio::select! {
                    changed = watch.changed() => match changed {
                        Some(status) => Woke::Changed(status),
                        // The notifier is gone: nothing will change before the deadline.
                        None => {
                            tokio::time::sleep_until(deadline).await;
                            Woke::Deadline
                        }
                    },
                    () = tokio::time::sleep_until(deadline) => Woke::Deadline,
                    _ = shutdown.changed() => Woke::Shutdown,
                }
            })
            .await;
        match woke {
            Woke::Changed(status) if !status.is_final() => {}
            Woke::Changed(_) | Woke::Deadline => return ctx.job(&record.id).await,
            Woke::Shutdown => return Err(shutting_down()),
        }
    }
}

/// Why a wait woke up.
enum Woke {
    Changed(JobStatus),
    Deadline,
    Shutdown,
}

fn shutting_down() -> ApiError {
    ApiError::Unavailable {
        message: "the gateway is restarting; retry the request".to_owned(),
        retry_after: 2,
    }
}
