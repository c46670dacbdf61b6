//! A Responses job's stream as the node relays it: only item events (OpenAI's API
//! reference, "Streaming events": `response.output_item.*`, `response.content_part.*`,
//! `response.output_text.*`, `response.function_call_arguments.*`, …), since the gateway
//! writes the events that carry the response itself (`response.created`, `…in_progress`
//! and the closing one) under its own id, and numbers every event.
//!
//! From an upstream with `/v1/responses`, [`sort`] tells item events (relayed as they are,
//! but for the fields OpenAI's have and some servers leave out: [`Filler`]) from the closing
//! event whose `response` is the result. From one without, [`Translation`]
//! turns chat completion chunks into the item events a Responses server would send, and
//! builds the `response` the non-streamed translation ([`super::from_chat`]) builds, with
//! the item ids the events named. Pure: reading and relaying are the worker's part.

use super::from_chat;
use crate::upstream::{Completion, UpstreamError};
use openbeepboop::ChatAccumulator;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

/// Events that carry the response itself: the gateway writes its own.
const LIFECYCLE: [&str; 3] = [
    "response.created",
    "response.queued",
    "response.in_progress",
];

/// Events that end a response's stream, with the response in its final status.
const CLOSING: [&str; 3] = [
    "response.completed",
    "response.incomplete",
    "response.failed",
];

/// What one event of an upstream's Responses stream is to the node.
#[derive(Debug)]
pub enum Sorted {
    /// An item event: relayed as it is.
    Item,
    /// The closing event: its `response` is the job's result.
    Closing(Box<RawValue>),
    /// An `error` event: the stream failed; its message.
    Error(String),
    /// Anything else (the lifecycle events, events of other kinds): not relayed.
    Skip,
}

/// Sorts one event's data by its `type`.
pub fn sort(event: &RawValue) -> Sorted {
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(rename = "type", borrow, default)]
        kind: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        response: Option<&'a RawValue>,
        #[serde(default)]
        message: Option<String>,
    }
    let Ok(head) = serde_json::from_str::<Head>(event.get()) else {
        return Sorted::Skip;
    };
    let kind = head.kind.unwrap_or_default();
    match (kind.as_ref(), head.response) {
        (kind, Some(response)) if CLOSING.contains(&kind) => Sorted::Closing(response.to_owned()),
        ("error", _) => Sorted::Error(
            head.message
                .unwrap_or_else(|| format!("the upstream streamed an error: {}", event.get())),
        ),
        (kind, _) if LIFECYCLE.contains(&kind) || CLOSING.contains(&kind) => Sorted::Skip,
        (kind, _) if kind.starts_with("response.") => Sorted::Item,
        _ => Sorted::Skip,
    }
}

/// Fills in the fields of item events that OpenAI's have, the SDKs read, and an upstream
/// left out: llama.cpp's server sends no `output_index`, `content_index` or `logprobs`, and
/// its `output_text` parts no `annotations`. They follow from the events before: an item's
/// index is its place among the items added, a part's its place among its item's parts.
#[derive(Debug, Default)]
pub struct Filler {
    /// Item ids by output index.
    items: Vec<Value>,
    /// Parts added so far, by item id.
    parts: Vec<(Value, usize)>,
}

impl Filler {
    /// `event` with what it lacks filled in, or `None` when it lacks nothing.
    pub fn fill(&mut self, event: &RawValue) -> Option<Box<RawValue>> {
        let mut event: Map<String, Value> = serde_json::from_str(event.get()).ok()?;
        let kind = event.get("type").and_then(Value::as_str)?.to_owned();
        let mut filled = false;
        let mut set = |event: &mut Map<String, Value>, key: &str, value: Value| {
            if !event.contains_key(key) {
                event.insert(key.to_owned(), value);
                filled = true;
            }
        };
        let item_id = event
            .get("item_id")
            .or_else(|| event.get("item").and_then(|item| item.get("id")))
            .cloned()
            .unwrap_or(Value::Null);
        let known = self.items.iter().position(|id| *id == item_id);
        match (kind.as_str(), known) {
            ("response.output_item.added", None) => {
                let index = match event.get("output_index").and_then(Value::as_u64) {
                    Some(index) => index as usize,
                    None => self.items.len(),
                };
                set(&mut event, "output_index", json!(index));
                if self.items.len() <= index {
                    self.items.resize(index + 1, Value::Null);
                }
                self.items[index] = item_id.clone();
            }
            (_, Some(index)) => set(&mut event, "output_index", json!(index)),
            _ => {}
        }
        let parts = match self.parts.iter_mut().find(|(id, _)| *id == item_id) {
            Some((_, parts)) => parts,
            None => {
                self.parts.push((item_id, 0));
                &mut self.parts.last_mut()?.1
            }
        };
        if kind == "response.content_part.added" {
            *parts += 1;
        }
        let content = matches!(
            kind.as_str(),
            "response.content_part.added"
                | "response.content_part.done"
                | "response.output_text.delta"
                | "response.output_text.done"
                | "response.refusal.delta"
                | "response.refusal.done"
        );
        if content {
            set(&mut event, "content_index", json!(parts.saturating_sub(1)));
        }
        if matches!(
            kind.as_str(),
            "response.output_text.delta" | "response.output_text.done"
        ) {
            set(&mut event, "logprobs", json!([]));
        }
        if let Some(Value::Object(part)) = event.get_mut("part")
            && part.get("type") == Some(&json!("output_text"))
            && !part.contains_key("annotations")
        {
            part.insert("annotations".to_owned(), json!([]));
            filled = true;
        }
        if !filled {
            return None;
        }
        serde_json::value::to_raw_value(&event).ok()
    }
}

/// The closing event's `response` as the job's result.
pub fn response_of(response: &RawValue) -> Result<Completion, UpstreamError> {
    Completion::parse(response.get().to_owned()).map_err(|e| UpstreamError::Invalid {
        status: 200,
        message: format!("the upstream's closing event has no readable response: {e}"),
    })
}

/// One output item as it streams.
#[derive(Debug)]
enum Item {
    Message {
        id: String,
        /// `output_text` and `refusal` parts, in order: their type and text so far.
        parts: Vec<(&'static str, String)>,
    },
    Call {
        id: String,
        call_id: Value,
        name: Value,
        arguments: String,
    },
}

impl Item {
    fn id(&self) -> &str {
        match self {
            Item::Message { id, .. } | Item::Call { id, .. } => id,
        }
    }

    /// The item as `output` holds it, finished (`completed`, as [`from_chat`] has it), or
    /// as `output_item.added` shows it (`in_progress`, empty).
    fn to_value(&self, finished: bool) -> Value {
        let status = if finished { "completed" } else { "in_progress" };
        match self {
            Item::Message { id, parts } => {
                let content: Vec<Value> = if finished {
                    parts.iter().map(|(kind, text)| part(kind, text)).collect()
                } else {
                    Vec::new()
                };
                json!({"type": "message", "id": id, "status": status, "role": "assistant",
                       "content": content})
            }
            Item::Call {
                id,
                call_id,
                name,
                arguments,
            } => {
                let arguments = if finished { arguments.as_str() } else { "" };
                json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
                       "arguments": arguments, "status": status})
            }
        }
    }
}

/// A content part as a message's `content` holds it.
fn part(kind: &str, text: &str) -> Value {
    if kind == "refusal" {
        json!({"type": "refusal", "refusal": text})
    } else {
        json!({"type": "output_text", "text": text, "annotations": []})
    }
}

/// The item events of a chat completion stream, for a Responses job translated to chat.
/// Only the first choice counts, as in [`from_chat`]; reasoning deltas are not shown, as
/// the whole translation does not keep them.
pub struct Translation {
    request: Map<String, Value>,
    chat: ChatAccumulator,
    items: Vec<Item>,
    /// The item still streaming, by its output index; earlier ones are done.
    open: Option<usize>,
    /// Tool calls by their chat stream `index`, as output indexes.
    calls: Vec<(u64, usize)>,
}

impl Translation {
    /// For the job whose (Responses) request is `request`.
    pub fn new(request: Map<String, Value>) -> Self {
        Self {
            request,
            chat: ChatAccumulator::new(),
            items: Vec::new(),
            open: None,
            calls: Vec::new(),
        }
    }

    /// Takes one chat chunk and returns the item events it makes.
    pub fn push(&mut self, chunk: &RawValue) -> Result<Vec<Value>, serde_json::Error> {
        let chunk = ChatAccumulator::read_chunk(chunk.get())?;
        self.chat.push(&chunk);
        let mut events = Vec::new();
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else {
            return Ok(events);
        };
        for (field, kind) in [("content", "output_text"), ("refusal", "refusal")] {
            if let Some(text) = choice.delta.get(field).and_then(Value::as_str)
                && !text.is_empty()
            {
                self.text(kind, text, &mut events);
            }
        }
        for call in choice
            .delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.call(call, &mut events);
        }
        Ok(events)
    }

    /// The events that finish every item, and the `response` of the whole answer: the one
    /// [`from_chat`] makes of the assembled chat completion, with the items as streamed.
    pub fn finish(mut self) -> (Vec<Value>, Result<Completion, UpstreamError>) {
        let mut events = Vec::new();
        self.close(&mut events);
        let chat = self.chat.finish();
        let whole = serde_json::to_value(&chat).and_then(|chat| {
            let mut response = from_chat(&self.request, &chat);
            response["output"] = self.items.iter().map(|item| item.to_value(true)).collect();
            Completion::parse(response.to_string())
        });
        let completion = whole.map_err(|e| UpstreamError::Invalid {
            status: 200,
            message: format!("cannot translate the chat stream into a response: {e}"),
        });
        (events, completion)
    }

    /// A piece of the message's text (or refusal): the message and its part open first.
    fn text(&mut self, kind: &'static str, text: &str, events: &mut Vec<Value>) {
        let index = match self.open {
            Some(index) if matches!(self.items[index], Item::Message { .. }) => index,
            _ => self.add(
                Item::Message {
                    id: new_id("msg"),
                    parts: Vec::new(),
                },
                events,
            ),
        };
        let Item::Message { id, parts } = &mut self.items[index] else {
            return;
        };
        let content_index = match parts.last() {
            Some((last, _)) if *last == kind => parts.len() - 1,
            _ => {
                parts.push((kind, String::new()));
                events.push(json!({"type": "response.content_part.added", "item_id": id,
                    "output_index": index, "content_index": parts.len() - 1,
                    "part": part(kind, "")}));
                parts.len() - 1
            }
        };
        parts[content_index].1.push_str(text);
        let mut delta = json!({"type": if kind == "refusal" { "response.refusal.delta" } else { "response.output_text.delta" },
            "item_id": id, "output_index": index, "content_index": content_index, "delta": text});
        if kind != "refusal" {
            delta["logprobs"] = json!([]);
        }
        events.push(delta);
    }

    /// A tool call's delta: the call opens on its first, and its arguments stream.
    fn call(&mut self, delta: &Value, events: &mut Vec<Value>) {
        let stream_index = delta["index"].as_u64().unwrap_or(0);
        let index = match self.calls.iter().find(|(i, _)| *i == stream_index) {
            Some((_, index)) => *index,
            None => {
                let item = Item::Call {
                    id: new_id("fc"),
                    call_id: delta["id"].clone(),
                    name: delta["function"]["name"].clone(),
                    arguments: String::new(),
                };
                let index = self.add(item, events);
                self.calls.push((stream_index, index));
                index
            }
        };
        let Some(piece) = delta["function"]["arguments"]
            .as_str()
            .filter(|a| !a.is_empty())
        else {
            return;
        };
        if let Item::Call { id, arguments, .. } = &mut self.items[index] {
            arguments.push_str(piece);
            events.push(json!({"type": "response.function_call_arguments.delta",
                "item_id": id, "output_index": index, "delta": piece}));
        }
    }

    /// Adds an item after finishing the one still streaming; returns its output index.
    fn add(&mut self, item: Item, events: &mut Vec<Value>) -> usize {
        self.close(events);
        let index = self.items.len();
        events.push(
            json!({"type": "response.output_item.added", "output_index": index,
                           "item": item.to_value(false)}),
        );
        self.items.push(item);
        self.open = Some(index);
        index
    }

    /// Finishes the item still streaming: its parts' or arguments' `done`, then its own.
    fn close(&mut self, events: &mut Vec<Value>) {
        let Some(index) = self.open.take() else {
            return;
        };
        let item = &self.items[index];
        let item_id = item.id();
        match item {
            Item::Message { parts, .. } => {
                for (content_index, (kind, text)) in parts.iter().enumerate() {
                    let done = if *kind == "refusal" {
                        json!({"type": "response.refusal.done", "refusal": text})
                    } else {
                        json!({"type": "response.output_text.done", "text": text, "logprobs": []})
                    };
                    for event in [
                        done,
                        json!({"type": "response.content_part.done", "part": part(kind, text)}),
                    ] {
                        let mut event = event;
                        event["item_id"] = json!(item_id);
                        event["output_index"] = json!(index);
                        event["content_index"] = json!(content_index);
                        events.push(event);
                    }
                }
            }
            Item::Call { arguments, .. } => {
                events.push(json!({"type": "response.function_call_arguments.done",
                    "item_id": item_id, "output_index": index, "arguments": arguments}));
            }
        }
        events.push(
            json!({"type": "response.output_item.done", "output_index": index,
                           "item": item.to_value(true)}),
        );
    }
}

/// An id with OpenAI's prefix for its kind (`msg`, `fc`) and 128 random bits.
fn new_id(prefix: &str) -> String {
    format!("{prefix}_{:032x}", rand::random::<u128>())
}
