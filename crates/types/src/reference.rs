//! [`Reference`]: Docker's plugin/image references with the normalisation of
//! `distribution/reference` (`ParseNormalizedNamed`, `FamiliarString`, `TagNameOnly`).

use std::fmt;

use crate::Digest;

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// A parsed, normalised reference: `domain/path[:tag][@digest]`.
///
/// The domain is always explicit (`docker.io` when the input named none) and Docker Hub
/// single-component names carry `library/`, so two spellings of one name compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a reference was rejected; the messages are Docker's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The input is empty.
    #[error("invalid reference format")]
    Empty,
    /// The input is a bare 64-hex string, which would collide with plugin ids.
    #[error("invalid repository name ({input}), cannot specify 64-byte hexadecimal strings")]
    HexName {
        /// The rejected input.
        input: String,
    },
    /// The repository path has upper-case letters.
    #[error("invalid reference format: repository name must be lowercase")]
    NotLowercase,
    /// The name is longer than 255 characters.
    #[error("invalid reference format: repository name must not be more than 255 characters")]
    NameTooLong,
    /// Anything else that does not match the reference grammar.
    #[error("invalid reference format")]
    InvalidFormat,
    /// The digest part is malformed or not sha256.
    #[error("invalid reference format: {0}")]
    InvalidDigest(#[from] crate::DigestError),
}

impl Reference {
    /// Parses a reference as the docker CLI and daemon do (`ParseNormalizedNamed`).
    pub fn parse_normalized(input: &str) -> Result<Self, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if crate::is_lower_hex(input, 64) {
            return Err(ReferenceError::HexName {
                input: input.to_owned(),
            });
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => (rest, Some(Digest::parse(d)?)),
            None => (input, None),
        };
        // A tag follows the last ':' that comes after the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                if !valid_tag(tag) {
                    return Err(ReferenceError::InvalidFormat);
                }
                (&rest[..last_slash + i], Some(tag.to_owned()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(ReferenceError::InvalidFormat);
        }
        let (domain, remainder) = split_docker_domain(name);
        if remainder.to_lowercase() != remainder {
            return Err(ReferenceError::NotLowercase);
        }
        if !valid_domain(&domain) || !remainder.split('/').all(valid_path_component) {
            return Err(ReferenceError::InvalidFormat);
        }
        if domain.len() + 1 + remainder.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong);
        }
        Ok(Reference {
            domain,
            path: remainder,
            tag,
            digest,
        })
    }

    /// Adds the `latest` tag when the reference has neither tag nor digest (`TagNameOnly`).
    pub fn with_default_tag(mut self) -> Self {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some(DEFAULT_TAG.to_owned());
        }
        self
    }

    /// The registry host (with port), `docker.io` for Docker Hub.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path inside the registry (`library/foo` for official Hub names).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The full repository name: `docker.io/library/foo`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The familiar repository name, as users type it: `foo`, `vieux/sshfs`, `localhost:5000/x`.
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            self.path
                .strip_prefix(OFFICIAL_REPO_PREFIX)
                .filter(|p| !p.contains('/'))
                .unwrap_or(&self.path)
                .to_owned()
        } else {
            self.full_name()
        }
    }

    /// The familiar form with tag and digest: `foo:latest` (what Docker stores as a plugin name).
    pub fn familiar_string(&self) -> String {
        self.with_suffix(self.familiar_name())
    }

    /// The full form with tag and digest: `docker.io/library/foo:latest`.
    pub fn full_string(&self) -> String {
        self.with_suffix(self.full_name())
    }

    fn with_suffix(&self, mut name: String) -> String {
        if let Some(tag) = &self.tag {
            name.push(':');
            name.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            name.push('@');
            name.push_str(&digest.to_string());
        }
        name
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full_string())
    }
}

/// Splits `name` into domain and path the way `splitDockerDomain` does.
fn split_docker_domain(name: &str) -> (String, String) {
    let (mut domain, mut remainder) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_owned(), rest.to_owned())
        }
        _ => (DEFAULT_DOMAIN.to_owned(), name.to_owned()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_owned();
    }
    if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        remainder = format!("{OFFICIAL_REPO_PREFIX}{remainder}");
    }
    (domain, remainder)
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes[1..]
            .iter()
            .all(|&b| word(b) || b == b'.' || b == b'-')
}

/// A host name or IPv4/`[IPv6]` address with an optional numeric port.
fn valid_domain(domain: &str) -> bool {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, tail)) => {
                if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
                    return false;
                }
                match tail {
                    "" => return true,
                    t => return t.strip_prefix(':').is_some_and(valid_port),
                }
            }
            None => return false,
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        }
    };
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
    };
    host.split('.').all(label_ok) && port.is_none_or(valid_port)
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> Reference {
        Reference::parse_normalized(s).unwrap()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(norm("foo").full_name(), "docker.io/library/foo");
        assert_eq!(norm("vieux/sshfs").full_name(), "docker.io/vieux/sshfs");
        assert_eq!(
            norm("foo").with_default_tag().familiar_string(),
            "foo:latest"
        );
        assert_eq!(norm("docker.io/library/foo:1").familiar_string(), "foo:1");
        assert_eq!(
            norm("index.docker.io/vieux/sshfs").familiar_name(),
            "vieux/sshfs"
        );
        assert_eq!(
            norm("127.0.0.1:5000/plugin/basic")
                .with_default_tag()
                .familiar_string(),
            "127.0.0.1:5000/plugin/basic:latest"
        );
        assert_eq!(
            norm("127.0.0.1:5000/plugin/basic")
                .with_default_tag()
                .full_string(),
            "127.0.0.1:5000/plugin/basic:latest"
        );
        assert_eq!(
            norm("vieux/sshfs").with_default_tag().full_string(),
            "docker.io/vieux/sshfs:latest"
        );
        assert_eq!(norm("localhost/foo").domain(), "localhost");
        assert_eq!(norm("localhost:5000/foo:v1.2").tag(), Some("v1.2"));
    }

    #[test]
    fn digests_and_tags() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = norm(&format!("foo@{d}"));
        assert_eq!(r.digest().unwrap().to_string(), d);
        assert_eq!(
            r.clone().with_default_tag().tag(),
            None,
            "digest refs get no default tag"
        );
        assert_eq!(r.full_string(), format!("docker.io/library/foo@{d}"));
        let both = norm(&format!("foo:1@{d}"));
        assert_eq!(both.tag(), Some("1"));
    }

    #[test]
    fn rejects_what_docker_rejects() {
        assert_eq!(Reference::parse_normalized(""), Err(ReferenceError::Empty));
        assert!(matches!(
            Reference::parse_normalized(&"a".repeat(64)),
            Err(ReferenceError::HexName { .. })
        ));
        assert_eq!(
            Reference::parse_normalized("TEST/vol"),
            Err(ReferenceError::NotLowercase)
        );
        assert_eq!(
            ReferenceError::NotLowercase.to_string(),
            "invalid reference format: repository name must be lowercase"
        );
        for bad in [
            "foo:",
            "foo/",
            "/foo",
            "foo//bar",
            "-foo",
            "foo:bad tag",
            "foo@sha256:12",
            "a..b",
        ] {
            assert!(
                Reference::parse_normalized(bad).is_err(),
                "{bad} must be rejected"
            );
        }
        assert!(Reference::parse_normalized(&"a".repeat(256)).is_err());
    }

    #[test]
    fn separators() {
        assert!(valid_path_component("a.b_c__d---e"));
        assert!(!valid_path_component("a___b"));
        assert!(!valid_path_component("a._b"));
        assert!(!valid_path_component("a-"));
    }
}
