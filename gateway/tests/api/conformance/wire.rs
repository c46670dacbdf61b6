//! The raw-socket client of the conformance suite: it writes hand-made bytes and parses
//! what comes back (status line, headers, a body framed by Content-Length, chunked or the
//! close), every read bounded by a deadline.

use super::{ANSWER, CLOSES};
use crate::harness::Gateway;
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::{Instant, timeout_at};

/// How a response's end was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No content by definition: a 1xx, 204 or 304, or the answer to HEAD.
    Empty,
    Length,
    Chunked,
    /// Read until the server closed: only legitimate towards an HTTP/1.0 client.
    Close,
}

#[derive(Debug)]
pub(super) struct Response {
    pub(super) version: String,
    pub(super) status: u16,
    /// Names lowercased, in arrival order.
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
    pub(super) framing: Framing,
}

impl Response {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the `Connection` header carries the `close` option (RFC 9110 §7.6.1).
    pub(super) fn says_close(&self) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == "connection")
            .flat_map(|(_, v)| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("close"))
    }

    pub(super) fn says_keep_alive(&self) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == "connection")
            .flat_map(|(_, v)| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("keep-alive"))
    }

    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A final response to an HTTP/1.1 request carries its length or is chunked, so that the
    /// connection can carry the next one (RFC 9112 §6.3, §9.3).
    pub(super) fn assert_framed(&self) {
        assert!(
            matches!(
                self.framing,
                Framing::Length | Framing::Chunked | Framing::Empty
            ),
            "response {} is not framed by Content-Length or chunked: {self:?}",
            self.status
        );
    }

    /// Every error body on the wire is an OpenAI error envelope (STYLE.md).
    pub(super) fn assert_openai_error(&self, status: u16) {
        assert_eq!(self.status, status, "{self:?} / {}", self.text());
        let body = self.json();
        assert!(
            body["error"]["message"].is_string() && body["error"]["type"].is_string(),
            "not an OpenAI error envelope: {body}"
        );
    }
}

/// What the next read found.
#[derive(Debug)]
pub(super) enum Next {
    Response(Response),
    /// The server closed the connection (FIN or reset) between responses.
    Closed,
    /// Nothing complete arrived before the deadline.
    TimedOut,
}

impl Next {
    pub(super) fn response(self, what: &str) -> Response {
        match self {
            Next::Response(response) => response,
            other => panic!("expected a response to {what}, got {other:?}"),
        }
    }
}

/// One client connection to the gateway, split so that a large request can be written from
/// another task while the answer is read.
pub(super) struct Conn {
    reader: OwnedReadHalf,
    writer: Option<OwnedWriteHalf>,
    buf: Vec<u8>,
    eof: bool,
}

impl Conn {
    pub(super) async fn open(gateway: &Gateway) -> Self {
        let address = gateway.base.trim_start_matches("http://");
        let stream = TcpStream::connect(address).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (reader, writer) = stream.into_split();
        Self {
            reader,
            writer: Some(writer),
            buf: Vec::new(),
            eof: false,
        }
    }

    fn writer(&mut self) -> &mut OwnedWriteHalf {
        self.writer.as_mut().expect("the write half is still ours")
    }

    pub(super) async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        let deadline = Instant::now() + ANSWER;
        timeout_at(deadline, self.writer().write_all(bytes.as_ref()))
            .await
            .expect("the gateway takes the request within the deadline")
            .expect("write");
    }

    /// Like `send`, but a connection the gateway already closed is not an error.
    pub(super) async fn send_lenient(&mut self, bytes: impl AsRef<[u8]>) -> bool {
        let deadline = Instant::now() + ANSWER;
        matches!(
            timeout_at(deadline, self.writer().write_all(bytes.as_ref())).await,
            Ok(Ok(()))
        )
    }

    /// Writes `bytes` from another task, which ends when they are written or the gateway
    /// stops reading and closes; the write half goes with it.
    pub(super) fn send_in_background(&mut self, bytes: Vec<u8>) -> tokio::task::JoinHandle<()> {
        let mut writer = self.writer.take().expect("the write half is still ours");
        tokio::spawn(async move {
            // A gateway that refuses early closes with the rest unread: the write fails then.
            let _ = writer.write_all(&bytes).await;
        })
    }

    /// Shuts down the write half: the gateway reads end-of-stream after the request.
    pub(super) async fn half_close(&mut self) {
        self.writer().shutdown().await.expect("shutdown(SHUT_WR)");
    }

    /// Reads more bytes; false when the deadline passed first.
    async fn fill(&mut self, deadline: Instant) -> bool {
        let mut chunk = vec![0u8; 64 * 1024];
        match timeout_at(deadline, self.reader.read(&mut chunk)).await {
            Err(_) => false,
            // A reset is how a closed connection often looks after unread input.
            Ok(Ok(0) | Err(_)) => {
                self.eof = true;
                true
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next response (interim ones included), the close, or a timeout. `head` says the
    /// request was HEAD, whose answer has no content whatever its headers say.
    pub(super) async fn next(&mut self, within: Duration, head: bool) -> Next {
        let deadline = Instant::now() + within;
        loop {
            if let Some((response, used)) = parse_response(&self.buf, head, self.eof) {
                self.buf.drain(..used);
                return Next::Response(response);
            }
            if self.eof {
                assert!(
                    self.buf.is_empty(),
                    "the connection closed inside a response: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return Next::Closed;
            }
            if !self.fill(deadline).await {
                return Next::TimedOut;
            }
        }
    }

    /// The next response, which must arrive within `ANSWER`.
    pub(super) async fn response(&mut self) -> Response {
        self.next(ANSWER, false).await.response("the request")
    }

    /// Asserts that the gateway closes the connection without sending anything more.
    pub(super) async fn assert_closed(&mut self, why: &str) {
        match self.next(CLOSES, false).await {
            Next::Closed => {}
            other => panic!("{why}: expected the connection to close, got {other:?}"),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses one response from the front of `buf`: `None` while it is incomplete.
fn parse_response(buf: &[u8], head: bool, eof: bool) -> Option<(Response, usize)> {
    let end = find(buf, b"\r\n\r\n")?;
    let text = std::str::from_utf8(&buf[..end]).expect("the response head is ASCII");
    let mut lines = text.split("\r\n");
    let status_line = lines.next().expect("a status line");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().expect("a version").to_owned();
    assert!(
        version.starts_with("HTTP/1."),
        "status line: {status_line:?}"
    );
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line: {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("header line: {line:?}"));
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    let start = end + 4;
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let response = |body: Vec<u8>, framing| Response {
        version: version.clone(),
        status,
        headers: headers.clone(),
        body,
        framing,
    };
    if head || (100..200).contains(&status) || status == 204 || status == 304 {
        return Some((response(Vec::new(), Framing::Empty), start));
    }
    let chunked = get("transfer-encoding").is_some_and(|te| {
        te.rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
    });
    if chunked {
        let (body, used) = parse_chunked(&buf[start..])?;
        return Some((response(body, Framing::Chunked), start + used));
    }
    if let Some(length) = get("content-length") {
        let length: usize = length.parse().expect("a numeric Content-Length");
        let rest = buf.get(start..start + length)?;
        return Some((response(rest.to_vec(), Framing::Length), start + length));
    }
    eof.then(|| (response(buf[start..].to_vec(), Framing::Close), buf.len()))
}

/// Decodes a chunked body from the front of `buf`: `None` while it is incomplete.
fn parse_chunked(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut pos = 0;
    let mut body = Vec::new();
    loop {
        let line_end = pos + find(&buf[pos..], b"\r\n")?;
        let line = std::str::from_utf8(&buf[pos..line_end]).expect("an ASCII chunk size");
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .unwrap_or_else(|_| panic!("chunk size line: {line:?}"));
        pos = line_end + 2;
        if size == 0 {
            // Trailer fields, then the empty line.
            loop {
                let end = pos + find(&buf[pos..], b"\r\n")?;
                let empty = end == pos;
                pos = end + 2;
                if empty {
                    return Some((body, pos));
                }
            }
        }
        let data = buf.get(pos..pos + size + 2)?;
        assert_eq!(&data[size..], b"\r\n", "a chunk ends with CRLF");
        body.extend_from_slice(&data[..size]);
        pos += size + 2;
    }
}
