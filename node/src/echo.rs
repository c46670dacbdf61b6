//! The built-in `echo` model: answers with the last user message, without any upstream.
//! It exists for demos and smoke tests, and says so in every reply.

use crate::upstream::Completion;
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
}
