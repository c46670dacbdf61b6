//! `obb-gateway`: parses the command line, loads the config, and calls into the library.
//! `src/bin/openbeepboop-server.rs` builds this same file under the spec's name.

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use obb_gateway::auth::mint_key;
use obb_gateway::cli::{
    Cli, Command, JobsCommand, KeysCommand, LimitArgs, MigrateArgs, NodesCommand, Setting,
    SetupArgs, StartArgs, StoreArgs,
};
use obb_gateway::config::{Config, default_config_file};
use obb_gateway::queue::{Location, Queue, offline};
use obb_gateway::remote::{Remote, node_line};
use openbeepboop::{KeyLimits, Role};
use std::io::{BufRead, Write};
use std::process::ExitCode;

/// The name this binary was built as (`obb-gateway` or `openbeepboop-server`): the help,
/// `--version` and the hints printed name the command the user typed.
const PROGRAM: &str = env!("CARGO_BIN_NAME");

/// mimalloc, not glibc's malloc: argon2 takes 19 MiB of working memory per hash, and glibc,
/// whose mmap threshold rises after the first such block is freed, kept each one: the
/// gateway held 113 MiB after five key checks. mimalloc gives large blocks back.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub fn main() -> ExitCode {
    // The access log writes a line per request: a background thread does the writing, so a
    // request never waits on stderr, and it writes whatever lines are waiting in one call,
    // flushing when none are left. Lines are never dropped; a full queue makes the logger
    // wait. The guard flushes what is left when `main` returns.
    let (stderr, _flush_on_exit) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("obb-log")
        .finish(std::io::BufWriter::with_capacity(
            1 << 16,
            std::io::stderr(),
        ));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OBB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::from_arg_matches(&Cli::command().name(PROGRAM).get_matches())
        .unwrap_or_else(|error| error.exit());
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Setup(args) => setup(args),
        Command::Start(args) => start(args),
        Command::Keys(command) => keys(command),
        Command::Jobs(command) => remotely(jobs(command)),
        Command::Nodes(command) => remotely(nodes(command)),
        Command::Migrate(args) => migrate(args),
    }
}

fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let file = args.config.clone().or_else(default_config_file);
    let config = Config::load(file.as_deref(), std::env::vars())?;
    let files_dir = match args.files_dir {
        Some(dir) => dir,
        None => config.files_dir()?,
    };
    let to = Location::parse(&args.to);
    eprintln!(
        "copying `{}` into `{to}` (uploaded files into `{}`)",
        args.from.display(),
        files_dir.display()
    );
    let moved = obb_gateway::queue::migrate(&args.from, &to, &files_dir)
        .with_context(|| format!("cannot migrate `{}` to `{to}`", args.from.display()))?;
    for (table, rows) in &moved.rows {
        println!("{table}\t{rows}");
    }
    println!("files\t{}", moved.files);
    eprintln!("done: the counts match. Start the gateways with `--db` and this URL.");
    Ok(())
}

/// Runs a command that calls the gateway's API (never `start`: pingora runs outside any
/// tokio runtime).
fn remotely(command: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(command)
}

async fn jobs(command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::Retry {
            id: Some(id),
            remote,
            ..
        } => {
            let job = Remote::new(&remote)?.retry(&id).await?;
            println!("{}", serde_json::to_string_pretty(&job)?);
        }
        JobsCommand::Retry {
            id: None,
            filter,
            remote,
        } => {
            let retried = Remote::new(&remote)?.retry_matching(&filter).await?;
            println!("retried {retried} jobs");
        }
        JobsCommand::Priority {
            id,
            priority,
            remote,
        } => {
            let job = Remote::new(&remote)?.priority(&id, priority).await?;
            println!("{}", serde_json::to_string_pretty(&job)?);
        }
        JobsCommand::Export {
            filter,
            key_id,
            remote,
        } => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            Remote::new(&remote)?
                .export(&filter, key_id.as_deref(), &mut out)
                .await?;
        }
    }
    Ok(())
}

async fn nodes(command: NodesCommand) -> anyhow::Result<()> {
    match command {
        NodesCommand::List { remote } => {
            for node in Remote::new(&remote)?.nodes().await? {
                println!("{}", node_line(&node));
            }
        }
        NodesCommand::Drain { id, remote } => {
            println!(
                "{}",
                node_line(&Remote::new(&remote)?.drain(&id, true).await?)
            );
        }
        NodesCommand::Undrain { id, remote } => {
            println!(
                "{}",
                node_line(&Remote::new(&remote)?.drain(&id, false).await?)
            );
        }
        NodesCommand::Remove { id, remote } => {
            Remote::new(&remote)?.remove(&id).await?;
            println!("removed node {id}");
        }
    }
    Ok(())
}

/// The config from file and environment, with `--db` applied on top.
fn load(store: &StoreArgs) -> anyhow::Result<Config> {
    let file = store.config.clone().or_else(default_config_file);
    let mut config = Config::load(file.as_deref(), std::env::vars())?;
    if let Some(db) = &store.db {
        config.db = Some(db.clone());
    }
    Ok(config)
}

/// `db` as a command line should give it: a path, or for a URL (whose password must not be
/// printed) a stand-in.
fn as_typed(db: &Location) -> String {
    match db {
        Location::File(path) => path.display().to_string(),
        Location::Postgres(_) => "<the same postgres:// URL>".to_owned(),
    }
}

fn setup(args: SetupArgs) -> anyhow::Result<()> {
    let config = load(&args.store)?;
    let default = config.store()?;
    let db = if args.yes {
        default
    } else {
        eprint!("Where should the database be stored? [default: {default}]: ");
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        match answer.trim() {
            "" => default,
            answer => Location::parse(std::path::Path::new(answer)),
        }
    };
    Queue::setup(&db).with_context(|| format!("cannot set up `{db}`"))?;
    eprintln!("Database ready at {db}");
    if offline::has_admin_key(&db)? {
        eprintln!(
            "Setup complete. An admin key already exists; make another with `{PROGRAM} keys create --role admin --name NAME`."
        );
        eprintln!(
            "Run the gateway with `{PROGRAM} start --db {}`.",
            as_typed(&db)
        );
        return Ok(());
    }
    let created = offline::create_key(&db, &mint_key()?, "admin", Role::Admin)?;
    eprintln!(
        "Setup complete. Run the gateway with `{PROGRAM} start --db {}`.",
        as_typed(&db)
    );
    eprintln!("Your admin key is shown only once:");
    println!("{}", created.key);
    Ok(())
}

fn start(args: StartArgs) -> anyhow::Result<()> {
    let mut config = load(&args.store)?;
    if let Some(host) = args.host {
        config.host = host;
    }
    if let Some(port) = args.port {
        config.port = port;
    }
    tracing::debug!(?config, "effective configuration");
    if args.check_config {
        let db = config.store()?;
        if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
            obb_gateway::server::tls_files(cert, key)?;
        }
        let settings = obb_gateway::queue::QueueSettings {
            files_dir: db.is_postgres().then(|| config.files_dir()).transpose()?,
            ..Default::default()
        };
        let store = Queue::open(&db, settings, std::sync::Arc::new(|_, _| {}))?;
        drop(store);
        println!("{}", toml::to_string(&config)?);
        eprintln!("configuration and database `{db}` are valid");
        return Ok(());
    }
    let server = obb_gateway::server::build(config)?;
    // Not `run_forever`: it exits the process and would skip flushing the log.
    server.run(pingora::server::RunArgs::default());
    Ok(())
}

fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create { role, name, store } => {
            let db = load(&store)?.store()?;
            let created = offline::create_key(&db, &mint_key()?, &name, role)?;
            eprintln!(
                "created {} key `{}` ({})",
                created.info.role, name, created.info.id
            );
            println!("{}", created.key);
        }
        KeysCommand::List { store } => {
            let db = load(&store)?.store()?;
            for key in offline::list_keys(&db)? {
                let state = if key.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    key.id, key.role, key.name, key.prefix, state
                );
            }
        }
        KeysCommand::Revoke { id, store } => {
            let db = load(&store)?.store()?;
            let key = offline::revoke_key(&db, &id)?;
            println!("revoked {} ({})", key.id, key.name);
        }
        KeysCommand::Limits { id, set, store } => {
            let db = load(&store)?.store()?;
            let mut limits = offline::key_limits(&db, &id)?;
            if apply_limits(&set, &mut limits) {
                limits.check().map_err(|(field, message)| {
                    anyhow::anyhow!("--{}: {message}", field.replace('_', "-"))
                })?;
                limits = offline::set_key_limits(&db, &id, &limits)?;
            }
            println!("{}", serde_json::to_string_pretty(&limits)?);
        }
    }
    Ok(())
}

/// Writes the limits given on the command line into `limits`; returns whether any was given.
fn apply_limits(set: &LimitArgs, limits: &mut KeyLimits) -> bool {
    let mut given = false;
    let mut number = |field: &mut Option<u32>, value: &Option<Setting<u32>>| {
        if let Some(Setting(value)) = value {
            *field = *value;
            given = true;
        }
    };
    number(&mut limits.requests_per_minute, &set.requests_per_minute);
    number(&mut limits.tokens_per_minute, &set.tokens_per_minute);
    number(&mut limits.max_queued_jobs, &set.max_queued_jobs);
    number(&mut limits.max_concurrent_jobs, &set.max_concurrent_jobs);
    for (field, value) in [
        (&mut limits.max_priority, &set.max_priority),
        (&mut limits.default_priority, &set.default_priority),
    ] {
        if let Some(Setting(value)) = value {
            *field = *value;
            given = true;
        }
    }
    if let Some(weight) = set.weight {
        limits.weight = weight;
        given = true;
    }
    if let Some(Setting(label)) = &set.metrics_label {
        limits.metrics_label.clone_from(label);
        given = true;
    }
    given
}
