//! Admission by request rate: each key with a `requests_per_minute` has a token bucket of
//! that many submits, refilled evenly over a minute. A submit takes one token; with none
//! left it is refused (429) and told when one returns. Held in memory: a restart gives
//! every key a full bucket. No HTTP and no SQL here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a key has left, as OpenAI's `x-ratelimit-*-requests` headers say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Submits per minute.
    pub limit: u32,
    /// Submits that may be made now.
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset: Duration,
    /// Until the next submit may be made: zero when one may be made now.
    pub retry_after: Duration,
}

#[derive(Debug)]
struct Bucket {
    /// Tokens, in thousandths, so that refills of less than one token are kept.
    milli_tokens: u64,
    at: Instant,
}

/// The buckets of every key with a rate limit.
#[derive(Debug, Default)]
pub struct RequestRate {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RequestRate {
    /// Takes one submit from `key`'s bucket of `per_minute`: the budget after it, or, when
    /// the bucket is empty, the budget that refuses it.
    pub fn admit(&self, key: &str, per_minute: u32, now: Instant) -> Result<Budget, Budget> {
        self.measure(key, per_minute, now, true)
    }

    /// Gives back the submit `key` took, when what it asked for was refused after all
    /// (`max_queued_jobs`): a refused request makes no work.
    pub fn refund(&self, key: &str, per_minute: u32) {
        let full = u64::from(per_minute.max(1)) * 1000;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = buckets.get_mut(key) {
            bucket.milli_tokens = (bucket.milli_tokens + 1000).min(full);
        }
    }

    /// `key`'s budget now, taking nothing: what every other answer's headers say.
    pub fn peek(&self, key: &str, per_minute: u32, now: Instant) -> Budget {
        self.measure(key, per_minute, now, false)
            .unwrap_or_else(|budget| budget)
    }

    /// Refills `key`'s bucket to `now`, and takes a submit from it when `take` is set and
    /// one is left (`Err` when `take` is set and none is).
    fn measure(
        &self,
        key: &str,
        per_minute: u32,
        now: Instant,
        take: bool,
    ) -> Result<Budget, Budget> {
        let per_minute = per_minute.max(1);
        let full = u64::from(per_minute) * 1000;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            milli_tokens: full,
            at: now,
        });
        // Refill: `per_minute` tokens a minute, so `per_minute` thousandths a 60 ms.
        let elapsed_ms = now.saturating_duration_since(bucket.at).as_millis() as u64;
        bucket.milli_tokens =
            (bucket.milli_tokens + elapsed_ms * u64::from(per_minute) / 60).min(full);
        bucket.at = now;
        let admitted = bucket.milli_tokens >= 1000;
        if admitted && take {
            bucket.milli_tokens -= 1000;
        }
        let until = |milli: u64| {
            Duration::from_millis(
                milli.saturating_sub(bucket.milli_tokens) * 60 / u64::from(per_minute),
            )
        };
        let budget = Budget {
            limit: per_minute,
            remaining: (bucket.milli_tokens / 1000) as u32,
            reset: until(full),
            retry_after: if bucket.milli_tokens >= 1000 {
                Duration::ZERO
            } else {
                until(1000)
            },
        };
        if admitted || !take {
            Ok(budget)
        } else {
            Err(budget)
        }
    }
}

/// A request's tokens as a rate limit counts them before it runs, as OpenAI's does: its
/// body's characters over 4 (about a token each), plus the most it may write
/// (`max_tokens`, `max_completion_tokens` or `max_output_tokens`, times `n`). The answer's
/// `usage` corrects it afterwards.
pub fn estimated_tokens(body: &str) -> u64 {
    let input = body.chars().count() as u64 / 4;
    let request: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let most = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .find_map(|field| request[field].as_u64())
        .unwrap_or(0);
    let choices = request["n"].as_u64().unwrap_or(1).max(1);
    // Saturated at what the store keeps (a signed 64-bit column): a `max_tokens` of 2^64 - 1
    // is charged as the most there is, not wrapped to nothing.
    input
        .saturating_add(most.saturating_mul(choices))
        .min(i64::MAX as u64)
}

/// A duration as OpenAI's `x-ratelimit-reset-*` headers write it: `1s`, `6m0s`, `250ms`.
pub fn openai_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let seconds = duration.as_secs();
    if seconds < 60 {
        return format!("{seconds}s");
    }
    format!("{}m{}s", seconds / 60, seconds % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_admits_its_limit_then_refuses_and_refills_evenly() {
        let rate = RequestRate::default();
        let start = Instant::now();
        for n in 0..3 {
            let budget = rate.admit("k", 3, start).unwrap();
            assert_eq!(budget.remaining, 2 - n);
        }
        let refused = rate.admit("k", 3, start).unwrap_err();
        assert_eq!(refused.remaining, 0);
        assert_eq!(
            refused.retry_after,
            Duration::from_secs(20),
            "a token every 20 s"
        );
        assert_eq!(refused.reset, Duration::from_secs(60));
        // 20 s later one token is back; other keys have their own buckets.
        assert!(rate.admit("k", 3, start + Duration::from_secs(20)).is_ok());
        assert!(rate.admit("k", 3, start + Duration::from_secs(20)).is_err());
        assert!(rate.admit("other", 3, start).is_ok());
        rate.refund("other", 3);
        assert_eq!(rate.peek("other", 3, start).remaining, 3, "given back");
        rate.refund("other", 3);
        assert_eq!(rate.peek("other", 3, start).remaining, 3, "never past full");
        assert!(rate.admit("other", 3, start).is_ok());
        let peeked = rate.peek("other", 3, start);
        assert_eq!(peeked.remaining, 2, "a peek takes nothing");
        assert_eq!(rate.peek("other", 3, start), peeked);
        assert_eq!(rate.peek("fresh", 3, start).remaining, 3);
    }

    #[test]
    fn an_estimate_counts_the_body_and_the_most_the_answer_may_be() {
        let body = r#"{"model":"m","messages":[],"max_tokens":100,"n":2}"#;
        assert_eq!(estimated_tokens(body), body.len() as u64 / 4 + 200);
        assert_eq!(estimated_tokens("{}"), 0);
        let huge = r#"{"max_tokens":18446744073709551615,"n":4}"#;
        assert_eq!(
            estimated_tokens(huge),
            i64::MAX as u64,
            "saturated, not wrapped"
        );
    }

    #[test]
    fn durations_are_written_as_openai_writes_them() {
        assert_eq!(openai_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(openai_duration(Duration::from_secs(1)), "1s");
        assert_eq!(openai_duration(Duration::from_secs(360)), "6m0s");
    }
}
