//! A relayed job's run: the upstream's stream read chunk by chunk, each chunk relayed to the
//! gateway ([`RelaySender`]) and assembled ([`openbeepboop::accumulate`]) into the whole
//! completion a non-streamed run would have stored. A Responses job relays only its item
//! events, the upstream's or those translated from chat ([`crate::responses::stream`]). It
//! does not submit; the job task does, once the gateway took the end of the stream.

pub(super) use super::relay::RelaySender;
use super::relay::RelayTo;
use crate::responses::stream::{Filler, Sorted, Translation, response_of, sort};
use crate::upstream::{Completion, ResponsesStream, UpstreamError, UpstreamStream};
use openbeepboop::{
    ChatAccumulator, ChatCompletion, Endpoint, LeasedJob, TextCompletionAccumulator,
};
use serde::Serialize;
use serde_json::value::RawValue;

/// The chunks of a stream, assembled as they come.
enum Assembly {
    Chat(ChatAccumulator),
    Text(TextCompletionAccumulator),
}

impl Assembly {
    fn new(endpoint: Endpoint) -> Self {
        match endpoint {
            Endpoint::Completions => Assembly::Text(TextCompletionAccumulator::new()),
            _ => Assembly::Chat(ChatAccumulator::new()),
        }
    }

    /// Adds a chunk; returns whether it carries only the usage (no choices).
    fn push(&mut self, chunk: &RawValue) -> Result<bool, serde_json::Error> {
        match self {
            Assembly::Chat(total) => {
                let chunk = ChatAccumulator::read_chunk(chunk.get())?;
                total.push(&chunk);
                Ok(chunk.choices.is_empty())
            }
            Assembly::Text(total) => {
                let chunk = serde_json::from_str(chunk.get())?;
                total.push(&chunk);
                Ok(chunk.choices.is_empty())
            }
        }
    }

    fn finish(self) -> Result<Completion, serde_json::Error> {
        match self {
            Assembly::Chat(total) => completion_of(&total.finish()),
            Assembly::Text(total) => completion_of(&total.finish()),
        }
    }
}

fn completion_of(whole: &impl Serialize) -> Result<Completion, serde_json::Error> {
    Completion::parse(serde_json::to_string(whole)?)
}

/// Whether the user's own request asked for the usage chunk. It is always asked of the
/// upstream, but relayed only then: the SDKs' stream iterators read `choices[0]` of every
/// chunk unless told to expect the usage chunk.
pub(super) fn wants_usage(payload: &RawValue) -> bool {
    #[derive(serde::Deserialize)]
    struct Request {
        #[serde(default)]
        stream_options: Option<Options>,
    }
    #[derive(serde::Deserialize)]
    struct Options {
        #[serde(default)]
        include_usage: Option<bool>,
    }
    serde_json::from_str::<Request>(payload.get())
        .ok()
        .and_then(|r| r.stream_options)
        .and_then(|o| o.include_usage)
        .unwrap_or(false)
}

/// Relays `stream` (whose first chunk has come) through `relay` (opened for `job`) and
/// returns the assembled completion, once the gateway took the end of the stream. A failure
/// of the stream now is [`UpstreamError::Interrupted`] ([`UpstreamStream::next`]): what was
/// relayed cannot be taken back.
pub(super) async fn relay(
    mut relay: RelaySender,
    job: &LeasedJob,
    mut stream: UpstreamStream,
) -> Result<Completion, UpstreamError> {
    let usage_relayed = wants_usage(&job.request_payload);
    let mut assembly = Assembly::new(job.endpoint);
    let mut relayed = false;
    let mut read = 0usize;
    loop {
        let chunk = match stream.next().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(error) => return Err(error),
        };
        read += 1;
        let usage_only = assembly.push(&chunk).map_err(|e| {
            let message = format!("the upstream streamed a chunk this node cannot read: {e}");
            if relayed {
                UpstreamError::Interrupted { message }
            } else {
                UpstreamError::Invalid {
                    status: 200,
                    message,
                }
            }
        })?;
        if !usage_only || usage_relayed {
            relay.send(&chunk);
            relayed = true;
        }
    }
    if read == 0 {
        // Nothing was relayed, so the job fails as a whole call with a broken answer would.
        return Err(UpstreamError::Invalid {
            status: 200,
            message: "the upstream's stream ended without a chunk".to_owned(),
        });
    }
    relay.finish().await;
    assembly.finish().map_err(|e| UpstreamError::Invalid {
        status: 200,
        message: format!("the assembled answer is unreadable: {e}"),
    })
}

/// Relays a whole chat completion (the built-in echo's) as the chunks a stream of it has:
/// its message in one chunk, then its finish reason, and the usage when asked.
pub(super) async fn relay_whole(
    to: &RelayTo,
    job: &LeasedJob,
    completion: Completion,
) -> Result<Completion, UpstreamError> {
    let whole: ChatCompletion =
        serde_json::from_str(completion.body.get()).map_err(|e| UpstreamError::Invalid {
            status: 200,
            message: format!("the answer is unreadable: {e}"),
        })?;
    let mut relay = RelaySender::open(to, job);
    for chunk in whole.to_chunks(wants_usage(&job.request_payload)) {
        if let Ok(chunk) = serde_json::value::to_raw_value(&chunk) {
            relay.send(&chunk);
        }
    }
    relay.finish().await;
    Ok(completion)
}

/// Relays a Responses job's item events as they come and returns the `response` to store:
/// the upstream's closing event's, or the translation's of the whole chat answer. The relay
/// opens with the first item event, so a run that fails before one relayed nothing and may
/// be retried.
pub(super) async fn relay_response(
    to: &RelayTo,
    job: &LeasedJob,
    stream: ResponsesStream,
) -> Result<Completion, UpstreamError> {
    let mut relay = Items {
        to,
        job,
        sender: None,
    };
    let completion = match stream {
        ResponsesStream::Native(stream) => native(&mut relay, stream).await,
        ResponsesStream::Translated { stream, request } => {
            translated(&mut relay, stream, Translation::new(request)).await
        }
    }?;
    if let Some(sender) = relay.sender {
        sender.finish().await;
    }
    Ok(completion)
}

/// A Responses job's relay, opened with its first item event.
struct Items<'a> {
    to: &'a RelayTo,
    job: &'a LeasedJob,
    sender: Option<RelaySender>,
}

impl Items<'_> {
    fn send(&mut self, event: &RawValue) {
        self.sender
            .get_or_insert_with(|| RelaySender::open(self.to, self.job))
            .send(event);
    }

    fn relayed(&self) -> bool {
        self.sender.is_some()
    }

    /// A failure of the stream: [`UpstreamError::Interrupted`] once an item event was
    /// relayed, and before, what a whole call failing so would be (the upstream's opening
    /// events reached nobody).
    fn failed(&self, error: UpstreamError) -> UpstreamError {
        match error {
            UpstreamError::Interrupted { message } if !self.relayed() => UpstreamError::Transient {
                status: None,
                message,
            },
            error if self.relayed() => UpstreamError::Interrupted {
                message: error.to_string(),
            },
            error => error,
        }
    }
}

/// The upstream's own events: item events relayed as they come (with what they lack filled
/// in), until the closing one.
async fn native(
    relay: &mut Items<'_>,
    mut stream: UpstreamStream,
) -> Result<Completion, UpstreamError> {
    let mut filler = Filler::default();
    loop {
        let event = match stream.next().await {
            Ok(Some(event)) => event,
            Ok(None) => break,
            Err(error) => return Err(relay.failed(error)),
        };
        match sort(&event) {
            Sorted::Item => match filler.fill(&event) {
                Some(filled) => relay.send(&filled),
                None => relay.send(&event),
            },
            Sorted::Closing(response) => return response_of(&response),
            Sorted::Error(message) => {
                return Err(relay.failed(UpstreamError::Interrupted {
                    message: format!("the upstream's stream failed: {message}"),
                }));
            }
            Sorted::Skip => {}
        }
    }
    Err(relay.failed(UpstreamError::Invalid {
        status: 200,
        message: "the upstream's Responses stream ended without its closing event".to_owned(),
    }))
}

/// Chat chunks translated into item events as they come, then the events that finish the
/// items.
async fn translated(
    relay: &mut Items<'_>,
    mut stream: UpstreamStream,
    mut translation: Translation,
) -> Result<Completion, UpstreamError> {
    let mut read = 0usize;
    loop {
        let chunk = match stream.next().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(error) => return Err(relay.failed(error)),
        };
        read += 1;
        let events = translation.push(&chunk).map_err(|e| {
            relay.failed(UpstreamError::Invalid {
                status: 200,
                message: format!("the upstream streamed a chunk this node cannot read: {e}"),
            })
        })?;
        send_all(relay, &events);
    }
    if read == 0 {
        return Err(UpstreamError::Invalid {
            status: 200,
            message: "the upstream's stream ended without a chunk".to_owned(),
        });
    }
    let (events, completion) = translation.finish();
    send_all(relay, &events);
    completion
}

fn send_all(relay: &mut Items<'_>, events: &[serde_json::Value]) {
    for event in events {
        if let Ok(event) = serde_json::value::to_raw_value(event) {
            relay.send(&event);
        }
    }
}
