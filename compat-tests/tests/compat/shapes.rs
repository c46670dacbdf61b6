//! What the official SDKs need from a response to parse it: the fields and types of their
//! `ChatCompletion`, `ChatCompletionChunk`, `Model` page, error classes, the Files and
//! Batch APIs' objects, `CreateEmbeddingResponse`, the legacy `Completion` and its chunks,
//! and the Responses API's `Response` and stream events.

use serde_json::Value;

fn string(value: &Value, what: &str) {
    assert!(value.is_string(), "{what} must be a string: {value}");
}

fn integer(value: &Value, what: &str) {
    assert!(
        value.is_i64() || value.is_u64(),
        "{what} must be an integer: {value}"
    );
}

pub fn chat_completion(body: &Value) {
    string(&body["id"], "id");
    assert_eq!(body["object"], "chat.completion");
    integer(&body["created"], "created");
    string(&body["model"], "model");
    let choices = body["choices"].as_array().expect("choices is a list");
    assert!(!choices.is_empty());
    for choice in choices {
        integer(&choice["index"], "choices[].index");
        string(&choice["finish_reason"], "choices[].finish_reason");
        let message = &choice["message"];
        string(&message["role"], "message.role");
        assert!(
            message["content"].is_string() || message["content"].is_null(),
            "content: {message}"
        );
        if let Some(calls) = message.get("tool_calls") {
            for call in calls.as_array().expect("tool_calls is a list") {
                string(&call["id"], "tool_calls[].id");
                assert_eq!(call["type"], "function");
                string(&call["function"]["name"], "function.name");
                string(&call["function"]["arguments"], "function.arguments");
            }
        }
    }
    if let Some(usage) = body.get("usage").filter(|u| !u.is_null()) {
        for field in ["prompt_tokens", "completion_tokens", "total_tokens"] {
            integer(&usage[field], field);
        }
    }
}

/// Checks a stream's chunks and returns the content they join to.
pub fn chunk_stream(events: &[Value]) -> String {
    assert_eq!(
        events.last(),
        Some(&Value::String("[DONE]".to_owned())),
        "a stream ends with [DONE]"
    );
    let mut content = String::new();
    for chunk in &events[..events.len() - 1] {
        string(&chunk["id"], "chunk.id");
        assert_eq!(chunk["object"], "chat.completion.chunk");
        integer(&chunk["created"], "chunk.created");
        string(&chunk["model"], "chunk.model");
        for choice in chunk["choices"].as_array().expect("chunk choices") {
            integer(&choice["index"], "chunk.choices[].index");
            assert!(choice["delta"].is_object(), "delta: {choice}");
            assert!(choice["finish_reason"].is_null() || choice["finish_reason"].is_string());
            content.push_str(choice["delta"]["content"].as_str().unwrap_or_default());
        }
    }
    content
}

pub fn model_page(body: &Value) {
    assert_eq!(body["object"], "list");
    for model in body["data"].as_array().expect("data is a list") {
        string(&model["id"], "model.id");
        assert_eq!(model["object"], "model");
        integer(&model["created"], "model.created");
        string(&model["owned_by"], "model.owned_by");
    }
}

pub fn error(body: &Value) {
    let error = &body["error"];
    string(&error["message"], "error.message");
    string(&error["type"], "error.type");
    assert!(
        error.get("param").is_some() && error.get("code").is_some(),
        "{body}"
    );
}

/// Checks that `live` has every field of `recorded` (what the recording server answered, as
/// OpenAI does), each of the same JSON type where both are set: what an SDK's `FileObject`,
/// `Batch` and their pages need.
pub fn like(recorded: &Value, live: &Value, what: &str) {
    match (recorded, live) {
        (Value::Object(ours), Value::Object(theirs)) => {
            for (key, value) in ours {
                let field = theirs
                    .get(key)
                    .unwrap_or_else(|| panic!("{what}: `{key}` is missing from {live}"));
                like(value, field, &format!("{what}.{key}"));
            }
        }
        (Value::Array(ours), Value::Array(theirs)) => {
            for (ours, theirs) in ours.iter().zip(theirs) {
                like(ours, theirs, &format!("{what}[]"));
            }
        }
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_)) => {}
        _ => panic!("{what}: {live} is not of the type of {recorded}"),
    }
}

/// An embeddings `list` (`CreateEmbeddingResponse`); returns each vector as floats, decoding
/// a base64 one (little-endian `f32`s) as the SDKs do.
pub fn embedding_list(body: &Value) -> Vec<Vec<f64>> {
    assert_eq!(body["object"], "list", "{body}");
    string(&body["model"], "model");
    for field in ["prompt_tokens", "total_tokens"] {
        integer(&body["usage"][field], field);
    }
    let data = body["data"].as_array().expect("data is a list");
    data.iter()
        .enumerate()
        .map(|(index, item)| {
            assert_eq!(item["object"], "embedding");
            assert_eq!(item["index"], index, "{body}");
            match &item["embedding"] {
                Value::Array(numbers) => numbers
                    .iter()
                    .map(|n| n.as_f64().expect("a vector of numbers"))
                    .collect(),
                Value::String(encoded) => base64_floats(encoded),
                other => panic!("an embedding is a list or base64: {other}"),
            }
        })
        .collect()
}

/// Little-endian `f32`s in standard base64, as OpenAI sends `encoding_format: base64`.
fn base64_floats(encoded: &str) -> Vec<f64> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64")
        .chunks_exact(4)
        .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect()
}

/// A legacy `text_completion` (`Completion`); returns its first choice's text.
pub fn text_completion(body: &Value) -> String {
    string(&body["id"], "id");
    assert_eq!(body["object"], "text_completion", "{body}");
    integer(&body["created"], "created");
    string(&body["model"], "model");
    let choices = body["choices"].as_array().expect("choices is a list");
    assert!(!choices.is_empty());
    for choice in choices {
        integer(&choice["index"], "choices[].index");
        string(&choice["text"], "choices[].text");
        string(&choice["finish_reason"], "choices[].finish_reason");
    }
    choices[0]["text"].as_str().unwrap().to_owned()
}

/// A legacy completion stream: `text_completion` chunks, then `[DONE]`; returns the text
/// they join to.
pub fn text_completion_stream(events: &[Value]) -> String {
    assert_eq!(
        events.last(),
        Some(&Value::String("[DONE]".to_owned())),
        "a stream ends with [DONE]"
    );
    let mut text = String::new();
    for chunk in &events[..events.len() - 1] {
        string(&chunk["id"], "chunk.id");
        assert_eq!(chunk["object"], "text_completion", "{chunk}");
        integer(&chunk["created"], "chunk.created");
        for choice in chunk["choices"].as_array().expect("chunk choices") {
            integer(&choice["index"], "chunk.choices[].index");
            assert!(choice["finish_reason"].is_null() || choice["finish_reason"].is_string());
            text.push_str(choice["text"].as_str().expect("chunk text"));
        }
    }
    text
}

/// A Responses API `response` (the fields the SDKs' `Response` requires); returns what
/// their `output_text` property joins: every `output_text` part of every message.
pub fn response(body: &Value) -> String {
    string(&body["id"], "id");
    assert_eq!(body["object"], "response", "{body}");
    assert!(body["created_at"].is_number(), "created_at: {body}");
    string(&body["model"], "model");
    string(&body["status"], "status");
    assert!(body["parallel_tool_calls"].is_boolean(), "{body}");
    assert!(body["tools"].is_array(), "{body}");
    assert!(
        body["tool_choice"].is_string() || body["tool_choice"].is_object(),
        "{body}"
    );
    let mut text = String::new();
    for item in body["output"].as_array().expect("output is a list") {
        string(&item["type"], "output[].type");
        if item["type"] != "message" {
            continue;
        }
        string(&item["id"], "output[].id");
        assert_eq!(item["role"], "assistant");
        string(&item["status"], "output[].status");
        for part in item["content"].as_array().expect("content is a list") {
            if part["type"] == "output_text" {
                assert!(part["annotations"].is_array(), "{part}");
                text.push_str(part["text"].as_str().expect("output_text.text"));
            }
        }
    }
    if body["status"] == "completed" {
        let usage = &body["usage"];
        for field in ["input_tokens", "output_tokens", "total_tokens"] {
            integer(&usage[field], field);
        }
        integer(
            &usage["input_tokens_details"]["cached_tokens"],
            "cached_tokens",
        );
        integer(
            &usage["output_tokens_details"]["reasoning_tokens"],
            "reasoning_tokens",
        );
    }
    text
}

/// A Responses event stream, as `{"event", "data"}` pairs: each event named in its `event:`
/// line and its data's `type`, numbered from 0, opening with `response.created` and ending
/// with `response.completed`, and no `[DONE]`. Returns the text the
/// `response.output_text.delta` events join to and the completed response.
pub fn response_events(events: &[Value]) -> (String, Value) {
    assert!(!events.is_empty(), "a stream has events");
    let mut text = String::new();
    for (number, event) in events.iter().enumerate() {
        let (name, data) = (&event["event"], &event["data"]);
        string(name, "event");
        assert_eq!(&data["type"], name, "{event}");
        assert_eq!(data["sequence_number"], number, "{event}");
        if name == "response.output_text.delta" {
            string(&data["item_id"], "delta.item_id");
            integer(&data["output_index"], "delta.output_index");
            integer(&data["content_index"], "delta.content_index");
            text.push_str(data["delta"].as_str().expect("delta"));
        }
    }
    assert_eq!(events[0]["event"], "response.created");
    assert_eq!(events[0]["data"]["response"]["status"], "in_progress");
    let last = events.last().unwrap();
    assert_eq!(last["event"], "response.completed");
    let done = last["data"]["response"].clone();
    assert_eq!(response(&done), text, "the deltas join to the output text");
    (text, done)
}

#[test]
fn base64_vectors_decode_as_little_endian_f32s() {
    // 1.0 is 0x3f800000 and 0.5 is 0x3f000000, sent least significant byte first.
    assert_eq!(base64_floats("AACAPwAAAD8="), [1.0, 0.5]);
    assert_eq!(base64_floats("AAAAwA=="), [-2.0]);
}
