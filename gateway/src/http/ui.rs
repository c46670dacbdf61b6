//! `GET /ui`: the dashboard's files, compiled into the binary from `gateway/ui/` (its
//! `tests/` left out) by rust-embed (docs/design/dashboard.md). `OBB_UI_DIR` serves them
//! from a directory instead, read at each request, for working on the page without a
//! rebuild. Only plain names of the kinds below are served: no paths, no hidden files.

use super::error::ApiError;
use super::reply::Reply;

#[derive(rust_embed::Embed)]
#[folder = "ui/"]
#[exclude = "tests/*"]
struct Files;

/// The content type of a file the dashboard is made of, by its extension.
fn content_type(name: &str) -> Option<&'static str> {
    let (_, extension) = name.rsplit_once('.')?;
    Some(match extension {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        _ => return None,
    })
}

/// `GET /ui` (`file` empty) and `GET /ui/{file}`.
pub fn serve(file: &str) -> Result<Reply, ApiError> {
    let name = if file.is_empty() { "index.html" } else { file };
    let missing = || ApiError::NotFound(format!("no dashboard file `{name}`"));
    let content_type = content_type(name)
        .filter(|_| !name.starts_with('.') && !name.contains(['/', '\\']))
        .ok_or_else(missing)?;
    let bytes = match std::env::var_os("OBB_UI_DIR") {
        Some(dir) => std::fs::read(std::path::Path::new(&dir).join(name)).map_err(|_| missing())?,
        None => Files::get(name).ok_or_else(missing)?.data.into_owned(),
    };
    Ok(Reply::raw(200, content_type, bytes)
        // The page runs only its own scripts and style, and talks only to this gateway.
        .header(
            "content-security-policy",
            "default-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'".to_owned(),
        )
        .header("x-content-type-options", "nosniff".to_owned())
        .header("cache-control", "no-cache".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_its_files_and_nothing_else_are_served() {
        assert!(serve("").is_ok() && serve("app.js").is_ok() && serve("style.css").is_ok());
        for refused in [
            "tests/conftest.py",
            "../Cargo.toml",
            ".hidden.js",
            "missing.js",
            "x.py",
        ] {
            assert!(serve(refused).is_err(), "{refused}");
        }
        assert!(
            Files::iter().all(|name| !name.starts_with("tests")),
            "the tests stay out"
        );
    }
}
