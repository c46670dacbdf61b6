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
    /// The upload carries a fresh Idempotency-Key, which the client's own retries reuse: a
    /// retried upload is stored once, and uploading the same bytes again is a new file.
    pub async fn create(&self, upload: Upload, purpose: FilePurpose) -> Result<FileObject, Error> {
        let (filename, bytes) = upload.read().await?;
        let key = idempotency_key();
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

/// A fresh Idempotency-Key for one call; the client's retries of that call reuse it.
pub(super) fn idempotency_key() -> String {
    format!("obb-{}", uuid::Uuid::new_v4().simple())
}
