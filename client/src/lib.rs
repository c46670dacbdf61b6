//! Wire types shared by the OpenBeepBoop gateway, its nodes and its users.
//!
//! Everything that crosses HTTP between the three parts is defined here, once.
//! The crate knows nothing about SQLite, pingora or any LLM server.

pub mod admin;
pub mod chat;
pub mod error;
pub mod job;
pub mod node;

pub use admin::{ApiKeyInfo, CreateKeyRequest, CreatedKey, Role};
pub use chat::{ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Model, ModelList};
pub use error::{ErrorBody, ErrorEnvelope};
pub use job::{Job, JobList, JobStatus, PollEntry, PollRequest, PollResponse};
pub use node::{
    FetchRequest, FetchResponse, HeartbeatRequest, HeartbeatResponse, LeasedJob, NodeResult,
    NodeResultStatus, SubmitOutcome, SubmitOutcomeKind, SubmitResponse,
};
