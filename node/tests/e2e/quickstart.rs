//! `quickstart.sh`, the README's first command, run as a newcomer would (with the binaries
//! already built, so the test does not rebuild in release mode).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use testkit::{free_port, gateway_bin};

pub struct Quickstart {
    child: Child,
    pub output: String,
    pub port: u16,
    _home: tempfile::TempDir,
}

impl Quickstart {
    /// Runs the script until it says it is serving; `llm_ports` are the ports it probes.
    pub fn start(llm_ports: &str) -> Self {
        let home = tempfile::tempdir().unwrap();
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../quickstart.sh");
        let bin_dir: PathBuf = gateway_bin().parent().unwrap().to_owned();
        let mut child = Command::new("bash")
            .arg(script)
            .env("OBB_BIN_DIR", bin_dir)
            .env("OBB_PORT", port.to_string())
            .env("OBB_DEMO_LLM_PORTS", llm_ports)
            .env("XDG_DATA_HOME", home.path().join("data"))
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines, receive) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let mut output = String::new();
        while !output.contains("==> serving on") {
            match receive.recv_timeout(Duration::from_secs(120)) {
                Ok(line) => {
                    output.push_str(&line);
                    output.push('\n');
                }
                Err(_) => panic!("quickstart.sh did not come up:\n{output}"),
            }
        }
        Self {
            child,
            output,
            port,
            _home: home,
        }
    }

    /// The key printed after `label`.
    pub fn key(&self, label: &str) -> String {
        self.output
            .lines()
            .find_map(|line| line.trim().strip_prefix(label))
            .map(|rest| rest.trim().to_owned())
            .unwrap_or_default()
    }

    /// Ctrl-C, as the script says; returns whether it exited cleanly.
    pub fn stop(mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        false
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn quickstart_serves_a_demo_job_with_echo_and_stops_on_ctrl_c() {
    let closed = free_port().to_string();
    let run = Quickstart::start(&closed);
    assert!(
        run.output
            .contains("\"content\":\"echo: Say hello to OpenBeepBoop.\""),
        "{}",
        run.output
    );
    assert!(
        run.output.contains("built-in `echo` model"),
        "{}",
        run.output
    );
    assert!(
        run.output.contains("from openai import OpenAI"),
        "{}",
        run.output
    );
    let user = run.key("user:");
    assert!(user.starts_with("sk-obb-"), "{}", run.output);
    // The printed curl works.
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/v1/chat/completions?wait=30", run.port))
        .bearer_auth(&user)
        .json(&serde_json::json!({"model": "echo", "messages": [{"role": "user", "content": "Hello!"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let port = run.port;
    assert!(run.stop(), "Ctrl-C stops it cleanly");
    let gone = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(gone.is_err(), "the gateway stopped with the script");
}
