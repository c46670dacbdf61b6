//! `POST /v1/files`: a `multipart/form-data` upload streamed from the connection into the
//! file store, chunk by chunk, never held whole. The caller is authenticated from the
//! head before the body is read, and `Expect: 100-continue` is answered only then.
//! Refused uploads leave nothing behind: the store's `Upload` removes its part when dropped.
//! Reading the form and judging its fields know nothing of the connection or the store, so
//! [`parse_upload`] runs them on any bytes (the `multipart` fuzz target does).

use super::error::ApiError;
use super::reply::Reply;
use super::{State, body, routes::Route};
use crate::queue::{NewFile, StoreError, Upload};
use bytes::Bytes;
use futures_util::Stream;
use openbeepboop::FilePurpose;
use pingora::protocols::http::ServerSession;

/// Room in the body beside the file: the boundaries, part headers and the small fields.
const FORM_OVERHEAD: u64 = 64 * 1024;
/// The longest value of a text field.
const MAX_TEXT_FIELD: u64 = 1024;
const MAX_FILENAME: usize = 255;
/// OpenAI's bounds of `expires_after[seconds]`: an hour to 30 days.
const EXPIRY_SECONDS: std::ops::RangeInclusive<u64> = 3_600..=2_592_000;
/// How long a `batch` file is kept without `expires_after`: 30 days, as OpenAI does.
const BATCH_DEFAULT_EXPIRY: u64 = 2_592_000;
const FIELDS: [&str; 4] = [
    "file",
    "purpose",
    "expires_after[anchor]",
    "expires_after[seconds]",
];

/// What the form said: its text fields as sent, and its `file` part with its filename.
struct Form<P> {
    purpose: Option<String>,
    anchor: Option<String>,
    seconds: Option<String>,
    file: Option<(String, P)>,
}

/// The form judged: what the store keeps beside the bytes.
struct Accepted<P> {
    purpose: FilePurpose,
    expires_after: Option<u64>,
    filename: String,
    file: P,
}

/// Where the `file` part's bytes go: the store's `Upload`, or, for [`parse_upload`],
/// nowhere.
trait FilePart {
    fn bytes(&self) -> u64;
    fn write(&mut self, chunk: &[u8]) -> impl Future<Output = Result<(), StoreError>> + Send;
}

impl FilePart for Upload {
    fn bytes(&self) -> u64 {
        Upload::bytes(self)
    }

    fn write(&mut self, chunk: &[u8]) -> impl Future<Output = Result<(), StoreError>> + Send {
        Upload::write(self, chunk)
    }
}

/// A `file` part counted and dropped.
struct Counted(u64);

impl FilePart for Counted {
    fn bytes(&self) -> u64 {
        self.0
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.0 += chunk.len() as u64;
        Ok(())
    }
}

/// Receives an upload and answers with the stored `file` object. On an error the body may
/// be left unread, so the caller must not reuse the connection.
pub async fn receive(
    state: &State,
    session: &mut ServerSession,
    max_file: u64,
) -> Result<Reply, ApiError> {
    let roles = Route::CreateFile.roles().unwrap_or_default();
    let principal = body::authenticate_head(state, session, roles).await?;
    let mut reply = store_upload(state, session, max_file, &principal).await?;
    reply
        .headers
        .extend(super::user::rate_headers(state, Some(&principal)));
    Ok(reply)
}

/// Reads, judges and stores the form of an authenticated upload.
async fn store_upload(
    state: &State,
    session: &mut ServerSession,
    max_file: u64,
    principal: &crate::auth::Principal,
) -> Result<Reply, ApiError> {
    let boundary = boundary(body::header(session, "content-type"))?;
    if let Some(coding) = body::header(session, "content-encoding")
        .filter(|c| !c.trim().eq_ignore_ascii_case("identity"))
    {
        return Err(ApiError::UnsupportedEncoding(coding.to_owned()));
    }
    let idempotency_key =
        super::policy::idempotency_key_of(body::header(session, "idempotency-key"))?;
    if body::declared_length(session).is_some_and(|n| n as u64 > max_file + FORM_OVERHEAD) {
        return Err(ApiError::FileTooLarge { limit: max_file });
    }
    body::send_continue(session).await?;

    let store = state.queue.files();
    let form = read_form(body::chunks(session), boundary, max_file, || store.begin()).await?;
    // The form has ended; an epilogue after its last boundary is read and dropped.
    if !body::drain(session, FORM_OVERHEAD as usize).await {
        return Err(ApiError::invalid(
            "the body goes on after the form's end",
            None,
        ));
    }
    let form = judge(form)?;
    let (record, _created) = store
        .commit(
            form.file,
            NewFile {
                owner_key_id: principal.key_id.clone(),
                purpose: form.purpose,
                filename: form.filename,
                expires_after: form.expires_after,
                idempotency_key,
            },
        )
        .await?;
    Ok(Reply::json(200, &record.to_wire()))
}

/// Judges an upload's `Content-Type` and body as [`receive`] does, without storing the
/// file: the size of the file it would store, or the client error it would answer. For
/// the `multipart` fuzz target.
pub async fn parse_upload<S, O, E>(
    content_type: Option<&str>,
    chunks: S,
    max_file: u64,
) -> Result<u64, ApiError>
where
    S: Stream<Item = Result<O, E>> + Send,
    O: Into<Bytes> + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let boundary = boundary(content_type)?;
    let form = read_form(chunks, boundary, max_file, || async { Ok(Counted(0)) }).await?;
    Ok(judge(form)?.file.bytes())
}

/// Reads the form from `chunks`, writing its `file` part to what `begin` starts. Refuses
/// a body that is not a well-formed form of the known fields, or too big.
async fn read_form<S, O, E, P, B, F>(
    chunks: S,
    boundary: String,
    max_file: u64,
    begin: B,
) -> Result<Form<P>, ApiError>
where
    S: Stream<Item = Result<O, E>> + Send,
    O: Into<Bytes> + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
    P: FilePart,
    B: Fn() -> F,
    F: Future<Output = Result<P, StoreError>>,
{
    let constraints = multer::Constraints::new()
        .allowed_fields(FIELDS.to_vec())
        .size_limit(FIELDS[1..].iter().fold(
            multer::SizeLimit::new().whole_stream(max_file + FORM_OVERHEAD),
            |l, name| l.for_field(*name, MAX_TEXT_FIELD),
        ));
    let mut multipart = multer::Multipart::with_constraints(chunks, boundary, constraints);
    let mut form = Form {
        purpose: None,
        anchor: None,
        seconds: None,
        file: None,
    };
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| refused(e, max_file))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        if name != "file" {
            let value = field.text().await.map_err(|e| refused(e, max_file))?;
            let slot = match name.as_str() {
                "purpose" => &mut form.purpose,
                "expires_after[anchor]" => &mut form.anchor,
                _ => &mut form.seconds,
            };
            if slot.replace(value).is_some() {
                return Err(ApiError::invalid(format!("`{name}` is given twice"), name));
            }
            continue;
        }
        if form.file.is_some() {
            return Err(ApiError::invalid(
                "send one `file`, not several",
                "file".to_owned(),
            ));
        }
        let filename = checked_filename(field.file_name())?;
        let mut file = begin().await?;
        while let Some(chunk) = field.chunk().await.map_err(|e| refused(e, max_file))? {
            if file.bytes() + chunk.len() as u64 > max_file {
                return Err(ApiError::FileTooLarge { limit: max_file });
            }
            file.write(&chunk).await?;
        }
        form.file = Some((filename, file));
    }
    Ok(form)
}

/// The form's fields judged as OpenAI judges them; `file` is required.
fn judge<P>(form: Form<P>) -> Result<Accepted<P>, ApiError> {
    let purpose = purpose(form.purpose.as_deref())?;
    let expires_after = expires_after(form.anchor.as_deref(), form.seconds.as_deref())?
        .or((purpose == FilePurpose::Batch).then_some(BATCH_DEFAULT_EXPIRY));
    let (filename, file) = form
        .file
        .ok_or_else(|| ApiError::invalid("`file` is required", "file".to_owned()))?;
    Ok(Accepted {
        purpose,
        expires_after,
        filename,
        file,
    })
}

/// The boundary of a `multipart/form-data` body; any other body is refused.
fn boundary(content_type: Option<&str>) -> Result<String, ApiError> {
    let is_form = content_type.is_some_and(|ct| {
        ct.trim()
            .to_ascii_lowercase()
            .starts_with("multipart/form-data")
    });
    content_type
        .filter(|_| is_form)
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or_else(|| {
            ApiError::invalid(
                "the body must be `multipart/form-data` with a boundary, holding `file` and `purpose`",
                None,
            )
        })
}

/// The `file` part's filename: present, short, and `.jsonl`, the only kind a batch reads.
fn checked_filename(name: Option<&str>) -> Result<String, ApiError> {
    let name = name.map(str::trim).unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::invalid(
            "`file` must be a file part with a filename",
            "file".to_owned(),
        ));
    }
    if name.chars().count() > MAX_FILENAME || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            format!(
                "the filename must be at most {MAX_FILENAME} characters, without control characters"
            ),
            "file".to_owned(),
        ));
    }
    if !name.to_ascii_lowercase().ends_with(".jsonl") {
        return Err(ApiError::invalid(
            format!("`{name}` is not a `.jsonl` file; files of purpose `batch` must be JSONL"),
            "file".to_owned(),
        ));
    }
    Ok(name.to_owned())
}

fn purpose(value: Option<&str>) -> Result<FilePurpose, ApiError> {
    match value.map(str::trim) {
        None | Some("") => Err(ApiError::invalid(
            "`purpose` is required",
            "purpose".to_owned(),
        )),
        Some("batch") => Ok(FilePurpose::Batch),
        Some(other) => Err(ApiError::invalid(
            format!(
                "purpose `{other}` is not accepted; upload files with purpose `batch` (`batch_output` files are written by the gateway)"
            ),
            "purpose".to_owned(),
        )),
    }
}

/// `expires_after[anchor]` and `expires_after[seconds]`: both or neither.
fn expires_after(anchor: Option<&str>, seconds: Option<&str>) -> Result<Option<u64>, ApiError> {
    match (anchor.map(str::trim), seconds.map(str::trim)) {
        (None, None) => Ok(None),
        (Some("created_at"), Some(seconds)) => seconds
            .parse::<u64>()
            .ok()
            .filter(|s| EXPIRY_SECONDS.contains(s))
            .map(Some)
            .ok_or_else(|| {
                ApiError::invalid(
                    format!(
                        "`expires_after[seconds]` must be an integer from {} to {}, not `{seconds}`",
                        EXPIRY_SECONDS.start(),
                        EXPIRY_SECONDS.end()
                    ),
                    "expires_after[seconds]".to_owned(),
                )
            }),
        (Some(anchor), Some(_)) => Err(ApiError::invalid(
            format!("`expires_after[anchor]` must be `created_at`, not `{anchor}`"),
            "expires_after[anchor]".to_owned(),
        )),
        _ => Err(ApiError::invalid(
            "`expires_after` needs both `expires_after[anchor]` and `expires_after[seconds]`",
            "expires_after".to_owned(),
        )),
    }
}

/// A multipart failure, as the client's error it is.
fn refused(error: multer::Error, max_file: u64) -> ApiError {
    use multer::Error::*;
    match error {
        StreamSizeExceeded { .. } => ApiError::FileTooLarge { limit: max_file },
        FieldSizeExceeded { field_name, .. } => {
            let name = field_name.unwrap_or_default();
            ApiError::invalid(
                format!("`{name}` is longer than the {MAX_TEXT_FIELD} bytes allowed"),
                name,
            )
        }
        UnknownField { field_name } => {
            let name = field_name.unwrap_or_default();
            ApiError::invalid(
                format!(
                    "unknown form field `{name}`; expected {}",
                    FIELDS.join(", ")
                ),
                name,
            )
        }
        StreamReadFailed(e) => {
            ApiError::invalid(format!("cannot read the request body: {e}"), None)
        }
        other => ApiError::invalid(format!("malformed multipart body: {other}"), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `body` judged as the server judges it, sent in pieces of `piece` bytes.
    async fn parsed(body: &str, piece: usize) -> Result<u64, (u16, Option<String>)> {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body
            .as_bytes()
            .chunks(piece)
            .map(|c| Ok(c.to_vec()))
            .collect();
        let content_type = Some("multipart/form-data; boundary=B");
        parse_upload(content_type, futures_util::stream::iter(chunks), 10)
            .await
            .map_err(|e| (e.status(), e.envelope().error.param))
    }

    fn part(name: &str, filename: Option<&str>, value: &str) -> String {
        let filename = filename.map_or(String::new(), |f| format!("; filename=\"{f}\""));
        format!(
            "--B\r\nContent-Disposition: form-data; name=\"{name}\"{filename}\r\n\r\n{value}\r\n"
        )
    }

    #[tokio::test]
    async fn an_upload_form_is_read_and_judged_in_any_pieces() {
        let file = part("file", Some("in.jsonl"), "{}\n{}\n");
        let purpose = part("purpose", None, "batch");
        let form = format!("{file}{purpose}--B--\r\n");
        for piece in [1, 3, 7, form.len()] {
            assert_eq!(parsed(&form, piece).await, Ok(6), "in pieces of {piece}");
        }
        let param = |p: &str| Err((400, Some(p.to_owned())));
        let cases = [
            (format!("{purpose}--B--\r\n"), param("file")),
            (format!("{file}--B--\r\n"), param("purpose")),
            (
                format!("{file}{purpose}{purpose}--B--\r\n"),
                param("purpose"),
            ),
            (format!("{file}{file}{purpose}--B--\r\n"), param("file")),
            (
                format!("{purpose}{}--B--\r\n", part("model", None, "x")),
                param("model"),
            ),
            (
                format!(
                    "{}{purpose}--B--\r\n",
                    part("file", Some("in.jsonl"), "0123456789x")
                ),
                Err((413, None)),
            ),
            ("--B\r\ngarbage".to_owned(), Err((400, None))),
        ];
        for (body, verdict) in cases {
            assert_eq!(parsed(&body, 5).await, verdict, "{body}");
        }
    }

    #[test]
    fn the_form_fields_are_judged_as_openai_does() {
        assert!(boundary(Some("multipart/form-data; boundary=abc")).is_ok());
        assert!(boundary(Some("application/json")).is_err());
        assert!(boundary(Some("multipart/form-data")).is_err());
        assert!(boundary(None).is_err());
        assert_eq!(checked_filename(Some("in.JSONL")).unwrap(), "in.JSONL");
        for bad in [None, Some(""), Some("in.csv"), Some("a\n.jsonl")] {
            assert!(checked_filename(bad).is_err(), "{bad:?}");
        }
        assert_eq!(purpose(Some("batch")).unwrap(), FilePurpose::Batch);
        for bad in [None, Some("batch_output"), Some("fine-tune")] {
            assert!(purpose(bad).is_err(), "{bad:?}");
        }
        assert_eq!(expires_after(None, None).unwrap(), None);
        assert_eq!(
            expires_after(Some("created_at"), Some("3600")).unwrap(),
            Some(3600)
        );
        for (anchor, seconds) in [
            (Some("created_at"), Some("3599")),
            (Some("created_at"), Some("2592001")),
            (Some("created_at"), Some("soon")),
            (Some("last_active_at"), Some("3600")),
            (Some("created_at"), None),
            (None, Some("3600")),
        ] {
            assert!(
                expires_after(anchor, seconds).is_err(),
                "{anchor:?} {seconds:?}"
            );
        }
    }
}
