//! The node's config: loading, defaults per preset, and what is refused.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn the_spec_example_parses_and_the_environment_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node_config.toml");
    std::fs::write(
        &path,
        "[server]\nurl = \"http://gw:8000\"\napi_key = \"sk-file\"\n\n[llm]\nmodel = \"gpt-4o\"\n\n[local_llm]\nenabled = true\nport = 11434\n",
    )
    .unwrap();
    let config = NodeConfig::load(
        Some(&path),
        env(&[
            ("OBB_NODE_SERVER_API_KEY", "sk-env"),
            ("OBB_NODE_LOCAL_LLM_PORT", "8080"),
            ("OBB_NODE_CONCURRENCY", "9"),
            ("OBB_NODE_MODELS", "a, b"),
            ("OBB_NODE_RELAY", "append"),
            ("OBB_API_KEY", "ignored"),
            // The gateway's `node_alive_seconds`, set in an environment both share.
            ("OBB_NODE_ALIVE_SECONDS", "30"),
        ]),
    )
    .unwrap();
    assert_eq!(config.node.relay, RelayMode::Append);
    assert_eq!(config.server.api_key.as_deref(), Some("sk-env"));
    assert_eq!(config.local_llm.port, Some(8080));
    assert_eq!(config.node.concurrency, 9);
    assert_eq!(config.node.models, vec!["a", "b"]);
    assert_eq!(config.llm.model.as_deref(), Some("gpt-4o"));
}

#[test]
fn unknown_keys_and_variables_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node_config.toml");
    std::fs::write(&path, "[node]\nconcurrncy = 2\n").unwrap();
    let err = NodeConfig::load(Some(&path), env(&[])).unwrap_err();
    assert!(err.to_string().contains("concurrncy"), "{err}");
    let err = NodeConfig::load(None, env(&[("OBB_NODE_SERVR_URL", "x")])).unwrap_err();
    assert!(err.to_string().contains("OBB_NODE_SERVR_URL"), "{err}");
    let err = NodeConfig::load(None, env(&[("OBB_NODE_CONCURRENCY", "0")])).unwrap_err();
    assert!(err.to_string().contains("concurrency"), "{err}");
    let err = NodeConfig::load(None, env(&[("OBB_NODE_SERVER_URL", "gw:8000")])).unwrap_err();
    assert!(err.to_string().contains("http://"), "{err}");
    assert!(matches!(
        NodeConfig::load(Some(Path::new("/nonexistent.toml")), env(&[])),
        Err(ConfigError::Load(obb_config::LoadError::Read { .. }))
    ));
}

#[test]
fn a_node_name_is_counted_in_characters_not_bytes() {
    let named = |name: &str| NodeConfig::load(None, env(&[("OBB_NODE_NAME", name)]));
    // 43 CJK characters are 129 bytes.
    let cjk = "節".repeat(43);
    assert_eq!(cjk.len(), 129);
    assert_eq!(named(&cjk).unwrap().node_name(), cjk);
    assert!(named(&"n".repeat(128)).is_ok());
    let err = named(&"n".repeat(129)).unwrap_err();
    assert!(
        err.to_string().contains("1 to 128 characters, not 129"),
        "{err}"
    );
    assert!(named(" ").is_err());
}

#[test]
fn endpoints_come_from_the_config_else_from_the_preset_or_the_upstream() {
    let load = |pairs: &[(&str, &str)]| NodeConfig::load(None, env(pairs)).unwrap();
    assert_eq!(
        load(&[]).endpoints(),
        vec![Endpoint::ChatCompletions, Endpoint::Responses],
        "the echo model answers both"
    );
    assert_eq!(load(&[]).node.embeddings_pack_max, 64);
    let ollama = load(&[
        ("OBB_NODE_LOCAL_LLM_ENABLED", "true"),
        ("OBB_NODE_LOCAL_LLM_PRESET", "ollama"),
    ]);
    assert!(ollama.endpoints().contains(&Endpoint::Embeddings));
    let llamacpp = load(&[
        ("OBB_NODE_LOCAL_LLM_ENABLED", "true"),
        ("OBB_NODE_LOCAL_LLM_PRESET", "llamacpp"),
    ]);
    assert!(!llamacpp.endpoints().contains(&Endpoint::Embeddings));
    for preset in Preset::ALL {
        assert!(
            preset.endpoints().contains(&Endpoint::Responses),
            "{preset:?} chats, so it serves /v1/responses, natively or translated"
        );
    }
    let local = load(&[("OBB_NODE_LOCAL_LLM_ENABLED", "true")]);
    assert!(local.endpoints().contains(&Endpoint::Responses));
    let api = load(&[("OBB_NODE_LLM_BASE_URL", "http://127.0.0.1:9/v1")]);
    assert_eq!(api.endpoints(), Endpoint::QUEUED.to_vec());
    let named = load(&[("OBB_NODE_ENDPOINTS", "/v1/embeddings, /v1/chat/completions")]);
    assert_eq!(
        named.endpoints(),
        vec![Endpoint::ChatCompletions, Endpoint::Embeddings]
    );
    let responses = load(&[("OBB_NODE_ENDPOINTS", "/v1/responses")]);
    assert_eq!(responses.endpoints(), vec![Endpoint::Responses]);
    let err = NodeConfig::load(None, env(&[("OBB_NODE_ENDPOINTS", "/v1/images")])).unwrap_err();
    assert!(err.to_string().contains("/v1/images"), "{err}");
    let err = NodeConfig::load(None, env(&[("OBB_NODE_EMBEDDINGS_PACK_MAX", "0")])).unwrap_err();
    assert!(err.to_string().contains("embeddings_pack_max"), "{err}");
}

#[test]
fn an_explicit_path_wins_and_presets_know_their_ports() {
    assert_eq!(
        locate(Some(Path::new("/x.toml"))).unwrap(),
        PathBuf::from("/x.toml")
    );
    let ports: Vec<u16> = Preset::ALL.iter().map(|p| p.port()).collect();
    assert_eq!(ports, vec![11434, 1234, 8080, 8000]);
    assert!(!NodeConfig::default().node_name().is_empty());
}
