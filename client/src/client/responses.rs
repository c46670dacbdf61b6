//! `client.responses()`: Responses API requests (`POST /v1/responses`) submitted as jobs,
//! answered by the same [`JobHandle`] as chat. The gateway's response id (`resp_...`) is its
//! job's id, so every job method works on it.

use super::{Client, Error, JobHandle, SubmitOptions};
use crate::endpoint::Endpoint;
use crate::ids::JobId;
use crate::job::{Job, JobStatus};
use crate::responses::{Response, ResponseRequest};
use serde_json::Value;

/// The priority the gateway gives a job that asks for none.
const DEFAULT_PRIORITY: u8 = 3;

impl Client {
    /// Responses API requests as jobs (`/v1/responses`).
    pub fn responses(&self) -> Responses<'_> {
        Responses { client: self }
    }
}

pub struct Responses<'a> {
    client: &'a Client,
}

impl Responses<'_> {
    /// Submits a request in the background and returns at once with its job (status
    /// `queued`, id `resp_...`). Read the finished response with [`JobHandle::get_as`] as a
    /// [`Response`].
    pub async fn create(&self, request: ResponseRequest) -> Result<JobHandle, Error> {
        self.create_with(request, SubmitOptions::default()).await
    }

    /// Submits with options (idempotency key, priority, TTL). `background` is always true,
    /// so that the gateway answers at once with the queued response, and `stream` and
    /// `stream_options` are dropped: this client reads results.
    ///
    /// The handle's job is made from that queued response, with no second request: its
    /// `priority` is the one asked for (else the gateway's default, 3), and `expires_at`
    /// and `attempts` read 0 until the first [`JobHandle::refresh`].
    pub async fn create_with(
        &self,
        mut request: ResponseRequest,
        options: SubmitOptions,
    ) -> Result<JobHandle, Error> {
        request.extra.remove("stream");
        request.extra.remove("stream_options");
        request
            .extra
            .insert("background".to_owned(), Value::Bool(true));
        let priority = options.priority.unwrap_or(DEFAULT_PRIORITY);
        let response: Response =
            super::submit::post(self.client, "/v1/responses", &request, options).await?;
        Ok(JobHandle {
            client: self.client.clone(),
            job: job_of(response, priority),
        })
    }
}

/// The job a background response stands for, as far as the response tells.
fn job_of(response: Response, priority: u8) -> Job {
    let status = match response.status.as_str() {
        "in_progress" => JobStatus::Processing,
        "completed" | "incomplete" => JobStatus::Completed,
        "failed" => JobStatus::Failed,
        "cancelled" => JobStatus::Cancelled,
        _ => JobStatus::Queued,
    };
    Job {
        id: JobId::new(response.id),
        object: Endpoint::Responses.job_object().to_owned(),
        endpoint: Endpoint::Responses,
        model: response.model,
        status,
        priority,
        created_at: response.created_at,
        updated_at: response.created_at,
        expires_at: 0,
        attempts: 0,
        node: None,
        queue_position: None,
        result: None,
        error: None,
        events: Vec::new(),
        key_id: None,
        request: None,
        started_at: None,
        finished_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_responses_status_maps_onto_its_jobs() {
        let job = |status: &str| {
            let response: Response = serde_json::from_value(
                json!({"id": "resp_1", "status": status, "model": "m", "created_at": 7}),
            )
            .unwrap();
            job_of(response, 2)
        };
        let queued = job("queued");
        assert_eq!(
            (queued.id.as_str(), queued.status, queued.priority),
            ("resp_1", JobStatus::Queued, 2)
        );
        assert_eq!((queued.created_at, queued.updated_at), (7, 7));
        assert_eq!(queued.endpoint, Endpoint::Responses);
        for (status, expected) in [
            ("in_progress", JobStatus::Processing),
            ("completed", JobStatus::Completed),
            ("incomplete", JobStatus::Completed),
            ("failed", JobStatus::Failed),
            ("cancelled", JobStatus::Cancelled),
        ] {
            assert_eq!(job(status).status, expected, "{status}");
        }
    }
}
