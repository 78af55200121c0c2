//! JSON request bodies read the way moby's `httputils.ReadJSON` reads them (Go's
//! `json.Decoder`), so malformed bodies get Docker's exact 400 texts: `invalid JSON: invalid
//! character 'i' looking for beginning of object key string`, `unexpected content after JSON`,
//! `invalid JSON: json: cannot unmarshal object into Go value of type []string`, ...
//!
//! Why it exists instead of `serde_json`: the texts are the API contract Docker clients and
//! plugind's compatibility tests compare byte for byte, and they name Go's scanner states
//! (`looking for beginning of object key string`, `after array element`, Go type names),
//! which `serde_json`'s errors (`expected value at line 1 column 2`) cannot be mapped back to.
//! It is used for one body only (`POST /plugins/{name}/set`'s `[]string`); every other body
//! uses `serde_json`. Drop it if that exactness stops mattering.
//!
//! The scanner is iterative (an explicit stack of open containers, bounded by Go's
//! `maxNestingDepth` of 10000), and decoding looks only at the top-level value and its direct
//! elements, so no client-chosen nesting depth ever becomes recursion depth.

/// Go's `encoding/json` `maxNestingDepth`: deeper values are a syntax error.
const MAX_NESTING_DEPTH: usize = 10_000;

/// Decodes the first JSON value of `body` as Go's `[]string` (`null` is an empty list).
/// The error is the whole message moby sends.
pub(crate) fn decode_string_list(body: &[u8]) -> Result<Vec<String>, String> {
    let mut s = Scanner {
        b: body,
        i: 0,
        elements: Vec::new(),
    };
    s.skip_space();
    if s.i == body.len() {
        return Err("invalid JSON: got EOF while reading request body".to_owned());
    }
    let start = s.i;
    s.value().map_err(|e| format!("invalid JSON: {e}"))?;
    // `Decoder.More`: anything but a closing bracket after the value is extra content.
    s.skip_space();
    if s.i < body.len() && !matches!(body[s.i], b']' | b'}') {
        return Err("unexpected content after JSON".to_owned());
    }
    match body[start] {
        b'n' => Ok(Vec::new()),
        b'[' => {
            let mut out = Vec::with_capacity(s.elements.len());
            let mut first_err = None;
            for &(from, to) in &s.elements {
                let item = &body[from..to];
                match item[0] {
                    b'"' => out.push(
                        serde_json::from_slice::<String>(item)
                            .map_err(|e| format!("invalid JSON: {e}"))?,
                    ),
                    // Go leaves a string untouched when decoding null into it.
                    b'n' => out.push(String::new()),
                    other => {
                        first_err.get_or_insert_with(|| unmarshal_error(other, "string"));
                        out.push(String::new());
                    }
                }
            }
            match first_err {
                Some(e) => Err(e),
                None => Ok(out),
            }
        }
        other => Err(unmarshal_error(other, "[]string")),
    }
}

/// Go's `UnmarshalTypeError` text for a value starting with `first`.
fn unmarshal_error(first: u8, go_type: &str) -> String {
    let kind = match first {
        b'{' => "object",
        b'[' => "array",
        b'"' => "string",
        b't' | b'f' => "bool",
        b'n' => "null",
        _ => "number",
    };
    format!("invalid JSON: json: cannot unmarshal {kind} into Go value of type {go_type}")
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    /// Byte ranges of the top-level array's elements, filled by [`Scanner::value`].
    elements: Vec<(usize, usize)>,
}

type ScanResult = Result<(), String>;

impl Scanner<'_> {
    fn skip_space(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Result<u8, String> {
        self.b
            .get(self.i)
            .copied()
            .ok_or_else(|| "unexpected EOF".to_owned())
    }

    fn invalid(c: u8, context: &str) -> String {
        format!("invalid character {} {context}", quote_char(c))
    }

    /// Scans one complete value without recursion: `open` holds the containers entered so far
    /// (`[` or `{`). Records the spans of the top-level array's elements in `elements`.
    fn value(&mut self) -> ScanResult {
        let mut open: Vec<u8> = Vec::new();
        self.skip_space();
        let top_first = self.peek()?;
        let top_is_array = top_first == b'[';
        // Where the current element of the top-level array started.
        let mut element_start = 0;
        loop {
            // Expecting the start of a value.
            self.skip_space();
            let c = self.peek()?;
            if top_is_array && open.len() == 1 {
                element_start = self.i;
            }
            match c {
                b'{' | b'[' => {
                    self.i += 1;
                    if open.len() == MAX_NESTING_DEPTH {
                        return Err(Self::invalid(c, "exceeded max depth"));
                    }
                    open.push(c);
                    self.skip_space();
                    let close = if c == b'{' { b'}' } else { b']' };
                    if self.peek()? != close {
                        if c == b'{' {
                            self.object_key()?;
                        }
                        continue;
                    }
                    self.i += 1;
                    open.pop();
                }
                b'"' => self.string()?,
                b'-' | b'0'..=b'9' => self.number()?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => return Err(Self::invalid(c, "looking for beginning of value")),
            }
            // A value ended: close every container that ends here, up to the next element.
            loop {
                if top_is_array && open.len() == 1 {
                    self.elements.push((element_start, self.i));
                }
                let Some(&container) = open.last() else {
                    return self.after_top_level(top_first);
                };
                self.skip_space();
                let next = self.peek()?;
                match (container, next) {
                    (_, b',') => {
                        self.i += 1;
                        if container == b'{' {
                            self.object_key()?;
                        }
                        break;
                    }
                    (b'[', b']') | (b'{', b'}') => {
                        self.i += 1;
                        open.pop();
                    }
                    (b'[', _) => return Err(Self::invalid(next, "after array element")),
                    _ => return Err(Self::invalid(next, "after object key:value pair")),
                }
            }
        }
    }

    /// A top-level scalar must be followed by space or the end (Go's `stateEndTop`); after a
    /// top-level object or array the decoder stops reading.
    fn after_top_level(&self, first: u8) -> ScanResult {
        if matches!(first, b'{' | b'[') {
            return Ok(());
        }
        if let Some(&c) = self.b.get(self.i) {
            if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                return Err(Self::invalid(c, "after top-level value"));
            }
        }
        Ok(())
    }

    /// An object key and its colon.
    fn object_key(&mut self) -> ScanResult {
        self.skip_space();
        let c = self.peek()?;
        if c != b'"' {
            return Err(Self::invalid(
                c,
                "looking for beginning of object key string",
            ));
        }
        self.string()?;
        self.skip_space();
        let c = self.peek()?;
        if c != b':' {
            return Err(Self::invalid(c, "after object key"));
        }
        self.i += 1;
        Ok(())
    }

    fn string(&mut self) -> ScanResult {
        self.i += 1; // opening quote
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'"' => return Ok(()),
                b'\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            for _ in 0..4 {
                                let h = self.peek()?;
                                if !h.is_ascii_hexdigit() {
                                    return Err(Self::invalid(
                                        h,
                                        "in \\u hexadecimal character escape",
                                    ));
                                }
                                self.i += 1;
                            }
                        }
                        _ => return Err(Self::invalid(e, "in string escape code")),
                    }
                }
                c if c < 0x20 => return Err(Self::invalid(c, "in string literal")),
                _ => {}
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.i < self.b.len() && self.b[self.i].is_ascii_digit() {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> ScanResult {
        if self.b[self.i] == b'-' {
            self.i += 1;
            let c = self.peek()?;
            if !c.is_ascii_digit() {
                return Err(Self::invalid(c, "in numeric literal"));
            }
        }
        if self.b[self.i] == b'0' {
            self.i += 1;
        } else {
            self.digits();
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            let c = self.peek()?;
            if !c.is_ascii_digit() {
                return Err(Self::invalid(c, "after decimal point in numeric literal"));
            }
            self.digits();
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            let c = self.peek()?;
            if !c.is_ascii_digit() {
                return Err(Self::invalid(c, "in exponent of numeric literal"));
            }
            self.digits();
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> ScanResult {
        let name = std::str::from_utf8(word).unwrap_or("literal");
        self.i += 1;
        for &expected in &word[1..] {
            let c = self.peek()?;
            if c != expected {
                return Err(Self::invalid(
                    c,
                    &format!("in literal {name} (expecting {})", quote_char(expected)),
                ));
            }
            self.i += 1;
        }
        Ok(())
    }
}

/// Go's `quoteChar`: a byte in single quotes with Go's escapes.
fn quote_char(c: u8) -> String {
    match c {
        b'\'' => r"'\''".to_owned(),
        b'"' => "'\"'".to_owned(),
        0x07 => r"'\a'".to_owned(),
        0x08 => r"'\b'".to_owned(),
        0x0c => r"'\f'".to_owned(),
        b'\n' => r"'\n'".to_owned(),
        b'\r' => r"'\r'".to_owned(),
        b'\t' => r"'\t'".to_owned(),
        0x0b => r"'\v'".to_owned(),
        b'\\' => r"'\\'".to_owned(),
        c if c < 0x20 || c == 0x7f => format!(r"'\x{c:02x}'"),
        // Go turns the byte into the rune of the same value.
        c => format!("'{}'", char::from(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        decode_string_list(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn accepts_lists_and_null() {
        assert_eq!(
            decode_string_list(br#" ["A=1", "b.c=2"] "#).unwrap(),
            ["A=1", "b.c=2"]
        );
        assert!(decode_string_list(b"null").unwrap().is_empty());
        assert!(decode_string_list(b"[]").unwrap().is_empty());
        // Go's Decoder.More stops at a closing bracket, so this is accepted.
        assert_eq!(decode_string_list(br#"["x"]]"#).unwrap(), ["x"]);
    }

    #[test]
    fn deep_nesting_is_scanned_without_recursion() {
        // 5,000 levels (the issue's crash) and Go's limit itself are ordinary values.
        for depth in [5_000, MAX_NESTING_DEPTH] {
            let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(
                err(&deep),
                "invalid JSON: json: cannot unmarshal array into Go value of type string"
            );
            let unclosed = "[".repeat(depth);
            assert_eq!(err(&unclosed), "invalid JSON: unexpected EOF");
        }
        let objects = format!("{}1{}", r#"{"a":"#.repeat(5_000), "}".repeat(5_000));
        assert_eq!(
            err(&objects),
            "invalid JSON: json: cannot unmarshal object into Go value of type []string"
        );
        let nested = format!(r#"["ok", {}{}]"#, "[".repeat(9_000), "]".repeat(9_000));
        assert_eq!(
            err(&nested),
            "invalid JSON: json: cannot unmarshal array into Go value of type string"
        );
        // One level more than Go allows is Go's syntax error.
        let too_deep = "[".repeat(MAX_NESTING_DEPTH + 1);
        assert_eq!(
            err(&too_deep),
            "invalid JSON: invalid character '[' exceeded max depth"
        );
        // A 1 MiB body (the JSON limit) of brackets runs in a test thread's small stack.
        let huge = "[".repeat(1 << 20);
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || decode_string_list(huge.as_bytes()).unwrap_err())
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn elements_keep_their_values_and_escapes() {
        assert_eq!(
            decode_string_list(br#"[ "a\"b" ,null, "\u00e9=1" ]"#).unwrap(),
            ["a\"b", "", "\u{e9}=1"]
        );
        assert_eq!(
            err(r#"[true]"#),
            "invalid JSON: json: cannot unmarshal bool into Go value of type string"
        );
        assert_eq!(
            err(r#""x""#),
            "invalid JSON: json: cannot unmarshal string into Go value of type []string"
        );
        assert_eq!(
            err("12"),
            "invalid JSON: json: cannot unmarshal number into Go value of type []string"
        );
        assert_eq!(
            err(r#"[{"a":1,}]"#),
            "invalid JSON: invalid character '}' looking for beginning of object key string"
        );
        assert_eq!(
            err(r#"[{"a":1 "b"}]"#),
            "invalid JSON: invalid character '\"' after object key:value pair"
        );
        assert_eq!(
            err("[1,]"),
            "invalid JSON: invalid character ']' looking for beginning of value"
        );
    }

    #[test]
    fn go_messages() {
        assert_eq!(
            err("{i"),
            "invalid JSON: invalid character 'i' looking for beginning of object key string"
        );
        assert_eq!(
            err("x"),
            "invalid JSON: invalid character 'x' looking for beginning of value"
        );
        assert_eq!(
            err(r#"["a" "b"]"#),
            "invalid JSON: invalid character '\"' after array element"
        );
        assert_eq!(err(r#"["a""#), "invalid JSON: unexpected EOF");
        assert_eq!(err(""), "invalid JSON: got EOF while reading request body");
        assert_eq!(
            err("  \n"),
            "invalid JSON: got EOF while reading request body"
        );
        assert_eq!(err(r#"["a"] x"#), "unexpected content after JSON");
        assert_eq!(err(r#"["a"]["b"]"#), "unexpected content after JSON");
        assert_eq!(
            err(r#"{"a":1}"#),
            "invalid JSON: json: cannot unmarshal object into Go value of type []string"
        );
        assert_eq!(
            err(r#"["a",1]"#),
            "invalid JSON: json: cannot unmarshal number into Go value of type string"
        );
        assert_eq!(
            err("[tru]"),
            "invalid JSON: invalid character ']' in literal true (expecting 'e')"
        );
        assert_eq!(
            err("1x"),
            "invalid JSON: invalid character 'x' after top-level value"
        );
        assert_eq!(
            err("[-a]"),
            "invalid JSON: invalid character 'a' in numeric literal"
        );
        assert_eq!(
            err("[\"\n\"]"),
            r"invalid JSON: invalid character '\n' in string literal"
        );
        assert_eq!(
            err(r#"{"a" 1}"#),
            "invalid JSON: invalid character '1' after object key"
        );
    }
}
