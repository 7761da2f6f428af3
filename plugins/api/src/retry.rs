//! `Retry-After` as remote sides send it, read without ever failing.

use chrono::{DateTime, Utc};

/// Reads an HTTP `Retry-After` value (RFC 9110: delay-seconds or an
/// HTTP-date) as seconds from `now`. A peer's answer must never break
/// delivery, so numbers too large for a `u64` saturate, dates in the past
/// mean no wait and anything else is ignored (`None`). How long the daemon
/// actually waits is capped by its `[outbox] backoff_max`.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<u64> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(v.parse::<u64>().unwrap_or(u64::MAX));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    let secs = at.signed_duration_since(now).num_seconds();
    Some(u64::try_from(secs).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-20T12:00:00Z".parse().expect("instant")
    }

    #[test]
    fn seconds_dates_and_nonsense() {
        assert_eq!(parse_retry_after(" 120 ", now()), Some(120));
        assert_eq!(
            parse_retry_after("10000000000000", now()),
            Some(10_000_000_000_000)
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999999", now()),
            Some(u64::MAX)
        );
        assert_eq!(
            parse_retry_after("Fri, 20 Nov 2026 12:01:00 GMT", now()),
            Some(60)
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now()),
            Some(0)
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now()).map(|s| s > 0),
            Some(true)
        );
        for bad in ["", "-5", "1.5", "soon", "Fri, 99 Nov 2026 12:01:00 GMT"] {
            assert_eq!(parse_retry_after(bad, now()), None, "{bad}");
        }
    }
}
