//! Drives a closed-loop load: a fixed number of workers, each sending its next request as
//! soon as the last one is answered, until a total is reached.

use crate::stats::Latencies;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Runs `total` calls, one worker per entry of `workers` (a connection, or `()`). A call
/// gets its worker's state and the call's number, and gives back the state (or `None` when
/// the worker cannot go on) and whether the call succeeded; only successes are timed.
/// Returns the latencies and the wall time.
pub async fn drive<S, F, Fut>(total: u64, workers: Vec<S>, call: F) -> (Latencies, Duration)
where
    S: Send + 'static,
    F: Fn(S, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = (Option<S>, bool)> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for state in workers {
        let (call, next) = (Arc::clone(&call), Arc::clone(&next));
        running.spawn(async move {
            let mut samples = Vec::new();
            let mut state = state;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return samples;
                }
                let one = Instant::now();
                let (kept, ok) = call(state, i).await;
                if ok {
                    samples.push(one.elapsed());
                }
                match kept {
                    Some(kept) => state = kept,
                    None => return samples,
                }
            }
        });
    }
    let mut samples = Vec::new();
    while let Some(done) = running.join_next().await {
        samples.extend(done.unwrap_or_default());
    }
    (Latencies::new(samples), started.elapsed())
}
