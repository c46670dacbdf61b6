//! A finished `response` replayed as the Responses API's event stream (OpenAI's API
//! reference, "Streaming events"): `response.created`, `response.in_progress`, per output
//! item its `added`, content and `done` events, then `response.completed`,
//! `response.incomplete` or `response.failed`. Every event names its `type` in both the
//! SSE `event:` line and the data, and carries a `sequence_number` from 0. There is no
//! `[DONE]`: a Responses stream ends with the connection.

use serde_json::{Value, json};

/// Writes events in order, numbering them.
struct Events {
    out: String,
    sequence: u64,
}

impl Events {
    fn push(&mut self, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        crate::http::sse::frame(&mut self.out, Some(kind), &data.to_string());
    }
}

/// The events of `response`, a `response` object in a final status.
pub fn replay(response: &Value) -> String {
    let mut events = Events {
        out: String::new(),
        sequence: 0,
    };
    let mut opening = response.clone();
    opening["status"] = json!("in_progress");
    opening["output"] = json!([]);
    opening["usage"] = Value::Null;
    opening["error"] = Value::Null;
    opening["incomplete_details"] = Value::Null;
    events.push("response.created", json!({"response": opening}));
    events.push("response.in_progress", json!({"response": opening}));
    let outputs = response["output"].as_array().cloned().unwrap_or_default();
    for (index, item) in outputs.iter().enumerate() {
        output_item(&mut events, index, item);
    }
    let closing = match response["status"].as_str() {
        Some("incomplete") => "response.incomplete",
        Some("failed" | "cancelled") => "response.failed",
        _ => "response.completed",
    };
    events.push(closing, json!({"response": response}));
    events.out
}

/// One output item: `added` with the item still empty, its parts or arguments, `done`.
fn output_item(events: &mut Events, index: usize, item: &Value) {
    let item_id = item["id"].clone();
    let mut added = item.clone();
    added["status"] = json!("in_progress");
    match item["type"].as_str() {
        Some("message") => added["content"] = json!([]),
        Some("function_call") => added["arguments"] = json!(""),
        _ => {}
    }
    events.push(
        "response.output_item.added",
        json!({"output_index": index, "item": added}),
    );
    match item["type"].as_str() {
        Some("message") => {
            let parts = item["content"].as_array().cloned().unwrap_or_default();
            for (content_index, part) in parts.iter().enumerate() {
                let at = json!({"item_id": item_id, "output_index": index,
                                "content_index": content_index});
                content_part(events, at, part);
            }
        }
        Some("function_call") => {
            let arguments = item["arguments"].clone();
            events.push(
                "response.function_call_arguments.delta",
                json!({"item_id": item_id, "output_index": index, "delta": arguments}),
            );
            events.push(
                "response.function_call_arguments.done",
                json!({"item_id": item_id, "output_index": index, "arguments": arguments}),
            );
        }
        _ => {}
    }
    events.push(
        "response.output_item.done",
        json!({"output_index": index, "item": item}),
    );
}

/// One part of a message: `added` empty, its text as one delta, `done`.
fn content_part(events: &mut Events, at: Value, part: &Value) {
    let with = |extra: Value| {
        let mut data = at.clone();
        for (key, value) in extra.as_object().into_iter().flatten() {
            data[key] = value.clone();
        }
        data
    };
    let mut empty = part.clone();
    if part["type"] == "output_text" {
        empty["text"] = json!("");
    }
    events.push("response.content_part.added", with(json!({"part": empty})));
    if part["type"] == "output_text" {
        let text = part["text"].clone();
        events.push(
            "response.output_text.delta",
            with(json!({"delta": text, "logprobs": []})),
        );
        events.push(
            "response.output_text.done",
            with(json!({"text": text, "logprobs": []})),
        );
    }
    events.push("response.content_part.done", with(json!({"part": part})));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(stream: &str) -> Vec<(String, Value)> {
        stream
            .split("\n\n")
            .filter(|event| !event.is_empty())
            .map(|event| {
                let mut lines = event.lines();
                let name = lines
                    .next()
                    .unwrap()
                    .trim_start_matches("event: ")
                    .to_owned();
                let data = lines.next().unwrap().trim_start_matches("data: ");
                (name, serde_json::from_str(data).unwrap())
            })
            .collect()
    }

    #[test]
    fn a_text_answer_streams_created_deltas_and_completed_in_sequence() {
        let response = json!({"id": "resp_1", "object": "response", "status": "completed",
            "output": [{"type": "message", "id": "msg_1", "role": "assistant",
                        "status": "completed",
                        "content": [{"type": "output_text", "text": "Hi there", "annotations": []}]}],
            "usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}});
        let events = parsed(&replay(&response));
        let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (n, (name, data)) in events.iter().enumerate() {
            assert_eq!(data["type"], name.as_str());
            assert_eq!(data["sequence_number"], n);
        }
        assert_eq!(events[0].1["response"]["status"], "in_progress");
        assert_eq!(events[0].1["response"]["output"], json!([]));
        assert_eq!(events[4].1["delta"], "Hi there");
        assert_eq!(events[4].1["item_id"], "msg_1");
        assert_eq!(events[8].1["response"], response);
    }

    #[test]
    fn a_function_call_streams_its_arguments_and_an_incomplete_answer_ends_so() {
        let response = json!({"status": "incomplete", "output": [
            {"type": "function_call", "id": "fc_1", "call_id": "c", "name": "f",
             "arguments": "{\"x\":1}", "status": "completed"}]});
        let events = parsed(&replay(&response));
        let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
        assert!(names.contains(&"response.function_call_arguments.done"));
        assert_eq!(events[2].1["item"]["arguments"], "");
        assert_eq!(names.last(), Some(&"response.incomplete"));
        let failed = parsed(&replay(&json!({"status": "failed", "output": []})));
        assert_eq!(failed.last().unwrap().0, "response.failed");
    }
}
