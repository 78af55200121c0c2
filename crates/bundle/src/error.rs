//! [`BundleError`]: every failure of this crate, with the paths involved.

use std::{fmt, io, path::PathBuf};

use plugind_sys::SysError;
use plugind_types::ErrorKind;

/// Result alias for this crate.
pub type Result<T, E = BundleError> = std::result::Result<T, E>;

/// A mount that could not be unmounted.
#[derive(Debug)]
pub struct UnmountFailure {
    /// The mount point.
    pub path: PathBuf,
    /// Why.
    pub source: SysError,
}

/// Paths of failures, for error messages.
#[derive(Debug)]
pub(crate) struct PathList(pub(crate) Vec<PathBuf>);

impl fmt::Display for PathList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", p.display())?;
        }
        Ok(())
    }
}

/// A failed bundle operation.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A filesystem operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A system call wrapper of `plugind-sys` failed (its error names the path).
    #[error(transparent)]
    Sys(#[from] SysError),
    /// The bundle directory already exists.
    #[error("bundle {path} already exists")]
    AlreadyExists {
        /// The bundle directory.
        path: PathBuf,
    },
    /// No bundle (or no `config.json` in it).
    #[error("bundle {path} not found")]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },
    /// The spec cannot be used for a bundle.
    #[error("invalid spec for bundle {path}: {reason}")]
    InvalidSpec {
        /// The bundle directory.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// `config.json` could not be encoded or decoded.
    #[error("config.json of bundle {path}")]
    Json {
        /// The config file.
        path: PathBuf,
        /// The codec error.
        #[source]
        source: serde_json::Error,
    },
    /// A unix socket path exceeds the 107 usable bytes of `sun_path`.
    #[error("socket path {path} is {len} bytes, more than the {max} a unix socket allows; use a shorter root")]
    SocketPathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The limit (107).
        max: usize,
    },
    /// A plugin's socket name is not a plain file name (it would leave the runtime directory).
    #[error("invalid plugin socket name {name:?}: {rule}")]
    InvalidSocketName {
        /// The name as configured.
        name: String,
        /// The rule it breaks.
        rule: plugind_types::validate::PathRule,
    },
    /// Something is still mounted below a bundle or plugin directory and could not be unmounted.
    #[error("could not unmount {}", PathList(.failures.iter().map(|f| f.path.clone()).collect()))]
    Unmount {
        /// Every mount that stayed, with its error.
        failures: Vec<UnmountFailure>,
    },
    /// Creating a bundle failed and removing the half-made directory failed too.
    #[error("bundle {path} left behind after a failed create (cleanup: {cleanup})")]
    Rollback {
        /// The bundle directory.
        path: PathBuf,
        /// The original failure.
        #[source]
        source: Box<BundleError>,
        /// Why the cleanup failed.
        cleanup: io::Error,
    },
}

impl BundleError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        BundleError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The error's kind, for the API's status mapping.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BundleError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            BundleError::NotFound { .. } => ErrorKind::NotFound,
            BundleError::InvalidSpec { .. }
            | BundleError::SocketPathTooLong { .. }
            | BundleError::InvalidSocketName { .. } => ErrorKind::InvalidArgument,
            BundleError::Unmount { .. } => ErrorKind::FailedPrecondition,
            BundleError::Sys(e) if e.is_not_found() => ErrorKind::NotFound,
            BundleError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            BundleError::Io { .. }
            | BundleError::Sys(_)
            | BundleError::Json { .. }
            | BundleError::Rollback { .. } => ErrorKind::Internal,
        }
    }
}
