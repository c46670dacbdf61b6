//! The built-in `echo` model: answers with the last user message, without any upstream.
//! It exists for demos and smoke tests, and says so in every reply. A Responses request is
//! answered through the same translation a chat-only upstream gets.

use crate::responses;
use crate::upstream::{Completion, UpstreamError};
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// A ChatCompletion whose content is `echo: <last user message>`.
pub fn complete(payload: &RawValue, job_id: &str) -> Result<Completion, serde_json::Error> {
    let request: Value = serde_json::from_str(payload.get()).unwrap_or(Value::Null);
    let last_user = request["messages"]
        .as_array()
        .and_then(|messages| messages.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| match &m["content"] {
            Value::String(text) => text.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        })
        .unwrap_or_default();
    let content = format!("echo: {last_user}");
    let words = |text: &str| text.split_whitespace().count() as u64;
    let prompt_tokens = words(&last_user);
    let completion_tokens = words(&content);
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let body = json!({
        "id": format!("chatcmpl-echo-{}", job_id.trim_start_matches("job-")),
        "object": "chat.completion",
        "created": created,
        "model": "echo",
        "system_fingerprint": "obb-echo (built-in echo model, not an LLM)",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens
        }
    });
    Ok(Completion {
        body: serde_json::value::to_raw_value(&body)?,
        prompt_tokens,
        completion_tokens,
    })
}

/// A Responses `response` whose output text is `echo: <last user message>`.
pub fn respond(payload: &RawValue, job_id: &str) -> Result<Completion, UpstreamError> {
    let request = responses::parse_request(payload)?;
    let chat = responses::to_chat(&request, "echo")?;
    let unreadable = |e: serde_json::Error| UpstreamError::Invalid {
        status: 200,
        message: format!("the echo model's answer is unreadable: {e}"),
    };
    let chat = serde_json::value::to_raw_value(&chat).map_err(unreadable)?;
    let answer = complete(&chat, job_id).map_err(unreadable)?;
    responses::completion_from_chat(&request, &answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_repeats_the_last_user_message_and_labels_itself() {
        let payload = RawValue::from_string(
            r#"{"messages":[{"role":"user","content":"first"},{"role":"assistant","content":"x"},{"role":"user","content":[{"type":"text","text":"second"}]}]}"#.to_owned(),
        )
        .unwrap();
        let completion = complete(&payload, "job-1").unwrap();
        assert_eq!(
            (completion.prompt_tokens, completion.completion_tokens),
            (1, 2)
        );
        let reply: Value = serde_json::from_str(completion.body.get()).unwrap();
        assert_eq!(reply["choices"][0]["message"]["content"], "echo: second");
        assert!(
            reply["system_fingerprint"]
                .as_str()
                .unwrap()
                .contains("echo")
        );
        assert_eq!(reply["usage"]["total_tokens"], 3);
    }

    #[test]
    fn echo_answers_a_responses_request_with_a_response() {
        let payload = RawValue::from_string(
            r#"{"model":"echo","instructions":"ignored","input":[{"role":"user","content":[{"type":"input_text","text":"hello there"}]}]}"#.to_owned(),
        )
        .unwrap();
        let completion = respond(&payload, "job-2").unwrap();
        let response: Value = serde_json::from_str(completion.body.get()).unwrap();
        assert_eq!(response["object"], "response");
        assert_eq!(response["status"], "completed");
        assert_eq!(
            response["output"][0]["content"][0]["text"],
            "echo: hello there"
        );
        assert_eq!(response["usage"]["input_tokens"], 2);
        assert_eq!(response["usage"]["output_tokens"], 3);
        assert_eq!(completion.prompt_tokens, 2);
        let refused =
            RawValue::from_string(r#"{"input":"x","tools":[{"type":"web_search"}]}"#.to_owned())
                .unwrap();
        let error = respond(&refused, "job-3").unwrap_err();
        assert!(
            matches!(error, UpstreamError::Rejected { status: 400, .. }),
            "{error:?}"
        );
    }
}
