use super::*;
use serde_json::json;
use testkit::mock::{Fault, MockUpstream};

#[test]
fn the_body_keeps_every_field_but_model_and_stream() {
    let raw = RawValue::from_string(
        r#"{"model":"alias","messages":[],"temperature":0.3,"stream":true,"stream_options":{"include_usage":true},"tools":[],"metadata":{"obb_priority":"1"}}"#.to_owned(),
    )
    .unwrap();
    let chat = Endpoint::ChatCompletions;
    let body: Value = serde_json::from_slice(&forwarded_body(chat, &raw, "real").unwrap()).unwrap();
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
    assert!(forwarded_body(chat, &not_json, "m").is_err());
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
            serde_json::from_slice(&forwarded_body(endpoint, &raw, "real").unwrap()).unwrap();
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
        serde_json::from_slice(&forwarded_body(Endpoint::Responses, &raw, "real").unwrap())
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
