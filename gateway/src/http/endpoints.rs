//! The judgement of a submit body for each endpoint that queues jobs: chat completions
//! (in `chat`), embeddings, legacy completions and responses. Free of I/O, like `parse_submit`, so that
//! the batch runner judges a line's body exactly as a direct request's.

use super::chat::parse_submit;
use super::error::ApiError;
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
        Endpoint::Responses => parse_responses(body).map(|(judged, _)| judged),
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

/// A Responses request (OpenAI's `POST /v1/responses`): `model`; `input` a string or a
/// non-empty array of items (objects with a `type` or a `role`); `background`, `stream`,
/// `store` and `parallel_tool_calls` booleans; `instructions` and `user` strings;
/// `max_output_tokens` positive; `temperature` (0–2) and `top_p` (0–1) numbers;
/// `tool_choice` a string or an object; `tools` an array. `previous_response_id` is only
/// checked for shape here: the handler reads the response it names. Returns the body as
/// read too, so that the handler need not parse it again.
pub fn parse_responses(body: &[u8]) -> Result<(Judged, Map<String, Value>), ApiError> {
    let request: Map<String, Value> = super::request::parse_json(body)?;
    let refuse =
        |message: String, param: &str| Err(ApiError::invalid(message, Some(param.to_owned())));
    let model = match request.get("model") {
        Some(Value::String(model)) => model.clone(),
        _ => {
            return refuse(
                "`model` is required and must be a string".to_owned(),
                "model",
            );
        }
    };
    check_model(&model)?;
    match request.get("input") {
        Some(Value::String(_)) => {}
        Some(Value::Array(items)) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                let typed = item.as_object().is_some_and(|item| {
                    item.get("type").is_some_and(Value::is_string)
                        || item.get("role").is_some_and(Value::is_string)
                });
                if !typed {
                    return refuse(
                        "each input item must be an object with a `type` or a `role`".to_owned(),
                        &format!("input[{i}]"),
                    );
                }
            }
        }
        Some(Value::Array(_)) => {
            return refuse("`input` must not be an empty array".to_owned(), "input");
        }
        None | Some(Value::Null) => {
            return refuse(
                "`input` is required: a string or an array of input items".to_owned(),
                "input",
            );
        }
        Some(_) => {
            return refuse(
                "`input` must be a string or an array of input items".to_owned(),
                "input",
            );
        }
    }
    for flag in ["background", "stream", "store", "parallel_tool_calls"] {
        if !matches!(request.get(flag), None | Some(Value::Null | Value::Bool(_))) {
            return refuse(format!("`{flag}` must be a boolean"), flag);
        }
    }
    for text in ["instructions", "previous_response_id", "user"] {
        if !matches!(
            request.get(text),
            None | Some(Value::Null | Value::String(_))
        ) {
            return refuse(format!("`{text}` must be a string"), text);
        }
    }
    if let Some(max) = request.get("max_output_tokens").filter(|v| !v.is_null())
        && max.as_u64().is_none_or(|max| max < 1)
    {
        return refuse(
            "`max_output_tokens` must be a positive integer".to_owned(),
            "max_output_tokens",
        );
    }
    for (number, most) in [("temperature", 2.0), ("top_p", 1.0)] {
        if let Some(value) = request.get(number).filter(|v| !v.is_null())
            && value.as_f64().is_none_or(|v| !(0.0..=most).contains(&v))
        {
            return refuse(
                format!("`{number}` must be a number from 0 to {most}"),
                number,
            );
        }
    }
    if !matches!(
        request.get("tool_choice"),
        None | Some(Value::Null | Value::String(_) | Value::Object(_))
    ) {
        return refuse(
            "`tool_choice` must be a string or an object".to_owned(),
            "tool_choice",
        );
    }
    if !matches!(
        request.get("tools"),
        None | Some(Value::Null | Value::Array(_))
    ) {
        return refuse("`tools` must be an array".to_owned(), "tools");
    }
    let judged = Judged {
        metadata: metadata(&request)?,
        stream: request
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        include_usage: false,
        model,
    };
    Ok((judged, request))
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
    fn responses_take_a_string_or_items_and_name_the_bad_field() {
        for input in [
            json!("hi"),
            json!([{"role": "user", "content": "hi"}]),
            json!([{"type": "function_call_output", "call_id": "c", "output": "1"}]),
        ] {
            let body =
                json!({"model": "r", "input": input, "stream": true, "metadata": {"a": "b"}});
            let judged = parse_for(Endpoint::Responses, body.to_string().as_bytes()).unwrap();
            assert!(judged.stream && judged.metadata.is_some());
            assert_eq!(judged.model, "r");
        }
        let r = Endpoint::Responses;
        for (body, field) in [
            (json!({"input": "x"}), "model"),
            (json!({"model": "r"}), "input"),
            (json!({"model": "r", "input": []}), "input"),
            (json!({"model": "r", "input": 3}), "input"),
            (json!({"model": "r", "input": ["x"]}), "input[0]"),
            (
                json!({"model": "r", "input": "x", "background": "yes"}),
                "background",
            ),
            (
                json!({"model": "r", "input": "x", "instructions": 1}),
                "instructions",
            ),
            (
                json!({"model": "r", "input": "x", "previous_response_id": 1}),
                "previous_response_id",
            ),
            (
                json!({"model": "r", "input": "x", "max_output_tokens": 0}),
                "max_output_tokens",
            ),
            (json!({"model": "r", "input": "x", "tools": {}}), "tools"),
            (
                json!({"model": "r", "input": "x", "temperature": "hot"}),
                "temperature",
            ),
            (
                json!({"model": "r", "input": "x", "temperature": 3}),
                "temperature",
            ),
            (json!({"model": "r", "input": "x", "top_p": 1.5}), "top_p"),
            (
                json!({"model": "r", "input": "x", "tool_choice": 1}),
                "tool_choice",
            ),
            (
                json!({"model": "r", "input": "x", "metadata": []}),
                "metadata",
            ),
        ] {
            assert_eq!(param(r, body.clone()).as_deref(), Some(field), "{body}");
        }
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
