//! Error kinds shared by every library crate; the API maps them to HTTP status codes in one place.

use std::fmt;

/// What kind of failure an error is, independent of which crate raised it.
///
/// Mirrors containerd's errdefs and moby's error classes, so the API layer can map each kind to
/// Docker's status code (404, 409, 400, 412/409, 503, 500) without knowing the crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The named object does not exist (HTTP 404).
    NotFound,
    /// The object already exists or the request conflicts with its state (HTTP 409).
    AlreadyExists,
    /// The request itself is malformed or names something invalid (HTTP 400).
    InvalidArgument,
    /// The object is not in a state that allows the operation (HTTP 409 in Docker's mapping).
    FailedPrecondition,
    /// A resource is busy or temporarily unreachable; retrying may work (HTTP 503).
    Unavailable,
    /// Anything else: a bug or an unexpected system failure (HTTP 500).
    Internal,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::FailedPrecondition => "failed precondition",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        })
    }
}
