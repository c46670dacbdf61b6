//! `node_config.toml`: the spec's `[server]`, `[llm]` and `[local_llm]` sections plus `[node]`.
//!
//! Defaults, then the file, then `OBB_NODE_*` variables (`obb_config`, shared with the
//! gateway): `OBB_NODE_SERVER_URL`, `OBB_NODE_LLM_MODEL`, `OBB_NODE_LOCAL_LLM_PORT`,
//! `OBB_NODE_SERVER_CA_CERT`, and for `[node]` simply `OBB_NODE_CONCURRENCY` and so on.
//! Unknown keys, in the file or the environment, are errors that name them, and so are PEM
//! files that cannot be read.

use openbeepboop::Endpoint;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub server: ServerSection,
    pub llm: LlmSection,
    pub local_llm: LocalLlmSection,
    pub node: NodeSection,
}

/// Where the gateway is, the NODE key to use, and the TLS the hop needs beyond the
/// platform's roots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub url: String,
    pub api_key: Option<String>,
    /// A private CA (PEM) for the gateway's certificate, trusted besides the platform's roots.
    pub ca_cert: Option<PathBuf>,
    /// A client certificate (PEM) for mutual TLS; needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// The private key (PEM) of `client_cert`.
    pub client_key: Option<PathBuf>,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            url: "http://localhost:8000".to_owned(),
            api_key: None,
            ca_cert: None,
            client_cert: None,
            client_key: None,
        }
    }
}

/// A hosted or self-run OpenAI-compatible API. `model` may carry a LiteLLM-style provider
/// prefix (`openai/gpt-4o-mini`, `groq/llama-3.1-8b-instant`) that picks the base URL and
/// the key's environment variable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmSection {
    pub model: Option<String>,
    /// Prefer the provider's environment variable (`OPENAI_API_KEY`, …) to this.
    pub api_key: Option<String>,
    pub base_url: Option<String>,
    /// A private CA (PEM) for the upstream's certificate, trusted besides the platform's roots.
    pub ca_cert: Option<PathBuf>,
}

/// The shortcut for a server on this machine: `http://host:port/v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalLlmSection {
    pub enabled: bool,
    /// The port; when absent, the preset's usual port.
    pub port: Option<u16>,
    pub host: String,
    pub preset: Option<Preset>,
    /// Call the server at `https://` instead of `http://`.
    pub https: bool,
    /// A private CA (PEM) for the local server's certificate, trusted besides the
    /// platform's roots; setting it implies `https`.
    pub ca_cert: Option<PathBuf>,
}

impl Default for LocalLlmSection {
    fn default() -> Self {
        Self {
            enabled: false,
            port: None,
            host: "127.0.0.1".to_owned(),
            preset: None,
            https: false,
            ca_cert: None,
        }
    }
}

/// Local LLM servers and the ports they listen on by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Ollama,
    Lmstudio,
    Llamacpp,
    Vllm,
}

impl Preset {
    pub const ALL: [Preset; 4] = [
        Preset::Ollama,
        Preset::Lmstudio,
        Preset::Llamacpp,
        Preset::Vllm,
    ];

    pub fn port(self) -> u16 {
        match self {
            Preset::Ollama => 11434,
            Preset::Lmstudio => 1234,
            Preset::Llamacpp => 8080,
            Preset::Vllm => 8000,
        }
    }

    /// The endpoints the server answers out of the box. llama.cpp's server embeds only
    /// when started with `--embeddings`, and a vLLM server runs either a generative or an
    /// embedding model: name `/v1/embeddings` in `[node] endpoints` for those. Every one
    /// that chats serves `/v1/responses` too: natively, or translated to chat completions
    /// where the server has no such route.
    pub fn endpoints(self) -> &'static [Endpoint] {
        match self {
            Preset::Ollama | Preset::Lmstudio => &[
                Endpoint::ChatCompletions,
                Endpoint::Embeddings,
                Endpoint::Completions,
                Endpoint::Responses,
            ],
            Preset::Llamacpp | Preset::Vllm => &[
                Endpoint::ChatCompletions,
                Endpoint::Completions,
                Endpoint::Responses,
            ],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Preset::Ollama => "Ollama",
            Preset::Lmstudio => "LM Studio",
            Preset::Llamacpp => "llama.cpp server",
            Preset::Vllm => "vLLM",
        }
    }
}

/// How this node works.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// The node's id at the gateway; the host name when absent.
    pub name: Option<String>,
    /// Jobs leased per fetch, at most.
    pub batch_size: u32,
    /// Upstream calls in flight, at most.
    pub concurrency: u32,
    /// Model names the node serves, as users write them. Empty: what the upstream lists.
    pub models: Vec<String>,
    /// Gateway model name -> upstream model name.
    pub aliases: BTreeMap<String, String>,
    /// The endpoints whose jobs the node leases and forwards to the same path upstream
    /// (`/v1/chat/completions`, `/v1/embeddings`, `/v1/completions`, `/v1/responses`; the
    /// last is translated to chat completions where the upstream lacks it). Empty: the
    /// preset's, or what an `[llm]` API serves (all four); chat and responses with no
    /// upstream (`echo`).
    pub endpoints: Vec<Endpoint>,
    /// Embeddings jobs of one model and the same parameters sent as one upstream call, at
    /// most; 1 sends each alone.
    pub embeddings_pack_max: u32,
    /// Heartbeat period; shortened to a third of the lease when leases are shorter.
    pub heartbeat_seconds: u64,
    /// The longest one upstream call may take.
    pub request_timeout_seconds: u64,
    pub connect_timeout_seconds: u64,
    /// How long a fetch waits at the gateway for work.
    pub fetch_wait_seconds: u64,
    /// Upstream retries of a transient error before the job is handed back as retryable.
    pub max_retries: u32,
    /// The first retry delay; it doubles, with jitter, unless `Retry-After` says otherwise.
    pub retry_backoff_ms: u64,
    /// Where finished results wait until the gateway has them. Default: the XDG data dir.
    pub spool: Option<PathBuf>,
    /// How often `run` logs a summary line.
    pub summary_seconds: u64,
    /// How a relayed job's stream reaches the gateway: `stream` (one request whose body
    /// carries the chunks as they come) or `append` (a short request of the chunks ready,
    /// at most every 50 ms), for a proxy in front of the gateway that buffers request bodies.
    pub relay: RelayMode,
}

/// How the node sends a relayed stream to `POST /internal/queue/stream`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayMode {
    /// One request per run, its chunked body written a frame at a time.
    #[default]
    Stream,
    /// A `content-length` request of the frames ready, at most every 50 ms.
    Append,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            name: None,
            batch_size: 4,
            concurrency: 4,
            models: Vec::new(),
            aliases: BTreeMap::new(),
            endpoints: Vec::new(),
            embeddings_pack_max: 64,
            heartbeat_seconds: 20,
            request_timeout_seconds: 600,
            connect_timeout_seconds: 10,
            fetch_wait_seconds: 30,
            max_retries: 3,
            retry_backoff_ms: 500,
            spool: None,
            summary_seconds: 60,
            relay: RelayMode::Stream,
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
    #[error("no node_config.toml found: pass `--config PATH`, or create one with `obb-node setup`")]
    NotFound,
    /// A PEM file named by a TLS key is missing, unreadable or holds the wrong thing.
    #[error("`[{section}] {key}` = `{path}`: {problem}")]
    Pem {
        section: &'static str,
        key: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error("cannot set up the HTTP client for `[{section}]`: {message}")]
    Client {
        section: &'static str,
        message: String,
    },
}

/// The longest node name, in characters (not bytes): the gateway's limit on `node_id`.
pub const MAX_NODE_NAME_CHARS: usize = 128;

/// `OBB_NODE_<SECTION>_<KEY>`, and `OBB_NODE_<KEY>` for `[node]`.
const VARIABLES: obb_config::Namespace<'static> = obb_config::Namespace {
    prefix: "OBB_NODE_",
    // Longest first, so that `local_llm_` wins over `llm_`.
    sections: &["local_llm", "server", "llm"],
    default_section: Some("node"),
    // The gateway's `node_alive_seconds`, which shares the node's prefix.
    not_settings: &["OBB_NODE_ALIVE_SECONDS"],
    docs: "the [node] settings in README.md",
};

impl NodeConfig {
    /// Reads a config file and applies the environment.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let config = obb_config::load(file, env, &VARIABLES, &NodeConfig::with_every_key())?;
        let origin = file.map_or_else(|| "environment".to_owned(), |p| p.display().to_string());
        config
            .validate()
            .map_err(|message| ConfigError::Invalid { origin, message })?;
        crate::tls::check_files(&config)?;
        Ok(config)
    }

    /// A config with every optional key set, so that its serialisation lists them all.
    fn with_every_key() -> Self {
        let mut config = NodeConfig::default();
        config.server.api_key = Some(String::new());
        config.server.ca_cert = Some(PathBuf::new());
        config.server.client_cert = Some(PathBuf::new());
        config.server.client_key = Some(PathBuf::new());
        config.llm = LlmSection {
            model: Some(String::new()),
            api_key: Some(String::new()),
            base_url: Some(String::new()),
            ca_cert: Some(PathBuf::new()),
        };
        config.local_llm.port = Some(0);
        config.local_llm.preset = Some(Preset::Ollama);
        config.local_llm.ca_cert = Some(PathBuf::new());
        config.node.name = Some(String::new());
        config.node.spool = Some(PathBuf::new());
        config
    }

    fn validate(&self) -> Result<(), String> {
        let node = &self.node;
        if node.batch_size == 0 || node.concurrency == 0 {
            return Err("`node.batch_size` and `node.concurrency` must be positive".to_owned());
        }
        if node.embeddings_pack_max == 0 {
            return Err("`node.embeddings_pack_max` must be positive (1 packs nothing)".to_owned());
        }
        if node.heartbeat_seconds == 0 || node.request_timeout_seconds == 0 {
            return Err(
                "`node.heartbeat_seconds` and `node.request_timeout_seconds` must be positive"
                    .to_owned(),
            );
        }
        if !self.server.url.starts_with("http://") && !self.server.url.starts_with("https://") {
            return Err(format!(
                "`server.url` must start with http:// or https://, not `{}`",
                self.server.url
            ));
        }
        let name = self.node_name();
        let chars = name.chars().count();
        if name.trim().is_empty() || chars > MAX_NODE_NAME_CHARS {
            return Err(format!(
                "`node.name` must be 1 to {MAX_NODE_NAME_CHARS} characters, not {chars} (the gateway's rule for `node_id`)"
            ));
        }
        if self.server.client_cert.is_some() != self.server.client_key.is_some() {
            return Err(
                "`[server] client_cert` and `[server] client_key` must be set together".to_owned(),
            );
        }
        Ok(())
    }

    /// The endpoints the node serves: `[node] endpoints`, else the default for its
    /// upstream (see [`NodeSection::endpoints`]).
    pub fn endpoints(&self) -> Vec<Endpoint> {
        if !self.node.endpoints.is_empty() {
            let mut endpoints = self.node.endpoints.clone();
            endpoints.sort();
            endpoints.dedup();
            return endpoints;
        }
        let hosted = self.llm.base_url.is_some()
            || self
                .llm
                .model
                .as_deref()
                .is_some_and(|m| m != crate::routing::ECHO_MODEL);
        match (self.local_llm.enabled, self.local_llm.preset) {
            (true, Some(preset)) => preset.endpoints().to_vec(),
            (true, None) => vec![
                Endpoint::ChatCompletions,
                Endpoint::Completions,
                Endpoint::Responses,
            ],
            (false, _) if hosted => Endpoint::QUEUED.to_vec(),
            (false, _) => vec![Endpoint::ChatCompletions, Endpoint::Responses],
        }
    }

    /// The node's id at the gateway.
    pub fn node_name(&self) -> String {
        self.node.name.clone().unwrap_or_else(host_name)
    }
}

/// Finds the config file: `--config`, then `./node_config.toml`, then the XDG config dir.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    let local = PathBuf::from("node_config.toml");
    if local.exists() {
        return Ok(local);
    }
    let xdg = config_dir().map(|dir| dir.join("openbeepboop").join("node_config.toml"));
    xdg.filter(|p| p.exists()).ok_or(ConfigError::NotFound)
}

fn config_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
}

/// `$XDG_DATA_HOME/openbeepboop`, or `~/.local/share/openbeepboop`.
pub fn data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir)
        .join("openbeepboop")
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "obb-node".to_owned())
}

#[cfg(test)]
mod tests;
