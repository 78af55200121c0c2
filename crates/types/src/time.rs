//! UTC RFC 3339 timestamps, shared by every crate that writes or reads them (records, the
//! Engine API's times, volume creation times), without a date crate for this one format.

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

/// Seconds and nanoseconds since the Unix epoch; times before 1970 become the epoch.
pub fn unix_parts(t: SystemTime) -> (i64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    (
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        d.subsec_nanos(),
    )
}

/// Formats a Unix time (seconds, nanoseconds) as UTC RFC 3339.
pub fn format_rfc3339(secs: i64, nanos: u32, fraction: Fraction) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    match fraction {
        Fraction::None => {}
        Fraction::Nanos => out.push_str(&format!(".{nanos:09}")),
        Fraction::Trimmed if nanos != 0 => {
            out.push('.');
            out.push_str(format!("{nanos:09}").trim_end_matches('0'));
        }
        Fraction::Trimmed => {}
    }
    out.push('Z');
    out
}

/// [`format_rfc3339`] of a `SystemTime`.
pub fn format_system_time(t: SystemTime, fraction: Fraction) -> String {
    let (secs, nanos) = unix_parts(t);
    format_rfc3339(secs, nanos, fraction)
}

/// Parses UTC RFC 3339 (`2026-11-26T13:10:30.123Z`): the fraction may have 0 to 9 digits;
/// only `Z` is accepted as the zone.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let rest = s.get(19..)?;
    let (frac, tail) = match rest.strip_prefix('.') {
        Some(f) => {
            let digits = f.bytes().take_while(u8::is_ascii_digit).count();
            (&f[..digits], &f[digits..])
        }
        None => ("", rest),
    };
    if tail != "Z" || frac.len() > 9 || (rest.starts_with('.') && frac.is_empty()) {
        return None;
    }
    let nanos = if frac.is_empty() {
        0
    } else {
        frac.parse::<u32>().ok()? * 10u32.pow(9 - frac.len() as u32)
    };
    let days = days_from_civil(i64::try_from(y).ok()?, mo as u32, d as u32);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + mi * 60 + se;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Inverse of [`civil_from_days`].
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
