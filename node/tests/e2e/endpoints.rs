//! Jobs of other endpoints than chat through real nodes: embeddings packed into one
//! upstream call and split back (a fill leasing only the models it can pack), legacy
//! completions forwarded to their own path, and nodes that lease only the endpoints they
//! serve.

use crate::stack;
use serde_json::{Value, json};
use std::time::Duration;
use testkit::mock::{Fault, MockUpstream, mock_embedding, mock_tokens};
use testkit::{Gateway, NodeProcess};

/// `POST path` as `key`, answered 202: the job's id.
async fn queue(gw: &Gateway, key: &str, path: &str, body: Value) -> String {
    let (status, job) = gw.post_json(key, path, &body).await;
    assert_eq!(status, 202, "{job}");
    job["id"].as_str().expect("job id").to_owned()
}

/// Runs `obb-node batch` with `extra` `[node]` settings until the queue holds nothing it
/// serves, and returns its log.
fn run_batch(gw: &Gateway, key: &str, upstream: &str, extra: &str) -> String {
    let mut node = NodeProcess::start(
        "batch",
        &NodeProcess::config(gw, key, "packer", Some(upstream), extra),
    );
    let status = node.wait(Duration::from_secs(60)).expect("batch exits");
    assert!(status.success(), "{}", node.log());
    node.log()
}

#[tokio::test(flavor = "multi_thread")]
async fn queued_embeddings_share_one_upstream_call_and_each_job_gets_its_own_vectors() {
    let (gw, user, key, mock) = stack(&[]).await;
    let inputs: Vec<Value> = (0..20)
        .map(|n| match n % 4 {
            0 => json!(format!("text number {n}")),
            1 => json!([format!("first of {n}"), format!("second of {n} here")]),
            2 => json!(format!("w{n}")),
            _ => json!([format!("only {n}")]),
        })
        .collect();
    let mut ids = Vec::new();
    for input in &inputs {
        let body = json!({"model": "m", "input": input, "encoding_format": "float"});
        ids.push(queue(&gw, &user, "/v1/embeddings", body).await);
    }
    let log = run_batch(&gw, &key, &mock.base_url(), "models = [\"m\"]");
    assert!(log.contains("batch done: 20 completed, 0 failed"), "{log}");
    let items = |input: &Value| match input {
        Value::Array(items) => items.clone(),
        text => vec![text.clone()],
    };
    let total_inputs: usize = inputs.iter().map(|i| items(i).len()).sum();
    assert_eq!(
        mock.embedding_calls(),
        vec![total_inputs],
        "the 20 jobs went up as one call"
    );
    let mut prompt_tokens = 0;
    for (id, input) in ids.iter().zip(&inputs) {
        let job = gw.job(&user, id).await;
        assert_eq!(job["status"], "completed", "{job}");
        assert_eq!(
            (job["object"].as_str(), job["endpoint"].as_str()),
            (Some("embedding.job"), Some("/v1/embeddings"))
        );
        let result = &job["result"];
        assert_eq!(result["object"], "list");
        let own: Vec<Value> = items(input)
            .iter()
            .enumerate()
            .map(|(index, item)| {
                json!({"object": "embedding", "index": index, "embedding": mock_embedding(item)})
            })
            .collect();
        assert_eq!(
            result["data"],
            json!(own),
            "job {id} got exactly its own vectors"
        );
        let share = result["usage"]["prompt_tokens"].as_u64().unwrap();
        assert_eq!(result["usage"]["total_tokens"].as_u64(), Some(share));
        prompt_tokens += share;
    }
    let expected: u64 = inputs.iter().flat_map(items).map(|i| mock_tokens(&i)).sum();
    assert_eq!(
        prompt_tokens, expected,
        "the shares add up to the call's usage"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_part_missing_from_a_packed_answer_fails_only_its_job() {
    let (gw, user, key, mock) = stack(&[]).await;
    let mut ids = Vec::new();
    for input in ["kept one", "mock:drop this one", "kept two"] {
        let body = json!({"model": "m", "input": input});
        ids.push(queue(&gw, &user, "/v1/embeddings", body).await);
    }
    let log = run_batch(&gw, &key, &mock.base_url(), "models = [\"m\"]");
    assert!(log.contains("batch done: 2 completed, 1 failed"), "{log}");
    assert_eq!(mock.embedding_calls(), vec![3]);
    let statuses: Vec<Value> = futures_statuses(&gw, &user, &ids).await;
    assert_eq!(
        statuses,
        vec![json!("completed"), json!("failed"), json!("completed")]
    );
    let failed = gw.job(&user, &ids[1]).await;
    assert_eq!(
        failed["error"]["code"], "upstream_invalid_response",
        "{failed}"
    );
    let kept = gw.job(&user, &ids[2]).await;
    assert_eq!(
        kept["result"]["data"],
        json!([{"object": "embedding", "index": 0, "embedding": mock_embedding(&json!("kept two"))}])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_packed_call_is_sent_again_job_by_job_so_only_the_refused_input_fails() {
    let (gw, user, key, mock) = stack(&[]).await;
    let mut ids = Vec::new();
    for input in ["input 0", "mock:reject this one", "input 2"] {
        let body = json!({"model": "m", "input": input});
        ids.push(queue(&gw, &user, "/v1/embeddings", body).await);
    }
    let log = run_batch(&gw, &key, &mock.base_url(), "models = [\"m\"]");
    assert!(log.contains("batch done: 2 completed, 1 failed"), "{log}");
    assert_eq!(
        mock.embedding_calls(),
        vec![3, 1, 1, 1],
        "the pack, then each job alone"
    );
    let statuses: Vec<Value> = futures_statuses(&gw, &user, &ids).await;
    assert_eq!(
        statuses,
        vec![json!("completed"), json!("failed"), json!("completed")]
    );
    let refused = gw.job(&user, &ids[1]).await;
    assert_eq!(
        refused["error"]["message"], "an input is too long (mock:reject)",
        "{refused}"
    );
    let kept = gw.job(&user, &ids[2]).await;
    assert_eq!(
        kept["result"]["data"],
        json!([{"object": "embedding", "index": 0, "embedding": mock_embedding(&json!("input 2"))}])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_every_job_gets_fails_every_job_of_the_pack() {
    let (gw, user, key, mock) = stack(&[]).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let body = json!({"model": "m", "input": format!("input {n}")});
        ids.push(queue(&gw, &user, "/v1/embeddings", body).await);
    }
    mock.push_faults([400, 400, 400, 400].map(|status| Fault::Status(status, None)));
    let log = run_batch(&gw, &key, &mock.base_url(), "models = [\"m\"]");
    assert!(log.contains("batch done: 0 completed, 3 failed"), "{log}");
    assert_eq!(mock.calls(), 4, "the pack, then each job alone");
    for id in &ids {
        let job = gw.job(&user, id).await;
        assert_eq!(job["status"], "failed");
        assert_eq!(job["error"]["message"], "mock upstream fault 400", "{job}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_packing_off_each_embeddings_job_is_its_own_call_answered_verbatim() {
    let (gw, user, key, mock) = stack(&[]).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let body = json!({"model": "m", "input": [n, n + 1]});
        ids.push(queue(&gw, &user, "/v1/embeddings", body).await);
    }
    let log = run_batch(
        &gw,
        &key,
        &mock.base_url(),
        "models = [\"m\"]\nembeddings_pack_max = 1",
    );
    assert!(log.contains("batch done: 3 completed, 0 failed"), "{log}");
    assert_eq!(mock.embedding_calls(), vec![1, 1, 1]);
    let job = gw.job(&user, &ids[2]).await;
    assert_eq!(
        job["result"]["data"][0]["embedding"],
        json!(mock_embedding(&json!([2, 3])))
    );
    assert_eq!(job["result"]["usage"]["prompt_tokens"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_legacy_completion_goes_to_the_upstreams_completions_path_and_back_verbatim() {
    let (gw, user, key, mock) = stack(&[]).await;
    let id = queue(
        &gw,
        &user,
        "/v1/completions",
        json!({"model": "m", "prompt": "Once upon", "max_tokens": 5}),
    )
    .await;
    run_batch(&gw, &key, &mock.base_url(), "models = [\"m\"]");
    assert_eq!(mock.paths(), vec!["/v1/completions"]);
    let job = gw.job(&user, &id).await;
    assert_eq!(job["object"], "text_completion.job");
    assert_eq!(job["result"]["object"], "text_completion");
    assert_eq!(job["result"]["choices"][0]["text"], "mock: Once upon");
    let (_, request) = mock.state.last_request.lock().unwrap().clone().unwrap();
    assert_eq!(request["max_tokens"], 5, "the body is forwarded as sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_leases_only_the_endpoints_it_serves() {
    let (gw, user, key, mock) = stack(&[]).await;
    let mut check = NodeProcess::start(
        "check",
        &NodeProcess::config(&gw, &key, "n", Some(&mock.base_url()), "models = [\"m\"]"),
    );
    assert!(
        check
            .wait(Duration::from_secs(30))
            .is_some_and(|s| s.success())
    );
    for endpoint in ["/v1/chat/completions", "/v1/embeddings", "/v1/completions"] {
        assert!(
            check.log().contains(&format!("serves {endpoint}")),
            "an [llm] API serves all three: {}",
            check.log()
        );
    }
    let chat = gw.submit_id(&user, "m").await;
    let embeddings = queue(
        &gw,
        &user,
        "/v1/embeddings",
        json!({"model": "m", "input": "x"}),
    )
    .await;
    let completions = queue(
        &gw,
        &user,
        "/v1/completions",
        json!({"model": "m", "prompt": "x"}),
    )
    .await;
    let log = run_batch(
        &gw,
        &key,
        &mock.base_url(),
        "models = [\"m\"]\nendpoints = [\"/v1/chat/completions\"]",
    );
    assert!(log.contains("batch done: 1 completed, 0 failed"), "{log}");
    assert_eq!(gw.job(&user, &chat).await["status"], "completed");
    assert_eq!(gw.job(&user, &embeddings).await["status"], "queued");
    assert_eq!(gw.job(&user, &completions).await["status"], "queued");
    assert_eq!(mock.paths(), vec!["/v1/chat/completions"]);
    run_batch(
        &gw,
        &key,
        &mock.base_url(),
        "models = [\"m\"]\nendpoints = [\"/v1/embeddings\", \"/v1/completions\"]",
    );
    assert_eq!(gw.job(&user, &embeddings).await["status"], "completed");
    assert_eq!(gw.job(&user, &completions).await["status"], "completed");
}

async fn futures_statuses(gw: &Gateway, user: &str, ids: &[String]) -> Vec<Value> {
    let mut statuses = Vec::new();
    for id in ids {
        statuses.push(gw.job(user, id).await["status"].clone());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_cancelled_while_its_pack_runs_is_dropped_and_the_others_complete() {
    let (gw, user, key, mock) = stack(&[("OBB_LEASE_SECONDS", "3")]).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let body = json!({"model": "m", "input": format!("input {n}")});
        ids.push(queue(&gw, &user, "/v1/embeddings", body).await);
    }
    // Long enough for heartbeats (a third of the lease) to come while the call runs.
    mock.set_delay(Duration::from_secs(5));
    let mut node = NodeProcess::start(
        "batch",
        &NodeProcess::config(
            &gw,
            &key,
            "packer",
            Some(&mock.base_url()),
            "models = [\"m\"]",
        ),
    );
    testkit::eventually(Duration::from_secs(20), "the pack's call", || async {
        (mock.calls() == 1).then_some(())
    })
    .await;
    let (status, _) = gw
        .post_json(&user, &format!("/v1/jobs/{}/cancel", ids[1]), &json!({}))
        .await;
    assert_eq!(status, 200);
    let status = node.wait(Duration::from_secs(60)).expect("batch exits");
    assert!(status.success(), "{}", node.log());
    assert!(
        node.log().contains("dropped from its pack"),
        "{}",
        node.log()
    );
    assert_eq!(
        mock.embedding_calls(),
        vec![3],
        "the call was not cut short"
    );
    let statuses = futures_statuses(&gw, &user, &ids).await;
    assert_eq!(
        statuses,
        vec![json!("completed"), json!("cancelled"), json!("completed")]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pack_fill_leases_no_job_of_another_model_to_wait_ahead_of_the_queue() {
    let gw = Gateway::start(&[]).await;
    let (user, key) = (gw.key("user").await, gw.key("node").await);
    let mock = MockUpstream::start(&["a", "b"])
        .await
        .expect("the mock upstream starts");
    let first = queue(
        &gw,
        &user,
        "/v1/embeddings",
        json!({"model": "a", "input": "a0"}),
    )
    .await;
    let mut others = Vec::new();
    for n in 0..3 {
        let body = json!({"model": "b", "input": format!("b{n}")});
        others.push(queue(&gw, &user, "/v1/embeddings", body).await);
    }
    // The first call is held, so that what the node leased with it can be seen meanwhile.
    mock.push_faults([Fault::Delay(Duration::from_secs(10))]);
    let mut node = NodeProcess::start(
        "batch",
        &NodeProcess::config(
            &gw,
            &key,
            "packer",
            Some(&mock.base_url()),
            "models = [\"a\", \"b\"]\nconcurrency = 1\nbatch_size = 1",
        ),
    );
    testkit::eventually(Duration::from_secs(20), "the first job's call", || async {
        (mock.calls() == 1).then_some(())
    })
    .await;
    assert_eq!(gw.job(&user, &first).await["status"], "processing");
    assert_eq!(
        futures_statuses(&gw, &user, &others).await,
        vec![json!("queued"); 3],
        "a fill leases no job that cannot join the running pack"
    );
    // Work the queue ranks first, submitted while the call runs, goes before them.
    let urgent = queue(
        &gw,
        &user,
        "/v1/chat/completions",
        json!({"model": "a", "messages": [{"role": "user", "content": "now"}],
               "metadata": {"obb_priority": "1"}}),
    )
    .await;
    let status = node.wait(Duration::from_secs(60)).expect("batch exits");
    assert!(status.success(), "{}", node.log());
    assert_eq!(
        mock.paths(),
        vec!["/v1/embeddings", "/v1/chat/completions", "/v1/embeddings"]
    );
    assert_eq!(
        mock.embedding_calls(),
        vec![1, 3],
        "model b's jobs still share a call"
    );
    let mut all = others.clone();
    all.extend([first, urgent]);
    assert_eq!(
        futures_statuses(&gw, &user, &all).await,
        vec![json!("completed"); 5]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_never_goes_upstream_and_jobs_differing_only_in_it_share_a_call() {
    let (gw, user, key, mock) = stack(&[]).await;
    let mut ids = Vec::new();
    for (n, metadata) in [
        json!({"obb_priority": "2"}),
        json!({"obb_ttl_seconds": "900", "team": "search"}),
        Value::Null,
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = json!({"model": "m", "input": format!("text {n}")});
        if !metadata.is_null() {
            body["metadata"] = metadata;
        }
        ids.push(queue(&gw, &user, "/v1/embeddings", body).await);
    }
    // The mock refuses `metadata` on these endpoints, as OpenAI does.
    let log = run_batch(&gw, &key, &mock.base_url(), "models = [\"m\"]");
    assert!(log.contains("batch done: 3 completed, 0 failed"), "{log}");
    assert_eq!(mock.embedding_calls(), vec![3], "one call for the three");
    let (_, sent) = mock.state.last_request.lock().unwrap().clone().unwrap();
    assert!(sent.get("metadata").is_none(), "{sent}");
    assert_eq!(sent["input"], json!(["text 0", "text 1", "text 2"]));
    for id in &ids {
        assert_eq!(gw.job(&user, id).await["status"], "completed");
    }

    let completion = queue(
        &gw,
        &user,
        "/v1/completions",
        json!({"model": "m", "prompt": "Once", "metadata": {"obb_priority": "1"}}),
    )
    .await;
    let log = run_batch(&gw, &key, &mock.base_url(), "models = [\"m\"]");
    assert!(log.contains("batch done: 1 completed, 0 failed"), "{log}");
    let (_, sent) = mock.state.last_request.lock().unwrap().clone().unwrap();
    assert!(sent.get("metadata").is_none(), "{sent}");
    assert_eq!(sent["prompt"], "Once");
    let job = gw.job(&user, &completion).await;
    assert_eq!(job["result"]["choices"][0]["text"], "mock: Once");
}
