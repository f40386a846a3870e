//! Time: timestamps as integer microseconds since the Unix epoch, durations as flags write
//! them, and the clock ages are measured against.
//!
//! Prefect writes RFC 3339 with a `Z` or `+00:00` offset and omits the fraction when it is
//! zero. Everything inside the exporter compares and stores [`Micros`]; strings only exist at
//! the edges (decoding frames, JSON output, flags).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::model::Error;

/// Microseconds since 1970-01-01T00:00:00Z.
pub type Micros = i64;

/// One second in [`Micros`].
pub const SECOND: Micros = 1_000_000;

/// How far ahead of the wall clock an event's `occurred` may be (client clocks drift; task-run
/// events come from clients). Later events are rejected; events within it count as "now" for
/// the dedup window, retention and the resume point.
pub const FUTURE_TOLERANCE: Micros = 5 * 60 * SECOND;

/// Parses an RFC 3339 timestamp (any offset, optional fraction) into [`Micros`].
///
/// Returns `None` for anything that is not a valid RFC 3339 date-time. Prefect's two forms
/// (`…Z` and `…+00:00`, with or without a fraction) take a hand-written fast path on the
/// per-event hot path; anything else goes through the `time` crate.
pub fn parse_rfc3339(text: &str) -> Option<Micros> {
    fast_rfc3339(text.as_bytes()).or_else(|| slow_rfc3339(text))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, upper-case `T`/`Z`, seconds below 60.
fn fast_rfc3339(b: &[u8]) -> Option<Micros> {
    fn digits(b: &[u8]) -> Option<i64> {
        b.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    }
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut micros = 0i64;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let len = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 || len > 9 {
            return None;
        }
        let kept = &fraction[..len.min(6)];
        micros = digits(kept)? * 10i64.pow(6 - kept.len() as u32);
        rest = &fraction[len..];
    }
    let offset = match rest {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (h, m) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if *sign == b'+' {
                minutes
            } else {
                -minutes
            }
        }
        _ => return None,
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset * 60;
    Some(seconds * SECOND + micros)
}

fn slow_rfc3339(text: &str) -> Option<Micros> {
    let parsed = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    let micros = parsed.unix_timestamp_nanos() / 1_000;
    Micros::try_from(micros).ok()
}

/// Formats [`Micros`] as RFC 3339 in UTC with microsecond precision and a `Z` suffix.
pub fn format_rfc3339(micros: Micros) -> String {
    let nanos = i128::from(micros) * 1_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// The wall clock now, in [`Micros`].
pub fn now_micros() -> Micros {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000;
    Micros::try_from(nanos).unwrap_or(Micros::MAX)
}

/// Converts [`Micros`] to fractional seconds, for metrics.
pub fn as_seconds(micros: Micros) -> f64 {
    micros as f64 / SECOND as f64
}

/// A source of "now" for ages (injectable in tests).
pub type Clock = Arc<dyn Fn() -> Micros + Send + Sync>;

/// The wall clock.
pub fn wall_clock() -> Clock {
    Arc::new(now_micros)
}

/// A duration in microseconds, saturating.
pub fn micros(duration: Duration) -> Micros {
    Micros::try_from(duration.as_micros()).unwrap_or(Micros::MAX)
}

/// Parses a humantime duration (`5s`, `10m`, `1h 30m`); `0` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, Error> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text.trim()).map_err(|e| Error::Duration {
        reason: e.to_string(),
    })
}

/// A duration as flags write it: parsed by [`parse_duration`], displayed in humantime form
/// (`10s`, `30m`), so a default is written once, as a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0");
        }
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self, Error> {
        parse_duration(text).map(HumanDuration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prefect_forms() {
        let z = parse_rfc3339("2026-11-25T01:22:32.133114Z").unwrap();
        let offset = parse_rfc3339("2026-11-25T01:22:32.133114+00:00").unwrap();
        assert_eq!(z, offset);
        assert_eq!(z % SECOND, 133_114);
        let whole = parse_rfc3339("2026-11-25T01:22:32Z").unwrap();
        assert_eq!(z - whole, 133_114);
        assert_eq!(
            parse_rfc3339("2026-11-25T03:22:32+02:00").unwrap(),
            whole,
            "offsets are honoured"
        );
    }

    #[test]
    fn rejects_non_rfc3339() {
        for bad in [
            "",
            "yesterday",
            "2026-11-25",
            "2026-13-25T01:22:32Z",
            "2026-11-25 01:22:32",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn fast_path_agrees_with_the_time_crate() {
        let samples = [
            "2026-11-25T01:22:32.133114Z",
            "2026-11-25T01:22:32Z",
            "2026-11-25T01:22:32.1+00:00",
            "2026-11-25T01:22:32.123456789-05:30",
            "2024-02-29T23:59:59.999999+14:00",
            "1969-12-31T23:59:59.5Z",
            "2000-01-01T00:00:00Z",
            "2100-03-01T12:00:00-00:00",
            "0001-01-01T00:00:00Z",
        ];
        for text in samples {
            assert_eq!(fast_rfc3339(text.as_bytes()), slow_rfc3339(text), "{text}");
            assert!(
                fast_rfc3339(text.as_bytes()).is_some(),
                "{text} takes the fast path"
            );
        }
        for bad in [
            "2023-02-29T00:00:00Z",
            "2026-11-25T24:00:00Z",
            "2026-11-25T01:22:32.Z",
            "2026-11-25T01:22:32+0000",
        ] {
            assert_eq!(fast_rfc3339(bad.as_bytes()), None, "{bad}");
            assert_eq!(parse_rfc3339(bad), slow_rfc3339(bad), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("soon").is_err());
        for text in ["10s", "30m", "1h", "0"] {
            let d: HumanDuration = text.parse().unwrap();
            assert_eq!(d.to_string(), text);
        }
    }

    #[test]
    fn formats_round_trip() {
        let t = parse_rfc3339("2026-11-25T01:22:32.133114Z").unwrap();
        assert_eq!(format_rfc3339(t), "2026-11-25T01:22:32.133114Z");
        assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
    }
}
