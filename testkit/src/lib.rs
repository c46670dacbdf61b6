//! Test support: starts the real `obb-gateway` binary on a free loopback port with a temp
//! database, finds the workspace's binaries, and offers the calls the tests share.
//! Each test gets its own gateway. `tls` makes a private CA and certificates for HTTPS tests,
//! `nginx` and `caddy` run a real nginx or Caddy in front of a gateway, and `browser` a
//! headless Chromium; `installed` finds what `./test.sh` installs for them; `mock` is the
//! mock OpenAI upstream.
#![expect(
    clippy::expect_used,
    clippy::panic,
    reason = "test support fails loudly"
)]

pub mod browser;
pub mod caddy;
pub mod daemon;
pub mod installed;
pub mod mock;
pub mod nginx;
pub mod postgres;
pub mod tls;

pub use browser::{Chromium, PageServer};
pub use caddy::Caddy;
pub use mock::MockUpstream;
pub use nginx::Nginx;
pub use tls::{TestCa, WRONG_HOST};

use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A binary of this workspace: next to the running program (a tool in `target/<profile>/`)
/// or one level up (a test in `target/<profile>/deps/`). `cargo test --workspace` builds
/// them all before any test runs.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the program's own path");
    let here = exe.parent().expect("a directory").to_owned();
    let dir = if here.join(name).exists() {
        here
    } else {
        here.parent().expect("target/<profile>/deps").to_owned()
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "`{}` is missing: run the tests with `cargo test --workspace`, which builds every binary",
        path.display()
    );
    path
}

pub fn gateway_bin() -> PathBuf {
    workspace_bin("obb-gateway")
}

pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub base: String,
    pub admin: String,
    pub http: Client,
    env: Vec<(String, String)>,
    child: Option<Child>,
    port: u16,
    db: PathBuf,
    scheme: &'static str,
}

/// Waits for `check` to return `Some`, retrying until `within` runs out.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn cli(db: &Path, args: &[&str]) -> std::process::Output {
    Command::new(gateway_bin())
        .args(args)
        .arg("--db")
        .arg(db)
        .env("OBB_LOG", "warn")
        .output()
        .expect("obb-gateway runs")
}

impl Gateway {
    /// A gateway with fast timings for tests, plus the given `OBB_*` settings.
    pub async fn start(settings: &[(&str, &str)]) -> Self {
        Self::start_at(None, settings).await
    }

    /// A gateway serving HTTPS natively (`tls_cert`, `tls_key`) with a certificate of `ca`
    /// for 127.0.0.1; `http` trusts `ca`, and `base` is `https://…`.
    pub async fn start_tls(ca: &TestCa, settings: &[(&str, &str)]) -> Self {
        let (cert, key) = ca.issue(&["127.0.0.1", "localhost"]);
        let root = reqwest::Certificate::from_pem(
            &std::fs::read(ca.cert_path()).expect("the CA certificate"),
        )
        .expect("a PEM certificate");
        let http = Client::builder()
            .timeout(Duration::from_secs(30))
            .add_root_certificate(root)
            .build()
            .expect("client");
        Self::launch_tls((&cert, &key), settings, http).await
    }

    /// A gateway serving HTTPS with the PEM certificate `cert` and its key, whatever they
    /// are worth (expired, or for another host), for tests of what a client makes of them.
    /// `http` accepts any certificate, so that the test can still make keys.
    pub async fn start_tls_with(cert: &Path, key: &Path, settings: &[(&str, &str)]) -> Self {
        let http = Client::builder()
            .timeout(Duration::from_secs(30))
            .danger_accept_invalid_certs(true)
            .build()
            .expect("client");
        Self::launch_tls((cert, key), settings, http).await
    }

    async fn launch_tls(
        (cert, key): (&Path, &Path),
        settings: &[(&str, &str)],
        http: Client,
    ) -> Self {
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let mut all: Vec<(&str, &str)> = vec![("OBB_TLS_CERT", &cert), ("OBB_TLS_KEY", &key)];
        all.extend_from_slice(settings);
        Self::launch(None, &all, http, "https").await
    }

    /// Like `start`, with the database at `db` instead of a fresh temp dir.
    pub async fn start_at(db: Option<PathBuf>, settings: &[(&str, &str)]) -> Self {
        let http = Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Self::launch(db, settings, http, "http").await
    }

    async fn launch(
        db: Option<PathBuf>,
        settings: &[(&str, &str)],
        http: Client,
        scheme: &'static str,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = db.unwrap_or_else(|| {
            if postgres::engine_is_postgres() {
                PathBuf::from(postgres::shared().fresh_database())
            } else {
                dir.path().join("queue.db")
            }
        });
        // A PostgreSQL store keeps uploads in `files_dir`: this gateway's own, unless given.
        let mut engine: Vec<(&str, String)> = Vec::new();
        if db.to_string_lossy().starts_with("postgres://")
            && !settings.iter().any(|(name, _)| *name == "OBB_FILES_DIR")
        {
            let files = dir.path().join("files").display().to_string();
            engine.push(("OBB_FILES_DIR", files));
        }
        let setup = cli(&db, &["setup", "--yes"]);
        assert!(setup.status.success(), "setup: {setup:?}");
        let admin = String::from_utf8(setup.stdout)
            .expect("utf-8")
            .trim()
            .to_owned();
        let mut env: Vec<(String, String)> = [
            ("OBB_REAPER_INTERVAL_MS", "50"),
            ("OBB_GRACE_PERIOD_SECONDS", "0"),
            ("OBB_SHUTDOWN_TIMEOUT_SECONDS", "1"),
            ("OBB_RETRY_BACKOFF_BASE_MS", "50"),
        ]
        .iter()
        .chain(settings)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .chain(engine.iter().map(|(k, v)| ((*k).to_owned(), v.clone())))
        .collect();
        env.push(("OBB_LOG".to_owned(), "warn".to_owned()));
        let mut gateway = Self {
            dir,
            base: String::new(),
            admin,
            http,
            env,
            child: None,
            port: 0,
            db,
            scheme,
        };
        gateway.spawn().await;
        gateway
    }

    /// The gateway process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The store: a SQLite file, or a PostgreSQL URL (`OBB_TEST_ENGINE=postgres`).
    pub fn db(&self) -> PathBuf {
        self.db.clone()
    }

    /// Whether the store is a PostgreSQL database.
    pub fn on_postgres(&self) -> bool {
        self.db.to_string_lossy().starts_with("postgres://")
    }

    /// Where the gateway keeps uploaded files: `files/` beside a SQLite store, the
    /// configured `files_dir` of a PostgreSQL one.
    pub fn files_dir(&self) -> PathBuf {
        match self.env.iter().find(|(name, _)| name == "OBB_FILES_DIR") {
            Some((_, dir)) => PathBuf::from(dir),
            None => self.db.parent().expect("a data dir").join("files"),
        }
    }

    /// A gateway on a database of its own on the test PostgreSQL server, whatever
    /// `OBB_TEST_ENGINE` says: for what only several gateways can show.
    pub async fn start_postgres(settings: &[(&str, &str)]) -> Self {
        let url = postgres::shared().fresh_database();
        Self::start_at(Some(PathBuf::from(url)), settings).await
    }

    /// Another gateway on this one's PostgreSQL database and files directory, as an
    /// operator runs several behind a load balancer; it shares the admin key.
    pub async fn alongside(&self, settings: &[(&str, &str)]) -> Self {
        let files = self.files_dir().display().to_string();
        let mut all: Vec<(&str, &str)> = vec![("OBB_FILES_DIR", &files)];
        all.extend_from_slice(settings);
        let mut other = Self::start_at(Some(self.db.clone()), &all).await;
        other.admin.clone_from(&self.admin);
        other
    }

    /// The rows of `sql` run on the store directly (while the gateway runs or not), each
    /// column as text, `None` for NULL.
    pub fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        if self.on_postgres() {
            return postgres::shared().query(&self.db.to_string_lossy(), sql);
        }
        let conn = rusqlite::Connection::open(&self.db).expect("the database opens");
        conn.busy_timeout(Duration::from_secs(10))
            .expect("a busy timeout");
        let mut statement = conn.prepare(sql).expect("the query prepares");
        let width = statement.column_count();
        statement
            .query_map([], |row| {
                (0..width)
                    .map(|i| {
                        use rusqlite::types::ValueRef;
                        Ok(match row.get_ref(i)? {
                            ValueRef::Null => None,
                            ValueRef::Integer(v) => Some(v.to_string()),
                            ValueRef::Real(v) => Some(v.to_string()),
                            ValueRef::Text(v) | ValueRef::Blob(v) => {
                                Some(String::from_utf8_lossy(v).into_owned())
                            }
                        })
                    })
                    .collect()
            })
            .expect("the query runs")
            .map(|row| row.expect("a row"))
            .collect()
    }

    /// Starts the process, retrying on another port if the reserved one was taken.
    pub async fn spawn(&mut self) {
        for _ in 0..5 {
            if self.port == 0 {
                self.port = free_port();
            }
            let child = Command::new(gateway_bin())
                .args(["start", "--host", "127.0.0.1", "--port"])
                .arg(self.port.to_string())
                .arg("--db")
                .arg(self.db())
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .spawn()
                .expect("gateway starts");
            self.child = Some(child);
            self.base = format!("{}://127.0.0.1:{}", self.scheme, self.port);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                // The health check alone could be answered by another test's gateway
                // that holds the port while this one fails to bind it.
                if let Ok(r) = self.http.get(self.url("/healthz")).send().await
                    && r.status() == StatusCode::OK
                    && self.pid().is_some_and(|pid| listens(pid, self.port))
                {
                    return;
                }
                if let Some(child) = self.child.as_mut()
                    && child.try_wait().ok().flatten().is_some()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            self.stop_with("-KILL");
            self.port = 0;
        }
        panic!("the gateway did not start");
    }

    /// Sends `signal` (`-STOP`, `-CONT`, …) to the running process without waiting: a
    /// stopped gateway keeps its connections open and answers nothing.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args([signal, &pid.to_string()])
                .status();
        }
    }

    /// Sends a signal and waits for the process to exit; returns its exit status.
    pub fn stop_with(&mut self, signal: &str) -> Option<std::process::ExitStatus> {
        stop_child(self.child.take()?, signal, Duration::from_secs(15))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The sum of the samples of metric `name` on `/metrics` whose labels contain `label`
    /// (`""` for all); 0 when the gateway does not answer.
    pub async fn metric(&self, name: &str, label: &str) -> f64 {
        let Ok(response) = self.http.get(self.url("/metrics")).send().await else {
            return 0.0;
        };
        response
            .text()
            .await
            .unwrap_or_default()
            .lines()
            .filter(|line| line.starts_with(name) && line.contains(label))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub async fn key(&self, role: &str) -> String {
        let created: Value = self
            .http
            .post(self.url("/admin/keys"))
            .bearer_auth(&self.admin)
            .json(&json!({"name": format!("{role}-key"), "role": role}))
            .send()
            .await
            .expect("create key")
            .json()
            .await
            .expect("key json");
        created["key"].as_str().expect("key text").to_owned()
    }

    pub async fn submit(&self, key: &str, body: &Value) -> Response {
        self.submit_with(key, body, None, &[]).await
    }

    /// `POST /v1/chat/completions` as `key`, with `?wait=<seconds>` when `wait` is given,
    /// and `headers` (`Prefer`, `Idempotency-Key`, `X-OBB-TTL`, …).
    pub async fn submit_with(
        &self,
        key: &str,
        body: &Value,
        wait: Option<u64>,
        headers: &[(&str, &str)],
    ) -> Response {
        let path = match wait {
            Some(seconds) => format!("/v1/chat/completions?wait={seconds}"),
            None => "/v1/chat/completions".to_owned(),
        };
        let mut request = self.http.post(self.url(&path)).bearer_auth(key).json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("submit")
    }

    pub async fn submit_id(&self, key: &str, model: &str) -> String {
        let response = self.submit(key, &chat(model, "hello")).await;
        assert_eq!(response.status(), 202);
        let job: Value = response.json().await.expect("job json");
        job["id"].as_str().expect("id").to_owned()
    }

    pub async fn get_json(&self, key: &str, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("get");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_json(&self, key: &str, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("post");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Leases jobs as node `node_id` would.
    pub async fn fetch(
        &self,
        node_key: &str,
        node_id: &str,
        models: &[&str],
        limit: u32,
        wait: f64,
    ) -> Vec<Value> {
        let (status, body) = self
            .post_json(
                node_key,
                "/internal/queue/fetch",
                &json!({"node_id": node_id, "models": models, "limit": limit, "wait": wait}),
            )
            .await;
        assert_eq!(status, 200, "fetch: {body}");
        body["jobs"].as_array().cloned().unwrap_or_default()
    }

    pub async fn complete(&self, node_key: &str, job: &Value, content: &str) -> String {
        self.report(
            node_key,
            &json!([{
                "id": job["id"], "lease_id": job["lease_id"], "status": "COMPLETED",
                "result": completion(content),
            }]),
        )
        .await
    }

    /// Submits node results and returns the first outcome.
    pub async fn report(&self, node_key: &str, results: &Value) -> String {
        let (status, body) = self
            .post_json(node_key, "/internal/queue/submit", results)
            .await;
        assert_eq!(status, 200, "submit: {body}");
        body["results"][0]["outcome"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Plays a node in the background: leases the next job of `endpoints` (waiting up to
    /// 20 s for one), then reports it with the fields `outcome(job)` gives (`status`,
    /// `result` or `error`, …; its `id` and `lease_id` are added). Returns the leased job.
    pub fn answer_next(
        &self,
        node_key: &str,
        endpoints: Value,
        outcome: impl FnOnce(&Value) -> Value + Send + 'static,
    ) -> tokio::task::JoinHandle<Value> {
        let (http, base, node) = (self.http.clone(), self.base.clone(), node_key.to_owned());
        tokio::spawn(async move {
            let fetched: Value = http
                .post(format!("{base}/internal/queue/fetch"))
                .bearer_auth(&node)
                .json(
                    &json!({"node_id": "bg", "models": ["*"], "limit": 1, "wait": 20,
                              "endpoints": endpoints}),
                )
                .send()
                .await
                .expect("fetch")
                .json()
                .await
                .expect("fetch answer");
            let job = fetched["jobs"][0].clone();
            let mut report = outcome(&job);
            report["id"] = job["id"].clone();
            report["lease_id"] = job["lease_id"].clone();
            http.post(format!("{base}/internal/queue/submit"))
                .bearer_auth(&node)
                .json(&json!([report]))
                .send()
                .await
                .expect("submit");
            job
        })
    }

    pub async fn job(&self, key: &str, id: &str) -> Value {
        let (status, body) = self.get_json(key, &format!("/v1/jobs/{id}")).await;
        assert_eq!(status, 200, "job: {body}");
        body
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // A gateway a test froze (SIGSTOP) must run again to hear the SIGINT.
        self.signal("-CONT");
        // SIGINT lets the process exit normally, so coverage data is written.
        self.stop_with("-INT");
    }
}

/// Whether `child` itself listens on `127.0.0.1:port` within `within`; false as soon as
/// `child` exits, so that a server that failed to start is known at once. A connect probe
/// is not enough: while nginx retries a `bind` that failed, the port may belong to another
/// test's server, which would answer the probe and then vanish under this test.
pub async fn listening(child: &mut Child, port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        if listens(child.id(), port) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Whether process `pid` holds a TCP socket in state LISTEN on local port `port` (Linux:
/// the socket inodes of `/proc/net/tcp{,6}` matched against `/proc/<pid>/fd`).
fn listens(pid: u32, port: u16) -> bool {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let local_port = fields.get(1)?.rsplit(':').next()?;
                    let ours = fields.get(3)? == &"0A"
                        && u16::from_str_radix(local_port, 16).ok()? == port;
                    ours.then(|| fields.get(9).map(|inode| format!("socket:[{inode}]")))?
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.filter_map(Result::ok)
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .any(|target| {
                    inodes
                        .iter()
                        .any(|inode| target.as_os_str() == inode.as_str())
                })
        })
        .unwrap_or(false)
}

/// Sends `signal` (`-INT`, `-TERM`, …) to `child` and waits up to `within` for it to exit;
/// kills it after that. Returns its exit status.
pub fn stop_child(
    mut child: Child,
    signal: &str,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    if let Some(status) = exited(&mut child, within) {
        return Some(status);
    }
    let _ = child.kill();
    child.wait().ok()
}

/// Waits up to `within` for `child` to exit; its exit status, or `None` if it still runs.
pub fn exited(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn chat(model: &str, content: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": content}]})
}

pub fn completion(content: &str) -> Value {
    json!({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 1_700_000_000,
        "model": "echo", "system_fingerprint": "fp_test",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    })
}

/// Status, the headers a client relies on, and the body, for one snapshot.
pub async fn observed(response: Response) -> Value {
    let status = response.status().as_u16();
    let mut headers = serde_json::Map::new();
    for name in [
        "content-type",
        "location",
        "retry-after",
        "x-should-retry",
        "allow",
        "vary",
        "access-control-allow-origin",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-expose-headers",
        "access-control-max-age",
    ] {
        if let Some(value) = response.headers().get(name) {
            headers.insert(name.to_owned(), json!(value.to_str().unwrap_or_default()));
        }
    }
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
    json!({"status": status, "headers": headers, "body": body})
}

/// A running `obb-node` process with its own config file and log file.
pub struct NodeProcess {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NodeProcess {
    /// Writes `config` to a fresh `node_config.toml` and starts `obb-node <command>`.
    pub fn start(command: &str, config: &str) -> Self {
        Self::start_with(command, config, &[])
    }

    /// Like `start`, with extra command-line arguments.
    pub fn start_with(command: &str, config: &str, args: &[&str]) -> Self {
        Self::start_in_env(command, config, args, &[])
    }

    /// Like `start_with`, with extra environment variables (`SSL_CERT_FILE`, …).
    pub fn start_in_env(command: &str, config: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("node_config.toml"), config).expect("config written");
        let log = std::fs::File::create(dir.path().join("node.log")).expect("log file");
        let child = Command::new(workspace_bin("obb-node"))
            .arg(command)
            .arg("--config")
            .arg(dir.path().join("node_config.toml"))
            .args(args)
            .env("OBB_LOG", "info")
            // The spool and anything else the node keeps stays in the test's directory.
            .env("XDG_DATA_HOME", dir.path())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("obb-node starts");
        Self {
            dir,
            child: Some(child),
        }
    }

    /// The config of a node named `name` that serves through `upstream` (a `/v1` base URL),
    /// or only the built-in `echo` model when `None`. `extra` is appended to `[node]`.
    pub fn config(
        gateway: &Gateway,
        key: &str,
        name: &str,
        upstream: Option<&str>,
        extra: &str,
    ) -> String {
        let llm = upstream
            .map(|base| format!("[llm]\nbase_url = \"{base}\"\napi_key = \"mock-key\"\n"))
            .unwrap_or_default();
        format!(
            "[server]\nurl = \"{}\"\napi_key = \"{key}\"\n\n{llm}\n[node]\nname = \"{name}\"\nfetch_wait_seconds = 2\nretry_backoff_ms = 20\n{extra}\n",
            gateway.base
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args([signal, &pid.to_string()])
                .status();
        }
    }

    /// Waits for the process to exit on its own, up to `within`.
    pub fn wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let status = exited(self.child.as_mut()?, within)?;
        self.child = None;
        Some(status)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child, "-INT", Duration::from_secs(10));
        }
    }
}
