//! Which upstream serves which model: the `local_llm` shortcut, LiteLLM-style provider
//! prefixes, explicit base URLs, aliases, and the built-in `echo` model.

use crate::config::NodeConfig;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The built-in model that answers without any upstream, for demos and smoke tests.
pub const ECHO_MODEL: &str = "echo";

/// Hosted providers: prefix, base URL, and the environment variable holding the key.
const PROVIDERS: &[(&str, &str, &str)] = &[
    ("openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
    (
        "openrouter",
        "https://openrouter.ai/api/v1",
        "OPENROUTER_API_KEY",
    ),
    ("groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    (
        "together",
        "https://api.together.xyz/v1",
        "TOGETHER_API_KEY",
    ),
    (
        "deepseek",
        "https://api.deepseek.com/v1",
        "DEEPSEEK_API_KEY",
    ),
    ("mistral", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
];

/// An OpenAI-compatible server: its `/v1` base and its key, if it needs one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub base_url: String,
    pub api_key: Option<String>,
    /// Where the key was looked for, to name it when it is missing.
    pub key_source: Option<String>,
    /// The config section that sets this upstream up (`llm` or `local_llm`), for messages.
    pub section: &'static str,
    /// A private CA (PEM) trusted for this upstream besides the platform's roots.
    pub ca_cert: Option<PathBuf>,
}

/// Where a job for a model goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Echo,
    /// The upstream's name for the model.
    Upstream(String),
}

/// The node's routing: one upstream (or none) and the models it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    pub upstream: Option<Upstream>,
    /// Gateway model name -> target. Empty until discovered when the config names none.
    pub models: BTreeMap<String, Target>,
    /// True when the models must be read from the upstream's `/v1/models`.
    pub discover: bool,
    aliases: BTreeMap<String, String>,
}

/// Splits `provider/model` when the provider is one we know.
fn provider_of(model: &str) -> Option<(&'static (&'static str, &'static str, &'static str), &str)> {
    let (prefix, rest) = model.split_once('/')?;
    PROVIDERS
        .iter()
        .find(|(name, _, _)| *name == prefix)
        .map(|provider| (provider, rest))
}

impl Routing {
    /// Resolves the config; `env` looks up environment variables (upstream keys).
    pub fn resolve(config: &NodeConfig, env: impl Fn(&str) -> Option<String>) -> Self {
        let llm = &config.llm;
        let local = &config.local_llm;
        let upstream = if local.enabled {
            let port = local
                .port
                .or(local.preset.map(|p| p.port()))
                .unwrap_or(11434);
            let scheme = if local.https || local.ca_cert.is_some() {
                "https"
            } else {
                "http"
            };
            Some(Upstream {
                base_url: format!("{scheme}://{}:{port}/v1", local.host),
                api_key: llm.api_key.clone(),
                key_source: None,
                section: "local_llm",
                ca_cert: local.ca_cert.clone(),
            })
        } else if let Some(base_url) = &llm.base_url {
            Some(Upstream {
                base_url: base_url.trim_end_matches('/').to_owned(),
                api_key: llm.api_key.clone().or_else(|| env("OPENAI_API_KEY")),
                key_source: Some("OPENAI_API_KEY".to_owned()),
                section: "llm",
                ca_cert: llm.ca_cert.clone(),
            })
        } else if let Some(model) = llm.model.as_deref().filter(|m| *m != ECHO_MODEL) {
            // A bare model name means OpenAI, as in LiteLLM.
            let (_, base, variable) = provider_of(model).map_or(PROVIDERS[0], |(p, _)| *p);
            Some(Upstream {
                base_url: base.to_owned(),
                api_key: llm.api_key.clone().or_else(|| env(variable)),
                key_source: Some(variable.to_owned()),
                section: "llm",
                ca_cert: llm.ca_cert.clone(),
            })
        } else {
            None
        };
        let mut routing = Routing {
            upstream,
            models: BTreeMap::new(),
            discover: false,
            aliases: config.node.aliases.clone(),
        };
        let mut named: Vec<String> = config.node.models.clone();
        named.extend(llm.model.clone());
        for name in named {
            routing.add(&name);
        }
        if routing.models.is_empty() {
            if routing.upstream.is_some() {
                routing.discover = true;
            } else {
                routing.add(ECHO_MODEL);
            }
        }
        routing
    }

    /// Adds a model by its gateway name, mapping it through the aliases and dropping a
    /// provider prefix for the upstream.
    pub fn add(&mut self, name: &str) {
        let target = if name == ECHO_MODEL {
            Target::Echo
        } else {
            let upstream_name = self.aliases.get(name).map_or(name, String::as_str);
            let upstream_name = provider_of(upstream_name).map_or(upstream_name, |(_, rest)| rest);
            Target::Upstream(upstream_name.to_owned())
        };
        self.models.insert(name.to_owned(), target);
    }

    pub fn names(&self) -> Vec<String> {
        self.models.keys().cloned().collect()
    }

    pub fn target(&self, model: &str) -> Option<&Target> {
        self.models.get(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Preset;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn local_llm_presets_build_the_base_url() {
        let mut config = NodeConfig::default();
        config.local_llm.enabled = true;
        config.local_llm.preset = Some(Preset::Lmstudio);
        let routing = Routing::resolve(&config, no_env);
        assert_eq!(
            routing.upstream.clone().unwrap().base_url,
            "http://127.0.0.1:1234/v1"
        );
        assert!(
            routing.discover,
            "models come from the upstream when none are named"
        );
        config.local_llm.port = Some(9999);
        config.node.models = vec!["llama3".into(), "echo".into()];
        let routing = Routing::resolve(&config, no_env);
        assert_eq!(
            routing.upstream.clone().unwrap().base_url,
            "http://127.0.0.1:9999/v1"
        );
        config.local_llm.ca_cert = Some("ca.pem".into());
        let upstream = Routing::resolve(&config, no_env).upstream.unwrap();
        assert_eq!(
            upstream.base_url, "https://127.0.0.1:9999/v1",
            "a CA implies https"
        );
        assert_eq!(
            (upstream.section, upstream.ca_cert),
            ("local_llm", Some("ca.pem".into()))
        );
        assert_eq!(routing.target("echo"), Some(&Target::Echo));
        assert_eq!(
            routing.target("llama3"),
            Some(&Target::Upstream("llama3".into()))
        );
    }

    #[test]
    fn provider_prefixes_pick_the_base_url_and_key_variable() {
        let mut config = NodeConfig::default();
        config.llm.model = Some("groq/llama-3.1-8b-instant".into());
        let routing = Routing::resolve(&config, |v| (v == "GROQ_API_KEY").then(|| "gk".to_owned()));
        let upstream = routing.upstream.clone().unwrap();
        assert_eq!(upstream.base_url, "https://api.groq.com/openai/v1");
        assert_eq!(upstream.api_key.as_deref(), Some("gk"));
        assert_eq!(
            routing.target("groq/llama-3.1-8b-instant"),
            Some(&Target::Upstream("llama-3.1-8b-instant".into()))
        );
        config.llm.model = Some("gpt-4o-mini".into());
        let routing = Routing::resolve(&config, no_env);
        assert_eq!(
            routing.upstream.clone().unwrap().key_source.as_deref(),
            Some("OPENAI_API_KEY")
        );
    }

    #[test]
    fn aliases_map_names_and_no_upstream_means_echo_only() {
        let routing = Routing::resolve(&NodeConfig::default(), no_env);
        assert_eq!(routing.upstream, None);
        assert_eq!(routing.names(), vec!["echo"]);
        let mut config = NodeConfig::default();
        config.llm.base_url = Some("http://10.0.0.2:8000/v1/".into());
        config.node.models = vec!["fast".into()];
        config
            .node
            .aliases
            .insert("fast".into(), "Qwen/Qwen2.5-7B".into());
        let routing = Routing::resolve(&config, no_env);
        assert_eq!(
            routing.upstream.clone().unwrap().base_url,
            "http://10.0.0.2:8000/v1"
        );
        assert_eq!(
            routing.target("fast"),
            Some(&Target::Upstream("Qwen/Qwen2.5-7B".into()))
        );
    }
}
