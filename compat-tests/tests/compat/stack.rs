//! The stack both halves use: a gateway, a node running jobs on the mock upstream, keys,
//! and one finished job for the job endpoints.

use testkit::mock::MockUpstream;
use testkit::{Gateway, NodeProcess};

pub const MODEL: &str = "gpt-4o-mini";
/// A model id with `/` and `:` in it, as Ollama and Hugging Face names have; the live
/// catalogues retrieve it (`GET /v1/models/{model}`).
pub const SLASHED_MODEL: &str = "org/llama3.1:8b";
/// A model the streaming stack's upstream serves but no node takes until a test starts one.
pub const LATE_MODEL: &str = "gpt-4o-mini-late";

pub struct Stack {
    pub gw: Gateway,
    pub user: String,
    pub node_key: String,
    pub finished_job: String,
    mock: MockUpstream,
    _node: NodeProcess,
}

impl Stack {
    /// The stack with a node serving only `MODEL`.
    pub async fn start() -> Self {
        Self::serving(&[MODEL]).await
    }

    /// The stack with a node serving `models`; the first one runs the seed job.
    pub async fn serving(models: &[&str]) -> Self {
        Self::on(models, MockUpstream::start(models).await.unwrap()).await
    }

    /// The stack with a node serving `MODEL` on an upstream without `/v1/responses` (as
    /// llama.cpp's server), so that the node translates Responses jobs to chat completions.
    pub async fn translating_responses() -> Self {
        let mock = MockUpstream::start(&[MODEL]).await.unwrap();
        mock.set_responses_route(false);
        Self::on(&[MODEL], mock).await
    }

    /// The stack for live streams: the upstream streams 10 chunks 100 ms apart, the gateway
    /// has `settings`, and the node serves `MODEL` only (see `LATE_MODEL`).
    pub async fn streaming(settings: &[(&str, &str)]) -> Self {
        let mock = MockUpstream::start(&[MODEL, LATE_MODEL]).await.unwrap();
        mock.set_stream(10, std::time::Duration::from_millis(100));
        Self::on_with(&[MODEL], mock, settings).await
    }

    /// Starts another node on the same upstream, serving `models`.
    pub fn start_node(&self, name: &str, models: &[&str]) -> NodeProcess {
        let listed: Vec<String> = models.iter().map(|m| format!("\"{m}\"")).collect();
        NodeProcess::start(
            "run",
            &NodeProcess::config(
                &self.gw,
                &self.node_key,
                name,
                Some(&self.mock.base_url()),
                &format!("models = [{}]", listed.join(", ")),
            ),
        )
    }

    /// The calls the upstream has had to `path` (`/v1/chat/completions`, …).
    pub fn upstream_calls_to(&self, path: &str) -> usize {
        self.mock.calls_to(path)
    }

    async fn on(models: &[&str], mock: MockUpstream) -> Self {
        Self::on_with(models, mock, &[]).await
    }

    async fn on_with(models: &[&str], mock: MockUpstream, settings: &[(&str, &str)]) -> Self {
        let gw = Gateway::start(settings).await;
        let (user, node_key) = (gw.key("user").await, gw.key("node").await);
        let listed: Vec<String> = models.iter().map(|m| format!("\"{m}\"")).collect();
        let node = NodeProcess::start(
            "run",
            &NodeProcess::config(
                &gw,
                &node_key,
                "compat-node",
                Some(&mock.base_url()),
                &format!("models = [{}]\nconcurrency = 4", listed.join(", ")),
            ),
        );
        let finished_job = gw.submit_id(&user, models[0]).await;
        let done = gw.job(&user, &format!("{finished_job}?wait=30")).await;
        assert_eq!(done["status"], "completed", "the node runs the seed job");
        Self {
            gw,
            user,
            node_key,
            finished_job,
            mock,
            _node: node,
        }
    }

    /// The key a recorded request's role stands for.
    pub fn key_for(&self, role: &str) -> String {
        match role {
            "user" => self.user.clone(),
            "node" => self.node_key.clone(),
            _ => "sk-obb-not-a-real-key".to_owned(),
        }
    }
}
