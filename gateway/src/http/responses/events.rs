//! A `response`'s event stream (OpenAI's API reference, "Streaming events"):
//! `response.created`, `response.in_progress`, per output item its `added`, content and
//! `done` events, then `response.completed`, `response.incomplete` or `response.failed`.
//! Every event names its `type` in both the SSE `event:` line and the data, and carries a
//! `sequence_number` from 0, which is also its SSE `id` (what `Last-Event-ID` and
//! `starting_after` name). There is no `[DONE]`: a Responses stream ends with the connection.
//!
//! A finished response is replayed whole ([`replay`]). A live one ([`opening`],
//! [`relayed`], [`closing`]) gets its first two events and its closing event from the
//! gateway, which owns the response's id and status, and its item events from the node:
//! the relayed chunk `k` is the event numbered `k + 2` ([`OPENING`]).

use serde_json::{Map, Value, json};

/// How many events come before the first item event: `response.created` and
/// `response.in_progress`.
pub const OPENING: u64 = 2;

/// Writes events in order, numbering them, and leaves out those a resuming client has.
struct Events {
    out: String,
    sequence: u64,
    /// The number of the last event the client has.
    after: Option<u64>,
}

impl Events {
    fn new(sequence: u64, after: Option<u64>) -> Self {
        Self {
            out: String::new(),
            sequence,
            after,
        }
    }

    /// Appends event `kind` with the fields of `data` (an object), `type` first as OpenAI
    /// writes it.
    fn push(&mut self, kind: &str, data: Value) {
        let sequence = self.sequence;
        self.sequence += 1;
        if self.after.is_some_and(|after| sequence <= after) {
            return;
        }
        let mut event = Map::new();
        event.insert("type".to_owned(), json!(kind));
        if let Value::Object(fields) = data {
            event.extend(fields);
        }
        event.insert("sequence_number".to_owned(), json!(sequence));
        self.out.push_str(&format!("id: {sequence}\n"));
        let data = Value::Object(event).to_string();
        crate::http::sse::frame(&mut self.out, Some(kind), &data);
    }
}

/// `response` as it opens: in progress, with no output, usage or error yet.
fn opened(response: &Value) -> Value {
    let mut opening = response.clone();
    opening["status"] = json!("in_progress");
    opening["output"] = json!([]);
    opening["usage"] = Value::Null;
    opening["error"] = Value::Null;
    opening["incomplete_details"] = Value::Null;
    opening
}

/// The events of `response`, a `response` object in a final status, after event `after`.
pub fn replay(response: &Value, after: Option<u64>) -> String {
    let mut events = Events::new(0, after);
    push_opening(&mut events, response);
    let outputs = response["output"].as_array().cloned().unwrap_or_default();
    for (index, item) in outputs.iter().enumerate() {
        output_item(&mut events, index, item);
    }
    push_closing(&mut events, response);
    events.out
}

/// `response.created` and `response.in_progress` of a live stream, after event `after`.
pub fn opening(response: &Value, after: Option<u64>) -> String {
    let mut events = Events::new(0, after);
    push_opening(&mut events, response);
    events.out
}

/// The closing event of `response` (final), numbered `sequence`.
pub fn closing(response: &Value, sequence: u64) -> String {
    let mut events = Events::new(sequence, None);
    push_closing(&mut events, response);
    events.out
}

/// An `error` event numbered `sequence`: a stream that cannot end with its response.
pub fn error(error: &openbeepboop::ErrorBody, sequence: u64) -> String {
    let mut events = Events::new(sequence, None);
    let data = json!({"code": error.code, "message": error.message, "param": error.param});
    events.push("error", data);
    events.out
}

/// Appends relayed chunk `seq`, an item event as the node sent it, as the event numbered
/// `seq + OPENING`: its `sequence_number` is ours, and its `type` names the SSE event.
/// Data that is not an object goes out unnamed, as it came.
pub fn relayed(seq: u64, chunk: &[u8], out: &mut Vec<u8>) {
    let sequence = seq + OPENING;
    out.extend_from_slice(format!("id: {sequence}\n").as_bytes());
    match serde_json::from_slice::<Map<String, Value>>(chunk) {
        Ok(mut event) => {
            event.insert("sequence_number".to_owned(), json!(sequence));
            if let Some(kind) = event.get("type").and_then(Value::as_str) {
                // An event name is one line: a type with a line break is not one to name.
                if !kind.contains(['\r', '\n']) {
                    out.extend_from_slice(format!("event: {kind}\n").as_bytes());
                }
            }
            super::super::sse::data_bytes(out, Value::Object(event).to_string().as_bytes());
        }
        Err(_) => super::super::sse::data_bytes(out, chunk),
    }
}

fn push_opening(events: &mut Events, response: &Value) {
    let opening = opened(response);
    events.push("response.created", json!({"response": opening}));
    events.push("response.in_progress", json!({"response": opening}));
}

fn push_closing(events: &mut Events, response: &Value) {
    let closing = match response["status"].as_str() {
        Some("incomplete") => "response.incomplete",
        Some("failed" | "cancelled") => "response.failed",
        _ => "response.completed",
    };
    events.push(closing, json!({"response": response}));
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

    /// Each event's name and data; its `id` must be its `sequence_number`.
    fn parsed(stream: &str) -> Vec<(String, Value)> {
        stream
            .split("\n\n")
            .filter(|event| !event.is_empty())
            .map(|event| {
                let mut lines = event.lines();
                let id = lines.next().unwrap().trim_start_matches("id: ").to_owned();
                let name = lines
                    .next()
                    .unwrap()
                    .trim_start_matches("event: ")
                    .to_owned();
                let data: Value =
                    serde_json::from_str(lines.next().unwrap().trim_start_matches("data: "))
                        .unwrap();
                assert_eq!(data["sequence_number"].to_string(), id);
                (name, data)
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
        let events = parsed(&replay(&response, None));
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
        let events = parsed(&replay(&response, None));
        let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
        assert!(names.contains(&"response.function_call_arguments.done"));
        assert_eq!(events[2].1["item"]["arguments"], "");
        assert_eq!(names.last(), Some(&"response.incomplete"));
        let failed = parsed(&replay(&json!({"status": "failed", "output": []}), None));
        assert_eq!(failed.last().unwrap().0, "response.failed");
    }

    #[test]
    fn a_live_stream_numbers_relayed_items_after_the_opening_and_a_resume_skips_what_it_had() {
        let response = json!({"id": "resp_1", "status": "completed", "output": []});
        let opening = parsed(&opening(&response, Some(0)));
        assert_eq!(opening.len(), 1, "the client has `response.created`");
        assert_eq!(opening[0].0, "response.in_progress");
        assert_eq!(opening[0].1["response"]["status"], "in_progress");

        let mut out = Vec::new();
        let delta = br#"{"type":"response.output_text.delta","item_id":"msg_up","output_index":0,"content_index":0,"delta":"Hi","sequence_number":7}"#;
        relayed(0, delta, &mut out);
        let events = parsed(&String::from_utf8(out).unwrap());
        assert_eq!(events[0].0, "response.output_text.delta");
        assert_eq!(events[0].1["sequence_number"], 2);
        assert_eq!(events[0].1["item_id"], "msg_up");

        let end = parsed(&closing(&response, 3));
        assert_eq!(
            (end[0].0.as_str(), &end[0].1["sequence_number"]),
            ("response.completed", &json!(3))
        );
        let replayed = parsed(&replay(&response, Some(1)));
        assert_eq!(replayed.len(), 1);
        assert_eq!(replayed[0].1["sequence_number"], 2);
    }
}
