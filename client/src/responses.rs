//! OpenAI's Responses API (`POST /v1/responses`), as the Rust user library sends it and reads
//! its answer: the request, and the `response` object.
//!
//! As in `chat`, each struct names only the fields the library reads and keeps every other
//! field in `extra`, so that a body survives a round trip unchanged.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /v1/responses`. Only `model` and `input` are required; every other field
/// (`instructions`, `max_output_tokens`, `tools`, `background`, ...) is kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseRequest {
    pub model: String,
    /// A text, or an array of input items (`{"role": "user", "content": ...}`, ...); kept as
    /// JSON so that the gateway can say what is wrong with a bad one.
    pub input: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ResponseRequest {
    /// A request answering one text.
    pub fn new(model: impl Into<String>, input: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            input: Value::String(input.into()),
            extra: Map::new(),
        }
    }

    /// A request answering input items, in order.
    pub fn items(model: impl Into<String>, items: Vec<Value>) -> Self {
        Self {
            model: model.into(),
            input: Value::Array(items),
            extra: Map::new(),
        }
    }

    /// Sets any other field of OpenAI's request.
    #[must_use]
    pub fn field(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(name.to_owned(), value.into());
        self
    }

    #[must_use]
    pub fn instructions(self, instructions: impl Into<String>) -> Self {
        self.field("instructions", instructions.into())
    }

    #[must_use]
    pub fn max_output_tokens(self, tokens: u32) -> Self {
        self.field("max_output_tokens", tokens)
    }
}

/// A `response` object (`"object": "response"`), read leniently: what a server leaves out
/// gets a default, and unknown fields are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// `resp_...`; at this gateway, also the id of the response's job.
    #[serde(default)]
    pub id: String,
    #[serde(default = "response")]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created_at: i64,
    /// `queued`, `in_progress`, `completed`, `incomplete`, `failed` or `cancelled`.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub model: String,
    /// The output items: messages (`"type": "message"`, their text in `content` parts of
    /// `"type": "output_text"`), function calls, ...
    #[serde(default)]
    pub output: Vec<Value>,
    /// `input_tokens`, `output_tokens` and `total_tokens`, once it has run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn response() -> String {
    "response".to_owned()
}

impl Response {
    /// The text of every `output_text` part of every output message, joined, as OpenAI's
    /// SDKs give it (`response.output_text`).
    pub fn output_text(&self) -> String {
        self.output
            .iter()
            .filter(|item| item["type"] == "message")
            .filter_map(|item| item["content"].as_array())
            .flatten()
            .filter(|part| part["type"] == "output_text")
            .filter_map(|part| part["text"].as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_response_gives_its_output_text_and_keeps_unknown_fields() {
        let answer = json!({"id": "resp_1", "object": "response", "created_at": 7,
            "status": "completed", "model": "m", "background": true, "output": [
                {"type": "reasoning", "summary": []},
                {"type": "message", "role": "assistant", "content": [
                    {"type": "output_text", "text": "Hello, ", "annotations": []},
                    {"type": "refusal", "refusal": "no"},
                    {"type": "output_text", "text": "world", "annotations": []}]}],
            "usage": {"input_tokens": 2, "output_tokens": 2, "total_tokens": 4}});
        let response: Response = serde_json::from_value(answer.clone()).unwrap();
        assert_eq!(response.output_text(), "Hello, world");
        assert_eq!(serde_json::to_value(&response).unwrap(), answer);
        let bare: Response = serde_json::from_value(json!({"id": "resp_2"})).unwrap();
        assert_eq!(
            (bare.object.as_str(), bare.output_text()),
            ("response", String::new())
        );
        let request = ResponseRequest::items("m", vec![json!({"role": "user", "content": "hi"})])
            .instructions("Be brief.")
            .max_output_tokens(16);
        assert_eq!(
            serde_json::to_value(request).unwrap(),
            json!({"model": "m", "input": [{"role": "user", "content": "hi"}],
                "instructions": "Be brief.", "max_output_tokens": 16})
        );
    }
}
