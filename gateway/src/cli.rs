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
    /// Retry, reprioritize and export jobs through a running gateway's admin API.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// List, drain and forget nodes through a running gateway's admin API.
    #[command(subcommand)]
    Nodes(NodesCommand),
    /// Copy a stopped gateway's SQLite queue (jobs, keys, files, batches, nodes) into an
    /// empty PostgreSQL database, and check the counts after.
    Migrate(MigrateArgs),
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The SQLite file to copy (its gateway stopped)
    #[arg(long)]
    pub from: PathBuf,
    /// The PostgreSQL database to copy into: `postgres://user@host:port/db`
    #[arg(long)]
    pub to: PathBuf,
    /// Where the PostgreSQL gateways keep uploaded files (`files_dir`); default: the
    /// configured one
    #[arg(long)]
    pub files_dir: Option<PathBuf>,
    /// A config file, for `files_dir` (default: the XDG one, when it exists)
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Where the running gateway is, and the admin key to call it with.
#[derive(Debug, Args, Clone)]
pub struct RemoteArgs {
    /// The gateway's base URL
    #[arg(long, env = "OBB_URL", default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// An admin key (`jobs export` also takes a user key, and exports that user's jobs)
    #[arg(long, env = "OBB_ADMIN_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// A PEM file of the CA that signed the gateway's certificate, for a private CA
    #[arg(long, env = "OBB_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

/// Which jobs: each filter given narrows them.
#[derive(Debug, Args, Clone, Default)]
pub struct JobFilterArgs {
    /// Statuses, comma-separated (e.g. `failed,expired`)
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long)]
    pub batch_id: Option<String>,
    /// Created at or after, Unix seconds
    #[arg(long)]
    pub since: Option<i64>,
    /// Created before, Unix seconds
    #[arg(long)]
    pub until: Option<i64>,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Queue an ended job again (`ID`), or every job the filters match (default: failed,
    /// expired and cancelled). Prints the job, or how many were retried.
    Retry {
        #[arg(conflicts_with_all = ["status", "model", "batch_id", "since", "until"])]
        id: Option<String>,
        #[command(flatten)]
        filter: JobFilterArgs,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Move a queued job to priority 1 (runs first) to 5. Prints the job.
    Priority {
        id: String,
        priority: u8,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Write jobs as NDJSON to stdout, oldest first, with their requests and results.
    Export {
        #[command(flatten)]
        filter: JobFilterArgs,
        /// The key that submitted them (admins)
        #[arg(long)]
        key_id: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// List nodes: id, alive or not, draining, jobs in flight, capacity, models.
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Lease the node no new job; its running jobs finish.
    Drain {
        id: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Let a drained node take jobs again.
    Undrain {
        id: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Forget a node that is gone (one still running comes back at its next call).
    Remove {
        id: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// Where the database and the config file are.
#[derive(Debug, Args, Clone, Default)]
pub struct StoreArgs {
    /// The SQLite file, or a PostgreSQL URL (`postgres://user@host:port/db`) [env: OBB_DB]
    /// [default: $XDG_DATA_HOME/openbeepboop/queue.db]
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
    /// Show a key's limits and weight, or change those given (`none`: no limit). A running
    /// gateway takes the change within 250 ms. Prints the limits as JSON.
    Limits {
        id: String,
        #[command(flatten)]
        set: LimitArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// A limit on the command line: a number, or `none` for no limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T>(pub Option<T>);

fn setting<T: std::str::FromStr>(text: &str) -> Result<Setting<T>, String>
where
    T::Err: std::fmt::Display,
{
    if text == "none" {
        return Ok(Setting(None));
    }
    text.parse()
        .map(|value| Setting(Some(value)))
        .map_err(|e| format!("`{text}`: {e}; give a number, or `none` for no limit"))
}

/// The limits `keys limits` may change; those not given stay as they are.
#[derive(Debug, Args, Default)]
pub struct LimitArgs {
    /// Submits per minute (over it: 429).
    #[arg(long, value_parser = setting::<u32>)]
    pub requests_per_minute: Option<Setting<u32>>,
    /// Tokens per minute (over it, the key's jobs wait in the queue).
    #[arg(long, value_parser = setting::<u32>)]
    pub tokens_per_minute: Option<Setting<u32>>,
    /// Jobs queued at once (over it: 429).
    #[arg(long, value_parser = setting::<u32>)]
    pub max_queued_jobs: Option<Setting<u32>>,
    /// Jobs running at once (over it, the key's jobs wait in the queue).
    #[arg(long, value_parser = setting::<u32>)]
    pub max_concurrent_jobs: Option<Setting<u32>>,
    /// The key's share of leases against other keys with work queued (1 to 1000).
    #[arg(long)]
    pub weight: Option<u32>,
    /// The first priority the key may ask for (1 runs first).
    #[arg(long, value_parser = setting::<u8>)]
    pub max_priority: Option<Setting<u8>>,
    /// The priority of a request that names none.
    #[arg(long, value_parser = setting::<u8>)]
    pub default_priority: Option<Setting<u8>>,
    /// The label of the key's own gauges.
    #[arg(long, value_parser = setting::<String>)]
    pub metrics_label: Option<Setting<String>>,
}
