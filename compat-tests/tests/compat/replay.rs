use crate::shapes;
use crate::stack::Stack;
use serde_json::{Map, Value, json};
use std::path::Path;

/// Every fixture, as (sdk, case, fixture).
fn fixtures() -> Vec<(String, String, Value)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut found = Vec::new();
    for sdk in ["python", "node"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(sdk))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            let fixture: Value =
                serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
            let case = fixture["case"].as_str().unwrap().to_owned();
            assert_eq!(fixture["sdk"]["name"], sdk);
            assert!(
                fixture["sdk"]["version"].is_string(),
                "the SDK version is in every fixture"
            );
            found.push((sdk.to_owned(), case, fixture));
        }
    }
    found
}

/// Ids and times change every run; everything else must not.
fn redact(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields.iter_mut() {
                if ["id", "created", "created_at", "updated_at", "expires_at"]
                    .contains(&key.as_str())
                    && !field.is_null()
                {
                    *field = json!("[redacted]");
                } else {
                    redact(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(text) => *text = redact_job_ids(text),
        _ => {}
    }
}

/// Replaces `job-<32 hex digits>` inside messages.
fn redact_job_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("job-") {
        let (head, tail) = rest.split_at(at + 4);
        out.push_str(head);
        let hex = tail.chars().take_while(char::is_ascii_hexdigit).count();
        if hex == 32 {
            out.push_str("[redacted]");
            rest = &tail[32..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn recorded_sdk_requests_get_answers_the_sdks_can_parse() {
    let stack = Stack::start().await;
    let all = fixtures();
    assert_eq!(all.len(), 36, "18 cases from each SDK");
    for (sdk, case, fixture) in all {
        for (index, recorded) in fixture["requests"].as_array().unwrap().iter().enumerate() {
            let path = recorded["path"]
                .as_str()
                .unwrap()
                .replace("job-recorded", &stack.finished_job);
            let method =
                reqwest::Method::from_bytes(recorded["method"].as_str().unwrap().as_bytes())
                    .unwrap();
            let query: Vec<(String, String)> = recorded["query"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            let mut request = stack
                .gw
                .http
                .request(method, stack.gw.url(&path))
                .query(&query);
            for (name, value) in recorded["headers"].as_object().unwrap() {
                request = request.header(name, value.as_str().unwrap());
            }
            request = request.bearer_auth(stack.key_for(recorded["auth"].as_str().unwrap()));
            if !recorded["body"].is_null() {
                request = request.body(
                    recorded["body"]
                        .to_string()
                        .replace("job-recorded", &stack.finished_job),
                );
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let mut headers = Map::new();
            for name in ["content-type", "x-should-retry", "retry-after"] {
                if let Some(value) = response.headers().get(name) {
                    headers.insert(name.to_owned(), json!(value.to_str().unwrap()));
                }
            }
            let stream = response
                .headers()
                .get("content-type")
                .is_some_and(|v| v == "text/event-stream");
            let text = response.text().await.unwrap();
            let body: Value = if stream {
                Value::Array(
                    text.split("\n\n")
                        .filter_map(|e| e.strip_prefix("data: "))
                        .map(|d| serde_json::from_str(d).unwrap_or_else(|_| json!(d)))
                        .collect(),
                )
            } else {
                serde_json::from_str(&text).unwrap_or_else(|_| json!(text))
            };
            check(&case, status, &body);
            let mut seen = json!({"status": status, "headers": headers, "body": body});
            redact(&mut seen);
            insta::assert_json_snapshot!(format!("{sdk}__{case}__{index}"), seen);
        }
    }
}

/// What each case must give the SDK.
fn check(case: &str, status: u16, body: &Value) {
    match case {
        "bad_key" => {
            assert_eq!(status, 401);
            shapes::error(body);
        }
        "wrong_role" => {
            assert_eq!(status, 403);
            shapes::error(body);
        }
        "models_list" => {
            assert_eq!(status, 200);
            shapes::model_page(body);
            assert_eq!(body["data"][0]["id"], crate::stack::MODEL);
        }
        "job_get" | "job_cancel" => {
            // Cancelling a finished job is a conflict the SDK raises as ConflictError.
            if case == "job_cancel" {
                assert_eq!(status, 409);
                shapes::error(body);
            } else {
                assert_eq!((status, body["status"].as_str()), (200, Some("completed")));
            }
        }
        "results_poll" => {
            assert_eq!(status, 200);
            assert_eq!(body["jobs"][0]["status"], "completed");
        }
        "stream" => {
            assert_eq!(status, 200);
            let events = body.as_array().unwrap();
            assert_eq!(shapes::chunk_stream(events), "mock: Hello!");
        }
        _ => {
            assert_eq!(status, 200, "{case}: {body}");
            shapes::chat_completion(body);
            let message = &body["choices"][0]["message"];
            match case {
                "tools_call" => {
                    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
                    assert_eq!(message["tool_calls"][0]["function"]["name"], "lookup");
                }
                "tools_followup" => assert!(
                    message["content"]
                        .as_str()
                        .unwrap()
                        .contains("the tool said")
                ),
                "json_schema" => {
                    let parsed: Value =
                        serde_json::from_str(message["content"].as_str().unwrap()).unwrap();
                    assert!(parsed["answer"].is_string());
                }
                "n_two" => assert_eq!(body["choices"].as_array().unwrap().len(), 2),
                "multi_turn" => assert_eq!(message["content"], "mock: And again?"),
                _ => assert_eq!(message["content"], "mock: Hello!"),
            }
        }
    }
}
