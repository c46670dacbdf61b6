//! obb-node: pulls jobs from an OpenBeepBoop gateway and runs them on an OpenAI-compatible
//! LLM server. It only makes outbound calls, so it works behind NAT.

pub mod app;
pub mod cli;
pub mod config;
pub mod echo;
pub mod gateway;
pub mod metrics;
pub mod responses;
pub mod routing;
pub mod setup;
pub mod spool;
pub mod tls;
pub mod upstream;
pub mod worker;
