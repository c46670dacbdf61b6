//! Delivery: finished results go into the spool the moment their job ends (`Delivery::keep`),
//! and the submitter sends them from there, packed under the gateway's `max_submit_bytes`,
//! removing each only once the gateway answered for it.
//!
//! A submit the gateway can never take is not retried: a batch refused as too large (413)
//! or malformed (400, 422) is split until the result at fault stands alone; a lone result
//! too large for the gateway fails its job with `result_too_large` instead, and a lone
//! malformed one fails its job with `result_rejected` and the gateway's message; only a
//! failure of the node's own making that is refused too is dropped, with an error naming
//! its job. A refused key (401, 403) or a missing route (404) stops the node.
//!
//! A submit that could not reach the gateway is retried with a growing delay, cut short the
//! moment a fetch or a heartbeat gets through again: the results' leases are kept alive by
//! the heartbeat meanwhile, and should not wait a long delay out once the gateway is back.

use super::Stats;
use crate::gateway::{GatewayClient, GatewayError};
use crate::metrics::{NodeMetrics, Outcome};
use crate::spool::{Spool, Spooled};
use openbeepboop::{ErrorBody, JobId, LeaseId, NodeResult, NodeResultStatus, SubmitOutcomeKind};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// The most results in one submit (the gateway takes up to 1000).
const MAX_RESULTS: usize = 500;
/// The codes of the failures the node makes in place of a result the gateway cannot take.
const TOO_LARGE: &str = "result_too_large";
const REJECTED: &str = "result_rejected";
/// The size a submit is packed to, in bytes, until a fetch answer says the gateway's limit.
const DEFAULT_SUBMIT_BYTES: u64 = 4 * 1024 * 1024;
const FIRST_RETRY: Duration = Duration::from_millis(200);
const LAST_RETRY: Duration = Duration::from_secs(30);

/// The spool and those who must hear when it changes: the `spooled` gauge and the
/// submitter (through `size`, the number of results in the spool); and the counts of done
/// and failed jobs, taken when the gateway answered for a result, so that a result turned
/// into `result_too_large` counts as failed.
pub(super) struct Delivery {
    pub spool: Arc<Spool>,
    metrics: Arc<NodeMetrics>,
    stats: Arc<Stats>,
    size: watch::Sender<usize>,
    /// Set when the submitter stopped on a refusal, so that the fetch loop stops too.
    halted: watch::Sender<bool>,
    /// The last reason a submit failed, for the message when the node stops with results
    /// still in the spool.
    last_error: Mutex<Option<GatewayError>>,
    /// Woken when the gateway answered a fetch or a heartbeat while submits were failing.
    back: Notify,
}

impl Delivery {
    pub(super) fn new(spool: Arc<Spool>, metrics: Arc<NodeMetrics>, stats: Arc<Stats>) -> Self {
        let delivery = Self {
            size: watch::Sender::new(spool.len()),
            halted: watch::Sender::new(false),
            spool,
            metrics,
            stats,
            last_error: Mutex::new(None),
            back: Notify::new(),
        };
        delivery.changed();
        delivery
    }

    /// Spools a finished result (or a hand-back): the first thing that happens to it.
    pub(super) fn keep(&self, result: NodeResult) {
        let id = result.id.clone();
        if let Err(error) = self.spool.add(result) {
            tracing::error!(job = %id, %error, path = %self.spool.path().display(), "cannot write the spool; the result is kept in memory");
        }
        self.changed();
    }

    /// Counts the results the gateway answered for, then forgets them.
    fn delivered(&self, results: &[Spooled]) {
        for spooled in results {
            let outcome = match spooled.result.status {
                NodeResultStatus::Completed => Outcome::Done,
                NodeResultStatus::Failed => Outcome::Failed,
                NodeResultStatus::Released => continue,
            };
            self.stats.count(outcome);
            self.metrics
                .jobs
                .with_label_values(&[outcome.label()])
                .inc();
        }
        self.forget(results);
    }

    fn forget(&self, results: &[Spooled]) {
        let delivered: Vec<(JobId, LeaseId)> = results
            .iter()
            .map(|s| (s.result.id.clone(), s.result.lease_id.clone()))
            .collect();
        if let Err(error) = self.spool.remove(&delivered) {
            tracing::error!(%error, path = %self.spool.path().display(), "cannot rewrite the spool");
        }
        self.changed();
    }

    fn changed(&self) {
        let size = self.spool.len();
        self.metrics.spooled.set(size as i64);
        self.size.send_replace(size);
    }

    pub(super) fn watch_size(&self) -> watch::Receiver<usize> {
        self.size.subscribe()
    }

    pub(super) fn is_halted(&self) -> bool {
        *self.halted.borrow()
    }

    /// Resolves once the submitter has stopped on a refusal; never otherwise.
    pub(super) async fn halted(&self) {
        let mut halted = self.halted.subscribe();
        if halted.wait_for(|h| *h).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    pub(super) fn last_error(&self) -> Option<GatewayError> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_last_error(&self, error: Option<GatewayError>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    /// Says the gateway answered a fetch or a heartbeat: a submit waiting to be retried is
    /// sent at once, and its delay starts over.
    pub(super) fn gateway_answered(&self) {
        if self.last_error().is_some() {
            self.back.notify_one();
        }
    }

    /// Fails the job of a result that can never fit in a submit, in its place in the spool.
    fn too_large(&self, spooled: &Spooled, limit: Option<u64>, refusal: Option<&str>) {
        let result = &spooled.result;
        let limit = limit.or_else(|| refusal.and_then(limit_in));
        let said = match (limit, refusal) {
            (Some(limit), _) => format!("the gateway's limit of {limit} bytes"),
            (None, Some(message)) => format!("what the gateway takes ({message})"),
            (None, None) => "what the gateway takes".to_owned(),
        };
        let message = format!(
            "the result of job `{}` is {} bytes, more than {said} for a node submit (`max_submit_bytes`)",
            result.id, spooled.bytes
        );
        tracing::error!(job = %result.id, bytes = spooled.bytes, limit, "{message}; the job fails instead");
        self.fail_in_place(result, message, TOO_LARGE);
    }

    /// Fails the job of a result the gateway refused as malformed (400, 422), with the
    /// gateway's message, in its place in the spool: sending it again would get the same
    /// answer, and dropping it would let the job's lease lapse and the job run again.
    fn rejected(&self, spooled: &Spooled, status: u16, refusal: &str) {
        let result = &spooled.result;
        let message = format!(
            "the gateway rejected the result of job `{}` ({status}): {refusal}",
            result.id
        );
        tracing::error!(job = %result.id, status, "{message}; the job fails instead");
        self.fail_in_place(result, message, REJECTED);
    }

    /// Puts a non-retryable failure with `message` and `code` in the place of `result`.
    fn fail_in_place(&self, result: &NodeResult, message: String, code: &str) {
        let failure = NodeResult {
            id: result.id.clone(),
            lease_id: result.lease_id.clone(),
            status: NodeResultStatus::Failed,
            result: None,
            error: Some(ErrorBody::new(message, "server_error").with_code(code)),
            upstream_status: None,
            retryable: false,
        };
        if let Err(error) = self.spool.replace(failure) {
            tracing::error!(%error, path = %self.spool.path().display(), "cannot rewrite the spool");
        }
        self.changed();
    }
}

/// Whether `result` is a failure the node made in place of a result the gateway refused:
/// refused in its turn, it is dropped rather than replaced again.
fn made_by_the_node(result: &NodeResult) -> bool {
    result.status == NodeResultStatus::Failed
        && result
            .error
            .as_ref()
            .and_then(|e| e.code.as_deref())
            .is_some_and(|code| code == TOO_LARGE || code == REJECTED)
}

/// The limit a 413's message names: the number before ` bytes`.
fn limit_in(message: &str) -> Option<u64> {
    let before = &message[..message.find(" bytes")?];
    let digits = before.rsplit(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

/// Whether the submitter still waits for results, or ends once the spool is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Intake {
    Open,
    Closed,
}

/// Delivers the spool until `intake` is closed and the spool is empty. Returns an error
/// only for a refusal that stops the node (401, 403, 404).
pub(super) async fn submit_loop(
    gateway: Arc<GatewayClient>,
    delivery: Arc<Delivery>,
    mut intake: watch::Receiver<Intake>,
) -> Result<(), GatewayError> {
    let mut size = delivery.watch_size();
    let mut delay = FIRST_RETRY;
    // Set after a refusal of a batch (413, 400, 422): the next batches are packed to it, in
    // bytes, until the spool is empty, so that halving isolates the result at fault.
    let mut split: Option<usize> = None;
    loop {
        let limit = gateway.submit_limit();
        let packed_to = limit.unwrap_or(DEFAULT_SUBMIT_BYTES) as usize;
        let batch = delivery
            .spool
            .pack(split.unwrap_or(packed_to).min(packed_to), MAX_RESULTS);
        let Some(first) = batch.first() else {
            split = None;
            if *intake.borrow_and_update() == Intake::Closed {
                return Ok(());
            }
            tokio::select! {
                _ = size.changed() => {}
                _ = intake.changed() => {}
            }
            continue;
        };
        // `[` and `]` around a lone result that cannot fit: failed without asking.
        if batch.len() == 1 && limit.is_some_and(|limit| first.bytes as u64 + 2 > limit) {
            delivery.too_large(first, limit, None);
            continue;
        }
        let results: Vec<NodeResult> = batch.iter().map(|s| s.result.clone()).collect();
        match gateway.submit(&results).await {
            Ok(outcomes) => {
                delay = FIRST_RETRY;
                delivery.set_last_error(None);
                for outcome in &outcomes {
                    if matches!(
                        outcome.outcome,
                        SubmitOutcomeKind::Stale | SubmitOutcomeKind::Cancelled
                    ) {
                        tracing::info!(job = %outcome.id, outcome = ?outcome.outcome, "result discarded by the gateway");
                    }
                }
                delivery.delivered(&batch);
            }
            Err(GatewayError::Rejected {
                status, message, ..
            }) if matches!(status, 400 | 413 | 422) => {
                let bytes: usize = batch.iter().map(|s| s.bytes + 1).sum::<usize>() + 1;
                if batch.len() > 1 {
                    tracing::warn!(status, %message, results = batch.len(), bytes, "the gateway refused a submit; sending it in halves");
                    split = Some(bytes / 2);
                } else if made_by_the_node(&first.result) {
                    tracing::error!(job = %first.result.id, status, %message, "the gateway refused the failure that replaced the job's result; it is dropped from the spool");
                    delivery.forget(&batch);
                } else if status == 413 {
                    delivery.too_large(first, limit, Some(&message));
                } else {
                    delivery.rejected(first, status, &message);
                }
            }
            Err(error) if error.is_permanent() => {
                tracing::error!(%error, spooled = delivery.spool.len(), "the gateway refuses submits; the results stay in the spool");
                delivery.set_last_error(Some(error.clone()));
                delivery.halted.send_replace(true);
                return Err(error);
            }
            Err(error) => {
                tracing::warn!(%error, spooled = delivery.spool.len(), retry_in = ?delay, "results kept in the spool");
                delivery.set_last_error(Some(error));
                tokio::select! {
                    () = tokio::time::sleep(delay) => delay = (delay * 2).min(LAST_RETRY),
                    () = delivery.back.notified() => {
                        tracing::info!("the gateway answers again; sending the spool now");
                        delay = FIRST_RETRY;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_413_message_names_the_limit_in_bytes() {
        let message = "the request body is larger than the 1048576 bytes allowed";
        assert_eq!(limit_in(message), Some(1_048_576));
        assert_eq!(limit_in("too large"), None);
        assert_eq!(limit_in("over the bytes allowed"), None);
    }

    #[test]
    fn only_a_failure_the_node_made_in_place_of_a_refused_result_counts_as_its_own() {
        let made = |status, code: Option<&str>| NodeResult {
            id: "j".into(),
            lease_id: "l".into(),
            status,
            result: None,
            error: code.map(|code| ErrorBody::new("m", "server_error").with_code(code)),
            upstream_status: None,
            retryable: false,
        };
        assert!(made_by_the_node(&made(
            NodeResultStatus::Failed,
            Some(REJECTED)
        )));
        assert!(made_by_the_node(&made(
            NodeResultStatus::Failed,
            Some(TOO_LARGE)
        )));
        assert!(!made_by_the_node(&made(
            NodeResultStatus::Failed,
            Some("upstream_unavailable")
        )));
        assert!(!made_by_the_node(&made(NodeResultStatus::Failed, None)));
        assert!(!made_by_the_node(&made(
            NodeResultStatus::Completed,
            Some(REJECTED)
        )));
    }
}
