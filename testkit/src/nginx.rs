//! A real nginx for tests: Debian's `/usr/sbin/nginx` serving the `http`-context config a
//! test gives it, as the current user, in the foreground and as one process, with its pid,
//! logs and temp files in a temp dir, on a free loopback port. It knows nothing of the
//! gateway; it is stopped on drop.
//!
//! ```no_run
//! # async fn demo() {
//! let nginx = testkit::Nginx::start(|port| {
//!     format!("server {{ listen 127.0.0.1:{port}; location / {{ return 204; }} }}")
//! })
//! .await;
//! let _url = nginx.url("/"); // http(s)://127.0.0.1:<port>/, as the config says
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running nginx. `port` is where the config was told to listen.
pub struct Nginx {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl Nginx {
    /// Debian's nginx (`/usr/sbin` is not on a user's `PATH`), else the first `nginx` on
    /// `PATH`. A missing nginx fails the test: `./test.sh` installs it.
    pub fn binary() -> PathBuf {
        let debian = PathBuf::from("/usr/sbin/nginx");
        if debian.exists() {
            return debian;
        }
        crate::installed::program("nginx", "nginx (Debian's `nginx`)")
    }

    /// Starts nginx with the `http`-context text `http(port)` returns (`upstream` and
    /// `server` blocks that listen on `127.0.0.1:<port>`), retrying on another port when
    /// the one picked was taken meanwhile. Returns once the port accepts connections.
    pub async fn start(http: impl Fn(u16) -> String) -> Self {
        let mut last_error = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = crate::free_port();
            let config = dir.path().join("nginx.conf");
            std::fs::write(&config, wrapper(dir.path(), &http(port))).expect("nginx.conf");
            let error_log = dir.path().join("error.log");
            let child = Command::new(Self::binary())
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(&error_log)
                .arg("-c")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nginx starts");
            let mut nginx = Self {
                dir,
                port,
                child: Some(child),
            };
            if nginx.ready(Duration::from_secs(20)).await {
                return nginx;
            }
            nginx.stop();
            last_error = nginx.error_log();
            if !last_error.contains("Address already in use") {
                break;
            }
        }
        panic!("nginx did not start; its error log:\n{last_error}");
    }

    /// `https://127.0.0.1:<port><path>`: the tests' nginx terminates TLS.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the port accepts connections within `within`; false as soon as nginx exits.
    async fn ready(&mut self, within: Duration) -> bool {
        match self.child.as_mut() {
            Some(child) => crate::listening(child, self.port, within).await,
            None => false,
        }
    }

    /// Stops nginx: SIGTERM is its fast shutdown; SIGKILL when it lingers.
    fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::stop_child(child, "-TERM", Duration::from_secs(10));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The whole `nginx.conf`: one foreground process (`master_process off`, so stopping its
/// pid stops everything) with every file it writes inside `dir`, so it runs as any user.
fn wrapper(dir: &Path, http: &str) -> String {
    let d = dir.display();
    format!(
        "daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;

events {{
    worker_connections 256;
}}

http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;

{http}
}}
"
    )
}
