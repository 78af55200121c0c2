//! JSON request bodies read the way moby's `httputils.ReadJSON` reads them (Go's
//! `json.Decoder`), so malformed bodies get Docker's exact 400 texts: `invalid JSON: invalid
//! character 'i' looking for beginning of object key string`, `unexpected content after JSON`,
//! `invalid JSON: json: cannot unmarshal object into Go value of type []string`, ...

/// Decodes the first JSON value of `body` as Go's `[]string` (`null` is an empty list).
/// The error is the whole message moby sends.
pub(crate) fn decode_string_list(body: &[u8]) -> Result<Vec<String>, String> {
    let mut s = Scanner { b: body, i: 0 };
    s.skip_space();
    if s.i == body.len() {
        return Err("invalid JSON: got EOF while reading request body".to_owned());
    }
    let start = s.i;
    s.value(Ctx::Top)
        .map_err(|e| format!("invalid JSON: {e}"))?;
    let end = s.i;
    // `Decoder.More`: anything but a closing bracket after the value is extra content.
    s.skip_space();
    if s.i < body.len() && !matches!(body[s.i], b']' | b'}') {
        return Err("unexpected content after JSON".to_owned());
    }
    let value: serde_json::Value =
        serde_json::from_slice(&body[start..end]).map_err(|e| format!("invalid JSON: {e}"))?;
    match value {
        serde_json::Value::Null => Ok(Vec::new()),
        serde_json::Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            let mut first_err = None;
            for item in items {
                match item {
                    serde_json::Value::String(s) => out.push(s),
                    // Go leaves a string untouched when decoding null into it.
                    serde_json::Value::Null => out.push(String::new()),
                    other => {
                        first_err.get_or_insert_with(|| unmarshal_error(&other, "string"));
                        out.push(String::new());
                    }
                }
            }
            match first_err {
                Some(e) => Err(e),
                None => Ok(out),
            }
        }
        other => Err(unmarshal_error(&other, "[]string")),
    }
}

fn unmarshal_error(value: &serde_json::Value, go_type: &str) -> String {
    let kind = match value {
        serde_json::Value::Object(_) => "object",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Null => "null",
    };
    format!("invalid JSON: json: cannot unmarshal {kind} into Go value of type {go_type}")
}

/// Where a value sits; decides Go's wording after it ends.
#[derive(Clone, Copy)]
enum Ctx {
    Top,
    Array,
    ObjectValue,
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
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

    fn value(&mut self, ctx: Ctx) -> ScanResult {
        self.skip_space();
        let c = self.peek()?;
        match c {
            b'{' => {
                self.i += 1;
                self.object()
            }
            b'[' => {
                self.i += 1;
                self.array()
            }
            b'"' => {
                self.string()?;
                self.after_scalar(ctx)
            }
            b'-' | b'0'..=b'9' => {
                self.number()?;
                self.after_scalar(ctx)
            }
            b't' => {
                self.literal(b"true")?;
                self.after_scalar(ctx)
            }
            b'f' => {
                self.literal(b"false")?;
                self.after_scalar(ctx)
            }
            b'n' => {
                self.literal(b"null")?;
                self.after_scalar(ctx)
            }
            _ => Err(Self::invalid(c, "looking for beginning of value")),
        }
    }

    /// A top-level scalar must be followed by space or the end (Go's `stateEndTop`).
    fn after_scalar(&mut self, ctx: Ctx) -> ScanResult {
        if let Ctx::Top = ctx {
            if let Some(&c) = self.b.get(self.i) {
                if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                    return Err(Self::invalid(c, "after top-level value"));
                }
            }
        }
        Ok(())
    }

    fn object(&mut self) -> ScanResult {
        self.skip_space();
        if self.peek()? == b'}' {
            self.i += 1;
            return Ok(());
        }
        loop {
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
            self.value(Ctx::ObjectValue)?;
            self.skip_space();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Ok(());
                }
                c => return Err(Self::invalid(c, "after object key:value pair")),
            }
        }
    }

    fn array(&mut self) -> ScanResult {
        self.skip_space();
        if self.peek()? == b']' {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.value(Ctx::Array)?;
            self.skip_space();
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Ok(());
                }
                c => return Err(Self::invalid(c, "after array element")),
            }
        }
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
