//! Replays a finished [`ChatCompletion`] as the `chat.completion.chunk` events a streaming
//! server would have sent. It only builds chunks; writing them as SSE is the gateway's part.

use crate::chat::{ChatCompletion, ChatCompletionChunk, Choice, ChunkChoice, Usage};
use serde_json::{Map, Value};

/// Top-level fields OpenAI repeats on every chunk of a stream.
pub(crate) const EVERY_CHUNK: [&str; 2] = ["system_fingerprint", "service_tier"];

impl ChatCompletion {
    /// Replays a finished completion as the chunks a streaming server would have sent, in
    /// the shape of OpenAI's `ChatCompletionChunk`, for any completion
    /// [`ChatCompletion`]'s lenient parse accepts.
    ///
    /// Each choice, in order, gets these chunks:
    /// - when the choice has `logprobs`, first one whose delta is only the `role`, as
    ///   OpenAI's stream opens a choice: the official SDKs' stream accumulators copy the
    ///   logprobs of a choice's first chunk and then append them again, so they must not
    ///   ride on it;
    /// - one whose delta is the whole message: `role` (unless it came already), `content`
    ///   (`null` when absent), and every other message field (`refusal`, `tool_calls`,
    ///   `function_call`, `audio`, `reasoning_content`, ...). Each tool call gets the `index`
    ///   of its position, as stream deltas have, a `type` when it lacks one, and string
    ///   `arguments`. The choice's `logprobs` ride on this chunk;
    /// - one with an empty delta and the `finish_reason` (`tool_calls` when the message has
    ///   any and the upstream named none, else `stop`), carrying the choice's other fields.
    ///
    /// `system_fingerprint` and `service_tier` are on every chunk, as OpenAI sends them;
    /// other unknown top-level fields are on the first chunk only, so a large one is not
    /// repeated. Usage comes last, in a chunk with no choices, when `include_usage` asks
    /// for it, as OpenAI's `stream_options` does.
    pub fn to_chunks(&self, include_usage: bool) -> Vec<ChatCompletionChunk> {
        let (every, mut once): (Map<String, Value>, Map<String, Value>) = self
            .extra
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .partition(|(key, _)| EVERY_CHUNK.contains(&key.as_str()));
        let mut chunk = |choices: Vec<ChunkChoice>, usage: Option<Usage>| {
            let mut extra = every.clone();
            extra.append(&mut once);
            ChatCompletionChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk".to_owned(),
                created: self.created,
                model: self.model.clone(),
                choices,
                usage,
                extra,
            }
        };
        let mut chunks = Vec::with_capacity(self.choices.len() * 3 + 1);
        for (index, choice) in in_stream_order(&self.choices) {
            let mut rest = choice.extra.clone();
            let logprobs = rest.remove("logprobs").filter(|v| !v.is_null());
            let mut delta = delta(choice);
            if logprobs.is_some() {
                let role = delta.remove("role").unwrap_or(Value::Null);
                let opening = Map::from_iter([("role".to_owned(), role)]);
                chunks.push(chunk(vec![part(index, opening, None, None)], None));
            }
            chunks.push(chunk(vec![part(index, delta, logprobs, None)], None));
            let mut finish = part(index, Map::new(), None, Some(finish_reason(choice)));
            finish.extra = rest;
            chunks.push(chunk(vec![finish], None));
        }
        if include_usage {
            chunks.push(chunk(Vec::new(), self.usage.clone()));
        }
        chunks
    }
}

fn part(
    index: u32,
    delta: Map<String, Value>,
    logprobs: Option<Value>,
    finish_reason: Option<String>,
) -> ChunkChoice {
    ChunkChoice {
        index,
        delta,
        logprobs,
        finish_reason,
        extra: Map::new(),
    }
}

/// The choices with the index each is streamed under, in ascending index order. Stream
/// readers look a choice up by its index (the Python SDK by its position in a list), so
/// indexes must be exactly 0 to n-1; when the upstream's are not (two choices with index 0
/// is a known server bug), each choice is streamed under its position instead.
fn in_stream_order(choices: &[Choice]) -> Vec<(u32, &Choice)> {
    let mut sorted: Vec<&Choice> = choices.iter().collect();
    sorted.sort_by_key(|choice| choice.index);
    let dense = sorted
        .iter()
        .enumerate()
        .all(|(position, choice)| usize::try_from(choice.index).is_ok_and(|i| i == position));
    if dense {
        sorted.into_iter().map(|c| (c.index, c)).collect()
    } else {
        (0u32..).zip(choices).collect()
    }
}

/// The whole message of a choice as one delta.
fn delta(choice: &Choice) -> Map<String, Value> {
    let message = &choice.message;
    let mut delta = Map::new();
    delta.insert("role".to_owned(), Value::String(message.role.clone()));
    delta.insert(
        "content".to_owned(),
        message.content.clone().unwrap_or(Value::Null),
    );
    for (key, value) in &message.extra {
        let value = match key.as_str() {
            "tool_calls" => tool_call_deltas(value),
            _ => value.clone(),
        };
        delta.insert(key.clone(), value);
    }
    delta
}

fn finish_reason(choice: &Choice) -> String {
    if let Some(reason) = &choice.finish_reason {
        return reason.clone();
    }
    let calls_tools = choice
        .message
        .extra
        .get("tool_calls")
        .and_then(Value::as_array)
        .is_some_and(|calls| !calls.is_empty());
    if calls_tools { "tool_calls" } else { "stop" }.to_owned()
}

/// A message's tool calls as stream deltas. A delta must carry the `index` that stream
/// readers merge fragments by, so each call gets its position in the list, whatever the
/// upstream wrote there: two calls with the same index would be merged into one. Readers
/// such as the Node SDK's stream helper also need every call's `type` and a string
/// `arguments`, which some servers leave out or send as an object.
fn tool_call_deltas(calls: &Value) -> Value {
    let Value::Array(calls) = calls else {
        return calls.clone();
    };
    let deltas = calls.iter().enumerate().map(|(position, call)| {
        let Value::Object(call) = call else {
            return call.clone();
        };
        let mut delta = Map::from_iter([("index".to_owned(), Value::from(position))]);
        for (key, value) in call {
            if key != "index" {
                delta.insert(key.clone(), value.clone());
            }
        }
        if delta.get("type").is_none_or(Value::is_null) {
            let kind = if delta.contains_key("custom") {
                "custom"
            } else {
                "function"
            };
            delta.insert("type".to_owned(), Value::String(kind.to_owned()));
        }
        if let Some(Value::Object(function)) = delta.get_mut("function") {
            let arguments = match function.get("arguments") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
            };
            function.insert("arguments".to_owned(), Value::String(arguments));
        }
        Value::Object(delta)
    });
    Value::Array(deltas.collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> ChatCompletion {
        serde_json::from_value(body).unwrap_or_else(|e| unreachable!("fixture parses: {e}"))
    }

    fn completion(message: Value) -> ChatCompletion {
        parse(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "m",
            "system_fingerprint": "fp",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        }))
    }

    fn json_of(chunks: &[ChatCompletionChunk]) -> Vec<Value> {
        chunks
            .iter()
            .map(|c| serde_json::to_value(c).unwrap_or_default())
            .collect()
    }

    /// The fields every chunk must have for the OpenAI SDKs' `ChatCompletionChunk`.
    fn assert_valid(chunks: &[ChatCompletionChunk]) {
        for chunk in json_of(chunks) {
            assert!(chunk["id"].is_string(), "{chunk}");
            assert_eq!(chunk["object"], "chat.completion.chunk");
            assert!(chunk["created"].is_i64(), "{chunk}");
            assert!(chunk["model"].is_string(), "{chunk}");
            for choice in chunk["choices"].as_array().into_iter().flatten() {
                assert!(choice["index"].is_u64(), "{chunk}");
                assert!(choice["delta"].is_object(), "{chunk}");
                assert!(choice.get("finish_reason").is_some(), "{chunk}");
                assert!(choice.get("logprobs").is_some(), "{chunk}");
                for call in choice["delta"]["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    assert!(call["index"].is_u64(), "{chunk}");
                    assert!(call["type"].is_string(), "{chunk}");
                }
            }
        }
    }

    #[test]
    fn a_text_answer_is_one_delta_then_its_finish_reason_then_usage() {
        let done = completion(json!({"role": "assistant", "content": "hi there"}));
        let chunks = done.to_chunks(true);
        assert_valid(&chunks);
        assert_eq!(
            json_of(&chunks),
            vec![
                json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7,
                    "model": "m", "choices": [{"index": 0,
                    "delta": {"role": "assistant", "content": "hi there"},
                    "logprobs": null, "finish_reason": null}], "system_fingerprint": "fp"}),
                json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7,
                    "model": "m", "choices": [{"index": 0, "delta": {}, "logprobs": null,
                    "finish_reason": "tool_calls"}], "system_fingerprint": "fp"}),
                json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7,
                    "model": "m", "choices": [], "system_fingerprint": "fp",
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}),
            ]
        );
        assert_eq!(
            done.to_chunks(false).len(),
            2,
            "no usage chunk unless asked"
        );
    }

    #[test]
    fn null_content_with_tool_calls_gives_each_call_its_index_type_and_string_arguments() {
        let done = completion(json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
            {"id": "c2", "function": {"name": "g", "arguments": {"b": 2}}},
            {"id": "c3", "index": 0, "function": {"name": "h"}},
            {"id": "c4", "type": "custom", "custom": {"name": "k", "input": "x"}}
        ]}));
        let chunks = done.to_chunks(false);
        assert_valid(&chunks);
        let delta = &chunks[0].choices[0].delta;
        assert_eq!(delta["content"], Value::Null);
        assert_eq!(
            delta["tool_calls"],
            json!([
                {"index": 0, "id": "c1", "type": "function",
                    "function": {"name": "f", "arguments": "{\"a\":1}"}},
                {"index": 1, "id": "c2", "type": "function",
                    "function": {"name": "g", "arguments": "{\"b\":2}"}},
                {"index": 2, "id": "c3", "type": "function",
                    "function": {"name": "h", "arguments": ""}},
                {"index": 3, "id": "c4", "type": "custom", "custom": {"name": "k", "input": "x"}}
            ])
        );
    }

    #[test]
    fn a_missing_index_role_message_or_finish_reason_is_filled_in() {
        let done = parse(json!({"id": "x", "model": "m", "choices": [
            {"message": {"content": "a"}},
            {"index": null, "message": {"role": null, "content": "b"}, "finish_reason": "length"},
            {"finish_reason": "stop"},
            {"message": {"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]}}
        ]}));
        let chunks = done.to_chunks(false);
        assert_valid(&chunks);
        let summary: Vec<(u32, Value, Option<String>)> = chunks
            .iter()
            .map(|c| {
                let choice = &c.choices[0];
                let role = choice.delta.get("role").cloned().unwrap_or_default();
                (choice.index, role, choice.finish_reason.clone())
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (0, json!("assistant"), None),
                (0, Value::Null, Some("stop".to_owned())),
                (1, json!("assistant"), None),
                (1, Value::Null, Some("length".to_owned())),
                (2, json!("assistant"), None),
                (2, Value::Null, Some("stop".to_owned())),
                (3, json!("assistant"), None),
                (3, Value::Null, Some("tool_calls".to_owned())),
            ]
        );
        assert_eq!(chunks[4].choices[0].delta["content"], Value::Null);
        assert_eq!(chunks[0].object, "chat.completion.chunk");
    }

    #[test]
    fn several_choices_stream_in_index_order_with_their_logprobs_once() {
        let logprobs = json!({"content": [{"token": "b", "logprob": -0.1, "bytes": [98],
            "top_logprobs": []}], "refusal": null});
        let done = parse(json!({"id": "x", "created": 1, "model": "m", "choices": [
            {"index": 1, "message": {"role": "assistant", "content": "b"}, "logprobs": logprobs,
                "finish_reason": "stop"},
            {"index": 0, "message": {"role": "assistant", "content": "a"}, "logprobs": null,
                "finish_reason": "length"}
        ]}));
        let chunks = done.to_chunks(false);
        assert_valid(&chunks);
        let choices: Vec<&ChunkChoice> = chunks.iter().map(|c| &c.choices[0]).collect();
        assert_eq!(
            choices.iter().map(|c| c.index).collect::<Vec<_>>(),
            [0, 0, 1, 1, 1]
        );
        assert_eq!(choices[0].delta["content"], "a");
        assert_eq!(
            choices[0].logprobs, None,
            "null logprobs add no opening chunk"
        );
        assert_eq!(choices[1].finish_reason.as_deref(), Some("length"));
        // A choice with logprobs opens with its role alone, as OpenAI's stream does.
        assert_eq!(
            Value::Object(choices[2].delta.clone()),
            json!({"role": "assistant"})
        );
        assert_eq!(choices[2].logprobs, None);
        assert_eq!(
            Value::Object(choices[3].delta.clone()),
            json!({"content": "b"})
        );
        assert_eq!(choices[3].logprobs.as_ref(), Some(&logprobs));
        assert_eq!(choices[4].logprobs, None, "logprobs are sent once");
        assert_eq!(choices[4].finish_reason.as_deref(), Some("stop"));
    }

    #[test]
    fn repeated_or_gapped_choice_indexes_are_replaced_by_positions() {
        for indexes in [[0, 0], [1, 2], [3, 0]] {
            let done = parse(json!({"id": "x", "model": "m", "choices": [
                {"index": indexes[0], "message": {"role": "assistant", "content": "first"}},
                {"index": indexes[1], "message": {"role": "assistant", "content": "second"}}
            ]}));
            let streamed: Vec<(u32, Value)> = done
                .to_chunks(false)
                .iter()
                .map(|c| {
                    let choice = &c.choices[0];
                    (
                        choice.index,
                        choice.delta.get("content").cloned().unwrap_or_default(),
                    )
                })
                .collect();
            assert_eq!(
                streamed,
                [
                    (0, json!("first")),
                    (0, Value::Null),
                    (1, json!("second")),
                    (1, Value::Null)
                ],
                "{indexes:?}"
            );
        }
    }

    #[test]
    fn a_refusal_and_unknown_message_fields_ride_in_the_delta() {
        let done = completion(json!({"role": "assistant", "content": null,
            "refusal": "I can't help with that.", "annotations": [],
            "reasoning_content": "thinking", "function_call": {"name": "f", "arguments": "{}"}}));
        let delta = &done.to_chunks(false)[0].choices[0].delta;
        assert_eq!(
            Value::Object(delta.clone()),
            json!({"role": "assistant", "content": null, "refusal": "I can't help with that.",
                "annotations": [], "reasoning_content": "thinking",
                "function_call": {"name": "f", "arguments": "{}"}})
        );
    }

    #[test]
    fn unknown_top_level_fields_are_sent_once_and_choice_fields_with_the_finish_reason() {
        let done = parse(json!({"id": "x", "model": "m", "service_tier": "default",
            "system_fingerprint": "fp", "provider": "p", "prompt_logprobs": [1, 2],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "a"},
                "finish_reason": "stop", "stop_reason": "\n"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2,
                "completion_tokens_details": {"reasoning_tokens": 0}}}));
        let chunks = json_of(&done.to_chunks(true));
        assert_eq!(chunks.len(), 3);
        for chunk in &chunks {
            assert_eq!(chunk["service_tier"], "default");
            assert_eq!(chunk["system_fingerprint"], "fp");
        }
        assert_eq!(chunks[0]["provider"], "p");
        assert_eq!(chunks[0]["prompt_logprobs"], json!([1, 2]));
        assert!(chunks[1].get("provider").is_none() && chunks[2].get("provider").is_none());
        assert!(chunks[0]["choices"][0].get("stop_reason").is_none());
        assert_eq!(chunks[1]["choices"][0]["stop_reason"], "\n");
        assert_eq!(
            chunks[2]["usage"]["completion_tokens_details"]["reasoning_tokens"],
            0
        );
    }

    #[test]
    fn chunks_parse_back_as_chunks() {
        let done = completion(json!({"role": "assistant", "content": "x"}));
        for chunk in done.to_chunks(true) {
            let text = serde_json::to_string(&chunk).unwrap_or_default();
            assert!(!text.contains('\n') && !text.contains('\r'), "one SSE line");
            let back: ChatCompletionChunk =
                serde_json::from_str(&text).unwrap_or_else(|e| unreachable!("a chunk parses: {e}"));
            assert_eq!(back, chunk);
        }
    }
}
