//! Percentiles, the result table, and a description of the machine.

use serde_json::{Value, json};
use std::time::Duration;

/// Latencies in milliseconds, sorted.
pub struct Latencies(Vec<f64>);

impl Latencies {
    pub fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Self(
            samples
                .into_iter()
                .map(|d| d.as_secs_f64() * 1000.0)
                .collect(),
        )
    }

    /// The samples of several runs together.
    pub fn merged(parts: Vec<Latencies>) -> Self {
        let mut all: Vec<f64> = parts.into_iter().flat_map(|part| part.0).collect();
        all.sort_by(f64::total_cmp);
        Self(all)
    }

    pub fn count(&self) -> usize {
        self.0.len()
    }

    pub fn percentile(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * (self.0.len() - 1) as f64).round() as usize;
        self.0[rank.min(self.0.len() - 1)]
    }

    pub fn summary(&self) -> Value {
        json!({"count": self.0.len(), "p50_ms": self.percentile(50.0), "p99_ms": self.percentile(99.0)})
    }
}

/// Prints one row of the table.
pub fn row(suite: &str, case: &str, figure: &str) {
    println!("{suite:<8} {case:<34} {figure}");
}

pub fn machine() -> Value {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or_default().trim().to_owned())
        })
        .unwrap_or_default();
    let memory_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    json!({"cpus": cpus, "cpu": model, "memory_gib": memory_kb / 1024 / 1024})
}

/// Resident memory of a process, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU time a process has used so far, user and system, in milliseconds, from
/// `/proc/{pid}/stat` (`utime` and `stime`, fields 14 and 15, in clock ticks of 1/100 s: the
/// resolution is 10 ms, so measure runs of a second or more).
pub fn cpu_ms(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|text| {
            // The command name is in parentheses and may hold spaces: count after it.
            let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
            Some((ticks(11)? + ticks(12)?) * 10.0)
        })
        .unwrap_or(f64::NAN)
}

/// One `kB` field of `/proc/{pid}/status` (`VmRSS`, `VmHWM`), in MiB.
pub fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| {
                    l.strip_prefix(field)
                        .is_some_and(|rest| rest.starts_with(':'))
                })
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
