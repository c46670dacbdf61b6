//! OpenAI's Responses API on an upstream that only has chat completions: the request
//! translated to chat ([`to_chat`]) and the chat answer translated back ([`from_chat`]),
//! whole or as it streams ([`stream`]). Pure functions; when to translate is the upstream
//! client's call, not this module's.

mod request;
mod response;
pub mod stream;
#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;

pub use request::to_chat;
pub use response::from_chat;

use crate::upstream::{Completion, UpstreamError};
use openbeepboop::ErrorBody;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The `code` of a request that translation to chat cannot carry.
pub const UNSUPPORTED: &str = "unsupported_by_chat_translation";

/// A Responses job's body as an object, or a 400 naming why not.
pub fn parse_request(payload: &RawValue) -> Result<Map<String, Value>, UpstreamError> {
    serde_json::from_str(payload.get()).map_err(|e| UpstreamError::Rejected {
        status: 400,
        error: ErrorBody::new(
            format!("the job's request is not a JSON object: {e}"),
            "invalid_request_error",
        ),
    })
}

/// The chat completion `chat`, answer to the translation of `request`, as a response.
pub fn completion_from_chat(
    request: &Map<String, Value>,
    chat: &Completion,
) -> Result<Completion, UpstreamError> {
    let invalid = |e: serde_json::Error| UpstreamError::Invalid {
        status: 200,
        message: format!("cannot translate the chat completion into a response: {e}"),
    };
    let answer: Value = serde_json::from_str(chat.body.get()).map_err(invalid)?;
    let response = from_chat(request, &answer);
    Ok(Completion {
        body: serde_json::value::to_raw_value(&response).map_err(invalid)?,
        prompt_tokens: chat.prompt_tokens,
        completion_tokens: chat.completion_tokens,
    })
}

/// The 400 for a request field chat cannot express; `what` names it for the message.
fn unsupported(param: &str, what: &str) -> UpstreamError {
    UpstreamError::Rejected {
        status: 400,
        error: ErrorBody::new(
            format!(
                "the upstream has no `/v1/responses`, so this node translates the request to `/v1/chat/completions`, which cannot express {what} (at `{param}`)"
            ),
            "invalid_request_error",
        )
        .with_param(param)
        .with_code(UNSUPPORTED),
    }
}
