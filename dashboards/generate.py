#!/usr/bin/env python3
"""Writes the Grafana dashboards of OpenBeepBoop and the panel table of README.md.

Run `python3 dashboards/generate.py` after changing a panel; the JSON files are committed.
Every panel's PromQL is evaluated against a real Prometheus by `node/tests/e2e/observability.rs`.
"""
import json
import pathlib

HERE = pathlib.Path(__file__).parent
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
RI = "$__rate_interval"


def q(p, metric, by="le"):
    return f"histogram_quantile({p}, sum by ({by}) (rate({metric}_bucket[{RI}])))"


DASHBOARDS = {
    "overview": ("OpenBeepBoop / Overview", [
        ("Jobs finished per second, by status", f"sum by (status) (rate(obb_jobs_finished_total[{RI}]))", "{{status}}", "ops",
         "Throughput: jobs reaching a final status (completed, failed, cancelled, expired) per second."),
        ("Jobs submitted per second, by model", f"sum by (model) (rate(obb_jobs_submitted_total[{RI}]))", "{{model}}", "ops",
         "New jobs accepted by the gateway (each durable 202 or waited submit)."),
        ("End-to-end latency p50", q(0.5, "obb_job_end_to_end_seconds"), "p50", "s",
         "Median time from submit to final status."),
        ("End-to-end latency p95", q(0.95, "obb_job_end_to_end_seconds"), "p95", "s",
         "95th percentile of submit-to-final-status time."),
        ("End-to-end latency p99", q(0.99, "obb_job_end_to_end_seconds"), "p99", "s",
         "99th percentile of submit-to-final-status time."),
        ("Processing time p95", q(0.95, "obb_job_processing_seconds"), "p95", "s",
         "Time from the last lease to the result, i.e. node plus upstream time."),
        ("Errors per second, by kind", f"sum by (kind) (rate(obb_http_errors_total[{RI}]))", "{{kind}}", "ops",
         "Error answers of the gateway by kind: invalid_request, unauthenticated, forbidden, not_found, job_failed, unavailable, internal, ..."),
        ("HTTP requests per second, by route and class", f"sum by (route, class) (rate(obb_http_requests_total[{RI}]))", "{{route}} {{class}}", "reqps",
         "Every answered request, by route and status class (2xx, 4xx, 5xx)."),
        ("Tokens per second, by model and kind", f"sum by (model, kind) (rate(obb_tokens_total[{RI}]))", "{{model}} {{kind}}", "short",
         "Prompt and completion tokens, read from the completions' usage."),
        ("Gateway overhead p99", q(0.99, "obb_gateway_overhead_seconds"), "p99", "s",
         "Time the gateway itself spends on a request, long-poll waits excluded."),
        ("SQLite operations per commit", f"sum(rate(obb_sqlite_commit_batch_size_sum[{RI}])) / sum(rate(obb_sqlite_commit_batch_size_count[{RI}]))", "ops/commit", "short",
         "Average group-commit size: how many writes share one fsync."),
        ("SQLite commit latency p99", q(0.99, "obb_sqlite_commit_duration_seconds"), "p99", "s",
         "Time of one durable (synchronous=FULL) group commit."),
    ]),
    "queue": ("OpenBeepBoop / Queue", [
        ("Queued jobs by model and priority", 'sum by (model, priority) (obb_queue_depth{status="queued"})', "{{model}} p{{priority}}", "short",
         "Jobs waiting for a node, by model and priority (1 runs first)."),
        ("Processing jobs by model", 'sum by (model) (obb_queue_depth{status="processing"})', "{{model}}", "short",
         "Jobs leased to nodes now, by model."),
        ("Queue wait p95 by model", q(0.95, "obb_job_queue_wait_seconds", "le, model"), "{{model}}", "s",
         "95th percentile of the time from submit to lease."),
        ("Oldest queued job", "max(obb_oldest_queued_job_age_seconds)", "age", "s",
         "Age of the oldest job still queued; a steady rise means no node serves its model or nodes are saturated."),
        ("Expirations per second", f"sum(rate(obb_job_expirations_total[{RI}]))", "expired", "ops",
         "Queued jobs that outlived their TTL before any node ran them."),
        ("Cancellations per second", f"sum(rate(obb_job_cancellations_total[{RI}]))", "cancelled", "ops",
         "Jobs cancelled by their owners."),
        ("Retries per second, by model", f"sum by (model) (rate(obb_job_retries_total[{RI}]))", "{{model}}", "ops",
         "Jobs sent back to the queue: retryable upstream failures and lapsed leases."),
        ("Batches by status", "sum by (status) (obb_batches)", "{{status}}", "short",
         "Batches of the Batch API stored now, by status: validating, in_progress, finalizing, completed, failed, expired, cancelling, cancelled."),
        ("Batch lines finished per second, by status", f"sum by (status) (rate(obb_batch_lines_finished_total[{RI}]))", "{{status}}", "ops",
         "Batch lines reaching a final status; the failed share is the batches' error rate (waiting and running lines are in the queue's depth)."),
        ("Batch file bytes written per second", f"sum by (file) (rate(obb_batch_output_bytes_total[{RI}]))", "{{file}}", "Bps",
         "Bytes written into batches' output and error files as they finish."),
    ]),
    "nodes": ("OpenBeepBoop / Nodes", [
        ("Nodes alive", "max(obb_nodes_alive)", "alive", "short",
         "Nodes that fetched or heartbeated within node_alive_seconds."),
        ("Jobs in flight (gateway view)", "max(obb_jobs_in_flight)", "in flight", "short",
         "Jobs leased to any node now, as the gateway counts them."),
        ("Lease expirations per second", f"sum by (model) (rate(obb_lease_expirations_total[{RI}]))", "{{model}}", "ops",
         "Leases that lapsed without a heartbeat: crashed, killed or partitioned nodes."),
        ("Jobs completed per second, by node", f'sum by (node) (rate(obb_node_jobs_finished_total{{status="completed"}}[{RI}]))', "{{node}}", "ops",
         "Per-node throughput, as the gateway records it."),
        ("Jobs in flight, by node", "sum by (instance) (obb_node_jobs_in_flight)", "{{instance}}", "short",
         "Upstream calls each node is running now (from the node's own metrics)."),
        ("Upstream latency p95", q(0.95, "obb_node_upstream_duration_seconds", "le, instance"), "{{instance}}", "s",
         "95th percentile of a job's upstream time on each node, retries included."),
        ("Upstream errors per second, by kind", f"sum by (kind) (rate(obb_node_upstream_errors_total[{RI}]))", "{{kind}}", "ops",
         "Failed upstream jobs: rate_limited, server_error, unreachable, rejected."),
        ("Node jobs per second, by outcome", f"sum by (instance, outcome) (rate(obb_node_jobs_total[{RI}]))", "{{instance}} {{outcome}}", "ops",
         "Jobs each node finished, done or failed."),
        ("Spool size, by node", "sum by (instance) (obb_node_spool_size)", "{{instance}}", "short",
         "Results a node holds while the gateway is unreachable; it should return to 0."),
    ]),
}


def dashboard(uid, title, panels):
    out = []
    for i, (name, expr, legend, unit, description) in enumerate(panels):
        out.append({
            "id": i + 1,
            "type": "timeseries",
            "title": name,
            "description": description,
            "datasource": DS,
            "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            "targets": [{"datasource": DS, "expr": expr, "legendFormat": legend, "refId": "A"}],
        })
    return {
        "uid": f"obb-{uid}",
        "title": title,
        "tags": ["openbeepboop"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{
            "name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
            "query": "prometheus", "current": {}, "hide": 0,
        }]},
        "panels": out,
    }


def main():
    rows = []
    for uid, (title, panels) in DASHBOARDS.items():
        path = HERE / f"{uid}.json"
        path.write_text(json.dumps(dashboard(uid, title, panels), indent=2) + "\n")
        rows.append(f"\n### {title} (`{uid}.json`)\n\n| panel | what it shows |\n|---|---|")
        rows.extend(f"| {name} | {description} |" for name, _, _, _, description in panels)
    readme = (HERE / "README.md").read_text()
    start, end = "<!-- panels:start -->", "<!-- panels:end -->"
    head, rest = readme.split(start, 1)
    _, tail = rest.split(end, 1)
    (HERE / "README.md").write_text(head + start + "\n" + "\n".join(rows) + "\n" + end + tail)


if __name__ == "__main__":
    main()
