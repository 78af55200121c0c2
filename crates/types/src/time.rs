//! UTC RFC 3339 timestamps, shared by every crate that writes or reads them (records, the
//! Engine API's times, volume creation times). The calendar maths is `humantime`'s; this
//! module only picks the fraction style Go prints and keeps parsing strict (`Z` only, at most
//! nine fractional digits).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How many fractional digits [`format_rfc3339`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fraction {
    /// Whole seconds, as Go's `time.RFC3339`: `2026-11-26T13:19:00Z`.
    None,
    /// Always nine digits: `2026-11-26T13:19:00.000000000Z` (plugind's records).
    Nanos,
    /// Up to nine digits, trailing zeros dropped, as Go's `time.RFC3339Nano`.
    Trimmed,
}

/// The last second `humantime` (and RFC 3339's four-digit year) can write:
/// `9999-12-31T23:59:59Z`.
const MAX_UNIX_SECS: i64 = 253_402_300_799;

/// Seconds and nanoseconds since the Unix epoch; times before 1970 become the epoch.
pub fn unix_parts(t: SystemTime) -> (i64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    (
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        d.subsec_nanos(),
    )
}

/// Formats a Unix time (seconds, nanoseconds) as UTC RFC 3339. Times outside what a
/// four-digit year can show are clamped: before 1970 to the epoch, after 9999 to its last
/// second.
pub fn format_rfc3339(secs: i64, nanos: u32, fraction: Fraction) -> String {
    let (secs, nanos) = if secs < 0 {
        (0, 0)
    } else if secs > MAX_UNIX_SECS {
        (MAX_UNIX_SECS, 999_999_999)
    } else {
        (secs, nanos.min(999_999_999))
    };
    let t = UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nanos);
    match fraction {
        Fraction::None => humantime::format_rfc3339_seconds(t).to_string(),
        Fraction::Nanos => humantime::format_rfc3339_nanos(t).to_string(),
        Fraction::Trimmed => {
            let full = humantime::format_rfc3339_nanos(t).to_string();
            // `…:SS.123400000Z` -> `…:SS.1234Z`; `…:SS.000000000Z` -> `…:SSZ`.
            let body = full.trim_end_matches('Z').trim_end_matches('0');
            format!("{}Z", body.trim_end_matches('.'))
        }
    }
}

/// [`format_rfc3339`] of a `SystemTime`.
pub fn format_system_time(t: SystemTime, fraction: Fraction) -> String {
    let (secs, nanos) = unix_parts(t);
    format_rfc3339(secs, nanos, fraction)
}

/// Parses UTC RFC 3339 (`2026-11-26T13:10:30.123Z`): the fraction may have 0 to 9 digits;
/// only `Z` is accepted as the zone.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    // humantime accepts any number of fractional digits; plugind's records never hold more
    // than nine, so more is a corrupt record, not a finer time.
    let rest = s.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
    }
    if !rest.ends_with('Z') {
        return None;
    }
    humantime::parse_rfc3339(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_each_fraction_style() {
        assert_eq!(format_rfc3339(0, 0, Fraction::None), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_rfc3339(951_782_400, 500_000_000, Fraction::Trimmed),
            "2000-02-29T00:00:00.5Z"
        );
        assert_eq!(
            format_rfc3339(1_764_162_630, 123_456_789, Fraction::Nanos),
            "2025-11-26T13:10:30.123456789Z"
        );
        assert_eq!(
            format_rfc3339(1_700_000_000, 0, Fraction::Trimmed),
            "2023-11-14T22:13:20Z"
        );
    }

    #[test]
    fn parses_what_it_formats_and_rejects_the_rest() {
        for day in (0..20_000i64).step_by(7) {
            let t = UNIX_EPOCH + Duration::new((day * 86_400 + 3_599) as u64, 7);
            assert_eq!(
                parse_rfc3339(&format_system_time(t, Fraction::Nanos)),
                Some(t)
            );
        }
        for bad in [
            "",
            "2000-02-29",
            "2000-02-29T00:00:00",
            "2000-02-29T00:00:00.Z",
            "2000-13-01T00:00:00Z",
            "2000-02-29T00:00:00+01:00",
            "2000-02-29T00:00:00.1234567891Z",
            "2000-02-30T00:00:00Z",
            "2001-02-29T00:00:00Z",
            "2000-02-29t00:00:00Z",
            "2000-02-29T00:00:00z",
            "2000-02-29 00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00.5Z"),
            Some(UNIX_EPOCH + Duration::new(951_782_400, 500_000_000))
        );
    }

    #[test]
    fn out_of_range_times_are_clamped_not_panics() {
        assert_eq!(
            format_rfc3339(-1, 5, Fraction::Trimmed),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            format_rfc3339(i64::MAX, 0, Fraction::Nanos),
            "9999-12-31T23:59:59.999999999Z"
        );
        assert_eq!(
            format_rfc3339(0, u32::MAX, Fraction::Trimmed),
            "1970-01-01T00:00:00.999999999Z"
        );
    }
}
