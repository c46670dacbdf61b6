//! A key's limits and share, as the admin API reads and writes them
//! (`GET`/`PUT /admin/keys/{key_id}/limits`). Every limit is optional: absent is unlimited.

use serde::{Deserialize, Serialize};

/// The most a key's `weight` may be: a key of weight 1000 gets 1000 leases for each one of
/// a key of weight 1.
pub const MAX_WEIGHT: u32 = 1000;

/// What a key may do. `PUT` replaces the whole object: a field left out is unlimited (or,
/// for `weight`, 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyLimits {
    /// Submits per minute; over it, a 429.
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute (estimated from the input and `max_tokens`, then corrected from
    /// `usage`); over it, the key's jobs wait in the queue.
    pub tokens_per_minute: Option<u32>,
    /// Jobs queued at once; over it, a 429.
    pub max_queued_jobs: Option<u32>,
    /// Jobs running at once; over it, the key's jobs wait in the queue.
    pub max_concurrent_jobs: Option<u32>,
    /// The key's share of leases against other keys with work queued (1 to 1000).
    #[serde(default = "one")]
    pub weight: u32,
    /// The first priority the key may ask for (1 runs first): asking for an earlier one
    /// gets this one.
    pub max_priority: Option<u8>,
    /// The priority of a request that names none (3 when unset).
    pub default_priority: Option<u8>,
    /// The label of the key's own queue and in-flight gauges; none: the key has none.
    pub metrics_label: Option<String>,
}

fn one() -> u32 {
    1
}

impl Default for KeyLimits {
    fn default() -> Self {
        Self {
            requests_per_minute: None,
            tokens_per_minute: None,
            max_queued_jobs: None,
            max_concurrent_jobs: None,
            weight: 1,
            max_priority: None,
            default_priority: None,
            metrics_label: None,
        }
    }
}

impl KeyLimits {
    /// The field at fault and why, for a 400 that names it.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let positive = [
            ("requests_per_minute", self.requests_per_minute),
            ("tokens_per_minute", self.tokens_per_minute),
            ("max_concurrent_jobs", self.max_concurrent_jobs),
        ];
        for (field, value) in positive {
            if value == Some(0) {
                return Err((
                    field,
                    format!(
                        "`{field}` must be at least 1, or left out (`none` on the command line) for no limit"
                    ),
                ));
            }
        }
        if !(1..=MAX_WEIGHT).contains(&self.weight) {
            return Err(("weight", format!("`weight` must be from 1 to {MAX_WEIGHT}")));
        }
        for (field, value) in [
            ("max_priority", self.max_priority),
            ("default_priority", self.default_priority),
        ] {
            if value.is_some_and(|p| !(1..=5).contains(&p)) {
                return Err((field, format!("`{field}` must be from 1 (first) to 5")));
            }
        }
        if let (Some(max), Some(default)) = (self.max_priority, self.default_priority)
            && default < max
        {
            return Err((
                "default_priority",
                format!("`default_priority` {default} runs before the key's `max_priority` {max}"),
            ));
        }
        if let Some(label) = &self.metrics_label
            && (label.is_empty()
                || label.len() > 32
                || !label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
        {
            return Err((
                "metrics_label",
                "`metrics_label` must be 1 to 32 of a-z, 0-9 and _".to_owned(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_out_fields_are_unlimited_and_each_bad_one_is_named() {
        let limits: KeyLimits = serde_json::from_str("{}").unwrap();
        assert_eq!(limits, KeyLimits::default());
        assert!(limits.check().is_ok());
        let field = |json: &str| {
            serde_json::from_str::<KeyLimits>(json)
                .unwrap()
                .check()
                .unwrap_err()
                .0
        };
        assert_eq!(field(r#"{"weight": 0}"#), "weight");
        assert_eq!(field(r#"{"weight": 1001}"#), "weight");
        assert_eq!(
            field(r#"{"requests_per_minute": 0}"#),
            "requests_per_minute"
        );
        assert_eq!(field(r#"{"max_priority": 6}"#), "max_priority");
        assert_eq!(
            field(r#"{"max_priority": 3, "default_priority": 2}"#),
            "default_priority"
        );
        assert_eq!(field(r#"{"metrics_label": "Team A"}"#), "metrics_label");
        assert!(serde_json::from_str::<KeyLimits>(r#"{"wieght": 2}"#).is_err());
    }
}
