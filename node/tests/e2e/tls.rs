//! The node's outbound networking on real processes: upstreams over HTTPS with a private CA
//! (the hosted-provider path and the `local_llm` shortcut) or with the platform's roots
//! (`SSL_CERT_FILE`), compressed answers in every coding, and `obb-node check` and `run`
//! naming certificate problems (unknown CA, expired, wrong host) as such on either hop.

use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use testkit::mock::{Coding, MockUpstream};
use testkit::{Gateway, NodeProcess, TestCa, chat, eventually};

/// A node config for the gateway `gw`: `server` is added to `[server]`, `sections` holds
/// `[llm]` or `[local_llm]`, and `[node]` gets the test timings and `node`.
fn config(gw: &Gateway, key: &str, server: &str, sections: &str, node: &str) -> String {
    format!(
        "[server]\nurl = \"{}\"\napi_key = \"{key}\"\n{server}\n\n{sections}\n\n[node]\nname = \"tls-node\"\nfetch_wait_seconds = 2\nretry_backoff_ms = 20\n{node}\n",
        gw.base
    )
}

/// `[llm]` for an OpenAI-compatible server at `base_url`, trusting `ca`.
fn llm(model: &str, base_url: &str, ca: Option<&Path>) -> String {
    let ca = ca.map_or_else(String::new, |p| format!("ca_cert = \"{}\"\n", p.display()));
    format!("[llm]\nmodel = \"{model}\"\nbase_url = \"{base_url}\"\napi_key = \"mock-key\"\n{ca}")
}

/// Submits `model` with `?wait=60` and returns the status and the answer.
async fn run_job(gw: &Gateway, user: &str, model: &str, content: &str) -> (u16, Value) {
    let response = gw
        .submit_with(user, &chat(model, content), Some(60), &[])
        .await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hosted_provider_model_over_https_with_a_private_ca_runs_a_job_end_to_end() {
    let gw = Gateway::start(&[]).await;
    let (user, key) = (gw.key("user").await, gw.key("node").await);
    let ca = TestCa::new();
    let (cert, key_pem) = ca.issue(&["127.0.0.1", "localhost"]);
    let mock = MockUpstream::start_tls(&["gpt-4o-mini"], &cert, &key_pem)
        .await
        .unwrap();
    assert!(mock.base_url().starts_with("https://"));
    let _node = NodeProcess::start(
        "run",
        &config(
            &gw,
            &key,
            "",
            &llm(
                "openai/gpt-4o-mini",
                &mock.base_url_at("localhost"),
                Some(ca.cert_path()),
            ),
            "",
        ),
    );
    let (status, answer) = run_job(&gw, &user, "openai/gpt-4o-mini", "over tls").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"][0]["message"]["content"], "mock: over tls");
    let (_, forwarded) = mock.state.last_request.lock().unwrap().clone().unwrap();
    assert_eq!(
        forwarded["model"], "gpt-4o-mini",
        "the provider prefix is dropped for the upstream"
    );
    assert_eq!(mock.calls(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn compressed_answers_in_every_coding_complete_their_jobs() {
    let gw = Gateway::start(&[]).await;
    let (user, key) = (gw.key("user").await, gw.key("node").await);
    let ca = TestCa::new();
    let (cert, key_pem) = ca.issue(&["127.0.0.1"]);
    let mock = MockUpstream::start_tls(&["m"], &cert, &key_pem)
        .await
        .unwrap();
    let _node = NodeProcess::start(
        "run",
        &config(
            &gw,
            &key,
            "",
            &llm("m", &mock.base_url(), Some(ca.cert_path())),
            "",
        ),
    );
    for coding in Coding::ALL {
        mock.set_coding(Some(coding));
        let (status, answer) = run_job(&gw, &user, "m", coding.name()).await;
        assert_eq!(status, 200, "{coding:?}: {answer}");
        assert_eq!(
            answer["choices"][0]["message"]["content"],
            format!("mock: {}", coding.name())
        );
        let accepted = mock.accept_encoding().unwrap_or_default();
        assert!(
            accepted.contains(coding.name()),
            "the node asks for {coding:?}: {accepted}"
        );
    }
    assert_eq!(mock.calls(), 4, "each answer was read at the first try");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_names_an_unknown_ca_an_expired_certificate_and_a_wrong_host_and_fails() {
    let gw = Gateway::start(&[]).await;
    let key = gw.key("node").await;
    let (ca, stranger) = (TestCa::new(), TestCa::new());
    let (cert, key_pem) = stranger.issue(&["127.0.0.1"]);
    let unknown = MockUpstream::start_tls(&["m"], &cert, &key_pem)
        .await
        .unwrap();
    let (cert, key_pem) = ca.issue_expired(&["127.0.0.1"]);
    let expired = MockUpstream::start_tls(&["m"], &cert, &key_pem)
        .await
        .unwrap();
    let (cert, key_pem) = ca.issue_wrong_host();
    let elsewhere = MockUpstream::start_tls(&["m"], &cert, &key_pem)
        .await
        .unwrap();
    let cases = [
        (&unknown, "unknown CA", "set `[llm] ca_cert`"),
        (&expired, "certificate expired", "renew it"),
        (
            &elsewhere,
            "not valid for the host name `127.0.0.1`",
            testkit::WRONG_HOST,
        ),
    ];
    let mut checks: Vec<NodeProcess> = cases
        .iter()
        .map(|(mock, _, _)| {
            let upstream = llm("m", &mock.base_url(), Some(ca.cert_path()));
            NodeProcess::start(
                "check",
                &config(&gw, &key, "", &upstream, "models = [\"m\"]"),
            )
        })
        .collect();
    for (check, (_, words, hint)) in checks.iter_mut().zip(cases) {
        let status = check.wait(Duration::from_secs(30)).expect("check exits");
        let log = check.log();
        assert!(!status.success(), "{log}");
        assert!(log.contains("the upstream check failed"), "{log}");
        assert!(log.contains(words), "{words}: {log}");
        assert!(log.contains(hint), "{hint}: {log}");
        assert!(!log.contains("refused the connection"), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_node_logs_a_certificate_problem_by_name() {
    let gw = Gateway::start(&[("OBB_MAX_ATTEMPTS", "1")]).await;
    let (user, key) = (gw.key("user").await, gw.key("node").await);
    let (ca, stranger) = (TestCa::new(), TestCa::new());
    // (the model, the upstream's certificate, the CA the node trusts, what its log says)
    let cases = [
        (
            "unknown",
            stranger.issue(&["127.0.0.1"]),
            None,
            ["unknown CA", "set `[llm] ca_cert`"],
        ),
        (
            "expired",
            ca.issue_expired(&["127.0.0.1"]),
            Some(ca.cert_path()),
            ["certificate expired", "renew it"],
        ),
        (
            "elsewhere",
            ca.issue_wrong_host(),
            Some(ca.cert_path()),
            [
                "not valid for the host name `127.0.0.1`",
                testkit::WRONG_HOST,
            ],
        ),
    ];
    for (model, (cert, key_pem), trusted, words) in cases {
        let mock = MockUpstream::start_tls(&[model], &cert, &key_pem)
            .await
            .unwrap();
        let node = NodeProcess::start(
            "run",
            &config(
                &gw,
                &key,
                "",
                &llm(model, &mock.base_url(), trusted),
                &format!("models = [\"{model}\"]\nmax_retries = 0"),
            ),
        );
        let (status, answer) = run_job(&gw, &user, model, "hello").await;
        assert_ne!(status, 200, "{model}: {answer}");
        let log = eventually(
            Duration::from_secs(10),
            "the failure in the log",
            || async {
                let log = node.log();
                log.contains("job failed").then_some(log)
            },
        )
        .await;
        for words in words {
            assert!(log.contains(words), "{model}: `{words}` in {log}");
        }
        assert!(!log.contains("refused the connection"), "{model}: {log}");
        assert_eq!(
            mock.calls(),
            0,
            "{model}: no request got past the handshake"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_platform_roots_are_trusted_so_ssl_cert_file_alone_lets_a_job_run() {
    let gw = Gateway::start(&[]).await;
    let (user, key) = (gw.key("user").await, gw.key("node").await);
    let ca = TestCa::new();
    let (cert, key_pem) = ca.issue(&["127.0.0.1"]);
    let mock = MockUpstream::start_tls(&["m"], &cert, &key_pem)
        .await
        .unwrap();
    // No `ca_cert` anywhere: the CA is trusted only as one of the platform's roots, which
    // rustls-native-certs reads from `SSL_CERT_FILE` when it is set, as OpenSSL does.
    let node_config = config(&gw, &key, "", &llm("m", &mock.base_url(), None), "");
    let platform = [("SSL_CERT_FILE", ca.cert_path().to_str().unwrap())];

    let mut without = NodeProcess::start("check", &node_config);
    let status = without.wait(Duration::from_secs(30)).expect("check exits");
    assert!(!status.success(), "{}", without.log());
    assert!(without.log().contains("unknown CA"), "{}", without.log());

    let mut check = NodeProcess::start_in_env("check", &node_config, &[], &platform);
    let status = check.wait(Duration::from_secs(30)).expect("check exits");
    assert!(status.success(), "{}", check.log());
    assert!(check.log().contains("serves m"), "{}", check.log());

    let _node = NodeProcess::start_in_env("run", &node_config, &[], &platform);
    let (status, answer) = run_job(&gw, &user, "m", "platform roots").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "mock: platform roots"
    );
    assert_eq!(mock.calls(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn local_llm_with_a_ca_cert_reaches_a_local_server_over_https() {
    let gw = Gateway::start(&[]).await;
    let (user, key) = (gw.key("user").await, gw.key("node").await);
    let ca = TestCa::new();
    let (cert, key_pem) = ca.issue(&["127.0.0.1"]);
    let mock = MockUpstream::start_tls(&["llama3"], &cert, &key_pem)
        .await
        .unwrap();
    let local = format!(
        "[local_llm]\nenabled = true\nhost = \"127.0.0.1\"\nport = {}\nca_cert = \"{}\"\n",
        mock.port,
        ca.cert_path().display()
    );
    let mut check = NodeProcess::start("check", &config(&gw, &key, "", &local, ""));
    let status = check.wait(Duration::from_secs(30)).expect("check exits");
    assert!(status.success(), "{}", check.log());
    assert!(check.log().contains("serves llama3"), "{}", check.log());
    let _node = NodeProcess::start("run", &config(&gw, &key, "", &local, ""));
    let (status, answer) = run_job(&gw, &user, "llama3", "local").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"][0]["message"]["content"], "mock: local");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_reaches_an_https_gateway_with_server_ca_cert_and_check_names_an_unknown_ca() {
    let ca = TestCa::new();
    let gw = Gateway::start_tls(&ca, &[]).await;
    assert!(gw.base.starts_with("https://"));
    let (user, key) = (gw.key("user").await, gw.key("node").await);
    let mock = MockUpstream::start(&["m"]).await.unwrap();
    let upstream = llm("m", &mock.base_url(), None);

    let mut untrusting = NodeProcess::start("check", &config(&gw, &key, "", &upstream, ""));
    let status = untrusting
        .wait(Duration::from_secs(30))
        .expect("check exits");
    let log = untrusting.log();
    assert!(!status.success(), "{log}");
    assert!(log.contains("the gateway check failed"), "{log}");
    assert!(log.contains("unknown CA"), "{log}");
    assert!(log.contains("set `[server] ca_cert`"), "{log}");

    let trust = format!("ca_cert = \"{}\"", ca.cert_path().display());
    let mut check = NodeProcess::start("check", &config(&gw, &key, &trust, &upstream, ""));
    let status = check.wait(Duration::from_secs(30)).expect("check exits");
    assert!(status.success(), "{}", check.log());
    let _node = NodeProcess::start("run", &config(&gw, &key, &trust, &upstream, ""));
    let (status, answer) = run_job(&gw, &user, "m", "over https").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "mock: over https"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_names_an_expired_or_wrong_host_certificate_on_an_https_gateway() {
    let ca = TestCa::new();
    let mock = MockUpstream::start(&["m"]).await.unwrap();
    let upstream = llm("m", &mock.base_url(), None);
    let trust = format!("ca_cert = \"{}\"", ca.cert_path().display());
    let cases = [
        (
            ca.issue_expired(&["127.0.0.1"]),
            "certificate expired",
            "renew it",
        ),
        (
            ca.issue_wrong_host(),
            "not valid for the host name `127.0.0.1`",
            testkit::WRONG_HOST,
        ),
    ];
    for ((cert, key_pem), words, hint) in cases {
        let gw = Gateway::start_tls_with(&cert, &key_pem, &[]).await;
        let key = gw.key("node").await;
        let mut check = NodeProcess::start("check", &config(&gw, &key, &trust, &upstream, ""));
        let status = check.wait(Duration::from_secs(30)).expect("check exits");
        let log = check.log();
        assert!(!status.success(), "{log}");
        assert!(log.contains("the gateway check failed"), "{log}");
        assert!(log.contains(words), "{words}: {log}");
        assert!(log.contains(hint), "{hint}: {log}");
        assert!(!log.contains("refused the connection"), "{log}");
    }
}
