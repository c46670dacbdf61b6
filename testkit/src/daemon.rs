//! A server process for tests (nginx, Caddy): started on a free loopback port, started again
//! on another when that port was taken meanwhile, ready once the port accepts connections,
//! and stopped on drop. It knows nothing of what the server is.

use std::path::Path;
use std::process::Child;
use std::time::Duration;

/// A running server with its temp dir. `port` is where it was told to listen.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    log: &'static str,
}

impl Daemon {
    /// Starts `spawn(dir, port)` up to five times: each time in a fresh temp dir, on a free
    /// port. `what` names the server in the failure; `log` is the file in `dir` it writes
    /// its errors to; a log holding `port_taken` means another port is worth a try.
    pub async fn start(
        what: &str,
        log: &'static str,
        port_taken: &str,
        spawn: impl Fn(&Path, u16) -> Child,
    ) -> Self {
        let mut last_log = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = crate::free_port();
            let mut child = spawn(dir.path(), port);
            let ready = crate::listening(&mut child, port, Duration::from_secs(20)).await;
            let mut daemon = Self {
                dir,
                port,
                child: Some(child),
                log,
            };
            if ready {
                return daemon;
            }
            daemon.stop();
            last_log = daemon.log();
            if !last_log.contains(port_taken) {
                break;
            }
        }
        panic!("{what} did not start; its log:\n{last_log}");
    }

    /// `https://127.0.0.1:<port><path>`: the tests' proxies terminate TLS.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// What the server wrote to its log file.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(self.log)).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM (a graceful or fast shutdown for both servers); SIGKILL when it lingers.
    fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::stop_child(child, "-TERM", Duration::from_secs(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}
