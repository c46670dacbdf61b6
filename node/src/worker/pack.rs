//! Embeddings packing: leased embeddings jobs of one model and the same parameters go to the
//! upstream as one call with an array `input`, and the answer is split back, so that each
//! job gets exactly its own vectors (re-indexed from 0) and its share of `usage`.
//!
//! A job's part that the answer lacks fails only that job; what an error answer to the
//! whole call does is `JobContext::execute_pack`'s (a 4xx: each job again alone). Nothing
//! here does I/O.

use crate::upstream::{Completion, UpstreamError};
use openbeepboop::embeddings::EmbeddingInput;
use openbeepboop::{Endpoint, LeasedJob};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// What runs as one task: a job alone, or a pack of embeddings jobs.
pub(super) type Unit = Vec<LeasedJob>;

/// A job's body read for packing: its inputs and what must match for two jobs to share a
/// call.
struct Packable {
    inputs: EmbeddingInput,
    /// The model, the kind of input and every other field but `metadata` (the gateway's
    /// terms, never sent upstream): jobs pack only when equal.
    key: String,
}

fn packable(job: &LeasedJob) -> Option<Packable> {
    if job.endpoint != Endpoint::Embeddings {
        return None;
    }
    let mut body: Map<String, Value> = serde_json::from_str(job.request_payload.get()).ok()?;
    let inputs = EmbeddingInput::read(&body.remove("input")?).ok()?;
    body.remove("model");
    body.remove("metadata");
    let rest = serde_json::to_string(&body).ok()?;
    Some(Packable {
        key: format!("{}\n{}\n{rest}", job.model, inputs.is_text()),
        inputs,
    })
}

/// Groups leased jobs into units: embeddings jobs that can share a call in packs of at most
/// `pack_max` jobs (and OpenAI's limit of inputs per request); every other job alone. Units
/// keep the order of their first job.
pub(super) fn plan(jobs: Vec<LeasedJob>, pack_max: u32) -> Vec<Unit> {
    let pack_max = pack_max.max(1) as usize;
    let mut units: Vec<Unit> = Vec::new();
    // The open pack of each key: its unit's position and its inputs so far.
    let mut open: HashMap<String, (usize, usize)> = HashMap::new();
    for job in jobs {
        let Some(packable) = packable(&job).filter(|_| pack_max > 1) else {
            units.push(vec![job]);
            continue;
        };
        let count = packable.inputs.len();
        match open.get_mut(&packable.key) {
            Some((at, inputs))
                if units[*at].len() < pack_max && *inputs + count <= EmbeddingInput::MAX_ITEMS =>
            {
                *inputs += count;
                units[*at].push(job);
            }
            _ => {
                open.insert(packable.key, (units.len(), count));
                units.push(vec![job]);
            }
        }
    }
    units
}

/// What to lease to fill the packs of a full fetch: the models of its embeddings jobs and
/// how many more jobs (up to a full pack, and the gateway's 256 per fetch); `None` when
/// there is nothing to fill.
///
/// Only the models of the embeddings jobs just leased are filled: a job of another model
/// could join no pack, and would wait for a slot holding its lease, ahead of work the
/// queue ranks before it. A job of the same model with other parameters (say
/// `dimensions`) still waits so; it is not handed back, which would spend an attempt.
pub(super) fn fill_for(jobs: &[LeasedJob], pack_max: u32) -> Option<(Vec<String>, u32)> {
    let mut models: Vec<String> = Vec::new();
    let mut embeddings = 0u32;
    for job in jobs
        .iter()
        .filter(|job| job.endpoint == Endpoint::Embeddings)
    {
        embeddings += 1;
        // A job whose model is literally `*` stays alone: a fetch reads `*` as any model.
        if job.model != "*" && !models.contains(&job.model) {
            models.push(job.model.clone());
        }
    }
    if models.is_empty() || pack_max <= embeddings {
        return None;
    }
    Some((models, (pack_max - embeddings).min(256)))
}

/// The packed request: the first job's body with `input` the array of every job's inputs,
/// in order, and the number of inputs each job brought.
pub(super) fn packed_request(jobs: &[LeasedJob]) -> Option<(Box<RawValue>, Vec<JobPart>)> {
    let mut body: Map<String, Value> =
        serde_json::from_str(jobs.first()?.request_payload.get()).ok()?;
    let mut items = Vec::new();
    let mut parts = Vec::with_capacity(jobs.len());
    for job in jobs {
        let inputs = packable(job)?.inputs;
        let weight = inputs.weights().iter().sum();
        parts.push(JobPart {
            start: items.len(),
            count: inputs.len(),
            weight,
        });
        items.extend(inputs.items());
    }
    body.insert("input".to_owned(), Value::Array(items));
    let raw = RawValue::from_string(serde_json::to_string(&body).ok()?).ok()?;
    Some((raw, parts))
}

/// Where one job's inputs sit in the packed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct JobPart {
    pub start: usize,
    pub count: usize,
    /// The size of its inputs (characters of texts, tokens of token arrays): its share of
    /// the call's `usage`.
    pub weight: u64,
}

/// Splits `total` in proportion to `weights`, by largest remainder, so the shares add up
/// to `total` exactly; equal weights (or none) share it evenly, the earlier parts taking
/// the remainder.
pub(super) fn shares(total: u64, weights: &[u64]) -> Vec<u64> {
    if weights.is_empty() {
        return Vec::new();
    }
    let sum: u64 = weights.iter().sum();
    let weights: Vec<u128> = if sum == 0 {
        vec![1; weights.len()]
    } else {
        weights.iter().map(|w| u128::from(*w)).collect()
    };
    let sum: u128 = weights.iter().sum();
    let total = u128::from(total);
    let mut shares: Vec<u128> = weights.iter().map(|w| total * w / sum).collect();
    let mut left = total - shares.iter().sum::<u128>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    // Largest remainder first; ties go to the earlier part.
    order.sort_by_key(|&i| std::cmp::Reverse(total * weights[i] % sum));
    for i in order {
        if left == 0 {
            break;
        }
        shares[i] += 1;
        left -= 1;
    }
    shares.into_iter().map(|s| s as u64).collect()
}

/// Splits the packed call's answer into each job's own answer: `data` items of its part,
/// re-indexed from 0, the answer's other fields, and its share of each `usage` count. A job
/// whose part is missing or malformed gets an `Invalid` error; the others are unaffected.
pub(super) fn split(
    answer: &Completion,
    status: u16,
    parts: &[JobPart],
) -> Vec<Result<Completion, UpstreamError>> {
    let invalid = |message: String| UpstreamError::Invalid { status, message };
    let whole: Map<String, Value> = match serde_json::from_str(answer.body.get()) {
        Ok(whole) => whole,
        Err(e) => {
            let error = invalid(format!("the packed embeddings answer is unreadable: {e}"));
            return parts.iter().map(|_| Err(error.clone())).collect();
        }
    };
    let mut by_index: HashMap<u64, &Value> = HashMap::new();
    let data = whole.get("data").and_then(Value::as_array);
    for (position, item) in data.into_iter().flatten().enumerate() {
        let index = item
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(position as u64);
        by_index.insert(index, item);
    }
    let weights: Vec<u64> = parts.iter().map(|p| p.weight).collect();
    let usage = whole.get("usage").and_then(Value::as_object);
    // Each numeric usage field, shared out by weight.
    let usage_shares: Vec<(String, Vec<u64>)> = usage
        .into_iter()
        .flatten()
        .filter_map(|(name, value)| Some((name.clone(), shares(value.as_u64()?, &weights))))
        .collect();
    parts
        .iter()
        .enumerate()
        .map(|(n, part)| {
            let mut items = Vec::with_capacity(part.count);
            for offset in 0..part.count {
                let index = (part.start + offset) as u64;
                let Some(Value::Object(item)) = by_index.get(&index).copied() else {
                    return Err(invalid(format!(
                        "the upstream's embeddings answer has no embedding at index {index}, input {offset} of this job"
                    )));
                };
                if !item.contains_key("embedding") {
                    return Err(invalid(format!(
                        "the upstream's embeddings answer has no `embedding` at index {index}, input {offset} of this job"
                    )));
                }
                let mut item = item.clone();
                item.insert("index".to_owned(), Value::from(offset));
                items.push(Value::Object(item));
            }
            let mut own = Map::new();
            for (key, value) in &whole {
                match key.as_str() {
                    "data" => {
                        own.insert(key.clone(), Value::Array(std::mem::take(&mut items)));
                    }
                    "usage" => {
                        let mut share = usage.cloned().unwrap_or_default();
                        for (name, values) in &usage_shares {
                            share.insert(name.clone(), Value::from(values[n]));
                        }
                        own.insert(key.clone(), Value::Object(share));
                    }
                    _ => {
                        own.insert(key.clone(), value.clone());
                    }
                }
            }
            if !own.contains_key("data") {
                own.insert("data".to_owned(), Value::Array(items));
            }
            let text = serde_json::to_string(&own).unwrap_or_default();
            Completion::parse(text)
                .map_err(|e| invalid(format!("a split embeddings answer is unreadable: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(n: u32, endpoint: Endpoint, body: Value) -> LeasedJob {
        serde_json::from_value(json!({
            "id": format!("job-{n}"), "model": body["model"], "endpoint": endpoint,
            "request_payload": body, "lease_id": format!("lease-{n}"),
            "lease_expires_at": 0, "attempt": 1, "request_id": null
        }))
        .unwrap()
    }

    fn ids(units: &[Unit]) -> Vec<Vec<String>> {
        units
            .iter()
            .map(|u| u.iter().map(|j| j.id.to_string()).collect())
            .collect()
    }

    #[test]
    fn a_fill_asks_for_the_models_just_leased_up_to_a_full_pack() {
        let e = Endpoint::Embeddings;
        let chat = || {
            job(
                9,
                Endpoint::ChatCompletions,
                json!({"model": "c", "messages": []}),
            )
        };
        let jobs = vec![
            job(0, e, json!({"model": "a", "input": "x"})),
            job(1, e, json!({"model": "b", "input": "x"})),
            job(2, e, json!({"model": "a", "input": "y"})),
            chat(),
        ];
        assert_eq!(
            fill_for(&jobs, 64),
            Some((vec!["a".to_owned(), "b".to_owned()], 61))
        );
        assert_eq!(fill_for(&jobs, 3), None, "already a full pack's worth");
        assert_eq!(fill_for(&jobs, 1000).map(|(_, limit)| limit), Some(256));
        assert_eq!(
            fill_for(&[chat()], 64),
            None,
            "no embeddings: nothing to fill"
        );
        let any = job(3, e, json!({"model": "*", "input": "x"}));
        assert_eq!(fill_for(&[any], 64), None, "`*` would lease any model");
    }

    #[test]
    fn only_embeddings_of_one_model_and_the_same_parameters_share_a_pack() {
        let e = Endpoint::Embeddings;
        let jobs = vec![
            job(0, e, json!({"model": "a", "input": "x"})),
            job(
                1,
                Endpoint::ChatCompletions,
                json!({"model": "a", "messages": []}),
            ),
            job(2, e, json!({"model": "a", "input": ["y", "z"]})),
            job(3, e, json!({"model": "b", "input": "x"})),
            job(4, e, json!({"model": "a", "input": [1, 2]})),
            job(5, e, json!({"model": "a", "input": "w", "dimensions": 8})),
            job(6, e, json!({"model": "a", "input": "v"})),
            // `metadata` holds the gateway's terms and never goes upstream.
            job(
                7,
                e,
                json!({"model": "a", "input": "u", "metadata": {"obb_priority": "1"}}),
            ),
        ];
        let units = plan(jobs, 64);
        assert_eq!(
            ids(&units),
            vec![
                vec!["job-0", "job-2", "job-6", "job-7"],
                vec!["job-1"],
                vec!["job-3"],
                vec!["job-4"],
                vec!["job-5"],
            ]
        );
        let jobs = (0..5)
            .map(|n| job(n, e, json!({"model": "a", "input": "x"})))
            .collect();
        assert_eq!(
            ids(&plan(jobs, 2)),
            vec![
                vec!["job-0", "job-1"],
                vec!["job-2", "job-3"],
                vec!["job-4"]
            ]
        );
        let jobs: Vec<LeasedJob> = (0..3)
            .map(|n| job(n, e, json!({"model": "a", "input": "x"})))
            .collect();
        assert_eq!(plan(jobs, 1).len(), 3, "1 packs nothing");
    }

    #[test]
    fn shares_add_up_to_the_total_in_proportion() {
        assert_eq!(shares(10, &[1, 1]), vec![5, 5]);
        assert_eq!(shares(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(shares(7, &[0, 0]), vec![4, 3]);
        assert_eq!(shares(100, &[1, 3]), vec![25, 75]);
        for (total, weights) in [(13u64, vec![5u64, 7, 11]), (0, vec![3, 4]), (1, vec![9])] {
            assert_eq!(shares(total, &weights).iter().sum::<u64>(), total);
        }
    }

    #[test]
    fn a_packed_answer_splits_into_each_jobs_own_vectors_and_usage() {
        let e = Endpoint::Embeddings;
        let jobs = vec![
            job(
                0,
                e,
                json!({"model": "a", "input": "ab", "encoding_format": "float"}),
            ),
            job(
                1,
                e,
                json!({"model": "a", "input": ["cd", "ef"], "encoding_format": "float"}),
            ),
        ];
        let (body, parts) = packed_request(&jobs).unwrap();
        let body: Value = serde_json::from_str(body.get()).unwrap();
        assert_eq!(body["input"], json!(["ab", "cd", "ef"]));
        assert_eq!(body["encoding_format"], "float");
        let answer = Completion::parse(
            json!({"object": "list", "model": "up", "data": [
                {"object": "embedding", "index": 2, "embedding": [2.0]},
                {"object": "embedding", "index": 0, "embedding": [0.0]},
                {"object": "embedding", "index": 1, "embedding": [1.0]}
            ], "usage": {"prompt_tokens": 9, "total_tokens": 9}})
            .to_string(),
        )
        .unwrap();
        let split = split(&answer, 200, &parts);
        let own: Vec<Value> = split
            .iter()
            .map(|r| serde_json::from_str(r.as_ref().unwrap().body.get()).unwrap())
            .collect();
        assert_eq!(
            own[0]["data"],
            json!([{"object": "embedding", "index": 0, "embedding": [0.0]}])
        );
        assert_eq!(
            own[1]["data"],
            json!([{"object": "embedding", "index": 0, "embedding": [1.0]},
                   {"object": "embedding", "index": 1, "embedding": [2.0]}])
        );
        assert_eq!(
            own[0]["usage"],
            json!({"prompt_tokens": 3, "total_tokens": 3})
        );
        assert_eq!(
            own[1]["usage"],
            json!({"prompt_tokens": 6, "total_tokens": 6})
        );
        assert_eq!(own[1]["model"], "up");
        assert_eq!(split[1].as_ref().unwrap().prompt_tokens, 6);
    }

    #[test]
    fn a_missing_part_fails_only_its_job() {
        let parts = [
            JobPart {
                start: 0,
                count: 1,
                weight: 1,
            },
            JobPart {
                start: 1,
                count: 1,
                weight: 1,
            },
        ];
        let answer = Completion::parse(
            json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}]})
                .to_string(),
        )
        .unwrap();
        let split = split(&answer, 200, &parts);
        assert!(split[0].is_ok());
        let error = split[1].as_ref().unwrap_err();
        assert_eq!(error.kind(), "invalid_answer");
        assert!(error.to_string().contains("index 1"), "{error}");
    }
}
