use super::*;
use serde_json::json;

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn chat_of(request: Value) -> Value {
    Value::Object(to_chat(&object(request), "real").unwrap())
}

fn refusal(request: Value) -> ErrorBody {
    match to_chat(&object(request), "real") {
        Err(UpstreamError::Rejected { status: 400, error }) => error,
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn text_input_and_instructions_become_a_system_and_a_user_message() {
    let chat = chat_of(json!({
        "model": "alias", "instructions": "Be brief.", "input": "Hi",
        "max_output_tokens": 12, "temperature": 0.2, "top_p": 0.9, "user": "u",
        "metadata": {"obb_priority": "1"}, "store": true, "stream": true,
        "stream_options": {"include_obfuscation": false}, "background": true,
        "previous_response_id": "resp_1", "truncation": "disabled", "include": [],
        "reasoning": null,
    }));
    assert_eq!(
        chat,
        json!({
            "model": "real",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            "max_tokens": 12, "temperature": 0.2, "top_p": 0.9, "user": "u", "stream": false,
        })
    );
}

#[test]
fn items_become_messages_with_parts_joined_or_kept_for_images() {
    let chat = chat_of(json!({"input": [
        {"role": "developer", "content": "Rules."},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "c", "annotations": []}]},
        {"role": "user", "content": [
            {"type": "input_text", "text": "see"},
            {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
    ]}));
    assert_eq!(
        chat["messages"],
        json!([
            {"role": "developer", "content": "Rules."},
            {"role": "user", "content": "a\nb"},
            {"role": "assistant", "content": "c"},
            {"role": "user", "content": [
                {"type": "text", "text": "see"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}}]},
        ])
    );
}

#[test]
fn function_tools_round_trip_through_a_tool_call_and_its_output() {
    let tool = json!({"type": "function", "name": "lookup", "description": "Finds",
        "parameters": {"type": "object", "properties": {}}, "strict": true});
    let first = object(json!({
        "input": "Weather?", "tools": [tool],
        "tool_choice": {"type": "function", "name": "lookup"}, "parallel_tool_calls": false,
    }));
    let chat = Value::Object(to_chat(&first, "real").unwrap());
    assert_eq!(
        chat["tools"],
        json!([{"type": "function", "function": {"name": "lookup", "description": "Finds",
            "parameters": {"type": "object", "properties": {}}, "strict": true}}])
    );
    assert_eq!(
        chat["tool_choice"],
        json!({"type": "function", "function": {"name": "lookup"}})
    );
    assert_eq!(chat["parallel_tool_calls"], false);

    let answer = json!({"created": 7, "model": "real", "choices": [{"index": 0,
        "message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":1}"}},
            {"id": "call_2", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
        "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}});
    let response = from_chat(&first, &answer);
    assert_eq!(response["status"], "completed");
    assert_eq!(
        response["tools"],
        json!([tool]),
        "tools echo in Responses shape"
    );
    let output = response["output"].as_array().unwrap();
    assert_eq!(output.len(), 2, "no message item without text: {response}");
    assert!(output[0]["id"].as_str().unwrap().starts_with("fc_"));
    assert_eq!(
        (
            &output[0]["type"],
            &output[0]["call_id"],
            &output[0]["name"],
            &output[0]["arguments"]
        ),
        (
            &json!("function_call"),
            &json!("call_1"),
            &json!("lookup"),
            &json!("{\"q\":1}")
        )
    );

    // The next turn sends the calls back with their outputs, as a client using the
    // Responses API does (or as the gateway expands `previous_response_id`).
    let mut items = vec![json!({"role": "user", "content": "Weather?"})];
    items.extend(output.iter().cloned());
    items.push(json!({"type": "function_call_output", "call_id": "call_1", "output": "sunny"}));
    items.push(json!({"type": "function_call_output", "call_id": "call_2",
        "output": [{"type": "input_text", "text": "warm"}]}));
    let chat = chat_of(json!({"input": items, "tools": [tool]}));
    assert_eq!(
        chat["messages"],
        json!([
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":1}"}},
                {"id": "call_2", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": "warm"},
        ])
    );
}

#[test]
fn text_formats_become_response_formats() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
    let chat = chat_of(
        json!({"input": "x", "text": {"format": {"type": "json_schema",
        "name": "answer", "schema": schema, "strict": true}, "verbosity": "low"}}),
    );
    assert_eq!(
        chat["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": true}})
    );
    assert_eq!(chat["verbosity"], "low");
    for kind in ["json_object", "text"] {
        let chat = chat_of(json!({"input": "x", "text": {"format": {"type": kind}}}));
        assert_eq!(chat["response_format"], json!({"type": kind}));
    }
}

#[test]
fn a_text_answer_becomes_a_completed_response_with_usage_and_echoed_settings() {
    let request = object(
        json!({"model": "alias", "input": "Hi", "instructions": "Be brief.",
        "temperature": 0.5, "metadata": {"k": "v"}}),
    );
    let answer = json!({"id": "chatcmpl-1", "created": 1_700_000_000, "model": "real",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
            "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6,
            "prompt_tokens_details": {"cached_tokens": 1}}});
    let response = from_chat(&request, &answer);
    assert!(response["id"].as_str().unwrap().starts_with("resp_"));
    let message = &response["output"][0];
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        (&message["type"], &message["role"], &message["status"]),
        (&json!("message"), &json!("assistant"), &json!("completed"))
    );
    assert_eq!(
        message["content"],
        json!([{"type": "output_text", "text": "Hello", "annotations": []}])
    );
    assert_eq!(
        response["usage"],
        json!({"input_tokens": 4, "input_tokens_details": {"cached_tokens": 1},
            "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 6})
    );
    assert_eq!(
        (
            &response["object"],
            &response["status"],
            &response["created_at"],
            &response["model"]
        ),
        (
            &json!("response"),
            &json!("completed"),
            &json!(1_700_000_000),
            &json!("real")
        )
    );
    assert_eq!(
        (
            &response["instructions"],
            &response["temperature"],
            &response["metadata"]
        ),
        (&json!("Be brief."), &json!(0.5), &json!({"k": "v"}))
    );
    assert_eq!(
        (
            &response["error"],
            &response["incomplete_details"],
            &response["previous_response_id"]
        ),
        (&Value::Null, &Value::Null, &Value::Null)
    );
    assert_eq!(response["tool_choice"], "auto");
    assert_eq!(response["text"], json!({"format": {"type": "text"}}));
}

#[test]
fn a_cut_off_or_filtered_answer_is_incomplete_with_its_reason() {
    let request = object(json!({"input": "x", "max_output_tokens": 3}));
    for (finish, reason) in [
        ("length", "max_output_tokens"),
        ("content_filter", "content_filter"),
    ] {
        let answer = json!({"choices": [{"message": {"role": "assistant", "content": "a b c"},
            "finish_reason": finish}], "usage": {"prompt_tokens": 1, "completion_tokens": 3}});
        let response = from_chat(&request, &answer);
        assert_eq!(response["status"], "incomplete");
        assert_eq!(response["incomplete_details"], json!({"reason": reason}));
        assert_eq!(response["max_output_tokens"], 3);
        assert_eq!(
            response["usage"]["total_tokens"], 4,
            "summed when chat leaves it out"
        );
    }
}

#[test]
fn what_chat_cannot_express_is_refused_naming_its_param() {
    let cases = [
        (
            json!({"input": "x", "tools": [{"type": "function", "name": "f"}, {"type": "web_search"}]}),
            "tools[1].type",
        ),
        (
            json!({"input": "x", "tools": [{"type": "file_search", "vector_store_ids": []}]}),
            "tools[0].type",
        ),
        (
            json!({"input": "x", "tools": [{"type": "code_interpreter"}]}),
            "tools[0].type",
        ),
        (
            json!({"input": "x", "tools": [{"type": "computer_use_preview"}]}),
            "tools[0].type",
        ),
        (
            json!({"input": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
            {"type": "item_reference", "id": "msg_1"}]}),
            "input[2].type",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_text", "text": "a"},
            {"type": "input_file", "file_id": "file_1"}]}]}),
            "input[0].content[1].type",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]}),
            "input[0].content[0].file_id",
        ),
        (
            json!({"input": [{"role": "tool", "content": "a"}]}),
            "input[0].role",
        ),
        (
            json!({"input": "x", "reasoning": {"effort": "high"}}),
            "reasoning",
        ),
        (
            json!({"input": "x", "include": ["file_search_call.results"]}),
            "include",
        ),
        (
            json!({"input": "x", "conversation": "conv_1"}),
            "conversation",
        ),
        (json!({"input": "x", "truncation": "auto"}), "truncation"),
        (
            json!({"input": "x", "tool_choice": {"type": "web_search_preview"}}),
            "tool_choice",
        ),
        (
            json!({"input": "x", "text": {"format": {"type": "grammar"}}}),
            "text.format.type",
        ),
        (json!({"input": 3}), "input"),
    ];
    for (request, param) in cases {
        let error = refusal(request.clone());
        assert_eq!(error.param.as_deref(), Some(param), "{request}");
        assert_eq!(error.code.as_deref(), Some(UNSUPPORTED));
        assert_eq!(error.kind, "invalid_request_error");
        assert!(
            error.message.contains("/v1/chat/completions"),
            "{}",
            error.message
        );
        assert!(error.message.contains("/v1/responses"), "{}", error.message);
    }
}

#[test]
fn a_chat_completion_becomes_a_response_completion_with_its_token_counts() {
    let chat = Completion::parse(
        r#"{"choices":[{"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":1}}"#.to_owned(),
    )
    .unwrap();
    let request =
        parse_request(&RawValue::from_string(r#"{"input":"x"}"#.to_owned()).unwrap()).unwrap();
    let completion = completion_from_chat(&request, &chat).unwrap();
    assert_eq!(
        (completion.prompt_tokens, completion.completion_tokens),
        (2, 1)
    );
    let body: Value = serde_json::from_str(completion.body.get()).unwrap();
    assert_eq!(body["output"][0]["content"][0]["text"], "hi");
    let reread = Completion::parse(completion.body.get().to_owned()).unwrap();
    assert_eq!(
        (reread.prompt_tokens, reread.completion_tokens),
        (2, 1),
        "Responses usage names"
    );
    let not_an_object = RawValue::from_string("[1]".to_owned()).unwrap();
    assert!(parse_request(&not_an_object).is_err());
}
