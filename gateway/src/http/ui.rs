//! `GET /ui`: the dashboard's page, script and style, compiled into the binary from
//! `gateway/ui/` (docs/design/dashboard.md). `OBB_UI_DIR` serves them from a directory
//! instead, read at each request, for working on the page without a rebuild.

use super::error::ApiError;
use super::reply::Reply;

/// The files, by name under `/ui/`; the page itself is also `/ui`.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/style.css"),
    ),
];

/// `GET /ui` (`file` empty) and `GET /ui/{file}`.
pub fn serve(file: &str) -> Result<Reply, ApiError> {
    let name = if file.is_empty() { "index.html" } else { file };
    let (_, content_type, built_in) = FILES
        .iter()
        .find(|(known, _, _)| *known == name)
        .ok_or_else(|| ApiError::NotFound(format!("no dashboard file `{name}`")))?;
    let bytes = match std::env::var_os("OBB_UI_DIR") {
        Some(dir) => std::fs::read(std::path::Path::new(&dir).join(name)).map_err(|e| {
            ApiError::Internal(format!("cannot read `{name}` from OBB_UI_DIR: {e}"))
        })?,
        None => built_in.as_bytes().to_vec(),
    };
    Ok(Reply::raw(200, content_type, bytes)
        // The page runs only its own script and style, and talks only to this gateway.
        .header(
            "content-security-policy",
            "default-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'".to_owned(),
        )
        .header("x-content-type-options", "nosniff".to_owned())
        .header("cache-control", "no-cache".to_owned()))
}
