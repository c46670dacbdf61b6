//! `/v1/responses` jobs through the real gateway and a real `obb-node` whose upstream (the
//! mock) lacks the route: the node translates to chat completions, once finds the route
//! missing, and hands the gateway a `response` object.

use crate::stack;
use serde_json::{Value, json};
use std::time::Duration;
use testkit::{Gateway, NodeProcess};

/// `POST /v1/responses` in the background as `user`: the response's id.
async fn queue(gw: &Gateway, user: &str, body: Value) -> String {
    let (status, response) = gw.post_json(user, "/v1/responses", &body).await;
    assert!(status.is_success(), "{status}: {response}");
    response["id"].as_str().expect("response id").to_owned()
}

/// Runs `obb-node batch` until the queue holds nothing it serves, one job at a time: jobs
/// running together may each try `/v1/responses` before the first learns it is missing.
fn run_batch(gw: &Gateway, key: &str, upstream: &str) {
    let extra = "models = [\"m\"]\nconcurrency = 1";
    let mut node = NodeProcess::start(
        "batch",
        &NodeProcess::config(gw, key, "translator", Some(upstream), extra),
    );
    let status = node.wait(Duration::from_secs(60)).expect("batch exits");
    assert!(status.success(), "{}", node.log());
}

fn output_text(response: &Value) -> &str {
    response["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_jobs_on_an_upstream_without_the_route_are_translated_to_chat_once_found_missing()
{
    let (gw, user, key, mock) = stack(&[]).await;
    mock.set_responses_route(false);
    let first = queue(
        &gw,
        &user,
        json!({"model": "m", "input": "first", "background": true}),
    )
    .await;
    let second = queue(
        &gw,
        &user,
        json!({"model": "m", "input": "second", "background": true, "metadata": {"k": "v"}}),
    )
    .await;
    run_batch(&gw, &key, &mock.base_url());
    assert_eq!(
        mock.paths(),
        [
            "/v1/responses",
            "/v1/chat/completions",
            "/v1/chat/completions"
        ],
        "only the first job asked for /v1/responses"
    );
    for (id, text) in [(&first, "first"), (&second, "second")] {
        let (status, response) = gw.get_json(&user, &format!("/v1/responses/{id}")).await;
        assert_eq!(status, 200, "{response}");
        assert_eq!(response["object"], "response");
        assert_eq!(&response["id"], id.as_str());
        assert_eq!(response["status"], "completed", "{response}");
        assert_eq!(output_text(&response), format!("mock: {text}"));
        assert_eq!(response["usage"]["input_tokens"], 3);
    }

    // A follow-up turn: the gateway expands `previous_response_id` into items, and the
    // node sends the whole conversation to chat.
    let third = queue(
        &gw,
        &user,
        json!({"model": "m", "input": "third", "previous_response_id": first, "background": true}),
    )
    .await;
    run_batch(&gw, &key, &mock.base_url());
    let (_, sent) = mock.state.last_request.lock().unwrap().clone().unwrap();
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "mock: first"},
            {"role": "user", "content": "third"},
        ])
    );
    let (_, response) = gw.get_json(&user, &format!("/v1/responses/{third}")).await;
    assert_eq!(output_text(&response), "mock: third", "{response}");
    assert_eq!(response["previous_response_id"], first.as_str());
}
