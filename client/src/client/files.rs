//! The Files API of the Rust client (`/v1/files`): upload a Batch API input, read a file's
//! object and content, delete it. It must not know batches beyond the `batch` purpose.

use super::{Client, Error, REQUEST_TIMEOUT};
use crate::file::{FileDeleted, FileObject, FilePurpose};
use std::path::PathBuf;
use std::time::Duration;

/// How long an upload or a download may take: files run to 200 MiB.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);

/// What to upload: a file on disk, or bytes with the filename to give them (`.jsonl`).
#[derive(Debug, Clone)]
pub enum Upload {
    Path(PathBuf),
    Bytes { filename: String, bytes: Vec<u8> },
}

impl Upload {
    /// The filename and bytes of the upload, reading a path whole.
    pub(super) async fn read(self) -> Result<(String, Vec<u8>), Error> {
        match self {
            Upload::Bytes { filename, bytes } => Ok((filename, bytes)),
            Upload::Path(path) => {
                let bytes = tokio::fs::read(&path)
                    .await
                    .map_err(|e| Error::Input(format!("cannot read `{}`: {e}", path.display())))?;
                let filename = path
                    .file_name()
                    .map_or_else(|| "requests.jsonl".into(), |n| n.to_string_lossy());
                Ok((filename.into_owned(), bytes))
            }
        }
    }
}

pub struct Files<'a> {
    pub(super) client: &'a Client,
}

impl Files<'_> {
    /// Uploads with `purpose` (`batch` for Batch API inputs) and returns the file object.
    /// The upload carries an Idempotency-Key derived from its purpose, filename and bytes,
    /// so a retry, or the same upload again, stores the file once.
    pub async fn create(&self, upload: Upload, purpose: FilePurpose) -> Result<FileObject, Error> {
        let (filename, bytes) = upload.read().await?;
        let key = content_key(
            "file",
            &[purpose.as_str().as_bytes(), filename.as_bytes(), &bytes],
        );
        let boundary = format!("obb-{}", uuid::Uuid::new_v4().simple());
        let body = multipart(&boundary, purpose, &filename, &bytes);
        let (status, answer) = self
            .client
            .send_raw(
                reqwest::Method::POST,
                "/v1/files",
                Some((format!("multipart/form-data; boundary={boundary}"), body)),
                &[("Idempotency-Key", key)],
                TRANSFER_TIMEOUT,
            )
            .await?;
        serde_json::from_slice(&answer).map_err(|e| Error::ApiStatus {
            status,
            message: format!("unreadable file object: {e}"),
        })
    }

    pub async fn retrieve(&self, file_id: &str) -> Result<FileObject, Error> {
        self.client
            .get_json(&format!("/v1/files/{file_id}"), REQUEST_TIMEOUT)
            .await
    }

    /// The file's bytes.
    pub async fn content(&self, file_id: &str) -> Result<Vec<u8>, Error> {
        let path = format!("/v1/files/{file_id}/content");
        let (_, bytes) = self
            .client
            .send_raw(reqwest::Method::GET, &path, None, &[], TRANSFER_TIMEOUT)
            .await?;
        Ok(bytes)
    }

    pub async fn delete(&self, file_id: &str) -> Result<FileDeleted, Error> {
        let path = format!("/v1/files/{file_id}");
        self.client
            .send::<(), FileDeleted>(reqwest::Method::DELETE, &path, None, &[], REQUEST_TIMEOUT)
            .await
    }
}

/// A `multipart/form-data` body with `purpose` and `file` (as `application/jsonl`).
fn multipart(boundary: &str, purpose: FilePurpose, filename: &str, bytes: &[u8]) -> Vec<u8> {
    let filename = filename.replace(['"', '\r', '\n'], "_");
    let mut body = Vec::with_capacity(bytes.len() + 512);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             Content-Type: application/jsonl\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

/// An Idempotency-Key of `kind` derived from `parts`: FNV-1a, 128 bits, each part preceded
/// by its length so that no two splits of the same bytes collide.
pub(super) fn content_key(kind: &str, parts: &[&[u8]]) -> String {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut hash = OFFSET;
    for part in parts {
        for byte in (part.len() as u64).to_le_bytes().iter().chain(part.iter()) {
            hash ^= u128::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    format!("obb-{kind}-{hash:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_keys_follow_the_content_and_its_splits() {
        let key = content_key("file", &[b"batch", b"a.jsonl", b"{}"]);
        assert_eq!(key, content_key("file", &[b"batch", b"a.jsonl", b"{}"]));
        assert_ne!(key, content_key("file", &[b"batch", b"a.jsonl", b"{ }"]));
        assert_ne!(key, content_key("file", &[b"batcha", b".jsonl", b"{}"]));
        assert_ne!(key, content_key("batch", &[b"batch", b"a.jsonl", b"{}"]));
    }
}
