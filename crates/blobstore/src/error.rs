//! [`BlobError`]: every failure of the blob store, with the digest, ref or path involved.

use std::{io, path::PathBuf};

use plugind_sys::SysError;
use plugind_types::{Digest, ErrorKind};

/// Result alias for this crate.
pub type Result<T, E = BlobError> = std::result::Result<T, E>;

/// A failed blob store operation.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// Another writer (in this process or another one) holds the ingest for this ref.
    #[error("ingest {reference:?} is locked by another writer")]
    Locked {
        /// The caller's ingest ref.
        reference: String,
    },
    /// The ingest ref cannot be used.
    #[error("invalid ingest ref {reference:?}: {reason}")]
    InvalidRef {
        /// The rejected ref.
        reference: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Commit was asked for a size the written data does not have; nothing was published.
    #[error("ingest {reference:?} holds {actual} bytes, expected {expected}")]
    SizeMismatch {
        /// The ingest ref.
        reference: String,
        /// The size the caller expected.
        expected: u64,
        /// The size actually written.
        actual: u64,
    },
    /// The written data does not hash to the expected digest; nothing was published.
    #[error("ingest {reference:?} hashes to {actual}, expected {expected}")]
    DigestMismatch {
        /// The ingest ref.
        reference: String,
        /// The digest the caller expected.
        expected: Digest,
        /// The digest of the data actually written.
        actual: Digest,
    },
    /// The committed content is already in the store; the store keeps its single copy.
    #[error("blob {digest} already exists")]
    AlreadyExists {
        /// The blob's digest.
        digest: Digest,
    },
    /// No committed blob has this digest.
    #[error("blob {digest} not found")]
    NotFound {
        /// The missing digest.
        digest: Digest,
    },
    /// A file operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done (`open`, `read`, `rename`, ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A `plugind-sys` operation (fsync, rename, lock) failed.
    #[error(transparent)]
    Sys(#[from] SysError),
}

impl BlobError {
    /// The kind of failure, for callers that branch on it and for the API's status codes.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BlobError::Locked { .. } => ErrorKind::Unavailable,
            BlobError::InvalidRef { .. } => ErrorKind::InvalidArgument,
            BlobError::SizeMismatch { .. } | BlobError::DigestMismatch { .. } => {
                ErrorKind::FailedPrecondition
            }
            BlobError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            BlobError::NotFound { .. } => ErrorKind::NotFound,
            BlobError::Io { .. } | BlobError::Sys(_) => ErrorKind::Internal,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        BlobError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_containerd_errdefs() {
        let d = Digest::from_sha256_bytes([1; 32]);
        let r = || "r".to_owned();
        assert_eq!(
            BlobError::Locked { reference: r() }.kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(
            BlobError::SizeMismatch {
                reference: r(),
                expected: 1,
                actual: 2
            }
            .kind(),
            ErrorKind::FailedPrecondition
        );
        assert_eq!(
            BlobError::DigestMismatch {
                reference: r(),
                expected: d.clone(),
                actual: d.clone()
            }
            .kind(),
            ErrorKind::FailedPrecondition
        );
        assert_eq!(
            BlobError::AlreadyExists { digest: d.clone() }.kind(),
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            BlobError::NotFound { digest: d.clone() }.kind(),
            ErrorKind::NotFound
        );
        let io = BlobError::io("open", "/x", io::Error::other("boom"));
        assert_eq!(io.kind(), ErrorKind::Internal);
        assert_eq!(io.to_string(), "open /x");
        assert_eq!(
            BlobError::NotFound { digest: d }.to_string(),
            format!("blob sha256:{} not found", "01".repeat(32))
        );
    }
}
