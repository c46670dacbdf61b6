use super::*;
use serde_json::json;
use testkit::mock::{Fault, MockUpstream, StreamFault};

#[test]
fn the_body_keeps_every_field_but_model_and_stream() {
    let raw = RawValue::from_string(
        r#"{"model":"alias","messages":[],"temperature":0.3,"stream":true,"stream_options":{"include_usage":true},"tools":[],"metadata":{"obb_priority":"1"}}"#.to_owned(),
    )
    .unwrap();
    let chat = Endpoint::ChatCompletions;
    let body: Value =
        serde_json::from_slice(&forwarded_body(chat, &raw, "real", false).unwrap()).unwrap();
    assert_eq!(body["model"], "real");
    assert_eq!(body["stream"], false);
    assert!(body.get("stream_options").is_none());
    assert_eq!(body["temperature"], 0.3);
    assert!(body["tools"].is_array());
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys[0], "model", "key order is kept");
    assert_eq!(
        body["metadata"]["obb_priority"], "1",
        "chat takes `metadata`"
    );
    let not_json = RawValue::from_string("[1]".into()).unwrap();
    assert!(forwarded_body(chat, &not_json, "m", false).is_err());
}

#[test]
fn embeddings_and_legacy_completions_go_up_without_metadata() {
    let raw = RawValue::from_string(
        r#"{"model":"alias","input":"x","prompt":"y","metadata":{"obb_ttl_seconds":"60"}}"#
            .to_owned(),
    )
    .unwrap();
    for endpoint in [Endpoint::Embeddings, Endpoint::Completions] {
        let body: Value =
            serde_json::from_slice(&forwarded_body(endpoint, &raw, "real", false).unwrap())
                .unwrap();
        assert!(body.get("metadata").is_none(), "{endpoint}: {body}");
        assert_eq!(
            (&body["input"], &body["prompt"]),
            (&json!("x"), &json!("y"))
        );
    }
}

#[test]
fn errors_are_sorted_into_transient_and_final() {
    let final_error = classify(
        404,
        r#"{"error":{"message":"model `x` not found","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#,
        "u",
    );
    match final_error {
        UpstreamError::Rejected { status, error } => {
            assert_eq!(status, 404);
            assert_eq!(error.code.as_deref(), Some("model_not_found"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(classify(429, "slow down", "u").kind(), "rate_limited");
    for status in [400, 429, 503] {
        assert!(UpstreamError::KINDS.contains(&classify(status, "", "u").kind()));
    }
    assert_eq!(classify(503, "", "u").kind(), "server_error");
    assert_eq!(classify(400, "plain text", "u").to_string(), "plain text");
}

/// A client of the upstream at `base_url` that retries fast.
fn client_of(base_url: String) -> UpstreamClient {
    let upstream = Upstream {
        base_url,
        api_key: None,
        key_source: None,
        section: "llm",
        ca_cert: None,
    };
    let retry = RetryPolicy {
        max_retries: 3,
        backoff: Duration::from_millis(1),
    };
    UpstreamClient::new(
        upstream,
        Duration::from_secs(5),
        Duration::from_secs(5),
        retry,
    )
    .unwrap()
}

#[tokio::test]
async fn a_success_that_is_not_json_is_final_and_called_once() {
    let mock = MockUpstream::start(&["m"]).await.unwrap();
    mock.push_faults([Fault::InvalidJson]);
    let client = client_of(mock.base_url());
    let payload = RawValue::from_string(r#"{"messages":[]}"#.to_owned()).unwrap();
    let error = client
        .complete(Endpoint::ChatCompletions, &payload, "m", None)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "invalid_answer");
    assert!(error.to_string().contains("not a JSON object"), "{error}");
    assert_eq!(mock.calls(), 1, "a broken answer is not asked for again");
}

#[test]
fn a_completion_is_read_once_for_its_body_and_token_counts() {
    let text = r#"{"id":"c", "usage":{"prompt_tokens":3,"completion_tokens":5},"choices":[]}"#;
    let completion = Completion::parse(text.to_owned()).unwrap();
    assert_eq!(completion.body.get(), text, "the body is kept verbatim");
    assert_eq!(
        (completion.prompt_tokens, completion.completion_tokens),
        (3, 5)
    );
    let odd = Completion::parse(r#"{"usage":{"prompt_tokens":null}}"#.to_owned()).unwrap();
    assert_eq!((odd.prompt_tokens, odd.completion_tokens), (0, 0));
    for not_an_object in ["[{\"usage\":null}]", "1", "{\"a\":", "{} x"] {
        assert!(
            Completion::parse(not_an_object.to_owned()).is_err(),
            "{not_an_object}"
        );
    }
}

#[test]
fn backoff_grows_with_jitter_and_stays_capped() {
    let policy = RetryPolicy {
        max_retries: 3,
        backoff: Duration::from_millis(100),
    };
    for attempt in 0..20 {
        let delay = backoff(&policy, attempt);
        let ceiling = (policy.backoff * (1u32 << attempt.min(10))).min(Duration::from_secs(30));
        assert!(
            delay >= ceiling / 2 && delay <= ceiling,
            "{attempt}: {delay:?}"
        );
    }
}

#[test]
fn a_responses_body_goes_up_whole_without_the_gateways_fields() {
    let raw = RawValue::from_string(
        r#"{"model":"alias","input":[{"role":"user","content":"hi"}],"previous_response_id":"resp_1","background":true,"stream":true,"stream_options":{"include_obfuscation":false},"store":true,"metadata":{"k":"v"},"tools":[{"type":"web_search"}]}"#.to_owned(),
    )
    .unwrap();
    let body: Value =
        serde_json::from_slice(&forwarded_body(Endpoint::Responses, &raw, "real", false).unwrap())
            .unwrap();
    assert_eq!(
        body,
        json!({"model": "real", "input": [{"role": "user", "content": "hi"}], "stream": false,
            "store": true, "metadata": {"k": "v"}, "tools": [{"type": "web_search"}]})
    );
}

/// A Responses job asking `text` of `model`.
fn responses_job(text: &str) -> Box<RawValue> {
    let body = json!({"model": "alias", "input": text, "previous_response_id": "resp_0", "background": true});
    serde_json::value::to_raw_value(&body).unwrap()
}

#[tokio::test]
async fn a_responses_job_uses_the_upstreams_own_route_when_it_has_one() {
    let mock = MockUpstream::start(&["m"]).await.unwrap();
    let client = client_of(mock.base_url());
    let completion = client
        .complete(Endpoint::Responses, &responses_job("hi"), "m", None)
        .await
        .unwrap();
    let response: Value = serde_json::from_str(completion.body.get()).unwrap();
    assert_eq!(
        response["id"], "resp_mock_1",
        "the upstream's answer, verbatim"
    );
    assert_eq!(response["output"][0]["content"][0]["text"], "mock: hi");
    assert_eq!(
        (completion.prompt_tokens, completion.completion_tokens),
        (3, 2)
    );
    assert_eq!(mock.paths(), ["/v1/responses"]);
    assert!(!client.translates_responses());
    let (_, sent) = mock.state.last_request.lock().unwrap().clone().unwrap();
    assert_eq!(
        (
            &sent["model"],
            &sent["stream"],
            sent.get("background"),
            sent.get("previous_response_id")
        ),
        (&json!("m"), &json!(false), None, None)
    );
}

#[tokio::test]
async fn without_the_route_a_responses_job_is_translated_and_later_ones_go_straight_to_chat() {
    let mock = MockUpstream::start(&["m"]).await.unwrap();
    mock.set_responses_route(false);
    let client = client_of(mock.base_url());
    for (turn, text) in ["first", "second"].into_iter().enumerate() {
        let completion = client
            .complete(Endpoint::Responses, &responses_job(text), "m", None)
            .await
            .unwrap();
        let response: Value = serde_json::from_str(completion.body.get()).unwrap();
        assert_eq!(response["object"], "response", "{response}");
        assert_eq!(response["status"], "completed");
        assert_eq!(response["output"][0]["type"], "message");
        assert_eq!(
            response["output"][0]["content"][0]["text"],
            format!("mock: {text}")
        );
        assert_eq!(response["usage"]["input_tokens"], 3);
        assert_eq!(response["usage"]["total_tokens"], 5);
        assert_eq!(
            (
                mock.calls_to("/v1/responses"),
                mock.calls_to("/v1/chat/completions")
            ),
            (1, turn + 1),
            "only the first job tries /v1/responses"
        );
    }
    assert!(client.translates_responses());
    let (_, sent) = mock.state.last_request.lock().unwrap().clone().unwrap();
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "second"}])
    );
    assert!(sent.get("previous_response_id").is_none() && sent.get("input").is_none());

    // Once translating, a request chat cannot express is refused without any call.
    let calls = mock.paths().len();
    let web =
        serde_json::value::to_raw_value(&json!({"input": "x", "tools": [{"type": "web_search"}]}))
            .unwrap();
    let error = client
        .complete(Endpoint::Responses, &web, "m", None)
        .await
        .unwrap_err();
    match error {
        UpstreamError::Rejected { status: 400, error } => {
            assert_eq!(error.param.as_deref(), Some("tools[0].type"));
            assert_eq!(error.code.as_deref(), Some(responses::UNSUPPORTED));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(mock.paths().len(), calls);
}

#[tokio::test]
async fn a_404_from_both_routes_fails_the_job_and_is_not_remembered() {
    let mock = MockUpstream::start(&["m"]).await.unwrap();
    // An unknown model: the upstream has the route but refuses the model on both.
    mock.push_faults([Fault::Status(404, None), Fault::Status(404, None)]);
    let client = client_of(mock.base_url());
    let error = client
        .complete(Endpoint::Responses, &responses_job("x"), "nope", None)
        .await
        .unwrap_err();
    match &error {
        UpstreamError::Rejected { status: 404, error } => {
            assert_eq!(error.code.as_deref(), Some("model_not_found"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(mock.paths(), ["/v1/responses", "/v1/chat/completions"]);
    assert!(!client.translates_responses());
    client
        .complete(Endpoint::Responses, &responses_job("y"), "m", None)
        .await
        .unwrap();
    assert_eq!(
        mock.calls_to("/v1/responses"),
        2,
        "the next job tries the route again"
    );
    assert_eq!(mock.calls_to("/v1/chat/completions"), 1);
}

#[test]
fn a_relay_request_asks_for_include_usage_and_keeps_stream_true() {
    let with_options = RawValue::from_string(
        r#"{"model":"alias","messages":[],"stream":true,"stream_options":{"include_obfuscation":false}}"#
            .to_owned(),
    )
    .unwrap();
    let without =
        RawValue::from_string(r#"{"model":"alias","prompt":"x","stream":true}"#.to_owned())
            .unwrap();
    for (endpoint, raw, options) in [
        (
            Endpoint::ChatCompletions,
            &with_options,
            json!({"include_obfuscation": false, "include_usage": true}),
        ),
        (
            Endpoint::Completions,
            &without,
            json!({"include_usage": true}),
        ),
    ] {
        let body: Value =
            serde_json::from_slice(&forwarded_body(endpoint, raw, "real", true).unwrap()).unwrap();
        assert_eq!(body["stream"], true, "{endpoint}");
        assert_eq!(body["stream_options"], options, "{endpoint}");
        assert_eq!(body["model"], "real");
    }
    // A relayed Responses job streams (its closing event has the usage); unrelayed, whole.
    let responses = RawValue::from_string(r#"{"input":"x","stream":true}"#.to_owned()).unwrap();
    for (relay, stream) in [(true, true), (false, false)] {
        let body: Value = serde_json::from_slice(
            &forwarded_body(Endpoint::Responses, &responses, "m", relay).unwrap(),
        )
        .unwrap();
        assert_eq!(
            (&body["stream"], body.get("stream_options")),
            (&json!(stream), None)
        );
    }
}

/// Every chunk of `stream`, until its end or its first error.
async fn drain(stream: &mut UpstreamStream) -> (Vec<Value>, Option<UpstreamError>) {
    let mut chunks = Vec::new();
    loop {
        match stream.next().await {
            Ok(Some(chunk)) => chunks.push(serde_json::from_str(chunk.get()).unwrap()),
            Ok(None) => return (chunks, None),
            Err(error) => return (chunks, Some(error)),
        }
    }
}

#[tokio::test]
async fn an_sse_event_split_across_reads_is_one_chunk() {
    let body = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hel\"}}]}\n\n\
        : a comment line\r\n\r\n\
        event: ping\ndata: {\"ignored\":true}\n\n\
        data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo 😀\"}}]}\r\n\r\n\
        data: [DONE]\n\n\
        data: {\"after\":\"done\"}\n\n";
    // Cut everywhere, even inside a line ending and inside the emoji's UTF-8 bytes.
    let bytes = body.as_bytes();
    for size in [1, 2, 3, 7, 50, bytes.len()] {
        let pieces: Vec<Result<bytes::Bytes, std::io::Error>> = bytes
            .chunks(size)
            .map(|piece| Ok(bytes::Bytes::copy_from_slice(piece)))
            .collect();
        let mut stream = stream::from_pieces(pieces);
        let (chunks, error) = drain(&mut stream).await;
        assert!(error.is_none(), "{size}: {error:?}");
        let texts: Vec<&Value> = chunks
            .iter()
            .map(|c| &c["choices"][0]["delta"]["content"])
            .collect();
        assert_eq!(
            texts,
            [&json!("hel"), &json!("lo 😀")],
            "reads of {size} bytes"
        );
    }
}

#[tokio::test]
async fn an_error_event_mid_stream_is_an_interrupted_failure() {
    let mock = MockUpstream::start(&["m"]).await.unwrap();
    mock.set_stream(3, Duration::ZERO);
    mock.push_stream_faults([StreamFault::ErrorAfter(1), StreamFault::CutAfter(0)]);
    let client = client_of(mock.base_url());
    let payload = RawValue::from_string(r#"{"messages":[],"stream":true}"#.to_owned()).unwrap();
    for expected_chunks in [2, 1] {
        let mut stream = client
            .stream(Endpoint::ChatCompletions, &payload, "m", None)
            .await
            .unwrap();
        let (chunks, error) = drain(&mut stream).await;
        assert_eq!(chunks.len(), expected_chunks);
        let error = error.expect("the stream fails");
        assert_eq!(error.kind(), "interrupted", "{error}");
    }
    // Before any chunk, an error event is the upstream's answer, sorted as a whole call's.
    let events = "data: {\"error\":{\"message\":\"context too long\",\"type\":\"invalid_request_error\",\"code\":400}}\n\n";
    let mut stream = stream::from_pieces(vec![Ok(bytes::Bytes::from(events))]);
    match stream.next().await {
        Err(UpstreamError::Rejected { status: 400, error }) => {
            assert_eq!(error.message, "context too long");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_stream_is_retried_until_its_head_comes_and_yields_every_chunk_with_usage() {
    let mock = MockUpstream::start(&["m"]).await.unwrap();
    mock.set_stream(4, Duration::from_millis(2));
    mock.push_faults([Fault::Status(503, None)]);
    let client = client_of(mock.base_url());
    let payload =
        RawValue::from_string(r#"{"model":"alias","messages":[],"stream":true}"#.to_owned())
            .unwrap();
    let mut stream = client
        .stream(Endpoint::ChatCompletions, &payload, "m", Some("req-1"))
        .await
        .unwrap();
    let (chunks, error) = drain(&mut stream).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(mock.calls(), 2, "the 503 before the head was retried");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "t0 t1 t2 t3 ");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 4);
    let (request_id, sent) = mock.state.last_request.lock().unwrap().clone().unwrap();
    assert_eq!(request_id.as_deref(), Some("req-1"));
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn a_stream_longer_than_the_request_timeout_is_not_cut_but_a_silent_one_is() {
    let mock = MockUpstream::start(&["m"]).await.unwrap();
    // 8 chunks 100 ms apart: 0.7 s in all, against a 0.5 s timeout.
    mock.set_stream(8, Duration::from_millis(100));
    let retry = RetryPolicy {
        max_retries: 0,
        backoff: Duration::from_millis(1),
    };
    let upstream = Upstream {
        base_url: mock.base_url(),
        api_key: None,
        key_source: None,
        section: "llm",
        ca_cert: None,
    };
    let timeout = Duration::from_millis(500);
    let client = UpstreamClient::new(upstream, timeout, timeout, retry).unwrap();
    let payload = RawValue::from_string(r#"{"messages":[],"stream":true}"#.to_owned()).unwrap();
    let mut stream = client
        .stream(Endpoint::ChatCompletions, &payload, "m", None)
        .await
        .unwrap();
    let (chunks, error) = drain(&mut stream).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(chunks.len(), 10, "8 texts, the finish and the usage");

    mock.set_stream(3, Duration::from_millis(1500));
    let mut stream = client
        .stream(Endpoint::ChatCompletions, &payload, "m", None)
        .await
        .unwrap();
    let (chunks, error) = drain(&mut stream).await;
    assert_eq!(chunks.len(), 1);
    let error = error.expect("an idle stream fails");
    assert!(error.to_string().contains("sent nothing for"), "{error}");
}

#[tokio::test]
async fn a_responses_stream_yields_its_named_events_or_without_the_route_a_chat_stream() {
    let mock = MockUpstream::start(&["m"]).await.unwrap();
    mock.set_stream(2, Duration::ZERO);
    let payload = RawValue::from_string(
        r#"{"model":"m","input":"hi","stream":true,"background":true}"#.to_owned(),
    )
    .unwrap();
    let client = client_of(mock.base_url());
    let Ok(ResponsesStream::Native(mut stream)) =
        client.stream_responses(&payload, "m", None).await
    else {
        panic!("the mock has /v1/responses");
    };
    let (events, error) = drain(&mut stream).await;
    assert!(error.is_none(), "{error:?}");
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types.len(), 10, "every named event is one: {types:?}");
    assert_eq!(
        (types[0], types[9]),
        ("response.created", "response.completed")
    );
    let (_, sent) = mock.state.last_request.lock().unwrap().clone().unwrap();
    assert_eq!(
        (&sent["stream"], sent.get("background")),
        (&json!(true), None)
    );

    mock.set_responses_route(false);
    let client = client_of(mock.base_url());
    let Ok(ResponsesStream::Translated {
        mut stream,
        request,
    }) = client.stream_responses(&payload, "m", None).await
    else {
        panic!("a chat stream to translate");
    };
    assert!(client.translates_responses());
    assert_eq!(request["input"], "hi");
    let (chunks, _) = drain(&mut stream).await;
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert!(chunks.last().unwrap()["usage"].is_object(), "{chunks:?}");
    let (_, sent) = mock.state.last_request.lock().unwrap().clone().unwrap();
    assert_eq!(
        (&sent["stream"], &sent["stream_options"]),
        (&json!(true), &json!({"include_usage": true}))
    );
    let paths = mock.paths();
    assert_eq!(
        paths[paths.len() - 2..],
        ["/v1/responses", "/v1/chat/completions"]
    );
}
