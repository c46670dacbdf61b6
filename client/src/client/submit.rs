//! What every submit carries, whatever its endpoint: an Idempotency-Key, and the job's
//! priority and TTL when asked for.

use super::{Client, Error, REQUEST_TIMEOUT, SubmitOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// `POST path` with `body` and the submit's headers: the gateway's answer as `T` (the job,
/// or the queued response).
pub(super) async fn post<B: Serialize, T: DeserializeOwned>(
    client: &Client,
    path: &str,
    body: &B,
    options: SubmitOptions,
) -> Result<T, Error> {
    client
        .send(
            reqwest::Method::POST,
            path,
            Some(body),
            &headers(options),
            REQUEST_TIMEOUT,
        )
        .await
}

/// The headers of a submit. The key is generated when `options` has none, so that a retry
/// after a lost answer never creates a second job.
pub(super) fn headers(options: SubmitOptions) -> Vec<(&'static str, String)> {
    let key = options
        .idempotency_key
        .unwrap_or_else(|| format!("obb-{}", uuid::Uuid::new_v4().simple()));
    let mut headers = vec![("Idempotency-Key", key)];
    if let Some(priority) = options.priority {
        headers.push(("X-OBB-Priority", priority.to_string()));
    }
    if let Some(ttl) = options.ttl {
        headers.push(("X-OBB-TTL", ttl.as_secs_f64().to_string()));
    }
    headers
}
