//! [`DistributionError`]: every failure of the registry client, with the registry, repository
//! or digest involved, and its [`ErrorKind`] for the API's status codes.

use plugind_blobstore::BlobError;
use plugind_types::{Digest, ErrorKind};

/// Result alias for this crate.
pub type Result<T, E = DistributionError> = std::result::Result<T, E>;

/// A failed registry operation.
///
/// Messages are lowercase and name what failed; the API prefixes them with Docker's context
/// (`error resolving plugin reference: …`, `error pushing plugin: …`).
#[derive(Debug, thiserror::Error)]
pub enum DistributionError {
    /// The registry has no manifest for this tag or digest, or no such repository.
    #[error("manifest unknown: {reference}")]
    ManifestUnknown {
        /// The reference as it was asked for.
        reference: String,
    },
    /// The registry has no blob with this digest in this repository.
    #[error("blob unknown: {digest} in {repository}")]
    BlobUnknown {
        /// The repository asked.
        repository: String,
        /// The missing blob.
        digest: Digest,
    },
    /// The registry refused the credentials, or asked for credentials none were given for.
    #[error("unauthorized: {message}")]
    Unauthorized {
        /// What the registry or token server said (capped).
        message: String,
    },
    /// The registry cannot be reached (connect error, TLS failure, timeout) after the retries.
    /// The message reads as Docker's: `failed to do request: Head "<url>": <cause>`.
    #[error("{message}")]
    Unreachable {
        /// The registry host (with port).
        registry: String,
        /// The last transport error.
        message: String,
    },
    /// The manifest's config is not a plugin config (for example a container image).
    #[error("did not find plugin config for specified reference {reference}")]
    NotAPlugin {
        /// The reference as it was asked for.
        reference: String,
    },
    /// A manifest, config or layer has a media type plugind does not accept.
    #[error("unsupported media type {media_type:?} for {what}")]
    UnsupportedMediaType {
        /// What carried it (`manifest`, `layer`, ...).
        what: &'static str,
        /// The media type received.
        media_type: String,
    },
    /// The manifest is not the JSON of a schema-2 manifest.
    #[error("invalid manifest: {reason}")]
    InvalidManifest {
        /// What is wrong with it.
        reason: String,
    },
    /// Content does not hash to the digest it was asked for or announced under.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was checked (`manifest`, `blob`, ...).
        what: &'static str,
        /// The digest asked for or announced.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// Content is larger than the cap for its kind, or than its descriptor says.
    #[error("{what} too large: more than {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// The number of bytes allowed.
        limit: u64,
    },
    /// Content ended before the size its descriptor says.
    #[error("{what} truncated: got {actual} of {expected} bytes")]
    Truncated {
        /// What was truncated.
        what: &'static str,
        /// The size announced.
        expected: u64,
        /// The bytes received.
        actual: u64,
    },
    /// The registry answered with an error status not covered above.
    #[error("registry error: {status} {code}: {message}")]
    Registry {
        /// The HTTP status.
        status: u16,
        /// The registry error code (`MANIFEST_INVALID`, ...) or "".
        code: String,
        /// The registry's message (capped).
        message: String,
    },
    /// The registry's answer breaks the protocol (missing `Location`, bad header, ...).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The reference cannot be used with a registry (no registry host mapping, digest where a
    /// tag is needed, ...).
    #[error("invalid reference {reference}: {reason}")]
    InvalidReference {
        /// The reference.
        reference: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// The client could not be built (TLS roots, options).
    #[error("registry client: {0}")]
    Client(String),
    /// The blob store failed.
    #[error(transparent)]
    Blobstore(#[from] BlobError),
}

impl DistributionError {
    /// The kind of failure, for callers that branch on it and for the API's status codes.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DistributionError::ManifestUnknown { .. } | DistributionError::BlobUnknown { .. } => {
                ErrorKind::NotFound
            }
            DistributionError::Unreachable { .. } => ErrorKind::Unavailable,
            DistributionError::InvalidReference { .. } => ErrorKind::InvalidArgument,
            DistributionError::Unauthorized { .. }
            | DistributionError::NotAPlugin { .. }
            | DistributionError::UnsupportedMediaType { .. }
            | DistributionError::InvalidManifest { .. }
            | DistributionError::DigestMismatch { .. }
            | DistributionError::TooLarge { .. }
            | DistributionError::Truncated { .. }
            | DistributionError::Protocol(_)
            | DistributionError::Client(_) => ErrorKind::Internal,
            DistributionError::Registry { status, .. } => match status {
                404 => ErrorKind::NotFound,
                429 | 502..=504 => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            },
            DistributionError::Blobstore(e) => e.kind(),
        }
    }
}
