//! The `response` object of OpenAI's Responses API reference, for a job of
//! `/v1/responses`: built from the job's row, the request it was submitted with and, once
//! it completed, the node's answer. Also the request's input as input items, and the
//! expansion of `previous_response_id` into them. Free of I/O.

use crate::queue::JobRecord;
use openbeepboop::JobStatus;
use serde_json::{Map, Value, json};

/// A request body as stored: a JSON object.
pub type Request = Map<String, Value>;

/// The job's `response` object in its current status: `queued`, `in_progress`,
/// `completed`, `incomplete` (the answer's own status), `failed` (a failed or expired job,
/// with its error, or an answer that says so itself) or `cancelled`. The gateway owns `id`, `object`, `created_at` (Unix
/// seconds), `status`, `background`, `previous_response_id` and `metadata`; the rest is the
/// node's answer, with the request's settings filled in where the answer has none.
pub fn present(record: &JobRecord, request: &Request) -> Value {
    let mut response = match (record.status, &record.result_payload) {
        (JobStatus::Completed, Some(result)) => {
            serde_json::from_str::<Map<String, Value>>(result).unwrap_or_default()
        }
        _ => Map::new(),
    };
    let status = match record.status {
        JobStatus::Queued => "queued",
        JobStatus::Processing => "in_progress",
        JobStatus::Completed => match response.get("status").and_then(Value::as_str) {
            Some("incomplete") => "incomplete",
            // An upstream's own failed response (its closing `response.failed`).
            Some("failed") => "failed",
            _ => "completed",
        },
        JobStatus::Failed | JobStatus::Expired => "failed",
        JobStatus::Cancelled => "cancelled",
    };
    let error = match (record.status, &record.error) {
        (JobStatus::Failed | JobStatus::Expired, Some(error)) => json!({
            "code": error.code.clone().unwrap_or_else(|| "server_error".to_owned()),
            "message": error.message,
        }),
        (JobStatus::Failed | JobStatus::Expired, None) => json!({
            "code": "server_error",
            "message": format!("response `{}` ended as {}", record.id, record.status),
        }),
        _ => Value::Null,
    };
    let owned = [
        ("id", Value::String(record.id.clone())),
        ("object", Value::String("response".to_owned())),
        ("created_at", Value::from(record.created_at / 1000)),
        ("status", Value::String(status.to_owned())),
        ("background", flag(request, "background", false)),
        (
            "previous_response_id",
            request
                .get("previous_response_id")
                .cloned()
                .unwrap_or(Value::Null),
        ),
        (
            "metadata",
            request
                .get("metadata")
                .cloned()
                .unwrap_or_else(|| json!({})),
        ),
    ];
    for (field, value) in owned {
        response.insert(field.to_owned(), value);
    }
    if !error.is_null() {
        response.insert("error".to_owned(), error);
    }
    let settings = [
        ("model", Value::String(record.model.clone())),
        ("instructions", Value::Null),
        ("output", json!([])),
        ("error", Value::Null),
        ("incomplete_details", Value::Null),
        ("usage", Value::Null),
        ("temperature", Value::Null),
        ("top_p", Value::Null),
        ("max_output_tokens", Value::Null),
        ("tools", json!([])),
        ("tool_choice", json!("auto")),
        ("parallel_tool_calls", Value::Bool(true)),
        ("text", json!({"format": {"type": "text"}})),
        ("store", Value::Bool(true)),
        ("truncation", json!("disabled")),
    ];
    for (field, default) in settings {
        if !response.contains_key(field) {
            let value = request.get(field).cloned().unwrap_or(default);
            response.insert(field.to_owned(), value);
        }
    }
    Value::Object(response)
}

fn flag(request: &Request, name: &str, default: bool) -> Value {
    Value::Bool(
        request
            .get(name)
            .and_then(Value::as_bool)
            .unwrap_or(default),
    )
}

/// The request's `input` as input items, each with an `id`: a string is one user message;
/// a message item's string content becomes one `input_text` part (`output_text` for the
/// assistant's). Items without an id get `msg_…`/`item_…` ids made from the response's id
/// and their place, so that the same item keeps its id on every read.
pub fn input_items(response_id: &str, request: &Request) -> Vec<Value> {
    let suffix = response_id.strip_prefix("resp_").unwrap_or(response_id);
    normalised(request.get("input"))
        .into_iter()
        .enumerate()
        .map(|(i, mut item)| {
            if let Some(item) = item.as_object_mut()
                && !item.contains_key("id")
            {
                let prefix = if item.get("type").and_then(Value::as_str) == Some("message") {
                    "msg"
                } else {
                    "item"
                };
                item.insert("id".to_owned(), json!(format!("{prefix}_{suffix}_{i}")));
            }
            item
        })
        .collect()
}

/// `input` as an array of items in OpenAI's explicit form, without ids.
fn normalised(input: Option<&Value>) -> Vec<Value> {
    match input {
        Some(Value::String(text)) => vec![message("user", text)],
        Some(Value::Array(items)) => items.iter().map(explicit).collect(),
        _ => Vec::new(),
    }
}

fn message(role: &str, text: &str) -> Value {
    let part = if role == "assistant" {
        "output_text"
    } else {
        "input_text"
    };
    json!({"type": "message", "role": role, "content": [{"type": part, "text": text}]})
}

/// An item as OpenAI lists it: `type` always set, a message's content always parts.
fn explicit(item: &Value) -> Value {
    let Some(fields) = item.as_object() else {
        return item.clone();
    };
    let is_message = fields.get("type").is_none_or(|t| t == "message");
    match (
        is_message,
        fields.get("role").and_then(Value::as_str),
        fields.get("content"),
    ) {
        (true, Some(role), Some(Value::String(text))) => {
            let mut out = message(role, text);
            for (key, value) in fields {
                if key != "content" && key != "type" && key != "role" {
                    out[key] = value.clone();
                }
            }
            out
        }
        (true, Some(_), _) => {
            let mut out = fields.clone();
            out.insert("type".to_owned(), json!("message"));
            Value::Object(out)
        }
        _ => item.clone(),
    }
}

/// Why a `previous_response_id` cannot be continued.
#[derive(Debug, PartialEq, Eq)]
pub struct NotContinuable(pub String);

/// Replaces `request`'s `input` by the conversation so far: the previous response's input
/// items and output items, then the new input. `instructions` are not carried over, as in
/// OpenAI's API. Item ids are left out: a stateless upstream would take them for
/// references to items it has never stored. `previous_response_id` stays in the request for
/// the `response` object; the node does not send it upstream.
pub fn expand(
    previous: &JobRecord,
    previous_request: &Request,
    request: &mut Request,
) -> Result<(), NotContinuable> {
    if previous.status != JobStatus::Completed {
        return Err(NotContinuable(format!(
            "previous response `{}` is {}; only a completed response can be continued",
            previous.id,
            present(previous, previous_request)["status"]
                .as_str()
                .unwrap_or("unfinished")
        )));
    }
    let answer: Value = previous
        .result_payload
        .as_deref()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null);
    let outputs = answer["output"]
        .as_array()
        .into_iter()
        .flatten()
        // Reasoning items are the upstream's own state; another server cannot read them.
        .filter(|item| item["type"] != "reasoning")
        .cloned();
    let conversation: Vec<Value> = normalised(previous_request.get("input"))
        .into_iter()
        .chain(outputs)
        .chain(normalised(request.get("input")))
        .map(|mut item| {
            if let Some(fields) = item.as_object_mut() {
                fields.remove("id");
            }
            item
        })
        .collect();
    request.insert("input".to_owned(), Value::Array(conversation));
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use openbeepboop::{Endpoint, ErrorBody};

    pub(in crate::http::responses) fn record(
        status: JobStatus,
        result: Option<Value>,
    ) -> JobRecord {
        JobRecord {
            id: "resp_1".to_owned(),
            owner_key_id: "k".to_owned(),
            model: "m".to_owned(),
            endpoint: Endpoint::Responses,
            status,
            priority: 3,
            created_at: 1_700_000_000_123,
            updated_at: 1_700_000_000_123,
            expires_at: 1_700_000_100_000,
            attempts: 1,
            locked_by: None,
            locked_at: None,
            finished_at: None,
            result_payload: result.map(|r| r.to_string()),
            error: None,
            upstream_status: None,
            events: None,
        }
    }

    fn request(value: Value) -> Request {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn a_queued_response_echoes_the_request_and_has_no_output() {
        let asked = request(json!({"model": "m", "input": "hi", "background": true,
                                   "instructions": "be brief", "metadata": {"a": "b"}}));
        let response = present(&record(JobStatus::Queued, None), &asked);
        assert_eq!(response["id"], "resp_1");
        assert_eq!(response["object"], "response");
        assert_eq!(response["status"], "queued");
        assert_eq!(response["created_at"], 1_700_000_000);
        assert_eq!(response["background"], true);
        assert_eq!(response["instructions"], "be brief");
        assert_eq!(response["metadata"], json!({"a": "b"}));
        assert_eq!(response["output"], json!([]));
        assert_eq!(response["error"], Value::Null);
        let running = present(&record(JobStatus::Processing, None), &asked);
        assert_eq!(running["status"], "in_progress");
    }

    #[test]
    fn a_finished_response_is_the_answer_under_the_gateways_id() {
        let answer = json!({"id": "resp_upstream", "object": "response", "created_at": 5,
            "status": "incomplete", "model": "smollm2",
            "incomplete_details": {"reason": "max_output_tokens"},
            "output": [{"type": "message", "role": "assistant",
                        "content": [{"type": "output_text", "text": "Hel"}]}],
            "usage": {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4}});
        let asked = request(json!({"model": "m", "input": "hi"}));
        let response = present(&record(JobStatus::Completed, Some(answer.clone())), &asked);
        assert_eq!(response["id"], "resp_1");
        assert_eq!(response["status"], "incomplete");
        assert_eq!(response["model"], "smollm2");
        assert_eq!(response["output"], answer["output"]);
        assert_eq!(response["usage"], answer["usage"]);
        assert_eq!(response["background"], false);

        let mut failed = record(JobStatus::Failed, None);
        failed.error =
            Some(ErrorBody::new("boom", "server_error").with_code("upstream_unavailable"));
        let response = present(&failed, &asked);
        assert_eq!(response["status"], "failed");
        assert_eq!(
            response["error"],
            json!({"code": "upstream_unavailable", "message": "boom"})
        );
        assert_eq!(
            present(&record(JobStatus::Expired, None), &asked)["status"],
            "failed"
        );
        assert_eq!(
            present(&record(JobStatus::Cancelled, None), &asked)["status"],
            "cancelled"
        );
    }

    #[test]
    fn input_items_are_explicit_with_stable_ids() {
        let asked = request(json!({"input": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello", "id": "msg_mine"},
            {"type": "function_call_output", "call_id": "c1", "output": "42"}
        ]}));
        let items = input_items("resp_abc", &asked);
        assert_eq!(
            items[0],
            json!({"type": "message", "role": "user", "id": "msg_abc_0",
                                    "content": [{"type": "input_text", "text": "hi"}]})
        );
        assert_eq!(items[1]["id"], "msg_mine");
        assert_eq!(items[1]["content"][0]["type"], "output_text");
        assert_eq!(items[2]["id"], "item_abc_2");
        assert_eq!(input_items("resp_abc", &asked), items);
        let one = input_items("resp_x", &request(json!({"input": "hey"})));
        assert_eq!(one.len(), 1);
        assert_eq!(one[0]["content"][0]["text"], "hey");
    }

    #[test]
    fn a_previous_response_becomes_the_conversation_before_the_new_input() {
        let answer = json!({"output": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "message", "id": "msg_out", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "4", "annotations": []}]}]});
        let previous = record(JobStatus::Completed, Some(answer));
        let previous_request = request(json!({"input": "2+2?", "instructions": "math"}));
        let mut next = request(json!({"input": "and 3+3?", "previous_response_id": "resp_1"}));
        expand(&previous, &previous_request, &mut next).unwrap();
        let input = next["input"].as_array().unwrap();
        assert_eq!(input.len(), 3);
        assert_eq!(input[0]["content"][0]["text"], "2+2?");
        assert_eq!(input[1]["content"][0]["text"], "4");
        assert!(input[1].get("id").is_none());
        assert_eq!(input[2]["content"][0]["text"], "and 3+3?");
        assert!(next.get("instructions").is_none());
        assert_eq!(next["previous_response_id"], "resp_1");

        let queued = record(JobStatus::Queued, None);
        let refused = expand(&queued, &previous_request, &mut next).unwrap_err();
        assert!(refused.0.contains("is queued"), "{}", refused.0);
    }
}
