//! The SDKs' recorded requests replayed against the stack: ids the recorder minted mapped to
//! the gateway's, each answer checked for what the SDK parses, and snapshotted.

use crate::shapes;
use crate::stack::Stack;
use serde_json::{Map, Value, json};
use std::path::Path;
use std::time::Duration;

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
                // `obb_sent_us`: when the mock wrote a streamed chunk, relayed as it is.
                if (["id", "created", "item_id", "obb_sent_us"].contains(&key.as_str())
                    || key.ends_with("_at"))
                    && !field.is_null()
                {
                    *field = json!("[redacted]");
                } else {
                    redact(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(text) => *text = redact_ids(text),
        _ => {}
    }
}

/// Replaces the gateway's ids (a prefix and 32 hex digits) inside strings.
fn redact_ids(text: &str) -> String {
    ["job-", "file-", "batch_", "batch_req_", "resp_", "msg_"]
        .iter()
        .fold(text.to_owned(), |text, prefix| {
            let mut out = String::with_capacity(text.len());
            let mut rest = text.as_str();
            while let Some(at) = rest.find(prefix) {
                let (head, tail) = rest.split_at(at + prefix.len());
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
        })
}

/// The ids a fixture names, mapped to the gateway's: the seed job for `job-recorded`, and each
/// id the recording server minted (`file-recorded-NN`, `batch_recorded-NN`,
/// `resp_recorded-NN`) to the one the gateway gave in the same place of the same answer.
struct Ids(Vec<(String, String)>);

impl Ids {
    fn new(finished_job: &str) -> Self {
        Self(vec![("job-recorded".to_owned(), finished_job.to_owned())])
    }

    fn minted(text: &str) -> bool {
        text.contains("recorded-")
    }

    /// Learns from an answer that is one object (a page's order is the gateway's own).
    fn learn(&mut self, recorded: &Value, live: &Value) {
        let (Some(recorded), Some(live)) = (recorded.as_object(), live.as_object()) else {
            return;
        };
        if recorded.get("object") == Some(&json!("list")) {
            return;
        }
        for (key, value) in recorded {
            let (Some(ours), Some(theirs)) = (value.as_str(), live[key].as_str()) else {
                continue;
            };
            if Self::minted(ours) && !self.0.iter().any(|(known, _)| known == ours) {
                self.0.push((ours.to_owned(), theirs.to_owned()));
            }
        }
    }

    /// Checks that every id `recorded` names at its top level is, in `live`, the gateway's
    /// id it maps to: a response's `previous_response_id`, a batch's `input_file_id`.
    fn check_same(&self, recorded: &Value, live: &Value, what: &str) {
        for (key, value) in recorded.as_object().into_iter().flatten() {
            if let Some(ours) = value.as_str().filter(|v| Self::minted(v)) {
                assert_eq!(live[key], self.apply(ours), "{what}: `{key}`");
            }
        }
    }

    fn apply(&self, text: &str) -> String {
        let mapped = self.0.iter().fold(text.to_owned(), |text, (ours, theirs)| {
            text.replace(ours, theirs)
        });
        assert!(
            !Self::minted(&mapped),
            "`{mapped}` names a recorded id that no earlier answer gave"
        );
        mapped
    }
}

/// An answer as replay sees it: status, the headers that matter, and the body (a stream's
/// events and a file's JSON lines as lists).
struct Answer {
    status: u16,
    headers: Map<String, Value>,
    body: Value,
}

async fn send(stack: &Stack, recorded: &Value, ids: &Ids) -> Answer {
    let path = ids.apply(recorded["path"].as_str().unwrap());
    let method =
        reqwest::Method::from_bytes(recorded["method"].as_str().unwrap().as_bytes()).unwrap();
    let query: Vec<(String, String)> = recorded["query"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), ids.apply(v.as_str().unwrap_or_default())))
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
    if let Some(text) = recorded["body_text"].as_str() {
        // A multipart body is sent byte for byte: its boundary is in the recorded content type.
        request = request.body(text.to_owned());
    } else if !recorded["body"].is_null() {
        request = request.body(ids.apply(&recorded["body"].to_string()));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let mut headers = Map::new();
    for name in [
        "content-type",
        "content-disposition",
        "x-should-retry",
        "retry-after",
    ] {
        if let Some(value) = response.headers().get(name) {
            headers.insert(name.to_owned(), json!(value.to_str().unwrap()));
        }
    }
    let stream = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let text = response.text().await.unwrap();
    let body: Value = if stream {
        server_sent_events(&text)
    } else if path.ends_with("/content") && status == 200 {
        // Output lines come in no promised order (OpenAI's rule): sorted by `custom_id` so
        // the snapshot does not depend on it.
        let mut lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        lines.sort_by(|a, b| a["custom_id"].to_string().cmp(&b["custom_id"].to_string()));
        Value::Array(lines)
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| json!(text))
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// A stream's events as the SDKs read them: each event's data (JSON where it parses), or
/// `{"event", "data"}` where the event is named in an `event:` line (the Responses API's);
/// comments (keep-alives) are no events.
fn server_sent_events(text: &str) -> Value {
    let events = text.split("\n\n").filter_map(|block| {
        let (mut name, mut data) = (None, Vec::new());
        for line in block.lines() {
            if let Some(value) = line.strip_prefix("event: ") {
                name = Some(value);
            } else if let Some(value) = line.strip_prefix("data: ") {
                data.push(value);
            }
        }
        if data.is_empty() {
            return None;
        }
        let data = data.join("\n");
        let data = serde_json::from_str(&data).unwrap_or_else(|_| json!(data));
        Some(match name {
            Some(name) => json!({"event": name, "data": data}),
            None => data,
        })
    });
    Value::Array(events.collect())
}

/// Replays `recorded`. A batch's or a response's retrieve is repeated, as an SDK user polls,
/// until it reaches the status the recording server answered.
async fn replay(stack: &Stack, recorded: &Value, ids: &Ids) -> Answer {
    let wanted = recorded["answer"]["body"]["status"].as_str();
    let retrieve = recorded["method"] == "GET"
        && ["batch", "response"].contains(
            &recorded["answer"]["body"]["object"]
                .as_str()
                .unwrap_or_default(),
        )
        && recorded["path"].as_str().is_some_and(|p| {
            p.strip_prefix("/v1/")
                .is_some_and(|rest| rest.split('/').count() == 2)
        });
    match wanted.filter(|_| retrieve) {
        None => send(stack, recorded, ids).await,
        Some(wanted) => {
            testkit::eventually(
                Duration::from_secs(30),
                &format!("{} to be `{wanted}`", recorded["path"]),
                || async {
                    let answer = send(stack, recorded, ids).await;
                    (answer.body["status"] == wanted).then_some(answer)
                },
            )
            .await
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn recorded_sdk_requests_get_answers_the_sdks_can_parse() {
    let stack = Stack::start().await;
    let all = fixtures();
    assert_eq!(all.len(), 58, "29 cases from each SDK");
    for (sdk, case, fixture) in all {
        replay_case(&stack, &sdk, &case, &fixture, "").await;
    }
}

/// The Responses API's cases again, on an upstream that has no `/v1/responses` (as
/// llama.cpp's server): the node translates each job to a chat completion, and the SDKs get
/// the same shapes and text.
#[tokio::test(flavor = "multi_thread")]
async fn responses_translated_to_chat_give_the_sdks_the_same_answers() {
    let stack = Stack::translating_responses().await;
    let cases: Vec<_> = fixtures()
        .into_iter()
        .filter(|(_, case, _)| case.starts_with("responses_"))
        .collect();
    assert_eq!(cases.len(), 8, "4 Responses cases from each SDK");
    for (sdk, case, fixture) in cases {
        replay_case(&stack, &sdk, &case, &fixture, "translated__").await;
    }
    assert_eq!(
        stack.upstream_calls_to("/v1/responses"),
        1,
        "the node tries the route once"
    );
    // The seed job, then per SDK: the background response, the two created, the streamed.
    assert_eq!(stack.upstream_calls_to("/v1/chat/completions"), 1 + 2 * 4);
}

/// Replays one fixture's requests in order, checks each answer and snapshots it under
/// `{prefix}{sdk}__{case}__{index}`.
async fn replay_case(stack: &Stack, sdk: &str, case: &str, fixture: &Value, prefix: &str) {
    let mut ids = Ids::new(&stack.finished_job);
    for (index, recorded) in fixture["requests"].as_array().unwrap().iter().enumerate() {
        let Answer {
            status,
            headers,
            body,
        } = replay(stack, recorded, &ids).await;
        if recorded.get("answer").is_some() {
            check_recorded_answer(sdk, recorded, status, &body);
            ids.learn(&recorded["answer"]["body"], &body);
            ids.check_same(&recorded["answer"]["body"], &body, case);
            if body["object"] == "response" && body.get("deleted").is_none() {
                check_response(case, index, &body);
            }
        } else {
            check(case, status, &body);
        }
        let mut seen = json!({"status": status, "headers": headers, "body": body});
        redact(&mut seen);
        insta::assert_json_snapshot!(format!("{prefix}{sdk}__{case}__{index}"), seen);
    }
}

/// What a Files, Batch or Responses API call must give the SDK: the status the recording
/// server (like OpenAI) answered, each field of its answer in the same JSON type, the same
/// values where they do not depend on time or ids, and for a batch's output file, a chat
/// completion for each input line under its `custom_id`.
fn check_recorded_answer(sdk: &str, recorded: &Value, status: u16, body: &Value) {
    let what = format!("{} {}", recorded["method"], recorded["path"]);
    let answer = &recorded["answer"];
    assert_eq!(
        Some(u64::from(status)),
        answer["status"].as_u64(),
        "{what}: {body}"
    );
    if let Some(text) = answer["body_text"].as_str() {
        let lines = body.as_array().unwrap();
        let custom_ids: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap()["custom_id"].clone())
            .collect();
        assert_eq!(
            lines.len(),
            custom_ids.len(),
            "one output line per input line"
        );
        // Matched on `custom_id`, as clients must: the order is not promised.
        for (number, custom_id) in custom_ids.into_iter().enumerate() {
            assert_eq!(custom_id, format!("{sdk}-{number}"));
            let found: Vec<&Value> = lines
                .iter()
                .filter(|line| line["custom_id"] == custom_id)
                .collect();
            assert_eq!(found.len(), 1, "{custom_id} once in the output");
            let line = found[0];
            assert_eq!(line["response"]["status_code"], 200);
            assert!(line["error"].is_null());
            shapes::chat_completion(&line["response"]["body"]);
            assert_eq!(
                line["response"]["body"]["choices"][0]["message"]["content"],
                format!("mock: Line {number}")
            );
        }
        return;
    }
    let answer = &answer["body"];
    if answer.get("error").is_some_and(|e| !e.is_null()) {
        shapes::error(body);
        assert_eq!(body["error"]["param"], answer["error"]["param"], "{what}");
        return;
    }
    shapes::like(answer, body, &what);
    let objects: Vec<(&Value, &Value)> = match answer["data"].as_array() {
        Some(data) => data.iter().zip(body["data"].as_array().unwrap()).collect(),
        None => vec![(answer, body)],
    };
    for (ours, theirs) in objects {
        for field in [
            "object",
            "bytes",
            "filename",
            "purpose",
            "status",
            "deleted",
            "endpoint",
            "completion_window",
            "model",
            "metadata",
            "request_counts",
            "background",
            "role",
            "content",
        ] {
            assert_eq!(ours.get(field), theirs.get(field), "{what}: `{field}`");
        }
    }
}

/// What a `response` must give the SDK beyond the recorded answer's fields: the output text
/// the mock answers once it has completed (the last user input, after `mock: `), none before.
fn check_response(case: &str, index: usize, body: &Value) {
    let text = shapes::response(body);
    match body["status"].as_str() {
        Some("completed") => {
            let asked = if (case, index) == ("responses_create", 1) {
                "And again?"
            } else {
                "Hello!"
            };
            assert_eq!(text, format!("mock: {asked}"), "{case}: {body}");
        }
        _ => assert!(body["output"].as_array().unwrap().is_empty(), "{body}"),
    }
}

/// What a `stream: true` chat or completions call gets: the mock's own stream, relayed live.
const STREAMED: &str = "t0 t1 t2 ";

/// What each case must give the SDK.
fn check(case: &str, status: u16, body: &Value) {
    match case {
        "embeddings" | "embeddings_float" => {
            assert_eq!(status, 200, "{case}: {body}");
            let inputs = if case == "embeddings" {
                vec!["Hello!", "a queue"]
            } else {
                vec!["Hello!"]
            };
            let vectors = shapes::embedding_list(body);
            let expected: Vec<Vec<f64>> = inputs
                .iter()
                .map(|input| testkit::mock::mock_embedding(&json!(input)))
                .collect();
            assert_eq!(
                vectors, expected,
                "the mock's vector of each input, in order"
            );
        }
        "completions" => {
            assert_eq!(status, 200, "{case}: {body}");
            assert_eq!(shapes::text_completion(body), "mock: Say this is a test");
        }
        "completions_stream" => {
            assert_eq!(status, 200, "{case}: {body}");
            let events = body.as_array().unwrap();
            assert_eq!(shapes::text_completion_stream(events), STREAMED);
        }
        "responses_stream" => {
            assert_eq!(status, 200, "{case}: {body}");
            let (text, done) = shapes::response_events(body.as_array().unwrap());
            // Relayed live from the mock's own stream (`t{i} ` per delta).
            assert_eq!(text, "t0 t1 t2 ");
            assert_eq!(done["status"], "completed");
        }
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
            assert_eq!(shapes::chunk_stream(events), STREAMED);
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
