//! A request as the handlers see it: method, path, query, headers and the whole body,
//! with the parsing helpers they share.

use super::error::ApiError;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::time::Duration;

#[derive(Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Header names are lower-case. Values that are not UTF-8 are dropped.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub request_id: String,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Parses the body as JSON into `T`, naming the offending field on failure.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        parse_json(&self.body)
    }

    /// The wait this request asks for: `?wait=N` first, then `Prefer: wait=N`, capped to
    /// `max`. `None` when it asks for none.
    pub fn wait(&self, max: Duration) -> Result<Option<Duration>, ApiError> {
        let asked = match self.query_param("wait") {
            Some(value) => Some(parse_seconds(value, "wait")?),
            None => match self.header("prefer") {
                Some(prefer) => prefer_wait(prefer)?,
                None => None,
            },
        };
        Ok(asked.map(|wait| wait.min(max)))
    }

    /// Where a resumed stream starts: after the chunk named by `?starting_after=N`, else by
    /// `Last-Event-ID: N` (what an `EventSource` sends when it reconnects; the WHATWG HTML
    /// standard's server-sent events). `None`: from the start.
    pub fn resume_after(&self) -> Result<Option<u64>, ApiError> {
        let (value, name) = match self.query_param("starting_after") {
            Some(value) => (value, "starting_after"),
            None => match self.header("last-event-id") {
                Some(value) if !value.trim().is_empty() => (value, "Last-Event-ID"),
                _ => return Ok(None),
            },
        };
        // Bounded, so that the arithmetic on it cannot overflow; no stream has 2^32 chunks.
        value
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= u64::from(u32::MAX))
            .map(Some)
            .ok_or_else(|| {
                ApiError::invalid(
                    format!(
                        "`{name}` must be a chunk number (an integer from 0 to 4294967295), not `{value}`"
                    ),
                    Some(name.to_owned()),
                )
            })
    }
}

/// The `limit` of a list request: from 1 to `max`, `default` when not given.
pub fn page_limit(req: &Request, default: usize, max: usize) -> Result<usize, ApiError> {
    match req.query_param("limit") {
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    format!("`limit` must be an integer from 1 to {max}"),
                    Some("limit".to_owned()),
                )
            }),
        None => Ok(default),
    }
}

/// A list's `order`: `desc` (the default, newest first, as OpenAI's lists) or `asc`.
pub fn descending(req: &Request) -> Result<bool, ApiError> {
    match req.query_param("order") {
        None | Some("desc") => Ok(true),
        Some("asc") => Ok(false),
        Some(other) => Err(ApiError::invalid(
            format!("`order` must be `asc` or `desc`, not `{other}`"),
            Some("order".to_owned()),
        )),
    }
}

/// Parses JSON into `T` with errors that name the field, e.g. `messages[0].role`.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid(
            "the request body is empty; send a JSON object",
            None,
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut deserializer);
    match parsed {
        Ok(value) => deserializer
            .end()
            .map(|()| value)
            .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}"), None)),
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                Err(ApiError::invalid(
                    format!("invalid JSON body: {inner}"),
                    None,
                ))
            } else if path == "." {
                Err(ApiError::invalid(
                    format!("invalid request body: {inner}"),
                    missing_field(&inner.to_string()),
                ))
            } else {
                Err(ApiError::invalid(
                    format!("invalid value for `{path}`: {inner}"),
                    Some(path),
                ))
            }
        }
    }
}

/// serde reports a missing top-level field as "missing field `x`"; surface `x` as `param`.
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next().map(str::to_owned)
}

/// A non-negative number of seconds, at most a day, as given to `wait`.
pub fn parse_seconds(value: &str, name: &str) -> Result<Duration, ApiError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|seconds| seconds.is_finite() && (0.0..=86_400.0).contains(seconds))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            ApiError::invalid(
                format!("`{name}` must be a number of seconds between 0 and 86400, not `{value}`"),
                Some(name.to_owned()),
            )
        })
}

/// The `wait` preference of a `Prefer` header (RFC 7240), e.g. `respond-async, wait=10`.
fn prefer_wait(header: &str) -> Result<Option<Duration>, ApiError> {
    for preference in header.split([',', ';']) {
        let mut parts = preference.splitn(2, '=');
        let name = parts.next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("wait") {
            let value = parts.next().unwrap_or_default().trim().trim_matches('"');
            return parse_seconds(value, "wait").map(Some);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: &[(&str, &str)], prefer: Option<&str>) -> Request {
        Request {
            method: "GET".into(),
            path: "/".into(),
            query: query
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            headers: prefer
                .map(|p| [("prefer".to_owned(), p.to_owned())].into())
                .unwrap_or_default(),
            body: Vec::new(),
            request_id: "r".into(),
        }
    }

    #[test]
    fn wait_comes_from_query_then_prefer_and_is_capped() {
        let max = Duration::from_secs(60);
        assert_eq!(
            request(&[("wait", "5")], Some("wait=9")).wait(max).unwrap(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            request(&[], Some("respond-async, wait=9"))
                .wait(max)
                .unwrap(),
            Some(Duration::from_secs(9))
        );
        assert_eq!(
            request(&[("wait", "600")], None).wait(max).unwrap(),
            Some(max)
        );
        assert_eq!(
            request(&[], Some("return=minimal")).wait(max).unwrap(),
            None
        );
        for bad in ["-1", "abc", "NaN", "inf", ""] {
            assert!(request(&[("wait", bad)], None).wait(max).is_err(), "{bad}");
        }
        assert!(request(&[], Some("wait=soon")).wait(max).is_err());
    }

    #[test]
    fn json_errors_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[expect(dead_code, reason = "only parsed")]
        struct Body {
            model: String,
        }
        let missing = parse_json::<Body>(b"{}").unwrap_err();
        assert!(
            matches!(missing, ApiError::InvalidRequest { param: Some(ref p), .. } if p == "model")
        );
        let wrong = parse_json::<Body>(br#"{"model": 3}"#).unwrap_err();
        assert!(wrong.to_string().contains("`model`"), "{wrong}");
        assert!(parse_json::<Body>(b"{").is_err());
        assert!(parse_json::<Body>(br#"{"model":"m"} trailing"#).is_err());
        assert!(parse_json::<Body>(b"").is_err());
    }
}
