//! OpenAI's `POST /v1/embeddings`: the request, and its `input` read into one of the four
//! shapes OpenAI accepts.

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
}
