//! The live relay's metrics (issue 18): chunks nodes relayed, frames refused by reason, and,
//! read at scrape time, the relays held, their subscribers and the bytes they keep.

use super::{Collectors, counter};
use crate::relay::RelayStats;
use prometheus::{IntCounter, IntCounterVec, IntGauge};

/// Why a relayed frame was refused: each ends the node's stream request.
pub const REFUSALS: [&str; 4] = ["stale", "cancelled", "gap", "malformed"];

pub struct StreamMetrics {
    chunks: IntCounter,
    keepalives: IntCounter,
    refused: IntCounterVec,
    relays: IntGauge,
    subscribers: IntGauge,
    replay_bytes: IntGauge,
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help)
        .unwrap_or_else(|e| unreachable!("metric `{name}` is well-formed: {e}"))
}

impl StreamMetrics {
    pub fn new() -> Self {
        let metrics = Self {
            chunks: IntCounter::new(
                "obb_stream_chunks_total",
                "Chunks nodes relayed live to the gateway's subscribers.",
            )
            .unwrap_or_else(|e| unreachable!("well-formed: {e}")),
            keepalives: IntCounter::new(
                "obb_stream_keepalives_total",
                "Keep-alive comments written to event streams (every `stream_keepalive_seconds` while a stream waits).",
            )
            .unwrap_or_else(|e| unreachable!("well-formed: {e}")),
            refused: counter(
                "obb_stream_frames_refused_total",
                "Relayed frames refused, by reason (stale, cancelled, gap, malformed).",
                &["reason"],
            ),
            relays: gauge(
                "obb_stream_relays",
                "Jobs whose relayed chunks are held now.",
            ),
            subscribers: gauge("obb_stream_subscribers", "Clients reading a relay now."),
            replay_bytes: gauge(
                "obb_stream_replay_bytes",
                "Bytes of relayed chunks held for late and resuming subscribers.",
            ),
        };
        for reason in REFUSALS {
            metrics.refused.with_label_values(&[reason]);
        }
        metrics
    }

    pub fn collectors(&self) -> Collectors {
        vec![
            Box::new(self.chunks.clone()),
            Box::new(self.keepalives.clone()),
            Box::new(self.refused.clone()),
            Box::new(self.relays.clone()),
            Box::new(self.subscribers.clone()),
            Box::new(self.replay_bytes.clone()),
        ]
    }

    pub fn chunk(&self) {
        self.chunks.inc();
    }

    pub fn keepalive(&self) {
        self.keepalives.inc();
    }

    /// `reason` is one of [`REFUSALS`].
    pub fn refused(&self, reason: &str) {
        self.refused.with_label_values(&[reason]).inc();
    }

    pub fn set_gauges(&self, stats: RelayStats) {
        self.relays.set(stats.relays as i64);
        self.subscribers.set(stats.subscribers as i64);
        self.replay_bytes.set(stats.bytes as i64);
    }
}
