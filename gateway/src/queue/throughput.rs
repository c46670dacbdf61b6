//! How fast each model's jobs finish, for the estimated wait of `X-OBB-Progress` (issue
//! 18): per model, an exponentially decayed count of runs that ended (completed or failed)
//! with a half-life of 30 s. In memory, moved after each commit; it starts empty.

use super::QueueEvent;
use openbeepboop::JobStatus;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const HALF_LIFE: Duration = Duration::from_secs(30);
/// No run ended for this long: the rate is unknown, not low.
const STALE: Duration = Duration::from_secs(300);
/// Below this many runs a second an estimate would be noise.
const MIN_RATE: f64 = 0.01;

#[derive(Default)]
pub struct Throughput {
    models: Mutex<HashMap<String, (f64, Instant)>>,
}

/// `value` decayed from `then` to `now`.
fn decayed(value: f64, then: Instant, now: Instant) -> f64 {
    let age = now.saturating_duration_since(then).as_secs_f64();
    value * (-age * std::f64::consts::LN_2 / HALF_LIFE.as_secs_f64()).exp()
}

impl Throughput {
    /// Counts the runs that ended in a commit's events.
    pub fn record(&self, events: &[QueueEvent], now: Instant) {
        let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        for event in events {
            if let QueueEvent::Finished {
                model,
                status,
                processing_ms: Some(_),
                ..
            } = event
                && matches!(status, JobStatus::Completed | JobStatus::Failed)
            {
                let entry = models.entry(model.clone()).or_insert((0.0, now));
                *entry = (decayed(entry.0, entry.1, now) + 1.0, now);
            }
        }
    }

    /// Runs of `model` ending per second, lately; `None` when too few ended to say.
    pub fn rate(&self, model: &str, now: Instant) -> Option<f64> {
        let models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        let (value, then) = *models.get(model)?;
        if now.saturating_duration_since(then) > STALE {
            return None;
        }
        // A steady rate r keeps the decayed count at r × half-life / ln 2.
        let rate = decayed(value, then, now) * std::f64::consts::LN_2 / HALF_LIFE.as_secs_f64();
        (rate >= MIN_RATE).then_some(rate)
    }

    /// About how long until a job at `position` (counting from 1) is leased, in seconds.
    pub fn estimated_wait(&self, model: &str, position: u64, now: Instant) -> Option<f64> {
        let rate = self.rate(model, now)?;
        Some((position as f64 / rate * 10.0).round() / 10.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(model: &str) -> QueueEvent {
        QueueEvent::Finished {
            owner: "k".to_owned(),
            model: model.to_owned(),
            endpoint: openbeepboop::Endpoint::ChatCompletions,
            status: JobStatus::Completed,
            node: None,
            processing_ms: Some(5),
            total_ms: 10,
        }
    }

    #[test]
    fn a_steady_rate_is_measured_and_forgotten_when_runs_stop() {
        let throughput = Throughput::default();
        let start = Instant::now();
        // Two runs a second for five minutes.
        for tick in 0..600 {
            throughput.record(&[finished("m")], start + Duration::from_millis(500 * tick));
        }
        let now = start + Duration::from_millis(500 * 599);
        let rate = throughput.rate("m", now).unwrap();
        assert!((rate - 2.0).abs() < 0.1, "{rate}");
        assert_eq!(throughput.estimated_wait("m", 4, now), Some(2.0));
        assert_eq!(throughput.rate("other", now), None);
        assert_eq!(throughput.rate("m", now + Duration::from_secs(301)), None);
    }

    #[test]
    fn cancelled_and_never_run_jobs_do_not_count() {
        let throughput = Throughput::default();
        let now = Instant::now();
        let mut cancelled = finished("m");
        if let QueueEvent::Finished { status, .. } = &mut cancelled {
            *status = JobStatus::Cancelled;
        }
        let mut expired = finished("m");
        if let QueueEvent::Finished { processing_ms, .. } = &mut expired {
            *processing_ms = None;
        }
        throughput.record(&[cancelled, expired], now);
        assert_eq!(throughput.rate("m", now), None);
    }
}
