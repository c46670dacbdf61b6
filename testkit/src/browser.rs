//! A real browser for tests: headless Debian Chromium opening one page, and `PageServer`,
//! a tiny HTTP server that serves a test's pages from a loopback origin and collects what
//! they report. Chromium runs in a process group of its own with a fresh profile, and the
//! whole group is killed on drop; nothing here drives the browser beyond its command line.
//!
//! A page does its work in its own JavaScript and `POST`s a JSON report to `/report` on
//! its origin; the test waits for that report. This needs no driver (no CDP client, no
//! Playwright, no npm), so the only moving parts are the browser and the page.

use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// A headless Chromium showing one URL.
pub struct Chromium {
    profile: tempfile::TempDir,
    child: Option<Child>,
}

impl Chromium {
    /// Debian's `chromium`. A missing browser fails the test: `./test.sh` installs it.
    pub fn binary() -> PathBuf {
        crate::installed::file("/usr/bin/chromium", "chromium (Debian's `chromium`)")
    }

    /// Starts a headless Chromium with a fresh profile that opens `url`. Its output goes to
    /// `chromium.log` in the profile's directory (see `log`).
    pub fn open(url: &str) -> Self {
        let profile = tempfile::tempdir().expect("temp dir");
        let data = profile.path().join("profile");
        let log = std::fs::File::create(profile.path().join("chromium.log")).expect("log file");
        let child = Command::new(Self::binary())
            .args([
                "--headless",
                // Root in a container has no user namespaces for the sandbox.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                // Containers often give /dev/shm only 64 MiB.
                "--disable-dev-shm-usage",
                // The page's console messages and errors, for the failure message.
                "--enable-logging=stderr",
            ])
            .arg(format!("--user-data-dir={}", data.display()))
            .arg(url)
            .env("HOME", profile.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            // Its own process group, so that dropping it ends every process it started.
            .process_group(0)
            .spawn()
            .expect("chromium starts");
        Self {
            profile,
            child: Some(child),
        }
    }

    /// The browser's process id, which is also its process group's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the browser wrote: its errors and the page's console.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("chromium.log")).unwrap_or_default()
    }

    /// Stops the browser and every process of its group, and waits until none is left.
    /// SIGTERM first, so the browser ends its helpers and reaps them itself; then SIGKILL
    /// for whatever of the group is left.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = child.id();
        let _ = Command::new("kill")
            .args(["-TERM", &group.to_string()])
            .status();
        crate::exited(&mut child, Duration::from_secs(5));
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{group}")])
            .status();
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !group_members(group).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The live (not zombie) processes of process group `group`, from `/proc`.
pub fn group_members(group: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // `pid (comm) state ppid pgrp …`: comm may hold spaces, so read after its `)`.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            fields.first() != Some(&"Z") && fields.get(2) == Some(&group.to_string().as_str())
        })
        .collect()
}

/// Serves fixed pages on `127.0.0.1:<port>` (one origin) and collects the JSON bodies
/// `POST`ed to `/report`. Each connection carries one request (`Connection: close`).
pub struct PageServer {
    pub port: u16,
    reports: mpsc::UnboundedReceiver<Value>,
    accept: tokio::task::JoinHandle<()>,
}

impl PageServer {
    /// Serves each `(path, html)` at its path (any query string is ignored).
    pub async fn start(pages: Vec<(String, String)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let port = listener.local_addr().expect("an address").port();
        let (tx, reports) = mpsc::unbounded_channel();
        // Owned by the server and aborted on drop; the connection tasks live in its
        // `JoinSet`, so they end with it.
        let accept = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(serve(stream, pages.clone(), tx.clone()));
                while connections.try_join_next().is_some() {}
            }
        });
        Self {
            port,
            reports,
            accept,
        }
    }

    /// `http://127.0.0.1:<port>`, the pages' origin.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next report, or `None` when none came within `within`.
    pub async fn report(&mut self, within: Duration) -> Option<Value> {
        tokio::time::timeout(within, self.reports.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve(
    stream: TcpStream,
    pages: Vec<(String, String)>,
    reports: mpsc::UnboundedSender<Value>,
) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).await.is_err() {
        return;
    }
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) if line.trim().is_empty() => break,
            Ok(_) => {
                if let Some((name, value)) = line.split_once(':')
                    && name.trim().eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
    }
    let mut words = request_line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = if method == "POST" && path == "/report" {
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let report = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        let _ = reports.send(report);
        ("204 No Content", "text/plain", String::new())
    } else if let Some((_, html)) = pages.iter().find(|(p, _)| method == "GET" && p == path) {
        ("200 OK", "text/html; charset=utf-8", html.clone())
    } else {
        ("404 Not Found", "text/plain", "not found".to_owned())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let mut stream = reader.into_inner();
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}
