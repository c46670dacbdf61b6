//! Gateway configuration: defaults, then `gateway.toml`, then `OBB_*` variables, then flags.
//!
//! Unknown keys in the file and unknown `OBB_*` variables are rejected with their name, so
//! a typo never silently falls back to a default; the loader is `obb_config`, shared with
//! the node.

use crate::queue::Location;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every setting of the gateway. Field names are the TOML keys and, upper-cased after
/// `OBB_`, the environment variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub host: String,
    pub port: u16,
    /// The store: a SQLite file, or a PostgreSQL URL (`postgres://user@host:port/db`);
    /// `None` means a SQLite file in the XDG data dir.
    pub db: Option<PathBuf>,
    /// Where a PostgreSQL store's gateways keep the bytes of `/v1/files`; several gateways
    /// on one database need it shared. `None` means `files/` in the XDG data dir. A SQLite
    /// store keeps them in `files/` beside its file, whatever this says.
    pub files_dir: Option<PathBuf>,
    /// The longest `?wait=` / `Prefer: wait=` honoured; longer asks are capped to it.
    pub max_wait_seconds: u64,
    /// The wait applied when a submit asks for none. 0 keeps submits asynchronous.
    pub default_wait_seconds: u64,
    /// Bodies larger than this get 413, except the node API's submits.
    pub max_body_bytes: usize,
    /// The largest `POST /internal/queue/submit` body, in bytes: nodes send finished
    /// completions there, several per request, so it is sized for them rather than for
    /// prompts. Nodes learn it from the fetch answer and pack their submits under it.
    pub max_submit_bytes: usize,
    /// The largest file `POST /v1/files` takes for purpose `batch`, in bytes (OpenAI's
    /// limit, 200 MiB, by default); a larger upload gets 413 and leaves nothing behind.
    pub max_batch_file_bytes: u64,
    /// How long a node holds a job between heartbeats.
    pub lease_seconds: u64,
    /// Runs of a job (first run plus retries) before it fails for good.
    pub max_attempts: u32,
    /// How long a job may wait in the queue before it expires.
    pub job_ttl_seconds: u64,
    /// The longest per-request TTL a caller may ask for.
    pub max_job_ttl_seconds: u64,
    /// How often the reaper looks for expired leases and jobs.
    pub reaper_interval_ms: u64,
    /// A node unseen for this long no longer counts for `/v1/models`.
    pub node_alive_seconds: u64,
    /// The most ids one `/v1/results/poll` may ask for.
    pub max_poll_ids: usize,
    /// On SIGTERM, how long to keep serving before stopping.
    pub grace_period_seconds: u64,
    /// After the grace period, how long in-flight requests get to finish.
    pub shutdown_timeout_seconds: u64,
    /// Worker threads of the HTTP service.
    pub threads: usize,
    /// Most operations one SQLite commit may carry (group commit).
    pub max_commit_batch: usize,
    /// The first retry of a retryable failure waits this long; each next one twice as long.
    pub retry_backoff_base_ms: u64,
    /// When set, `/metrics` asked from beyond loopback needs `Authorization: Bearer <token>`.
    pub metrics_token: Option<String>,
    /// PEM certificate chain; with `tls_key`, the gateway serves HTTPS (rustls) instead of
    /// plain HTTP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Origins browsers may call from (`https://app.example`, or `*` for any). Empty: no
    /// CORS headers at all. In the environment, a comma-separated list.
    pub cors_allowed_origins: Vec<String>,
    /// While a `stream: true` request waits in the queue, an SSE comment is sent this often
    /// (seconds), so that proxies with idle timeouts keep the connection.
    pub stream_keepalive_seconds: u64,
    /// Relay a `stream: true` chat or completions job's chunks live, as its node receives
    /// them; off, the whole answer is replayed as chunks when the job ends.
    pub stream_relay: bool,
    /// With `X-OBB-Progress: true`, a queued stream's `obb.queue` event goes out at most
    /// this often (seconds), when its position or estimated wait moved.
    pub stream_progress_seconds: u64,
    /// A stream whose client takes nothing for this long (seconds: one write blocked by a
    /// full socket) is ended, so that a client that stopped reading holds nothing.
    pub stream_write_timeout_seconds: u64,
    /// The bytes of relayed chunks kept per running job for late or reconnecting
    /// subscribers (oldest dropped first).
    pub stream_replay_bytes: usize,
    /// The bytes of relayed chunks kept across all jobs.
    pub stream_replay_total_bytes: usize,
    /// The priority a batch's lines run at (1 first to 5), so interactive requests go first.
    pub batch_priority: u8,
    /// The `completion_window`s `POST /v1/batches` accepts (`<n>m`, `<n>h` or `<n>d`);
    /// OpenAI accepts only `24h`.
    pub batch_completion_windows: Vec<String>,
    /// The most lines a batch's input file may have (OpenAI's limit, 50,000, by default).
    pub max_batch_lines: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".to_owned(),
            port: 8000,
            db: None,
            files_dir: None,
            max_wait_seconds: 300,
            default_wait_seconds: 0,
            max_body_bytes: 16 * 1024 * 1024,
            max_submit_bytes: 64 * 1024 * 1024,
            max_batch_file_bytes: 200 * 1024 * 1024,
            lease_seconds: 60,
            max_attempts: 3,
            job_ttl_seconds: 24 * 3600,
            max_job_ttl_seconds: 7 * 24 * 3600,
            reaper_interval_ms: 1000,
            node_alive_seconds: 60,
            max_poll_ids: 1000,
            grace_period_seconds: 5,
            shutdown_timeout_seconds: 5,
            threads: 2,
            max_commit_batch: 512,
            retry_backoff_base_ms: 1000,
            metrics_token: None,
            tls_cert: None,
            tls_key: None,
            cors_allowed_origins: Vec::new(),
            stream_keepalive_seconds: 15,
            stream_relay: true,
            stream_progress_seconds: 2,
            stream_write_timeout_seconds: 30,
            stream_replay_bytes: 1024 * 1024,
            stream_replay_total_bytes: 64 * 1024 * 1024,
            batch_priority: 4,
            batch_completion_windows: vec!["24h".to_owned()],
            max_batch_lines: 50_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read, or a key or variable is unknown or of the wrong type.
    #[error(transparent)]
    Load(#[from] obb_config::LoadError),
    #[error("invalid config `{origin}`: {message}")]
    Invalid { origin: String, message: String },
    #[error("no home directory: set `OBB_DB` or pass `--db`")]
    NoHome,
}

/// `OBB_<KEY>`. The prefix is shared, so the variables of the node (`OBB_NODE_*`), of the
/// log filter, of the clients and of the scripts that start a gateway are not settings;
/// any other `OBB_*` variable must name one.
const VARIABLES: obb_config::Namespace<'static> = obb_config::Namespace {
    prefix: "OBB_",
    sections: &[],
    default_section: None,
    not_settings: &[
        "OBB_NODE_",
        "OBB_LOG",
        // The Python and Rust clients.
        "OBB_API_KEY",
        "OBB_BASE_URL",
        // quickstart.sh.
        "OBB_BIN_DIR",
        "OBB_LLM_VENV",
        "OBB_LLM_PORT",
        "OBB_DEMO_LLM_PORTS",
        // The tests: the real model's Python, and what the live SDK scripts are told.
        "OBB_TEST_PYTHON",
        // Which engine the gateway tests run on (`testkit::postgres`).
        "OBB_TEST_ENGINE",
        "OBB_USER_KEY",
        "OBB_JOB_ID",
        "OBB_FAULT_",
        // The `jobs` and `nodes` commands' gateway and key (`remote`), and the dashboard's
        // files from a directory while working on them (`http::ui`).
        "OBB_URL",
        "OBB_ADMIN_KEY",
        "OBB_CA_CERT",
        "OBB_UI_DIR",
    ],
    docs: "the gateway's configuration in README.md",
};

impl Config {
    /// Builds the config from an optional file and the given environment (usually
    /// `std::env::vars()`), before flags are applied by the caller.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let every_key = Config {
            db: Some(PathBuf::new()),
            files_dir: Some(PathBuf::new()),
            metrics_token: Some(String::new()),
            tls_cert: Some(PathBuf::new()),
            tls_key: Some(PathBuf::new()),
            ..Config::default()
        };
        let config = obb_config::load(file, env, &VARIABLES, &every_key)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: &str| ConfigError::Invalid {
            origin: "settings".to_owned(),
            message: message.to_owned(),
        };
        if self.default_wait_seconds > self.max_wait_seconds {
            return Err(invalid(
                "`default_wait_seconds` must not exceed `max_wait_seconds`",
            ));
        }
        if self.lease_seconds == 0 || self.max_attempts == 0 || self.job_ttl_seconds == 0 {
            return Err(invalid(
                "`lease_seconds`, `max_attempts` and `job_ttl_seconds` must be positive",
            ));
        }
        if self.threads == 0 || self.max_commit_batch == 0 || self.reaper_interval_ms == 0 {
            return Err(invalid(
                "`threads`, `max_commit_batch` and `reaper_interval_ms` must be positive",
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(invalid("`tls_cert` and `tls_key` must be set together"));
        }
        if self.max_wait_seconds == 0 {
            // A `stream: true` request is always held; it needs a wait to be held for.
            return Err(invalid("`max_wait_seconds` must be positive"));
        }
        if self.stream_keepalive_seconds == 0 {
            return Err(invalid("`stream_keepalive_seconds` must be positive"));
        }
        if self.stream_progress_seconds == 0 || self.stream_write_timeout_seconds == 0 {
            return Err(invalid(
                "`stream_progress_seconds` and `stream_write_timeout_seconds` must be positive",
            ));
        }
        if self.stream_replay_bytes == 0
            || self.stream_replay_total_bytes < self.stream_replay_bytes
        {
            return Err(invalid(
                "`stream_replay_bytes` must be positive and at most `stream_replay_total_bytes`",
            ));
        }
        if !(1..=5).contains(&self.batch_priority) {
            return Err(invalid("`batch_priority` must be from 1 (first) to 5"));
        }
        if self.max_batch_lines == 0 {
            return Err(invalid("`max_batch_lines` must be positive"));
        }
        if let Some(bad) = self
            .batch_completion_windows
            .iter()
            .find(|w| window_seconds(w).is_none())
        {
            return Err(invalid(&format!(
                "`batch_completion_windows` holds `{bad}`; use `<n>m`, `<n>h` or `<n>d`"
            )));
        }
        if self.max_body_bytes == 0 || self.max_submit_bytes == 0 || self.max_batch_file_bytes == 0
        {
            return Err(invalid(
                "`max_body_bytes`, `max_submit_bytes` and `max_batch_file_bytes` must be positive",
            ));
        }
        Ok(())
    }

    /// The store: the configured file or PostgreSQL URL, or a file in the XDG data dir.
    pub fn store(&self) -> Result<Location, ConfigError> {
        match &self.db {
            Some(db) => Ok(Location::parse(db)),
            None => default_db_path(xdg_data_home(), home()).map(Location::File),
        }
    }

    /// Where a PostgreSQL store keeps uploaded files: `files_dir`, or `files/` in the XDG
    /// data dir.
    pub fn files_dir(&self) -> Result<PathBuf, ConfigError> {
        match &self.files_dir {
            Some(dir) => Ok(dir.clone()),
            None => default_db_path(xdg_data_home(), home()).map(|db| db.with_file_name("files")),
        }
    }

    /// The body limit of a route, in bytes: `max_submit_bytes` for node submits,
    /// `max_body_bytes` for everything else.
    pub fn body_limit(&self, node_submit: bool) -> usize {
        if node_submit {
            self.max_submit_bytes
        } else {
            self.max_body_bytes
        }
    }

    /// The length of an allowed batch `completion_window`, or `None` when not allowed.
    pub fn batch_window(&self, window: &str) -> Option<Duration> {
        self.batch_completion_windows
            .iter()
            .any(|w| w == window)
            .then(|| window_seconds(window))
            .flatten()
            .map(Duration::from_secs)
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_seconds)
    }
}

/// `$XDG_DATA_HOME/openbeepboop/queue.db`, or `~/.local/share/openbeepboop/queue.db`.
/// A window such as `24h`, `90m` or `7d`, in seconds.
pub fn window_seconds(window: &str) -> Option<u64> {
    let unit = match window.chars().last()? {
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    let count: u64 = window[..window.len() - 1].parse().ok().filter(|n| *n > 0)?;
    count.checked_mul(unit)
}

/// Whether `db` is a PostgreSQL connection URL (libpq's two schemes) rather than a path.
fn xdg_data_home() -> Option<PathBuf> {
    std::env::var_os("XDG_DATA_HOME").map(PathBuf::from)
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

pub fn default_db_path(
    xdg_data_home: Option<PathBuf>,
    home: Option<PathBuf>,
) -> Result<PathBuf, ConfigError> {
    let base = match xdg_data_home.filter(|p| p.is_absolute()) {
        Some(dir) => dir,
        None => home.ok_or(ConfigError::NoHome)?.join(".local/share"),
    };
    Ok(base.join("openbeepboop").join("queue.db"))
}

/// The config file used when `--config` is absent: the XDG one, if it exists.
pub fn default_config_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    let path = base.join("openbeepboop").join("gateway.toml");
    path.exists().then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "port = 9000\nmax_wait_seconds = 30").unwrap();
        let config = Config::load(
            Some(file.path()),
            env(&[
                ("OBB_PORT", "9100"),
                ("PATH", "/bin"),
                ("OBB_DB", "/x/q.db"),
            ]),
        )
        .unwrap();
        assert_eq!(config.port, 9100);
        assert_eq!(config.max_wait_seconds, 30);
        assert_eq!(config.db, Some(PathBuf::from("/x/q.db")));
        let config = Config::load(
            None,
            env(&[
                (
                    "OBB_CORS_ALLOWED_ORIGINS",
                    "https://a.example, https://b.example",
                ),
                ("OBB_TLS_CERT", "/c.pem"),
                ("OBB_TLS_KEY", "/k.pem"),
            ]),
        )
        .unwrap();
        assert_eq!(
            config.cors_allowed_origins,
            vec!["https://a.example", "https://b.example"]
        );
        assert_eq!(config.tls_key, Some(PathBuf::from("/k.pem")));
    }

    #[test]
    fn unknown_file_keys_are_named_and_foreign_variables_ignored() {
        let config = Config::load(None, env(&[("OBB_API_KEY", "sk"), ("OBB_NODE_NAME", "n")]));
        assert_eq!(config.unwrap(), Config::default());
        let err = Config::load(None, env(&[("OBB_PROT", "9000")])).unwrap_err();
        assert!(err.to_string().contains("`OBB_PROT`"), "{err}");
        let err = Config::load(None, env(&[("OBB_PORT", "many")])).unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "max_wiat_seconds = 3").unwrap();
        let err = Config::load(Some(file.path()), env(&[])).unwrap_err();
        assert!(err.to_string().contains("max_wiat_seconds"), "{err}");
    }

    #[test]
    fn inconsistent_settings_are_rejected() {
        let err = Config::load(None, env(&[("OBB_DEFAULT_WAIT_SECONDS", "999")])).unwrap_err();
        assert!(err.to_string().contains("default_wait_seconds"), "{err}");
        assert!(Config::load(None, env(&[("OBB_LEASE_SECONDS", "0")])).is_err());
        assert!(Config::load(None, env(&[("OBB_THREADS", "0")])).is_err());
        let err = Config::load(None, env(&[("OBB_TLS_CERT", "/c.pem")])).unwrap_err();
        assert!(err.to_string().contains("tls_key"), "{err}");
        assert!(Config::load(None, env(&[("OBB_STREAM_KEEPALIVE_SECONDS", "0")])).is_err());
        let missing = Config::load(Some(Path::new("/nonexistent/gateway.toml")), env(&[]));
        assert!(matches!(
            missing,
            Err(ConfigError::Load(obb_config::LoadError::Read { .. }))
        ));
    }

    #[test]
    fn batch_windows_are_minutes_hours_or_days_and_only_the_allowed_ones_count() {
        assert_eq!(window_seconds("24h"), Some(86_400));
        assert_eq!(window_seconds("90m"), Some(5_400));
        assert_eq!(window_seconds("7d"), Some(604_800));
        for bad in ["", "h", "0h", "24", "1.5h", "-1d", "24H"] {
            assert_eq!(window_seconds(bad), None, "{bad}");
        }
        let config = Config::default();
        assert_eq!(
            config.batch_window("24h"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(
            config.batch_window("7d"),
            None,
            "OpenAI's 24h only, by default"
        );
    }

    #[test]
    fn a_postgres_url_selects_postgresql_and_anything_else_is_a_file() {
        for url in [
            "postgres://obb:secret@db:5432/queue",
            "POSTGRESQL://db/queue",
        ] {
            let config = Config {
                db: Some(url.into()),
                ..Config::default()
            };
            let store = config.store().unwrap();
            assert!(store.is_postgres(), "{url}");
            assert!(!store.to_string().contains("secret"), "{store}");
        }
        let file = Config {
            db: Some("postgres.db".into()),
            ..Config::default()
        };
        assert_eq!(
            file.store().unwrap(),
            Location::File(PathBuf::from("postgres.db"))
        );
        let dir = Config {
            files_dir: Some("/shared/files".into()),
            ..Config::default()
        };
        assert_eq!(dir.files_dir().unwrap(), PathBuf::from("/shared/files"));
    }

    #[test]
    fn default_db_path_prefers_xdg_then_home() {
        let xdg = default_db_path(Some("/data".into()), Some("/home/u".into())).unwrap();
        assert_eq!(xdg, PathBuf::from("/data/openbeepboop/queue.db"));
        let home = default_db_path(Some("relative".into()), Some("/home/u".into())).unwrap();
        assert_eq!(
            home,
            PathBuf::from("/home/u/.local/share/openbeepboop/queue.db")
        );
        assert!(default_db_path(None, None).is_err());
    }
}
