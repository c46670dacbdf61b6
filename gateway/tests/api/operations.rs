//! Operators' routes (issue 21) against the real gateway: retry one job and by filter,
//! priorities, nodes with drain and removal, the NDJSON export, the job list's filters and
//! detail, the dashboard's own routes, and who may call them. The tests play the node.

use crate::batches::{batch_until, create_on, upload};
use crate::harness::{Gateway, eventually};
use insta::assert_json_snapshot;
use serde_json::{Value, json};
use std::time::Duration;

fn failed(job: &Value) -> Value {
    json!([{"id": job["id"], "lease_id": job["lease_id"], "status": "FAILED",
        "error": {"message": "upstream answered 400", "type": "invalid_request_error",
            "param": null, "code": null},
        "upstream_status": 400, "retryable": false}])
}

/// A job of `model` submitted by `user`, leased and failed by `node`: its id, and the
/// lease of the run that failed.
async fn failed_job(gw: &Gateway, user: &str, node: &str, model: &str) -> (String, Value) {
    let id = gw.submit_id(user, model).await;
    let leased = gw.fetch(node, "n1", &[model], 1, 0.0).await;
    assert_eq!(leased[0]["id"], id.as_str());
    assert_eq!(gw.report(node, &failed(&leased[0])).await, "accepted");
    (id, leased[0]["lease_id"].clone())
}

#[tokio::test]
async fn an_admin_retries_a_failed_job_which_runs_again_with_its_history_kept() {
    let gw = Gateway::start(&[]).await;
    let (user, node, admin) = (gw.key("user").await, gw.key("node").await, gw.admin.clone());
    let (id, old_lease) = failed_job(&gw, &user, &node, "m").await;
    let before = gw.job(&user, &id).await;
    assert_eq!(
        (before["status"].as_str(), before["attempts"].as_u64()),
        (Some("failed"), Some(1))
    );

    let (status, retried) = gw
        .post_json(&admin, &format!("/admin/jobs/{id}/retry"), &json!({}))
        .await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["status"], "queued");
    assert_eq!(retried["attempts"], 0);
    assert!(
        retried.get("error").is_none(),
        "the old error is cleared: {retried}"
    );
    assert!(retried["expires_at"].as_i64() >= before["expires_at"].as_i64());
    assert_json_snapshot!(retried["events"], {"[].at" => "[time]"});

    // A late result of the run that failed is stale: the retry ended its lease.
    let late = json!([{"id": id, "lease_id": old_lease, "status": "COMPLETED",
        "result": crate::harness::completion("too late")}]);
    assert_eq!(gw.report(&node, &late).await, "stale");
    // It runs again, and the events stay with it.
    let again = gw.fetch(&node, "n1", &["m"], 1, 5.0).await;
    assert_eq!(
        (again[0]["id"].as_str(), again[0]["attempt"].as_u64()),
        (Some(id.as_str()), Some(1))
    );
    assert_eq!(
        gw.complete(&node, &again[0], "second time").await,
        "accepted"
    );
    let done = gw.job(&user, &id).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["events"][0]["type"], "retried");
    let (_, detail) = gw
        .get_json(&user, &format!("/v1/jobs/{id}?include=request"))
        .await;
    assert_eq!(detail["node"], "n1", "the node of its last run: {detail}");
    assert!(
        done.get("node").is_none(),
        "a plain read names a node only while it runs"
    );

    // Only ended jobs without an answer are retried; a user key may not.
    let (status, refused) = gw
        .post_json(&admin, &format!("/admin/jobs/{id}/retry"), &json!({}))
        .await;
    assert_eq!(
        (status.as_u16(), refused["error"]["code"].as_str()),
        (409, Some("job_not_retryable"))
    );
    let (status, _) = gw
        .post_json(&user, &format!("/admin/jobs/{id}/retry"), &json!({}))
        .await;
    assert_eq!(status, 403);
    let (status, missing) = gw
        .post_json(&admin, "/admin/jobs/job-nope/retry", &json!({}))
        .await;
    assert_eq!(
        (status.as_u16(), missing["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

#[tokio::test]
async fn a_bulk_retry_takes_its_filter_only_and_an_expired_job_gets_a_new_expiry() {
    let gw = Gateway::start(&[]).await;
    let (user, node, admin) = (gw.key("user").await, gw.key("node").await, gw.admin.clone());
    let a1 = failed_job(&gw, &user, &node, "a").await.0;
    let a2 = failed_job(&gw, &user, &node, "a").await.0;
    let b1 = failed_job(&gw, &user, &node, "b").await.0;
    let response = gw
        .submit_with(
            &user,
            &crate::harness::chat("c", "soon gone"),
            None,
            &[("x-obb-ttl", "1")],
        )
        .await;
    let expired = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually(Duration::from_secs(10), "the job expires", || async {
        (gw.job(&user, &expired).await["status"] == "expired").then_some(())
    })
    .await;

    let (status, body) = gw
        .post_json(
            &admin,
            "/admin/jobs/retry",
            &json!({"status": ["failed"], "model": "a"}),
        )
        .await;
    assert_eq!(
        (status.as_u16(), body.clone()),
        (200, json!({"object": "jobs.retry", "retried": 2}))
    );
    for (id, want) in [
        (&a1, "queued"),
        (&a2, "queued"),
        (&b1, "failed"),
        (&expired, "expired"),
    ] {
        assert_eq!(gw.job(&user, id).await["status"], want, "{id}");
    }
    // The rest, by default every failed, expired and cancelled job.
    let (_, body) = gw.post_json(&admin, "/admin/jobs/retry", &json!({})).await;
    assert_eq!(body["retried"], 2);
    // Retried with the 1 s it was submitted with (so it may well have expired again by
    // now: its status is not asserted).
    let revived = gw.job(&user, &expired).await;
    assert_eq!(
        (
            revived["events"][0]["type"].as_str(),
            revived["events"][0]["from"].as_str()
        ),
        (Some("retried"), Some("expired"))
    );
    let ttl =
        revived["expires_at"].as_i64().unwrap() - revived["events"][0]["at"].as_i64().unwrap();
    assert!((0..=2).contains(&ttl), "a new expiry 1 s away, not {ttl} s");
    // No failed job is left to retry, and a status that cannot be retried is a 400.
    let (_, body) = gw
        .post_json(&admin, "/admin/jobs/retry", &json!({"status": ["failed"]}))
        .await;
    assert_eq!(body["retried"], 0);
    let (status, bad) = gw
        .post_json(
            &admin,
            "/admin/jobs/retry",
            &json!({"status": ["completed"]}),
        )
        .await;
    assert_eq!(
        (status.as_u16(), bad["error"]["param"].as_str()),
        (400, Some("status"))
    );
    let (status, bad) = gw
        .post_json(&admin, "/admin/jobs/retry", &json!({"colour": "red"}))
        .await;
    assert_eq!(status, 400, "{bad}");
}

#[tokio::test]
async fn a_queued_jobs_priority_changes_its_lease_order_and_its_depth() {
    let gw = Gateway::start(&[]).await;
    let (user, node, admin) = (gw.key("user").await, gw.key("node").await, gw.admin.clone());
    let first = gw.submit_id(&user, "m").await;
    let second = gw.submit_id(&user, "m").await;
    let (status, moved) = gw
        .post_json(
            &admin,
            &format!("/admin/jobs/{second}/priority"),
            &json!({"priority": 1}),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(
        (moved["priority"].as_u64(), moved["queue_position"].as_u64()),
        (Some(1), Some(1))
    );
    assert_json_snapshot!(moved["events"], {"[].at" => "[time]"});
    let (_, overview) = gw.get_json(&admin, "/v1/dashboard/overview").await;
    assert_eq!(
        overview["depth"],
        json!([{"model": "m", "priority": 1, "queued": 1, "processing": 0},
               {"model": "m", "priority": 3, "queued": 1, "processing": 0}])
    );
    let leased = gw.fetch(&node, "n1", &["m"], 1, 0.0).await;
    assert_eq!(
        leased[0]["id"],
        second.as_str(),
        "the job moved ahead of {first}"
    );
    // Only queued jobs move, and only to 1..5.
    let (status, refused) = gw
        .post_json(
            &admin,
            &format!("/admin/jobs/{second}/priority"),
            &json!({"priority": 2}),
        )
        .await;
    assert_eq!(
        (status.as_u16(), refused["error"]["code"].as_str()),
        (409, Some("job_not_queued"))
    );
    for bad in [
        json!({"priority": 9}),
        json!({"priority": "high"}),
        json!({}),
    ] {
        let (status, body) = gw
            .post_json(&admin, &format!("/admin/jobs/{first}/priority"), &bad)
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    assert_eq!(
        gw.job(&user, &first).await["priority"],
        3,
        "unchanged by the bad calls"
    );
}

#[tokio::test]
async fn a_drained_node_is_leased_nothing_hears_it_and_finishes_its_running_job() {
    // A node not seen for 5 s is gone (`node_alive_seconds`): the removal at the end waits
    // for that.
    let gw = Gateway::start(&[("OBB_NODE_ALIVE_SECONDS", "5")]).await;
    let (user, node, admin) = (gw.key("user").await, gw.key("node").await, gw.admin.clone());
    let running = gw.submit_id(&user, "m").await;
    let leased = gw.fetch(&node, "n1", &["m"], 1, 0.0).await;
    let waiting = gw.submit_id(&user, "m").await;

    let (status, drained) = gw
        .post_json(&admin, "/admin/nodes/n1/drain", &json!({}))
        .await;
    assert_eq!(status, 200, "{drained}");
    assert_eq!(
        (drained["draining"].as_bool(), drained["in_flight"].as_u64()),
        (Some(true), Some(1))
    );
    let (status, fetched) = gw
        .post_json(
            &node,
            "/internal/queue/fetch",
            &json!({"node_id": "n1", "models": ["m"], "limit": 5, "wait": 0}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            fetched["jobs"].as_array().map(Vec::len),
            fetched["draining"].as_bool()
        ),
        (Some(0), Some(true))
    );
    let (_, beat) = gw
        .post_json(
            &node,
            "/internal/queue/heartbeat",
            &json!({"node_id": "n1", "lease_ids": [leased[0]["lease_id"]],
                "models": ["m"], "capacity": 4, "draining": true}),
        )
        .await;
    assert_eq!(beat["draining"], true);
    assert_eq!(
        beat["extended"][0], leased[0]["lease_id"],
        "its running job goes on"
    );
    let (_, nodes) = gw.get_json(&admin, "/admin/nodes").await;
    assert_eq!(
        (
            nodes["data"][0]["draining"].as_bool(),
            nodes["data"][0]["draining_reported"].as_bool()
        ),
        (Some(true), Some(true)),
        "the node's heartbeat said the drain reached it: {nodes}"
    );
    assert_eq!(gw.complete(&node, &leased[0], "done").await, "accepted");
    assert_eq!(gw.job(&user, &running).await["status"], "completed");
    // Another node takes the queued job; undrained, the first takes work again.
    assert_eq!(
        gw.fetch(&node, "n2", &["m"], 1, 0.0).await[0]["id"],
        waiting.as_str()
    );
    let (_, undrained) = gw
        .post_json(&admin, "/admin/nodes/n1/undrain", &json!({}))
        .await;
    assert_eq!(undrained["draining"], false);
    gw.submit_id(&user, "m").await;
    assert_eq!(gw.fetch(&node, "n1", &["m"], 1, 0.0).await.len(), 1);

    let (_, nodes) = gw.get_json(&admin, "/admin/nodes").await;
    let ids: Vec<&str> = nodes["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{nodes}");
    let n1 = nodes["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "n1")
        .unwrap();
    assert_eq!(
        (n1["alive"].as_bool(), n1["completed_last_hour"].as_u64()),
        (Some(true), Some(1))
    );
    assert_json_snapshot!(n1, {".first_seen_at" => "[time]", ".last_seen_at" => "[time]", ".key_id" => "[id]"});
    // A node still calling would come back undrained at its next call: not forgotten.
    let remove = || {
        gw.http
            .delete(gw.url("/admin/nodes/n2"))
            .bearer_auth(&admin)
            .send()
    };
    let refused = remove().await.unwrap();
    assert_eq!(refused.status(), 409);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"]["code"],
        "node_alive"
    );
    eventually(Duration::from_secs(15), "n2 to be seen no more", || async {
        let (_, nodes) = gw.get_json(&admin, "/admin/nodes").await;
        let gone = nodes["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == "n2" && n["alive"] == false);
        gone.then_some(())
    })
    .await;
    let removed = remove().await.unwrap();
    assert_eq!(removed.status(), 200);
    assert_eq!(
        removed.json::<Value>().await.unwrap(),
        json!({"id": "n2", "object": "node.deleted", "deleted": true})
    );
    let (_, nodes) = gw.get_json(&admin, "/admin/nodes").await;
    assert_eq!(nodes["data"].as_array().unwrap().len(), 1);
    for path in ["/admin/nodes/ghost/drain", "/admin/nodes/ghost/undrain"] {
        let (status, body) = gw.post_json(&admin, path, &json!({})).await;
        assert_eq!(
            (status.as_u16(), body["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{path}"
        );
    }
    let (status, _) = gw.get_json(&user, "/admin/nodes").await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn the_job_list_filters_by_model_batch_and_key_and_the_detail_shows_the_request() {
    let gw = Gateway::start(&[]).await;
    let (alice, bob, admin) = (gw.key("user").await, gw.key("user").await, gw.admin.clone());
    let a = gw.submit_id(&alice, "a").await;
    let b = gw.submit_id(&alice, "b").await;
    let theirs = gw.submit_id(&bob, "a").await;
    let ids = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, by_model) = gw.get_json(&alice, "/v1/jobs?model=a").await;
    assert_eq!(ids(&by_model), vec![a.clone()]);
    assert!(
        by_model["data"][0].get("key_id").is_none(),
        "a user's list names no keys"
    );
    let (_, every_a) = gw.get_json(&admin, "/v1/jobs?model=a").await;
    assert_eq!(ids(&every_a), vec![theirs.clone(), a.clone()]);
    let bob_id = every_a["data"][0]["key_id"].as_str().unwrap().to_owned();
    let (_, bobs) = gw
        .get_json(&admin, &format!("/v1/jobs?key_id={bob_id}"))
        .await;
    assert_eq!(ids(&bobs), vec![theirs.clone()]);
    // A user naming another key finds nothing of it.
    let (_, spying) = gw
        .get_json(&alice, &format!("/v1/jobs?key_id={bob_id}"))
        .await;
    assert!(ids(&spying).is_empty());
    let (_, none) = gw.get_json(&alice, "/v1/jobs?batch_id=batch_nope").await;
    assert!(ids(&none).is_empty());
    let (_, both) = gw.get_json(&alice, "/v1/jobs?status=queued&model=b").await;
    assert_eq!(ids(&both), vec![b.clone()]);

    let (status, detail) = gw
        .get_json(&alice, &format!("/v1/jobs/{a}?include=request"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(detail["request"]["messages"][0]["content"], "hello");
    assert!(
        detail["key_id"].is_string()
            && detail["started_at"].is_null()
            && detail["finished_at"].is_null(),
        "{detail}"
    );
    let (status, bad) = gw
        .get_json(&alice, &format!("/v1/jobs/{a}?include=everything"))
        .await;
    assert_eq!(
        (status.as_u16(), bad["error"]["param"].as_str()),
        (400, Some("include"))
    );
    let (status, _) = gw
        .get_json(&bob, &format!("/v1/jobs/{a}?include=request"))
        .await;
    assert_eq!(status, 404);
    let (status, bad) = gw.get_json(&alice, "/v1/jobs/export?since=yesterday").await;
    assert_eq!(
        (status.as_u16(), bad["error"]["param"].as_str()),
        (400, Some("since"))
    );
}

#[tokio::test]
async fn the_export_streams_each_callers_jobs_as_ndjson_oldest_first() {
    let gw = Gateway::start(&[]).await;
    let (alice, bob, node, admin) = (
        gw.key("user").await,
        gw.key("user").await,
        gw.key("node").await,
        gw.admin.clone(),
    );
    let mut mine = Vec::new();
    for _ in 0..600 {
        mine.push(gw.submit_id(&alice, "m").await);
    }
    gw.submit_id(&bob, "b").await;
    let leased = gw.fetch(&node, "n1", &["m"], 1, 0.0).await;
    assert_eq!(gw.complete(&node, &leased[0], "exported").await, "accepted");
    let export = |key: String, query: &'static str| {
        let gw = &gw;
        async move {
            let response = gw
                .http
                .get(gw.url(&format!("/v1/jobs/export{query}")))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["content-type"], "application/x-ndjson");
            let text = response.text().await.unwrap();
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        }
    };
    let lines = export(alice.clone(), "").await;
    let ids: Vec<&str> = lines.iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        mine.iter().map(String::as_str).collect::<Vec<_>>(),
        "every page, in order"
    );
    let first = &lines[0];
    assert_eq!(
        first["result"]["choices"][0]["message"]["content"],
        "exported"
    );
    assert_eq!(first["request"]["model"], "m");
    assert!(
        first["started_at"].is_i64() && first["finished_at"].is_i64(),
        "{first}"
    );
    assert_eq!(export(admin.clone(), "").await.len(), 601);
    assert_eq!(export(alice.clone(), "?status=completed").await.len(), 1);
    assert_eq!(export(bob.clone(), "").await.len(), 1);
    assert_eq!(export(bob.clone(), "?model=m").await.len(), 0);
    assert_eq!(
        export(alice.clone(), "?since=4102444800").await.len(),
        0,
        "2100 and later"
    );
}

#[tokio::test]
async fn a_batch_line_is_retried_while_its_batch_runs_and_counted_again() {
    let gw = Gateway::start(&[]).await;
    let (user, node, admin) = (gw.key("user").await, gw.key("node").await, gw.admin.clone());
    let line = |id: &str| {
        json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "echo", "messages": [{"role": "user", "content": id}]}})
        .to_string()
    };
    let file = upload(
        &gw,
        &user,
        format!("{}\n{}\n", line("x"), line("y")),
        "batch",
    )
    .await;
    let batch = create_on(&gw, &user, &file, "/v1/chat/completions").await;
    let batch_id = batch["id"].as_str().unwrap().to_owned();
    batch_until(&gw, &user, &batch_id, "in_progress").await;
    let jobs = gw.fetch(&node, "n1", &["echo"], 1, 5.0).await;
    assert_eq!(gw.report(&node, &failed(&jobs[0])).await, "accepted");
    let (_, live) = gw.get_json(&user, &format!("/v1/batches/{batch_id}")).await;
    assert_eq!(live["request_counts"]["failed"], 1);
    let (_, body) = gw
        .post_json(&admin, "/admin/jobs/retry", &json!({"batch_id": batch_id}))
        .await;
    assert_eq!(body["retried"], 1);
    let (_, live) = gw.get_json(&user, &format!("/v1/batches/{batch_id}")).await;
    assert_eq!(
        live["request_counts"],
        json!({"total": 2, "completed": 0, "failed": 0})
    );
    for _ in 0..2 {
        let job = gw.fetch(&node, "n1", &["echo"], 1, 5.0).await;
        assert_eq!(gw.complete(&node, &job[0], "ok").await, "accepted");
    }
    let done = batch_until(&gw, &user, &batch_id, "completed").await;
    assert_eq!(
        done["request_counts"],
        json!({"total": 2, "completed": 2, "failed": 0})
    );
    // A batch that ended has written its output: its failed lines are not retried.
    let file = upload(&gw, &user, format!("{}\n", line("z")), "batch").await;
    let ended = create_on(&gw, &user, &file, "/v1/chat/completions").await;
    let ended_id = ended["id"].as_str().unwrap().to_owned();
    batch_until(&gw, &user, &ended_id, "in_progress").await;
    let job = gw.fetch(&node, "n1", &["echo"], 1, 5.0).await;
    assert_eq!(gw.report(&node, &failed(&job[0])).await, "accepted");
    batch_until(&gw, &user, &ended_id, "completed").await;
    let line_id = job[0]["id"].as_str().unwrap();
    let (status, refused) = gw
        .post_json(&admin, &format!("/admin/jobs/{line_id}/retry"), &json!({}))
        .await;
    assert_eq!(
        (status.as_u16(), refused["error"]["code"].as_str()),
        (409, Some("batch_not_running"))
    );
    let (_, body) = gw
        .post_json(&admin, "/admin/jobs/retry", &json!({"batch_id": ended_id}))
        .await;
    assert_eq!(body["retried"], 0, "skipped, not an error");
}

#[tokio::test]
async fn the_dashboard_knows_its_caller_serves_its_page_and_feeds_live_events() {
    let gw = Gateway::start(&[]).await;
    let (alice, bob, node, admin) = (
        gw.key("user").await,
        gw.key("user").await,
        gw.key("node").await,
        gw.admin.clone(),
    );
    let (_, me) = gw.get_json(&alice, "/v1/dashboard/whoami").await;
    assert_eq!(
        (me["object"].as_str(), me["role"].as_str()),
        (Some("dashboard.whoami"), Some("USER"))
    );
    let (_, me) = gw.get_json(&admin, "/v1/dashboard/whoami").await;
    assert_eq!(me["role"], "ADMIN");
    let (status, _) = gw.get_json(&node, "/v1/dashboard/whoami").await;
    assert_eq!(status, 403);
    for (path, kind) in [
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let response = gw.http.get(gw.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
        assert!(response.headers().contains_key("content-security-policy"));
    }
    let missing = gw.http.get(gw.url("/ui/secrets.txt")).send().await.unwrap();
    assert_eq!(missing.status(), 404);

    // Alice's feed: an overview at once, then her job's changes, never Bob's.
    let mut feed = gw
        .http
        .get(gw.url("/v1/dashboard/events"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(feed.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let mut read_until = async |want: &str, text: &mut String| {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !text.contains(want) {
                let chunk = feed.chunk().await.unwrap().unwrap();
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no `{want}` in {text}"));
    };
    read_until("event: overview", &mut text).await;
    gw.submit_id(&bob, "m").await;
    let id = gw.submit_id(&alice, "m").await;
    let leased = gw.fetch(&node, "n1", &["m"], 2, 0.0).await;
    let own = leased.iter().find(|j| j["id"] == id.as_str()).unwrap();
    gw.complete(&node, own, "done").await;
    read_until("\"status\":\"completed\"", &mut text).await;
    let events: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("event: job\ndata: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let statuses: Vec<&str> = events
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["queued", "processing", "completed"], "{text}");
    assert!(
        events.iter().all(|e| e["id"] == id.as_str()),
        "only her own job: {text}"
    );
    read_until("\"completed\":1", &mut text).await;
    let (_, overview) = gw.get_json(&alice, "/v1/dashboard/overview").await;
    assert_eq!(
        (
            overview["scope"].as_str(),
            overview["last_hour"]["completed"].as_u64()
        ),
        (Some("own"), Some(1))
    );
    assert_eq!(
        overview["last_hour"]["minutes"].as_array().unwrap().len(),
        60
    );
    assert_eq!(overview["nodes_alive"], 1);
    let (_, theirs) = gw.get_json(&bob, "/v1/dashboard/overview").await;
    assert_eq!(theirs["last_hour"]["completed"], 0);
    assert_eq!(theirs["depth"][0]["processing"], 1, "{theirs}");
}

#[tokio::test]
async fn the_operations_routes_refuse_user_and_node_keys_and_a_user_exports_only_its_own() {
    let gw = Gateway::start(&[]).await;
    let (alice, bob, node) = (
        gw.key("user").await,
        gw.key("user").await,
        gw.key("node").await,
    );
    let theirs = gw.submit_id(&bob, "m").await;
    let body = json!({"priority": 1});
    for (method, path) in [
        ("POST", format!("/admin/jobs/{theirs}/retry")),
        ("POST", format!("/admin/jobs/{theirs}/priority")),
        ("POST", "/admin/jobs/retry".to_owned()),
        ("GET", "/admin/nodes".to_owned()),
        ("POST", "/admin/nodes/n1/drain".to_owned()),
        ("POST", "/admin/nodes/n1/undrain".to_owned()),
        ("DELETE", "/admin/nodes/n1".to_owned()),
    ] {
        let method: reqwest::Method = method.parse().unwrap();
        let answer = gw
            .http
            .request(method.clone(), gw.url(&path))
            .bearer_auth(&alice)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 403, "{method} {path}");
        let envelope: Value = answer.json().await.unwrap();
        assert_eq!(
            envelope["error"]["type"], "permission_error",
            "{method} {path}"
        );
    }
    for path in [
        "/v1/jobs/export",
        "/v1/dashboard/overview",
        "/v1/dashboard/events",
        "/v1/dashboard/whoami",
    ] {
        let answer = gw
            .http
            .get(gw.url(path))
            .bearer_auth(&node)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 403, "{path}");
    }
    assert_eq!(
        gw.job(&bob, &theirs).await["priority"],
        3,
        "nothing changed"
    );
    // Alice's export, even naming Bob's key, holds none of Bob's jobs.
    let (_, listed) = gw.get_json(&gw.admin, "/v1/jobs").await;
    let bob_key = listed["data"][0]["key_id"].as_str().unwrap().to_owned();
    let exported = gw
        .http
        .get(gw.url(&format!("/v1/jobs/export?key_id={bob_key}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(exported.status(), 200);
    assert_eq!(exported.text().await.unwrap(), "");
}
