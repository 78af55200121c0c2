//! [`SysError`]: every failure of this crate, with the operation and path that failed.

use std::{io, path::PathBuf};

/// Result alias for this crate.
pub type Result<T, E = SysError> = std::result::Result<T, E>;

/// A failed system operation.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// An IO operation on a path failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done (`open`, `rename`, `fsync`, ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A lock is held by someone else (another process or another handle in this one).
    #[error("{path} is locked by another user")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A path argument is unusable (no parent, no file name, not absolute, ...).
    #[error("invalid path {path}: {reason}")]
    InvalidPath {
        /// The path.
        path: PathBuf,
        /// Why it is unusable.
        reason: &'static str,
    },
}

impl SysError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SysError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn errno(op: &'static str, path: impl Into<PathBuf>, errno: nix::Error) -> Self {
        SysError::Io {
            op,
            path: path.into(),
            source: io::Error::from(errno),
        }
    }

    /// True when the failure was a missing file or directory.
    pub fn is_not_found(&self) -> bool {
        self.io_error()
            .is_some_and(|e| e.kind() == io::ErrorKind::NotFound)
    }

    /// The underlying OS error, if any.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            SysError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
