//! Go's request parsing helpers as moby uses them: URL query decoding (`url.ParseQuery`),
//! `httputils.BoolValue`, `strconv.Atoi` errors, event timestamps, RFC 3339 times.

use std::collections::HashMap;

use crate::error::HttpError;

/// Decoded query parameters; like Go's `Form.Get`, the first value of a key wins.
#[derive(Debug, Default)]
pub(crate) struct Query {
    values: HashMap<String, String>,
}

impl Query {
    /// `url.ParseQuery`; an invalid escape is moby's 400 (`invalid URL escape "%zz"`).
    pub(crate) fn parse(raw: Option<&str>) -> Result<Self, HttpError> {
        let mut values = HashMap::new();
        let mut first_err = None;
        for pair in raw.unwrap_or("").split('&') {
            if pair.is_empty() {
                continue;
            }
            if pair.contains(';') {
                first_err.get_or_insert_with(|| "invalid semicolon separator in query".to_owned());
                continue;
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match (unescape(k, true), unescape(v, true)) {
                (Ok(k), Ok(v)) => {
                    values.entry(k).or_insert(v);
                }
                (Err(e), _) | (_, Err(e)) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(HttpError::bad_request(e)),
            None => Ok(Query { values }),
        }
    }

    /// The value, or `""` when absent (Go's `FormValue`).
    pub(crate) fn get(&self, key: &str) -> &str {
        self.values.get(key).map_or("", String::as_str)
    }

    /// moby's `httputils.BoolValue`: empty, `0`, `no`, `false`, `none` are false.
    pub(crate) fn bool_value(&self, key: &str) -> bool {
        let v = self.get(key).trim().to_ascii_lowercase();
        !matches!(v.as_str(), "" | "0" | "no" | "false" | "none")
    }
}

/// Percent-decoding (`percent-encoding`); `plus_is_space` for query components. Unlike that
/// crate, Go's `url.QueryUnescape` refuses a malformed escape, so the escapes are checked
/// first and the error is Go's text.
pub(crate) fn unescape(s: &str, plus_is_space: bool) -> Result<String, String> {
    let b = s.as_bytes();
    for (i, _) in s.match_indices('%') {
        let valid = b
            .get(i + 1..i + 3)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
        if !valid {
            let end = (i + 3).min(b.len());
            return Err(format!(
                "invalid URL escape {:?}",
                String::from_utf8_lossy(&b[i..end])
            ));
        }
    }
    let spaced;
    let s = if plus_is_space && s.contains('+') {
        spaced = s.replace('+', " ");
        spaced.as_str()
    } else {
        s
    };
    Ok(percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned())
}

/// `strconv.Atoi` with Go's error texts (moby 28 returns them untyped: 500).
pub(crate) fn atoi(s: &str) -> Result<i64, String> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!("strconv.Atoi: parsing {s:?}: invalid syntax"));
    }
    s.parse::<i64>()
        .map_err(|_| format!("strconv.Atoi: parsing {s:?}: value out of range"))
}

/// An event time as moby's `eventTime` reads it: `seconds[.fraction]`; absent (or `-1`) is
/// `None`. Returns unix nanoseconds. Errors are `strconv.ParseInt` texts.
pub(crate) fn event_time(s: &str) -> Result<Option<i128>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let parse = |p: &str| {
        let digits = p.strip_prefix(['+', '-']).unwrap_or(p);
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return Err(format!("strconv.ParseInt: parsing {p:?}: invalid syntax"));
        }
        p.parse::<i64>()
            .map_err(|_| format!("strconv.ParseInt: parsing {p:?}: value out of range"))
    };
    let (sec, frac) = match s.split_once('.') {
        Some((sec, frac)) => (parse(sec)?, Some(frac)),
        None => (parse(s)?, None),
    };
    let nsec = match frac {
        None => 0,
        Some(f) => {
            let n = i128::from(parse(f)?);
            let len = u32::try_from(f.len()).unwrap_or(u32::MAX);
            if len <= 9 {
                n * 10i128.pow(9 - len)
            } else {
                n / 10i128.checked_pow(len - 9).unwrap_or(i128::MAX)
            }
        }
    };
    if sec == -1 && frac.is_none() {
        return Ok(None);
    }
    Ok(Some(i128::from(sec) * 1_000_000_000 + nsec))
}

/// Formats unix nanoseconds as Go's `time.RFC3339Nano` in UTC
/// (`2026-11-22T06:51:57.305329173Z`, trailing zeros of the fraction dropped).
pub(crate) fn rfc3339_nano(nanos: i128) -> String {
    let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).unwrap_or(i64::MAX);
    let frac = nanos.rem_euclid(1_000_000_000) as u32;
    plugind_types::time::format_rfc3339(secs, frac, plugind_types::time::Fraction::Trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_bools() {
        let q = Query::parse(Some("force=True&name=a%2Fb%3Alatest&x=1+2&force=0")).unwrap();
        assert!(q.bool_value("force"));
        assert_eq!(q.get("name"), "a/b:latest");
        assert_eq!(q.get("x"), "1 2");
        assert_eq!(q.get("missing"), "");
        for f in ["", "0", "no", "FALSE", " none "] {
            let q = Query::parse(Some(&format!("force={}", f.replace(' ', "+")))).unwrap();
            assert!(!q.bool_value("force"), "{f:?}");
        }
        assert_eq!(
            Query::parse(Some("a=%zz")).unwrap_err().message,
            r#"invalid URL escape "%zz""#
        );
    }

    #[test]
    fn unescape_matches_gos_query_unescape() {
        assert_eq!(unescape("a%2Bb+c", true), Ok("a+b c".to_owned()));
        assert_eq!(unescape("a%2Bb+c", false), Ok("a+b+c".to_owned()));
        assert_eq!(unescape("%e2%82%ac", true), Ok("\u{20ac}".to_owned()));
        assert_eq!(unescape("%41%4a", true), Ok("AJ".to_owned()));
        // Go stops at the first malformed escape and quotes at most three bytes of it.
        assert_eq!(
            unescape("%", true),
            Err(r#"invalid URL escape "%""#.to_owned())
        );
        assert_eq!(
            unescape("x%4", true),
            Err(r#"invalid URL escape "%4""#.to_owned())
        );
        assert_eq!(
            unescape("%4g%zz", true),
            Err(r#"invalid URL escape "%4g""#.to_owned())
        );
        assert_eq!(
            unescape("ok%2", true),
            Err(r#"invalid URL escape "%2""#.to_owned())
        );
    }

    #[test]
    fn go_numbers_and_times() {
        assert_eq!(atoi("30"), Ok(30));
        assert_eq!(atoi("-1"), Ok(-1));
        assert_eq!(
            atoi(""),
            Err(r#"strconv.Atoi: parsing "": invalid syntax"#.to_owned())
        );
        assert_eq!(
            atoi("x"),
            Err(r#"strconv.Atoi: parsing "x": invalid syntax"#.to_owned())
        );
        assert_eq!(event_time(""), Ok(None));
        assert_eq!(event_time("-1"), Ok(None));
        assert_eq!(event_time("10"), Ok(Some(10_000_000_000)));
        assert_eq!(event_time("10.5"), Ok(Some(10_500_000_000)));
        assert_eq!(event_time("10.000000001"), Ok(Some(10_000_000_001)));
        assert_eq!(
            event_time("bla"),
            Err(r#"strconv.ParseInt: parsing "bla": invalid syntax"#.to_owned())
        );
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_nano(1_795_330_138_685_398_233),
            "2026-11-22T06:48:58.685398233Z"
        );
        assert_eq!(
            rfc3339_nano(951_782_400_500_000_000),
            "2000-02-29T00:00:00.5Z"
        );
    }
}
