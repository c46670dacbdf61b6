//! The Files API but its upload (`upload`): list, retrieve, delete, and the content,
//! streamed from disk. Another user's file is as absent as a missing one.

use super::Ctx;
use super::error::ApiError;
use super::reply::{Body, Reply};
use super::request::Request;
use crate::queue::{FileRecord, Order};
use bytes::BytesMut;
use openbeepboop::{FileDeleted, FileList, FilePurpose};
use pingora::protocols::http::ServerSession;
use tokio::io::AsyncReadExt;

/// OpenAI's page bounds of `GET /v1/files`: 1 to 10,000, and all of them by default.
const MAX_PAGE: usize = 10_000;
/// The size of each piece of a file written to the connection.
const READ_CHUNK: usize = 256 * 1024;

/// `GET /v1/files`.
pub async fn list(ctx: &Ctx<'_>, req: &Request) -> Result<Reply, ApiError> {
    let purpose = req
        .query_param("purpose")
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<FilePurpose>())
        .transpose()
        .map_err(|e| ApiError::invalid(e, "purpose".to_owned()))?;
    let limit = super::request::page_limit(req, MAX_PAGE, MAX_PAGE)?;
    let order = if super::request::descending(req)? {
        Order::Desc
    } else {
        Order::Asc
    };
    let after = req.query_param("after").map(str::to_owned);
    let (page, has_more) = ctx
        .state
        .queue
        .files()
        .list(ctx.visibility(), purpose, limit, order, after)
        .await?;
    let data: Vec<_> = page.iter().map(FileRecord::to_wire).collect();
    Ok(Reply::json(
        200,
        &FileList {
            object: "list".to_owned(),
            first_id: data.first().map(|f| f.id.clone()),
            last_id: data.last().map(|f| f.id.clone()),
            has_more,
            data,
        },
    ))
}

/// `GET /v1/files/{id}`.
pub async fn get(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    let record = ctx
        .state
        .queue
        .files()
        .get(id.to_owned(), ctx.visibility())
        .await?;
    Ok(Reply::json(200, &record.to_wire()))
}

/// `DELETE /v1/files/{id}`: the row, then the bytes.
pub async fn delete(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    let record = ctx
        .state
        .queue
        .files()
        .delete(id.to_owned(), ctx.visibility())
        .await?;
    Ok(Reply::json(
        200,
        &FileDeleted {
            id: record.id,
            object: "file".to_owned(),
            deleted: true,
        },
    ))
}

/// `GET /v1/files/{id}/content`: the bytes as stored, streamed.
pub async fn content(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    let stored = ctx
        .state
        .queue
        .files()
        .open(id.to_owned(), ctx.visibility())
        .await?;
    let mut reply = Reply {
        status: 200,
        headers: Vec::new(),
        body: Body::File {
            file: stored.file,
            len: stored.record.bytes,
        },
    };
    // Only a plain name is offered: one that needs quoting rules is left out.
    let name = &stored.record.filename;
    if name
        .chars()
        .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ')
    {
        reply = reply.header(
            "content-disposition",
            format!("attachment; filename=\"{name}\""),
        );
    }
    Ok(reply)
}

/// Writes a file reply: its head with `Content-Length` (pingora adds none), then its bytes
/// in pieces, none for `HEAD`. Returns whether the connection may be reused.
pub async fn write_content(
    session: &mut ServerSession,
    reply: (u16, &[(&'static str, String)]),
    file: &mut tokio::fs::File,
    len: u64,
    request_id: &str,
    head: bool,
) -> bool {
    let Some(mut header) = super::app::response_header(reply.0, reply.1, request_id) else {
        return false;
    };
    if header
        .insert_header("content-type", "application/octet-stream")
        .is_err()
        || header
            .insert_header("content-length", len.to_string())
            .is_err()
        || session.write_response_header(header).await.is_err()
    {
        return false;
    }
    if head {
        return session
            .write_response_body(bytes::Bytes::new(), true)
            .await
            .is_ok();
    }
    let mut left = len;
    while left > 0 {
        let mut buf = BytesMut::with_capacity(READ_CHUNK.min(left as usize));
        match file.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {
                left -= (n as u64).min(left);
                if session
                    .write_response_body(buf.freeze(), left == 0)
                    .await
                    .is_err()
                {
                    return false;
                }
            }
            // The file is shorter than its row says: the promised length cannot be kept.
            Ok(_) | Err(_) => {
                tracing::error!(request_id, left, "a stored file ended early");
                return false;
            }
        }
    }
    if len == 0 {
        return session
            .write_response_body(bytes::Bytes::new(), true)
            .await
            .is_ok();
    }
    true
}
