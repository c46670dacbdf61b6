//! The route table: which handler serves which method and path, and who may call it.

use super::error::ApiError;
use openbeepboop::{Endpoint, Role};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    Metrics,
    /// A request that becomes a job of this endpoint.
    Submit(Endpoint),
    ListJobs,
    GetJob(String),
    CancelJob(String),
    StreamJob(String),
    Poll,
    Models,
    /// `GET /v1/models/{model}`; the id is percent-decoded and may hold `/` and `:`.
    Model(String),
    /// `OPTIONS` on any known path: a CORS preflight, answered without a key.
    Preflight {
        allowed: &'static str,
    },
    Fetch,
    Heartbeat,
    NodeSubmit,
    /// `POST /internal/queue/stream`: its body is read as it comes (see `relay_in`).
    NodeStream,
    CreateKey,
    ListKeys,
    RevokeKey(String),
    KeyLimits(String),
    SetKeyLimits(String),
    /// `POST /v1/files`: its body is streamed, never read whole (see `upload`).
    CreateFile,
    ListFiles,
    GetFile(String),
    DeleteFile(String),
    FileContent(String),
    CreateBatch,
    ListBatches,
    GetBatch(String),
    CancelBatch(String),
    GetResponse(String),
    CancelResponse(String),
    DeleteResponse(String),
    ResponseInputItems(String),
    /// `GET /ui` and its files: open, since the page holds no data (its calls carry a key).
    Ui(String),
    Whoami,
    Overview,
    /// `GET /v1/dashboard/events`: the dashboard's live feed (Server-Sent Events).
    DashboardEvents,
    /// `GET /v1/jobs/export`: NDJSON, streamed.
    ExportJobs,
    RetryJobs,
    RetryJob(String),
    SetPriority(String),
    ListNodes,
    /// `POST /admin/nodes/{id}/drain` (true) and `…/undrain` (false).
    DrainNode(String, bool),
    RemoveNode(String),
}

/// Every [`Route::name`], and `unknown` for a request no route took: the metrics create
/// their series up front from this list.
pub const ROUTE_NAMES: &[&str] = &[
    "healthz",
    "metrics",
    "chat_completions",
    "embeddings",
    "completions",
    "responses",
    "get_response",
    "cancel_response",
    "delete_response",
    "response_input_items",
    "list_jobs",
    "get_job",
    "cancel_job",
    "stream_job",
    "poll",
    "models",
    "model",
    "preflight",
    "node_fetch",
    "node_heartbeat",
    "node_submit",
    "node_stream",
    "admin_keys",
    "admin_key",
    "admin_key_limits",
    "create_file",
    "list_files",
    "get_file",
    "delete_file",
    "file_content",
    "create_batch",
    "list_batches",
    "get_batch",
    "cancel_batch",
    "ui",
    "dashboard_whoami",
    "dashboard_overview",
    "dashboard_events",
    "export_jobs",
    "admin_jobs_retry",
    "admin_job_retry",
    "admin_job_priority",
    "admin_nodes",
    "admin_node_drain",
    "admin_node",
    "unknown",
];

const USERS: &[Role] = &[Role::User, Role::Admin];
const NODES: &[Role] = &[Role::Node];
const ADMINS: &[Role] = &[Role::Admin];

impl Route {
    /// The roles allowed to call the route; `None` for the open ones.
    pub fn roles(&self) -> Option<&'static [Role]> {
        match self {
            Route::Health | Route::Metrics | Route::Preflight { .. } | Route::Ui(_) => None,
            Route::Submit(_)
            | Route::ListJobs
            | Route::GetJob(_)
            | Route::CancelJob(_)
            | Route::StreamJob(_)
            | Route::Poll
            | Route::Models
            | Route::Model(_)
            | Route::CreateFile
            | Route::ListFiles
            | Route::GetFile(_)
            | Route::DeleteFile(_)
            | Route::FileContent(_)
            | Route::CreateBatch
            | Route::ListBatches
            | Route::GetBatch(_)
            | Route::CancelBatch(_)
            | Route::GetResponse(_)
            | Route::CancelResponse(_)
            | Route::DeleteResponse(_)
            | Route::ResponseInputItems(_)
            | Route::Whoami
            | Route::Overview
            | Route::DashboardEvents
            | Route::ExportJobs => Some(USERS),
            Route::Fetch | Route::Heartbeat | Route::NodeSubmit | Route::NodeStream => Some(NODES),
            Route::CreateKey
            | Route::ListKeys
            | Route::RevokeKey(_)
            | Route::KeyLimits(_)
            | Route::SetKeyLimits(_)
            | Route::RetryJobs
            | Route::RetryJob(_)
            | Route::SetPriority(_)
            | Route::ListNodes
            | Route::DrainNode(..)
            | Route::RemoveNode(_) => Some(ADMINS),
        }
    }

    /// A short, bounded name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Route::Health => "healthz",
            Route::Metrics => "metrics",
            Route::Submit(Endpoint::ChatCompletions) => "chat_completions",
            Route::Submit(Endpoint::Embeddings) => "embeddings",
            Route::Submit(Endpoint::Completions) => "completions",
            Route::Submit(Endpoint::Responses) => "responses",
            Route::GetResponse(_) => "get_response",
            Route::CancelResponse(_) => "cancel_response",
            Route::DeleteResponse(_) => "delete_response",
            Route::ResponseInputItems(_) => "response_input_items",
            Route::ListJobs => "list_jobs",
            Route::GetJob(_) => "get_job",
            Route::CancelJob(_) => "cancel_job",
            Route::StreamJob(_) => "stream_job",
            Route::Poll => "poll",
            Route::Models => "models",
            Route::Model(_) => "model",
            Route::Preflight { .. } => "preflight",
            Route::Fetch => "node_fetch",
            Route::Heartbeat => "node_heartbeat",
            Route::NodeSubmit => "node_submit",
            Route::NodeStream => "node_stream",
            Route::CreateKey | Route::ListKeys => "admin_keys",
            Route::RevokeKey(_) => "admin_key",
            Route::KeyLimits(_) | Route::SetKeyLimits(_) => "admin_key_limits",
            Route::CreateFile => "create_file",
            Route::ListFiles => "list_files",
            Route::GetFile(_) => "get_file",
            Route::DeleteFile(_) => "delete_file",
            Route::FileContent(_) => "file_content",
            Route::CreateBatch => "create_batch",
            Route::ListBatches => "list_batches",
            Route::GetBatch(_) => "get_batch",
            Route::CancelBatch(_) => "cancel_batch",
            Route::Ui(_) => "ui",
            Route::Whoami => "dashboard_whoami",
            Route::Overview => "dashboard_overview",
            Route::DashboardEvents => "dashboard_events",
            Route::ExportJobs => "export_jobs",
            Route::RetryJobs => "admin_jobs_retry",
            Route::RetryJob(_) => "admin_job_retry",
            Route::SetPriority(_) => "admin_job_priority",
            Route::ListNodes => "admin_nodes",
            Route::DrainNode(..) => "admin_node_drain",
            Route::RemoveNode(_) => "admin_node",
        }
    }
}

/// Finds the route of a request: 404 for an unknown path, 405 for a known path with the
/// wrong method.
pub fn resolve(method: &str, path: &str) -> Result<Route, ApiError> {
    // HEAD is GET without the content (RFC 9110 §9.3.2); pingora leaves the content out.
    let asked = method;
    let method = if method == "HEAD" { "GET" } else { method };
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let (allowed, route): (&'static str, Option<Route>) = match segments.as_slice() {
        ["healthz"] => ("GET", (method == "GET").then_some(Route::Health)),
        ["metrics"] => ("GET", (method == "GET").then_some(Route::Metrics)),
        ["v1", "chat", "completions"] => (
            "POST",
            (method == "POST").then_some(Route::Submit(Endpoint::ChatCompletions)),
        ),
        ["v1", "embeddings"] => (
            "POST",
            (method == "POST").then_some(Route::Submit(Endpoint::Embeddings)),
        ),
        ["v1", "completions"] => (
            "POST",
            (method == "POST").then_some(Route::Submit(Endpoint::Completions)),
        ),
        ["v1", "responses"] => (
            "POST",
            (method == "POST").then_some(Route::Submit(Endpoint::Responses)),
        ),
        ["v1", "responses", id] => (
            "GET, DELETE",
            match method {
                "GET" => Some(Route::GetResponse((*id).to_owned())),
                "DELETE" => Some(Route::DeleteResponse((*id).to_owned())),
                _ => None,
            },
        ),
        ["v1", "responses", id, "cancel"] => (
            "POST",
            (method == "POST").then(|| Route::CancelResponse((*id).to_owned())),
        ),
        ["v1", "responses", id, "input_items"] => (
            "GET",
            (method == "GET").then(|| Route::ResponseInputItems((*id).to_owned())),
        ),
        ["ui"] => ("GET", (method == "GET").then(|| Route::Ui(String::new()))),
        ["ui", file] => (
            "GET",
            (method == "GET").then(|| Route::Ui((*file).to_owned())),
        ),
        ["v1", "dashboard", "whoami"] => ("GET", (method == "GET").then_some(Route::Whoami)),
        ["v1", "dashboard", "overview"] => ("GET", (method == "GET").then_some(Route::Overview)),
        ["v1", "dashboard", "events"] => {
            ("GET", (method == "GET").then_some(Route::DashboardEvents))
        }
        ["v1", "jobs", "export"] => ("GET", (method == "GET").then_some(Route::ExportJobs)),
        ["v1", "jobs"] => ("GET", (method == "GET").then_some(Route::ListJobs)),
        ["v1", "jobs", id] => (
            "GET",
            (method == "GET").then(|| Route::GetJob((*id).to_owned())),
        ),
        ["v1", "jobs", id, "cancel"] => (
            "POST",
            (method == "POST").then(|| Route::CancelJob((*id).to_owned())),
        ),
        ["v1", "jobs", id, "stream"] => (
            "GET",
            (method == "GET").then(|| Route::StreamJob((*id).to_owned())),
        ),
        ["v1", "results", "poll"] => ("POST", (method == "POST").then_some(Route::Poll)),
        ["v1", "models"] => ("GET", (method == "GET").then_some(Route::Models)),
        ["v1", "models", id @ ..] if !id.is_empty() => (
            "GET",
            (method == "GET").then(|| {
                Route::Model(
                    percent_encoding::percent_decode_str(&id.join("/"))
                        .decode_utf8_lossy()
                        .into_owned(),
                )
            }),
        ),
        ["v1", "files"] => (
            "GET, POST",
            match method {
                "GET" => Some(Route::ListFiles),
                "POST" => Some(Route::CreateFile),
                _ => None,
            },
        ),
        ["v1", "files", id] => (
            "GET, DELETE",
            match method {
                "GET" => Some(Route::GetFile((*id).to_owned())),
                "DELETE" => Some(Route::DeleteFile((*id).to_owned())),
                _ => None,
            },
        ),
        ["v1", "files", id, "content"] => (
            "GET",
            (method == "GET").then(|| Route::FileContent((*id).to_owned())),
        ),
        ["v1", "batches"] => (
            "GET, POST",
            match method {
                "GET" => Some(Route::ListBatches),
                "POST" => Some(Route::CreateBatch),
                _ => None,
            },
        ),
        ["v1", "batches", id] => (
            "GET",
            (method == "GET").then(|| Route::GetBatch((*id).to_owned())),
        ),
        ["v1", "batches", id, "cancel"] => (
            "POST",
            (method == "POST").then(|| Route::CancelBatch((*id).to_owned())),
        ),
        ["internal", "queue", "fetch"] => ("POST", (method == "POST").then_some(Route::Fetch)),
        ["internal", "queue", "heartbeat"] => {
            ("POST", (method == "POST").then_some(Route::Heartbeat))
        }
        ["internal", "queue", "submit"] => {
            ("POST", (method == "POST").then_some(Route::NodeSubmit))
        }
        ["internal", "queue", "stream"] => {
            ("POST", (method == "POST").then_some(Route::NodeStream))
        }
        ["admin", "jobs", "retry"] => ("POST", (method == "POST").then_some(Route::RetryJobs)),
        ["admin", "jobs", id, "retry"] => (
            "POST",
            (method == "POST").then(|| Route::RetryJob((*id).to_owned())),
        ),
        ["admin", "jobs", id, "priority"] => (
            "POST",
            (method == "POST").then(|| Route::SetPriority((*id).to_owned())),
        ),
        ["admin", "nodes"] => ("GET", (method == "GET").then_some(Route::ListNodes)),
        ["admin", "nodes", id] => (
            "DELETE",
            (method == "DELETE").then(|| Route::RemoveNode((*id).to_owned())),
        ),
        ["admin", "nodes", id, action @ ("drain" | "undrain")] => (
            "POST",
            (method == "POST").then(|| Route::DrainNode((*id).to_owned(), *action == "drain")),
        ),
        ["admin", "keys"] => (
            "GET, POST",
            match method {
                "GET" => Some(Route::ListKeys),
                "POST" => Some(Route::CreateKey),
                _ => None,
            },
        ),
        ["admin", "keys", id] => (
            "DELETE",
            (method == "DELETE").then(|| Route::RevokeKey((*id).to_owned())),
        ),
        ["admin", "keys", id, "limits"] => (
            "GET, PUT",
            match method {
                "GET" => Some(Route::KeyLimits((*id).to_owned())),
                "PUT" => Some(Route::SetKeyLimits((*id).to_owned())),
                _ => None,
            },
        ),
        _ => {
            return Err(ApiError::NotFound(format!(
                "no route for `{method} {}`",
                truncate(path)
            )));
        }
    };
    if method == "OPTIONS" {
        return Ok(Route::Preflight { allowed });
    }
    route.ok_or_else(|| ApiError::MethodNotAllowed {
        method: asked.to_owned(),
        path: truncate(path).to_owned(),
        allowed,
    })
}

/// Paths are echoed in errors; a huge one is cut to keep the error small.
fn truncate(path: &str) -> &str {
    let mut end = path.len().min(200);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_paths_resolve_and_others_get_404_or_405() {
        assert_eq!(
            resolve("GET", "/v1/jobs/job-1/").unwrap(),
            Route::GetJob("job-1".into())
        );
        assert_eq!(
            resolve("DELETE", "/admin/keys/key_x").unwrap(),
            Route::RevokeKey("key_x".into())
        );
        assert_eq!(resolve("GET", "/v1/jobs/a/b").unwrap_err().status(), 404);
        let wrong = resolve("PUT", "/admin/keys").unwrap_err();
        assert_eq!(wrong.status(), 405);
        assert!(wrong.to_string().contains("GET, POST"));
        assert!(
            resolve("GET", &"/x".repeat(500))
                .unwrap_err()
                .to_string()
                .len()
                < 300
        );
        assert_eq!(Route::Health.roles(), None);
        assert_eq!(
            resolve("GET", "/v1/models/org/llama3.1:8b").unwrap(),
            Route::Model("org/llama3.1:8b".into())
        );
        assert_eq!(
            resolve("GET", "/v1/models/org%2Fllama3.1%3A8b").unwrap(),
            Route::Model("org/llama3.1:8b".into())
        );
        assert_eq!(
            resolve("OPTIONS", "/v1/chat/completions").unwrap(),
            Route::Preflight { allowed: "POST" }
        );
        assert_eq!(resolve("OPTIONS", "/nope").unwrap_err().status(), 404);
        assert_eq!(resolve("POST", "/v1/files").unwrap(), Route::CreateFile);
        assert_eq!(
            resolve("HEAD", "/v1/files/file-1/content").unwrap(),
            Route::FileContent("file-1".into())
        );
        assert_eq!(
            resolve("DELETE", "/v1/files/file-1").unwrap(),
            Route::DeleteFile("file-1".into())
        );
        assert_eq!(
            resolve("PUT", "/v1/files/file-1").unwrap_err().status(),
            405
        );
        assert_eq!(
            resolve("DELETE", "/v1/responses/resp_1").unwrap(),
            Route::DeleteResponse("resp_1".into())
        );
        assert_eq!(
            resolve("GET", "/v1/responses/resp_1/input_items").unwrap(),
            Route::ResponseInputItems("resp_1".into())
        );
        assert_eq!(resolve("GET", "/v1/responses").unwrap_err().status(), 405);
    }

    #[test]
    fn every_route_name_is_listed_for_the_metrics() {
        let id = || String::from("x");
        let routes = [
            Route::Health,
            Route::Metrics,
            Route::Submit(Endpoint::ChatCompletions),
            Route::Submit(Endpoint::Embeddings),
            Route::Submit(Endpoint::Completions),
            Route::Submit(Endpoint::Responses),
            Route::GetResponse(id()),
            Route::CancelResponse(id()),
            Route::DeleteResponse(id()),
            Route::ResponseInputItems(id()),
            Route::ListJobs,
            Route::GetJob(id()),
            Route::CancelJob(id()),
            Route::StreamJob(id()),
            Route::Poll,
            Route::Models,
            Route::Model(id()),
            Route::Preflight { allowed: "GET" },
            Route::Fetch,
            Route::Heartbeat,
            Route::NodeSubmit,
            Route::NodeStream,
            Route::CreateKey,
            Route::ListKeys,
            Route::RevokeKey(id()),
            Route::KeyLimits(id()),
            Route::SetKeyLimits(id()),
            Route::CreateFile,
            Route::ListFiles,
            Route::GetFile(id()),
            Route::DeleteFile(id()),
            Route::FileContent(id()),
            Route::CreateBatch,
            Route::ListBatches,
            Route::GetBatch(id()),
            Route::CancelBatch(id()),
        ];
        for route in routes {
            assert!(ROUTE_NAMES.contains(&route.name()), "{}", route.name());
        }
    }
}
