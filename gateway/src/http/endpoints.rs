//! The judgement of a submit body for each endpoint that queues jobs: chat completions
//! (in `user`), embeddings and legacy completions. Free of I/O, like `parse_submit`, so that
//! the batch runner judges a line's body exactly as a direct request's.

use super::error::ApiError;
use super::user::parse_submit;
use openbeepboop::embeddings::EmbeddingInput;
use openbeepboop::{CompletionRequest, EmbeddingRequest, Endpoint};
use serde_json::{Map, Value};

/// The longest model name, in characters.
const MAX_MODEL_CHARS: usize = 256;
/// The `encoding_format`s OpenAI's embeddings take.
const ENCODING_FORMATS: &[&str] = &["float", "base64"];

/// What the gateway takes from a valid submit body; the body itself is stored verbatim.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub model: String,
    /// `stream: true`: answered as the endpoint's event stream, replayed once it ends.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// `metadata`, where the submit's terms (`obb_priority`, `obb_ttl_seconds`) may be.
    pub metadata: Option<Map<String, Value>>,
}

/// Parses and validates a body sent to `endpoint`: a 400 naming the field at fault, or
/// what the gateway needs to queue it.
pub fn parse_for(endpoint: Endpoint, body: &[u8]) -> Result<Judged, ApiError> {
    match endpoint {
        Endpoint::ChatCompletions => {
            let chat = parse_submit(body)?;
            Ok(Judged {
                include_usage: include_usage(&chat.extra),
                stream: chat.stream.unwrap_or(false),
                model: chat.model,
                metadata: chat.metadata,
            })
        }
        Endpoint::Embeddings => embeddings(body),
        Endpoint::Completions => completions(body),
        Endpoint::Responses => Err(ApiError::invalid(
            "`/v1/responses` is not queued by this gateway yet",
            None,
        )),
    }
}

fn include_usage(extra: &Map<String, Value>) -> bool {
    extra
        .get("stream_options")
        .and_then(|options| options.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// `metadata` when it is an object; anything else is refused by name.
fn metadata(extra: &Map<String, Value>) -> Result<Option<Map<String, Value>>, ApiError> {
    match extra.get("metadata") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map.clone())),
        Some(_) => Err(ApiError::invalid(
            "`metadata` must be an object of strings",
            Some("metadata".to_owned()),
        )),
    }
}

pub fn check_model(model: &str) -> Result<(), ApiError> {
    if model.trim().is_empty() || model.chars().count() > MAX_MODEL_CHARS {
        return Err(ApiError::invalid(
            format!("`model` must be a non-empty name of at most {MAX_MODEL_CHARS} characters"),
            Some("model".to_owned()),
        ));
    }
    Ok(())
}

fn embeddings(body: &[u8]) -> Result<Judged, ApiError> {
    let request: EmbeddingRequest = super::request::parse_json(body)?;
    check_model(&request.model)?;
    EmbeddingInput::read(&request.input)
        .map_err(|refused| ApiError::invalid(refused.message, Some(refused.param)))?;
    match request.extra.get("encoding_format") {
        None | Some(Value::Null) => {}
        Some(Value::String(format)) if ENCODING_FORMATS.contains(&format.as_str()) => {}
        Some(other) => {
            let shown = other
                .as_str()
                .map_or_else(|| other.to_string(), str::to_owned);
            return Err(ApiError::invalid(
                format!(
                    "`encoding_format` must be `{}`, not `{shown}`",
                    ENCODING_FORMATS.join("` or `")
                ),
                Some("encoding_format".to_owned()),
            ));
        }
    }
    match request.extra.get("dimensions") {
        None | Some(Value::Null) => {}
        Some(dimensions) if dimensions.as_u64().is_some_and(|d| d >= 1) => {}
        Some(_) => {
            return Err(ApiError::invalid(
                "`dimensions` must be a positive integer",
                Some("dimensions".to_owned()),
            ));
        }
    }
    if request.extra.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::invalid(
            "`/v1/embeddings` does not stream; leave `stream` out",
            Some("stream".to_owned()),
        ));
    }
    Ok(Judged {
        metadata: metadata(&request.extra)?,
        model: request.model,
        stream: false,
        include_usage: false,
    })
}

fn completions(body: &[u8]) -> Result<Judged, ApiError> {
    let request: CompletionRequest = super::request::parse_json(body)?;
    check_model(&request.model)?;
    check_prompt(&request.prompt)?;
    Ok(Judged {
        include_usage: include_usage(&request.extra),
        metadata: metadata(&request.extra)?,
        stream: request.stream.unwrap_or(false),
        model: request.model,
    })
}

/// A prompt as OpenAI takes it: a string, or a non-empty array of strings, of token ids,
/// or of token arrays.
fn check_prompt(prompt: &Value) -> Result<(), ApiError> {
    let refuse = |param: String| {
        Err(ApiError::invalid(
            "`prompt` must be a string, an array of strings, an array of tokens or an array of token arrays",
            Some(param),
        ))
    };
    let token = |value: &Value| value.as_u64().is_some_and(|t| u32::try_from(t).is_ok());
    let items = match prompt {
        Value::String(_) => return Ok(()),
        Value::Array(items) if !items.is_empty() => items,
        Value::Array(_) => {
            return Err(ApiError::invalid(
                "`prompt` must not be an empty array",
                Some("prompt".to_owned()),
            ));
        }
        _ => return refuse("prompt".to_owned()),
    };
    for (i, item) in items.iter().enumerate() {
        let fits = match (&items[0], item) {
            (Value::String(_), Value::String(_)) => true,
            (Value::Number(_), number) => token(number),
            (Value::Array(_), Value::Array(tokens)) => {
                !tokens.is_empty() && tokens.iter().all(token)
            }
            _ => false,
        };
        if !fits {
            return refuse(format!("prompt[{i}]"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn param(endpoint: Endpoint, body: Value) -> Option<String> {
        let error = parse_for(endpoint, body.to_string().as_bytes()).unwrap_err();
        assert_eq!(error.status(), 400);
        error.envelope().error.param
    }

    #[test]
    fn embeddings_take_openais_four_input_shapes_and_name_the_bad_field() {
        for input in [
            json!("a"),
            json!(["a", "b"]),
            json!([1, 2]),
            json!([[1], [2]]),
        ] {
            let body = json!({"model": "e", "input": input, "encoding_format": "float"});
            let judged = parse_for(Endpoint::Embeddings, body.to_string().as_bytes()).unwrap();
            assert_eq!((judged.model.as_str(), judged.stream), ("e", false));
        }
        let e = Endpoint::Embeddings;
        assert_eq!(param(e, json!({"model": "e"})).as_deref(), Some("input"));
        assert_eq!(param(e, json!({"input": "x"})).as_deref(), Some("model"));
        assert_eq!(
            param(e, json!({"model": "e", "input": ["a", 2]})).as_deref(),
            Some("input[1]")
        );
        assert_eq!(
            param(
                e,
                json!({"model": "e", "input": "a", "encoding_format": "int8"})
            )
            .as_deref(),
            Some("encoding_format")
        );
        assert_eq!(
            param(e, json!({"model": "e", "input": "a", "dimensions": 0})).as_deref(),
            Some("dimensions")
        );
        assert_eq!(
            param(e, json!({"model": "e", "input": "a", "stream": true})).as_deref(),
            Some("stream")
        );
    }

    #[test]
    fn completions_take_openais_prompt_shapes_and_read_stream_and_usage() {
        let body = json!({"model": "c", "prompt": "Say", "stream": true,
                          "stream_options": {"include_usage": true},
                          "metadata": {"obb_priority": "1"}});
        let judged = parse_for(Endpoint::Completions, body.to_string().as_bytes()).unwrap();
        assert!(judged.stream && judged.include_usage);
        assert!(judged.metadata.is_some());
        for prompt in [
            json!(""),
            json!(["a", "b"]),
            json!([1, 2]),
            json!([[1], [2, 3]]),
        ] {
            let body = json!({"model": "c", "prompt": prompt});
            assert!(parse_for(Endpoint::Completions, body.to_string().as_bytes()).is_ok());
        }
        let c = Endpoint::Completions;
        assert_eq!(param(c, json!({"model": "c"})).as_deref(), Some("prompt"));
        assert_eq!(
            param(c, json!({"model": "c", "prompt": []})).as_deref(),
            Some("prompt")
        );
        assert_eq!(
            param(c, json!({"model": "c", "prompt": ["a", 1]})).as_deref(),
            Some("prompt[1]")
        );
        assert_eq!(
            param(c, json!({"model": "c", "prompt": [[1], []]})).as_deref(),
            Some("prompt[1]")
        );
        assert_eq!(
            param(c, json!({"model": "c", "prompt": "x", "metadata": 3})).as_deref(),
            Some("metadata")
        );
    }
}
