use super::*;
use proptest::prelude::*;
use serde_json::json;

fn chunk(body: Value) -> ChatCompletionChunk {
    serde_json::from_value(body).unwrap_or_else(|e| unreachable!("fixture parses: {e}"))
}

/// A chunk of completion `c` with these choices.
fn chunk_of(choices: Value) -> ChatCompletionChunk {
    chunk(
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "system_fingerprint": "fp", "choices": choices}),
    )
}

#[test]
fn tool_call_arguments_split_over_deltas_are_joined_by_index() {
    let mut total = ChatAccumulator::new();
    let deltas = [
        json!([{"index": 0, "delta": {"role": "assistant", "content": null, "tool_calls": [
            {"index": 0, "id": "call_a", "type": "function",
                "function": {"name": "weather", "arguments": ""}}]}, "finish_reason": null}]),
        json!([{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": "{\"city\":"}}]}}]),
        // The second call opens before the first is done; this server repeats `id` and
        // `type` on each delta, as some do.
        json!([{"index": 0, "delta": {"tool_calls": [
            {"index": 1, "id": "call_b", "type": "function",
                "function": {"name": "time", "arguments": "{\"tz\""}}]}}]),
        json!([{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_a", "type": "function", "function": {"arguments": "\"Oslo\"}"}},
            {"index": 1, "id": "call_b", "function": {"name": "", "arguments": ":\"CET\"}"}}]}}]),
        json!([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
    ];
    for choices in deltas {
        total.push(&chunk_of(choices));
    }
    let done = total.finish();
    let choice = &done.choices[0];
    assert_eq!(choice.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(choice.message.content, None);
    assert_eq!(
        choice.message.extra["tool_calls"],
        json!([
            {"id": "call_a", "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}},
            {"id": "call_b", "type": "function",
                "function": {"name": "time", "arguments": "{\"tz\":\"CET\"}"}}
        ])
    );
    assert_eq!(done.extra["system_fingerprint"], "fp");
}

#[test]
fn text_refusal_reasoning_and_annotations_are_joined_per_choice_and_usage_kept() {
    let mut total = ChatAccumulator::new();
    for (index, delta) in [
        (
            1,
            json!({"role": "assistant", "content": "", "refusal": null}),
        ),
        (
            0,
            json!({"role": "assistant", "reasoning_content": "hm", "content": "He"}),
        ),
        (0, json!({"reasoning_content": "m.", "content": "llo"})),
        (1, json!({"refusal": "I can't"})),
        (1, json!({"refusal": " do that."})),
        (
            0,
            json!({"annotations": [{"type": "url_citation", "n": 1}]}),
        ),
        (
            0,
            json!({"annotations": [{"type": "url_citation", "n": 2}]}),
        ),
    ] {
        total.push(&chunk_of(json!([{"index": index, "delta": delta,
            "logprobs": null, "finish_reason": null}])));
    }
    let mut usage = chunk_of(json!([]));
    usage.usage = Some(Usage {
        prompt_tokens: 2,
        completion_tokens: 3,
        total_tokens: 5,
        extra: Map::new(),
    });
    usage.extra.insert("obfuscation".to_owned(), json!("x1"));
    total.push(&usage);
    let done = total.finish();
    assert_eq!(done.choices.len(), 2);
    assert_eq!(done.choices[0].message.text(), Some("Hello"));
    assert_eq!(done.choices[0].message.extra["reasoning_content"], "hmm.");
    assert_eq!(
        done.choices[0].message.extra["annotations"],
        json!([{"type": "url_citation", "n": 1}, {"type": "url_citation", "n": 2}])
    );
    assert_eq!(done.choices[1].message.text(), Some(""));
    assert_eq!(done.choices[1].message.extra["refusal"], "I can't do that.");
    assert_eq!(done.usage.map(|u| u.total_tokens), Some(5));
    assert!(!done.extra.contains_key("obfuscation"), "a chunk's padding");
}

#[test]
fn a_chunk_missing_what_servers_leave_out_is_read_leniently() {
    let mut total = ChatAccumulator::new();
    total
        .push_json(r#"{"id":"x","model":"m","choices":[{"delta":{"content":"a"}}]}"#)
        .unwrap_or_else(|e| unreachable!("lenient: {e}"));
    total
        .push_json(r#"{"id":"x","choices":[{"index":0,"finish_reason":"stop"}],"usage":null}"#)
        .unwrap_or_else(|e| unreachable!("lenient: {e}"));
    assert!(total.push_json("[1]").is_err());
    let done = total.finish();
    assert_eq!(done.choices[0].message.text(), Some("a"));
    assert_eq!(done.choices[0].message.role, "assistant");
    assert_eq!(done.choices[0].finish_reason.as_deref(), Some("stop"));
}

#[test]
fn legacy_completion_chunks_join_text_and_logprobs_per_choice() {
    let original: TextCompletion = serde_json::from_value(json!({
        "id": "cmpl-1", "object": "text_completion", "created": 7, "model": "m",
        "system_fingerprint": "fp", "odd": 1,
        "choices": [
            {"text": "hello", "index": 0, "logprobs": {"tokens": ["he", "llo"],
                "token_logprobs": [-0.1, -0.2]}, "finish_reason": "stop"},
            {"text": " world", "index": 1, "logprobs": null, "finish_reason": "length",
                "stop_reason": null}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    }))
    .unwrap_or_else(|e| unreachable!("fixture parses: {e}"));
    let mut total = TextCompletionAccumulator::new();
    for chunk in original.to_chunks(true) {
        total.push(&chunk);
    }
    assert_eq!(total.finish(), original);

    let mut split = TextCompletionAccumulator::new();
    for (text, tokens) in [("hel", ["hel"]), ("lo", ["lo"])] {
        let data = json!({"id": "c", "object": "text_completion", "created": 1, "model": "m",
            "choices": [{"text": text, "index": 0, "logprobs": {"tokens": tokens},
            "finish_reason": null}]});
        split
            .push_json(&data.to_string())
            .unwrap_or_else(|e| unreachable!("a chunk: {e}"));
    }
    let done = split.finish();
    assert_eq!(done.choices[0].text, "hello");
    assert_eq!(
        done.choices[0].logprobs,
        Some(json!({"tokens": ["hel", "lo"]}))
    );
}

fn text() -> impl Strategy<Value = String> {
    "[a-z {}\":,é😀]{0,12}"
}

fn tool_call() -> impl Strategy<Value = Value> {
    (text(), text(), text()).prop_map(|(id, name, arguments)| {
        json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
    })
}

fn logprobs() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        prop::collection::vec(text(), 0..3).prop_map(|tokens| {
            let content: Vec<Value> = tokens
                .iter()
                .map(|t| json!({"token": t, "logprob": -0.5, "bytes": [], "top_logprobs": []}))
                .collect();
            json!({"content": content, "refusal": null})
        }),
    ]
}

/// A message: text or no content, and any of a refusal, reasoning, tool calls and an
/// unknown field.
fn message() -> impl Strategy<Value = Value> {
    (
        prop::option::of(text()),
        prop::option::of(prop::option::of(text())),
        prop::option::of(text()),
        prop::option::of(prop::collection::vec(tool_call(), 0..3)),
        any::<bool>(),
    )
        .prop_map(|(content, refusal, reasoning, calls, annotations)| {
            let mut message = json!({"role": "assistant", "content": content});
            if let Some(refusal) = refusal {
                message["refusal"] = json!(refusal);
            }
            if let Some(reasoning) = reasoning {
                message["reasoning_content"] = json!(reasoning);
            }
            if let Some(calls) = calls {
                message["tool_calls"] = Value::Array(calls);
            }
            if annotations {
                message["annotations"] = json!([{"type": "url_citation"}]);
            }
            message
        })
}

/// A completion as an OpenAI-compatible server returns it, with 1 to 3 choices. Their
/// indexes are their positions, as `to_chunks` streams them (it renumbers any others), and
/// each has a `finish_reason` and a `logprobs`, which a streamed choice always ends with.
fn completion() -> impl Strategy<Value = ChatCompletion> {
    let choice = (
        message(),
        logprobs(),
        prop_oneof![Just("stop"), Just("length"), Just("tool_calls")],
        prop::option::of(text()),
    );
    (
        prop::collection::vec(choice, 1..4),
        text(),
        any::<i32>(),
        any::<bool>(),
    )
        .prop_map(|(choices, id, created, extra)| {
            let choices: Vec<Value> = choices
                .into_iter()
                .enumerate()
                .map(|(index, (message, logprobs, finish, stop_reason))| {
                    let mut choice = json!({"index": index, "message": message,
                        "logprobs": logprobs, "finish_reason": finish});
                    if let Some(reason) = stop_reason {
                        choice["stop_reason"] = json!(reason);
                    }
                    choice
                })
                .collect();
            let mut body = json!({"id": id, "object": "chat.completion", "created": created,
                "model": "m", "system_fingerprint": "fp", "choices": choices,
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3,
                    "completion_tokens_details": {"reasoning_tokens": 0}}});
            if extra {
                body["service_tier"] = json!("default");
                body["provider"] = json!({"name": "p"});
            }
            serde_json::from_value(body).unwrap_or_else(|e| unreachable!("generated: {e}"))
        })
}

proptest! {
    #[test]
    fn accumulating_to_chunks_gives_back_the_completion(
        original in completion(),
        include_usage in any::<bool>(),
    ) {
        let mut total = ChatAccumulator::new();
        for chunk in original.to_chunks(include_usage) {
            // Through JSON, as the node reads them.
            let data = serde_json::to_string(&chunk)
                .unwrap_or_else(|e| unreachable!("a chunk serializes: {e}"));
            total.push_json(&data).unwrap_or_else(|e| unreachable!("a chunk parses: {e}"));
        }
        let mut expected = original;
        if !include_usage {
            expected.usage = None;
        }
        prop_assert_eq!(total.finish(), expected);
    }
}
