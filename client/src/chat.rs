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
    #[serde(default)]
    pub id: String,
    #[serde(default = "completion_object")]
    pub object: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub model: String,
    /// Read leniently, as servers differ: see [`choices_in_order`].
    #[serde(deserialize_with = "choices_in_order")]
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn completion_object() -> String {
    "chat.completion".to_owned()
}

/// The choices of a completion, filling in what some OpenAI-compatible servers leave out: a
/// choice's `index` that is missing or not a number becomes its position in the list, and a
/// missing `message` or message `role` becomes an `assistant` message. `ChatMessage` itself
/// stays strict, since requests must name their roles.
fn choices_in_order<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Choice>, D::Error> {
    let raw = Vec::<Map<String, Value>>::deserialize(deserializer)?;
    raw.into_iter()
        .enumerate()
        .map(|(position, mut choice)| {
            let index = choice.get("index").and_then(Value::as_u64);
            if index.is_none_or(|i| u32::try_from(i).is_err()) {
                choice.insert("index".to_owned(), Value::from(position));
            }
            let message = choice.entry("message").or_insert(Value::Null);
            if message.is_null() {
                *message = Value::Object(Map::from_iter([("content".to_owned(), Value::Null)]));
            }
            if let Value::Object(message) = message
                && !message.get("role").is_some_and(Value::is_string)
            {
                message.insert("role".to_owned(), Value::String("assistant".to_owned()));
            }
            serde_json::from_value(Value::Object(choice)).map_err(serde::de::Error::custom)
        })
        .collect()
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
    #[serde(default)]
    pub logprobs: Option<Value>,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
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

    #[test]
    fn a_completion_without_indexes_or_roles_parses_but_a_request_message_needs_a_role() {
        let completion: ChatCompletion = serde_json::from_value(json!({
            "choices": [{"message": {"content": "a"}}, {"index": 7}, {"index": -1}]
        }))
        .unwrap_or_else(|e| unreachable!("completion parses: {e}"));
        let read: Vec<(u32, &str, Option<&str>)> = completion
            .choices
            .iter()
            .map(|c| (c.index, c.message.role.as_str(), c.message.text()))
            .collect();
        assert_eq!(
            read,
            [
                (0, "assistant", Some("a")),
                (7, "assistant", None),
                (2, "assistant", None)
            ]
        );
        assert_eq!(
            (completion.id.as_str(), completion.model.as_str()),
            ("", "")
        );
        let no_choices = serde_json::from_value::<ChatCompletion>(json!({"id": "x", "model": "m"}));
        assert!(
            no_choices.is_err(),
            "a body without choices is no completion"
        );
        let request = json!({"model": "m", "messages": [{"content": "hi"}]});
        assert!(serde_json::from_value::<ChatCompletionRequest>(request).is_err());
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
