//! In-process wake-ups: waiters on one job's changes, and nodes waiting for work.
//!
//! The writer publishes here only after a commit, so a woken task always reads the change.
//! Nothing here touches the database.

use super::JobRecord;
use openbeepboop::{Endpoint, JobStatus};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, broadcast};

/// A job that changed status in a committed transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub job_id: String,
    pub status: JobStatus,
    /// The status it left; `None` for a job just submitted.
    pub from: Option<JobStatus>,
    pub model: String,
    pub priority: u8,
    /// The key that submitted the job, and the endpoint it was submitted to: the fair
    /// share counts queued jobs by both.
    pub owner: String,
    pub endpoint: Endpoint,
    /// The job as the change left it, when it reached a final status while someone watched
    /// it: read in the change's own transaction, so that a waiter answers without a read.
    pub record: Option<Arc<JobRecord>>,
    /// The priority it had, when an admin changed it (then `from` and `status` are both
    /// `queued`); `None` when the priority stayed.
    pub was_priority: Option<u8>,
    /// The batch the job is a line of, for the dashboard's live progress.
    pub batch_id: Option<String>,
}

/// What a job's watchers hear: its new status, and the job itself when it is final and
/// was read with the change.
type Heard = (JobStatus, Option<Arc<JobRecord>>);

type Watchers = Mutex<HashMap<String, broadcast::Sender<Heard>>>;

#[derive(Debug, Default)]
pub struct Notifier {
    /// Watchers of every change of a job (its event streams).
    jobs: Watchers,
    /// Watchers of a job's final change only (held requests): not woken for the others.
    finals: Watchers,
    work: Notify,
    /// Every change, for the dashboard's live feed.
    feed: Feed,
}

/// How many changes a feed subscriber may fall behind before it skips ahead (and is told
/// so, to read the lists again).
const FEED_CAPACITY: usize = 4096;

#[derive(Debug)]
struct Feed(broadcast::Sender<Arc<Change>>);

impl Default for Feed {
    fn default() -> Self {
        Self(broadcast::channel(FEED_CAPACITY).0)
    }
}

/// A subscription to one job's changes; it unregisters itself when dropped.
pub struct JobWatch<'a> {
    /// The map this watch is in.
    watchers: &'a Watchers,
    job_id: String,
    receiver: Option<broadcast::Receiver<Heard>>,
    /// The job as its last change left it, when the change carried it.
    last: Option<Arc<JobRecord>>,
}

impl JobWatch<'_> {
    /// Waits for the next change of the job and returns its new status. A receiver that
    /// lagged skips to the changes still held, the latest always among them.
    pub async fn changed(&mut self) -> Option<JobStatus> {
        let receiver = self.receiver.as_mut()?;
        loop {
            match receiver.recv().await {
                Ok((status, record)) => {
                    self.last = record;
                    return Some(status);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The job as the change [`JobWatch::changed`] last returned left it, when that change
    /// carried it (a final status, read with the change); `None` means: read it.
    pub fn take_record(&mut self) -> Option<Arc<JobRecord>> {
        self.last.take()
    }
}

impl Drop for JobWatch<'_> {
    fn drop(&mut self) {
        drop(self.receiver.take());
        let mut jobs = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        if jobs
            .get(&self.job_id)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            jobs.remove(&self.job_id);
        }
    }
}

fn subscribe<'a>(watchers: &'a Watchers, job_id: &str) -> JobWatch<'a> {
    let mut jobs = watchers.lock().unwrap_or_else(|e| e.into_inner());
    let receiver = jobs
        .entry(job_id.to_owned())
        .or_insert_with(|| broadcast::channel(16).0)
        .subscribe();
    JobWatch {
        watchers,
        job_id: job_id.to_owned(),
        receiver: Some(receiver),
        last: None,
    }
}

impl Notifier {
    /// Subscribes to a job before reading it, so that no change falls between the read and
    /// the wait.
    pub fn watch(&self, job_id: &str) -> JobWatch<'_> {
        subscribe(&self.jobs, job_id)
    }

    /// Like [`Notifier::watch`], for a waiter that needs only the job's final change: it
    /// is not woken for the others (`processing`, a retry back to `queued`).
    pub fn watch_final(&self, job_id: &str) -> JobWatch<'_> {
        subscribe(&self.finals, job_id)
    }

    /// Whether anyone waits on the job's changes now.
    pub fn is_watched(&self, job_id: &str) -> bool {
        let watched = |watchers: &Watchers| {
            let jobs = watchers.lock().unwrap_or_else(|e| e.into_inner());
            jobs.contains_key(job_id)
        };
        watched(&self.finals) || watched(&self.jobs)
    }

    /// The jobs someone waits on now.
    pub fn watched_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for watchers in [&self.jobs, &self.finals] {
            ids.extend(
                watchers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .keys()
                    .cloned(),
            );
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Whether a dashboard's feed listens, which wants every change.
    pub fn has_feed(&self) -> bool {
        self.feed.0.receiver_count() > 0
    }

    /// Every change from now on, until the receiver is dropped. A receiver that falls
    /// more than a few thousand changes behind gets `Lagged` and skips ahead.
    pub fn feed(&self) -> broadcast::Receiver<Arc<Change>> {
        self.feed.0.subscribe()
    }

    /// Called by the writer after a commit.
    pub fn publish(&self, changes: &[Change]) {
        // Copied only when a dashboard listens: most gateways never have one open.
        if self.feed.0.receiver_count() > 0 {
            for change in changes {
                let _ = self.feed.0.send(Arc::new(change.clone()));
            }
        }
        let mut wake_nodes = false;
        {
            let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            let finals = self.finals.lock().unwrap_or_else(|e| e.into_inner());
            for change in changes {
                wake_nodes |= change.status == JobStatus::Queued;
                let heard = || (change.status, change.record.clone());
                // An error only means every receiver left meanwhile.
                if let Some(sender) = jobs.get(&change.job_id) {
                    let _ = sender.send(heard());
                }
                if let Some(sender) = finals
                    .get(&change.job_id)
                    .filter(|_| change.status.is_final())
                {
                    let _ = sender.send(heard());
                }
            }
        }
        if wake_nodes {
            self.work.notify_waiters();
        }
    }

    /// A future that completes at the next wake-up of waiting nodes. Create it before
    /// trying to lease, so that work queued in between is not missed.
    pub fn work_queued(&self) -> tokio::sync::futures::Notified<'_> {
        self.work.notified()
    }

    /// Wakes every waiting node: at start-up, and when the reaper finds retries that became
    /// due (their due times live in the store, not here, so none is forgotten).
    pub fn wake_nodes(&self) {
        self.work.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_watch_sees_published_changes_and_cleans_up() {
        let notifier = Notifier::default();
        {
            let mut watch = notifier.watch("job-1");
            notifier.publish(&[Change {
                was_priority: None,
                batch_id: None,
                record: None,
                job_id: "job-1".into(),
                status: JobStatus::Completed,
                from: Some(JobStatus::Processing),
                model: "m".into(),
                priority: 3,
                owner: "k".into(),
                endpoint: Endpoint::ChatCompletions,
            }]);
            assert_eq!(watch.changed().await, Some(JobStatus::Completed));
        }
        assert!(notifier.jobs.lock().unwrap().is_empty());
        // A final-only watch hears the final change and not the one before it.
        let mut held = notifier.watch_final("job-2");
        assert!(notifier.is_watched("job-2"));
        let change = |status| Change {
            was_priority: None,
            batch_id: None,
            record: None,
            job_id: "job-2".into(),
            status,
            from: None,
            model: "m".into(),
            priority: 3,
            owner: "k".into(),
            endpoint: Endpoint::ChatCompletions,
        };
        notifier.publish(&[change(JobStatus::Processing), change(JobStatus::Failed)]);
        assert_eq!(held.changed().await, Some(JobStatus::Failed));
        drop(held);
        assert!(!notifier.is_watched("job-2"));
    }

    #[tokio::test]
    async fn queued_changes_and_explicit_wake_ups_wake_nodes() {
        let notifier = Notifier::default();
        let woken = notifier.work_queued();
        notifier.publish(&[Change {
            was_priority: None,
            batch_id: None,
            record: None,
            job_id: "j".into(),
            status: JobStatus::Queued,
            from: None,
            model: "m".into(),
            priority: 3,
            owner: "k".into(),
            endpoint: Endpoint::ChatCompletions,
        }]);
        tokio::time::timeout(Duration::from_secs(1), woken)
            .await
            .unwrap();

        let woken = notifier.work_queued();
        notifier.wake_nodes();
        tokio::time::timeout(Duration::from_secs(1), woken)
            .await
            .unwrap();
    }
}
