//! Assembles a streamed answer back into the whole completion a non-streamed call returns:
//! [`ChatAccumulator`] for `chat.completion.chunk` events, [`TextCompletionAccumulator`] for
//! the legacy `/v1/completions` stream. It is the inverse of `replay.rs`'s `to_chunks`. It only
//! merges values; reading SSE and deciding what to relay is the node's part.
//!
//! The merge follows OpenAI's streaming format (the API reference's "The chat completion
//! chunk object", and what the official SDKs' stream accumulators do):
//! - text fields of a message (`content`, `refusal`, `reasoning_content`, `reasoning`) are
//!   joined in arrival order, per choice `index`;
//! - `tool_calls` deltas are merged by their own `index`: `id`, `type` and the function's
//!   `name` come from the first delta that has them, and `arguments` (or a custom tool's
//!   `input`) are joined;
//! - `logprobs.content` and `logprobs.refusal` are appended, and the last `finish_reason` kept;
//! - `usage` comes from the chunk that carries it (the last one, with `include_usage`);
//! - `id`, `created`, `model` and every other top-level field (`system_fingerprint`, ...)
//!   come from the first chunk that has them, except OpenAI's per-chunk `obfuscation` padding,
//!   which a whole completion does not have.
//!
//! Any other message field that is a list (`annotations`) is extended; any other field keeps
//! its latest non-null value, so an unknown field survives.

use crate::chat::{ChatCompletion, ChatCompletionChunk, ChatMessage, Choice, ChunkChoice, Usage};
use crate::completions::{TextChoice, TextCompletion};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Message fields whose deltas are pieces of one text.
const TEXT_FIELDS: [&str; 4] = ["content", "refusal", "reasoning_content", "reasoning"];

/// Top-level fields that only make sense on a chunk: OpenAI pads each chunk with a random
/// `obfuscation` string (`stream_options.include_obfuscation`, on by default).
const CHUNK_ONLY: [&str; 1] = ["obfuscation"];

/// Assembles `chat.completion.chunk` events into a `chat.completion`.
#[derive(Debug, Default, Clone)]
pub struct ChatAccumulator {
    head: Head,
    choices: BTreeMap<u32, ChoiceParts>,
    usage: Option<Usage>,
}

/// What the first chunks say about the whole completion.
#[derive(Debug, Default, Clone)]
struct Head {
    seen: bool,
    id: String,
    created: i64,
    model: String,
    extra: Map<String, Value>,
}

impl Head {
    fn take(&mut self, id: &str, created: i64, model: &str, extra: &Map<String, Value>) {
        if !self.seen {
            self.seen = true;
            self.id = id.to_owned();
            self.created = created;
            self.model = model.to_owned();
        }
        for (key, value) in extra {
            if CHUNK_ONLY.contains(&key.as_str()) {
                continue;
            }
            // First non-null wins: `system_fingerprint` repeats on every chunk.
            match self.extra.get(key) {
                Some(old) if !old.is_null() => {}
                _ => {
                    self.extra.insert(key.clone(), value.clone());
                }
            }
        }
    }
}

#[derive(Debug, Default, Clone)]
struct ChoiceParts {
    role: Option<String>,
    /// The message's fields but `role`, merged; `tool_calls` is kept apart until the end.
    message: Map<String, Value>,
    /// Tool calls by their stream `index`.
    tool_calls: BTreeMap<u64, Map<String, Value>>,
    /// Whether a delta had a `tool_calls` list (an empty one is kept, as the upstream sent it).
    saw_tool_calls: bool,
    logprobs: Option<Value>,
    finish_reason: Option<String>,
    extra: Map<String, Value>,
}

impl ChatAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one chunk, in stream order.
    pub fn push(&mut self, chunk: &ChatCompletionChunk) {
        self.head
            .take(&chunk.id, chunk.created, &chunk.model, &chunk.extra);
        if let Some(usage) = &chunk.usage {
            self.usage = Some(usage.clone());
        }
        for part in &chunk.choices {
            let choice = self.choices.entry(part.index).or_default();
            choice.add(part);
        }
    }

    /// Reads one event's data leniently and adds it (see [`Self::read_chunk`]).
    pub fn push_json(&mut self, data: &str) -> Result<(), serde_json::Error> {
        self.push(&Self::read_chunk(data)?);
        Ok(())
    }

    /// Reads one event's data as a chunk, leniently, as servers differ: a missing `id`,
    /// `object`, `created`, `model`, `choices`, choice `index` or `delta` gets a default.
    /// Errors when the data is not a JSON object, or a field has the wrong type.
    pub fn read_chunk(data: &str) -> Result<ChatCompletionChunk, serde_json::Error> {
        let mut chunk: Map<String, Value> = serde_json::from_str(data)?;
        fill_chunk_defaults(&mut chunk, "chat.completion.chunk");
        if let Some(Value::Array(choices)) = chunk.get_mut("choices") {
            for (position, choice) in choices.iter_mut().enumerate() {
                if let Value::Object(choice) = choice {
                    if !choice.get("index").is_some_and(Value::is_u64) {
                        choice.insert("index".to_owned(), Value::from(position));
                    }
                    if !choice.get("delta").is_some_and(Value::is_object) {
                        choice.insert("delta".to_owned(), Value::Object(Map::new()));
                    }
                }
            }
        }
        serde_json::from_value(Value::Object(chunk))
    }

    /// The completion the chunks make, with its choices in `index` order. A choice that
    /// named no role is an `assistant`'s; `logprobs` is `null` on a choice that had none, as
    /// in a non-streamed completion.
    pub fn finish(self) -> ChatCompletion {
        let choices = self
            .choices
            .into_iter()
            .map(|(index, parts)| parts.finish(index))
            .collect();
        ChatCompletion {
            id: self.head.id,
            object: "chat.completion".to_owned(),
            created: self.head.created,
            model: self.head.model,
            choices,
            usage: self.usage,
            extra: self.head.extra,
        }
    }
}

/// Gives a chunk the top-level fields the typed chunk needs when a server left them out.
fn fill_chunk_defaults(chunk: &mut Map<String, Value>, object: &str) {
    let defaults = [
        ("id", Value::String(String::new())),
        ("object", Value::String(object.to_owned())),
        ("created", Value::from(0)),
        ("model", Value::String(String::new())),
        ("choices", Value::Array(Vec::new())),
    ];
    for (key, default) in defaults {
        let entry = chunk.entry(key).or_insert(Value::Null);
        if entry.is_null() {
            *entry = default;
        }
    }
}

impl ChoiceParts {
    fn add(&mut self, part: &ChunkChoice) {
        for (key, value) in &part.delta {
            match key.as_str() {
                "role" => {
                    if let (None, Some(role)) = (&self.role, value.as_str()) {
                        self.role = Some(role.to_owned());
                    }
                }
                "tool_calls" if value.is_array() => {
                    self.saw_tool_calls = true;
                    self.add_tool_calls(value);
                }
                "function_call" => merge_call(&mut self.message, key, value),
                key if TEXT_FIELDS.contains(&key) => join_text(&mut self.message, key, value),
                _ => match (self.message.get_mut(key), value) {
                    // Lists (`annotations`) come in parts too.
                    (Some(Value::Array(items)), Value::Array(more)) => {
                        items.extend(more.iter().cloned());
                    }
                    _ => keep_latest(&mut self.message, key, value),
                },
            }
        }
        if let Some(logprobs) = part.logprobs.as_ref().filter(|v| !v.is_null()) {
            append_logprobs(&mut self.logprobs, logprobs);
        }
        if let Some(reason) = &part.finish_reason {
            self.finish_reason = Some(reason.clone());
        }
        for (key, value) in &part.extra {
            keep_latest(&mut self.extra, key, value);
        }
    }

    fn add_tool_calls(&mut self, deltas: &Value) {
        let Value::Array(deltas) = deltas else {
            return;
        };
        for (position, delta) in deltas.iter().enumerate() {
            let Value::Object(delta) = delta else {
                continue;
            };
            // A server that leaves `index` out sends each call whole, in order.
            let index = delta
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(position as u64);
            let call = self.tool_calls.entry(index).or_default();
            for (key, value) in delta {
                match key.as_str() {
                    "index" => {}
                    "function" | "custom" => merge_call(call, key, value),
                    _ => keep_first(call, key, value),
                }
            }
        }
    }

    fn finish(self, index: u32) -> Choice {
        let mut extra = Map::new();
        extra.insert("logprobs".to_owned(), self.logprobs.unwrap_or(Value::Null));
        extra.extend(self.extra);
        let mut fields = self.message;
        let content = fields.remove("content").filter(|v| !v.is_null());
        if self.saw_tool_calls {
            let calls = self.tool_calls.into_values().map(Value::Object).collect();
            fields.insert("tool_calls".to_owned(), Value::Array(calls));
        }
        Choice {
            index,
            message: ChatMessage {
                role: self.role.unwrap_or_else(|| "assistant".to_owned()),
                content,
                extra: fields,
            },
            finish_reason: self.finish_reason,
            extra,
        }
    }
}

/// Joins a text delta to what came before; a non-text value (content parts, say) replaces
/// it, and `null` only marks the field present.
fn join_text(fields: &mut Map<String, Value>, key: &str, value: &Value) {
    match (fields.get_mut(key), value) {
        (Some(Value::String(text)), Value::String(more)) => text.push_str(more),
        (Some(_), Value::Null) => {}
        _ => {
            fields.insert(key.to_owned(), value.clone());
        }
    }
}

/// A function call's (or custom tool call's) pieces: `arguments` and `input` are joined, and
/// anything else (`name`) is taken from the first delta that has it.
fn merge_call(fields: &mut Map<String, Value>, key: &str, value: &Value) {
    let Value::Object(pieces) = value else {
        keep_latest(fields, key, value);
        return;
    };
    let entry = fields
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    let Value::Object(call) = entry else {
        return;
    };
    for (name, piece) in pieces {
        match name.as_str() {
            "arguments" | "input" => join_text(call, name, piece),
            _ => keep_first(call, name, piece),
        }
    }
}

/// Keeps the first value that is not `null` or empty: some servers repeat a tool call's
/// `id` and `type` on every delta.
fn keep_first(fields: &mut Map<String, Value>, key: &str, value: &Value) {
    let blank = |v: &Value| v.is_null() || v.as_str().is_some_and(str::is_empty);
    match fields.get(key) {
        Some(old) if !blank(old) => {}
        Some(_) if blank(value) => {}
        _ => {
            fields.insert(key.to_owned(), value.clone());
        }
    }
}

/// Keeps the latest value that is not `null`; `null` only marks the field present.
fn keep_latest(fields: &mut Map<String, Value>, key: &str, value: &Value) {
    if value.is_null() && fields.contains_key(key) {
        return;
    }
    fields.insert(key.to_owned(), value.clone());
}

/// Appends a chunk's logprobs: the arrays under each key (`content` and `refusal` for chat;
/// `tokens`, `token_logprobs`, `top_logprobs` and `text_offset` for legacy completions) are
/// extended, and other values kept as [`keep_latest`] does.
fn append_logprobs(total: &mut Option<Value>, more: &Value) {
    match (total.as_mut(), more) {
        (Some(Value::Object(total)), Value::Object(more)) => {
            for (key, value) in more {
                match (total.get_mut(key), value) {
                    (Some(Value::Array(items)), Value::Array(new)) => items.extend(new.clone()),
                    _ => keep_latest(total, key, value),
                }
            }
        }
        _ => *total = Some(more.clone()),
    }
}

/// Assembles the legacy `/v1/completions` stream (each chunk a `text_completion` object)
/// into one `text_completion`: per choice `index`, `text` is joined and `logprobs`
/// appended; the rest is merged as [`ChatAccumulator`] does.
#[derive(Debug, Default, Clone)]
pub struct TextCompletionAccumulator {
    head: Head,
    choices: BTreeMap<u32, TextParts>,
    usage: Option<Value>,
}

#[derive(Debug, Default, Clone)]
struct TextParts {
    text: String,
    logprobs: Option<Value>,
    finish_reason: Option<String>,
    extra: Map<String, Value>,
}

impl TextCompletionAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one chunk, in stream order.
    pub fn push(&mut self, chunk: &TextCompletion) {
        self.head
            .take(&chunk.id, chunk.created, &chunk.model, &chunk.extra);
        if let Some(usage) = chunk.usage.as_ref().filter(|u| !u.is_null()) {
            self.usage = Some(usage.clone());
        }
        for part in &chunk.choices {
            let choice = self.choices.entry(part.index).or_default();
            choice.text.push_str(&part.text);
            if let Some(logprobs) = part.logprobs.as_ref().filter(|v| !v.is_null()) {
                append_logprobs(&mut choice.logprobs, logprobs);
            }
            if let Some(reason) = &part.finish_reason {
                choice.finish_reason = Some(reason.clone());
            }
            for (key, value) in &part.extra {
                keep_latest(&mut choice.extra, key, value);
            }
        }
    }

    /// Reads one event's data (a `text_completion` chunk, which the type reads leniently)
    /// and adds it. Errors when the data is not a JSON object of that shape.
    pub fn push_json(&mut self, data: &str) -> Result<(), serde_json::Error> {
        let chunk: TextCompletion = serde_json::from_str(data)?;
        self.push(&chunk);
        Ok(())
    }

    /// The completion the chunks make, with its choices in `index` order.
    pub fn finish(self) -> TextCompletion {
        let choices = self
            .choices
            .into_iter()
            .map(|(index, parts)| TextChoice {
                text: parts.text,
                index,
                logprobs: parts.logprobs,
                finish_reason: parts.finish_reason,
                extra: parts.extra,
            })
            .collect();
        TextCompletion {
            id: self.head.id,
            object: "text_completion".to_owned(),
            created: self.head.created,
            model: self.head.model,
            choices,
            usage: self.usage,
            extra: self.head.extra,
        }
    }
}

#[cfg(test)]
mod tests;
