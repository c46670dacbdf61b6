//! OpenAI chat shapes: the request, the completion, its stream chunks and the model list.
//!
//! Each struct names only the fields OpenBeepBoop reads and keeps every other field in
//! `extra`, so that a body survives a round trip through these types unchanged.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /v1/chat/completions`. Only `model` and `messages` are required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatCompletionRequest {
    /// A request for `model` with these messages; add optional fields with the builders.
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
        Self {
            model: model.into(),
            messages,
            stream: None,
            metadata: None,
            extra: Map::new(),
        }
    }

    /// Sets any OpenAI field by name (`tools`, `response_format`, `n`, ...).
    #[must_use]
    pub fn field(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(name.to_owned(), value.into());
        self
    }

    #[must_use]
    pub fn temperature(self, temperature: f64) -> Self {
        self.field("temperature", temperature)
    }

    #[must_use]
    pub fn max_completion_tokens(self, tokens: u32) -> Self {
        self.field("max_completion_tokens", tokens)
    }

    #[must_use]
    pub fn seed(self, seed: i64) -> Self {
        self.field("seed", seed)
    }

    /// Adds a `metadata` entry; OpenAI metadata values are strings.
    #[must_use]
    pub fn metadata(mut self, key: &str, value: impl Into<String>) -> Self {
        self.metadata
            .get_or_insert_with(Map::new)
            .insert(key.to_owned(), Value::String(value.into()));
        self
    }
}

/// One message of a request or of a completion's choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    /// A string, an array of content parts, or `null` (an assistant turn with tool calls).
    #[serde(default)]
    pub content: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: Some(Value::String(content.into())),
            extra: Map::new(),
        }
    }

    /// The text of the message when its content is a plain string.
    pub fn text(&self) -> Option<&str> {
        self.content.as_ref().and_then(Value::as_str)
    }
}

/// A finished completion as an OpenAI-compatible server returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    #[serde(default = "completion_object")]
    pub object: String,
    #[serde(default)]
    pub created: i64,
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn completion_object() -> String {
    "chat.completion".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub index: u32,
    pub message: ChatMessage,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One `chat.completion.chunk` event of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Map<String, Value>,
    pub logprobs: Option<Value>,
    pub finish_reason: Option<String>,
}

impl ChatCompletion {
    /// Replays a finished completion as the chunks a streaming server would have sent.
    ///
    /// Each choice gets a chunk with its role and whole content (and tool calls, each with
    /// its `index`), then a chunk with its finish reason. Usage comes last, in a chunk with
    /// no choices, when `include_usage` asks for it, as OpenAI's `stream_options` does.
    pub fn to_chunks(&self, include_usage: bool) -> Vec<ChatCompletionChunk> {
        let mut extra = Map::new();
        if let Some(fingerprint) = self.extra.get("system_fingerprint") {
            extra.insert("system_fingerprint".to_owned(), fingerprint.clone());
        }
        let chunk = |choices: Vec<ChunkChoice>, usage: Option<Usage>| ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            extra: extra.clone(),
        };
        let mut chunks = Vec::with_capacity(self.choices.len() * 2 + 1);
        for choice in &self.choices {
            let mut delta = Map::new();
            delta.insert(
                "role".to_owned(),
                Value::String(choice.message.role.clone()),
            );
            delta.insert(
                "content".to_owned(),
                choice.message.content.clone().unwrap_or(Value::Null),
            );
            for (key, value) in &choice.message.extra {
                if key == "tool_calls" {
                    delta.insert(key.clone(), indexed_tool_calls(value));
                } else {
                    delta.insert(key.clone(), value.clone());
                }
            }
            let logprobs = choice.extra.get("logprobs").cloned();
            chunks.push(chunk(
                vec![ChunkChoice {
                    index: choice.index,
                    delta,
                    logprobs,
                    finish_reason: None,
                }],
                None,
            ));
            chunks.push(chunk(
                vec![ChunkChoice {
                    index: choice.index,
                    delta: Map::new(),
                    logprobs: None,
                    finish_reason: Some(
                        choice
                            .finish_reason
                            .clone()
                            .unwrap_or_else(|| "stop".to_owned()),
                    ),
                }],
                None,
            ));
        }
        if include_usage {
            chunks.push(chunk(Vec::new(), self.usage.clone()));
        }
        chunks
    }
}

/// Stream deltas of tool calls carry an `index`; complete messages do not.
fn indexed_tool_calls(calls: &Value) -> Value {
    match calls {
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, call)| {
                    let mut call = call.clone();
                    if let Value::Object(fields) = &mut call {
                        fields.entry("index").or_insert(Value::from(i));
                    }
                    call
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<Model>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub owned_by: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn completion(message: Value) -> ChatCompletion {
        serde_json::from_value(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "m",
            "system_fingerprint": "fp",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        }))
        .unwrap_or_else(|e| unreachable!("fixture parses: {e}"))
    }

    #[test]
    fn chunks_carry_content_tool_call_indexes_finish_reason_and_usage() {
        let done = completion(json!({"role": "assistant", "content": null,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}));
        let chunks = done.to_chunks(true);
        assert_eq!(chunks.len(), 3);
        assert_eq!(
            chunks[0].choices[0].delta["tool_calls"][0]["index"],
            json!(0)
        );
        assert_eq!(chunks[0].extra["system_fingerprint"], json!("fp"));
        assert_eq!(
            chunks[1].choices[0].finish_reason.as_deref(),
            Some("tool_calls")
        );
        assert!(chunks[2].choices.is_empty());
        assert_eq!(chunks[2].usage.as_ref().map(|u| u.total_tokens), Some(5));
        assert_eq!(done.to_chunks(false).len(), 2);
    }

    #[test]
    fn unknown_request_fields_survive_a_round_trip() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi", "name": "a"}],
            "temperature": 0.2, "tools": [{"type": "function"}], "seed": 4});
        let parsed: ChatCompletionRequest = serde_json::from_value(body.clone())
            .unwrap_or_else(|e| unreachable!("fixture parses: {e}"));
        assert_eq!(parsed.messages[0].text(), Some("hi"));
        assert_eq!(serde_json::to_value(&parsed).ok(), Some(body));
    }
}
