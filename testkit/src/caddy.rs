//! A real Caddy for tests: Debian's `caddy` running the site block a test gives it
//! (`caddy run --adapter caddyfile`), as the current user and as one process, with its home,
//! data and config dirs in a temp dir, on a free loopback port. Global options keep it to
//! that port: no admin endpoint, no automatic HTTPS (no ACME, no port-80 redirects). It knows
//! nothing of the gateway; it is stopped on drop.
//!
//! ```no_run
//! # async fn demo() {
//! let caddy = testkit::Caddy::start(|port| {
//!     format!("https://127.0.0.1:{port} {{\n\ttls cert.pem key.pem\n\trespond 204\n}}\n")
//! })
//! .await;
//! let _url = caddy.url("/"); // https://127.0.0.1:<port>/
//! # }
//! ```

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running Caddy. `port` is where the site block was told to listen.
pub struct Caddy {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl Caddy {
    /// Debian's caddy, else the first `caddy` on `PATH`. A missing caddy fails the test:
    /// `./test.sh` installs it.
    pub fn binary() -> PathBuf {
        let debian = PathBuf::from("/usr/bin/caddy");
        if debian.exists() {
            return debian;
        }
        crate::installed::program("caddy", "caddy (Debian's `caddy`)")
    }

    /// Starts Caddy with the Caddyfile site blocks `site(port)` returns (addressed to
    /// `127.0.0.1:<port>`), retrying on another port when the one picked was taken
    /// meanwhile. Returns once the port accepts connections.
    pub async fn start(site: impl Fn(u16) -> String) -> Self {
        let binary = Self::binary();
        let mut last_log = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = crate::free_port();
            let config = dir.path().join("Caddyfile");
            std::fs::write(&config, format!("{GLOBAL}\n{}", site(port))).expect("Caddyfile");
            let log = std::fs::File::create(dir.path().join("caddy.log")).expect("log file");
            let child = Command::new(&binary)
                .arg("run")
                .arg("--config")
                .arg(&config)
                .arg("--adapter")
                .arg("caddyfile")
                .env("HOME", dir.path())
                .env("XDG_DATA_HOME", dir.path().join("data"))
                .env("XDG_CONFIG_HOME", dir.path().join("config"))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .expect("caddy starts");
            let mut caddy = Self {
                dir,
                port,
                child: Some(child),
            };
            if caddy.ready(Duration::from_secs(20)).await {
                return caddy;
            }
            caddy.stop();
            last_log = caddy.log();
            if !last_log.contains("address already in use") {
                break;
            }
        }
        panic!("caddy did not start; its log:\n{last_log}");
    }

    /// `https://127.0.0.1:<port><path>`: the tests' Caddy terminates TLS.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// What Caddy wrote to stdout and stderr (its JSON log lines).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("caddy.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the port accepts connections within `within`; false as soon as Caddy exits.
    async fn ready(&mut self, within: Duration) -> bool {
        match self.child.as_mut() {
            Some(child) => crate::listening(child, self.port, within).await,
            None => false,
        }
    }

    /// Stops Caddy: SIGTERM shuts it down gracefully; SIGKILL when it lingers.
    fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::stop_child(child, "-TERM", Duration::from_secs(10));
        }
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The global options block: no admin endpoint (tests run side by side, and 2019 is one
/// port), no automatic HTTPS (the test brings the certificate, and port 80 is not ours), and
/// every listener on loopback.
const GLOBAL: &str = "{
\tadmin off
\tauto_https off
\tdefault_bind 127.0.0.1
}
";
