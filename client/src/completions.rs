//! OpenAI's legacy `POST /v1/completions`: the request, the `text_completion`, and its
//! replay as the chunks a streaming server sends.
//!
//! As in `chat`, each struct names only the fields OpenBeepBoop reads and keeps every
//! other field in `extra`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /v1/completions`. Only `model` and `prompt` are required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    /// A string, an array of strings, a token array or an array of token arrays; kept as
    /// JSON so that the gateway can say what is wrong with a bad one.
    pub prompt: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl CompletionRequest {
    pub fn new(model: impl Into<String>, prompt: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            prompt: Value::String(prompt.into()),
            stream: None,
            extra: Map::new(),
        }
    }
}

/// A `text_completion`, read leniently: what a server leaves out gets a default, and
/// unknown fields are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextCompletion {
    #[serde(default)]
    pub id: String,
    #[serde(default = "text_completion")]
    pub object: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<TextChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn text_completion() -> String {
    "text_completion".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextChoice {
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub logprobs: Option<Value>,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl TextCompletion {
    /// Replays a finished completion as the chunks OpenAI's legacy stream sends: each is a
    /// `text_completion` object. Each choice, in index order, gets one chunk with its whole
    /// `text` (and its `logprobs`), then one with empty text and its `finish_reason`
    /// (`stop` when the upstream named none). `system_fingerprint` and `service_tier` are on
    /// every chunk, as OpenAI sends them; other unknown top-level fields ride on the first
    /// chunk only. Usage comes last, in a chunk with no choices, when `include_usage`
    /// asks for it, as `stream_options` does.
    pub fn to_chunks(&self, include_usage: bool) -> Vec<TextCompletion> {
        let (every, mut once): (Map<String, Value>, Map<String, Value>) = self
            .extra
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .partition(|(key, _)| crate::replay::EVERY_CHUNK.contains(&key.as_str()));
        let mut chunk = |choices: Vec<TextChoice>, usage: Option<Value>| {
            let mut extra = every.clone();
            extra.append(&mut once);
            TextCompletion {
                id: self.id.clone(),
                object: text_completion(),
                created: self.created,
                model: self.model.clone(),
                choices,
                usage,
                extra,
            }
        };
        let mut sorted: Vec<&TextChoice> = self.choices.iter().collect();
        sorted.sort_by_key(|choice| choice.index);
        let mut chunks = Vec::with_capacity(sorted.len() * 2 + 1);
        for choice in sorted {
            let text = TextChoice {
                text: choice.text.clone(),
                index: choice.index,
                logprobs: choice.logprobs.clone(),
                finish_reason: None,
                extra: Map::new(),
            };
            chunks.push(chunk(vec![text], None));
            let finish = TextChoice {
                text: String::new(),
                index: choice.index,
                logprobs: None,
                finish_reason: Some(
                    choice
                        .finish_reason
                        .clone()
                        .unwrap_or_else(|| "stop".to_owned()),
                ),
                extra: choice.extra.clone(),
            };
            chunks.push(chunk(vec![finish], None));
        }
        if include_usage {
            chunks.push(chunk(Vec::new(), self.usage.clone()));
        }
        chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_completion_replays_as_text_then_finish_per_choice_and_usage_last() {
        let completion: TextCompletion = serde_json::from_value(json!({
            "id": "cmpl-1", "object": "text_completion", "created": 7, "model": "m",
            "system_fingerprint": "fp", "odd": 1,
            "choices": [
                {"text": " world", "index": 1, "logprobs": null, "finish_reason": "length"},
                {"text": "hello", "index": 0, "logprobs": null}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
        }))
        .unwrap();
        let chunks = completion.to_chunks(true);
        let texts: Vec<(u32, &str, Option<&str>)> = chunks
            .iter()
            .flat_map(|c| &c.choices)
            .map(|c| (c.index, c.text.as_str(), c.finish_reason.as_deref()))
            .collect();
        assert_eq!(
            texts,
            vec![
                (0, "hello", None),
                (0, "", Some("stop")),
                (1, " world", None),
                (1, "", Some("length")),
            ]
        );
        assert!(chunks.iter().all(|c| c.object == "text_completion"));
        assert_eq!(chunks[0].extra["system_fingerprint"], "fp");
        assert_eq!(
            chunks[1].extra["system_fingerprint"], "fp",
            "on every chunk"
        );
        assert_eq!(chunks[0].extra["odd"], 1);
        assert!(
            !chunks[1].extra.contains_key("odd"),
            "unknown fields ride once"
        );
        let last = chunks.last().unwrap();
        assert!(last.choices.is_empty());
        assert_eq!(last.usage.as_ref().unwrap()["total_tokens"], 3);
        assert!(
            completion
                .to_chunks(false)
                .iter()
                .all(|c| c.usage.is_none())
        );
    }
}
