//! End-to-end tests: the real gateway and real `obb-node` processes, with a mock OpenAI
//! upstream (`testkit::mock`) on loopback, and one test against a real small LLM server.

#[cfg(test)]
mod attempts;
#[cfg(test)]
mod batch;
#[cfg(test)]
mod browser;
#[cfg(test)]
mod caddy;
#[cfg(test)]
mod daemon;
#[cfg(test)]
mod downtime;
#[cfg(test)]
mod drain;
#[cfg(test)]
mod endpoints;
#[cfg(test)]
mod examples;
#[cfg(test)]
mod fair_share;
#[cfg(test)]
mod faults;
#[cfg(test)]
mod limits;
#[cfg(test)]
mod observability;
#[cfg(test)]
mod proxy;
#[cfg(test)]
mod quickstart;
#[cfg(test)]
mod real_llm;
#[cfg(test)]
mod responses_node;
#[cfg(test)]
mod responses_upstream;
#[cfg(test)]
mod setup;
#[cfg(test)]
mod skew;
#[cfg(test)]
mod spool_faults;
#[cfg(test)]
mod streaming;
#[cfg(test)]
mod submit_limits;
#[cfg(test)]
mod tls;

#[cfg(test)]
use testkit::mock::MockUpstream;
#[cfg(test)]
use testkit::{Gateway, NodeProcess};

/// What most tests start with: a gateway (with `settings`), a USER key, a NODE key, and a
/// mock upstream serving the model `m`.
#[cfg(test)]
pub async fn stack(settings: &[(&str, &str)]) -> (Gateway, String, String, MockUpstream) {
    let gw = Gateway::start(settings).await;
    let (user, key) = (gw.key("user").await, gw.key("node").await);
    let mock = MockUpstream::start(&["m"])
        .await
        .expect("the mock upstream starts");
    (gw, user, key, mock)
}

/// An `obb-node run` named `name` with the NODE key `key`, sending its jobs to `upstream`;
/// `extra` holds more `[node]` settings.
#[cfg(test)]
pub fn run_node(
    gw: &Gateway,
    key: &str,
    upstream: &MockUpstream,
    name: &str,
    extra: &str,
) -> NodeProcess {
    NodeProcess::start(
        "run",
        &NodeProcess::config(gw, key, name, Some(&upstream.base_url()), extra),
    )
}

/// The results a node's spool file at `path` holds: its non-blank JSON lines.
#[cfg(test)]
pub fn spool_lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|line| !line.trim().is_empty())
        .count()
}
