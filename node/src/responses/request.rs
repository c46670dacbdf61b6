//! A `POST /v1/responses` body as a `POST /v1/chat/completions` body, for an upstream with
//! no Responses route. Shapes follow OpenAI's API reference (Responses: `input` items,
//! `tools`, `tool_choice`, `text.format`; Chat: `messages`, `tool_calls`, `response_format`).
//! What chat cannot say is refused by name, never dropped in silence.

use super::unsupported;
use crate::upstream::UpstreamError;
use serde_json::{Map, Value, json};

/// Fields copied to chat as they are: both APIs spell and mean them alike.
const SAME_IN_CHAT: [&str; 8] = [
    "temperature",
    "top_p",
    "parallel_tool_calls",
    "user",
    "seed",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
];

/// Fields left behind: the gateway's business (`background`, `previous_response_id`, which
/// it has expanded into `input`, `store`), answers asked whole (`stream`), or refused by
/// chat servers such as llama.cpp's while meaning nothing to the model (`metadata`).
const DROPPED: [&str; 6] = [
    "background",
    "previous_response_id",
    "store",
    "stream",
    "stream_options",
    "metadata",
];

/// The chat body for `request`, with `model` set to the upstream's name, or the refusal of
/// the first field chat cannot express.
pub fn to_chat(
    request: &Map<String, Value>,
    model: &str,
) -> Result<Map<String, Value>, UpstreamError> {
    let mut chat = Map::new();
    chat.insert("model".to_owned(), Value::String(model.to_owned()));
    let mut messages = Vec::new();
    if let Some(instructions) = present(request, "instructions") {
        let text = instructions
            .as_str()
            .ok_or_else(|| unsupported("instructions", "`instructions` that are not a string"))?;
        messages.push(json!({"role": "system", "content": text}));
    }
    match present(request, "input") {
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                push_item(&mut messages, item, &format!("input[{index}]"))?;
            }
        }
        Some(_) => {
            return Err(unsupported(
                "input",
                "an `input` that is neither a string nor a list of items",
            ));
        }
        None => {}
    }
    chat.insert("messages".to_owned(), Value::Array(messages));
    for (key, value) in request {
        if value.is_null() || DROPPED.contains(&key.as_str()) {
            continue;
        }
        match key.as_str() {
            "model" | "input" | "instructions" => {}
            "tools" => {
                chat.insert(key.clone(), tools(value)?);
            }
            "tool_choice" => {
                chat.insert(key.clone(), tool_choice(value)?);
            }
            "max_output_tokens" => {
                chat.insert("max_tokens".to_owned(), value.clone());
            }
            "text" => text(value, &mut chat)?,
            "truncation" if value == "disabled" => {}
            "include" if value.as_array().is_some_and(Vec::is_empty) => {}
            "reasoning"
                if value
                    .as_object()
                    .is_some_and(|r| r.values().all(Value::is_null)) => {}
            key if SAME_IN_CHAT.contains(&key) => {
                chat.insert(key.to_owned(), value.clone());
            }
            // `reasoning`, `include`, `conversation`, `prompt`, `truncation: "auto"`,
            // `top_logprobs`, `max_tool_calls` and whatever OpenAI adds next.
            other => return Err(unsupported(other, &format!("`{other}`"))),
        }
    }
    chat.insert("stream".to_owned(), Value::Bool(false));
    Ok(chat)
}

/// A request field that is there and not `null`.
fn present<'a>(request: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    request.get(key).filter(|v| !v.is_null())
}

/// Appends one `input` item as chat messages. Consecutive `function_call` items (and one
/// that follows an assistant message) join a single assistant message's `tool_calls`, as
/// chat expects one assistant turn per model answer.
fn push_item(messages: &mut Vec<Value>, item: &Value, param: &str) -> Result<(), UpstreamError> {
    let field = |name: &str| format!("{param}.{name}");
    let kind = item["type"]
        .as_str()
        .unwrap_or(if item.get("role").is_some() {
            "message"
        } else {
            ""
        });
    match kind {
        "message" => {
            let role = match item["role"].as_str() {
                Some(role @ ("user" | "assistant" | "system" | "developer")) => role,
                _ => {
                    return Err(unsupported(
                        &field("role"),
                        "a message `role` other than user, assistant, system or developer",
                    ));
                }
            };
            let content = content(&item["content"], &field("content"))?;
            messages.push(json!({"role": role, "content": content}));
        }
        "function_call" => {
            let call = json!({
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            });
            let joins = messages.last().is_some_and(|m| m["role"] == "assistant");
            match messages.last_mut().filter(|_| joins) {
                Some(Value::Object(last)) => match last.get_mut("tool_calls") {
                    Some(Value::Array(calls)) => calls.push(call),
                    _ => {
                        last.insert("tool_calls".to_owned(), json!([call]));
                    }
                },
                _ => messages
                    .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        "function_call_output" => {
            let output = match &item["output"] {
                Value::String(text) => text.clone(),
                parts => match content(parts, &field("output"))? {
                    Value::String(text) => text,
                    _ => {
                        return Err(unsupported(
                            &field("output"),
                            "a tool output that is not text",
                        ));
                    }
                },
            };
            messages
                .push(json!({"role": "tool", "tool_call_id": item["call_id"], "content": output}));
        }
        // A model's hidden reasoning from an earlier turn: chat has no place for it, and the
        // turn's answer, which follows it, still says what the model concluded.
        "reasoning" => {}
        _ => {
            return Err(unsupported(
                &field("type"),
                &format!("an input item of type `{kind}`"),
            ));
        }
    }
    Ok(())
}

/// A message's content: a string as it is; parts as one string when all are text (which
/// every chat server takes), else as chat's `text` and `image_url` parts.
fn content(content: &Value, param: &str) -> Result<Value, UpstreamError> {
    let parts = match content {
        Value::String(_) => return Ok(content.clone()),
        Value::Array(parts) => parts,
        _ => {
            return Err(unsupported(
                param,
                "content that is neither a string nor a list of parts",
            ));
        }
    };
    let mut chat_parts = Vec::with_capacity(parts.len());
    for (index, part) in parts.iter().enumerate() {
        let at = |name: &str| format!("{param}[{index}].{name}");
        let kind = part["type"].as_str().unwrap_or_default();
        chat_parts.push(match kind {
            "input_text" | "output_text" | "text" => json!({"type": "text", "text": part["text"]}),
            "refusal" => json!({"type": "text", "text": part["refusal"]}),
            "input_image" => {
                let Some(url) = part["image_url"].as_str() else {
                    return Err(unsupported(&at("file_id"), "an image given by `file_id`"));
                };
                let mut image = json!({"url": url});
                if let Some(detail) = part["detail"].as_str() {
                    image["detail"] = json!(detail);
                }
                json!({"type": "image_url", "image_url": image})
            }
            _ => {
                return Err(unsupported(
                    &at("type"),
                    &format!("a content part of type `{kind}`"),
                ));
            }
        });
    }
    if chat_parts.iter().all(|p| p["type"] == "text") {
        let texts: Vec<&str> = chat_parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect();
        return Ok(Value::String(texts.join("\n")));
    }
    Ok(Value::Array(chat_parts))
}

/// Function tools in chat's nesting; built-in tools (`web_search`, `file_search`,
/// `code_interpreter`, `computer_use_preview`, …) run at OpenAI and have no chat form.
fn tools(tools: &Value) -> Result<Value, UpstreamError> {
    let Some(tools) = tools.as_array() else {
        return Err(unsupported("tools", "`tools` that are not a list"));
    };
    let mut chat = Vec::with_capacity(tools.len());
    for (index, tool) in tools.iter().enumerate() {
        let kind = tool["type"].as_str().unwrap_or_default();
        if kind != "function" {
            return Err(unsupported(
                &format!("tools[{index}].type"),
                &format!("a tool of type `{kind}`"),
            ));
        }
        let mut function = Map::new();
        for key in ["name", "description", "parameters", "strict"] {
            if let Some(value) = tool.get(key).filter(|v| !v.is_null()) {
                function.insert(key.to_owned(), value.clone());
            }
        }
        chat.push(json!({"type": "function", "function": function}));
    }
    Ok(Value::Array(chat))
}

/// `"auto"`, `"none"` and `"required"` as they are; `{"type":"function","name"}` nested.
fn tool_choice(choice: &Value) -> Result<Value, UpstreamError> {
    match choice {
        Value::String(mode) if matches!(mode.as_str(), "auto" | "none" | "required") => {
            Ok(choice.clone())
        }
        Value::Object(forced) if forced.get("type") == Some(&json!("function")) => {
            Ok(json!({"type": "function", "function": {"name": forced.get("name")}}))
        }
        _ => Err(unsupported(
            "tool_choice",
            &format!("the tool choice `{choice}`"),
        )),
    }
}

/// `text.format` as chat's `response_format`, and `text.verbosity` as chat's `verbosity`.
fn text(text: &Value, chat: &mut Map<String, Value>) -> Result<(), UpstreamError> {
    if let Some(verbosity) = text.get("verbosity").filter(|v| !v.is_null()) {
        chat.insert("verbosity".to_owned(), verbosity.clone());
    }
    let Some(format) = text.get("format").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let format = match format["type"].as_str() {
        Some("text") => json!({"type": "text"}),
        Some("json_object") => json!({"type": "json_object"}),
        Some("json_schema") => {
            let mut schema = Map::new();
            for key in ["name", "schema", "description", "strict"] {
                if let Some(value) = format.get(key).filter(|v| !v.is_null()) {
                    schema.insert(key.to_owned(), value.clone());
                }
            }
            json!({"type": "json_schema", "json_schema": schema})
        }
        _ => {
            return Err(unsupported(
                "text.format.type",
                &format!("the text format `{}`", format["type"]),
            ));
        }
    };
    chat.insert("response_format".to_owned(), format);
    Ok(())
}
