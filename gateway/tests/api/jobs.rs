use crate::harness::{Gateway, observed};
use insta::assert_json_snapshot;
use serde_json::{Value, json};

#[tokio::test]
async fn poll_returns_own_jobs_and_not_found_for_unknown_or_foreign_ids() {
    let gw = Gateway::start(&[("OBB_MAX_POLL_IDS", "3")]).await;
    let (alice, bob, node) = (
        gw.key("user").await,
        gw.key("user").await,
        gw.key("node").await,
    );
    let mine = gw.submit_id(&alice, "echo").await;
    let theirs = gw.submit_id(&bob, "echo").await;
    let (status, body) = gw
        .post_json(
            &alice,
            "/v1/results/poll",
            &json!({"ids": [mine, theirs, "job-missing"]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["jobs"][0]["status"], "queued");
    for entry in [&body["jobs"][1], &body["jobs"][2]] {
        assert_eq!(entry["status"], "not_found");
        assert!(
            entry.get("model").is_none(),
            "no data of other users leaks: {entry}"
        );
    }
    assert_json_snapshot!(body["jobs"][1], {".id" => "[id]", ".error.message" => "[message]"});
    let (status, too_many) = gw
        .post_json(
            &alice,
            "/v1/results/poll",
            &json!({"ids": ["a", "b", "c", "d"]}),
        )
        .await;
    assert_eq!(
        (status.as_u16(), too_many["error"]["param"].as_str()),
        (400, Some("ids"))
    );

    // Without ids: a page of the caller's finished jobs.
    let leased = gw.fetch(&node, "n", &["*"], 10, 0.0).await;
    let finished = leased.iter().find(|j| j["id"] == mine.as_str()).unwrap();
    assert_eq!(gw.complete(&node, finished, "done").await, "accepted");
    for body in [json!({}), json!({"ids": []})] {
        let (_, page) = gw.post_json(&alice, "/v1/results/poll", &body).await;
        let ids: Vec<&str> = page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec![mine.as_str()]);
        assert_eq!(
            page["jobs"][0]["result"]["choices"][0]["message"]["content"],
            "done"
        );
    }
}

#[tokio::test]
async fn list_pages_newest_first_with_a_cursor_and_a_status_filter() {
    let gw = Gateway::start(&[]).await;
    let (user, admin) = (gw.key("user").await, gw.admin.clone());
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(gw.submit_id(&user, "echo").await);
    }
    let cancelled = ids[1].clone();
    let (status, _) = gw
        .post_json(&user, &format!("/v1/jobs/{cancelled}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let (_, first) = gw.get_json(&user, "/v1/jobs?limit=2").await;
    let page = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(page(&first), vec![ids[4].clone(), ids[3].clone()]);
    assert_eq!(first["has_more"], true);
    let after = first["last_id"].as_str().unwrap();
    let (_, second) = gw
        .get_json(&user, &format!("/v1/jobs?limit=2&after={after}"))
        .await;
    assert_eq!(page(&second), vec![ids[2].clone(), ids[1].clone()]);
    let (_, filtered) = gw.get_json(&user, "/v1/jobs?status=cancelled").await;
    assert_eq!(page(&filtered), vec![cancelled.clone()]);
    let (_, both) = gw
        .get_json(&user, "/v1/jobs?status=queued,cancelled&limit=100")
        .await;
    assert_eq!(page(&both).len(), 5);
    // An admin sees every user's jobs; another user sees none of them.
    let (_, all) = gw.get_json(&admin, "/v1/jobs?limit=100").await;
    assert_eq!(page(&all).len(), 5);
    let stranger = gw.key("user").await;
    let (_, none) = gw.get_json(&stranger, "/v1/jobs").await;
    assert!(page(&none).is_empty());
    let (status, _) = gw
        .get_json(&stranger, &format!("/v1/jobs/{}", ids[0]))
        .await;
    assert_eq!(status, 404);
    let (status, _) = gw.get_json(&admin, &format!("/v1/jobs/{}", ids[0])).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn cancelling_a_queued_job_is_immediate_and_a_processing_job_tells_its_node() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let queued = gw.submit_id(&user, "a").await;
    let response = gw
        .http
        .post(gw.url(&format!("/v1/jobs/{queued}/cancel")))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    let seen = observed(response).await;
    assert_json_snapshot!(seen, {
        ".body.id" => "[id]", ".body.created_at" => "[time]", ".body.updated_at" => "[time]",
        ".body.expires_at" => "[time]", ".body.error.message" => "[message]",
    });
    assert!(
        gw.fetch(&node, "n", &["a"], 5, 0.0).await.is_empty(),
        "a cancelled job is never leased"
    );

    let running = gw.submit_id(&user, "b").await;
    let leased = gw.fetch(&node, "n", &["b"], 5, 0.0).await;
    let lease = leased[0]["lease_id"].clone();
    let (status, job) = gw
        .post_json(&user, &format!("/v1/jobs/{running}/cancel"), &json!({}))
        .await;
    assert_eq!(
        (status.as_u16(), job["status"].as_str()),
        (200, Some("cancelled"))
    );
    let (_, beat) = gw
        .post_json(
            &node,
            "/internal/queue/heartbeat",
            &json!({"node_id": "n", "lease_ids": [lease]}),
        )
        .await;
    assert_eq!(beat["cancelled"], json!([lease]));
    assert_eq!(
        gw.complete(&node, &leased[0], "too late").await,
        "cancelled"
    );
    assert_eq!(gw.job(&user, &running).await["status"], "cancelled");

    // Cancelling again is harmless; cancelling a finished job is a conflict.
    let (status, _) = gw
        .post_json(&user, &format!("/v1/jobs/{running}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let done = gw.submit_id(&user, "c").await;
    let leased = gw.fetch(&node, "n", &["c"], 5, 0.0).await;
    gw.complete(&node, &leased[0], "ok").await;
    let (status, body) = gw
        .post_json(&user, &format!("/v1/jobs/{done}/cancel"), &json!({}))
        .await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (409, Some("job_already_final"))
    );
    let (status, _) = gw
        .post_json(&user, "/v1/jobs/job-nope/cancel", &json!({}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_job_stream_sends_each_status_and_closes_after_the_final_one() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let id = gw.submit_id(&user, "echo").await;
    let mut response = gw
        .http
        .get(gw.url(&format!("/v1/jobs/{id}/stream")))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let mut next_event = async |text: &mut String| {
        let seen = text.matches("\n\n").count();
        while text.matches("\n\n").count() == seen {
            let chunk = response.chunk().await.unwrap().expect("more events");
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    next_event(&mut text).await;
    assert!(text.starts_with("event: queued\n"), "{text}");
    let leased = gw.fetch(&node, "node-7", &["echo"], 1, 0.0).await;
    next_event(&mut text).await;
    assert!(text.contains("event: processing\n"), "{text}");
    assert!(text.contains("\"node\":\"node-7\""), "{text}");
    gw.complete(&node, &leased[0], "fin").await;
    next_event(&mut text).await;
    assert!(text.contains("event: completed\n"), "{text}");
    assert!(
        response.chunk().await.unwrap().is_none(),
        "the stream ends after the final event"
    );
    let (status, _) = gw.get_json(&user, "/v1/jobs/job-unknown/stream").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn get_with_wait_returns_as_soon_as_the_job_finishes() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let id = gw.submit_id(&user, "echo").await;
    let waiter = {
        let (http, url, user) = (
            gw.http.clone(),
            gw.url(&format!("/v1/jobs/{id}?wait=20")),
            user.clone(),
        );
        tokio::spawn(async move {
            http.get(url)
                .bearer_auth(user)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    let leased = gw.fetch(&node, "n", &["echo"], 1, 5.0).await;
    gw.complete(&node, &leased[0], "waited").await;
    let job = waiter.await.unwrap();
    assert_eq!(job["status"], "completed");
    assert_eq!(job["result"]["choices"][0]["message"]["content"], "waited");
    let (_, plain) = gw.get_json(&user, &format!("/v1/jobs/{id}")).await;
    assert_eq!(plain["attempts"], 1);
}

#[tokio::test]
async fn models_lists_what_recently_seen_nodes_serve() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let (_, empty) = gw.get_json(&user, "/v1/models").await;
    assert_eq!(empty, json!({"object": "list", "data": []}));
    gw.fetch(&node, "a", &["llama3", "qwen"], 1, 0.0).await;
    gw.post_json(
        &node,
        "/internal/queue/heartbeat",
        &json!({"node_id": "b", "models": ["qwen", "*"], "capacity": 2}),
    )
    .await;
    let (_, models) = gw.get_json(&user, "/v1/models").await;
    assert_json_snapshot!(models);
}
