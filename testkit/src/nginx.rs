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

use crate::daemon::Daemon;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A running nginx. `port` is where the config was told to listen.
pub struct Nginx(Daemon);

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
        let binary = Self::binary();
        Self(
            Daemon::start(
                "nginx",
                "error.log",
                "Address already in use",
                |dir, port| {
                    let config = dir.join("nginx.conf");
                    std::fs::write(&config, wrapper(dir, &http(port))).expect("nginx.conf");
                    Command::new(&binary)
                        .arg("-p")
                        .arg(dir)
                        .arg("-e")
                        .arg(dir.join("error.log"))
                        .arg("-c")
                        .arg(&config)
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("nginx starts")
                },
            )
            .await,
        )
    }

    /// `https://127.0.0.1:<port><path>`: the tests' nginx terminates TLS.
    pub fn url(&self, path: &str) -> String {
        self.0.url(path)
    }

    pub fn error_log(&self) -> String {
        self.0.log()
    }

    pub fn pid(&self) -> Option<u32> {
        self.0.pid()
    }

    /// The temp dir nginx writes its logs and temp files in.
    pub fn dir(&self) -> &Path {
        self.0.dir.path()
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
