use crate::harness::{Gateway, cli, gateway_bin};
use std::process::Command;
use std::time::Duration;

fn text(output: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn keys_made_by_the_cli_work_at_once_and_revoking_them_stops_them_within_a_recheck() {
    let gw = Gateway::start(&[]).await;
    let created = cli(
        &gw.db(),
        &["keys", "create", "--role", "user", "--name", "alice"],
    );
    assert!(created.status.success(), "{created:?}");
    let key = text(&created).0.trim().to_owned();
    assert!(
        key.starts_with("sk-obb-") && !key.contains('\n'),
        "only the key on stdout: {key}"
    );
    let (status, _) = gw.get_json(&key, "/v1/jobs").await;
    assert_eq!(status, 200);
    let listed = text(&cli(&gw.db(), &["keys", "list"])).0;
    let line = listed.lines().find(|l| l.contains("alice")).unwrap();
    assert!(
        line.contains("user") && line.contains("active") && !line.contains(&key),
        "{line}"
    );
    let id = line.split('\t').next().unwrap();
    assert!(cli(&gw.db(), &["keys", "revoke", id]).status.success());
    // The gateway cached the key's row on its first use; the CLI's change moves the key
    // generation, which the gateway reads again at most `RECHECK_EVERY` (250 ms) later.
    crate::harness::eventually(
        Duration::from_secs(5),
        "a revocation from another process to apply",
        || async { (gw.get_json(&key, "/v1/jobs").await.0 == 401).then_some(()) },
    )
    .await;
    assert!(
        !cli(&gw.db(), &["keys", "revoke", "key_nobody"])
            .status
            .success()
    );
}

#[test]
fn setup_twice_keeps_the_data_and_start_refuses_a_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sub/queue.db");
    let first = cli(&db, &["setup", "--yes"]);
    assert!(first.status.success());
    assert!(text(&first).0.trim().starts_with("sk-obb-"));
    let second = cli(&db, &["setup", "--yes"]);
    assert!(second.status.success());
    assert!(text(&second).0.is_empty(), "no second admin key");
    assert!(text(&second).1.contains("already exists"));
    assert_eq!(text(&cli(&db, &["keys", "list"])).0.lines().count(), 1);

    let missing = cli(&dir.path().join("none.db"), &["start", "--port", "1"]);
    assert!(!missing.status.success());
    assert!(
        text(&missing).1.contains("run `obb-gateway setup` first"),
        "{missing:?}"
    );
    let checked = cli(&db, &["start", "--check-config"]);
    assert!(checked.status.success(), "{checked:?}");
    assert!(text(&checked).0.contains("max_wait_seconds = 300"));
}

#[test]
fn the_interactive_setup_asks_where_the_database_goes() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chosen.db");
    let mut child = Command::new(gateway_bin())
        .arg("setup")
        .env("XDG_DATA_HOME", dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{}", db.display()).unwrap();
    let output = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(
        stderr.contains("Where should the database be stored?"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            &dir.path()
                .join("openbeepboop/queue.db")
                .display()
                .to_string()
        ),
        "the default is under XDG_DATA_HOME"
    );
    assert!(stdout.trim().starts_with("sk-obb-"));
    assert!(db.exists());
}

#[test]
fn bad_config_files_are_rejected_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, "max_wiat_seconds = 5\n").unwrap();
    let output = Command::new(gateway_bin())
        .args(["start", "--check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(text(&output).1.contains("max_wiat_seconds"));
}

#[tokio::test]
async fn sigterm_drains_and_exits_within_the_grace_period() {
    let mut gw = Gateway::start(&[]).await;
    let started = std::time::Instant::now();
    let status = gw.stop_with("-TERM").unwrap();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // The data survives a restart.
    gw.spawn().await;
    let (status, _) = gw.get_json(&gw.admin.clone(), "/v1/jobs").await;
    assert_eq!(status, 200);
}

#[test]
fn openbeepboop_server_is_the_gateway_under_the_specs_name() {
    let dir = tempfile::tempdir().unwrap();
    for (bin, name) in [
        (env!("CARGO_BIN_EXE_obb-gateway"), "obb-gateway"),
        (
            env!("CARGO_BIN_EXE_openbeepboop-server"),
            "openbeepboop-server",
        ),
    ] {
        let version = text(&Command::new(bin).arg("--version").output().unwrap()).0;
        assert_eq!(version, format!("{name} {}\n", env!("CARGO_PKG_VERSION")));
        let help = text(&Command::new(bin).arg("--help").output().unwrap()).0;
        assert!(help.contains(&format!("Usage: {name} <COMMAND>")), "{help}");
        let db = dir.path().join(format!("{name}.db"));
        let setup = Command::new(bin)
            .args(["setup", "--yes", "--db"])
            .arg(&db)
            .output()
            .unwrap();
        assert!(setup.status.success(), "{setup:?}");
        let (key, hints) = text(&setup);
        assert!(key.starts_with("sk-obb-"), "{key}");
        assert!(
            hints.contains(&format!("Run the gateway with `{name} start --db")),
            "{hints}"
        );
    }
}

#[test]
fn an_unknown_obb_variable_is_rejected_by_name_and_other_programs_variables_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("queue.db");
    assert!(cli(&db, &["setup", "--yes"]).status.success());
    let check = |env: &[(&str, &str)]| {
        Command::new(gateway_bin())
            .args(["start", "--check-config", "--db"])
            .arg(&db)
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let typo = check(&[("OBB_MAX_WAIT_SECOND", "5")]);
    assert!(!typo.status.success());
    assert!(
        text(&typo)
            .1
            .contains("unknown environment variable `OBB_MAX_WAIT_SECOND`"),
        "{typo:?}"
    );
    let shared = check(&[
        ("OBB_NODE_CONCURRENCY", "2"),
        ("OBB_API_KEY", "sk-obb-x"),
        ("OBB_LOG", "warn"),
    ]);
    assert!(shared.status.success(), "{shared:?}");
}

/// Runs `obb-gateway <args>` against the running gateway `gw` with `key`.
fn remote(gw: &Gateway, key: &str, args: &[&str]) -> std::process::Output {
    Command::new(gateway_bin())
        .args(args)
        .env("OBB_URL", gw.url(""))
        .env("OBB_ADMIN_KEY", key)
        .env("OBB_LOG", "warn")
        .output()
        .expect("obb-gateway runs")
}

#[tokio::test]
async fn the_jobs_and_nodes_commands_act_through_the_running_gateway() {
    let gw = Gateway::start(&[]).await;
    let (user, node, admin) = (gw.key("user").await, gw.key("node").await, gw.admin.clone());
    let id = gw.submit_id(&user, "m").await;
    let leased = gw.fetch(&node, "n1", &["m"], 1, 0.0).await;
    let failure = serde_json::json!([{"id": leased[0]["id"], "lease_id": leased[0]["lease_id"],
        "status": "FAILED", "retryable": false,
        "error": {"message": "nope", "type": "server_error", "param": null, "code": null}}]);
    assert_eq!(gw.report(&node, &failure).await, "accepted");

    let retried = remote(&gw, &admin, &["jobs", "retry", &id]);
    assert!(retried.status.success(), "{retried:?}");
    let job: serde_json::Value = serde_json::from_slice(&retried.stdout).unwrap();
    assert_eq!(
        (job["status"].as_str(), job["events"][0]["type"].as_str()),
        (Some("queued"), Some("retried"))
    );
    let moved = remote(&gw, &admin, &["jobs", "priority", &id, "1"]);
    assert!(text(&moved).0.contains("\"priority\": 1"), "{moved:?}");
    let none = remote(
        &gw,
        &admin,
        &["jobs", "retry", "--status", "failed,expired"],
    );
    assert_eq!(text(&none).0.trim(), "retried 0 jobs");
    let typo = remote(&gw, &admin, &["jobs", "retry", "--status", "broken"]);
    assert!(
        !typo.status.success() && text(&typo).1.contains("--status"),
        "{typo:?}"
    );

    let exported = remote(&gw, &user, &["jobs", "export", "--model", "m"]);
    assert!(exported.status.success(), "{exported:?}");
    let lines: Vec<serde_json::Value> = text(&exported)
        .0
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["id"], id.as_str());

    let drained = remote(&gw, &admin, &["nodes", "drain", "n1"]);
    assert!(
        text(&drained).0.starts_with("n1\talive\tdraining"),
        "{drained:?}"
    );
    let listed = text(&remote(&gw, &admin, &["nodes", "list"])).0;
    assert!(listed.contains("n1\talive\tdraining"), "{listed}");
    let undrained = remote(&gw, &admin, &["nodes", "undrain", "n1"]);
    assert!(text(&undrained).0.contains("\tactive\t"), "{undrained:?}");
    let alive = remote(&gw, &admin, &["nodes", "remove", "n1"]);
    assert!(
        !alive.status.success() && text(&alive).1.contains("node `n1` is alive"),
        "{alive:?}"
    );

    // Errors: the gateway's message, a user key on an admin route, no gateway at all.
    let missing = remote(&gw, &admin, &["nodes", "drain", "ghost"]);
    assert!(
        !missing.status.success() && text(&missing).1.contains("node `ghost` not found"),
        "{missing:?}"
    );
    let refused = remote(&gw, &user, &["nodes", "list"]);
    assert!(text(&refused).1.contains("403"), "{refused:?}");
    let nowhere = Command::new(gateway_bin())
        .args(["nodes", "list", "--url", "http://127.0.0.1:9", "--key", "k"])
        .output()
        .unwrap();
    assert!(
        text(&nowhere).1.contains("cannot reach the gateway"),
        "{nowhere:?}"
    );
    let keyless = Command::new(gateway_bin())
        .args(["nodes", "list", "--url", &gw.url("")])
        .env_remove("OBB_ADMIN_KEY")
        .output()
        .unwrap();
    assert!(
        !keyless.status.success() && text(&keyless).1.contains("set `OBB_ADMIN_KEY`"),
        "{keyless:?}"
    );
}
