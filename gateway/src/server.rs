//! The composition root of `start`: opens the store, and runs the HTTP service and the
//! reapers (jobs, and expired files), the key watch and the batch runner as pingora services
//! with our shutdown timings.

use crate::auth::Authenticator;
use crate::config::Config;
use crate::http::{App, State};
use crate::metrics::Metrics;
use crate::queue::{Queue, QueueSettings, ReapPass, now_ms};
use crate::relay::{RelayLimits, Relays};
use crate::runner::{BatchRunner, RunnerSettings};
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{BackgroundService, background_service};
use pingora::services::listening::Service;
use std::sync::Arc;
use std::time::Duration;

/// The read buffer of each connection's socket, in bytes. pingora's default is 64 KiB,
/// allocated zeroed for every connection and kept for its life: with thousands of requests
/// held open (`?wait`, event streams, nodes' long-polls) it was most of their memory
/// (`obb-bench held`: 94 KiB a connection). Request heads and small bodies fit in 4 KiB, and
/// a read larger than the buffer (an upload's) goes past it straight into the caller's.
const READ_BUFFER_BYTES: usize = 4096;

/// Opens the database and builds the server. Fails, without serving, when the database
/// is missing or too new.
pub fn build(config: Config) -> anyhow::Result<Server> {
    let db = config.store()?;
    let settings = QueueSettings {
        lease: config.lease(),
        max_attempts: config.max_attempts,
        retry_backoff_base: Duration::from_millis(config.retry_backoff_base_ms),
        max_commit_batch: config.max_commit_batch,
        read_connections: (config.threads * 4).max(4),
        files_dir: db.is_postgres().then(|| config.files_dir()).transpose()?,
    };
    let metrics = Arc::new(Metrics::new());
    let recorder = Arc::clone(&metrics);
    let queue = Arc::new(Queue::open(
        &db,
        settings,
        Arc::new(move |stats, events| recorder.record_commit(stats, events)),
    )?);
    tracing::info!(%db, "opened the job store");

    let conf = ServerConf {
        threads: config.threads,
        grace_period_seconds: Some(config.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(config.shutdown_timeout_seconds),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let relays = Arc::new(Relays::new(RelayLimits {
        bytes: config.stream_replay_bytes,
        total_bytes: config.stream_replay_total_bytes,
        ..RelayLimits::default()
    }));
    let reaper = Reaper {
        queue: Arc::clone(&queue),
        relays: Arc::clone(&relays),
        interval: Duration::from_millis(config.reaper_interval_ms),
        lease: config.lease(),
    };
    let file_reaper = FileReaper {
        queue: Arc::clone(&queue),
        interval: Duration::from_millis(config.reaper_interval_ms.max(1000)),
    };
    let batch_runner = BatchRunner::new(
        Arc::clone(&queue),
        Arc::new(check_line_body),
        RunnerSettings {
            priority: config.batch_priority,
            max_lines: config.max_batch_lines,
            max_line_bytes: config.max_body_bytes,
            tick: Duration::from_millis(200),
        },
    );
    let address = format!("{}:{}", config.host, config.port);
    let tls = config.tls_cert.clone().zip(config.tls_key.clone());
    let state = Arc::new(State {
        queue,
        auth: Authenticator::new()?,
        metrics,
        config,
        rates: crate::limits::RequestRate::default(),
        relays,
    });
    let key_watch = KeyWatch(Arc::clone(&state));
    let mut http = Service::new("obb-http".to_owned(), App::new(state));
    let listener = ListenerConfig::tcp(&address)
        .l4_buffer(L4BufferSettings::default().read(READ_BUFFER_BYTES));
    match tls {
        // pingora's rustls listener; plain HTTP stays the default.
        Some((cert, key)) => {
            let (cert, key) = tls_files(&cert, &key)?;
            let settings = TlsSettings::intermediate(&cert, &key).map_err(|e| {
                anyhow::anyhow!("cannot use `tls_cert` `{cert}` and `tls_key` `{key}`: {e}")
            })?;
            http.add_listener(listener.tls(settings));
            tracing::info!(%address, "listening (https)");
        }
        None => {
            http.add_listener(listener);
            tracing::info!(%address, "listening");
        }
    }
    server.add_service(http);
    server.add_service(background_service("obb-key-watch", key_watch));
    server.add_service(background_service("obb-reaper", reaper));
    server.add_service(background_service("obb-file-reaper", file_reaper));
    server.add_service(background_service(
        "obb-batch-runner",
        BatchService(batch_runner),
    ));
    Ok(server)
}

/// `tls_cert` and `tls_key` as strings, once both files are known to be readable.
pub fn tls_files(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<(String, String)> {
    Ok((readable_pem(cert)?, readable_pem(key)?))
}

/// The path as a string, once it is known to be readable: pingora reads the files only when
/// the listener starts, and would fail there without naming them.
fn readable_pem(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot read `{}`: {e}", path.display()))?;
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("`{}` is not a UTF-8 path", path.display()))
}

/// Returns lapsed leases to the queue, fails jobs out of attempts, expires stale jobs, and
/// wakes nodes when backed-off retries become due.
struct Reaper {
    queue: Arc<Queue>,
    /// Relays of ended jobs are forgotten on the reaper's passes.
    relays: Arc<Relays>,
    interval: Duration,
    lease: Duration,
}

impl Reaper {
    /// Whether the gateway stood still between two passes: more time went by than a tick
    /// and a third of a lease (the process was frozen, or the machine paused), or the wall
    /// clock, which leases are written in, jumped ahead of the monotonic one by as much.
    /// Nodes could not heartbeat through it, so their leases must not lapse for it.
    fn stalled(&self, monotonic: Duration, wall_ms: i64) -> bool {
        let slack = self.lease / 3;
        monotonic > self.interval + slack || wall_ms > (monotonic + slack).as_millis() as i64
    }
}

#[async_trait]
impl BackgroundService for Reaper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Jobs may have been queued while the gateway was down.
        self.queue.notifier().wake_nodes();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Retries due before the first pass, across a restart too, count as newly due.
        let mut since = 0;
        let mut last = (tokio::time::Instant::now(), now_ms());
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            self.queue.wake_if_tokens_returned();
            self.relays.sweep(std::time::Instant::now());
            let now = (tokio::time::Instant::now(), now_ms());
            let stalled = self.stalled(now.0 - last.0, now.1 - last.1);
            last = now;
            match self.queue.reap(ReapPass { since, stalled }).await {
                Ok(report) => {
                    if report.granted > 0 {
                        tracing::warn!(
                            leases = report.granted,
                            "the gateway stood still; running jobs get a fresh lease"
                        );
                    }
                    if !report.is_quiet() {
                        tracing::info!(
                            requeued = report.requeued,
                            failed = report.failed,
                            expired = report.expired,
                            "reaped"
                        );
                    }
                    if report.due > 0 {
                        self.queue.notifier().wake_nodes();
                    }
                    // One tick of overlap: a retry made due just behind a backward clock
                    // step is still found; counting one twice only wakes nodes twice.
                    since = report.at - self.interval.as_millis() as i64;
                }
                Err(error) => tracing::warn!(error = %error.detail(), "reaper pass failed"),
            }
        }
    }
}

/// Deletes files past their `expires_at`, a bounded number per pass so that a backlog
/// never holds the writer for long.
struct FileReaper {
    queue: Arc<Queue>,
    interval: Duration,
}

/// Files deleted per pass at most; a backlog goes in the passes that follow.
const FILES_PER_PASS: usize = 100;

#[async_trait]
impl BackgroundService for FileReaper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            match self.queue.files().reap(FILES_PER_PASS).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(files = deleted, "deleted expired files"),
                Err(error) => tracing::warn!(error = %error.detail(), "file reaper pass failed"),
            }
        }
    }
}

/// Reads the key generation every half `auth::RECHECK_EVERY`, so that requests find the key
/// cache fresh and never wait for that read themselves (one in fifty of a client polling
/// every 5 ms did, behind a pooled read).
struct KeyWatch(Arc<State>);

#[async_trait]
impl BackgroundService for KeyWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(crate::auth::RECHECK_EVERY / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Said once when reads start failing and once when they work again, not 8 times a second.
        let mut failing = false;
        // The generation whose weights and caps the fair share holds. Its own, not the key cache's:
        // a request may read a new generation first.
        let mut weighed = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let rechecked = self.0.auth.recheck_now(&self.0.queue).await;
            match &rechecked {
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "cannot read the key generation; requests read it themselves");
                }
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("the key generation is read again");
                }
                _ => {}
            }
            // A key changed, perhaps by `obb-gateway keys limits` in another process: the
            // fair share takes the weights and caps as stored.
            if let Ok(generation) = rechecked
                && weighed != Some(generation)
            {
                match self.0.queue.reload_shares().await {
                    Ok(()) => weighed = Some(generation),
                    Err(error) => tracing::warn!(%error, "cannot re-read the keys' weights"),
                }
            }
        }
    }
}

/// Runs the batch runner's passes until shutdown.
struct BatchService(BatchRunner);

#[async_trait]
impl BackgroundService for BatchService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.0.tick());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if let Err(error) = self.0.pass().await {
                tracing::warn!(error = %error.detail(), "batch runner pass failed");
            }
        }
    }
}

/// A batch line's `body`, judged as a direct request to the batch's `endpoint` judges its
/// body: the runner's [`crate::runner::LineCheck`], and the `batch_line` fuzz target's.
pub fn check_line_body(endpoint: &str, body: &[u8]) -> Result<String, (String, Option<String>)> {
    let endpoint: openbeepboop::Endpoint = endpoint.parse().map_err(|e| (e, None))?;
    crate::http::parse_for(endpoint, body)
        .map(|judged| judged.model)
        .map_err(|refusal| {
            let error = refusal.envelope().error;
            (error.message, error.param)
        })
}
