use std::io::Write;
use std::process::{Command, Stdio};
use testkit::{Gateway, workspace_bin};

#[tokio::test(flavor = "multi_thread")]
async fn the_wizard_writes_a_config_that_check_accepts() {
    let gw = Gateway::start(&[]).await;
    let key = gw.key("node").await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("node_config.toml");
    let mut wizard = Command::new(workspace_bin("obb-node"))
        .args(["setup", "--output"])
        .arg(&output)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Server URL, node key, "local LLM server?" no, then a model name.
    write!(
        wizard.stdin.take().unwrap(),
        "{}\n{key}\nn\necho\n",
        gw.base
    )
    .unwrap();
    let done = wizard.wait_with_output().unwrap();
    let prompts = String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "{done:?}");
    for prompt in [
        "Enter Queue Server URL",
        "Enter Node API Key",
        "Are you using a local LLM server? (y/n)",
        "Enter model name",
    ] {
        assert!(
            prompts.contains(prompt),
            "missing prompt `{prompt}` in {prompts}"
        );
    }
    let check = Command::new(workspace_bin("obb-node"))
        .args(["check", "--config"])
        .arg(&output)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    assert!(String::from_utf8_lossy(&check.stdout).contains("serves echo"));

    let again = Command::new(workspace_bin("obb-node"))
        .args([
            "setup",
            "--server-url",
            "http://x:1",
            "--api-key",
            "k",
            "--local-llm-port",
            "1234",
            "--output",
        ])
        .arg(&output)
        .output()
        .unwrap();
    assert!(
        !again.status.success(),
        "an existing file is not replaced without --force"
    );
    let forced = Command::new(workspace_bin("obb-node"))
        .args([
            "setup",
            "--server-url",
            "http://x:1",
            "--api-key",
            "k",
            "--local-llm-port",
            "1234",
            "--force",
            "--output",
        ])
        .arg(&output)
        .output()
        .unwrap();
    assert!(forced.status.success());
    assert!(
        std::fs::read_to_string(&output)
            .unwrap()
            .contains("port = 1234")
    );
    let check = Command::new(workspace_bin("obb-node"))
        .args(["check", "--config"])
        .arg(&output)
        .output()
        .unwrap();
    assert!(
        !check.status.success(),
        "check fails when the gateway is unreachable"
    );
}

#[test]
fn openbeepboop_node_is_the_node_under_the_specs_name() {
    let dir = tempfile::tempdir().unwrap();
    for (bin, name) in [
        (env!("CARGO_BIN_EXE_obb-node"), "obb-node"),
        (env!("CARGO_BIN_EXE_openbeepboop-node"), "openbeepboop-node"),
    ] {
        let version = Command::new(bin).arg("--version").output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&version.stdout),
            format!("{name} {}\n", env!("CARGO_PKG_VERSION"))
        );
        let output = dir.path().join(format!("{name}.toml"));
        let setup = Command::new(bin)
            .args([
                "setup",
                "--server-url",
                "http://127.0.0.1:1",
                "--api-key",
                "k",
                "--model",
                "echo",
                "--output",
            ])
            .arg(&output)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(setup.status.success(), "{setup:?}");
        let hint = String::from_utf8_lossy(&setup.stdout);
        assert!(
            hint.contains(&format!("Check it with `{name} check --config")),
            "{hint}"
        );
        assert!(
            std::fs::read_to_string(&output)
                .unwrap()
                .contains("model = \"echo\"")
        );
    }
}

#[test]
fn an_unknown_obb_node_variable_is_rejected_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node_config.toml");
    std::fs::write(
        &config,
        "[server]\nurl = \"http://127.0.0.1:1\"\napi_key = \"k\"\n[node]\nmodels = [\"echo\"]\n",
    )
    .unwrap();
    let check = Command::new(workspace_bin("obb-node"))
        .args(["check", "--config"])
        .arg(&config)
        .env("OBB_NODE_CONCURENCY", "2")
        .env("OBB_LOG", "warn")
        .output()
        .unwrap();
    assert!(!check.status.success());
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        stderr.contains("unknown environment variable `OBB_NODE_CONCURENCY`"),
        "{stderr}"
    );
}
