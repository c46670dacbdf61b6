//! The OpenAI endpoints a job can be: what the user called, which path the node calls on its
//! upstream, and what nodes say they serve.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The path a job was submitted to, and the path a node forwards it to on its upstream.
/// Spelt on the wire as the path itself (`"/v1/embeddings"`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum Endpoint {
    /// What every job was before jobs had kinds, and what a node that names none serves.
    #[default]
    #[serde(rename = "/v1/chat/completions")]
    ChatCompletions,
    #[serde(rename = "/v1/embeddings")]
    Embeddings,
    /// The legacy text completions.
    #[serde(rename = "/v1/completions")]
    Completions,
    #[serde(rename = "/v1/responses")]
    Responses,
}

impl Endpoint {
    /// Every endpoint, in a fixed order: the bounded values of the metrics' `endpoint` label.
    pub const ALL: [Endpoint; 4] = [
        Endpoint::ChatCompletions,
        Endpoint::Embeddings,
        Endpoint::Completions,
        Endpoint::Responses,
    ];

    /// The endpoints the gateway queues jobs for. A node serving all of these leases
    /// without an endpoint filter, so an endpoint that starts making jobs must join this list.
    pub const QUEUED: [Endpoint; 4] = Endpoint::ALL;

    /// The path, as users call it.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Responses => "/v1/responses",
        }
    }

    /// The path below an upstream's `/v1` base URL (`/embeddings`).
    pub fn upstream_path(self) -> &'static str {
        &self.as_str()["/v1".len()..]
    }

    /// The `object` of a job of this kind, as the user API shows it.
    pub fn job_object(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat.completion.job",
            Endpoint::Embeddings => "embedding.job",
            Endpoint::Completions => "text_completion.job",
            Endpoint::Responses => "response.job",
        }
    }

    /// A short name for logs: the path without `/v1/`.
    pub fn name(self) -> &'static str {
        &self.as_str()["/v1/".len()..]
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Endpoint::ALL
            .into_iter()
            .find(|endpoint| endpoint.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Endpoint::ALL.iter().map(|e| e.as_str()).collect();
                format!(
                    "unknown endpoint `{s}`; expected one of {}",
                    known.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_spelt_as_their_paths_everywhere() {
        for endpoint in Endpoint::ALL {
            let json = serde_json::to_string(&endpoint).unwrap();
            assert_eq!(json, format!("\"{}\"", endpoint.as_str()));
            assert_eq!(serde_json::from_str::<Endpoint>(&json).unwrap(), endpoint);
            assert_eq!(endpoint.as_str().parse::<Endpoint>(), Ok(endpoint));
            assert_eq!(
                format!("/v1{}", endpoint.upstream_path()),
                endpoint.as_str()
            );
        }
        assert_eq!(Endpoint::Embeddings.upstream_path(), "/embeddings");
        assert_eq!(Endpoint::ChatCompletions.name(), "chat/completions");
        assert!("/v1/images".parse::<Endpoint>().is_err());
        assert_eq!(Endpoint::default(), Endpoint::ChatCompletions);
    }
}
