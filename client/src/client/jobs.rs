//! Jobs already submitted: `JobHandle` (one job: wait, refresh, cancel) and `Jobs` (get,
//! poll, list and wait for many).

use super::{Client, Error, LONG_POLL, MAX_POLL_IDS, REQUEST_TIMEOUT};
use crate::chat::ChatCompletion;
use crate::ids::JobId;
use crate::job::{Job, JobList, JobStatus, PollEntry, PollRequest, PollResponse};
use serde::de::DeserializeOwned;
use std::time::{Duration, Instant};
/// A submitted job.
pub struct JobHandle {
    pub(super) client: Client,
    pub job: Job,
}

impl JobHandle {
    pub fn id(&self) -> &JobId {
        &self.job.id
    }

    /// The last status seen.
    pub fn status(&self) -> JobStatus {
        self.job.status
    }

    /// Reads the job again, long-polling up to `wait` for it to end.
    pub async fn refresh(&mut self, wait: Duration) -> Result<&Job, Error> {
        let path = if wait.is_zero() {
            format!("/v1/jobs/{}", self.job.id)
        } else {
            format!("/v1/jobs/{}?wait={}", self.job.id, wait.as_secs_f64())
        };
        self.job = self.client.get_json(&path, wait + REQUEST_TIMEOUT).await?;
        Ok(&self.job)
    }

    /// Waits (by long-polling) until the job ends, and returns its completion, or the error
    /// of its ending, or `JobTimeout` after `timeout`.
    pub async fn get(&mut self, timeout: Duration) -> Result<ChatCompletion, Error> {
        self.get_as(timeout).await
    }

    /// Like [`get`](Self::get), for a job of any endpoint: its result read as `T`, say an
    /// [`EmbeddingList`](crate::embeddings::EmbeddingList), a
    /// [`Response`](crate::responses::Response) or a `serde_json::Value`.
    pub async fn get_as<T: DeserializeOwned>(&mut self, timeout: Duration) -> Result<T, Error> {
        let started = Instant::now();
        loop {
            let remaining = timeout.saturating_sub(started.elapsed());
            let job = self.refresh(remaining.min(LONG_POLL)).await?;
            if job.status.is_final() {
                return outcome(job.clone());
            }
            if started.elapsed() >= timeout {
                return Err(Error::JobTimeout {
                    id: self.job.id.clone(),
                    waited: timeout,
                });
            }
        }
    }

    pub async fn cancel(&mut self) -> Result<&Job, Error> {
        let path = format!("/v1/jobs/{}/cancel", self.job.id);
        self.job = self
            .client
            .send::<(), Job>(reqwest::Method::POST, &path, None, &[], REQUEST_TIMEOUT)
            .await?;
        Ok(&self.job)
    }
}

/// The result of a finished job read as `T`, or the error its ending deserves.
pub fn outcome<T: DeserializeOwned>(job: Job) -> Result<T, Error> {
    match job.status {
        JobStatus::Completed => match &job.result {
            Some(result) => serde_json::from_value(result.clone()).map_err(|e| Error::ApiStatus {
                status: 200,
                message: format!(
                    "the result of `{}` is not a {}: {e}",
                    job.id,
                    std::any::type_name::<T>()
                        .rsplit("::")
                        .next()
                        .unwrap_or_default()
                ),
            }),
            None => Err(Error::JobFailed(Box::new(job))),
        },
        JobStatus::Cancelled => Err(Error::JobCancelled(Box::new(job))),
        JobStatus::Expired => Err(Error::JobExpired(Box::new(job))),
        _ => Err(Error::JobFailed(Box::new(job))),
    }
}

pub struct Jobs<'a> {
    pub(super) client: &'a Client,
}

impl Jobs<'_> {
    pub async fn get(&self, id: &JobId) -> Result<Job, Error> {
        self.client
            .get_json(&format!("/v1/jobs/{id}"), REQUEST_TIMEOUT)
            .await
    }

    /// The jobs of `ids`, in order; ids the caller cannot see are `PollEntry::NotFound`.
    pub async fn poll(&self, ids: &[JobId]) -> Result<Vec<PollEntry>, Error> {
        let mut found = Vec::with_capacity(ids.len());
        for part in ids.chunks(MAX_POLL_IDS) {
            let body = PollRequest { ids: part.to_vec() };
            let answer: PollResponse = self
                .client
                .send(
                    reqwest::Method::POST,
                    "/v1/results/poll",
                    Some(&body),
                    &[],
                    REQUEST_TIMEOUT,
                )
                .await?;
            found.extend(answer.jobs);
        }
        Ok(found)
    }

    /// Every job of the caller with `status` (any when `None`), newest first, all pages.
    pub async fn list(&self, status: Option<JobStatus>) -> Result<Vec<Job>, Error> {
        let mut jobs = Vec::new();
        let mut after: Option<JobId> = None;
        loop {
            let mut path = "/v1/jobs?limit=100".to_owned();
            if let Some(status) = status {
                path.push_str(&format!("&status={status}"));
            }
            if let Some(after) = &after {
                path.push_str(&format!("&after={after}"));
            }
            let page: JobList = self.client.get_json(&path, REQUEST_TIMEOUT).await?;
            jobs.extend(page.data);
            if !page.has_more {
                return Ok(jobs);
            }
            after = page.last_id;
        }
    }

    /// Waits until every job ends and returns them in order. Long-polls the oldest
    /// unfinished job, then polls the rest in one call.
    pub async fn wait_all(
        &self,
        handles: &[JobHandle],
        timeout: Duration,
    ) -> Result<Vec<Job>, Error> {
        let started = Instant::now();
        let mut jobs: Vec<Job> = handles.iter().map(|h| h.job.clone()).collect();
        loop {
            let pending: Vec<JobId> = jobs
                .iter()
                .filter(|j| !j.status.is_final())
                .map(|j| j.id.clone())
                .collect();
            let Some(first) = pending.first() else {
                return Ok(jobs);
            };
            let remaining = timeout.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                return Err(Error::JobTimeout {
                    id: first.clone(),
                    waited: timeout,
                });
            }
            let wait = remaining.min(LONG_POLL);
            let _: Job = self
                .client
                .get_json(
                    &format!("/v1/jobs/{first}?wait={}", wait.as_secs_f64()),
                    wait + REQUEST_TIMEOUT,
                )
                .await?;
            for entry in self.poll(&pending).await? {
                if let PollEntry::Found(job) = entry
                    && let Some(slot) = jobs.iter_mut().find(|j| j.id == job.id)
                {
                    *slot = *job;
                }
            }
        }
    }
}
