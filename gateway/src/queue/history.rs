//! The last hour of ended jobs, minute by minute, for the dashboard's overview: counts and
//! latency percentiles by key (so that a user sees only their own) and completions by node.
//! Fed from each commit's `Finished` events; seeded at start from the jobs that ended in the
//! last hour, so that a restart does not blank the charts. No SQL runs here.

use super::QueueEvent;
use openbeepboop::{JobStatus, MinuteStats, OverviewHour, Percentiles};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Minutes kept, the current one included.
pub const MINUTES: usize = 60;
const MINUTE_MS: i64 = 60_000;
/// Buckets two to a doubling from 1 ms: the last one holds everything from about 3 hours.
const BUCKETS: usize = 48;

/// Latencies of one minute: bucket `i` counts values up to `bound(i)` ms.
#[derive(Debug, Clone, Copy)]
struct Histogram([u32; BUCKETS]);

impl Default for Histogram {
    fn default() -> Self {
        Self([0; BUCKETS])
    }
}

/// The upper bound of bucket `i`, in ms: √2 to the `i`.
fn bound(i: usize) -> u64 {
    2f64.powf(i as f64 / 2.0).ceil() as u64
}

fn bucket(ms: i64) -> usize {
    if ms <= 1 {
        return 0;
    }
    ((ms as f64).log2() * 2.0).ceil().min((BUCKETS - 1) as f64) as usize
}

impl Histogram {
    fn add(&mut self, ms: i64) {
        self.0[bucket(ms)] += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0.iter()) {
            *mine += theirs;
        }
    }

    fn percentiles(&self) -> Percentiles {
        let total: u64 = self.0.iter().map(|&n| u64::from(n)).sum();
        let at = |q: f64| {
            let rank = (q * total as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            self.0.iter().enumerate().find_map(|(i, &n)| {
                seen += u64::from(n);
                (seen >= rank).then(|| bound(i))
            })
        };
        if total == 0 {
            return Percentiles::default();
        }
        Percentiles {
            p50: at(0.5),
            p95: at(0.95),
        }
    }
}

/// One key's ended jobs in one minute.
#[derive(Debug, Clone, Default)]
struct Tally {
    completed: u64,
    failed: u64,
    queue_wait: Histogram,
    processing: Histogram,
    end_to_end: Histogram,
}

impl Tally {
    fn merge(&mut self, other: &Tally) {
        self.completed += other.completed;
        self.failed += other.failed;
        self.queue_wait.merge(&other.queue_wait);
        self.processing.merge(&other.processing);
        self.end_to_end.merge(&other.end_to_end);
    }
}

/// A minute's tallies by key and completions by node.
#[derive(Debug, Default)]
struct Minute {
    /// Unix ms at its start.
    start: i64,
    by_key: HashMap<String, Tally>,
    by_node: HashMap<String, u64>,
}

/// One ended job, as the history counts it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended<'a> {
    pub owner: &'a str,
    pub node: Option<&'a str>,
    pub status: JobStatus,
    pub processing_ms: Option<i64>,
    pub total_ms: i64,
}

#[derive(Debug, Default)]
pub struct History {
    minutes: Mutex<VecDeque<Minute>>,
}

impl History {
    /// Counts a commit's ended jobs, at `now` (Unix ms).
    pub fn record(&self, events: &[QueueEvent], now: i64) {
        let mut minutes = self.lock();
        for event in events {
            if let QueueEvent::Finished {
                owner,
                node,
                status,
                processing_ms,
                total_ms,
                ..
            } = event
            {
                let ended = Ended {
                    owner,
                    node: node.as_deref(),
                    status: *status,
                    processing_ms: *processing_ms,
                    total_ms: *total_ms,
                };
                add(&mut minutes, &ended, now);
            }
        }
    }

    /// Counts one job that ended at `at` (Unix ms), for the seed read at start.
    pub fn seed(&self, ended: &Ended<'_>, at: i64) {
        add(&mut self.lock(), ended, at);
    }

    /// The hour up to `now` (Unix ms): everyone's (`owner` `None`) or one key's.
    pub fn hour(&self, owner: Option<&str>, now: i64) -> OverviewHour {
        let minutes = self.lock();
        let current = now - now.rem_euclid(MINUTE_MS);
        let mut out = Vec::with_capacity(MINUTES);
        for back in (0..MINUTES as i64).rev() {
            let start = current - back * MINUTE_MS;
            let mut tally = Tally::default();
            if let Some(minute) = minutes.iter().find(|m| m.start == start) {
                match owner {
                    Some(owner) => {
                        if let Some(own) = minute.by_key.get(owner) {
                            tally.merge(own);
                        }
                    }
                    None => minute.by_key.values().for_each(|t| tally.merge(t)),
                }
            }
            out.push(MinuteStats {
                minute: start / 1000,
                completed: tally.completed,
                failed: tally.failed,
                queue_wait_ms: tally.queue_wait.percentiles(),
                processing_ms: tally.processing.percentiles(),
                end_to_end_ms: tally.end_to_end.percentiles(),
            });
        }
        let completed = out.iter().map(|m| m.completed).sum::<u64>();
        let failed = out.iter().map(|m| m.failed).sum::<u64>();
        let ended = completed + failed;
        OverviewHour {
            completed,
            failed,
            error_rate: if ended == 0 {
                0.0
            } else {
                failed as f64 / ended as f64
            },
            minutes: out,
        }
    }

    /// Jobs each node completed in the hour up to `now` (Unix ms).
    pub fn completed_by_node(&self, now: i64) -> HashMap<String, u64> {
        let oldest = now - now.rem_euclid(MINUTE_MS) - (MINUTES as i64 - 1) * MINUTE_MS;
        let mut out = HashMap::new();
        for minute in self.lock().iter().filter(|m| m.start >= oldest) {
            for (node, n) in &minute.by_node {
                *out.entry(node.clone()).or_default() += n;
            }
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Minute>> {
        self.minutes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Counts `ended` in the minute of `at`, dropping minutes older than the hour. Minutes are
/// kept in order of their start; a late one (the seed's) finds or makes its place.
fn add(minutes: &mut VecDeque<Minute>, ended: &Ended<'_>, at: i64) {
    let start = at - at.rem_euclid(MINUTE_MS);
    // Commits count into the newest minute: looked at first, not found by a walk.
    let position = if minutes.back().is_some_and(|m| m.start == start) {
        minutes.len() - 1
    } else {
        match minutes.iter().position(|m| m.start >= start) {
            Some(i) if minutes[i].start == start => i,
            Some(i) => {
                minutes.insert(
                    i,
                    Minute {
                        start,
                        ..Minute::default()
                    },
                );
                i
            }
            None => {
                minutes.push_back(Minute {
                    start,
                    ..Minute::default()
                });
                minutes.len() - 1
            }
        }
    };
    let minute = &mut minutes[position];
    // Cancelled jobs are neither: a user's choice, not the queue's throughput or errors.
    let completed = ended.status == JobStatus::Completed;
    let failed = matches!(ended.status, JobStatus::Failed | JobStatus::Expired);
    if completed || failed {
        let tally = minute.by_key.entry(ended.owner.to_owned()).or_default();
        tally.completed += u64::from(completed);
        tally.failed += u64::from(failed);
        tally.end_to_end.add(ended.total_ms);
        if let Some(processing) = ended.processing_ms {
            tally.processing.add(processing);
            tally.queue_wait.add(ended.total_ms - processing);
        }
        if completed && let Some(node) = ended.node {
            *minute.by_node.entry(node.to_owned()).or_default() += 1;
        }
    }
    let newest = minutes.back().map_or(start, |m| m.start);
    while minutes
        .front()
        .is_some_and(|m| m.start <= newest - MINUTES as i64 * MINUTE_MS)
    {
        minutes.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(owner: &str, status: JobStatus, total_ms: i64) -> QueueEvent {
        QueueEvent::Finished {
            owner: owner.to_owned(),
            model: "m".to_owned(),
            endpoint: openbeepboop::Endpoint::ChatCompletions,
            status,
            node: Some("n1".to_owned()),
            processing_ms: Some(total_ms / 2),
            total_ms,
        }
    }

    const NOW: i64 = 1_764_500_000_000;

    #[test]
    fn an_hour_has_sixty_minutes_with_each_keys_jobs_in_their_minute() {
        let history = History::default();
        history.record(
            &[
                ended("a", JobStatus::Completed, 100),
                ended("a", JobStatus::Failed, 100),
                ended("b", JobStatus::Completed, 1000),
                ended("b", JobStatus::Cancelled, 10),
            ],
            NOW - 5 * MINUTE_MS,
        );
        history.record(&[ended("a", JobStatus::Expired, 50)], NOW);
        let all = history.hour(None, NOW);
        assert_eq!(all.minutes.len(), MINUTES);
        assert_eq!((all.completed, all.failed), (2, 2));
        assert!((all.error_rate - 0.5).abs() < 1e-9);
        let five_ago = &all.minutes[MINUTES - 6];
        assert_eq!((five_ago.completed, five_ago.failed), (2, 1));
        assert_eq!(all.minutes[MINUTES - 1].failed, 1);
        assert_eq!(all.minutes[0].end_to_end_ms, Percentiles::default());
        let own = history.hour(Some("b"), NOW);
        assert_eq!((own.completed, own.failed), (1, 0));
        assert_eq!(history.hour(Some("nobody"), NOW).completed, 0);
        assert_eq!(history.completed_by_node(NOW).get("n1"), Some(&2));
    }

    #[test]
    fn percentiles_are_within_a_factor_of_root_two() {
        let history = History::default();
        let events: Vec<_> = (1..=100)
            .map(|i| ended("a", JobStatus::Completed, i * 10))
            .collect();
        history.record(&events, NOW);
        let minute = &history.hour(None, NOW).minutes[MINUTES - 1];
        let p50 = minute.end_to_end_ms.p50.unwrap_or_default();
        let p95 = minute.end_to_end_ms.p95.unwrap_or_default();
        assert!((500..=708).contains(&p50), "p50 {p50}");
        assert!((950..=1344).contains(&p95), "p95 {p95}");
        assert!(minute.queue_wait_ms.p50.is_some());
    }

    #[test]
    fn minutes_older_than_the_hour_are_forgotten_and_late_seeds_find_their_place() {
        let history = History::default();
        let job = Ended {
            owner: "a",
            node: None,
            status: JobStatus::Completed,
            processing_ms: None,
            total_ms: 5,
        };
        history.seed(&job, NOW - 2 * MINUTE_MS);
        history.seed(&job, NOW - 10 * MINUTE_MS);
        history.seed(&job, NOW - 2 * MINUTE_MS);
        assert_eq!(history.hour(None, NOW).completed, 3);
        history.record(&[ended("a", JobStatus::Completed, 5)], NOW + 70 * MINUTE_MS);
        let later = history.hour(None, NOW + 70 * MINUTE_MS);
        assert_eq!(later.completed, 1, "the old minutes are gone");
        assert!(history.lock().len() <= MINUTES);
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(i64::MAX), BUCKETS - 1);
    }
}
