//! The submit's request policy: priority (its default and bounds), the job's TTL (its
//! bounds), and the idempotency key with the digest that tells a retried submit from a
//! different one. Rules only: no I/O, so the handler just applies them.

use super::error::ApiError;
use super::request::{Request, parse_seconds};
use crate::config::Config;
use crate::queue::KeyPriorities;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;

const MAX_IDEMPOTENCY_KEY: usize = 255;

/// What the policy decides for one submit.
#[derive(Debug, PartialEq, Eq)]
pub struct Terms {
    pub priority: u8,
    pub ttl: Duration,
    pub idempotency_key: Option<String>,
    /// The digest of the body's meaning; empty without an idempotency key.
    pub request_hash: String,
}

impl Terms {
    /// The terms of the submit `req`, whose body's `metadata` is given, for a key whose
    /// requests get `priorities`.
    pub fn of(
        req: &Request,
        metadata: Option<&Map<String, Value>>,
        config: &Config,
        priorities: KeyPriorities,
    ) -> Result<Self, ApiError> {
        let idempotency_key = idempotency_key(req)?;
        // Without a key there is nothing to compare, so the digest is skipped.
        let request_hash = if idempotency_key.is_some() {
            digest(&req.body)
        } else {
            String::new()
        };
        Ok(Self {
            priority: priorities.apply(priority(req, metadata)?),
            ttl: ttl(config, req, metadata)?,
            idempotency_key,
            request_hash,
        })
    }
}

/// A `true`/`false` header such as `X-OBB-Progress`; absent is false.
pub fn flag(req: &Request, name: &str) -> Result<bool, ApiError> {
    match req.header(&name.to_ascii_lowercase()).map(str::trim) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(ApiError::invalid(
            format!("`{name}` must be `true` or `false`, not `{other}`"),
            Some(name.to_owned()),
        )),
    }
}

/// `Idempotency-Key`, when sent: 1 to 255 characters.
fn idempotency_key(req: &Request) -> Result<Option<String>, ApiError> {
    idempotency_key_of(req.header("idempotency-key"))
}

/// The `Idempotency-Key` header's value, when sent: 1 to 255 characters.
pub fn idempotency_key_of(header: Option<&str>) -> Result<Option<String>, ApiError> {
    match header {
        Some(key) if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY => {
            Err(ApiError::invalid(
                format!("`Idempotency-Key` must be 1 to {MAX_IDEMPOTENCY_KEY} characters"),
                Some("Idempotency-Key".to_owned()),
            ))
        }
        other => Ok(other.map(str::to_owned)),
    }
}

/// The body is stored verbatim; its meaning (keys sorted) decides whether a retried submit
/// with the same idempotency key is the same request.
pub fn digest(body: &[u8]) -> String {
    let canonical = serde_json::to_vec(&canonical(
        serde_json::from_slice::<Value>(body).unwrap_or_default(),
    ))
    .unwrap_or_default();
    format!("{:x}", Sha256::digest(&canonical))
}

/// The value with every object's keys sorted, so key order does not change its digest.
fn canonical(value: Value) -> Value {
    match value {
        Value::Object(fields) => {
            let mut sorted: Vec<(String, Value)> = fields.into_iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(sorted.into_iter().map(|(k, v)| (k, canonical(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

/// `X-OBB-Priority` or `metadata.obb_priority`, when asked: 1 (first) to 5.
fn priority(req: &Request, metadata: Option<&Map<String, Value>>) -> Result<Option<u8>, ApiError> {
    let (raw, param) = match req.header("x-obb-priority") {
        Some(value) => (Some(value.to_owned()), "X-OBB-Priority"),
        None => (
            metadata
                .and_then(|m| m.get("obb_priority"))
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)),
            "metadata.obb_priority",
        ),
    };
    match raw {
        None => Ok(None),
        Some(raw) => raw
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|p| (1..=5).contains(p))
            .map(Some)
            .ok_or_else(|| {
                ApiError::invalid(
                    format!("priority must be an integer from 1 (first) to 5, not `{raw}`"),
                    Some(param.to_owned()),
                )
            }),
    }
}

/// `X-OBB-TTL` or `metadata.obb_ttl_seconds`: how long the job may wait to run.
fn ttl(
    config: &Config,
    req: &Request,
    metadata: Option<&Map<String, Value>>,
) -> Result<Duration, ApiError> {
    let raw = req.header("x-obb-ttl").map(str::to_owned).or_else(|| {
        metadata
            .and_then(|m| m.get("obb_ttl_seconds"))
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
    });
    let Some(raw) = raw else {
        return Ok(Duration::from_secs(config.job_ttl_seconds));
    };
    let ttl = parse_seconds(&raw, "ttl")?;
    let max = Duration::from_secs(config.max_job_ttl_seconds);
    if ttl.is_zero() || ttl > max {
        return Err(ApiError::invalid(
            format!("`ttl` must be between 1 and {} seconds", max.as_secs()),
            Some("ttl".to_owned()),
        ));
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(headers: &[(&str, &str)], body: &str) -> Request {
        Request {
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            query: Vec::new(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.as_bytes().to_vec(),
            request_id: "req".into(),
        }
    }

    #[test]
    fn priority_defaults_to_3_and_ttl_to_the_configured_one() {
        let config = Config::default();
        let terms = Terms::of(&submit(&[], "{}"), None, &config, KeyPriorities::default()).unwrap();
        assert_eq!(terms.priority, 3);
        assert_eq!(terms.ttl, Duration::from_secs(config.job_ttl_seconds));
        assert_eq!(
            (terms.idempotency_key, terms.request_hash),
            (None, String::new())
        );
    }

    #[test]
    fn out_of_bounds_priority_ttl_and_key_are_refused_with_their_param() {
        let config = Config::default();
        let param = |headers: &[(&str, &str)]| match Terms::of(
            &submit(headers, "{}"),
            None,
            &config,
            KeyPriorities::default(),
        ) {
            Err(ApiError::InvalidRequest { param, .. }) => param,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            param(&[("x-obb-priority", "6")]).as_deref(),
            Some("X-OBB-Priority")
        );
        assert_eq!(param(&[("x-obb-ttl", "0")]).as_deref(), Some("ttl"));
        assert_eq!(
            param(&[("idempotency-key", "")]).as_deref(),
            Some("Idempotency-Key")
        );
    }

    #[test]
    fn the_digest_ignores_key_order_but_not_values() {
        assert_eq!(
            digest(br#"{"a":1,"b":{"c":2,"d":3}}"#),
            digest(br#"{"b":{"d":3,"c":2},"a":1}"#)
        );
        assert_ne!(digest(br#"{"a":1}"#), digest(br#"{"a":2}"#));
    }
}
