//! Command-line types of `obb-gateway`. Parsing only: no behaviour lives here.

use clap::{Args, Parser, Subcommand};
use openbeepboop::Role;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "obb-gateway",
    version,
    about = "OpenBeepBoop gateway: an OpenAI-shaped, durable LLM job queue"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or upgrade the database and print a first admin key.
    Setup(SetupArgs),
    /// Serve the HTTP API.
    Start(StartArgs),
    /// Manage API keys in the database directly.
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// Where the database and the config file are.
#[derive(Debug, Args, Clone, Default)]
pub struct StoreArgs {
    /// The SQLite file [env: OBB_DB] [default: $XDG_DATA_HOME/openbeepboop/queue.db]
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// A `gateway.toml` [default: $XDG_CONFIG_HOME/openbeepboop/gateway.toml when it exists]
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Ask nothing: use the given or default database path.
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The address to listen on [default: 0.0.0.0]
    #[arg(long)]
    pub host: Option<String>,
    /// The port to listen on [default: 8000]
    #[arg(long)]
    pub port: Option<u16>,
    /// Validate the configuration and the database, print the effective config, and exit.
    #[arg(long)]
    pub check_config: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it, alone, on stdout. It is shown only this once.
    Create {
        #[arg(long)]
        role: Role,
        #[arg(long)]
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List keys, without their secrets.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a key by its id (`key_…`); a running gateway refuses it within 250 ms.
    Revoke {
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}
