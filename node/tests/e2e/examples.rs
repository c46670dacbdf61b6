//! The node configs, systemd units and cron line in `examples/` are real: each config loads
//! and routes as its comment says, and each unit's command line runs.

use obb_node::config::NodeConfig;
use obb_node::routing::{Routing, Target};
use std::path::{Path, PathBuf};
use std::process::Command;
use testkit::{Gateway, gateway_bin, workspace_bin};

fn example(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(path)
}

#[test]
fn every_node_config_example_loads_and_routes_to_its_server() {
    let cases = [
        (
            "ollama.toml",
            "http://127.0.0.1:11434/v1",
            "llama3.1",
            "llama3.1",
        ),
        ("lmstudio.toml", "http://127.0.0.1:1234/v1", "", ""),
        (
            "llamacpp.toml",
            "http://127.0.0.1:8080/v1",
            "qwen2.5-7b",
            "qwen2.5-7b-instruct-q4_k_m.gguf",
        ),
        (
            "vllm.toml",
            "http://gpu-01.internal:8000/v1",
            "qwen2.5-7b",
            "Qwen/Qwen2.5-7B-Instruct",
        ),
        (
            "openai.toml",
            "https://api.openai.com/v1",
            "gpt-4o-mini",
            "gpt-4o-mini",
        ),
    ];
    for (file, base, model, upstream_model) in cases {
        let config =
            NodeConfig::load(Some(&example(&format!("node-configs/{file}"))), Vec::new()).unwrap();
        let routing = Routing::resolve(&config, |v| {
            (v == "OPENAI_API_KEY").then(|| "sk-test".to_owned())
        });
        let upstream = routing.upstream.clone().unwrap();
        assert_eq!(upstream.base_url, base, "{file}");
        if model.is_empty() {
            assert!(routing.discover, "{file} serves what the server lists");
        } else {
            assert_eq!(
                routing.target(model),
                Some(&Target::Upstream(upstream_model.to_owned())),
                "{file}"
            );
        }
    }
}

/// The command line of a unit's `ExecStart=`, or a cron line's command, split into words.
fn command_of(text: &str, marker: &str) -> Vec<String> {
    let line = text.lines().find(|l| l.contains(marker)).unwrap();
    let start = line.find(marker).unwrap();
    line[start..]
        .split_whitespace()
        .take_while(|w| *w != ">>")
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_systemd_units_and_cron_line_run_as_written() {
    let gw = Gateway::start(&[]).await;
    let (user, node_key) = (gw.key("user").await, gw.key("node").await);
    let dir = tempfile::tempdir().unwrap();

    let unit = std::fs::read_to_string(example("systemd/obb-gateway.service")).unwrap();
    let gateway_config = dir.path().join("gateway.toml");
    std::fs::write(&gateway_config, "max_wait_seconds = 120\n").unwrap();
    let words: Vec<String> = command_of(&unit, "/usr/local/bin/obb-gateway")
        .into_iter()
        .map(|w| match w.as_str() {
            "/var/lib/openbeepboop/queue.db" => gw.db().display().to_string(),
            "/etc/openbeepboop/gateway.toml" => gateway_config.display().to_string(),
            _ => w,
        })
        .collect();
    let checked = Command::new(gateway_bin())
        .args(&words[1..])
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(checked.status.success(), "{checked:?}");
    assert!(String::from_utf8_lossy(&checked.stdout).contains("max_wait_seconds = 120"));

    let node_config = dir.path().join("node_config.toml");
    std::fs::write(
        &node_config,
        format!("[server]\nurl = \"{}\"\napi_key = \"{node_key}\"\n[node]\nname = \"cron-node\"\nmodels = [\"echo\"]\n", gw.base),
    )
    .unwrap();
    let replace = |words: Vec<String>| -> Vec<String> {
        words
            .into_iter()
            .map(|w| {
                if w == "/etc/openbeepboop/node_config.toml" {
                    node_config.display().to_string()
                } else {
                    w
                }
            })
            .collect()
    };
    let unit = std::fs::read_to_string(example("systemd/obb-node.service")).unwrap();
    let mut words = replace(command_of(&unit, "/usr/local/bin/obb-node"));
    assert_eq!(words[1], "run");
    words[1] = "check".to_owned();
    let checked = Command::new(workspace_bin("obb-node"))
        .args(&words[1..])
        .env("XDG_DATA_HOME", dir.path())
        .output()
        .unwrap();
    assert!(checked.status.success(), "{checked:?}");

    let cron = std::fs::read_to_string(example("systemd/obb-node.cron")).unwrap();
    let entry = cron
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap();
    assert_eq!(
        entry.split_whitespace().take(5).collect::<Vec<_>>(),
        vec!["*/10", "*", "*", "*", "*"]
    );
    let id = gw.submit_id(&user, "echo").await;
    let words = replace(command_of(entry, "/usr/local/bin/obb-node"));
    let batch = Command::new(workspace_bin("obb-node"))
        .args(&words[1..])
        .env("XDG_DATA_HOME", dir.path())
        .output()
        .unwrap();
    assert!(batch.status.success(), "{batch:?}");
    assert_eq!(gw.job(&user, &id).await["status"], "completed");
}
