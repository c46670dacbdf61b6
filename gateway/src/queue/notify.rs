//! In-process wake-ups: waiters on one job's changes, and nodes waiting for work.
//!
//! The writer publishes here only after a commit, so a woken task always reads the change.
//! Nothing here touches the database.

use openbeepboop::{Endpoint, JobStatus};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::{Notify, broadcast};

/// A job that changed status in a committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

#[derive(Debug, Default)]
pub struct Notifier {
    jobs: Mutex<HashMap<String, broadcast::Sender<JobStatus>>>,
    work: Notify,
}

/// A subscription to one job's changes; it unregisters itself when dropped.
pub struct JobWatch<'a> {
    notifier: &'a Notifier,
    job_id: String,
    receiver: Option<broadcast::Receiver<JobStatus>>,
}

impl JobWatch<'_> {
    /// Waits for the next change of the job and returns its new status. A receiver that
    /// lagged skips to the changes still held, the latest always among them.
    pub async fn changed(&mut self) -> Option<JobStatus> {
        let receiver = self.receiver.as_mut()?;
        loop {
            match receiver.recv().await {
                Ok(status) => return Some(status),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl Drop for JobWatch<'_> {
    fn drop(&mut self) {
        drop(self.receiver.take());
        let mut jobs = self.notifier.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if jobs
            .get(&self.job_id)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            jobs.remove(&self.job_id);
        }
    }
}

impl Notifier {
    /// Subscribes to a job before reading it, so that no change falls between the read and
    /// the wait.
    pub fn watch(&self, job_id: &str) -> JobWatch<'_> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let receiver = jobs
            .entry(job_id.to_owned())
            .or_insert_with(|| broadcast::channel(16).0)
            .subscribe();
        JobWatch {
            notifier: self,
            job_id: job_id.to_owned(),
            receiver: Some(receiver),
        }
    }

    /// Called by the writer after a commit.
    pub fn publish(&self, changes: &[Change]) {
        let mut wake_nodes = false;
        {
            let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            for change in changes {
                wake_nodes |= change.status == JobStatus::Queued;
                if let Some(sender) = jobs.get(&change.job_id) {
                    // An error only means every receiver left meanwhile.
                    let _ = sender.send(change.status);
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
    }

    #[tokio::test]
    async fn queued_changes_and_explicit_wake_ups_wake_nodes() {
        let notifier = Notifier::default();
        let woken = notifier.work_queued();
        notifier.publish(&[Change {
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
