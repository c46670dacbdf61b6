//! The `jobs` and `nodes` commands' client of a running gateway's admin API: they act
//! through the gateway, not on the database, because the running gateway keeps the
//! queue's live state (its depth, fair share and wake-ups) in step with each change.

use crate::cli::{JobFilterArgs, RemoteArgs};
use futures_util::StreamExt;
use openbeepboop::{BulkRetry, BulkRetryRequest, ErrorEnvelope, Job, JobStatus, NodeInfo};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::io::Write;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The cause (reqwest's, which names the URL and the reason) follows in the chain.
    #[error("cannot reach the gateway at `{url}`")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The gateway answered with an error: its status and message.
    #[error("the gateway answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("cannot write the export: {0}")]
    Output(#[from] std::io::Error),
}

pub struct Remote {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Remote {
    pub fn new(args: &RemoteArgs) -> Result<Self, RemoteError> {
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        if let Some(path) = &args.ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                RemoteError::Usage(format!("cannot read `{}`: {e}", path.display()))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                RemoteError::Usage(format!(
                    "`{}` is not a PEM certificate: {e}",
                    path.display()
                ))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| RemoteError::Usage(format!("cannot build the HTTP client: {e}")))?;
        let key = args.key.clone().ok_or_else(|| {
            RemoteError::Usage(
                "no key: pass `--key` or set `OBB_ADMIN_KEY` (the key `obb-gateway setup` printed)"
                    .to_owned(),
            )
        })?;
        Ok(Self {
            http,
            base: args.url.trim_end_matches('/').to_owned(),
            key,
        })
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RemoteError> {
        let response = request
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|source| RemoteError::Transport {
                url: self.base.clone(),
                source,
            })?;
        let status = response.status().as_u16();
        if status >= 400 {
            let text = response.text().await.unwrap_or_default();
            let message = serde_json::from_str::<ErrorEnvelope>(&text)
                .map(|e| e.error.message)
                .unwrap_or(text);
            return Err(RemoteError::Api { status, message });
        }
        Ok(response)
    }

    async fn json<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, RemoteError> {
        let response = self.send(request).await?;
        let url = self.base.clone();
        response
            .json()
            .await
            .map_err(|source| RemoteError::Transport { url, source })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn retry(&self, id: &str) -> Result<Job, RemoteError> {
        let url = self.url(&format!("/admin/jobs/{}/retry", encode(id)));
        self.json(self.http.post(url)).await
    }

    pub async fn retry_matching(&self, filter: &JobFilterArgs) -> Result<u64, RemoteError> {
        let statuses = statuses(filter.status.as_deref())?;
        let body = BulkRetryRequest {
            status: statuses,
            model: filter.model.clone(),
            batch_id: filter.batch_id.clone(),
            since: filter.since,
            until: filter.until,
        };
        let done: BulkRetry = self
            .json(self.http.post(self.url("/admin/jobs/retry")).json(&body))
            .await?;
        Ok(done.retried)
    }

    pub async fn priority(&self, id: &str, priority: u8) -> Result<Job, RemoteError> {
        let url = self.url(&format!("/admin/jobs/{}/priority", encode(id)));
        self.json(self.http.post(url).json(&json!({ "priority": priority })))
            .await
    }

    /// Copies the export to `out` as it arrives; returns the bytes written.
    pub async fn export(
        &self,
        filter: &JobFilterArgs,
        key_id: Option<&str>,
        out: &mut impl Write,
    ) -> Result<u64, RemoteError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        let fields = [
            ("status", filter.status.clone()),
            ("model", filter.model.clone()),
            ("batch_id", filter.batch_id.clone()),
            ("key_id", key_id.map(str::to_owned)),
            ("since", filter.since.map(|s| s.to_string())),
            ("until", filter.until.map(|s| s.to_string())),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                query.push((name, value));
            }
        }
        let response = self
            .send(self.http.get(self.url("/v1/jobs/export")).query(&query))
            .await?;
        let mut body = response.bytes_stream();
        let mut written = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|source| RemoteError::Transport {
                url: self.base.clone(),
                source,
            })?;
            out.write_all(&chunk)?;
            written += chunk.len() as u64;
        }
        out.flush()?;
        Ok(written)
    }

    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, RemoteError> {
        #[derive(serde::Deserialize)]
        struct List {
            data: Vec<NodeInfo>,
        }
        let list: List = self.json(self.http.get(self.url("/admin/nodes"))).await?;
        Ok(list.data)
    }

    pub async fn drain(&self, id: &str, draining: bool) -> Result<NodeInfo, RemoteError> {
        let action = if draining { "drain" } else { "undrain" };
        let url = self.url(&format!("/admin/nodes/{}/{action}", encode(id)));
        self.json(self.http.post(url)).await
    }

    pub async fn remove(&self, id: &str) -> Result<(), RemoteError> {
        let url = self.url(&format!("/admin/nodes/{}", encode(id)));
        self.send(self.http.delete(url)).await.map(drop)
    }
}

/// What a path segment must escape: all but RFC 3986's unreserved characters, which ids
/// (`job-…`, `key_…`) are made of and the gateway reads as they are.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A path segment, percent-encoded.
fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string()
}

/// `--status a,b`, checked here so that a typo is told before any call.
fn statuses(text: Option<&str>) -> Result<Vec<JobStatus>, RemoteError> {
    text.map(|list| {
        list.split(',')
            .map(|s| s.trim().parse::<JobStatus>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| RemoteError::Usage(format!("--status: {e}")))
    })
    .transpose()
    .map(Option::unwrap_or_default)
}

/// One line a node for `nodes list`: id, alive or not, draining, in flight / capacity,
/// completed in the last hour, models.
pub fn node_line(node: &NodeInfo) -> String {
    format!(
        "{}\t{}\t{}\t{}/{}\t{}\t{}",
        node.id,
        if node.alive { "alive" } else { "gone" },
        if node.draining { "draining" } else { "active" },
        node.in_flight,
        node.capacity,
        node.completed_last_hour,
        node.models.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_checked_before_any_call() {
        assert_eq!(
            statuses(Some("failed, expired")).ok(),
            Some(vec![JobStatus::Failed, JobStatus::Expired])
        );
        assert!(
            matches!(statuses(Some("broken")), Err(RemoteError::Usage(m)) if m.contains("broken"))
        );
        assert_eq!(statuses(None).ok(), Some(Vec::new()));
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
        assert_eq!(encode("job-01_x.y~z"), "job-01_x.y~z");
    }
}
