//! Wire types shared by the OpenBeepBoop gateway, its nodes and its users.
//!
//! Everything that crosses HTTP between the three parts is defined here, once.
//! The crate knows nothing about SQLite, pingora or any LLM server.
//!
//! Times: a field named `*_at` on a user-facing object (a job, a key) is Unix **seconds**,
//! as in OpenAI's objects; on the node API it is Unix **milliseconds** (a lease is short).
//! Durations say their unit in their name (`lease_ttl_ms`, `wait` in seconds as documented).
//! New fields follow the same rule: seconds for people, milliseconds for machines, and the
//! unit in the doc comment.
//!
//! With the default `client` feature it is also the Rust user library:
//!
//! ```no_run
//! # async fn demo() -> Result<(), openbeepboop::Error> {
//! use openbeepboop::{ChatCompletionRequest, Client};
//! use openbeepboop::chat::ChatMessage;
//!
//! let client = Client::from_env()?; // OBB_BASE_URL, OBB_API_KEY
//! let request = ChatCompletionRequest::new("echo", vec![ChatMessage::new("user", "Hello!")])
//!     .temperature(0.2);
//! let mut handle = client.chat().completions().create(request).await?;
//! let completion = handle.get(std::time::Duration::from_secs(60)).await?;
//! println!("{}", completion.choices[0].message.text().unwrap_or_default());
//! # Ok(()) }
//! ```

pub mod accumulate;
pub mod admin;
pub mod batch;
pub mod chat;
#[cfg(feature = "client")]
pub mod client;
pub mod completions;
pub mod embeddings;
pub mod endpoint;
pub mod error;
pub mod file;
pub mod ids;
pub mod job;
pub mod limits;
pub mod node;
pub mod operations;
mod replay;
pub mod responses;
pub mod retry_after;

pub use accumulate::{ChatAccumulator, TextCompletionAccumulator};
pub use admin::{ApiKeyInfo, CreateKeyRequest, CreatedKey, Role};
pub use batch::{
    Batch, BatchError, BatchErrors, BatchInputLine, BatchLineError, BatchList, BatchOutputLine,
    BatchRequestCounts, BatchResponse, BatchStatus, BatchUsage, CreateBatchRequest,
    InputTokensDetails, OutputExpiresAfter, OutputTokensDetails,
};
pub use chat::{ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Model, ModelList};
#[cfg(feature = "client")]
pub use client::{Client, Error, JobHandle, SubmitOptions};
pub use completions::{CompletionRequest, TextCompletion};
pub use embeddings::{EmbeddingInput, EmbeddingList, EmbeddingRequest};
pub use endpoint::Endpoint;
pub use error::{ErrorBody, ErrorEnvelope};
pub use file::{FileDeleted, FileList, FileObject, FilePurpose};
pub use ids::{JobId, KeyId, LeaseId, NodeId};
pub use job::{Job, JobEvent, JobList, JobStatus, PollEntry, PollRequest, PollResponse};
pub use limits::KeyLimits;
pub use node::{
    FetchRequest, FetchResponse, HeartbeatRequest, HeartbeatResponse, LeasedJob, NodeResult,
    NodeResultStatus, RelayAck, RelayFrame, RelayOutcome, SubmitOutcome, SubmitOutcomeKind,
    SubmitResponse,
};
pub use operations::{
    BulkRetry, BulkRetryRequest, DashboardJobEvent, MinuteStats, NodeDeleted, NodeInfo, Overview,
    OverviewDepth, OverviewHour, Percentiles, PriorityRequest, WhoAmI,
};
pub use responses::{Response, ResponseRequest};
