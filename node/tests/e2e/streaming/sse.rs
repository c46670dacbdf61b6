//! A `text/event-stream` read as it arrives, each event stamped with when it came.

use super::PATIENCE;
use reqwest::Response;
use serde_json::Value;
use std::time::Instant;

/// One server-sent event and when its last byte arrived.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub id: Option<u64>,
    pub name: Option<String>,
    pub data: String,
    pub at: Instant,
}

impl Event {
    /// The event's data as JSON (`Null` for `[DONE]`).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }

    /// The text a chat chunk adds, if it adds any.
    pub fn content(&self) -> Option<String> {
        let chunk = self.json();
        let text = chunk["choices"][0]["delta"]["content"]
            .as_str()
            .or_else(|| chunk["choices"][0]["text"].as_str())?;
        (!text.is_empty()).then(|| text.to_owned())
    }

    pub fn is_done(&self) -> bool {
        self.data == "[DONE]"
    }

    pub fn error_code(&self) -> Option<String> {
        self.json()["error"]["code"].as_str().map(str::to_owned)
    }
}

/// A `text/event-stream` read as it arrives; comments (keep-alives) are counted, not returned.
pub(crate) struct Sse {
    response: Response,
    pending: String,
    pub comments: usize,
}

impl Sse {
    pub fn new(response: Response) -> Self {
        assert_eq!(response.status(), 200, "a stream is answered 200");
        let kind = response.headers()["content-type"].to_str().unwrap_or("");
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        Self {
            response,
            pending: String::new(),
            comments: 0,
        }
    }

    /// The rest of `response`, of which `read` was read already.
    pub fn continuing(response: Response, read: String) -> Self {
        Self {
            response,
            pending: read,
            comments: 0,
        }
    }

    /// The next event, or `None` when the stream ends.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            while let Some(at) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..at + 2).collect();
                let mut event = Event {
                    id: None,
                    name: None,
                    data: String::new(),
                    at: Instant::now(),
                };
                let mut comment = true;
                for line in block.lines() {
                    if let Some(id) = line.strip_prefix("id: ") {
                        event.id = id.parse().ok();
                    } else if let Some(name) = line.strip_prefix("event: ") {
                        event.name = Some(name.to_owned());
                    } else if let Some(data) = line.strip_prefix("data: ") {
                        event.data.push_str(data);
                    } else {
                        continue;
                    }
                    comment = false;
                }
                if comment {
                    self.comments += 1;
                } else {
                    return Some(event);
                }
            }
            let read = tokio::time::timeout(PATIENCE, self.response.chunk()).await;
            match read.expect("an event, a keep-alive or the end within the patience") {
                Ok(Some(bytes)) => self.pending.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(None) => return None,
                Err(e) => panic!("the stream broke: {e}"),
            }
        }
    }

    /// Every event until the stream ends.
    pub async fn rest(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}
