use super::*;
use crate::queue::{BatchFile, DepthRow};
use openbeepboop::{BatchStatus, Endpoint, JobStatus};
use std::time::Duration;

/// Asserts that the exposition of `snapshot` holds every one of `lines`.
fn assert_renders(metrics: &Metrics, snapshot: &QueueSnapshot, lines: &[&str]) {
    let text =
        String::from_utf8(metrics.render(snapshot, crate::relay::RelayStats::default())).unwrap();
    for line in lines {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
}

#[test]
fn bounded_series_render_at_zero_before_any_event() {
    let metrics = Metrics::new();
    let empty = QueueSnapshot::default();
    assert_renders(
        &metrics,
        &empty,
        &[
            "obb_http_errors_total{kind=\"unavailable\"} 0",
            "obb_http_errors_total{kind=\"job_failed\"} 0",
            "obb_http_requests_total{class=\"5xx\",route=\"chat_completions\"} 0",
            "obb_http_request_duration_seconds_count{route=\"node_fetch\"} 0",
            "obb_job_cancellations_total 0",
            "obb_job_expirations_total 0",
            "obb_gateway_overhead_seconds_count 0",
            "obb_batches{status=\"validating\"} 0",
            "obb_batches{status=\"cancelled\"} 0",
            "obb_batch_lines_finished_total{status=\"failed\"} 0",
            "obb_batch_output_bytes_total{file=\"error\"} 0",
        ],
    );
    let submitted = [QueueEvent::Submitted {
        model: "m".into(),
        endpoint: Endpoint::ChatCompletions,
    }];
    metrics.record_commit(
        CommitStats {
            ops: 1,
            latency: Duration::ZERO,
        },
        &submitted,
    );
    assert_renders(
        &metrics,
        &empty,
        &[
            "obb_job_retries_total{model=\"m\"} 0",
            "obb_lease_expirations_total{model=\"m\"} 0",
            "obb_jobs_finished_total{endpoint=\"/v1/embeddings\",model=\"m\",status=\"failed\"} 0",
            "obb_tokens_total{kind=\"completion\",model=\"m\"} 0",
        ],
    );
}

#[test]
fn events_and_snapshots_appear_in_the_exposition() {
    let metrics = Metrics::new();
    metrics.record_commit(
        CommitStats {
            ops: 3,
            latency: Duration::from_millis(2),
        },
        &[
            QueueEvent::Submitted {
                model: "m".into(),
                endpoint: Endpoint::Embeddings,
            },
            QueueEvent::Leased {
                model: "m".into(),
                waited_ms: 40,
            },
            QueueEvent::Finished {
                owner: "k".into(),
                model: "m".into(),
                endpoint: Endpoint::ChatCompletions,
                status: JobStatus::Cancelled,
                node: Some("n1".into()),
                processing_ms: Some(5),
                total_ms: 50,
            },
            QueueEvent::Finished {
                owner: "k".into(),
                model: "m".into(),
                endpoint: Endpoint::ChatCompletions,
                status: JobStatus::Expired,
                node: None,
                processing_ms: None,
                total_ms: 50,
            },
            QueueEvent::Tokens {
                model: "m".into(),
                prompt: 7,
                completion: 3,
                owner: "k".into(),
                estimated: 0,
            },
            QueueEvent::Retried { model: "m".into() },
            QueueEvent::LeaseExpired { model: "m".into() },
        ],
    );
    metrics.record_request(
        "poll",
        503,
        Some("unavailable"),
        Duration::from_millis(3),
        Duration::ZERO,
    );
    let snapshot = QueueSnapshot {
        depth: vec![
            DepthRow {
                status: JobStatus::Queued,
                model: "m".into(),
                priority: 1,
                count: 4,
            },
            DepthRow {
                status: JobStatus::Processing,
                model: "m".into(),
                priority: 3,
                count: 2,
            },
        ],
        oldest_queued_ms: Some(1500),
        nodes_alive: 2,
        batches: Vec::new(),
        labelled_keys: vec![crate::queue::LabelledKey {
            label: "team_a".into(),
            queued: 5,
            running: 1,
        }],
    };
    assert_renders(
        &metrics,
        &snapshot,
        &[
            "obb_key_jobs{key=\"team_a\",status=\"queued\"} 5",
            "obb_key_jobs{key=\"team_a\",status=\"processing\"} 1",
            "obb_leases_deferred_total{reason=\"max_concurrent_jobs\"} 0",
            "obb_jobs_submitted_total{endpoint=\"/v1/embeddings\",model=\"m\"} 1",
            "obb_jobs_submitted_total{endpoint=\"/v1/chat/completions\",model=\"m\"} 0",
            "obb_tokens_total{kind=\"prompt\",model=\"m\"} 7",
            "obb_queue_depth{model=\"m\",priority=\"1\",status=\"queued\"} 4",
            "obb_jobs_in_flight 2",
            "obb_oldest_queued_job_age_seconds 1.5",
            "obb_nodes_alive 2",
            "obb_job_cancellations_total 1",
            "obb_job_expirations_total 1",
            "obb_http_requests_total{class=\"5xx\",route=\"poll\"} 1",
            "obb_sqlite_commit_batch_size_count 1",
            "obb_node_jobs_finished_total{node=\"n1\",status=\"cancelled\"} 1",
        ],
    );
}

#[test]
fn batch_events_and_counts_appear_in_the_exposition() {
    let metrics = Metrics::new();
    metrics.record_commit(
        CommitStats {
            ops: 2,
            latency: Duration::ZERO,
        },
        &[
            QueueEvent::BatchLineFinished {
                status: JobStatus::Completed,
            },
            QueueEvent::BatchLineFinished {
                status: JobStatus::Completed,
            },
            QueueEvent::BatchLineFinished {
                status: JobStatus::Failed,
            },
            QueueEvent::BatchFileStored {
                file: BatchFile::Output,
                bytes: 1200,
            },
            QueueEvent::BatchFileStored {
                file: BatchFile::Error,
                bytes: 300,
            },
        ],
    );
    let snapshot = QueueSnapshot {
        batches: vec![(BatchStatus::InProgress, 2), (BatchStatus::Completed, 5)],
        ..QueueSnapshot::default()
    };
    assert_renders(
        &metrics,
        &snapshot,
        &[
            "obb_batches{status=\"in_progress\"} 2",
            "obb_batches{status=\"completed\"} 5",
            "obb_batches{status=\"failed\"} 0",
            "obb_batch_lines_finished_total{status=\"completed\"} 2",
            "obb_batch_lines_finished_total{status=\"failed\"} 1",
            "obb_batch_output_bytes_total{file=\"output\"} 1200",
            "obb_batch_output_bytes_total{file=\"error\"} 300",
        ],
    );
    // A status whose last batch is gone reads 0 again rather than its old count.
    assert_renders(
        &metrics,
        &QueueSnapshot::default(),
        &["obb_batches{status=\"in_progress\"} 0"],
    );
}
