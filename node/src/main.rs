//! `obb-node`: parses the command line and runs the chosen command.
//! `src/bin/openbeepboop-node.rs` builds this same file under the spec's name.

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use obb_node::cli::{Cli, Command};
use obb_node::config::{NodeConfig, locate};
use obb_node::worker::{Mode, Stop, StopLevel, WorkerError};
use obb_node::{app, setup};
use std::process::ExitCode;

/// The name this binary was built as (`obb-node` or `openbeepboop-node`): the help,
/// `--version` and the hints printed name the command the user typed.
const PROGRAM: &str = env!("CARGO_BIN_NAME");

pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OBB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::from_arg_matches(&Cli::command().name(PROGRAM).get_matches())
        .unwrap_or_else(|error| error.exit());
    let outcome = match cli.command {
        Command::Setup(args) => write_setup(&args),
        command => tokio::runtime::Runtime::new()
            .context("cannot start the async runtime")
            .and_then(|runtime| runtime.block_on(serve(command, cli.config, cli.metrics_addr))),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn write_setup(args: &obb_node::cli::SetupArgs) -> anyhow::Result<()> {
    if args.output.exists() && !args.force {
        anyhow::bail!(
            "`{}` exists; pass --force to replace it",
            args.output.display()
        );
    }
    let text = setup::wizard(args, &mut std::io::stdin().lock(), &mut std::io::stdout())?;
    std::fs::write(&args.output, text)
        .with_context(|| format!("cannot write `{}`", args.output.display()))?;
    println!(
        "Wrote {}. Check it with `{PROGRAM} check --config {0}`, then start with `{PROGRAM} run --config {0}`.",
        args.output.display()
    );
    Ok(())
}

async fn serve(
    command: Command,
    config: Option<std::path::PathBuf>,
    metrics_addr: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    let path = locate(config.as_deref())?;
    let config = NodeConfig::load(Some(&path), std::env::vars())?;
    tracing::debug!(config = ?redacted(&config), "effective configuration");
    let worker = app::build(&config, |name| std::env::var(name).ok()).await?;
    let name = worker.gateway.node_id.clone();
    if let Some(addr) = metrics_addr {
        obb_node::metrics::serve(addr, std::sync::Arc::clone(&worker.metrics))
            .await
            .with_context(|| format!("cannot serve metrics on `{addr}`"))?;
    }
    match command {
        Command::Check => {
            let models = app::check(&worker).await?;
            println!(
                "config `{}` is valid; node `{name}` reaches the gateway and its upstream",
                path.display()
            );
            for model in models {
                println!("serves {model}");
            }
            for endpoint in &worker.settings.endpoints {
                println!("serves {endpoint}");
            }
            Ok(())
        }
        Command::Batch => {
            app::check(&worker).await?;
            let summary = worker
                .run(Mode::Batch, stop_signals())
                .await
                .map_err(explain)?;
            println!(
                "batch done: {} completed, {} failed, {:.1} s",
                summary.done, summary.failed, summary.seconds
            );
            Ok(())
        }
        Command::Run | Command::Setup(_) => {
            let endpoints: Vec<&str> = worker
                .settings
                .endpoints
                .iter()
                .map(|e| e.as_str())
                .collect();
            tracing::info!(node = %name, models = ?worker.routing.names(), ?endpoints, "node started");
            let summary = worker
                .run(Mode::Daemon, stop_signals())
                .await
                .map_err(explain)?;
            tracing::info!(
                done = summary.done,
                failed = summary.failed,
                seconds = summary.seconds,
                "node stopped"
            );
            Ok(())
        }
    }
}

fn explain(error: WorkerError) -> anyhow::Error {
    anyhow::Error::new(error)
}

/// The config with its secrets replaced, for the debug log.
fn redacted(config: &NodeConfig) -> NodeConfig {
    let mut copy = config.clone();
    let hide = |key: &mut Option<String>| {
        if key.is_some() {
            *key = Some("[redacted]".to_owned());
        }
    };
    hide(&mut copy.server.api_key);
    hide(&mut copy.llm.api_key);
    copy
}

/// The first SIGINT or SIGTERM drains; the second aborts.
fn stop_signals() -> Stop {
    let (sender, receiver) = tokio::sync::watch::channel(StopLevel::Running);
    // Lives as long as the process: it only forwards signals into the watch.
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut terminate), Ok(mut interrupt)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        loop {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            let next = sender.borrow().next();
            if next == StopLevel::Draining {
                tracing::info!(
                    "stopping: finishing the jobs in flight (signal again to abort them)"
                );
            } else {
                tracing::warn!("aborting the jobs in flight and handing them back");
            }
            let _ = sender.send(next);
        }
    });
    receiver
}
