//! `WWW-Authenticate` challenges (RFC 7235) as registries send them: `Basic realm="…"` and
//! `Bearer realm="…",service="…",scope="…"`.

/// One authentication challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// The scheme, lowercased (`basic`, `bearer`).
    pub scheme: String,
    /// Parameters with lowercased names.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// The value of a parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The longest header value parsed; longer ones are junk.
const MAX_HEADER: usize = 8 * 1024;

/// Parses every challenge of one header value; junk yields what could be read before it.
pub(crate) fn parse(header: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    if header.len() > MAX_HEADER {
        return out;
    }
    let mut rest = header.trim_start();
    while !rest.is_empty() {
        // A scheme token.
        let end = rest.find([' ', ',']).unwrap_or(rest.len());
        let scheme = &rest[..end];
        rest = rest[end..].trim_start_matches([' ', ',']);
        if scheme.is_empty() || !scheme.bytes().all(is_token_byte) {
            return out;
        }
        let mut challenge = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params: Vec::new(),
        };
        // Parameters: name=value or name="quoted", separated by commas, until the next
        // token that is not followed by '=' (the next challenge's scheme).
        while let Some(eq) = rest.find('=') {
            let name = rest[..eq].trim();
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                break;
            }
            let after = rest[eq + 1..].trim_start();
            let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, escaped)) = chars.next() {
                                value.push(escaped);
                            }
                        }
                        '"' => {
                            end = Some(i + 1);
                            break;
                        }
                        c => value.push(c),
                    }
                }
                let Some(end) = end else {
                    return push(out, challenge);
                };
                (value, &quoted[end..])
            } else {
                let end = after.find([',', ' ']).unwrap_or(after.len());
                (after[..end].to_owned(), &after[end..])
            };
            challenge.params.push((name.to_ascii_lowercase(), value));
            rest = remaining.trim_start_matches([' ', ',']);
        }
        out.push(challenge);
    }
    out
}

fn push(mut out: Vec<Challenge>, c: Challenge) -> Vec<Challenge> {
    out.push(c);
    out
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_of_a_token_server() {
        let c = parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository(plugin):vieux/sshfs:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(
            c[0].param("scope"),
            Some("repository(plugin):vieux/sshfs:pull")
        );
    }

    #[test]
    fn basic_challenge_and_several_challenges() {
        let c = parse(r#"Basic realm="Registry Realm""#);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("Registry Realm"));
        let two = parse(r#"Basic realm="a, b", Bearer realm="https://t/x",Service=s"#);
        assert_eq!(two.len(), 2);
        assert_eq!(two[0].param("realm"), Some("a, b"));
        assert_eq!(two[1].scheme, "bearer");
        assert_eq!(two[1].param("service"), Some("s"));
    }

    #[test]
    fn escapes_and_junk() {
        let c = parse(r#"Bearer realm="x\"y""#);
        assert_eq!(c[0].param("realm"), Some("x\"y"));
        assert!(parse("").is_empty());
        assert!(parse("\u{1}\u{2}").is_empty());
        let unterminated = parse(r#"Bearer realm="open"#);
        assert_eq!(unterminated.len(), 1);
        assert_eq!(unterminated[0].param("realm"), None);
        assert!(parse(&"a".repeat(MAX_HEADER + 1)).is_empty());
    }
}
