use crate::harness::{Gateway, chat};
use reqwest::Method;
use serde_json::{Value, json};

/// One malformed request: method, path, extra headers, raw body.
struct Case {
    name: &'static str,
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    expected: u16,
}

fn case(
    name: &'static str,
    method: Method,
    path: &str,
    body: impl Into<Vec<u8>>,
    expected: u16,
) -> Case {
    Case {
        name,
        method,
        path: path.to_owned(),
        headers: Vec::new(),
        body: body.into(),
        expected,
    }
}

fn submit(name: &'static str, body: Value) -> Case {
    case(
        name,
        Method::POST,
        "/v1/chat/completions",
        body.to_string(),
        400,
    )
}

fn create_batch(name: &'static str, body: Value) -> Case {
    case(name, Method::POST, "/v1/batches", body.to_string(), 400)
}

/// `POST /v1/batches` and the other batch routes, refused: nothing is stored.
fn batch_cases() -> Vec<Case> {
    let chat = "/v1/chat/completions";
    let get = |name, path: &str, expected| case(name, Method::GET, path, "", expected);
    vec![
        case("batch empty body", Method::POST, "/v1/batches", "", 400),
        case(
            "batch broken json",
            Method::POST,
            "/v1/batches",
            "{\"input_file_id\":",
            400,
        ),
        create_batch(
            "batch without a file",
            json!({"endpoint": chat, "completion_window": "24h"}),
        ),
        create_batch(
            "batch unknown file",
            json!({"input_file_id": "file-nope", "endpoint": chat, "completion_window": "24h"}),
        ),
        create_batch(
            "batch unknown endpoint",
            json!({"input_file_id": "file-nope", "endpoint": "/v1/images/generations", "completion_window": "24h"}),
        ),
        create_batch(
            "batch unknown window",
            json!({"input_file_id": "file-nope", "endpoint": chat, "completion_window": "48h"}),
        ),
        create_batch(
            "batch metadata not strings",
            json!({"input_file_id": "file-nope", "endpoint": chat, "completion_window": "24h",
                "metadata": {"n": 1}}),
        ),
        create_batch(
            "batch output expiry anchor",
            json!({"input_file_id": "file-nope", "endpoint": chat, "completion_window": "24h",
                "output_expires_after": {"anchor": "now", "seconds": 3600}}),
        ),
        get("batches limit zero", "/v1/batches?limit=0", 400),
        get("batches limit huge", "/v1/batches?limit=101", 400),
        get("unknown batch", "/v1/batches/batch_nope", 404),
        case(
            "cancel unknown batch",
            Method::POST,
            "/v1/batches/batch_nope/cancel",
            "",
            404,
        ),
        case(
            "put on a batch",
            Method::PUT,
            "/v1/batches/batch_1",
            "",
            405,
        ),
    ]
}

fn cases() -> Vec<Case> {
    let mut deep = String::new();
    for _ in 0..200 {
        deep.push('[');
    }
    let with_header = |name: &'static str, header: &'static str, value: &str, path: &str| {
        let mut c = case(name, Method::POST, path, chat("m", "x").to_string(), 400);
        c.headers.push((header, value.to_owned()));
        c
    };
    vec![
        case("empty body", Method::POST, "/v1/chat/completions", "", 400),
        case(
            "broken json",
            Method::POST,
            "/v1/chat/completions",
            "{\"model\":",
            400,
        ),
        case(
            "not an object",
            Method::POST,
            "/v1/chat/completions",
            "[1,2]",
            400,
        ),
        case(
            "a string",
            Method::POST,
            "/v1/chat/completions",
            "\"hi\"",
            400,
        ),
        case(
            "trailing garbage",
            Method::POST,
            "/v1/chat/completions",
            format!("{} x", chat("m", "x")),
            400,
        ),
        case(
            "invalid utf-8",
            Method::POST,
            "/v1/chat/completions",
            b"{\"model\":\"\xff\xfe\",\"messages\":[]}".to_vec(),
            400,
        ),
        case(
            "deep nesting",
            Method::POST,
            "/v1/chat/completions",
            deep.clone(),
            400,
        ),
        submit(
            "missing model",
            json!({"messages": [{"role": "user", "content": "x"}]}),
        ),
        submit("missing messages", json!({"model": "m"})),
        submit(
            "model a number",
            json!({"model": 3, "messages": [{"role": "user", "content": "x"}]}),
        ),
        submit(
            "model empty",
            json!({"model": " ", "messages": [{"role": "user", "content": "x"}]}),
        ),
        submit(
            "model too long",
            json!({"model": "m".repeat(300), "messages": [{"role": "user", "content": "x"}]}),
        ),
        submit("messages empty", json!({"model": "m", "messages": []})),
        submit(
            "messages an object",
            json!({"model": "m", "messages": {"role": "user"}}),
        ),
        submit(
            "message without role",
            json!({"model": "m", "messages": [{"content": "x"}]}),
        ),
        submit(
            "unknown role",
            json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}),
        ),
        submit(
            "content a number",
            json!({"model": "m", "messages": [{"role": "user", "content": 5}]}),
        ),
        submit(
            "stream a string",
            json!({"model": "m", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}),
        ),
        submit(
            "metadata a list",
            json!({"model": "m", "metadata": [1], "messages": [{"role": "user", "content": "x"}]}),
        ),
        submit(
            "priority 9 in metadata",
            json!({"model": "m", "metadata": {"obb_priority": "9"}, "messages": [{"role": "user", "content": "x"}]}),
        ),
        submit(
            "ttl negative in metadata",
            json!({"model": "m", "metadata": {"obb_ttl_seconds": "-4"}, "messages": [{"role": "user", "content": "x"}]}),
        ),
        with_header("priority 0", "x-obb-priority", "0", "/v1/chat/completions"),
        with_header(
            "priority text",
            "x-obb-priority",
            "high",
            "/v1/chat/completions",
        ),
        with_header("ttl zero", "x-obb-ttl", "0", "/v1/chat/completions"),
        with_header(
            "ttl a year",
            "x-obb-ttl",
            "31536000",
            "/v1/chat/completions",
        ),
        with_header(
            "idempotency key too long",
            "idempotency-key",
            &"k".repeat(300),
            "/v1/chat/completions",
        ),
        with_header(
            "prefer wait text",
            "prefer",
            "wait=soon",
            "/v1/chat/completions",
        ),
        with_header(
            "prefer wait negative",
            "prefer",
            "wait=-3",
            "/v1/chat/completions",
        ),
        case(
            "wait text",
            Method::POST,
            "/v1/chat/completions?wait=abc",
            chat("m", "x").to_string(),
            400,
        ),
        case(
            "wait negative",
            Method::POST,
            "/v1/chat/completions?wait=-1",
            chat("m", "x").to_string(),
            400,
        ),
        case(
            "wait nan",
            Method::POST,
            "/v1/chat/completions?wait=NaN",
            chat("m", "x").to_string(),
            400,
        ),
        case(
            "wait huge",
            Method::POST,
            "/v1/chat/completions?wait=1e308",
            chat("m", "x").to_string(),
            400,
        ),
        case(
            "get wait text",
            Method::GET,
            "/v1/jobs/job-x?wait=x",
            "",
            400,
        ),
        case(
            "list bad status",
            Method::GET,
            "/v1/jobs?status=done",
            "",
            400,
        ),
        case("list limit zero", Method::GET, "/v1/jobs?limit=0", "", 400),
        case(
            "list limit huge",
            Method::GET,
            "/v1/jobs?limit=100000",
            "",
            400,
        ),
        case(
            "list limit text",
            Method::GET,
            "/v1/jobs?limit=ten",
            "",
            400,
        ),
        case(
            "poll ids a string",
            Method::POST,
            "/v1/results/poll",
            json!({"ids": "job-1"}).to_string(),
            400,
        ),
        case(
            "poll ids numbers",
            Method::POST,
            "/v1/results/poll",
            json!({"ids": [1, 2]}).to_string(),
            400,
        ),
        case(
            "poll extra field",
            Method::POST,
            "/v1/results/poll",
            json!({"ids": [], "all": true}).to_string(),
            400,
        ),
        case(
            "poll too many ids",
            Method::POST,
            "/v1/results/poll",
            json!({"ids": vec!["job-1"; 1001]}).to_string(),
            400,
        ),
        case(
            "poll broken json",
            Method::POST,
            "/v1/results/poll",
            "{\"ids\": [",
            400,
        ),
        case(
            "job id with dot-dot",
            Method::GET,
            "/v1/jobs/..%2F..%2Fetc%2Fpasswd",
            "",
            404,
        ),
        case(
            "job id with quotes",
            Method::GET,
            "/v1/jobs/job-'%22",
            "",
            404,
        ),
        case(
            "job id with sql",
            Method::GET,
            "/v1/jobs/job-1'%20OR%20'1'='1",
            "",
            404,
        ),
        case(
            "cancel id with sql",
            Method::POST,
            "/v1/jobs/x';DROP%20TABLE%20jobs;--/cancel",
            "",
            404,
        ),
        case(
            "stream unknown id",
            Method::GET,
            "/v1/jobs/%00/stream",
            "",
            404,
        ),
        case(
            "unknown route",
            Method::GET,
            "/v2/chat/completions",
            "",
            404,
        ),
        case(
            "unknown nested route",
            Method::GET,
            "/v1/jobs/a/b/c",
            "",
            404,
        ),
        case("root", Method::GET, "/", "", 404),
        case(
            "get on submit",
            Method::GET,
            "/v1/chat/completions",
            "",
            405,
        ),
        case("put on jobs", Method::PUT, "/v1/jobs", "", 405),
        case("delete a job", Method::DELETE, "/v1/jobs/job-x", "", 405),
        case("get on poll", Method::GET, "/v1/results/poll", "", 405),
        case("patch keys", Method::PATCH, "/admin/keys", "", 405),
        case("post models", Method::POST, "/v1/models", "", 405),
        case("post healthz", Method::POST, "/healthz", "", 405),
        case(
            "admin key bad role",
            Method::POST,
            "/admin/keys",
            json!({"name": "x", "role": "root"}).to_string(),
            400,
        ),
        case(
            "admin key empty name",
            Method::POST,
            "/admin/keys",
            json!({"name": "", "role": "user"}).to_string(),
            400,
        ),
        case(
            "admin key extra field",
            Method::POST,
            "/admin/keys",
            json!({"name": "x", "role": "user", "x": 1}).to_string(),
            400,
        ),
        case(
            "file upload not multipart",
            Method::POST,
            "/v1/files",
            json!({"purpose": "batch"}).to_string(),
            400,
        ),
        case(
            "files limit zero",
            Method::GET,
            "/v1/files?limit=0",
            "",
            400,
        ),
        case(
            "files limit huge",
            Method::GET,
            "/v1/files?limit=10001",
            "",
            400,
        ),
        case(
            "files bad order",
            Method::GET,
            "/v1/files?order=up",
            "",
            400,
        ),
        case(
            "files bad purpose",
            Method::GET,
            "/v1/files?purpose=fine-tune",
            "",
            400,
        ),
        case(
            "file id with sql",
            Method::GET,
            "/v1/files/file-1'%20OR%20'1'='1",
            "",
            404,
        ),
        case(
            "file content unknown id",
            Method::GET,
            "/v1/files/..%2Fqueue.db/content",
            "",
            404,
        ),
        case(
            "delete unknown file",
            Method::DELETE,
            "/v1/files/file-missing",
            "",
            404,
        ),
        case("put on a file", Method::PUT, "/v1/files/file-1", "", 405),
        case(
            "too large",
            Method::POST,
            "/v1/chat/completions",
            format!(
                "{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}",
                "x".repeat(70_000)
            ),
            413,
        ),
    ]
}

fn node_cases() -> Vec<Case> {
    vec![
        case(
            "fetch without node",
            Method::POST,
            "/internal/queue/fetch",
            json!({"models": ["*"]}).to_string(),
            400,
        ),
        case(
            "fetch empty node id",
            Method::POST,
            "/internal/queue/fetch",
            json!({"node_id": "", "models": ["*"]}).to_string(),
            400,
        ),
        case(
            "fetch limit zero",
            Method::POST,
            "/internal/queue/fetch",
            json!({"node_id": "n", "models": ["*"], "limit": 0}).to_string(),
            400,
        ),
        case(
            "fetch limit huge",
            Method::POST,
            "/internal/queue/fetch",
            json!({"node_id": "n", "models": ["*"], "limit": 100000}).to_string(),
            400,
        ),
        case(
            "fetch negative wait",
            Method::POST,
            "/internal/queue/fetch",
            json!({"node_id": "n", "models": ["*"], "wait": -1}).to_string(),
            400,
        ),
        case(
            "fetch unknown field",
            Method::POST,
            "/internal/queue/fetch",
            json!({"node_id": "n", "models": ["*"], "x": 1}).to_string(),
            400,
        ),
        case(
            "heartbeat ids a string",
            Method::POST,
            "/internal/queue/heartbeat",
            json!({"node_id": "n", "lease_ids": "l"}).to_string(),
            400,
        ),
        case(
            "submit not a list",
            Method::POST,
            "/internal/queue/submit",
            json!({"id": "x"}).to_string(),
            400,
        ),
        case(
            "submit completed without result",
            Method::POST,
            "/internal/queue/submit",
            json!([{"id": "x", "lease_id": "l", "status": "COMPLETED"}]).to_string(),
            400,
        ),
        case(
            "submit bad status",
            Method::POST,
            "/internal/queue/submit",
            json!([{"id": "x", "lease_id": "l", "status": "OK"}]).to_string(),
            400,
        ),
    ]
}

#[tokio::test]
async fn malformed_requests_get_4xx_envelopes_and_change_nothing() {
    let gw = Gateway::start(&[("OBB_MAX_BODY_BYTES", "65536")]).await;
    let (admin, node) = (gw.admin.clone(), gw.key("node").await);
    let existing = gw.submit_id(&admin, "echo").await;
    let before = gw.get_json(&admin, "/v1/jobs?limit=100").await.1;
    let keys_before = gw.get_json(&admin, "/admin/keys").await.1;
    let all: Vec<(Case, &str)> = cases()
        .into_iter()
        .map(|c| (c, admin.as_str()))
        .chain(batch_cases().into_iter().map(|c| (c, admin.as_str())))
        .chain(node_cases().into_iter().map(|c| (c, node.as_str())))
        .collect();
    assert!(all.len() >= 60, "the table covers at least 60 cases");
    for (case, key) in all {
        let mut request = gw
            .http
            .request(case.method.clone(), gw.url(&case.path))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(case.body.clone());
        for (name, value) in &case.headers {
            request = request.header(*name, value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, case.expected, "{}: {body}", case.name);
        let error = &body["error"];
        assert!(
            error["message"].is_string() && error["type"].is_string(),
            "{}: {body}",
            case.name
        );
        assert!(
            error.get("param").is_some() && error.get("code").is_some(),
            "{}: {body}",
            case.name
        );
    }
    assert_eq!(
        gw.get_json(&admin, "/v1/jobs?limit=100").await.1,
        before,
        "no job changed"
    );
    assert_eq!(
        gw.get_json(&admin, "/admin/keys").await.1,
        keys_before,
        "no key changed"
    );
    assert_eq!(gw.job(&admin, &existing).await["status"], "queued");
    assert_eq!(
        gw.get_json(&admin, "/v1/batches").await.1["data"],
        json!([]),
        "no batch stored"
    );
}

/// Bodies `/v1/embeddings` and `/v1/completions` refuse, and the field each refusal names.
fn endpoint_cases() -> Vec<(&'static str, Value, Option<&'static str>)> {
    let e = "/v1/embeddings";
    let c = "/v1/completions";
    vec![
        (e, json!({"input": "x"}), Some("model")),
        (e, json!({"model": "", "input": "x"}), Some("model")),
        (e, json!({"model": "e"}), Some("input")),
        (e, json!({"model": "e", "input": ""}), Some("input")),
        (e, json!({"model": "e", "input": []}), Some("input")),
        (e, json!({"model": "e", "input": null}), Some("input")),
        (
            e,
            json!({"model": "e", "input": {"text": "x"}}),
            Some("input"),
        ),
        (
            e,
            json!({"model": "e", "input": ["a", ""]}),
            Some("input[1]"),
        ),
        (
            e,
            json!({"model": "e", "input": ["a", 1]}),
            Some("input[1]"),
        ),
        (e, json!({"model": "e", "input": [1, -1]}), Some("input[1]")),
        (
            e,
            json!({"model": "e", "input": [1, 4_294_967_296_u64]}),
            Some("input[1]"),
        ),
        (
            e,
            json!({"model": "e", "input": [[1], [2, "x"]]}),
            Some("input[1][1]"),
        ),
        (
            e,
            json!({"model": "e", "input": [[1], []]}),
            Some("input[1]"),
        ),
        (
            e,
            json!({"model": "e", "input": vec!["x"; 2049]}),
            Some("input"),
        ),
        (
            e,
            json!({"model": "e", "input": "x", "encoding_format": "int8"}),
            Some("encoding_format"),
        ),
        (
            e,
            json!({"model": "e", "input": "x", "dimensions": 0}),
            Some("dimensions"),
        ),
        (
            e,
            json!({"model": "e", "input": "x", "dimensions": "8"}),
            Some("dimensions"),
        ),
        (
            e,
            json!({"model": "e", "input": "x", "stream": true}),
            Some("stream"),
        ),
        (
            e,
            json!({"model": "e", "input": "x", "metadata": "p"}),
            Some("metadata"),
        ),
        (c, json!({"prompt": "x"}), Some("model")),
        (c, json!({"model": "c"}), Some("prompt")),
        (c, json!({"model": "c", "prompt": null}), Some("prompt")),
        (c, json!({"model": "c", "prompt": 7}), Some("prompt")),
        (c, json!({"model": "c", "prompt": []}), Some("prompt")),
        (
            c,
            json!({"model": "c", "prompt": ["a", 1]}),
            Some("prompt[1]"),
        ),
        (
            c,
            json!({"model": "c", "prompt": [1, "a"]}),
            Some("prompt[1]"),
        ),
        (
            c,
            json!({"model": "c", "prompt": [[1], []]}),
            Some("prompt[1]"),
        ),
        (
            c,
            json!({"model": "c", "prompt": "x", "stream": "yes"}),
            Some("stream"),
        ),
        (
            c,
            json!({"model": "c", "prompt": "x", "metadata": {"obb_priority": "9"}}),
            Some("metadata.obb_priority"),
        ),
    ]
}

#[tokio::test]
async fn embeddings_and_completions_refusals_name_the_field_and_store_nothing() {
    let gw = Gateway::start(&[]).await;
    let user = gw.key("user").await;
    const SNAPSHOTTED: [&str; 4] = ["input", "input[1][1]", "encoding_format", "prompt[1]"];
    let (mut envelopes, mut shown) = (Vec::new(), Vec::new());
    for (path, body, param) in endpoint_cases() {
        let (status, answer) = gw.post_json(&user, path, &body).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        let error = &answer["error"];
        assert_eq!(
            error["type"], "invalid_request_error",
            "{path} {body}: {answer}"
        );
        assert_eq!(error["param"].as_str(), param, "{path} {body}: {answer}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty() && !message.ends_with('.'),
            "{path} {body}: {answer}"
        );
        // One envelope of each kind of refusal is snapshotted whole.
        if let Some(param) = param.filter(|p| SNAPSHOTTED.contains(p))
            && !shown.contains(&param)
        {
            shown.push(param);
            envelopes.push(json!({"path": path, "status": status.as_u16(), "body": answer}));
        }
    }
    insta::assert_json_snapshot!(envelopes);
    let (_, jobs) = gw.get_json(&user, "/v1/jobs").await;
    assert_eq!(jobs["data"], json!([]), "no job stored");
    let (status, unknown) = gw.post_json(&user, "/v1/embeddings/x", &json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(unknown["error"]["type"], "invalid_request_error");
}
