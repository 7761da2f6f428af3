//! Reading stored instants fast. relance writes every instant it stores in
//! JSON the same way (`2026-12-02T10:00:00Z`, with up to nine digits of a
//! fraction), and planning reads several per outbox row of every contact
//! it plans: chrono's general RFC 3339 reader took 3 % of a full pass. The
//! form relance writes is read here by hand; any other text goes to
//! chrono, so both accept and refuse the same texts with the same result.

use crate::core::model::Timestamp;
use chrono::DateTime;
use serde::Deserializer;

/// The instant `text` names, read as chrono reads an RFC 3339 text.
pub fn parse(text: &str) -> Result<Timestamp, chrono::ParseError> {
    match canonical(text.as_bytes()) {
        Some(at) => Ok(at),
        None => Ok(text.parse::<DateTime<chrono::FixedOffset>>()?.to_utc()),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f…]Z`, or `None` for any other text (left to
/// chrono, which may still read it).
fn canonical(b: &[u8]) -> Option<Timestamp> {
    if b.len() < 20 || b.last() != Some(&b'Z') {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        b.get(range)?.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let marks = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if marks.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let nanos = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            let n = digits(20..b.len() - 1)?;
            let scale = 10u32.pow(u32::try_from(9 - fraction.len()).ok()?);
            n * scale
        }
        _ => return None,
    };
    // A leap second (60) or an impossible date: chrono says what it is.
    if hour > 23 || minute > 59 || second > 59 || !(1..=12).contains(&month) || day == 0 {
        return None;
    }
    if day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    DateTime::from_timestamp(secs, nanos)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Reads a JSON string as an instant, without copying it.
struct InstantText;

impl serde::de::Visitor<'_> for InstantText {
    type Value = Timestamp;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an RFC 3339 instant")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Timestamp, E> {
        parse(text).map_err(E::custom)
    }
}

/// Optional: `null` is `None`.
struct OptionalInstant;

impl<'de> serde::de::Visitor<'de> for OptionalInstant {
    type Value = Option<Timestamp>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an RFC 3339 instant or null")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(InstantText).map(Some)
    }
}

/// Serde: an optional instant, as chrono's own `Deserialize` reads it
/// (`null` is `None`; with `#[serde(default)]`, absent too).
pub fn deserialize_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    d.deserialize_option(OptionalInstant)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chrono_reads(text: &str) -> Option<Timestamp> {
        text.parse::<DateTime<chrono::FixedOffset>>()
            .ok()
            .map(|t| t.to_utc())
    }

    #[test]
    fn the_form_relance_writes_reads_as_chrono_reads_it() {
        for text in [
            "2026-12-02T10:00:00Z",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999999Z",
            "2000-02-29T12:34:56.5Z",
            "2024-02-29T00:00:00.123Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
            "2026-03-29T01:30:00.000001Z",
        ] {
            assert_eq!(canonical(text.as_bytes()), chrono_reads(text), "{text}");
            assert!(canonical(text.as_bytes()).is_some(), "{text} read by hand");
        }
    }

    #[test]
    fn other_texts_are_left_to_chrono() {
        for text in [
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-02T24:00:00Z",
            "2026-12-02T23:59:60Z",
            "2026-12-02T10:00:00.Z",
            "2026-12-02T10:00:00.1234567890Z",
            "2026-12-02T10:00:00+01:00",
            "2026-12-02 10:00:00Z",
            "2026-12-02t10:00:00z",
            "+2026-12-02T10:00:00Z",
            "2026-1a-02T10:00:00Z",
            "",
        ] {
            assert_eq!(canonical(text.as_bytes()), None, "{text}");
            assert_eq!(parse(text).ok(), chrono_reads(text), "{text}");
        }
        assert_eq!(
            parse("2026-12-02T10:00:00+01:00").ok(),
            chrono_reads("2026-12-02T09:00:00Z")
        );
    }

    proptest! {
        #[test]
        fn every_instant_written_reads_back(
            secs in -62_135_596_800i64..253_402_300_799,
            nanos in 0u32..1_000_000_000,
        ) {
            let at = DateTime::from_timestamp(secs, nanos).expect("in range");
            let text = serde_json::to_string(&at).expect("writes");
            let read = {
                let mut de = serde_json::Deserializer::from_str(&text);
                deserialize_opt(&mut de).expect("reads")
            };
            prop_assert_eq!(read, Some(at));
            prop_assert!(canonical(text.trim_matches('"').as_bytes()).is_some());
        }

        #[test]
        fn any_text_reads_as_chrono_reads_it(text in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,10})?Z?") {
            prop_assert_eq!(parse(&text).ok(), chrono_reads(&text));
        }
    }
}
