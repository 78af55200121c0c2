//! [`PluginId`]: the 64-hex identifier of an installed plugin.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A plugin id: exactly 64 lowercase hex digits (random, not content-derived, as in Docker).
///
/// Validated on construction, so holders never re-check it; safe to use as a path component.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PluginId(String);

/// A string that is not a valid plugin id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid plugin id {input:?}: must be 64 lowercase hex digits")]
pub struct PluginIdError {
    /// The rejected input.
    pub input: String,
}

impl PluginId {
    /// Parses a full 64-hex id.
    pub fn parse(input: &str) -> Result<Self, PluginIdError> {
        if crate::is_lower_hex(input, 64) {
            Ok(PluginId(input.to_owned()))
        } else {
            Err(PluginIdError {
                input: input.to_owned(),
            })
        }
    }

    /// Builds an id from 32 bytes (the caller supplies the randomness).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PluginId(crate::to_hex(&bytes))
    }

    /// The id as its 64-hex string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, as `docker plugin ls` shows them.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for PluginId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PluginId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PluginId({})", self.short())
    }
}

impl FromStr for PluginId {
    type Err = PluginIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PluginId::parse(s)
    }
}

impl AsRef<str> for PluginId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for PluginId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PluginId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PluginId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_exactly_64_lowercase_hex() {
        let ok = "a".repeat(64);
        assert_eq!(PluginId::parse(&ok).unwrap().as_str(), ok);
        assert!(PluginId::parse(&"a".repeat(63)).is_err());
        assert!(PluginId::parse(&"a".repeat(65)).is_err());
        assert!(PluginId::parse(&"A".repeat(64)).is_err());
        assert!(PluginId::parse(&format!("{}g", "a".repeat(63))).is_err());
        assert!(PluginId::parse(&format!("../{}", "a".repeat(61))).is_err());
    }

    #[test]
    fn from_bytes_is_hex_and_short_is_twelve() {
        let id = PluginId::from_bytes([0xab; 32]);
        assert_eq!(id.as_str(), "ab".repeat(32));
        assert_eq!(id.short(), "abababababab");
    }

    #[test]
    fn serde_validates() {
        let json = format!("\"{}\"", "0".repeat(64));
        let id: PluginId = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), json);
        assert!(serde_json::from_str::<PluginId>("\"nope\"").is_err());
    }
}
