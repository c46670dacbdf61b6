//! What the official SDKs need from a response to parse it: the fields and types of their
//! `ChatCompletion`, `ChatCompletionChunk`, `Model` page, error classes, and the Files and
//! Batch APIs' objects.

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
