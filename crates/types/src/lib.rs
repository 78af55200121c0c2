//! The shared vocabulary of plugind: validated identifiers and the shapes every crate speaks.
//!
//! Main types:
//! - [`PluginId`]: a plugin's 64-hex identifier, validated on construction;
//! - [`Digest`]: a `sha256:<64 hex>` content digest;
//! - [`Reference`]: a Docker image/plugin reference with Docker's normalisation rules;
//! - [`config::PluginConfig`] and [`config::PluginSettings`]: the plugin `config.json` model
//!   (Docker's JSON, read case-insensitively as Docker does) and the user's settings;
//! - [`validate`]: the path rules a stranger's `config.json` must pass before anything is
//!   built from it;
//! - [`time`]: UTC RFC 3339 formatting and parsing;
//! - [`ErrorKind`]: the small set of error kinds every library error maps to, which the API
//!   turns into HTTP status codes.
//!
//! This crate does no IO and holds no policy: it only validates and names things.

#![warn(missing_docs)]

pub mod config;
mod digest;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod id;
mod reference;
pub mod time;
pub mod validate;

pub use digest::{Digest, DigestError};
pub use error::ErrorKind;
pub use id::{PluginId, PluginIdError};
pub use reference::{Reference, ReferenceError};

/// Formats bytes as lowercase hex (used for ids and digests).
pub fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0x0f)] as char);
    }
    out
}

/// True when `s` is exactly `len` lowercase hex digits.
pub(crate) fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
