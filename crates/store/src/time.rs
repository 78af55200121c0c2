//! RFC 3339 timestamps (`2026-11-26T13:10:30.123456789Z`) for the record's times.
//!
//! Records are read by people and by tools, so times are written as UTC RFC 3339 with
//! nanoseconds, as Docker writes container times (the format lives in `plugind_types::time`).

use std::time::SystemTime;

use plugind_types::time::{format_system_time, parse_rfc3339, Fraction};

/// Formats `t` as UTC RFC 3339 with nine fractional digits; times before 1970 become the epoch.
pub(crate) fn format(t: SystemTime) -> String {
    format_system_time(t, Fraction::Nanos)
}

/// Parses what [`format`] writes; the fraction may have 0 to 9 digits. Only `Z` is accepted.
pub(crate) fn parse(s: &str) -> Option<SystemTime> {
    parse_rfc3339(s)
}

/// `#[serde(with = "crate::time::rfc3339")]` for `SystemTime` fields.
pub(crate) mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*t))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        super::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid RFC 3339 UTC time {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn formats_and_parses_round_trip() {
        let t = UNIX_EPOCH + Duration::new(1_764_162_630, 123_456_789);
        assert_eq!(format(t), "2025-11-26T13:10:30.123456789Z");
        assert_eq!(parse("2025-11-26T13:10:30.123456789Z"), Some(t));
        assert_eq!(format(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            parse("2000-02-29T00:00:00Z"),
            Some(UNIX_EPOCH + Duration::from_secs(951_782_400))
        );
        assert_eq!(
            parse("2000-02-29T00:00:00.5Z"),
            Some(UNIX_EPOCH + Duration::new(951_782_400, 500_000_000))
        );
        // The full set of rejected texts is `plugind_types::time`'s test; the wrapper only
        // has to pass the rejection on.
        assert_eq!(parse("2000-02-29T00:00:00+01:00"), None);
    }

    #[test]
    fn every_day_of_several_years_round_trips() {
        for day in (0..20_000).step_by(7) {
            let t = UNIX_EPOCH + Duration::from_secs(day * 86_400 + 3_599);
            assert_eq!(parse(&format(t)), Some(t));
        }
    }
}
