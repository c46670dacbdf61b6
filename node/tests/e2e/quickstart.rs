//! `quickstart.sh`, the README's first command, run as a newcomer would (with the binaries
//! already built, so the test does not rebuild in release mode): with the built-in `echo`,
//! with SmolLM2 on llama.cpp's server (its default, from the venv `./test.sh` makes), and on
//! a machine without the build's tools.

use serde_json::Value;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use testkit::{exited, free_port, gateway_bin, stop_child};

/// Waits (up to `within`) for the script to stop by itself, then collects what it printed.
async fn run_to_end(mut child: Child, within: Duration) -> std::process::Output {
    // A multi-threaded runtime: blocking this thread while the script runs stalls nothing.
    let status = exited(&mut child, within);
    assert!(
        status.is_some(),
        "timed out waiting for quickstart.sh to stop"
    );
    child.wait_with_output().unwrap()
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../quickstart.sh")
}

pub struct Quickstart {
    child: Child,
    pub output: String,
    pub port: u16,
    home: tempfile::TempDir,
}

impl Quickstart {
    /// Runs the script with `args` and `env` until it says it is serving; `llm_ports` are
    /// the ports it probes for a local LLM server.
    pub fn start(llm_ports: &str, args: &[&str], env: &[(&str, &OsStr)]) -> Self {
        let home = tempfile::tempdir().unwrap();
        let port = free_port();
        let bin_dir: PathBuf = gateway_bin().parent().unwrap().to_owned();
        // SIGINT at its default even when the tests were started with it ignored (`nohup`,
        // `&` in a script): bash cannot trap a signal ignored when it started.
        let mut child = Command::new("env")
            .args(["--default-signal=INT", "bash"])
            .arg(script())
            .args(args)
            .env("OBB_BIN_DIR", bin_dir)
            .env("OBB_PORT", port.to_string())
            .env("OBB_DEMO_LLM_PORTS", llm_ports)
            .env("XDG_DATA_HOME", home.path().join("data"))
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own process group, as a terminal gives a foreground command, so that
            // `stop` can press Ctrl-C the way a terminal does.
            .process_group(0)
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
                Err(_) => {
                    let _ = stop_child(child, "-INT", Duration::from_secs(20));
                    panic!("quickstart.sh did not come up:\n{output}")
                }
            }
        }
        Self {
            child,
            output,
            port,
            home,
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

    /// The demo job's answer, the one line of JSON the script prints.
    pub fn answer(&self) -> Value {
        let line = self.output.lines().find(|l| l.starts_with('{'));
        serde_json::from_str(line.unwrap_or_default()).unwrap_or(Value::Null)
    }

    /// The node config the script wrote.
    pub fn node_config(&self) -> String {
        let path = self
            .home
            .path()
            .join("config/openbeepboop/quickstart_node_config.toml");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// Ctrl-C as a terminal sends it, to the whole foreground process group; returns
    /// whether the script exited cleanly within 20 s.
    pub fn stop(mut self) -> bool {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-INT", "--", &group]).status();
        let status = exited(&mut self.child, Duration::from_secs(20));
        if status.is_none() {
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        }
        status.is_some_and(|s| s.success())
    }
}

async fn answers(url: String) -> bool {
    reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn quickstart_serves_a_demo_job_with_echo_and_stops_on_ctrl_c() {
    let closed = free_port().to_string();
    let run = Quickstart::start(&closed, &["--echo"], &[]);
    assert_eq!(
        run.answer()["choices"][0]["message"]["content"],
        "echo: Say hello to OpenBeepBoop.",
        "{}",
        run.output
    );
    assert!(
        run.output
            .contains("--echo: the node serves the built-in `echo` model"),
        "{}",
        run.output
    );
    assert!(
        run.output
            .contains("==> answered by `echo` (the built-in echo model) in "),
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
    assert!(
        !answers(format!("http://127.0.0.1:{port}/healthz")).await,
        "the gateway stopped with the script"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_with_a_job_in_flight_lets_the_node_finish_it_before_the_gateway_stops() {
    // A local LLM server (the labelled mock) that the script finds and uses.
    let llm = testkit::mock::MockUpstream::start(&["m"]).await.unwrap();
    let llm_port = llm
        .base_url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/v1")
        .to_owned();
    let run = Quickstart::start(&llm_port, &[], &[]);
    let user = run.key("user:");
    assert!(user.starts_with("sk-obb-"), "{}", run.output);
    llm.set_delay(Duration::from_secs(3));
    let calls = llm.calls();
    let url = format!("http://127.0.0.1:{}/v1/chat/completions?wait=30", run.port);
    let waiting = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .bearer_auth(&user)
            .json(
                &serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .send()
            .await
    });
    testkit::eventually(
        Duration::from_secs(20),
        "the job to reach the upstream",
        || async { (llm.calls() > calls).then_some(()) },
    )
    .await;
    let port = run.port;
    let stopped = tokio::task::spawn_blocking(move || run.stop());
    let answer = waiting
        .await
        .unwrap()
        .expect("the waiting client gets an answer");
    assert_eq!(
        answer.status(),
        200,
        "the job finished before the gateway stopped"
    );
    assert!(
        stopped.await.unwrap(),
        "Ctrl-C stops it cleanly, within 20 s"
    );
    assert!(
        !answers(format!("http://127.0.0.1:{port}/healthz")).await,
        "the gateway stopped with the script"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quickstart_answers_with_smollm2_by_default_and_ctrl_c_stops_the_model_server() {
    let venv = testkit::installed::model_venv();
    let closed = free_port().to_string();
    let llm_port = free_port().to_string();
    let run = Quickstart::start(
        &closed,
        &[],
        &[
            ("OBB_LLM_VENV", venv.as_os_str()),
            ("OBB_LLM_PORT", OsStr::new(&llm_port)),
        ],
    );
    let out = &run.output;
    assert!(
        out.contains(&format!(
            "==> the node serves `smollm2`, an alias of `SmolLM2-135M-Instruct` on llama.cpp's server at 127.0.0.1:{llm_port}"
        )),
        "{out}"
    );
    assert!(
        run.node_config()
            .contains("aliases = { smollm2 = \"SmolLM2-135M-Instruct\" }"),
        "{}",
        run.node_config()
    );
    // A real completion from the model, named by llama.cpp's id for it.
    let answer = run.answer();
    assert_eq!(answer["object"], "chat.completion", "{out}");
    assert_eq!(answer["model"], "SmolLM2-135M-Instruct", "{out}");
    let content = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(
        !content.trim().is_empty() && !content.starts_with("echo:"),
        "{out}"
    );
    assert!(
        answer["usage"]["completion_tokens"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{out}"
    );
    // Which model answered, how fast, and what to use instead.
    let answered = out
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "==> answered by `smollm2` (SmolLM2-135M-Instruct on llama.cpp's server) in ",
            )
        })
        .unwrap_or_default();
    let seconds: f64 = answered.trim_end_matches(" s").parse().unwrap_or(-1.0);
    assert!((0.0..=60.0).contains(&seconds), "{out}");
    for other in [
        "Ollama:",
        "llama.cpp:",
        "vLLM:",
        "hosted API:  [llm] model = \"openai/gpt-4o-mini\"",
    ] {
        assert!(out.contains(other), "{other} in {out}");
    }
    // The printed snippets use the alias, and the printed curl gets another completion.
    assert!(out.contains(r#"-d '{"model":"smollm2","#), "{out}");
    assert!(out.contains(r#"create(model="smollm2""#), "{out}");
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/v1/chat/completions?wait=60", run.port))
        .bearer_auth(run.key("user:"))
        .json(&serde_json::json!({"model": "smollm2", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let second: Value = response.json().await.unwrap();
    assert_eq!(second["model"], "SmolLM2-135M-Instruct");

    let port = run.port;
    assert!(run.stop(), "Ctrl-C stops it cleanly");
    assert!(
        !answers(format!("http://127.0.0.1:{llm_port}/health")).await,
        "llama.cpp's server stopped with the script"
    );
    assert!(
        !answers(format!("http://127.0.0.1:{port}/healthz")).await,
        "the gateway stopped with the script"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quickstart_without_the_build_tools_prints_the_commands_and_stops_before_building() {
    // A machine with bash and coreutils only, on which apt cannot be used: no cargo, no
    // cmake, no C compiler, no curl, no apt-get, no sudo.
    let bin = tempfile::tempdir().unwrap();
    for tool in ["dirname", "cat", "id", "mkdir"] {
        let found = testkit::installed::program(tool, tool);
        std::os::unix::fs::symlink(found, bin.path().join(tool)).unwrap();
    }
    let home = tempfile::tempdir().unwrap();
    let child = Command::new(testkit::installed::program("bash", "bash"))
        .arg(script())
        .env_clear()
        .env("PATH", bin.path())
        .env("HOME", home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = run_to_end(child, Duration::from_secs(30)).await;
    let status = output.status;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("cargo is missing")
            && stderr.contains("curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh"),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("sudo apt-get update && sudo apt-get install -y cmake build-essential curl"),
        "{stderr}"
    );
    assert!(
        !stdout.contains("building"),
        "it stops before the build: {stdout}"
    );
    assert!(
        !home.path().join(".local").exists(),
        "and before it writes anything"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quickstart_on_a_taken_port_says_so_and_stops_instead_of_serving_nothing() {
    // Something else (say, vLLM) already listens on the gateway's port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let home = tempfile::tempdir().unwrap();
    let bin_dir: PathBuf = gateway_bin().parent().unwrap().to_owned();
    let child = Command::new("bash")
        .arg(script())
        .arg("--echo")
        .env("OBB_BIN_DIR", bin_dir)
        .env("OBB_PORT", port.to_string())
        .env("OBB_DEMO_LLM_PORTS", free_port().to_string())
        .env("XDG_DATA_HOME", home.path().join("data"))
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = run_to_end(child, Duration::from_secs(60)).await;
    let status = output.status;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the gateway did not start on 127.0.0.1:{port} (is the port taken?"
        )),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains("==> serving on"));
    drop(taken);
}
