//! A key's `tokens_per_minute` as the lease spends it: a bucket of tokens, refilled evenly
//! over a minute, charged each job's estimate (`limits::estimated_tokens`) when it is
//! leased and corrected by its `usage` when it ends. The fair share holds one per limited
//! key. No I/O.

use std::time::{Duration, Instant};

/// A key's `tokens_per_minute`: a bucket refilled evenly over a minute, charged each job's
/// estimate when it is leased and corrected by its usage. It may go below zero: the key's
/// next jobs then wait until it is back above.
#[derive(Debug)]
pub struct TokenBudget {
    /// Tokens a minute.
    pub per_minute: u32,
    /// Tokens left now; below zero after a charge larger than what was left.
    pub level: i64,
    /// When the tokens in `level` were last counted: refills count from here.
    pub at: Instant,
}

impl TokenBudget {
    pub fn new(per_minute: u32, now: Instant) -> Self {
        Self {
            per_minute,
            level: i64::from(per_minute),
            at: now,
        }
    }

    /// Adds the whole tokens earned since `at`. `at` moves on only by the time those tokens
    /// took, so the fraction of a token earned so far is kept for the next refill, however
    /// often it is asked.
    pub fn refill(&mut self, now: Instant) {
        let full = i64::from(self.per_minute.max(1));
        if self.level >= full {
            self.at = now;
            return;
        }
        let elapsed_ms =
            i64::try_from(now.saturating_duration_since(self.at).as_millis()).unwrap_or(i64::MAX);
        let gained = elapsed_ms.saturating_mul(full) / 60_000;
        if gained <= 0 {
            return;
        }
        self.level = self.level.saturating_add(gained).min(full);
        if self.level >= full {
            self.at = now;
        } else {
            self.at += Duration::from_millis((gained * 60_000 / full) as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_budget_keeps_the_fraction_earned_between_refills() {
        let start = Instant::now();
        let mut budget = TokenBudget {
            per_minute: 60,
            level: 0,
            at: start,
        };
        // A token a second, asked for at 1.5 s and at 2 s: two tokens, not one.
        budget.refill(start + Duration::from_millis(1500));
        assert_eq!(budget.level, 1);
        budget.refill(start + Duration::from_millis(2000));
        assert_eq!(budget.level, 2);
        // Full, it stays full, and a huge charge saturates rather than wraps.
        budget.refill(start + Duration::from_secs(3600));
        assert_eq!(budget.level, 60);
        budget.level = budget.level.saturating_sub(i64::MAX);
        budget.refill(start + Duration::from_secs(3601));
        assert!(budget.level < 0);
    }
}
