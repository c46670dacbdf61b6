//! The mock's streamed answers: a `stream: true` chat or legacy completions call is answered
//! `text/event-stream`, in HTTP/1.1 chunked coding, one SSE event per write. Chunk `i`'s text
//! is `t{i} ` and every chunk carries `obb_sent_us`, the wall-clock microseconds (Unix) at
//! which it was written, so that a test or a bench can measure what was added on the way.
//! It is not a model: the text says which chunk it is, nothing more.

use super::{Kind, MockState, lock};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// How the mock streams: `chunks` text chunks, `gap` apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamShape {
    pub chunks: usize,
    pub gap: Duration,
}

impl Default for StreamShape {
    fn default() -> Self {
        Self {
            chunks: 3,
            gap: Duration::ZERO,
        }
    }
}

/// What the next streamed answer does after its `k`th text chunk (counted from 0) instead
/// of going on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFault {
    /// Close the connection, without the chunked coding's end or `[DONE]`.
    CutAfter(usize),
    /// Send an `{"error":…}` event, as OpenAI does when a stream fails, and end the body.
    ErrorAfter(usize),
}

/// One streamed answer to write.
pub(super) struct Streamed {
    pub kind: Kind,
    pub model: Value,
    pub call: u64,
    pub include_usage: bool,
    /// For `/v1/responses`: the whole answer, whose text the stream replaces.
    pub response: Option<Value>,
}

/// Whether a request asks for a stream the mock can give: chat, legacy completions or
/// Responses with `"stream": true`.
pub(super) fn wants_stream(kind: Kind, request: &Value) -> bool {
    matches!(kind, Kind::Chat | Kind::Completions | Kind::Responses) && request["stream"] == true
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Streamed {
    /// The chunk at `position`: text while `text` is given, else the closing chunk with the
    /// finish reason; `usage` makes it the usage chunk (no choices).
    fn chunk(&self, text: Option<&str>, usage: Option<Value>, first: bool) -> Value {
        let (object, choices) = match self.kind {
            Kind::Completions => {
                let choice = json!({"text": text.unwrap_or_default(), "index": 0,
                    "logprobs": null, "finish_reason": if text.is_some() { Value::Null } else { json!("stop") }});
                ("text_completion", choice)
            }
            _ => {
                let mut delta = json!({});
                if first {
                    delta["role"] = json!("assistant");
                }
                if let Some(text) = text {
                    delta["content"] = json!(text);
                }
                let choice = json!({"index": 0, "delta": delta, "logprobs": null,
                    "finish_reason": if text.is_some() { Value::Null } else { json!("stop") }});
                ("chat.completion.chunk", choice)
            }
        };
        let prefix = if self.kind == Kind::Completions {
            "cmpl"
        } else {
            "chatcmpl"
        };
        let mut chunk = json!({"id": format!("{prefix}-mock-{}", self.call), "object": object,
            "created": 1_700_000_000, "model": self.model, "system_fingerprint": "mock",
            "choices": if usage.is_some() { json!([]) } else { json!([choices]) }});
        if let Some(usage) = usage {
            chunk["usage"] = usage;
        }
        chunk["obb_sent_us"] = json!(now_us());
        chunk
    }
}

/// Writes one HTTP/1.1 chunk holding `data`.
async fn write_chunk<W: AsyncWrite + Unpin>(writer: &mut W, data: &[u8]) -> std::io::Result<()> {
    let mut frame = format!("{:x}\r\n", data.len()).into_bytes();
    frame.extend_from_slice(data);
    frame.extend_from_slice(b"\r\n");
    writer.write_all(&frame).await?;
    writer.flush().await
}

async fn write_event<W: AsyncWrite + Unpin>(writer: &mut W, data: &Value) -> std::io::Result<()> {
    write_chunk(writer, format!("data: {data}\n\n").as_bytes()).await
}

/// Streams the answer on `writer`. Returns whether the connection can serve another
/// request (false after a cut).
pub(super) async fn write<W: AsyncWrite + Unpin>(
    writer: &mut W,
    state: &MockState,
    streamed: Streamed,
) -> std::io::Result<bool> {
    let shape = *lock(&state.stream_shape);
    let fault = lock(&state.stream_faults).pop_front();
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";
    writer.write_all(head.as_bytes()).await?;
    writer.flush().await?;
    {
        // Held before chunk 0 until a test releases it: a node killed here has relayed nothing.
        let mut held = state.hold.subscribe();
        state.streams_held.fetch_add(1, Ordering::SeqCst);
        let _ = held.wait_for(|hold| !*hold).await;
        state.streams_held.fetch_sub(1, Ordering::SeqCst);
    }
    if let Some(response) = &streamed.response {
        return write_response(writer, response, shape, fault).await;
    }
    for i in 0..shape.chunks {
        if i > 0 && !shape.gap.is_zero() {
            tokio::time::sleep(shape.gap).await;
        }
        let text = format!("t{i} ");
        write_event(writer, &streamed.chunk(Some(&text), None, i == 0)).await?;
        match fault {
            Some(StreamFault::CutAfter(k)) if k == i => {
                writer.shutdown().await?;
                return Ok(false);
            }
            Some(StreamFault::ErrorAfter(k)) if k == i => {
                let error = json!({"error": {"message": "mock upstream failed mid-stream",
                    "type": "server_error", "param": null, "code": null}});
                write_event(writer, &error).await?;
                write_chunk(writer, b"").await?;
                return Ok(true);
            }
            _ => {}
        }
    }
    write_event(writer, &streamed.chunk(None, None, shape.chunks == 0)).await?;
    if streamed.include_usage {
        let tokens = shape.chunks as u64;
        let usage =
            json!({"prompt_tokens": 3, "completion_tokens": tokens, "total_tokens": 3 + tokens});
        write_event(writer, &streamed.chunk(None, Some(usage), false)).await?;
    }
    write_chunk(writer, b"data: [DONE]\n\n").await?;
    write_chunk(writer, b"").await?;
    Ok(true)
}

/// A `/v1/responses` stream (OpenAI's "Streaming events"): the response's opening events,
/// one message item whose text comes as `shape.chunks` deltas `t{i} ` (stamped like chat
/// chunks), its `done` events, and `response.completed` with `response` holding the text.
async fn write_response<W: AsyncWrite + Unpin>(
    writer: &mut W,
    response: &Value,
    shape: StreamShape,
    fault: Option<StreamFault>,
) -> std::io::Result<bool> {
    let mut sequence = 0u64;
    let mut event = async |writer: &mut W, kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(sequence);
        sequence += 1;
        write_chunk(
            writer,
            format!("event: {kind}\ndata: {data}\n\n").as_bytes(),
        )
        .await
    };
    let item_id = response["output"][0]["id"].clone();
    let text: String = (0..shape.chunks).map(|i| format!("t{i} ")).collect();
    let mut whole = response.clone();
    whole["output"][0]["content"][0]["text"] = json!(text);
    whole["usage"]["output_tokens"] = json!(shape.chunks);
    whole["usage"]["total_tokens"] = json!(3 + shape.chunks);
    let mut opening = whole.clone();
    opening["status"] = json!("in_progress");
    opening["output"] = json!([]);
    opening["usage"] = Value::Null;
    event(writer, "response.created", json!({"response": opening})).await?;
    event(writer, "response.in_progress", json!({"response": opening})).await?;
    let mut item = whole["output"][0].clone();
    item["status"] = json!("in_progress");
    item["content"] = json!([]);
    event(
        writer,
        "response.output_item.added",
        json!({"output_index": 0, "item": item}),
    )
    .await?;
    let at = |mut data: Value| {
        data["item_id"] = item_id.clone();
        data["output_index"] = json!(0);
        data["content_index"] = json!(0);
        data
    };
    let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": []});
    event(
        writer,
        "response.content_part.added",
        at(json!({"part": part("")})),
    )
    .await?;
    for i in 0..shape.chunks {
        if i > 0 && !shape.gap.is_zero() {
            tokio::time::sleep(shape.gap).await;
        }
        let delta = at(json!({"delta": format!("t{i} "), "logprobs": [], "obb_sent_us": now_us()}));
        event(writer, "response.output_text.delta", delta).await?;
        match fault {
            Some(StreamFault::CutAfter(k)) if k == i => {
                writer.shutdown().await?;
                return Ok(false);
            }
            Some(StreamFault::ErrorAfter(k)) if k == i => {
                let error = json!({"code": "server_error", "message": "mock upstream failed mid-stream", "param": null});
                event(writer, "error", error).await?;
                write_chunk(writer, b"").await?;
                return Ok(true);
            }
            _ => {}
        }
    }
    event(
        writer,
        "response.output_text.done",
        at(json!({"text": text, "logprobs": []})),
    )
    .await?;
    event(
        writer,
        "response.content_part.done",
        at(json!({"part": part(&text)})),
    )
    .await?;
    let done = json!({"output_index": 0, "item": whole["output"][0]});
    event(writer, "response.output_item.done", done).await?;
    event(writer, "response.completed", json!({"response": whole})).await?;
    write_chunk(writer, b"").await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::super::MockUpstream;
    use super::*;

    /// The `data:` payloads of an SSE body.
    fn events(body: &str) -> Vec<String> {
        body.split("\n\n")
            .filter_map(|event| event.strip_prefix("data: "))
            .map(str::to_owned)
            .collect()
    }

    async fn post(mock: &MockUpstream, path: &str, body: Value) -> reqwest::Result<String> {
        reqwest::Client::new()
            .post(format!("{}{path}", mock.base_url()))
            .json(&body)
            .send()
            .await?
            .text()
            .await
    }

    #[tokio::test]
    async fn a_stream_true_call_gets_stamped_text_chunks_then_usage_then_done() {
        let mock = MockUpstream::start(&["m"]).await.unwrap();
        mock.set_stream(2, Duration::from_millis(5));
        let before = now_us();
        let body = json!({"model": "m", "messages": [], "stream": true,
            "stream_options": {"include_usage": true}});
        let streamed = events(&post(&mock, "/chat/completions", body).await.unwrap());
        assert_eq!(streamed.len(), 5, "{streamed:?}");
        assert_eq!(streamed[4], "[DONE]");
        let chunks: Vec<Value> = streamed[..4]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": "t0 "})
        );
        assert_eq!(chunks[1]["choices"][0]["delta"], json!({"content": "t1 "}));
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[3]["choices"], json!([]));
        assert_eq!(chunks[3]["usage"]["completion_tokens"], 2);
        let sent: Vec<u64> = chunks
            .iter()
            .map(|c| c["obb_sent_us"].as_u64().unwrap())
            .collect();
        assert!(sent[0] >= before && sent[1] >= sent[0] + 5_000, "{sent:?}");

        // Legacy completions stream `text_completion` chunks; no usage unless asked.
        let body = json!({"model": "m", "prompt": "x", "stream": true});
        let legacy = events(&post(&mock, "/completions", body).await.unwrap());
        let first: Value = serde_json::from_str(&legacy[0]).unwrap();
        assert_eq!(
            (&first["object"], &first["choices"][0]["text"]),
            (&json!("text_completion"), &json!("t0 "))
        );
        assert_eq!(legacy.len(), 4, "2 texts, the finish, [DONE]: {legacy:?}");
    }

    #[tokio::test]
    async fn a_stream_can_be_held_cut_or_broken_by_an_error_event() {
        let mock = MockUpstream::start(&["m"]).await.unwrap();
        mock.set_stream(3, Duration::ZERO);
        let body = json!({"model": "m", "messages": [], "stream": true});
        mock.push_stream_faults([StreamFault::ErrorAfter(0), StreamFault::CutAfter(1)]);
        let errored = events(
            &post(&mock, "/chat/completions", body.clone())
                .await
                .unwrap(),
        );
        assert_eq!(errored.len(), 2, "{errored:?}");
        assert!(errored[1].contains("\"error\""));
        let cut = post(&mock, "/chat/completions", body.clone()).await;
        assert!(cut.is_err(), "a cut chunked body is an error: {cut:?}");

        mock.hold_streams();
        let response = reqwest::Client::new()
            .post(format!("{}/chat/completions", mock.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        crate::eventually(Duration::from_secs(5), "the stream to be held", || async {
            (mock.streams_held() == 1).then_some(())
        })
        .await;
        mock.release_streams();
        let held = events(&response.text().await.unwrap());
        assert_eq!(held.len(), 5, "3 texts, the finish, [DONE]: {held:?}");
    }

    #[tokio::test]
    async fn a_stream_true_responses_call_gets_item_events_then_the_whole_response() {
        let mock = MockUpstream::start(&["m"]).await.unwrap();
        mock.set_stream(2, Duration::ZERO);
        let body = json!({"model": "m", "input": "hi", "stream": true});
        let text = post(&mock, "/responses", body).await.unwrap();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("event: "))
            .collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let events: Vec<Value> = text
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .map(|data| serde_json::from_str(data).unwrap())
            .collect();
        for (n, event) in events.iter().enumerate() {
            assert_eq!(
                (&event["type"], &event["sequence_number"]),
                (&json!(names[n]), &json!(n))
            );
        }
        let completed = &events[9]["response"];
        assert_eq!(completed["output"][0]["content"][0]["text"], "t0 t1 ");
        assert_eq!(completed["output"][0]["id"], events[4]["item_id"]);
        assert_eq!(completed["usage"]["output_tokens"], 2);
    }
}
