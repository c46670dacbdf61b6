//! OpenAI's `POST /v1/embeddings`: the request, its `input` read into one of the four
//! shapes OpenAI accepts, and the answer (a list of embeddings).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /v1/embeddings`. Only `model` and `input` are required; every other field
/// (`encoding_format`, `dimensions`, `user`, ...) is kept in `extra`, so the body survives a
/// round trip unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingRequest {
    pub model: String,
    /// Kept as JSON: [`EmbeddingInput::read`] says what is wrong with a bad one.
    pub input: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl EmbeddingRequest {
    /// A request embedding one text.
    pub fn new(model: impl Into<String>, input: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            input: Value::String(input.into()),
            extra: Map::new(),
        }
    }

    /// A request embedding several texts, answered in their order.
    pub fn many(model: impl Into<String>, inputs: Vec<String>) -> Self {
        Self {
            model: model.into(),
            input: Value::from(inputs),
            extra: Map::new(),
        }
    }

    /// Sets any other field of OpenAI's request (`dimensions`, `encoding_format`, `user`).
    #[must_use]
    pub fn field(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(name.to_owned(), value.into());
        self
    }
}

/// OpenAI's answer to `POST /v1/embeddings` (`"object": "list"`): one embedding per input,
/// `data[i]` for input `i`. Read leniently: what a server leaves out gets a default, and
/// unknown fields are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingList {
    #[serde(default = "list")]
    pub object: String,
    #[serde(default)]
    pub data: Vec<Embedding>,
    #[serde(default)]
    pub model: String,
    /// `prompt_tokens` and `total_tokens`; absent from some servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<EmbeddingUsage>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn list() -> String {
    "list".to_owned()
}

/// One input's embedding (`"object": "embedding"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// The input's position in the request's `input`, from 0.
    #[serde(default)]
    pub index: u32,
    pub embedding: EmbeddingVector,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A vector as `encoding_format` asked: floats (`float`, the default), or the base64 of
/// little-endian `f32`s (`base64`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f64>),
    Base64(String),
}

impl EmbeddingVector {
    /// The floats of a `float` vector; `None` for a base64 one.
    pub fn as_floats(&self) -> Option<&[f64]> {
        match self {
            Self::Float(values) => Some(values),
            Self::Base64(_) => None,
        }
    }
}

/// Tokens an embeddings call read: `prompt_tokens`, and `total_tokens`, which is the same.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

/// The four shapes of `input`: one text, texts, one token array, token arrays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbeddingInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenArrays(Vec<Vec<u32>>),
}

/// Why an `input` is refused: the message, and the field at fault (`input[2]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub message: String,
    pub param: String,
}

impl EmbeddingInput {
    /// OpenAI's limit on the inputs of one request.
    pub const MAX_ITEMS: usize = 2048;

    /// Reads `input` as OpenAI does: a non-empty string, a non-empty array of non-empty
    /// strings, a non-empty array of token ids, or a non-empty array of non-empty token
    /// arrays; at most [`Self::MAX_ITEMS`] items.
    pub fn read(input: &Value) -> Result<Self, InputError> {
        let refuse = |message: String, param: String| InputError { message, param };
        let token = |value: &Value| value.as_u64().and_then(|t| u32::try_from(t).ok());
        match input {
            Value::String(text) if text.is_empty() => Err(refuse(
                "`input` must not be an empty string".to_owned(),
                "input".to_owned(),
            )),
            Value::String(text) => Ok(Self::Text(text.clone())),
            Value::Array(items) if items.is_empty() => Err(refuse(
                "`input` must not be an empty array".to_owned(),
                "input".to_owned(),
            )),
            Value::Array(items) if items.len() > Self::MAX_ITEMS => Err(refuse(
                format!(
                    "`input` has {} items; at most {} are allowed",
                    items.len(),
                    Self::MAX_ITEMS
                ),
                "input".to_owned(),
            )),
            Value::Array(items) => match &items[0] {
                Value::String(_) => items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| match item {
                        Value::String(text) if !text.is_empty() => Ok(text.clone()),
                        Value::String(_) => Err(refuse(
                            "an input text must not be empty".to_owned(),
                            format!("input[{i}]"),
                        )),
                        _ => Err(refuse(
                            "an array of texts must hold only strings".to_owned(),
                            format!("input[{i}]"),
                        )),
                    })
                    .collect::<Result<_, _>>()
                    .map(Self::Texts),
                Value::Array(_) => items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| match item {
                        Value::Array(tokens) if tokens.is_empty() => Err(refuse(
                            "a token array must not be empty".to_owned(),
                            format!("input[{i}]"),
                        )),
                        Value::Array(tokens) => tokens
                            .iter()
                            .enumerate()
                            .map(|(j, t)| {
                                token(t).ok_or_else(|| {
                                    refuse(
                                        "a token must be an integer from 0 to 4294967295"
                                            .to_owned(),
                                        format!("input[{i}][{j}]"),
                                    )
                                })
                            })
                            .collect(),
                        _ => Err(refuse(
                            "an array of token arrays must hold only arrays".to_owned(),
                            format!("input[{i}]"),
                        )),
                    })
                    .collect::<Result<_, _>>()
                    .map(Self::TokenArrays),
                Value::Number(_) => items
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        token(t).ok_or_else(|| {
                            refuse(
                                "a token must be an integer from 0 to 4294967295".to_owned(),
                                format!("input[{i}]"),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()
                    .map(Self::Tokens),
                _ => Err(refuse(
                    "`input` must be a string, an array of strings, an array of tokens or an array of token arrays".to_owned(),
                    "input[0]".to_owned(),
                )),
            },
            _ => Err(refuse(
                "`input` must be a string, an array of strings, an array of tokens or an array of token arrays".to_owned(),
                "input".to_owned(),
            )),
        }
    }

    /// How many embeddings the answer holds: one per text or token array.
    pub fn len(&self) -> usize {
        match self {
            Self::Text(_) | Self::Tokens(_) => 1,
            Self::Texts(texts) => texts.len(),
            Self::TokenArrays(arrays) => arrays.len(),
        }
    }

    /// Never true: every shape holds at least one input.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the inputs are texts (true) or token arrays (false): one upstream call can
    /// only carry one kind.
    pub fn is_text(&self) -> bool {
        matches!(self, Self::Text(_) | Self::Texts(_))
    }

    /// Each input as the item of an array input, in order.
    pub fn items(&self) -> Vec<Value> {
        match self {
            Self::Text(text) => vec![Value::String(text.clone())],
            Self::Texts(texts) => texts.iter().cloned().map(Value::String).collect(),
            Self::Tokens(tokens) => vec![Value::from(tokens.clone())],
            Self::TokenArrays(arrays) => arrays.iter().cloned().map(Value::from).collect(),
        }
    }

    /// A rough size of each input, for sharing a packed call's `usage` out: characters of a
    /// text, tokens of a token array.
    pub fn weights(&self) -> Vec<u64> {
        match self {
            Self::Text(text) => vec![text.chars().count() as u64],
            Self::Texts(texts) => texts.iter().map(|t| t.chars().count() as u64).collect(),
            Self::Tokens(tokens) => vec![tokens.len() as u64],
            Self::TokenArrays(arrays) => arrays.iter().map(|a| a.len() as u64).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_four_shapes_are_read_and_bad_ones_name_their_field() {
        assert_eq!(
            EmbeddingInput::read(&json!("hi")),
            Ok(EmbeddingInput::Text("hi".into()))
        );
        assert_eq!(EmbeddingInput::read(&json!(["a", "b"])).unwrap().len(), 2);
        assert_eq!(
            EmbeddingInput::read(&json!([1, 2, 3])),
            Ok(EmbeddingInput::Tokens(vec![1, 2, 3]))
        );
        assert_eq!(
            EmbeddingInput::read(&json!([[1], [2, 3]])).unwrap().items(),
            vec![json!([1]), json!([2, 3])]
        );
        let param = |input: Value| EmbeddingInput::read(&input).unwrap_err().param;
        assert_eq!(param(json!("")), "input");
        assert_eq!(param(json!([])), "input");
        assert_eq!(param(json!(["a", 1])), "input[1]");
        assert_eq!(param(json!(["a", ""])), "input[1]");
        assert_eq!(param(json!([1, -2])), "input[1]");
        assert_eq!(param(json!([[1], [2, "x"]])), "input[1][1]");
        assert_eq!(param(json!([[1], []])), "input[1]");
        assert_eq!(param(json!([{"a": 1}])), "input[0]");
        assert_eq!(param(json!({"a": 1})), "input");
        assert_eq!(param(json!(null)), "input");
        let many: Vec<&str> = vec!["x"; 2049];
        assert_eq!(param(json!(many)), "input");
    }

    #[test]
    fn an_embeddings_answer_reads_float_and_base64_vectors_and_keeps_unknown_fields() {
        let answer = json!({"object": "list", "model": "m", "data": [
            {"object": "embedding", "index": 0, "embedding": [0.5, -1.0]},
            {"object": "embedding", "index": 1, "embedding": "AACAPw=="}],
            "usage": {"prompt_tokens": 3, "total_tokens": 3}, "id": "x"});
        let list: EmbeddingList = serde_json::from_value(answer.clone()).unwrap();
        assert_eq!(list.data[0].embedding.as_floats(), Some(&[0.5, -1.0][..]));
        assert_eq!(list.data[1].embedding.as_floats(), None);
        assert_eq!(list.usage.map(|u| u.prompt_tokens), Some(3));
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            answer,
            "a round trip keeps it all"
        );
        let bare: EmbeddingList =
            serde_json::from_value(json!({"data": [{"embedding": [1.0]}]})).unwrap();
        assert_eq!((bare.object.as_str(), bare.data[0].index), ("list", 0));
        let request = EmbeddingRequest::new("m", "hi").field("dimensions", 8);
        assert_eq!(
            serde_json::to_value(request).unwrap(),
            json!({"model": "m", "input": "hi", "dimensions": 8})
        );
    }
}
