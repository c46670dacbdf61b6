//! `Retry-After` (RFC 9110 §10.2.3): the one parser the node and the Rust client share.
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
