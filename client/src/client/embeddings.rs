//! `client.embeddings()`: embeddings requests (`POST /v1/embeddings`) submitted as jobs,
//! answered by the same [`JobHandle`] as chat.

use super::{Client, Error, JobHandle, SubmitOptions};
use crate::embeddings::EmbeddingRequest;
use crate::job::Job;

impl Client {
    /// Embeddings requests as jobs (`/v1/embeddings`).
    pub fn embeddings(&self) -> Embeddings<'_> {
        Embeddings { client: self }
    }
}

pub struct Embeddings<'a> {
    client: &'a Client,
}

impl Embeddings<'_> {
    /// Submits a request and returns at once with its job (status `queued`). Read the
    /// result with [`JobHandle::get_as`] as an
    /// [`EmbeddingList`](crate::embeddings::EmbeddingList): `data[i]` is input `i`'s vector.
    pub async fn create(&self, request: EmbeddingRequest) -> Result<JobHandle, Error> {
        self.create_with(request, SubmitOptions::default()).await
    }

    /// Submits with options (idempotency key, priority, TTL). A node sends queued jobs of
    /// one model and the same other fields upstream together, as one call
    /// (`[node] embeddings_pack_max`), and each job still gets exactly its own vectors.
    pub async fn create_with(
        &self,
        request: EmbeddingRequest,
        options: SubmitOptions,
    ) -> Result<JobHandle, Error> {
        let job: Job =
            super::submit::post(self.client, "/v1/embeddings", &request, options).await?;
        Ok(JobHandle {
            client: self.client.clone(),
            job,
        })
    }
}
