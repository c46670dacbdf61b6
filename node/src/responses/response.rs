//! A chat completion as an OpenAI Responses `response` object (API reference: "The response
//! object"; openai-python `types/responses/response.py`, `response_output_message.py`,
//! `response_function_tool_call.py`, `response_usage.py`).

use serde_json::{Map, Value, json};

/// The `response` for `chat`, the answer to the chat translation of `request`:
/// ```text
/// {"id":"resp_…","object":"response","created_at","status":"completed"|"incomplete",
///  "incomplete_details":null|{"reason"},"error":null,"model",
///  "output":[{"type":"message","id":"msg_…","status","role":"assistant",
///             "content":[{"type":"output_text","text","annotations":[]}]},
///            {"type":"function_call","id":"fc_…","call_id","name","arguments","status"}],
///  "usage":{"input_tokens","input_tokens_details":{"cached_tokens"},"output_tokens",
///           "output_tokens_details":{"reasoning_tokens"},"total_tokens"},
///  …and the request's settings echoed: instructions, tools, tool_choice, temperature,
///  top_p, max_output_tokens, parallel_tool_calls, text, truncation, metadata, user}
/// ```
/// Only the first choice counts: the Responses API has no `n`.
pub fn from_chat(request: &Map<String, Value>, chat: &Value) -> Value {
    let choice = &chat["choices"][0];
    let message = &choice["message"];
    let mut output = Vec::new();
    let mut content = Vec::new();
    let text = match &message["content"] {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        _ => String::new(),
    };
    if !text.is_empty() {
        content.push(json!({"type": "output_text", "text": text, "annotations": []}));
    }
    if let Some(refusal) = message["refusal"].as_str() {
        content.push(json!({"type": "refusal", "refusal": refusal}));
    }
    if !content.is_empty() {
        output.push(json!({
            "type": "message", "id": id("msg"), "status": "completed",
            "role": "assistant", "content": content,
        }));
    }
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        output.push(json!({
            "type": "function_call", "id": id("fc"), "call_id": call["id"],
            "name": call["function"]["name"], "arguments": call["function"]["arguments"],
            "status": "completed",
        }));
    }
    let incomplete = match choice["finish_reason"].as_str() {
        Some("length") => Some("max_output_tokens"),
        Some("content_filter") => Some("content_filter"),
        _ => None,
    };
    let echoed = |key: &str, default: Value| {
        request
            .get(key)
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or(default)
    };
    let created_at = chat["created"].as_u64().unwrap_or_else(now);
    let model = chat
        .get("model")
        .filter(|m| m.is_string())
        .or_else(|| request.get("model"));
    json!({
        "id": id("resp"),
        "object": "response",
        "created_at": created_at,
        "status": if incomplete.is_some() { "incomplete" } else { "completed" },
        "incomplete_details": incomplete.map(|reason| json!({"reason": reason})),
        "error": null,
        "model": model,
        "output": output,
        "usage": usage(&chat["usage"]),
        "instructions": echoed("instructions", Value::Null),
        "tools": echoed("tools", json!([])),
        "tool_choice": echoed("tool_choice", json!("auto")),
        "temperature": echoed("temperature", Value::Null),
        "top_p": echoed("top_p", Value::Null),
        "max_output_tokens": echoed("max_output_tokens", Value::Null),
        "parallel_tool_calls": echoed("parallel_tool_calls", json!(true)),
        "text": echoed("text", json!({"format": {"type": "text"}})),
        "truncation": echoed("truncation", json!("disabled")),
        "metadata": echoed("metadata", json!({})),
        "user": echoed("user", Value::Null),
        "previous_response_id": null,
    })
}

/// Chat's `prompt_tokens`/`completion_tokens` and their details under the Responses names.
fn usage(chat: &Value) -> Value {
    let count = |value: &Value| value.as_u64().unwrap_or(0);
    let input = count(&chat["prompt_tokens"]);
    let output = count(&chat["completion_tokens"]);
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": count(&chat["prompt_tokens_details"]["cached_tokens"])},
        "output_tokens": output,
        "output_tokens_details": {
            "reasoning_tokens": count(&chat["completion_tokens_details"]["reasoning_tokens"])
        },
        "total_tokens": chat["total_tokens"].as_u64().unwrap_or(input + output),
    })
}

/// An id with OpenAI's prefix for its kind (`resp`, `msg`, `fc`) and 128 random bits.
fn id(prefix: &str) -> String {
    format!("{prefix}_{:032x}", rand::random::<u128>())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
