//! The item events of a translated chat stream, and how a native stream's events are sorted.

use super::from_chat;
use super::stream::{Filler, Sorted, Translation, sort};
use openbeepboop::ChatAccumulator;
use serde_json::value::{RawValue, to_raw_value};
use serde_json::{Map, Value, json};

fn chunk(delta: Value, finish: Option<&str>) -> Box<RawValue> {
    to_raw_value(
        &json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7,
        "model": "real", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
    )
    .unwrap()
}

fn usage_chunk() -> Box<RawValue> {
    to_raw_value(
        &json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7,
        "model": "real", "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}}),
    )
    .unwrap()
}

fn request() -> Map<String, Value> {
    match json!({"model": "m", "input": "Weather in Paris?", "tools": [{"type": "function",
        "name": "get_weather", "parameters": {"type": "object"}}]})
    {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

/// The events of `chunks` in order, the stored response, and the response the whole
/// (non-streamed) translation makes of the same answer.
fn translated(chunks: &[Box<RawValue>]) -> (Vec<Value>, Value, Value) {
    let mut translation = Translation::new(request());
    let mut whole = ChatAccumulator::new();
    let mut events = Vec::new();
    for chunk in chunks {
        events.extend(translation.push(chunk).unwrap());
        whole.push_json(chunk.get()).unwrap();
    }
    let (done, completion) = translation.finish();
    events.extend(done);
    let completion = completion.unwrap();
    assert_eq!(
        (completion.prompt_tokens, completion.completion_tokens),
        (5, 4)
    );
    let stored: Value = serde_json::from_str(completion.body.get()).unwrap();
    let unstreamed = from_chat(&request(), &serde_json::to_value(whole.finish()).unwrap());
    (events, stored, unstreamed)
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// A response with its generated ids blanked, to compare two translations.
fn without_ids(mut response: Value) -> Value {
    response["id"] = json!("");
    for item in response["output"].as_array_mut().unwrap() {
        item["id"] = json!("");
    }
    response
}

#[test]
fn chat_text_deltas_become_a_message_whose_text_streams_and_the_stored_response_is_the_whole_translation()
 {
    let (events, stored, unstreamed) = translated(&[
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": "Hel"}), None),
        chunk(json!({"content": "lo"}), None),
        chunk(json!({}), Some("stop")),
        usage_chunk(),
    ]);
    assert_eq!(
        types(&events),
        [
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
        ]
    );
    let item_id = stored["output"][0]["id"].as_str().unwrap();
    assert!(item_id.starts_with("msg_"), "{stored}");
    for event in &events[1..6] {
        assert_eq!(event["item_id"], item_id, "{event}");
        assert_eq!(
            (&event["output_index"], &event["content_index"]),
            (&json!(0), &json!(0))
        );
    }
    assert_eq!(
        events[0]["item"],
        json!({"type": "message", "id": item_id, "status": "in_progress",
               "role": "assistant", "content": []})
    );
    assert_eq!(
        events[1]["part"],
        json!({"type": "output_text", "text": "", "annotations": []})
    );
    assert_eq!(
        (
            &events[2]["delta"],
            &events[3]["delta"],
            &events[2]["logprobs"]
        ),
        (&json!("Hel"), &json!("lo"), &json!([]))
    );
    assert_eq!(events[4]["text"], "Hello");
    assert_eq!(events[6]["item"], stored["output"][0]);
    assert_eq!(stored["status"], "completed");
    assert_eq!(stored["usage"]["input_tokens"], 5);
    assert_eq!(without_ids(stored), without_ids(unstreamed));
}

#[test]
fn a_tool_call_after_text_finishes_the_message_then_streams_its_arguments_under_one_id() {
    let call = |delta: Value| chunk(json!({"tool_calls": [delta]}), None);
    let (events, stored, unstreamed) = translated(&[
        chunk(json!({"role": "assistant", "content": "Checking."}), None),
        call(json!({"index": 0, "id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": ""}})),
        call(json!({"index": 0, "function": {"arguments": "{\"city\":"}})),
        call(json!({"index": 0, "function": {"arguments": "\"Paris\"}"}})),
        chunk(json!({}), Some("tool_calls")),
        usage_chunk(),
    ]);
    assert_eq!(
        types(&events),
        [
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            // The message is done before the call opens, as a Responses server orders them.
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
        ]
    );
    let call_item = &stored["output"][1];
    let fc_id = call_item["id"].as_str().unwrap();
    assert!(fc_id.starts_with("fc_"), "{stored}");
    assert_eq!(
        events[6]["item"],
        json!({"type": "function_call", "id": fc_id, "call_id": "call_1",
               "name": "get_weather", "arguments": "", "status": "in_progress"})
    );
    assert_eq!(events[6]["output_index"], 1);
    for event in &events[7..10] {
        assert_eq!(
            (&event["item_id"], &event["output_index"]),
            (&json!(fc_id), &json!(1))
        );
    }
    assert_eq!(events[7]["delta"], "{\"city\":");
    assert_eq!(events[9]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(events[10]["item"], *call_item);
    assert_eq!(call_item["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(without_ids(stored), without_ids(unstreamed));
}

#[test]
fn a_refusal_streams_as_a_refusal_part() {
    let (events, stored, unstreamed) = translated(&[
        chunk(json!({"role": "assistant", "refusal": "I can't"}), None),
        chunk(json!({"refusal": " help."}), Some("stop")),
        usage_chunk(),
    ]);
    assert_eq!(
        types(&events),
        [
            "response.output_item.added",
            "response.content_part.added",
            "response.refusal.delta",
            "response.refusal.delta",
            "response.refusal.done",
            "response.content_part.done",
            "response.output_item.done",
        ]
    );
    assert_eq!(events[4]["refusal"], "I can't help.");
    assert_eq!(without_ids(stored), without_ids(unstreamed));
}

#[test]
fn a_native_stream_relays_item_events_and_stores_the_closing_events_response() {
    let raw = |value: Value| to_raw_value(&value).unwrap();
    let response =
        json!({"id": "resp_up", "object": "response", "status": "completed", "output": []});
    for lifecycle in [
        "response.created",
        "response.in_progress",
        "response.queued",
    ] {
        let event = raw(json!({"type": lifecycle, "sequence_number": 0, "response": response}));
        assert!(matches!(sort(&event), Sorted::Skip), "{lifecycle}");
    }
    for item in [
        "response.output_item.added",
        "response.output_text.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_summary_text.delta",
    ] {
        let event =
            raw(json!({"type": item, "sequence_number": 3, "item_id": "x", "output_index": 0}));
        assert!(matches!(sort(&event), Sorted::Item), "{item}");
    }
    for closing in [
        "response.completed",
        "response.incomplete",
        "response.failed",
    ] {
        let event = raw(json!({"type": closing, "sequence_number": 9, "response": response}));
        match sort(&event) {
            Sorted::Closing(body) => {
                assert_eq!(serde_json::from_str::<Value>(body.get()).unwrap(), response)
            }
            other => panic!("{closing}: {other:?}"),
        }
    }
    let error =
        raw(json!({"type": "error", "code": "server_error", "message": "boom", "param": null}));
    assert!(matches!(sort(&error), Sorted::Error(message) if message == "boom"));
}

#[test]
fn what_llama_cpps_item_events_leave_out_is_filled_in_from_the_events_before() {
    // As llama.cpp's server streams them: no output_index, content_index or logprobs.
    let events = [
        json!({"type": "response.output_item.added", "item": {"content": [], "id": "msg_a",
               "role": "assistant", "status": "in_progress", "type": "message"}}),
        json!({"type": "response.content_part.added", "item_id": "msg_a",
               "part": {"type": "output_text", "text": ""}}),
        json!({"type": "response.output_text.delta", "item_id": "msg_a", "delta": "Hi"}),
        json!({"type": "response.output_text.done", "item_id": "msg_a", "text": "Hi"}),
        json!({"type": "response.output_item.added", "output_index": 1, "item": {"id": "fc_b",
               "type": "function_call", "call_id": "c", "name": "f", "arguments": ""}}),
        json!({"type": "response.function_call_arguments.delta", "item_id": "fc_b", "delta": "{}"}),
    ];
    let mut filler = Filler::default();
    let filled: Vec<Value> = events
        .iter()
        .map(|event| {
            let raw = to_raw_value(event).unwrap();
            match filler.fill(&raw) {
                Some(filled) => serde_json::from_str(filled.get()).unwrap(),
                None => event.clone(),
            }
        })
        .collect();
    assert_eq!(filled[0]["output_index"], 0);
    assert_eq!(
        (&filled[1]["output_index"], &filled[1]["content_index"]),
        (&json!(0), &json!(0))
    );
    assert_eq!(filled[1]["part"]["annotations"], json!([]));
    assert_eq!(
        (&filled[2]["content_index"], &filled[2]["logprobs"]),
        (&json!(0), &json!([]))
    );
    assert_eq!(filled[3]["logprobs"], json!([]));
    assert_eq!(filled[5]["output_index"], 1);
    assert!(filled[5].get("content_index").is_none());
    // An event that lacks nothing is relayed as it came.
    let whole = json!({"type": "response.output_text.delta", "item_id": "msg_a",
        "output_index": 0, "content_index": 0, "delta": "!", "logprobs": []});
    assert!(filler.fill(&to_raw_value(&whole).unwrap()).is_none());
}
