//! Assembles a node from its config: routing, clients, spool and worker settings.

use crate::config::{NodeConfig, data_dir};
use crate::gateway::GatewayClient;
use crate::metrics::NodeMetrics;
use crate::routing::Routing;
use crate::spool::Spool;
use crate::upstream::{RetryPolicy, UpstreamClient};
use crate::worker::{Settings, Stats, Worker};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

/// Builds the worker. Asks the upstream for its models when the config names none.
pub async fn build(
    config: &NodeConfig,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Worker> {
    let node = &config.node;
    let mut routing = Routing::resolve(config, env);
    let upstream = match &routing.upstream {
        Some(upstream) => Some(Arc::new(UpstreamClient::new(
            upstream.clone(),
            Duration::from_secs(node.connect_timeout_seconds),
            Duration::from_secs(node.request_timeout_seconds),
            RetryPolicy {
                max_retries: node.max_retries,
                backoff: Duration::from_millis(node.retry_backoff_ms),
            },
        )?)),
        None => None,
    };
    if routing.discover
        && let Some(client) = &upstream
    {
        let listed = client.models().await.with_context(|| {
            format!(
                "cannot list the models of `{}`; start it, or name the models in [node] models",
                client.base_url()
            )
        })?;
        anyhow::ensure!(
            !listed.is_empty(),
            "`{}` lists no models; name them in [node] models",
            client.base_url()
        );
        for model in &listed {
            routing.add(model);
        }
    }
    let key = config.server.api_key.clone().filter(|k| !k.is_empty()).context(
        "no node key: set [server] api_key or OBB_NODE_SERVER_API_KEY (make one with `obb-gateway keys create --role node`)",
    )?;
    let name = config.node_name();
    let gateway = GatewayClient::new(&config.server, &key, &name)?;
    let spool_path = node
        .spool
        .clone()
        .unwrap_or_else(|| data_dir().join(format!("spool-{name}.jsonl")));
    let spool = Spool::open(&spool_path)
        .with_context(|| format!("cannot open the spool `{}`", spool_path.display()))?;
    Ok(Worker {
        gateway: Arc::new(gateway),
        upstream,
        routing: Arc::new(routing),
        spool: Arc::new(spool),
        settings: Settings {
            concurrency: node.concurrency,
            batch_size: node.batch_size,
            endpoints: config.endpoints(),
            embeddings_pack_max: node.embeddings_pack_max,
            heartbeat: Duration::from_secs(node.heartbeat_seconds),
            fetch_wait: Duration::from_secs(node.fetch_wait_seconds),
            summary: Duration::from_secs(node.summary_seconds),
            flush_timeout: Duration::from_secs(30),
            relay: node.relay,
        },
        stats: Arc::new(Stats::default()),
        metrics: Arc::new(NodeMetrics::new()),
    })
}

/// Reaches the gateway (with the node's key) and the upstream. Returns what it found.
pub async fn check(worker: &Worker) -> anyhow::Result<Vec<String>> {
    let models = worker.routing.names();
    worker
        .gateway
        .heartbeat(Vec::new(), &models, worker.settings.concurrency)
        .await
        .context("the gateway check failed")?;
    if let Some(upstream) = &worker.upstream {
        upstream
            .models()
            .await
            .context("the upstream check failed")?;
    }
    Ok(models)
}
