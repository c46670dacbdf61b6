//! Responses jobs against the real small LLM (llama.cpp's server with SmolLM2, as in
//! `real_llm`), through the node's upstream client: the route the server has is used, and
//! the translation to chat completions is one the real server accepts.

use crate::real_llm::LlamaServer;
use obb_node::responses;
use obb_node::responses::stream::{Filler, Sorted, Translation, response_of, sort};
use obb_node::routing::Upstream;
use obb_node::upstream::{
    Completion, ResponsesStream, RetryPolicy, UpstreamClient, UpstreamStream,
};
use openbeepboop::Endpoint;
use serde_json::value::{RawValue, to_raw_value};
use serde_json::{Value, json};
use std::time::Duration;

fn client(base_url: &str) -> UpstreamClient {
    let upstream = Upstream {
        base_url: base_url.to_owned(),
        api_key: None,
        key_source: None,
        section: "local_llm",
        ca_cert: None,
    };
    let retry = RetryPolicy {
        max_retries: 1,
        backoff: Duration::from_millis(100),
    };
    UpstreamClient::new(
        upstream,
        Duration::from_secs(5),
        Duration::from_secs(120),
        retry,
    )
    .unwrap()
}

/// The text of a response's `message` items, joined.
fn output_text(response: &Value) -> String {
    response["output"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|item| item["type"] == "message")
        .flat_map(|item| item["content"].as_array().cloned().unwrap_or_default())
        .filter(|part| part["type"] == "output_text")
        .filter_map(|part| part["text"].as_str().map(str::to_owned))
        .collect()
}

/// A finished response with text and usage whose counts agree with the node's log.
fn assert_answered(response: &Value, prompt_tokens: u64, completion_tokens: u64) {
    assert_eq!(response["object"], "response", "{response}");
    let status = response["status"].as_str().unwrap();
    assert!(
        status == "completed"
            || (status == "incomplete"
                && response["incomplete_details"]["reason"] == "max_output_tokens"),
        "{response}"
    );
    assert!(!output_text(response).trim().is_empty(), "{response}");
    let usage = &response["usage"];
    let (input, output) = (
        usage["input_tokens"].as_u64().unwrap(),
        usage["output_tokens"].as_u64().unwrap(),
    );
    assert!(input > 0 && output > 0, "{response}");
    assert_eq!(usage["total_tokens"].as_u64(), Some(input + output));
    assert_eq!((prompt_tokens, completion_tokens), (input, output));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_small_llm_answers_a_responses_job_natively_or_translated_as_its_routes_say() {
    let llm = LlamaServer::start();
    let base = format!("http://127.0.0.1:{}/v1", llm.port);
    let client = client(&base);
    let job = json!({
        "model": "smollm2", "instructions": "You are brief.", "input": "Say hello.",
        "max_output_tokens": 12, "temperature": 0,
        "stream": true, "background": true, "previous_response_id": "resp_earlier",
    });
    let completion = client
        .complete(
            Endpoint::Responses,
            &to_raw_value(&job).unwrap(),
            "smollm2",
            None,
        )
        .await
        .unwrap();
    let response: Value = serde_json::from_str(completion.body.get()).unwrap();
    assert_answered(
        &response,
        completion.prompt_tokens,
        completion.completion_tokens,
    );

    // What the server itself says about the route decides which path the node must take.
    let probe = reqwest::Client::new()
        .post(format!("{base}/responses"))
        .json(&json!({"model": "smollm2", "input": "Hi", "max_output_tokens": 1}))
        .send()
        .await
        .unwrap()
        .status();
    let native = probe != reqwest::StatusCode::NOT_FOUND;
    assert_eq!(
        client.translates_responses(),
        !native,
        "the server answered {probe} at /responses"
    );
    if !native {
        assert_eq!(response["instructions"], "You are brief.", "{response}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chat_translation_of_a_multi_turn_responses_request_is_answered_by_a_real_small_llm() {
    let llm = LlamaServer::start();
    let client = client(&format!("http://127.0.0.1:{}/v1", llm.port));
    let request = json!({
        "model": "smollm2", "instructions": "You are brief.", "max_output_tokens": 8,
        "temperature": 0, "metadata": {"obb_priority": "1"},
        "input": [
            {"role": "user", "content": "My name is Ada."},
            {"type": "message", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "Hello Ada.", "annotations": []}]},
            {"role": "user", "content": [{"type": "input_text", "text": "What is my name?"}]},
        ],
    });
    let request = responses::parse_request(&to_raw_value(&request).unwrap()).unwrap();
    let chat = responses::to_chat(&request, "smollm2").unwrap();
    let chat: Box<RawValue> = to_raw_value(&chat).unwrap();
    let answer = client
        .complete(Endpoint::ChatCompletions, &chat, "smollm2", None)
        .await
        .unwrap();
    let completion = responses::completion_from_chat(&request, &answer).unwrap();
    let response: Value = serde_json::from_str(completion.body.get()).unwrap();
    assert_answered(
        &response,
        completion.prompt_tokens,
        completion.completion_tokens,
    );
    assert_eq!(
        response["metadata"],
        json!({"obb_priority": "1"}),
        "echoed, not sent"
    );
    let chat_answer: Value = serde_json::from_str(answer.body.get()).unwrap();
    let cut = chat_answer["choices"][0]["finish_reason"] == "length";
    assert_eq!(
        response["status"],
        if cut { "incomplete" } else { "completed" },
        "{chat_answer}"
    );
}

/// What a relayed Responses job sends the gateway, and the `response` it stores, for a
/// stream as the node reads it (`worker::streamed` does the same, relaying as it goes).
async fn relayed(stream: ResponsesStream) -> (Vec<Value>, Value) {
    let mut events = Vec::new();
    let completion = match stream {
        ResponsesStream::Native(mut stream) => {
            let mut filler = Filler::default();
            loop {
                let event = stream.next().await.unwrap().expect("a closing event");
                match sort(&event) {
                    Sorted::Item => {
                        let event = filler.fill(&event).unwrap_or(event);
                        events.push(serde_json::from_str(event.get()).unwrap());
                    }
                    Sorted::Closing(response) => break response_of(&response).unwrap(),
                    Sorted::Error(message) => panic!("{message}"),
                    Sorted::Skip => {}
                }
            }
        }
        ResponsesStream::Translated {
            mut stream,
            request,
        } => translated(&mut stream, Translation::new(request), &mut events).await,
    };
    (events, serde_json::from_str(completion.body.get()).unwrap())
}

async fn translated(
    stream: &mut UpstreamStream,
    mut translation: Translation,
    events: &mut Vec<Value>,
) -> Completion {
    while let Some(chunk) = stream.next().await.unwrap() {
        events.extend(translation.push(&chunk).unwrap());
    }
    let (done, completion) = translation.finish();
    events.extend(done);
    completion.unwrap()
}

/// Item events with every field the SDKs read, whose deltas make the stored text.
fn assert_streamed(events: &[Value], response: &Value) {
    let deltas: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .collect();
    assert!(deltas.len() >= 2, "{events:?}");
    for event in events {
        assert!(event["output_index"].is_u64(), "{event}");
        if event.get("item_id").is_some()
            && event["type"] != "response.function_call_arguments.delta"
        {
            assert!(event["content_index"].is_u64(), "{event}");
        }
    }
    for delta in &deltas {
        assert!(
            delta["logprobs"].is_array() && delta["item_id"].is_string(),
            "{delta}"
        );
    }
    let text: String = deltas.iter().filter_map(|d| d["delta"].as_str()).collect();
    assert_eq!(text, output_text(response), "{response}");
    let added = events
        .iter()
        .find(|e| e["type"] == "response.output_item.added")
        .unwrap();
    assert_eq!(added["item"]["id"], response["output"][0]["id"]);
    assert!(
        response["usage"]["output_tokens"].as_u64() > Some(0),
        "{response}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_small_llm_streams_a_responses_job_as_item_events_the_sdks_can_read() {
    let llm = LlamaServer::start();
    let client = client(&format!("http://127.0.0.1:{}/v1", llm.port));
    let job = json!({"model": "smollm2", "input": "Say hello.", "max_output_tokens": 12,
                     "temperature": 0, "stream": true});
    let job = to_raw_value(&job).unwrap();
    // Natively, or translated, as the server's routes say.
    let stream = client
        .stream_responses(&job, "smollm2", None)
        .await
        .unwrap();
    let (events, response) = relayed(stream).await;
    assert_streamed(&events, &response);

    // The chat translation, streamed by the same server.
    let request = responses::parse_request(&job).unwrap();
    let chat = to_raw_value(&responses::to_chat(&request, "smollm2").unwrap()).unwrap();
    let mut stream = client
        .stream(Endpoint::ChatCompletions, &chat, "smollm2", None)
        .await
        .unwrap();
    let mut events = Vec::new();
    let completion = translated(&mut stream, Translation::new(request), &mut events).await;
    let response: Value = serde_json::from_str(completion.body.get()).unwrap();
    assert_streamed(&events, &response);
}
