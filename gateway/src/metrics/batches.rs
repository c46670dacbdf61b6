//! The Batch API's metrics: batches by status (read at scrape time), batch lines that ended,
//! by status, and the bytes of the output and error files written.
//!
//! Lines are counted as they end rather than gauged by status: a line is a job, so the
//! lines waiting or running are already in `obb_queue_depth`, and a gauge would cost a
//! count over the jobs table at every scrape. What a panel needs of lines is their rate of
//! ending and the share that failed, which the counter gives.

use super::{Collectors, counter};
use crate::queue::{BatchFile, QueueEvent, QueueSnapshot};
use openbeepboop::{BatchStatus, JobStatus};
use prometheus::{IntCounterVec, IntGaugeVec, Opts};

pub struct BatchMetrics {
    batches: IntGaugeVec,
    lines_finished: IntCounterVec,
    output_bytes: IntCounterVec,
}

impl BatchMetrics {
    pub fn new() -> Self {
        let metrics = Self {
            batches: IntGaugeVec::new(
                Opts::new("obb_batches", "Batches stored now, by status."),
                &["status"],
            )
            .unwrap_or_else(|e| unreachable!("well-formed: {e}")),
            lines_finished: counter(
                "obb_batch_lines_finished_total",
                "Batch lines that reached a final status.",
                &["status"],
            ),
            output_bytes: counter(
                "obb_batch_output_bytes_total",
                "Bytes written into batches' output and error files.",
                &["file"],
            ),
        };
        for status in BatchStatus::ALL {
            metrics.batches.with_label_values(&[status.as_str()]);
        }
        for status in JobStatus::ALL.iter().filter(|s| s.is_final()) {
            metrics.lines_finished.with_label_values(&[status.as_str()]);
        }
        for file in BatchFile::ALL {
            metrics.output_bytes.with_label_values(&[file.as_str()]);
        }
        metrics
    }

    pub fn collectors(&self) -> Collectors {
        vec![
            Box::new(self.batches.clone()),
            Box::new(self.lines_finished.clone()),
            Box::new(self.output_bytes.clone()),
        ]
    }

    /// Records one committed event of the batches; the jobs' events are not theirs.
    pub fn record(&self, event: &QueueEvent) {
        match event {
            QueueEvent::BatchLineFinished { status } => {
                self.lines_finished
                    .with_label_values(&[status.as_str()])
                    .inc();
            }
            QueueEvent::BatchFileStored { file, bytes } => {
                self.output_bytes
                    .with_label_values(&[file.as_str()])
                    .inc_by(*bytes);
            }
            _ => {}
        }
    }

    /// Sets the batches' gauge from a snapshot; a status with no batch reads 0.
    pub fn set_gauges(&self, snapshot: &QueueSnapshot) {
        for status in BatchStatus::ALL {
            let count = snapshot
                .batches
                .iter()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, count)| *count);
            self.batches
                .with_label_values(&[status.as_str()])
                .set(count);
        }
    }
}
