//! CORS (the WHATWG Fetch standard's CORS protocol) for browsers calling the API from
//! another origin. It owns which origins are allowed and the headers that say so; it never
//! decides whether a request is authorised, which stays with the API key.

use super::reply::Reply;

/// Response headers a page may read: the request id and the gateway's own `x-obb-*`
/// timings, plus the ones a client needs to follow a queued job.
/// `x-should-retry` too: without it a browser SDK would retry a failed job's answer and
/// submit the job again.
const EXPOSED: &str = "x-request-id, x-obb-job-id, x-obb-queue-ms, x-obb-processing-ms, \
     location, retry-after, x-should-retry";
/// Request headers a page may send when the preflight does not list any.
const ALLOWED_HEADERS: &str = "authorization, content-type, idempotency-key, prefer, x-request-id, x-obb-priority, x-obb-ttl, \
     x-obb-progress, x-obb-cancel-on-disconnect, last-event-id";
/// How long a browser may cache a preflight answer (seconds).
const MAX_AGE_SECONDS: &str = "600";

/// The `Access-Control-Allow-Origin` value for a request from `origin`, or `None` when the
/// origin is not allowed (or CORS is off: `allowed` is empty).
pub fn allow_origin(allowed: &[String], origin: Option<&str>) -> Option<String> {
    let origin = origin?;
    if allowed.iter().any(|a| a == "*") {
        return Some("*".to_owned());
    }
    allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
        .then(|| origin.to_owned())
}

/// The CORS headers of an actual (non-preflight) response to a request from `origin`.
/// With a list of origins (not `*`), every answer varies on `Origin`, allowed or not, so
/// that a shared cache never hands one origin's answer to another.
pub fn answer(reply: Reply, allowed: &[String], origin: Option<&str>) -> Reply {
    match allow_origin(allowed, origin) {
        Some(allow) => decorate(reply, &allow),
        None if !allowed.is_empty() && !allowed.iter().any(|a| a == "*") => {
            reply.header("vary", "Origin".to_owned())
        }
        None => reply,
    }
}

fn decorate(reply: Reply, allow: &str) -> Reply {
    let reply = reply
        .header("access-control-allow-origin", allow.to_owned())
        .header("access-control-expose-headers", EXPOSED.to_owned());
    // A reflected origin makes the answer depend on `Origin`; caches must know.
    if allow == "*" {
        reply
    } else {
        reply.header("vary", "Origin".to_owned())
    }
}

/// The 204 answer to an `OPTIONS` request. With an allowed origin, it carries what the
/// preflight asked for; without, only `Allow`.
pub fn preflight(
    allowed_methods: &'static str,
    allow: Option<&str>,
    requested_headers: Option<&str>,
) -> Reply {
    let methods = format!("{allowed_methods}, OPTIONS");
    let reply = Reply::raw(204, "text/plain", Vec::new()).header("allow", methods.clone());
    let Some(allow) = allow else {
        return reply;
    };
    let headers = requested_headers
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_, ".contains(&b))
        })
        .unwrap_or(ALLOWED_HEADERS);
    // The answer echoes the requested headers, so it varies on them too.
    decorate(reply, allow)
        .header("vary", "Access-Control-Request-Headers".to_owned())
        .header("access-control-allow-methods", methods)
        .header("access-control-allow-headers", headers.to_owned())
        .header("access-control-max-age", MAX_AGE_SECONDS.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
        reply
            .headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn only_listed_origins_are_allowed_and_a_star_allows_all() {
        let list = vec!["https://app.example/".to_owned()];
        assert_eq!(
            allow_origin(&list, Some("https://app.example")).as_deref(),
            Some("https://app.example")
        );
        assert_eq!(allow_origin(&list, Some("https://evil.example")), None);
        assert_eq!(allow_origin(&list, None), None);
        assert_eq!(allow_origin(&[], Some("https://app.example")), None);
        let star = vec!["*".to_owned()];
        assert_eq!(allow_origin(&star, Some("null")).as_deref(), Some("*"));
    }

    #[test]
    fn a_preflight_echoes_sane_requested_headers_and_says_nothing_to_strangers() {
        let reply = preflight(
            "POST",
            Some("https://a.example"),
            Some("authorization, x-custom"),
        );
        assert_eq!(reply.status, 204);
        assert_eq!(
            header(&reply, "access-control-allow-headers"),
            Some("authorization, x-custom")
        );
        assert_eq!(header(&reply, "vary"), Some("Origin"));
        assert_eq!(
            header(&reply, "access-control-allow-methods"),
            Some("POST, OPTIONS")
        );
        let odd = preflight("POST", Some("*"), Some("x\r\nevil: 1"));
        assert_eq!(
            header(&odd, "access-control-allow-headers"),
            Some(ALLOWED_HEADERS)
        );
        assert_eq!(header(&odd, "vary"), Some("Access-Control-Request-Headers"));
        let closed = preflight("GET", None, None);
        assert_eq!(header(&closed, "access-control-allow-origin"), None);
        assert_eq!(header(&closed, "allow"), Some("GET, OPTIONS"));
    }
}
