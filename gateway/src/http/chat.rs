//! The judgement of a chat completions body (OpenAI's `POST /v1/chat/completions`): `model`,
//! and non-empty `messages` of known roles whose content is a string, parts or null. Every
//! other field is kept verbatim. Free of I/O, so that property tests and the fuzzer drive it.

use super::error::ApiError;
use openbeepboop::ChatCompletionRequest;
use serde_json::Value;

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// Parses and validates a chat completions body: 400 naming the field at fault.
pub fn parse_submit(body: &[u8]) -> Result<ChatCompletionRequest, ApiError> {
    let chat: ChatCompletionRequest = super::request::parse_json(body)?;
    validate(&chat)?;
    Ok(chat)
}

fn validate(chat: &ChatCompletionRequest) -> Result<(), ApiError> {
    super::endpoints::check_model(&chat.model)?;
    if chat.messages.is_empty() {
        return Err(ApiError::invalid(
            "`messages` must contain at least one message",
            Some("messages".to_owned()),
        ));
    }
    for (index, message) in chat.messages.iter().enumerate() {
        if !ROLES.contains(&message.role.as_str()) {
            return Err(ApiError::invalid(
                format!(
                    "invalid role `{}`; expected one of {}",
                    message.role,
                    ROLES.join(", ")
                ),
                Some(format!("messages[{index}].role")),
            ));
        }
        if let Some(content) = &message.content
            && !matches!(content, Value::String(_) | Value::Array(_) | Value::Null)
        {
            return Err(ApiError::invalid(
                "message content must be a string, an array of parts, or null",
                Some(format!("messages[{index}].content")),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Any JSON value, nested a few levels deep.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_]{1,10}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn valid_request() -> impl Strategy<Value = Value> {
        let message = (prop::sample::select(ROLES.to_vec()), ".{0,40}")
            .prop_map(|(role, content)| serde_json::json!({"role": role, "content": content}));
        (
            "[a-zA-Z0-9._:/-]{1,40}",
            prop::collection::vec(message, 1..5),
            prop::option::of(0.0f64..2.0),
            prop::option::of(any::<bool>()),
        )
            .prop_map(|(model, messages, temperature, stream)| {
                let mut body = serde_json::json!({"model": model, "messages": messages});
                if let Some(t) = temperature {
                    body["temperature"] = serde_json::json!(t);
                }
                if let Some(s) = stream {
                    body["stream"] = serde_json::json!(s);
                }
                body
            })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_fail_as_client_errors(body in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Err(error) = parse_submit(&body) {
                prop_assert!((400..500).contains(&error.status()));
            }
        }

        #[test]
        fn arbitrary_json_is_accepted_only_when_it_is_a_real_request(value in json_value()) {
            let body = serde_json::to_vec(&value).unwrap_or_default();
            match parse_submit(&body) {
                Ok(chat) => {
                    prop_assert!(!chat.model.trim().is_empty());
                    prop_assert!(!chat.messages.is_empty());
                }
                Err(error) => prop_assert_eq!(error.status(), 400),
            }
        }

        #[test]
        fn valid_requests_are_accepted_with_every_field_kept(value in valid_request()) {
            let body = serde_json::to_vec(&value).unwrap_or_default();
            let chat = parse_submit(&body);
            prop_assert!(chat.is_ok(), "{:?}", chat.err());
            let round_trip = serde_json::to_value(chat.unwrap_or_else(|_| unreachable!())).unwrap_or_default();
            prop_assert_eq!(round_trip, value);
        }
    }
}
