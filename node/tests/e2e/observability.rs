//! A real Prometheus scrapes a real gateway and two nodes while traffic (failures included)
//! runs; then every panel of every dashboard is evaluated and must return data.

use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use testkit::mock::{Fault, MockUpstream};
use testkit::{Gateway, NodeProcess, chat, eventually, free_port};

struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(targets: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for (job, target) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let prometheus =
            testkit::installed::program("prometheus", "Prometheus (Debian's `prometheus`)");
        let child = Command::new(&prometheus)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", prometheus.display()));
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    async fn query(&self, http: &reqwest::Client, expr: &str) -> Vec<Value> {
        let Ok(response) = http
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", expr)])
            .send()
            .await
        else {
            return Vec::new();
        };
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(
            body["status"], "error",
            "`{expr}` is not valid PromQL: {body}"
        );
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The query's finite values; empty when it has no data yet.
    async fn values(&self, http: &reqwest::Client, expr: &str) -> Vec<f64> {
        self.query(http, expr)
            .await
            .iter()
            .filter_map(|sample| sample["value"][1].as_str()?.parse::<f64>().ok())
            .filter(|v| v.is_finite())
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn panels() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
    let mut found = Vec::new();
    for name in ["overview.json", "queue.json", "nodes.json"] {
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", "1m");
                found.push((
                    format!("{name}: {}", panel["title"].as_str().unwrap()),
                    expr,
                ));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_panel_returns_data_from_a_real_prometheus() {
    let gw = Gateway::start(&[("OBB_LEASE_SECONDS", "1")]).await;
    let (user, key) = (gw.key("user").await, gw.key("node").await);
    let (fast, flaky) = (
        MockUpstream::start(&["m"]).await.unwrap(),
        MockUpstream::start(&["m", "slow"]).await.unwrap(),
    );
    let (port_a, port_b) = (free_port(), free_port());
    let _a = NodeProcess::start_with(
        "run",
        &NodeProcess::config(
            &gw,
            &key,
            "node-a",
            Some(&fast.base_url()),
            "models = [\"m\"]\nmax_retries = 0",
        ),
        &["--metrics-addr", &format!("127.0.0.1:{port_a}")],
    );
    let b = NodeProcess::start_with(
        "run",
        &NodeProcess::config(
            &gw,
            &key,
            "node-b",
            Some(&flaky.base_url()),
            "models = [\"m\", \"slow\"]\nmax_retries = 0",
        ),
        &["--metrics-addr", &format!("127.0.0.1:{port_b}")],
    );
    let gateway_target = gw.base.trim_start_matches("http://").to_owned();
    let prometheus = Prometheus::start(&[
        ("obb-gateway", gateway_target),
        ("obb-node-a", format!("127.0.0.1:{port_a}")),
        ("obb-node-b", format!("127.0.0.1:{port_b}")),
    ]);
    let http = reqwest::Client::new();
    eventually(
        Duration::from_secs(30),
        "Prometheus to scrape all three targets",
        || async {
            let up = prometheus.values(&http, "sum(up)").await;
            (up.first() == Some(&3.0)).then_some(())
        },
    )
    .await;

    // Waves of traffic, each waited for until Prometheus has seen it, so rates have points.
    let mut submitted = 0;
    for wave in 0..4 {
        flaky.push_faults([Fault::Status(500, None), Fault::Status(404, None)]);
        let bodies: Vec<Value> = (0..6)
            .map(|i| chat("m", &format!("wave {wave} job {i}")))
            .collect();
        let waiters: Vec<_> = bodies
            .iter()
            .map(|body| gw.submit_with(&user, body, Some(20), &[]))
            .collect();
        for waiter in waiters {
            let status = waiter.await.status().as_u16();
            assert!([200, 404, 502].contains(&status), "{status}");
        }
        submitted += 6;
        // Failures of the gateway's own: a bad request and a bad key.
        gw.submit(&user, &json!({"model": "m"})).await;
        gw.submit("sk-obb-wrong", &chat("m", "x")).await;
        // A cancellation and an expiry.
        let cancelled = gw.submit_id(&user, "unserved").await;
        gw.post_json(&user, &format!("/v1/jobs/{cancelled}/cancel"), &json!({}))
            .await;
        gw.submit_with(
            &user,
            &chat("unserved", "soon gone"),
            None,
            &[("X-OBB-TTL", "1")],
        )
        .await;
        submitted += 2;
        let expected = f64::from(submitted);
        eventually(
            Duration::from_secs(30),
            "Prometheus to see the wave",
            || async {
                let seen = prometheus
                    .values(&http, "sum(obb_jobs_submitted_total)")
                    .await;
                (seen.first() >= Some(&expected)).then_some(())
            },
        )
        .await;
    }
    // A lease that lapses: leased by hand, never heartbeated.
    gw.submit_id(&user, "ghost").await;
    assert_eq!(
        gw.fetch(&key, "ghost-node", &["ghost"], 1, 0.0).await.len(),
        1
    );
    // Work left in the queue and in flight when the panels are read.
    for priority in ["1", "5"] {
        gw.submit_with(
            &user,
            &chat("unserved", "waits"),
            None,
            &[("X-OBB-Priority", priority)],
        )
        .await;
    }
    flaky.push_faults([Fault::Delay(Duration::from_secs(120))]);
    gw.submit_id(&user, "slow").await;
    eventually(
        Duration::from_secs(10),
        "the slow job to be in flight",
        || async {
            (flaky.state.calls.load(std::sync::atomic::Ordering::SeqCst) > 0
                && flaky.max_in_flight() > 0)
                .then_some(())
        },
    )
    .await;

    let panels = panels();
    assert!(panels.len() >= 25, "three dashboards of panels");
    for (name, expr) in &panels {
        eventually(
            Duration::from_secs(30),
            &format!("data for `{name}`: {expr}"),
            || async {
                let values = prometheus.values(&http, expr).await;
                (!values.is_empty()).then_some(())
            },
        )
        .await;
    }
    // The counts behind the panels match what the test did: every accepted submit (the
    // waves, the cancelled, expiring, ghost, queued and slow jobs) and the completions' usage.
    let accepted = f64::from(submitted + 1 + 2 + 1);
    let (_, done) = gw
        .get_json(&gw.admin, "/v1/jobs?status=completed&limit=100")
        .await;
    let usage: f64 = done["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| {
            job["result"]["usage"]["total_tokens"]
                .as_f64()
                .unwrap_or(0.0)
        })
        .sum();
    assert!(usage > 0.0);
    eventually(
        Duration::from_secs(30),
        "exact totals in Prometheus",
        || async {
            let jobs = prometheus
                .values(&http, "sum(obb_jobs_submitted_total)")
                .await;
            let tokens = prometheus.values(&http, "sum(obb_tokens_total)").await;
            (jobs == vec![accepted] && tokens == vec![usage]).then_some(())
        },
    )
    .await;
    let cancellations = prometheus
        .values(&http, "sum(obb_job_cancellations_total)")
        .await;
    assert_eq!(cancellations, vec![4.0]);
    // The ghost's lease lapses a second after its fetch, and Prometheus sees it at its next
    // scrape; the series itself exists at zero from the start.
    eventually(
        Duration::from_secs(30),
        "Prometheus to see the lapsed lease",
        || async {
            let lapsed = prometheus
                .values(&http, "sum(obb_lease_expirations_total)")
                .await;
            (lapsed.first() >= Some(&1.0)).then_some(())
        },
    )
    .await;
    b.signal("-INT");
    b.signal("-INT");
}
