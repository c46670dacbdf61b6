//! `Retry-After` (RFC 9110 §10.2.3), and OpenAI's `retry-after-ms` and `x-ratelimit-*`
//! headers: the one reader the node and the Rust client share.
//!
//! It only turns a header value into a delay; it does no I/O, and the cap on that delay is
//! the caller's: the node (`node::upstream`) and the Rust client (`client`) both wait at most
//! 60 s, whatever the server asked for.

use std::time::{Duration, SystemTime};

/// The delay a `Retry-After` value asks for, measured from `now`.
///
/// The value is either form RFC 9110 allows, with surrounding whitespace ignored:
/// - delta-seconds, a count of seconds (`120`). A fractional part (`1.5`) is accepted as
///   well, since some servers send one; a sign, an exponent, `inf` or `nan` is not. A count
///   too large for a [`Duration`] saturates at [`Duration::MAX`] rather than failing.
/// - an HTTP-date in any of the three formats the RFC requires recipients to read:
///   IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), RFC 850 and asctime. The delay is the
///   time from `now` to that date, at a resolution of one second; a date that has already
///   passed asks for no delay at all ([`Duration::ZERO`]).
///
/// Anything else (empty, junk, an invalid date) gives `None`, so the caller falls back to
/// its own backoff.
pub fn parse(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Some(delay) = delta_seconds(value) {
        return Some(delay);
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The delay an answer's headers ask for before a retry, read as OpenAI's SDKs and API
/// write them, first found wins:
/// 1. `retry-after-ms`, milliseconds (OpenAI's SDKs read it first);
/// 2. `Retry-After` (see [`parse`]);
/// 3. on a 429 without either: the longest `x-ratelimit-reset-{requests,tokens}` of a
///    budget whose `x-ratelimit-remaining-*` is `0` (see [`parse_reset`]).
///
/// `header` looks a header up by its lower-case name. `None` when nothing applies, so the
/// caller backs off on its own.
pub fn from_headers<'a>(
    header: impl Fn(&str) -> Option<&'a str>,
    status: u16,
    now: SystemTime,
) -> Option<Duration> {
    if let Some(ms) = header("retry-after-ms").and_then(|v| delta_seconds(v.trim())) {
        // Read as a count, then scaled: `1500` is 1.5 s.
        return Some(ms / 1000);
    }
    if let Some(delay) = header("retry-after").and_then(|v| parse(v, now)) {
        return Some(delay);
    }
    if status != 429 {
        return None;
    }
    ["requests", "tokens"]
        .iter()
        .filter(|budget| {
            header(&format!("x-ratelimit-remaining-{budget}")).map(str::trim) == Some("0")
        })
        .filter_map(|budget| header(&format!("x-ratelimit-reset-{budget}")).and_then(parse_reset))
        .max()
}

/// A duration as OpenAI's `x-ratelimit-reset-*` headers write it: numbers with units
/// `h`, `m`, `s` or `ms`, largest first, as Go prints a duration (`6m0s`, `1s`, `250ms`,
/// `1.5s`, `1h2m3s`). `None` for anything else.
pub fn parse_reset(value: &str) -> Option<Duration> {
    let mut rest = value.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let amount = delta_seconds(&rest[..digits])?;
        rest = &rest[digits..];
        let (scale, unit_len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else {
            return None;
        };
        rest = &rest[unit_len..];
        total =
            total.saturating_add(Duration::try_from_secs_f64(amount.as_secs_f64() * scale).ok()?);
    }
    Some(total)
}

/// `1*DIGIT [ "." 1*DIGIT ]`, exactly: no sign, exponent or spaces inside.
fn delta_seconds(value: &str) -> Option<Duration> {
    let (whole, fraction) = match value.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (value, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !fraction.is_none_or(digits) {
        return None;
    }
    // Only digits remain, so a failed parse means the number is too large.
    let Ok(seconds) = whole.parse::<u64>() else {
        return Some(Duration::MAX);
    };
    let nanos = fraction.map_or(0, |f| {
        // The first nine digits are the nanoseconds; later ones are below resolution.
        let f = &f[..f.len().min(9)];
        let scale = 10u32.pow(9 - u32::try_from(f.len()).unwrap_or(9));
        f.parse::<u32>().unwrap_or(0) * scale
    });
    Some(Duration::new(seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn lookup<'a>(headers: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, value)| *value)
        }
    }

    #[test]
    fn openai_reset_durations_are_read_as_go_writes_them() {
        assert_eq!(parse_reset("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_reset("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_reset("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_reset("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_reset("1h2m3s"), Some(Duration::from_secs(3723)));
        for junk in ["", "5", "s", "-1s", "1x", "1s2", "1e3s"] {
            assert_eq!(parse_reset(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn the_headers_are_read_in_the_order_openais_sdks_read_them() {
        let now = UNIX_EPOCH;
        let read = |headers: &[(&str, &str)], status| from_headers(lookup(headers), status, now);
        assert_eq!(
            read(&[("retry-after-ms", "1500"), ("retry-after", "9")], 429),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            read(&[("retry-after", "9")], 503),
            Some(Duration::from_secs(9))
        );
        // A spent budget's reset, the longer of the two when both are spent.
        let spent = [
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "2s"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ];
        assert_eq!(read(&spent, 429), Some(Duration::from_secs(360)));
        // A budget with room left says nothing about the wait, nor does a 503.
        let room = [
            ("x-ratelimit-remaining-requests", "3"),
            ("x-ratelimit-reset-requests", "2s"),
        ];
        assert_eq!(read(&room, 429), None);
        assert_eq!(read(&spent, 503), None);
        assert_eq!(read(&[], 429), None);
    }

    /// 1994-11-06 08:49:37 UTC, the RFC's own example date.
    fn rfc_example() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    #[test]
    fn delta_seconds_are_a_delay_whatever_the_clock_says() {
        let now = SystemTime::now();
        assert_eq!(parse("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse("0", now), Some(Duration::ZERO));
        assert_eq!(parse("007", now), Some(Duration::from_secs(7)));
        assert_eq!(parse("1.5", now), Some(Duration::from_millis(1500)));
        assert_eq!(
            parse("0.25", rfc_example()),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            parse("2.1234567891", now),
            Some(Duration::new(2, 123_456_789))
        );
    }

    #[test]
    fn every_http_date_format_is_the_time_until_that_date() {
        let now = rfc_example() - Duration::from_secs(30);
        for value in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse(value, now), Some(Duration::from_secs(30)), "{value}");
        }
        let later = now - Duration::from_millis(500);
        assert_eq!(
            parse("Sun, 06 Nov 1994 08:49:37 GMT", later),
            Some(Duration::from_millis(30_500))
        );
    }

    #[test]
    fn a_date_in_the_past_or_now_asks_for_no_delay() {
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(parse(date, rfc_example()), Some(Duration::ZERO));
        assert_eq!(
            parse(date, rfc_example() + Duration::from_secs(3600)),
            Some(Duration::ZERO)
        );
        assert_eq!(parse(date, SystemTime::now()), Some(Duration::ZERO));
    }

    #[test]
    fn surrounding_whitespace_is_ignored_but_inner_whitespace_is_not() {
        let now = rfc_example() - Duration::from_secs(1);
        assert_eq!(parse("  5\t", now), Some(Duration::from_secs(5)));
        assert_eq!(
            parse(" Sun, 06 Nov 1994 08:49:37 GMT ", now),
            Some(Duration::from_secs(1))
        );
        assert_eq!(parse("1 0", now), None);
        assert_eq!(parse("1. 5", now), None);
    }

    #[test]
    fn junk_gives_none() {
        let now = SystemTime::now();
        for value in [
            "",
            "   ",
            "soon",
            "-1",
            "+1",
            "1e3",
            "inf",
            "NaN",
            "1.",
            ".5",
            "1.5.0",
            "0x10",
            "١٢",
            "5s",
            "Sun, 06 Nov 1994 08:49:37",     // no zone
            "Sun, 06 Nov 1994 08:49:37 PST", // a zone other than GMT
            "Sun, 31 Feb 1994 08:49:37 GMT", // no such day
            "Mon, 06 Nov 1994 08:49:37 GMT", // the wrong weekday
        ] {
            assert_eq!(parse(value, now), None, "{value:?}");
        }
    }

    #[test]
    fn huge_values_saturate_instead_of_failing() {
        let now = SystemTime::now();
        assert_eq!(
            parse("18446744073709551615", now),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(parse("18446744073709551616", now), Some(Duration::MAX));
        assert_eq!(parse(&"9".repeat(400), now), Some(Duration::MAX));
        let far = parse("Fri, 31 Dec 9999 23:59:59 GMT", now);
        assert!(far.is_some_and(|d| d > Duration::from_secs(200 * 365 * 86_400)));
    }
}
