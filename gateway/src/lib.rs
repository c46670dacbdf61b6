//! obb-gateway: an OpenAI-shaped HTTP front over a durable SQLite job queue.

pub mod auth;
pub mod cli;
pub mod config;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod queue;
pub mod relay;
pub mod remote;
pub mod runner;
pub mod server;
