//! Three gateways on one database: a job across all three, and a kill -9 of one under load.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use testkit::{Gateway, chat, completion, eventually};
use tokio::sync::Mutex;

/// `GET /v1/jobs/{id}?wait=30` on `gw` in the background; returns the job and how long the
/// wait took.
fn wait_on(gw: &Gateway, key: &str, id: &str) -> tokio::task::JoinHandle<(Value, Duration)> {
    let request = gw
        .http
        .get(gw.url(&format!("/v1/jobs/{id}?wait=30")))
        .bearer_auth(key);
    tokio::spawn(async move {
        let started = Instant::now();
        let job: Value = request
            .send()
            .await
            .expect("the wait")
            .json()
            .await
            .expect("a job");
        (job, started.elapsed())
    })
}

/// A node's fetch on `gw` that waits up to 20 s for a job of model `m`, in the background;
/// returns the answer and how long it took.
fn long_poll(gw: &Gateway, node: &str) -> tokio::task::JoinHandle<(Value, Duration)> {
    let request = gw
        .http
        .post(gw.url("/internal/queue/fetch"))
        .bearer_auth(node)
        .json(&json!({"node_id": "waiting", "models": ["m"], "limit": 1, "wait": 20}));
    tokio::spawn(async move {
        let started = Instant::now();
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        (answer, started.elapsed())
    })
}

#[tokio::test]
async fn a_job_submitted_on_a_is_leased_through_b_and_waited_on_c() {
    let a = Gateway::start_postgres(&[]).await;
    let b = a.alongside(&[]).await;
    let c = a.alongside(&[]).await;
    let user = a.key("user").await;
    let node = b.key("node").await;

    // A node long-polls B for 20 s before there is any work.
    let fetch = long_poll(&b, &node);
    // Let the fetch reach B and find nothing, so that only a wake-up can end it early.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = a.submit_id(&user, "m").await;
    let waiter = wait_on(&c, &user, &id);

    let (fetched, took) = fetch.await.unwrap();
    let job = fetched["jobs"][0].clone();
    assert_eq!(job["id"], id.as_str(), "B leased A's job: {fetched}");
    assert!(
        took < Duration::from_secs(5),
        "the submit on A woke the node waiting on B ({took:?} of its 20 s)"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "C's waiter waits for the result");
    assert_eq!(
        b.complete(&node, &job, "answered through B").await,
        "accepted"
    );
    let (done, waited) = waiter.await.unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["result"]["choices"][0]["message"]["content"],
        "answered through B"
    );
    assert!(
        waited < Duration::from_secs(5),
        "B's result woke the waiter on C ({waited:?} of its 30 s)"
    );
    // Every gateway reads the same job.
    for gw in [&a, &b, &c] {
        assert_eq!(gw.job(&user, &id).await["status"], "completed");
    }

    // A key revoked through C is refused by A within a second.
    let (_, keys) = c.get_json(&c.admin, "/admin/keys").await;
    let user_id = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["role"] == "user")
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .unwrap();
    let revoked = c
        .http
        .delete(c.url(&format!("/admin/keys/{user_id}")))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let since = Instant::now();
    eventually(
        Duration::from_secs(1),
        "A to refuse the revoked key",
        || async {
            (a.get_json(&user, "/v1/jobs").await.0 == StatusCode::UNAUTHORIZED).then_some(())
        },
    )
    .await;
    println!(
        "figures: fetch_woken_after={took:?} waiter_woken_after={waited:?} revocation_seen_after={:?}",
        since.elapsed()
    );
}

/// What the nodes were told of their results, by job id.
type Outcomes = Arc<Mutex<HashMap<String, Vec<String>>>>;

/// A node behind a load balancer of `bases`, starting with `first`, until `stop`: leases
/// jobs of model `m` and completes each with its id. When its gateway fails it, it turns to
/// the next and sends the result it holds again there.
fn run_node(
    http: &reqwest::Client,
    bases: Vec<String>,
    first: usize,
    key: &str,
    name: &str,
    stop: Arc<AtomicBool>,
    outcomes: Outcomes,
) {
    let (http, key, name) = (http.clone(), key.to_owned(), name.to_owned());
    tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut at = first;
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let base = &bases[at % bases.len()];
            let fetched = http
                .post(format!("{base}/internal/queue/fetch"))
                .bearer_auth(&key)
                .json(&json!({"node_id": name, "models": ["m"], "limit": 8, "wait": 1}))
                .send()
                .await;
            let Ok(fetched) = fetched.and_then(|r| r.error_for_status()) else {
                at += 1;
                continue;
            };
            let Ok(fetched) = fetched.json::<Value>().await else {
                at += 1;
                continue;
            };
            for job in fetched["jobs"].as_array().cloned().unwrap_or_default() {
                let id = job["id"].as_str().unwrap_or_default().to_owned();
                let report = json!([{"id": id, "lease_id": job["lease_id"], "status": "COMPLETED",
                                     "result": completion(&id)}]);
                // Sent until some gateway answers it, as a node's spool does.
                for _ in 0..20 {
                    let base = &bases[at % bases.len()];
                    let answer = http
                        .post(format!("{base}/internal/queue/submit"))
                        .bearer_auth(&key)
                        .json(&report)
                        .send()
                        .await;
                    let body = match answer {
                        Ok(answer) if answer.status() == 200 => answer.json::<Value>().await.ok(),
                        _ => None,
                    };
                    let Some(body) = body else {
                        at += 1;
                        continue;
                    };
                    let outcome = body["results"][0]["outcome"].as_str().unwrap_or("?");
                    outcomes
                        .lock()
                        .await
                        .entry(id.clone())
                        .or_default()
                        .push(outcome.to_owned());
                    break;
                }
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_killed_under_load_loses_no_acknowledged_job_and_its_clients_retry_elsewhere() {
    const JOBS: usize = 300;
    let a = Gateway::start_postgres(&[]).await;
    let b = a.alongside(&[]).await;
    let mut c = a.alongside(&[]).await;
    let user = a.key("user").await;
    let node = a.key("node").await;
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Outcomes = Arc::default();
    // Each client submits with its idempotency key and waits, on A, B or C in turn; when
    // its gateway fails it, it sends the same request to the next one. The nodes do the
    // same with their fetches and results; one of them starts on C.
    let bases = [a.base.clone(), b.base.clone(), c.base.clone()];
    for (n, first) in [0, 1, 2].into_iter().enumerate() {
        run_node(
            &a.http,
            bases.to_vec(),
            first,
            &node,
            &format!("node-{n}"),
            Arc::clone(&stop),
            Arc::clone(&outcomes),
        );
    }
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut clients = Vec::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(48));
    for i in 0..JOBS {
        let (http, bases, user, acked, limit) = (
            a.http.clone(),
            bases.clone(),
            user.clone(),
            Arc::clone(&acked),
            Arc::clone(&limit),
        );
        clients.push(tokio::spawn(async move {
            let _slot = limit.acquire().await.unwrap();
            let key = format!("several-{i}");
            for attempt in 0..12 {
                let base = &bases[(i + attempt) % 3];
                let answer = http
                    .post(format!("{base}/v1/chat/completions?wait=20"))
                    .bearer_auth(&user)
                    .header("Idempotency-Key", &key)
                    .json(&chat("m", &format!("request {i}")))
                    .send()
                    .await;
                let Ok(answer) = answer else { continue };
                let status = answer.status();
                if status == 200 || status == 202 {
                    acked.lock().await.insert(key.clone());
                }
                if status == 200 {
                    return answer.json::<Value>().await.ok();
                }
            }
            None
        }));
    }
    eventually(
        Duration::from_secs(60),
        "a third of the jobs acknowledged",
        || async { (acked.lock().await.len() >= JOBS / 3).then_some(()) },
    )
    .await;
    c.stop_with("-KILL");
    let mut answered = 0;
    for client in clients {
        if client.await.unwrap().is_some() {
            answered += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert_eq!(answered, JOBS, "every client got its completion");

    let rows = a.query(
        "SELECT idempotency_key, id, status, result_payload FROM jobs WHERE idempotency_key IS NOT NULL",
    );
    let mut by_key: HashMap<String, (String, String)> = HashMap::new();
    for row in &rows {
        let key = row[0].clone().unwrap();
        let (id, status) = (row[1].clone().unwrap(), row[2].clone().unwrap());
        assert!(
            row[3].as_deref().is_some_and(|result| result.contains(&id)),
            "job `{id}` holds its own result"
        );
        assert!(
            by_key.insert(key.clone(), (id, status)).is_none(),
            "key `{key}` made two jobs"
        );
    }
    let acked = acked.lock().await;
    assert_eq!(acked.len(), JOBS);
    for key in acked.iter() {
        let (_, status) = by_key.get(key).expect("an acknowledged job is stored");
        assert_eq!(status, "completed", "{key}");
    }
    let outcomes = outcomes.lock().await;
    for (id, told) in outcomes.iter() {
        let accepted = told.iter().filter(|o| *o == "accepted").count();
        assert!(
            accepted <= 1,
            "job `{id}`'s result was stored {accepted} times: {told:?}"
        );
    }
    // A result whose answer the kill cut off is sent again, and told `duplicate`: stored
    // once all the same.
    let answered = |id: &String, word: &str| {
        outcomes
            .get(id)
            .is_some_and(|told| told.iter().any(|o| o == word))
    };
    let stored_once = by_key
        .values()
        .filter(|(id, _)| answered(id, "accepted") || answered(id, "duplicate"))
        .count();
    assert_eq!(
        stored_once, JOBS,
        "each job's result was taken by a gateway"
    );
    let resent = by_key
        .values()
        .filter(|(id, _)| answered(id, "duplicate"))
        .count();
    println!(
        "figures: gateways=3 killed=1 jobs={JOBS} acknowledged={} lost=0 stored_twice=0 results_resent_and_told_duplicate={resent}",
        acked.len()
    );
}

#[tokio::test]
async fn the_same_idempotency_key_sent_to_two_gateways_at_once_makes_one_job() {
    const KEYS: usize = 40;
    let a = Gateway::start_postgres(&[]).await;
    let b = a.alongside(&[]).await;
    let user = a.key("user").await;
    let mut races = Vec::new();
    for i in 0..KEYS {
        for gw in [&a, &b] {
            let request = gw
                .http
                .post(gw.url("/v1/chat/completions"))
                .bearer_auth(&user)
                .header("Idempotency-Key", format!("race-{i}"))
                .json(&chat("m", &format!("request {i}")));
            races.push(tokio::spawn(async move {
                // Retried on a 503, as the SDKs do: two gateways' groups that insert the same
                // keys in crossing orders deadlock, and PostgreSQL fails one of them.
                for _ in 0..10 {
                    let answer = request.try_clone().unwrap().send().await.unwrap();
                    let status = answer.status();
                    if status == StatusCode::SERVICE_UNAVAILABLE {
                        continue;
                    }
                    let job: Value = answer.json().await.unwrap();
                    return (i, status, job["id"].as_str().unwrap_or_default().to_owned());
                }
                panic!("race-{i}: 503 ten times")
            }));
        }
    }
    let mut ids: HashMap<usize, HashSet<String>> = HashMap::new();
    for race in races {
        let (i, status, id) = race.await.unwrap();
        assert_eq!(status, 202, "key race-{i}");
        ids.entry(i).or_default().insert(id);
    }
    for (i, seen) in &ids {
        assert_eq!(
            seen.len(),
            1,
            "both answers of race-{i} name one job: {seen:?}"
        );
    }
    let stored = a.query("SELECT COUNT(*) FROM jobs");
    assert_eq!(stored, [[Some(KEYS.to_string())]]);
}

#[tokio::test]
async fn a_postgresql_restart_cuts_every_connection_and_the_gateways_carry_on() {
    // A server of its own: restarting the shared one would cut the other tests' gateways.
    let server = testkit::postgres::Postgres::start();
    let url = server.fresh_database();
    let a = Gateway::start_at(Some(url.into()), &[]).await;
    let b = a.alongside(&[]).await;
    let user = a.key("user").await;
    let node = b.key("node").await;
    assert_eq!(a.submit(&user, &chat("m", "before")).await.status(), 202);

    server.restart();
    // The first request on a cut connection may fail (503, retryable); then both
    // gateways work again: submits, reads, and the wake-ups between them.
    eventually(
        Duration::from_secs(20),
        "submits on A after the restart",
        || async { (a.submit(&user, &chat("m", "after")).await.status() == 202).then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "reads on B after the restart",
        || async { (b.get_json(&user, "/v1/jobs").await.0 == StatusCode::OK).then_some(()) },
    )
    .await;
    let leased = std::sync::atomic::AtomicUsize::new(0);
    eventually(Duration::from_secs(20), "B to lease both jobs", || {
        let (b, node, leased) = (&b, &node, &leased);
        async move {
            let (status, body) = b
                .post_json(
                    node,
                    "/internal/queue/fetch",
                    &json!({"node_id": "n", "models": ["m"], "limit": 10, "wait": 0}),
                )
                .await;
            if status == StatusCode::OK {
                let got = body["jobs"].as_array().map_or(0, Vec::len);
                leased.fetch_add(got, Ordering::Relaxed);
            }
            (leased.load(Ordering::Relaxed) >= 2).then_some(())
        }
    })
    .await;
    // A node long-polling B hears a job submitted on A: B's listener is connected again.
    let fetch = long_poll(&b, &node);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = a.submit_id(&user, "m").await;
    let (fetched, took) = fetch.await.unwrap();
    assert_eq!(fetched["jobs"][0]["id"], id.as_str(), "{fetched}");
    assert!(
        took < Duration::from_secs(5),
        "woken after the restart: {took:?}"
    );
}
