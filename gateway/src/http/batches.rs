//! The Batch API's routes: create, retrieve, list and cancel. Request-level problems are
//! 400s and store nothing; a batch's lines are judged later, by the runner.

use super::Ctx;
use super::error::ApiError;
use super::policy;
use super::reply::Reply;
use super::request::Request;
use crate::queue::{BatchRecord, NewBatch, StoreError};
use openbeepboop::{BatchList, CreateBatchRequest, FilePurpose};

const DEFAULT_PAGE: usize = 20;
const MAX_PAGE: usize = 100;
/// The endpoints batch lines may call: those that queue jobs.
pub const ENDPOINTS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/responses",
];
/// OpenAI's bounds of `output_expires_after.seconds`: an hour to 30 days.
const OUTPUT_EXPIRY: std::ops::RangeInclusive<u64> = 3600..=2_592_000;
/// OpenAI's bounds of `metadata`.
const MAX_METADATA_PAIRS: usize = 16;
const MAX_METADATA_KEY: usize = 64;
const MAX_METADATA_VALUE: usize = 512;

/// `POST /v1/batches`: a batch in `validating`.
pub async fn create(ctx: &Ctx<'_>, req: &Request) -> Result<Reply, ApiError> {
    let request: CreateBatchRequest = req.json()?;
    if !ENDPOINTS.contains(&request.endpoint.as_str()) {
        return Err(ApiError::invalid(
            format!(
                "unsupported endpoint `{}`; use {}",
                request.endpoint,
                ENDPOINTS.join(", ")
            ),
            Some("endpoint".to_owned()),
        ));
    }
    let config = &ctx.state.config;
    let window = config
        .batch_window(&request.completion_window)
        .ok_or_else(|| {
            ApiError::invalid(
                format!(
                    "unsupported completion_window `{}`; use {}",
                    request.completion_window,
                    config.batch_completion_windows.join(", ")
                ),
                Some("completion_window".to_owned()),
            )
        })?;
    check_metadata(request.metadata.as_ref())?;
    let output_expires_after = match &request.output_expires_after {
        None => None,
        Some(after) if after.anchor != "created_at" => {
            return Err(ApiError::invalid(
                format!(
                    "`output_expires_after.anchor` must be `created_at`, not `{}`",
                    after.anchor
                ),
                Some("output_expires_after.anchor".to_owned()),
            ));
        }
        Some(after) if !OUTPUT_EXPIRY.contains(&after.seconds) => {
            return Err(ApiError::invalid(
                "`output_expires_after.seconds` must be from 3600 to 2592000",
                Some("output_expires_after.seconds".to_owned()),
            ));
        }
        Some(after) => Some(after.seconds),
    };
    // A batch create is one request of the key's `requests_per_minute`; its lines are
    // leased by the fair share and the execution limits, not admitted one by one.
    super::user::admit(ctx)?;
    // An unknown file, or another user's, is a bad parameter of this request.
    let file = match ctx
        .state
        .queue
        .files()
        .get(request.input_file_id.clone(), ctx.visibility())
        .await
    {
        Ok(file) => file,
        Err(StoreError::FileNotFound(id)) => {
            return Err(ApiError::invalid(
                format!("input file `{id}` not found"),
                Some("input_file_id".to_owned()),
            ));
        }
        Err(other) => return Err(other.into()),
    };
    if file.purpose != FilePurpose::Batch {
        return Err(ApiError::invalid(
            format!(
                "input file `{}` has purpose `{}`; a batch needs purpose `batch`",
                file.id, file.purpose
            ),
            Some("input_file_id".to_owned()),
        ));
    }
    let idempotency_key = policy::idempotency_key_of(req.header("idempotency-key"))?;
    let request_hash = if idempotency_key.is_some() {
        policy::digest(&req.body)
    } else {
        String::new()
    };
    let (batch, _created) = ctx
        .state
        .queue
        .create_batch(NewBatch {
            owner_key_id: ctx.principal_key_id().to_owned(),
            endpoint: request.endpoint,
            input_file_id: file.id,
            completion_window: request.completion_window,
            window_ms: window.as_millis() as i64,
            metadata: request.metadata,
            output_expires_after,
            idempotency_key,
            request_hash,
        })
        .await?;
    Ok(Reply::json(200, &batch.to_wire()))
}

/// OpenAI's `metadata` limits: at most 16 pairs, keys up to 64 characters, string values up
/// to 512.
fn check_metadata(
    metadata: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<(), ApiError> {
    let Some(metadata) = metadata else {
        return Ok(());
    };
    let bad = |message: String| Err(ApiError::invalid(message, Some("metadata".to_owned())));
    if metadata.len() > MAX_METADATA_PAIRS {
        return bad(format!(
            "`metadata` has {} pairs; at most {MAX_METADATA_PAIRS} are allowed",
            metadata.len()
        ));
    }
    for (key, value) in metadata {
        if key.chars().count() > MAX_METADATA_KEY {
            return bad(format!(
                "a `metadata` key is longer than {MAX_METADATA_KEY} characters"
            ));
        }
        match value.as_str() {
            Some(text) if text.chars().count() <= MAX_METADATA_VALUE => {}
            Some(_) => {
                return bad(format!(
                    "`metadata.{key}` is longer than {MAX_METADATA_VALUE} characters"
                ));
            }
            None => return bad(format!("`metadata.{key}` must be a string")),
        }
    }
    Ok(())
}

/// `GET /v1/batches/{id}`.
pub async fn get(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    let batch = ctx
        .state
        .queue
        .batch(id.to_owned(), ctx.visibility())
        .await?;
    Ok(Reply::json(200, &batch.to_wire()))
}

/// `GET /v1/batches?after=&limit=`: newest first.
pub async fn list(ctx: &Ctx<'_>, req: &Request) -> Result<Reply, ApiError> {
    let limit = super::request::page_limit(req, DEFAULT_PAGE, MAX_PAGE)?;
    let after = req.query_param("after").map(str::to_owned);
    let (page, has_more) = ctx
        .state
        .queue
        .batches(ctx.visibility(), limit, after)
        .await?;
    let data: Vec<_> = page.iter().map(BatchRecord::to_wire).collect();
    Ok(Reply::json(
        200,
        &BatchList {
            object: "list".to_owned(),
            first_id: data.first().map(|b| b.id.clone()),
            last_id: data.last().map(|b| b.id.clone()),
            has_more,
            data,
        },
    ))
}

/// `POST /v1/batches/{id}/cancel`: `cancelling`; the runner ends the lines.
pub async fn cancel(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    let batch = ctx
        .state
        .queue
        .cancel_batch(id.to_owned(), ctx.visibility())
        .await?;
    Ok(Reply::json(200, &batch.to_wire()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_within_openais_limits_passes_and_beyond_them_is_refused() {
        let map = |pairs: Vec<(String, serde_json::Value)>| pairs.into_iter().collect();
        assert!(check_metadata(Some(&map(vec![("k".into(), "v".into())]))).is_ok());
        let many = map((0..17).map(|i| (i.to_string(), "v".into())).collect());
        assert!(check_metadata(Some(&many)).is_err());
        let long_key = map(vec![("k".repeat(65), "v".into())]);
        assert!(check_metadata(Some(&long_key)).is_err());
        let long_value = map(vec![("k".into(), "v".repeat(513).into())]);
        assert!(check_metadata(Some(&long_value)).is_err());
        let number = map(vec![("k".into(), 1.into())]);
        assert!(check_metadata(Some(&number)).is_err());
    }
}
