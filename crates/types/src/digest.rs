//! [`Digest`]: a validated `sha256:<64 hex>` content digest.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A sha256 content digest, `sha256:<64 lowercase hex>`.
///
/// Only sha256 is supported: it is what Docker and OCI registries use for plugins.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

/// A string that is not a valid digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The algorithm prefix is not `sha256:`.
    #[error("unsupported digest algorithm in {input:?}: only sha256 is supported")]
    UnsupportedAlgorithm {
        /// The rejected input.
        input: String,
    },
    /// The hex part is not 64 lowercase hex digits.
    #[error("invalid digest {input:?}: expected sha256:<64 lowercase hex>")]
    InvalidHex {
        /// The rejected input.
        input: String,
    },
}

impl Digest {
    /// The algorithm prefix including its colon.
    pub const PREFIX: &'static str = "sha256:";

    /// Parses `sha256:<64 hex>`.
    pub fn parse(input: &str) -> Result<Self, DigestError> {
        let Some((alg, hex)) = input.split_once(':') else {
            return Err(DigestError::InvalidHex {
                input: input.to_owned(),
            });
        };
        if alg != "sha256" {
            return Err(DigestError::UnsupportedAlgorithm {
                input: input.to_owned(),
            });
        }
        Self::from_hex(hex).map_err(|_| DigestError::InvalidHex {
            input: input.to_owned(),
        })
    }

    /// Builds a digest from its 64-hex part (no prefix).
    pub fn from_hex(hex: &str) -> Result<Self, DigestError> {
        if crate::is_lower_hex(hex, 64) {
            Ok(Digest {
                hex: hex.to_owned(),
            })
        } else {
            Err(DigestError::InvalidHex {
                input: hex.to_owned(),
            })
        }
    }

    /// Builds a digest from a finished sha256 hash.
    pub fn from_sha256_bytes(bytes: [u8; 32]) -> Self {
        Digest {
            hex: crate::to_hex(&bytes),
        }
    }

    /// The 64-hex part, without the algorithm; safe as a file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The algorithm name, always `sha256`.
    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest(sha256:{})", &self.hex[..12])
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        let s = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let d = Digest::parse(&s).unwrap();
        assert_eq!(d.to_string(), s);
        assert_eq!(d.hex(), &s[7..]);
    }

    #[test]
    fn rejects_bad_digests() {
        assert!(matches!(
            Digest::parse(&format!("sha512:{}", "a".repeat(64))),
            Err(DigestError::UnsupportedAlgorithm { .. })
        ));
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(Digest::parse(&format!("sha256:{}", "a".repeat(63))).is_err());
        assert!(Digest::parse(&"a".repeat(64)).is_err());
        assert!(Digest::parse("sha256:").is_err());
    }

    #[test]
    fn from_bytes_matches_hex() {
        let d = Digest::from_sha256_bytes([0x0f; 32]);
        assert_eq!(d.hex(), "0f".repeat(32));
    }
}
