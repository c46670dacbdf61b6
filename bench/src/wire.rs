//! A lean HTTP/1.1 load generator: one keep-alive connection per worker, requests written
//! as prepared bytes, responses read only as far as their status and length.
//!
//! The load runs on the same two cores as the gateway, so every microsecond the client
//! spends is taken from the server. A general-purpose client (reqwest) cost about as much
//! per request as the gateway's durable submit; this one costs about what `wrk` does.

use crate::drive::drive;
use crate::stats::Latencies;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A `POST` with a JSON body and a bearer token, as bytes ready to write.
pub fn post(host: &str, path: &str, token: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One keep-alive connection.
struct Connection {
    stream: BufReader<TcpStream>,
    line: String,
    body: Vec<u8>,
}

impl Connection {
    async fn open(address: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
            line: String::new(),
            body: Vec::new(),
        })
    }

    /// Sends `request` and returns the response's status; the body is read and dropped.
    async fn send(&mut self, request: &[u8]) -> std::io::Result<u16> {
        self.stream.get_mut().write_all(request).await?;
        self.line.clear();
        self.stream.read_line(&mut self.line).await?;
        let status = self
            .line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {:?}", self.line)))?;
        let mut length = 0usize;
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().map_err(std::io::Error::other)?;
            }
        }
        self.body.resize(length, 0);
        self.stream.read_exact(&mut self.body).await?;
        Ok(status)
    }
}

/// Sends `total` requests, made by `request`, over `connections` keep-alive connections to
/// `address`; returns the latencies of those answered with `expect`, the wall time, and
/// how many were not.
pub async fn load<F>(
    address: &str,
    total: u64,
    connections: u64,
    expect: u16,
    request: F,
) -> anyhow::Result<(Latencies, Duration, u64)>
where
    F: Fn(u64) -> Vec<u8> + Send + Sync + 'static,
{
    let mut open = Vec::new();
    for _ in 0..connections {
        open.push(Connection::open(address).await?);
    }
    let request = Arc::new(request);
    let failed = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&failed);
    let (latencies, elapsed) = drive(total, open, move |mut connection, i| {
        let (request, failed) = (Arc::clone(&request), Arc::clone(&counted));
        async move {
            match connection.send(&request(i)).await {
                Ok(status) if status == expect => (Some(connection), true),
                Ok(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    (Some(connection), false)
                }
                Err(_) => {
                    // The connection is unusable: this worker stops, the others go on.
                    failed.fetch_add(1, Ordering::Relaxed);
                    (None, false)
                }
            }
        }
    })
    .await;
    Ok((latencies, elapsed, failed.load(Ordering::Relaxed)))
}
