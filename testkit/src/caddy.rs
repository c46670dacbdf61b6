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

use crate::daemon::Daemon;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A running Caddy. `port` is where the site block was told to listen.
pub struct Caddy(Daemon);

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
        Self(
            Daemon::start(
                "caddy",
                "caddy.log",
                "address already in use",
                |dir, port| {
                    let config = dir.join("Caddyfile");
                    std::fs::write(&config, format!("{GLOBAL}\n{}", site(port)))
                        .expect("Caddyfile");
                    let log = std::fs::File::create(dir.join("caddy.log")).expect("log file");
                    Command::new(&binary)
                        .arg("run")
                        .arg("--config")
                        .arg(&config)
                        .arg("--adapter")
                        .arg("caddyfile")
                        .env("HOME", dir)
                        .env("XDG_DATA_HOME", dir.join("data"))
                        .env("XDG_CONFIG_HOME", dir.join("config"))
                        .current_dir(dir)
                        .stdin(Stdio::null())
                        .stdout(log.try_clone().expect("log file"))
                        .stderr(log)
                        .spawn()
                        .expect("caddy starts")
                },
            )
            .await,
        )
    }

    /// `https://127.0.0.1:<port><path>`: the tests' Caddy terminates TLS.
    pub fn url(&self, path: &str) -> String {
        self.0.url(path)
    }

    /// What Caddy wrote to stdout and stderr (its JSON log lines).
    pub fn log(&self) -> String {
        self.0.log()
    }

    pub fn pid(&self) -> Option<u32> {
        self.0.pid()
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
