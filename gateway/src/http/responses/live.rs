//! A response's live event stream, around the item events its node relays: the opening and
//! closing events carry our response (`present`), never the upstream's, and how the stream
//! ends follows the chat relay's rule (`sse::Stream::chat`). Numbers are `sequence_number`s:
//! relayed chunk `k` is event `k + OPENING`. It decides what to write; `sse` writes it.

use super::events::{self, OPENING};
use super::object::{Request as Stored, present};
use crate::queue::JobRecord;
use openbeepboop::{ErrorBody, JobStatus};

/// Where a live stream's relay stands when its job ended, or its wait did.
pub struct Relayed {
    /// The relayed chunks before the next one: item events sent, or held for this client.
    pub next: u64,
    /// The client has item events: from this connection, or an earlier one it resumes.
    pub sent_any: bool,
    /// Item events were sent on this connection.
    pub sent_here: bool,
    /// The relay reached its end and this client has every chunk.
    pub finished: bool,
    /// The client fell behind what the relay holds, after it had item events.
    pub behind: bool,
}

/// The last relayed chunk a client has that has event `after`.
pub fn relay_after(after: Option<u64>) -> Option<u64> {
    after.and_then(|after| after.checked_sub(OPENING))
}

/// A live Responses stream: the request its response echoes, and where its client resumed.
pub struct Live {
    request: Stored,
    /// The last event the client has, when it resumes.
    after: Option<u64>,
}

impl Live {
    /// For the response whose request body is `payload`, resumed after event `after`.
    pub fn new(payload: &str, after: Option<u64>) -> Self {
        Self {
            request: serde_json::from_str(payload).unwrap_or_default(),
            after,
        }
    }

    /// `response.created` and `response.in_progress`, unless the client has them.
    pub fn opening(&self, record: &JobRecord) -> String {
        events::opening(&present(record, &self.request), self.after)
    }

    /// How the stream of `record` (`None`: unreadable) ends. Relayed item events are
    /// followed by the closing event of the stored response (`response.failed` when the run
    /// failed, with the failure rule's `stream_interrupted`); with nothing relayed, the
    /// stored response's items are replayed after the opening. What cannot end so ends with
    /// an `error` event: `unfinished`, why the job has not ended; a relay that broke off or
    /// is no longer held.
    pub fn end(
        &self,
        id: &str,
        record: Option<&JobRecord>,
        relay: &Relayed,
        unfinished: impl FnOnce(&JobRecord) -> ErrorBody,
    ) -> String {
        let error = |error: ErrorBody| events::error(&error, relay.next + OPENING);
        let Some(record) = record else {
            return error(ErrorBody::new(
                format!("response `{id}` could not be read; poll `GET /v1/responses/{id}`"),
                "server_error",
            ));
        };
        let unavailable = || {
            ErrorBody::new(
                format!(
                    "events from {next} of response `{id}` are no longer held; `GET /v1/responses/{id}` has the whole response",
                    next = relay.next + OPENING,
                ),
                "invalid_request_error",
            )
            .with_code("stream_resume_unavailable")
        };
        if relay.behind {
            return error(unavailable());
        }
        if !record.status.is_final() {
            return error(unfinished(record));
        }
        if !relay.sent_any {
            // Events up to the opening's went out on this connection.
            let after = self.after.unwrap_or(0).max(OPENING - 1);
            return events::replay(&present(record, &self.request), Some(after));
        }
        match (record.status, relay.finished) {
            (JobStatus::Completed, false) if !relay.sent_here => error(unavailable()),
            (JobStatus::Completed, false) => error(
                ErrorBody::new(
                    format!(
                        "the stream of response `{id}` broke off after event {last}; `GET /v1/responses/{id}` has the whole response",
                        last = relay.next + OPENING - 1,
                    ),
                    "server_error",
                )
                .with_code("stream_interrupted"),
            ),
            _ => events::closing(&present(record, &self.request), relay.next + OPENING),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::responses::object::tests::record;
    use serde_json::{Value, json};

    /// The one event of an ending: its name and data.
    fn event(ending: &str) -> (String, Value) {
        let mut lines = ending.lines();
        let _id = lines.next().unwrap();
        let name = lines
            .next()
            .unwrap()
            .trim_start_matches("event: ")
            .to_owned();
        let data = lines.next().unwrap().trim_start_matches("data: ");
        (name, serde_json::from_str(data).unwrap())
    }

    fn relayed(next: u64, sent_here: bool, finished: bool) -> Relayed {
        Relayed {
            next,
            sent_any: sent_here,
            sent_here,
            finished,
            behind: false,
        }
    }

    #[test]
    fn a_stream_that_broke_off_or_is_no_longer_held_ends_with_an_error_event_numbered_next() {
        let live = Live::new("{}", None);
        let done = record(JobStatus::Completed, Some(json!({"output": []})));
        let never = |_: &JobRecord| ErrorBody::new("not yet", "timeout_error");
        let (name, data) = event(&live.end("resp_1", Some(&done), &relayed(3, true, true), never));
        assert_eq!(
            (name.as_str(), &data["sequence_number"]),
            ("response.completed", &json!(5))
        );

        let (name, data) = event(&live.end("resp_1", Some(&done), &relayed(3, true, false), never));
        assert_eq!(name, "error");
        assert_eq!(
            (&data["code"], &data["sequence_number"]),
            (&json!("stream_interrupted"), &json!(5))
        );

        let resumed = Live::new("{}", Some(4));
        let gone = Relayed {
            sent_any: true,
            ..relayed(0, false, false)
        };
        let (_, data) = event(&resumed.end("resp_1", Some(&done), &gone, never));
        assert_eq!(data["code"], "stream_resume_unavailable");

        let running = record(JobStatus::Processing, None);
        let (_, data) = event(&live.end("resp_1", Some(&running), &relayed(1, true, false), never));
        assert_eq!(
            (&data["message"], &data["param"]),
            (&json!("not yet"), &Value::Null)
        );
    }
}
