//! Medians across repeated runs of a suite: every number in the results, taken at the same
//! place in each run's JSON.

use serde_json::{Map, Value};

/// The run-by-run median of `runs`, which share one shape. Numbers become their median;
/// strings, flags and counts of different shape are taken from the first run.
pub fn of(runs: &[Value]) -> Value {
    match runs.first() {
        Some(Value::Number(_)) => {
            let mut numbers: Vec<f64> = runs.iter().filter_map(Value::as_f64).collect();
            numbers.sort_by(f64::total_cmp);
            match numbers.len() {
                0 => Value::Null,
                n if n % 2 == 1 => number(numbers[n / 2]),
                n => number((numbers[n / 2 - 1] + numbers[n / 2]) / 2.0),
            }
        }
        Some(Value::Array(first)) => Value::Array(
            (0..first.len())
                .map(|i| {
                    of(&runs
                        .iter()
                        .filter_map(|r| r.get(i).cloned())
                        .collect::<Vec<_>>())
                })
                .collect(),
        ),
        Some(Value::Object(first)) => Value::Object(
            first
                .keys()
                .map(|key| {
                    let at: Vec<Value> = runs.iter().filter_map(|r| r.get(key).cloned()).collect();
                    (key.clone(), of(&at))
                })
                .collect::<Map<_, _>>(),
        ),
        Some(other) => other.clone(),
        None => Value::Null,
    }
}

fn number(value: f64) -> Value {
    serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// The figures worth a line in the median table: throughputs, latencies, memory, size.
pub fn lines(prefix: &str, value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields {
                lines(&format!("{prefix}.{key}"), field, out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                lines(&format!("{prefix}[{i}]"), item, out);
            }
        }
        Value::Number(n) => {
            let wanted = [
                "per_s",
                "p50",
                "p99",
                "overhead",
                "rss_mib",
                "bytes_per_job",
                "rss_max_mib",
                "vm_hwm_mib",
                "upload_s",
                "queued_s",
                "upstream_calls",
                "speedup",
            ];
            if wanted.iter().any(|w| prefix.contains(w)) {
                out.push(format!("{prefix} = {:.2}", n.as_f64().unwrap_or(f64::NAN)));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn medians_are_taken_number_by_number() {
        let runs = [
            json!({"rows": [{"rate": 3.0, "name": "a"}], "rss_mib": 10}),
            json!({"rows": [{"rate": 1.0, "name": "b"}], "rss_mib": 30}),
            json!({"rows": [{"rate": 2.0, "name": "c"}], "rss_mib": 20}),
        ];
        assert_eq!(
            of(&runs),
            json!({"rows": [{"rate": 2.0, "name": "a"}], "rss_mib": 20.0})
        );
        assert_eq!(of(&runs[..2])["rss_mib"], json!(20.0));
        let mut out = Vec::new();
        lines("suite", &of(&runs), &mut out);
        assert_eq!(out, vec!["suite.rss_mib = 20.00".to_owned()]);
    }
}
