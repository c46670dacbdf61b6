//! Waiting, for every long-poll (`?wait`, the node fetch, SSE): [`until`] is the one wait
//! for a change, the deadline or the gateway's shutdown, woken by the writer's commits and
//! never by polling. [`wait_for_final`] holds a request until its job ends.

use super::Ctx;
use super::error::ApiError;
use crate::queue::{JobRecord, JobWatch};
use pingora::server::ShutdownWatch;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Why a wait woke up.
pub enum Woke<T> {
    Changed(T),
    Deadline,
    Shutdown,
}

/// Waits for `change`, the `deadline` (none: no end but shutdown) or the gateway's
/// shutdown, whichever comes first; a shutdown already under way wins at once. A change
/// source that has closed (`None`) never fires, so the deadline and shutdown still end the
/// wait.
pub async fn until<T>(
    change: impl Future<Output = Option<T>>,
    deadline: Option<Instant>,
    shutdown: &mut ShutdownWatch,
) -> Woke<T> {
    if *shutdown.borrow() {
        return Woke::Shutdown;
    }
    let change = async {
        match change.await {
            Some(value) => value,
            None => std::future::pending().await,
        }
    };
    let passes = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        value = change => Woke::Changed(value),
        () = passes => Woke::Deadline,
        _ = shutdown.changed() => Woke::Shutdown,
    }
}

/// A request's time in long-poll waits, which the overhead metric leaves out.
#[derive(Default)]
pub struct Waited(AtomicU64);

impl Waited {
    pub fn add(&self, time: Duration) {
        self.0.fetch_add(time.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn total(&self) -> Duration {
        Duration::from_micros(self.0.load(Ordering::Relaxed))
    }
}

/// The job a held request cancels if its client leaves before the answer
/// (`X-OBB-Cancel-On-Disconnect: true`); `App` owns it for the request's life.
#[derive(Default)]
pub struct Disconnect(std::sync::Mutex<Option<String>>);

impl Disconnect {
    pub fn watch(&self, job_id: &str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(job_id.to_owned());
    }

    /// The job to cancel, once.
    pub fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Holds until the job is final or `wait` runs out. On shutdown, answers 503 so that the
/// client retries elsewhere or later.
pub async fn wait_for_final(
    ctx: &Ctx<'_>,
    id: &str,
    wait: Duration,
) -> Result<JobRecord, ApiError> {
    let watch = ctx.state.queue.notifier().watch_final(id);
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
    let deadline = Instant::now() + wait;
    let mut shutdown = ctx.shutdown.clone();
    loop {
        match ctx
            .waiting(until(watch.changed(), Some(deadline), &mut shutdown))
            .await
        {
            Woke::Changed(status) if !status.is_final() => {}
            // The final change carries the job when it was read with it: no read here.
            Woke::Changed(_) => match watch.take_record() {
                Some(ended) => return Ok(Arc::unwrap_or_clone(ended)),
                None => return ctx.job(&record.id).await,
            },
            Woke::Deadline => return ctx.job(&record.id).await,
            Woke::Shutdown => {
                return Err(ApiError::Unavailable {
                    message: "the gateway is restarting; retry the request".to_owned(),
                    retry_after: 2,
                });
            }
        }
    }
}
