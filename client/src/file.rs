//! File objects of the user API, `/v1/files`, as OpenAI shapes them (openai-python's
//! `FileObject`, `FileDeleted` and the cursor page of `files.list`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a file is for. Users upload `batch` inputs; the gateway writes `batch_output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilePurpose {
    Batch,
    BatchOutput,
}

impl FilePurpose {
    pub const ALL: [FilePurpose; 2] = [FilePurpose::Batch, FilePurpose::BatchOutput];

    pub fn as_str(self) -> &'static str {
        match self {
            FilePurpose::Batch => "batch",
            FilePurpose::BatchOutput => "batch_output",
        }
    }
}

impl fmt::Display for FilePurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FilePurpose {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FilePurpose::ALL
            .into_iter()
            .find(|purpose| purpose.as_str() == s)
            .ok_or_else(|| format!("unknown purpose `{s}`; expected batch or batch_output"))
    }
}

/// A stored file: OpenAI's `file` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileObject {
    /// `file-…`.
    pub id: String,
    /// Always `file`.
    pub object: String,
    /// The size in bytes.
    pub bytes: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, when the gateway deletes the file; `null` when it never does.
    pub expires_at: Option<i64>,
    pub filename: String,
    pub purpose: FilePurpose,
    /// Deprecated by OpenAI but still sent: always `processed` once stored.
    pub status: String,
    /// Deprecated by OpenAI: always `null`.
    pub status_details: Option<String>,
}

/// `GET /v1/files`: OpenAI's cursor page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<FileObject>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

/// `DELETE /v1/files/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDeleted {
    pub id: String,
    /// Always `file`.
    pub object: String,
    pub deleted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_round_trip_through_their_wire_names() {
        for purpose in FilePurpose::ALL {
            assert_eq!(purpose.as_str().parse::<FilePurpose>(), Ok(purpose));
            assert_eq!(
                serde_json::to_value(purpose).ok(),
                Some(serde_json::Value::from(purpose.as_str()))
            );
        }
        assert!("fine-tune".parse::<FilePurpose>().is_err());
    }
}
