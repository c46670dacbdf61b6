//! How often a node's fetches write its row. A node long-polls `fetch` all day, and each
//! fetch used to rewrite its row in `nodes` (its key, its models as JSON, `last_seen_at`):
//! writer time on every round trip of the wait path. `last_seen_at` is read with a window of
//! `node_alive_seconds` (tens of seconds), so a fetch writes the row only when the last write
//! is `EVERY` old or the node's key or models changed. Heartbeats still write every time.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most a node's `last_seen_at` may lag behind its fetches.
const EVERY: Duration = Duration::from_secs(1);

/// The time and the key and models of each node's last recorded fetch.
#[derive(Debug, Default)]
pub struct NodesSeen {
    nodes: Mutex<HashMap<String, (Instant, u64)>>,
}

impl NodesSeen {
    /// Whether a fetch by `node_id` should write its row now; if so, it is noted as written
    /// (a failed write is made good by the next heartbeat, or the next due fetch).
    pub fn due(&self, node_id: &str, key_id: &str, models: &[String]) -> bool {
        let mut hasher = DefaultHasher::new();
        (key_id, models).hash(&mut hasher);
        let digest = hasher.finish();
        let now = Instant::now();
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        match nodes.get(node_id) {
            Some((at, seen)) if *seen == digest && now.duration_since(*at) < EVERY => false,
            _ => {
                nodes.insert(node_id.to_owned(), (now, digest));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_written_once_a_second_or_when_its_models_change() {
        let seen = NodesSeen::default();
        let models = vec!["m".to_owned()];
        assert!(seen.due("n", "k", &models), "the first fetch");
        assert!(!seen.due("n", "k", &models), "again at once");
        assert!(seen.due("other", "k", &models), "another node");
        assert!(
            seen.due("n", "k", &["m".to_owned(), "x".to_owned()]),
            "new models"
        );
        assert!(
            seen.due("n", "k2", &["m".to_owned(), "x".to_owned()]),
            "another key"
        );
        seen.nodes.lock().unwrap().get_mut("n").unwrap().0 -= EVERY;
        assert!(
            seen.due("n", "k2", &["m".to_owned(), "x".to_owned()]),
            "a second later"
        );
    }
}
