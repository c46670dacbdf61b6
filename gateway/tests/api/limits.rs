//! A key's limits and weight through the admin API and the CLI, and the weight's effect on
//! the share of leases.

use crate::harness::{Gateway, cli};
use serde_json::{Value, json};

async fn put_limits(gw: &Gateway, key: &str, id: &str, limits: &Value) -> (u16, Value) {
    let response = gw
        .http
        .put(gw.url(&format!("/admin/keys/{id}/limits")))
        .bearer_auth(key)
        .json(limits)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Two user keys and a node key, minted on `gw`.
async fn two_users_and_a_node(gw: &Gateway) -> (String, String, String) {
    (
        gw.key("user").await,
        gw.key("user").await,
        gw.key("node").await,
    )
}

/// The id (`key_…`) of the key whose secret is `secret`.
async fn id_of(gw: &Gateway, secret: &str) -> String {
    let (_, keys) = gw.get_json(&gw.admin, "/admin/keys").await;
    keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| secret.starts_with(key["prefix"].as_str().unwrap()))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn an_admin_reads_and_replaces_a_keys_limits_and_bad_ones_are_named() {
    let gw = Gateway::start(&[]).await;
    let user = gw.key("user").await;
    let id = id_of(&gw, &user).await;
    let (status, limits) = gw
        .get_json(&gw.admin, &format!("/admin/keys/{id}/limits"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(limits["weight"], 1);
    assert_eq!(limits["requests_per_minute"], Value::Null);
    let wanted = json!({"requests_per_minute": 60, "max_queued_jobs": 500, "weight": 3,
                        "max_priority": 2, "default_priority": 4, "metrics_label": "team_a"});
    let (status, stored) = put_limits(&gw, &gw.admin, &id, &wanted).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["weight"], 3);
    let (_, read) = gw
        .get_json(&gw.admin, &format!("/admin/keys/{id}/limits"))
        .await;
    assert_eq!(read, stored);
    // PUT replaces the whole object: what is left out is no limit.
    let (_, replaced) = put_limits(&gw, &gw.admin, &id, &json!({"weight": 2})).await;
    assert_eq!(replaced["requests_per_minute"], Value::Null);

    for (body, param) in [
        (json!({"weight": 0}), "weight"),
        (json!({"max_priority": 9}), "max_priority"),
        (
            json!({"max_priority": 3, "default_priority": 1}),
            "default_priority",
        ),
    ] {
        let (status, refused) = put_limits(&gw, &gw.admin, &id, &body).await;
        assert_eq!(
            (status, &refused["error"]["param"]),
            (400, &json!(param)),
            "{body}"
        );
    }
    let (status, unknown) = put_limits(&gw, &gw.admin, &id, &json!({"wieght": 2})).await;
    assert_eq!(status, 400, "{unknown}");
    let (_, kept) = gw
        .get_json(&gw.admin, &format!("/admin/keys/{id}/limits"))
        .await;
    assert_eq!(kept, replaced, "a refused change stores nothing");
    let (status, _) = put_limits(&gw, &gw.admin, "key_nope", &json!({})).await;
    assert_eq!(status, 404);
    let (status, _) = put_limits(&gw, &user, &id, &json!({})).await;
    assert_eq!(status, 403, "a user cannot set limits");
}

#[tokio::test]
async fn the_cli_changes_only_the_limits_given_and_a_running_gateway_leases_by_the_weight() {
    let gw = Gateway::start(&[]).await;
    let (a, b, node) = two_users_and_a_node(&gw).await;
    let b_id = id_of(&gw, &b).await;
    let set = cli(
        &gw.db(),
        &[
            "keys",
            "limits",
            &b_id,
            "--weight",
            "3",
            "--requests-per-minute",
            "60",
        ],
    );
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let printed: Value = serde_json::from_slice(&set.stdout).unwrap();
    assert_eq!(
        (
            printed["weight"].clone(),
            printed["requests_per_minute"].clone()
        ),
        (json!(3), json!(60))
    );
    let cleared = cli(
        &gw.db(),
        &["keys", "limits", &b_id, "--requests-per-minute", "none"],
    );
    let printed: Value = serde_json::from_slice(&cleared.stdout).unwrap();
    assert_eq!(
        (
            printed["weight"].clone(),
            printed["requests_per_minute"].clone()
        ),
        (json!(3), Value::Null)
    );
    let refused = cli(&gw.db(), &["keys", "limits", &b_id, "--weight", "0"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--weight"));

    // The running gateway takes the weight from the store: B's jobs get 3 leases for each
    // one of A's.
    let mut a_last = String::new();
    for _ in 0..40 {
        let response = gw
            .submit_with(&a, &crate::harness::chat("m", "a"), Some(0), &[])
            .await;
        assert_eq!(response.status(), 202);
        let job: Value = response.json().await.unwrap();
        a_last = job["id"].as_str().unwrap().to_owned();
        gw.submit_with(&b, &crate::harness::chat("m", "b"), Some(0), &[])
            .await;
    }
    // The CLI's change reaches the running gateway within a key recheck (125 ms). A read
    // that takes no job shows it: A's last job, behind 39 of its own, waits 4 leases for
    // each of them (its own and B's 3): 157th, where equal weights would make it 79th.
    crate::harness::eventually(
        std::time::Duration::from_secs(10),
        "the running gateway to take B's weight of 3",
        || async { (gw.job(&a, &a_last).await["queue_position"] == 157).then_some(()) },
    )
    .await;
    // Eight leases of one job each are then six of B's and two of A's.
    let mut b_leases = 0;
    for n in 0..8 {
        let leased = gw.fetch(&node, "n", &["*"], 1, 0.0).await;
        assert_eq!(leased.len(), 1, "lease {n} of 8 found a job: {leased:?}");
        let id = leased[0]["id"].as_str().unwrap().to_owned();
        let (status, _) = gw.get_json(&b, &format!("/v1/jobs/{id}")).await;
        if status == 200 {
            b_leases += 1;
        }
        gw.complete(&node, &leased[0], "done").await;
    }
    assert_eq!(b_leases, 6, "B's leases of 8");
}

#[tokio::test]
async fn a_key_gets_its_default_priority_and_none_earlier_than_its_max_and_is_told_so() {
    let gw = Gateway::start(&[]).await;
    let user = gw.key("user").await;
    let id = id_of(&gw, &user).await;
    let (status, _) = put_limits(
        &gw,
        &gw.admin,
        &id,
        &json!({"max_priority": 2, "default_priority": 4}),
    )
    .await;
    assert_eq!(status, 200);
    for (asked, got) in [(Some("1"), 2), (Some("3"), 3), (None, 4)] {
        let headers: Vec<(&str, &str)> = asked.map(|p| ("X-OBB-Priority", p)).into_iter().collect();
        let response = gw
            .submit_with(&user, &crate::harness::chat("m", "x"), Some(0), &headers)
            .await;
        assert_eq!(response.status(), 202);
        assert_eq!(
            response.headers()["x-obb-priority"],
            got.to_string().as_str()
        );
        let job: Value = response.json().await.unwrap();
        assert_eq!(job["priority"], got, "asked {asked:?}");
    }
}

#[tokio::test]
async fn a_key_over_its_requests_per_minute_gets_openais_429_and_stores_nothing() {
    let gw = Gateway::start(&[]).await;
    let user = gw.key("user").await;
    let id = id_of(&gw, &user).await;
    let (status, _) = put_limits(&gw, &gw.admin, &id, &json!({"requests_per_minute": 3})).await;
    assert_eq!(status, 200);
    for remaining in ["2", "1", "0"] {
        let response = gw
            .submit_with(&user, &crate::harness::chat("m", "x"), Some(0), &[])
            .await;
        assert_eq!(response.status(), 202);
        let headers = response.headers();
        assert_eq!(headers["x-ratelimit-limit-requests"], "3");
        assert_eq!(headers["x-ratelimit-remaining-requests"], remaining);
        assert!(headers.contains_key("x-ratelimit-reset-requests"));
    }
    let refused = gw
        .submit_with(&user, &crate::harness::chat("m", "x"), Some(0), &[])
        .await;
    assert_eq!(refused.status(), 429);
    assert_eq!(
        refused.headers()["retry-after"],
        "20",
        "a request every 20 s"
    );
    assert_eq!(refused.headers()["x-ratelimit-remaining-requests"], "0");
    // Until the bucket is full again: about a minute, in OpenAI's format (`59s`, `1m0s`).
    let reset = refused.headers()["x-ratelimit-reset-requests"]
        .to_str()
        .unwrap();
    assert!(
        reset == "1m0s" || (reset.ends_with('s') && reset.starts_with('5')),
        "{reset}"
    );
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("retry in 20s"),
        "the message agrees with Retry-After: {body}"
    );
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    // Every answer to the key says where its budget stands, as OpenAI's do, reads and
    // errors included, and reading takes nothing from it.
    for path in ["/v1/jobs", "/v1/models", "/v1/jobs/job_missing"] {
        let read = gw
            .http
            .get(gw.url(path))
            .bearer_auth(&user)
            .send()
            .await
            .unwrap();
        assert_eq!(read.headers()["x-ratelimit-limit-requests"], "3", "{path}");
        assert_eq!(
            read.headers()["x-ratelimit-remaining-requests"],
            "0",
            "{path}"
        );
        assert!(read.headers().contains_key("x-ratelimit-reset-requests"));
    }
    // An upload makes no work: it is answered, with the headers; a batch create is a
    // request that makes work, and is refused like a submit.
    let uploaded = gw
        .http
        .post(gw.url("/v1/files"))
        .bearer_auth(&user)
        .multipart(crate::files::form(
            crate::harness::chat("m", "x").to_string(),
            "in.jsonl",
            "batch",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.headers()["x-ratelimit-remaining-requests"], "0");
    let file: Value = uploaded.json().await.unwrap();
    let batch = gw
        .http
        .post(gw.url("/v1/batches"))
        .bearer_auth(&user)
        .json(&json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(batch.status(), 429);
    let (_, jobs) = gw.get_json(&user, "/v1/jobs").await;
    assert_eq!(
        jobs["data"].as_array().unwrap().len(),
        3,
        "the refused submit stored nothing"
    );
    assert_eq!(
        gw.metric("obb_http_errors_total", "kind=\"rate_limited_requests\"")
            .await,
        2.0,
        "rejections are counted by reason (the submit's and the batch's)"
    );
    // Another key is not held back by this one's rate.
    let other = gw.key("user").await;
    let response = gw
        .submit_with(&other, &crate::harness::chat("m", "x"), Some(0), &[])
        .await;
    assert_eq!(response.status(), 202);
    assert!(
        !response
            .headers()
            .contains_key("x-ratelimit-limit-requests")
    );
}

#[tokio::test]
async fn a_key_with_its_max_queued_jobs_waiting_gets_a_429_until_one_runs() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let id = id_of(&gw, &user).await;
    put_limits(
        &gw,
        &gw.admin,
        &id,
        &json!({"max_queued_jobs": 2, "requests_per_minute": 600}),
    )
    .await;
    let submit = |key: &'static str| {
        let headers = vec![("Idempotency-Key", key)];
        let (gw, user) = (&gw, user.clone());
        async move {
            gw.submit_with(&user, &crate::harness::chat("m", key), Some(0), &headers)
                .await
        }
    };
    assert_eq!(submit("one").await.status(), 202);
    assert_eq!(submit("two").await.status(), 202);
    let full = submit("three").await;
    assert_eq!(full.status(), 429);
    assert_eq!(full.headers()["retry-after"], "2");
    assert_eq!(
        full.headers()["x-ratelimit-remaining-requests"],
        "598",
        "a submit refused for a full queue made no work: its request is given back"
    );
    let body: Value = full.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    // A retry of a stored submit still finds its job.
    assert_eq!(submit("two").await.status(), 202);
    // Once a job runs, there is room again.
    let leased = gw.fetch(&node, "n", &["*"], 1, 0.0).await;
    assert_eq!(leased.len(), 1);
    assert_eq!(submit("three").await.status(), 202);
    // Submits at once, committed in one group, are counted together: two fit, not twenty.
    let other = gw.key("user").await;
    let other_id = id_of(&gw, &other).await;
    put_limits(&gw, &gw.admin, &other_id, &json!({"max_queued_jobs": 2})).await;
    let at_once = (0..20).map(|n| {
        let (gw, other) = (&gw, other.clone());
        async move {
            gw.submit_with(
                &other,
                &crate::harness::chat("m", &n.to_string()),
                Some(0),
                &[],
            )
            .await
            .status()
        }
    });
    let statuses = futures_util::future::join_all(at_once).await;
    assert_eq!(
        statuses.iter().filter(|s| s.as_u16() == 202).count(),
        2,
        "{statuses:?}"
    );
    assert!(statuses.iter().all(|s| [202, 429].contains(&s.as_u16())));
}

#[tokio::test]
async fn a_key_at_its_max_concurrent_jobs_keeps_its_jobs_queued_until_one_ends() {
    let gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let id = id_of(&gw, &user).await;
    put_limits(&gw, &gw.admin, &id, &json!({"max_concurrent_jobs": 1})).await;
    for _ in 0..3 {
        let response = gw
            .submit_with(&user, &crate::harness::chat("m", "x"), Some(0), &[])
            .await;
        assert_eq!(response.status(), 202, "an execution limit never refuses");
    }
    let first = gw.fetch(&node, "n", &["*"], 4, 0.0).await;
    assert_eq!(first.len(), 1, "one at a time");
    assert!(gw.fetch(&node, "n", &["*"], 4, 0.0).await.is_empty());
    assert!(
        gw.metric(
            "obb_leases_deferred_total",
            "reason=\"max_concurrent_jobs\""
        )
        .await
            >= 1.0,
        "the deferral is counted"
    );
    // A node waiting for work is woken when the running job ends.
    let waiting = {
        let (base, node) = (gw.base.clone(), node.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let fetched: Value = reqwest::Client::new()
                .post(format!("{base}/internal/queue/fetch"))
                .bearer_auth(&node)
                .json(&json!({"node_id": "w", "models": ["*"], "limit": 4, "wait": 20}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (fetched["jobs"].as_array().unwrap().len(), started.elapsed())
        })
    };
    gw.complete(&node, &first[0], "done").await;
    let (leased, took) = waiting.await.unwrap();
    assert_eq!(leased, 1);
    assert!(
        took < std::time::Duration::from_secs(10),
        "woken, not timed out: {took:?}"
    );
}

#[tokio::test]
async fn a_labelled_key_has_its_own_gauges_and_others_have_none() {
    let gw = Gateway::start(&[]).await;
    let (user, other, node) = two_users_and_a_node(&gw).await;
    let id = id_of(&gw, &user).await;
    put_limits(&gw, &gw.admin, &id, &json!({"metrics_label": "team_a"})).await;
    for key in [&user, &user, &user, &other] {
        gw.submit_with(key, &crate::harness::chat("m", "x"), Some(0), &[])
            .await;
    }
    let running = gw.fetch(&node, "n", &["*"], 1, 0.0).await;
    assert_eq!(running.len(), 1);
    assert_eq!(
        gw.metric("obb_key_jobs", "key=\"team_a\"").await,
        3.0,
        "the labelled key's three jobs, queued or running"
    );
    assert_eq!(
        gw.metric("obb_key_jobs", "").await,
        3.0,
        "the unlabelled key has no series"
    );
}

#[tokio::test]
async fn a_queued_job_shows_its_position_counted_the_fair_share_way() {
    let gw = Gateway::start(&[]).await;
    let (a, b, node) = two_users_and_a_node(&gw).await;
    let mut a_jobs = Vec::new();
    for _ in 0..3 {
        a_jobs.push(gw.submit_id(&a, "m").await);
    }
    let position = |key: String, id: String| {
        let gw = &gw;
        async move { gw.job(&key, &id).await["queue_position"].clone() }
    };
    assert_eq!(
        position(a.clone(), a_jobs[2].clone()).await,
        3,
        "alone: its place"
    );
    // B joins: every lease of A's now comes with one of B's.
    let b_job = gw.submit_id(&b, "m").await;
    assert_eq!(position(b.clone(), b_job).await, 1);
    assert_eq!(position(a.clone(), a_jobs[2].clone()).await, 5);
    // An urgent job of B's goes first of all.
    gw.submit_with(
        &b,
        &crate::harness::chat("m", "now"),
        None,
        &[("X-OBB-Priority", "1")],
    )
    .await;
    assert_eq!(position(a.clone(), a_jobs[2].clone()).await, 6);
    // The event stream's `queued` event says it too; a leased job has none. The stream stays
    // open: the deadline is on its first event, and generous for a busy machine.
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut events = gw
            .http
            .get(gw.url(&format!("/v1/jobs/{}/stream", a_jobs[2])))
            .bearer_auth(&a)
            .send()
            .await
            .unwrap();
        events.chunk().await.unwrap().unwrap()
    })
    .await
    .expect("the stream's first event within 10 s");
    assert!(String::from_utf8_lossy(&first).contains("\"queue_position\":6"));
    let leased = gw.fetch(&node, "n", &["*"], 10, 0.0).await;
    assert_eq!(leased.len(), 5);
    assert!(gw.job(&a, &a_jobs[2]).await.get("queue_position").is_none());
}

#[tokio::test]
async fn a_key_over_its_tokens_per_minute_keeps_its_jobs_queued_until_usage_gives_some_back() {
    let gw = Gateway::start(&[]).await;
    let (user, other, node) = two_users_and_a_node(&gw).await;
    let id = id_of(&gw, &user).await;
    put_limits(&gw, &gw.admin, &id, &json!({"tokens_per_minute": 200})).await;
    // Each job is estimated at its body's characters over 4 plus its `max_tokens`: over 250,
    // more than the key has a minute.
    let mut body = crate::harness::chat("m", "x");
    body["max_tokens"] = json!(250);
    for _ in 0..3 {
        let response = gw.submit_with(&user, &body, Some(0), &[]).await;
        assert_eq!(response.status(), 202, "an execution limit never refuses");
        assert_eq!(response.headers()["x-ratelimit-limit-tokens"], "200");
        assert_eq!(
            response.headers()["x-ratelimit-remaining-tokens"],
            "200",
            "nothing ran yet"
        );
    }
    let read = gw
        .http
        .get(gw.url("/v1/jobs"))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(read.headers()["x-ratelimit-limit-tokens"], "200");
    assert!(read.headers().contains_key("x-ratelimit-reset-tokens"));
    gw.submit_with(&other, &crate::harness::chat("m", "y"), Some(0), &[])
        .await;
    let mine = |job: &Value| job["request_payload"]["max_tokens"] == 250;
    // One of the user's runs (its budget then spent) and the other key's: the user's other
    // two wait.
    let leased = gw.fetch(&node, "n", &["*"], 4, 0.0).await;
    assert_eq!(leased.len(), 2, "{leased:?}");
    assert_eq!(leased.iter().filter(|job| mine(job)).count(), 1);
    assert!(gw.fetch(&node, "n", &["*"], 4, 0.0).await.is_empty());
    assert!(
        gw.metric("obb_leases_deferred_total", "reason=\"tokens_per_minute\"")
            .await
            >= 1.0
    );
    // The job used 7 tokens (the test node's usage), not the 250-odd it was charged: the
    // rest comes back, and the next job runs.
    let first = leased.iter().find(|job| mine(job)).unwrap();
    gw.complete(&node, first, "done").await;
    let again = gw.fetch(&node, "n", &["*"], 4, 0.0).await;
    assert_eq!(again.len(), 1, "{again:?}");
    assert!(mine(&again[0]));
}

#[tokio::test]
async fn a_keys_limits_survive_a_restart_and_still_hold() {
    let mut gw = Gateway::start(&[]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let id = id_of(&gw, &user).await;
    let wanted = json!({"weight": 3, "requests_per_minute": 60, "max_concurrent_jobs": 1,
                        "max_priority": 2, "default_priority": 4, "metrics_label": "team_a"});
    let (status, stored) = put_limits(&gw, &gw.admin, &id, &wanted).await;
    assert_eq!(status, 200, "{stored}");

    let status = gw.stop_with("-TERM").unwrap();
    assert!(status.success(), "{status:?}");
    gw.spawn().await;

    let (status, read) = gw
        .get_json(&gw.admin, &format!("/admin/keys/{id}/limits"))
        .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read, stored);
    for (field, value) in wanted.as_object().unwrap() {
        assert_eq!(&read[field], value, "{field}");
    }
    // They hold, too (the request rate's bucket is in memory and starts afresh, so it is not
    // the one shown): a request for priority 1 gets the key's max, one naming none its default,
    // and only one of its jobs runs at a time.
    for (asked, got) in [(Some("1"), "2"), (None, "4")] {
        let headers: Vec<(&str, &str)> = asked.map(|p| ("X-OBB-Priority", p)).into_iter().collect();
        let response = gw
            .submit_with(&user, &crate::harness::chat("m", "x"), Some(0), &headers)
            .await;
        assert_eq!(response.status(), 202);
        assert_eq!(response.headers()["x-obb-priority"], got, "asked {asked:?}");
    }
    let leased = gw.fetch(&node, "n", &["*"], 4, 0.0).await;
    assert_eq!(leased.len(), 1, "one at a time: {leased:?}");
    assert!(gw.fetch(&node, "n", &["*"], 4, 0.0).await.is_empty());
    assert_eq!(
        gw.metric("obb_key_jobs", "key=\"team_a\"").await,
        2.0,
        "the label still names the key's gauges"
    );
}

#[tokio::test]
async fn a_queued_jobs_event_stream_tells_of_its_position_as_it_moves() {
    let gw = Gateway::start(&[("OBB_STREAM_KEEPALIVE_SECONDS", "1")]).await;
    let (user, node) = (gw.key("user").await, gw.key("node").await);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(gw.submit_id(&user, "m").await);
    }
    let mut events = gw
        .http
        .get(gw.url(&format!("/v1/jobs/{}/stream", ids[2])))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    read_until(&mut events, &mut seen, "\"queue_position\":3").await;
    // Two jobs ahead of it run: at a keep-alive, a `queued` event says where it stands now.
    assert_eq!(gw.fetch(&node, "n", &["*"], 2, 0.0).await.len(), 2);
    read_until(&mut events, &mut seen, "\"queue_position\":1").await;
    assert_eq!(seen.matches("event: queued").count(), 2, "{seen}");
}

/// Reads an event stream into `seen` until it holds `wanted`; panics after 10 s.
async fn read_until(events: &mut reqwest::Response, seen: &mut String, wanted: &str) {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !seen.contains(wanted) {
            let chunk = events.chunk().await.unwrap().expect("the stream is open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {wanted} within 10 s: {seen}"));
}

#[tokio::test]
async fn limits_on_a_node_key_are_refused_as_they_would_do_nothing() {
    let gw = Gateway::start(&[]).await;
    let node = gw.key("node").await;
    let id = id_of(&gw, &node).await;
    let (status, body) = put_limits(&gw, &gw.admin, &id, &json!({"weight": 2})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("node key"),
        "{body}"
    );
    let (status, _) = put_limits(&gw, &gw.admin, "key_missing", &json!({"weight": 2})).await;
    assert_eq!(status, 404);
}
