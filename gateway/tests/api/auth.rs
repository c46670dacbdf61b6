use crate::harness::{Gateway, chat, observed};
use insta::assert_json_snapshot;
use reqwest::Method;
use serde_json::json;

/// Every route, with a body good enough to pass parsing.
fn routes() -> Vec<(
    Method,
    &'static str,
    Option<serde_json::Value>,
    &'static [&'static str],
)> {
    let users: &[&str] = &["user", "admin"];
    let nodes: &[&str] = &["node"];
    let admins: &[&str] = &["admin"];
    vec![
        (
            Method::POST,
            "/v1/chat/completions",
            Some(chat("echo", "hi")),
            users,
        ),
        (Method::GET, "/v1/jobs", None, users),
        (Method::GET, "/v1/jobs/job-x", None, users),
        (Method::POST, "/v1/jobs/job-x/cancel", None, users),
        (Method::GET, "/v1/jobs/job-x/stream", None, users),
        (
            Method::POST,
            "/v1/results/poll",
            Some(json!({"ids": []})),
            users,
        ),
        (Method::GET, "/v1/models", None, users),
        (
            Method::POST,
            "/internal/queue/fetch",
            Some(json!({"node_id": "n", "models": ["*"]})),
            nodes,
        ),
        (
            Method::POST,
            "/internal/queue/heartbeat",
            Some(json!({"node_id": "n"})),
            nodes,
        ),
        (
            Method::POST,
            "/internal/queue/submit",
            Some(json!([])),
            nodes,
        ),
        (Method::GET, "/admin/keys", None, admins),
        (
            Method::POST,
            "/admin/keys",
            Some(json!({"name": "k", "role": "user"})),
            admins,
        ),
        (Method::DELETE, "/admin/keys/key_nothing", None, admins),
    ]
}

#[tokio::test]
async fn every_route_checks_the_key_and_the_role() {
    let gw = Gateway::start(&[]).await;
    let user = gw.key("user").await;
    let node = gw.key("node").await;
    let revoked = gw.key("user").await;
    let revoked_id = format!("key_{}", &revoked["sk-obb-".len().."sk-obb-".len() + 12]);
    let (status, _) = gw
        .http
        .delete(gw.url(&format!("/admin/keys/{revoked_id}")))
        .bearer_auth(&gw.admin)
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(status, 200);
    let keys = [
        ("user", Some(user)),
        ("node", Some(node)),
        ("admin", Some(gw.admin.clone())),
    ];
    let bad = [
        ("none", None),
        ("malformed", Some("Bearer nonsense".to_owned())),
        ("unknown", Some(format!("Bearer sk-obb-{}", "A".repeat(52)))),
        ("revoked", Some(format!("Bearer {revoked}"))),
        ("not bearer", Some(format!("Basic {revoked}"))),
    ];
    for (method, path, body, allowed) in routes() {
        for (role, key) in &keys {
            let mut request = gw.http.request(method.clone(), gw.url(path));
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = request
                .bearer_auth(key.as_deref().unwrap())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            if allowed.contains(role) {
                assert!(
                    ![401, 403].contains(&status) && status < 500,
                    "{role} {method} {path}: {status}"
                );
            } else {
                assert_eq!(status, 403, "{role} {method} {path}");
            }
        }
        for (case, header) in &bad {
            let mut request = gw.http.request(method.clone(), gw.url(path));
            if let Some(header) = header {
                request = request.header("authorization", header);
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            let status = request.send().await.unwrap().status();
            assert_eq!(status, 401, "{case} {method} {path}");
        }
    }
}

#[tokio::test]
async fn auth_errors_are_openai_envelopes() {
    let gw = Gateway::start(&[]).await;
    let node = gw.key("node").await;
    let missing = observed(gw.http.get(gw.url("/v1/jobs")).send().await.unwrap()).await;
    let invalid = observed(
        gw.http
            .get(gw.url("/v1/jobs"))
            .bearer_auth("sk-obb-wrong")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let forbidden = observed(gw.submit(&node, &chat("m", "hi")).await).await;
    assert_json_snapshot!(json!({"missing": missing, "invalid": invalid, "forbidden": forbidden}));
}

#[tokio::test]
async fn revoking_a_key_takes_effect_on_its_next_request() {
    let gw = Gateway::start(&[]).await;
    let created: serde_json::Value = gw
        .http
        .post(gw.url("/admin/keys"))
        .bearer_auth(&gw.admin)
        .json(&json!({"name": "temp", "role": "user"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap();
    let (status, _) = gw.get_json(key, "/v1/jobs").await;
    assert_eq!(status, 200);
    let (_, listed) = gw.get_json(&gw.admin, "/admin/keys").await;
    assert!(
        listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("key").is_none()),
        "secrets are never listed"
    );
    assert_json_snapshot!(created, {".id" => "[id]", ".prefix" => "[prefix]", ".key" => "[key]", ".created_at" => "[time]"});
    let id = created["id"].as_str().unwrap();
    let response = gw
        .http
        .delete(gw.url(&format!("/admin/keys/{id}")))
        .bearer_auth(&gw.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, body) = gw.get_json(key, "/v1/jobs").await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (401, Some("revoked_api_key"))
    );
    let missing = gw
        .http
        .delete(gw.url("/admin/keys/key_none"))
        .bearer_auth(&gw.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn a_user_cannot_read_poll_list_cancel_or_stream_another_users_job() {
    let gw = Gateway::start(&[]).await;
    let (alice, bob) = (gw.key("user").await, gw.key("user").await);
    let id = gw.submit_id(&alice, "echo").await;
    assert_eq!(gw.get_json(&bob, &format!("/v1/jobs/{id}")).await.0, 404);
    assert_eq!(
        gw.get_json(&bob, &format!("/v1/jobs/{id}?wait=1")).await.0,
        404
    );
    assert_eq!(
        gw.get_json(&bob, &format!("/v1/jobs/{id}/stream")).await.0,
        404
    );
    assert_eq!(
        gw.post_json(&bob, &format!("/v1/jobs/{id}/cancel"), &json!({}))
            .await
            .0,
        404
    );
    let (_, polled) = gw
        .post_json(&bob, "/v1/results/poll", &json!({"ids": [id]}))
        .await;
    assert_eq!(polled["jobs"][0]["status"], "not_found");
    assert!(polled["jobs"][0].get("model").is_none());
    let (_, listed) = gw.get_json(&bob, "/v1/jobs").await;
    assert!(listed["data"].as_array().unwrap().is_empty());
    assert_eq!(
        gw.job(&alice, &id).await["status"],
        "queued",
        "bob's attempts changed nothing"
    );
}
