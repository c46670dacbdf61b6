//! Command-line types of `obb-node`. Parsing only.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "obb-node",
    version,
    about = "OpenBeepBoop node: pulls jobs from the gateway and runs them on an OpenAI-compatible LLM server"
)]
pub struct Cli {
    /// The config file [default: ./node_config.toml, then $XDG_CONFIG_HOME/openbeepboop/node_config.toml]
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Serve Prometheus metrics at this address, e.g. 127.0.0.1:9101
    #[arg(long, global = true)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work until SIGINT or SIGTERM (a second signal aborts the jobs in flight).
    Run,
    /// Work until no queued job for this node's models is left, then exit (for cron).
    Batch,
    /// Write node_config.toml, asking for what the flags do not give.
    Setup(SetupArgs),
    /// Validate the config, reach the gateway and the upstream, and list the models served.
    Check,
}

#[derive(Debug, Args, Default)]
pub struct SetupArgs {
    /// The gateway's URL, e.g. http://gateway:8000
    #[arg(long)]
    pub server_url: Option<String>,
    /// The NODE key made with `obb-gateway keys create --role node`
    #[arg(long)]
    pub api_key: Option<String>,
    /// Use a local LLM server on this port (Ollama 11434, LM Studio 1234, llama.cpp 8080, vLLM 8000)
    #[arg(long, conflicts_with = "model")]
    pub local_llm_port: Option<u16>,
    /// Use a hosted model instead, LiteLLM style: openai/gpt-4o-mini, groq/…, openrouter/…
    #[arg(long)]
    pub model: Option<String>,
    /// Where to write the config
    #[arg(long, default_value = "node_config.toml")]
    pub output: PathBuf,
    /// Replace an existing file
    #[arg(long)]
    pub force: bool,
}
