//! Timestamps as integer microseconds since the Unix epoch.
//!
//! Prefect writes RFC 3339 with a `Z` or `+00:00` offset and omits the fraction when it is
//! zero. Everything inside the exporter compares and stores [`Micros`]; strings only exist at
//! the edges (decoding frames, JSON output, flags).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Microseconds since 1970-01-01T00:00:00Z.
pub type Micros = i64;

/// One second in [`Micros`].
pub const SECOND: Micros = 1_000_000;

/// Parses an RFC 3339 timestamp (any offset, optional fraction) into [`Micros`].
///
/// Returns `None` for anything that is not a valid RFC 3339 date-time.
pub fn parse_rfc3339(text: &str) -> Option<Micros> {
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
    fn formats_round_trip() {
        let t = parse_rfc3339("2026-11-25T01:22:32.133114Z").unwrap();
        assert_eq!(format_rfc3339(t), "2026-11-25T01:22:32.133114Z");
        assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
    }
}
