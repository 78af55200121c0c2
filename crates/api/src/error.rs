//! Errors: [`ApiError`] for starting the server, and the one place where failures become
//! HTTP status codes ([`HttpError`], [`backend_status`]).

use std::path::PathBuf;

use hyper::StatusCode;
use plugind_types::ErrorKind;

use crate::backend::{BackendError, Stage};

/// Why the API server could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The socket path is served by another live process.
    #[error("another daemon is already listening on {path}")]
    SocketInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Creating, binding or setting permissions on the socket failed.
    #[error("cannot set up api socket {path}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Accepting a connection failed for good.
    #[error("accepting api connections failed")]
    Accept(#[source] std::io::Error),
}

impl ApiError {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ApiError::SocketInUse { .. } => ErrorKind::AlreadyExists,
            ApiError::Socket { .. } | ApiError::Accept(_) => ErrorKind::Internal,
        }
    }
}

/// The endpoints whose errors Docker maps differently from the general rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `POST /plugins/create`: a name clash is 409, everything else 500 (moby's errors are untyped).
    Create,
    /// `POST /plugins/{name}/set`: lookup errors keep their code, every setting error is 500.
    Set,
    /// Pull, upgrade and privileges (distribution.md §3): a taken name is 400, invalid
    /// references and untyped failures 500, a missing manifest 404, an unreachable registry
    /// 502, an enabled plugin (upgrade) 409.
    Remote,
    /// Everything else follows [`kind_status`].
    Other,
}

/// Docker's status for a kind (moby `httpstatus.FromError`, docker-plugin-api.md §1.5).
fn kind_status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists | ErrorKind::FailedPrecondition => StatusCode::CONFLICT,
        ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The status of a backend error on an endpoint, with Docker's per-endpoint exceptions
/// (docker-plugin-api.md §3.9, §3.11, §6).
pub(crate) fn backend_status(endpoint: Endpoint, err: &BackendError) -> StatusCode {
    match (endpoint, err.stage, err.kind) {
        (Endpoint::Set, Stage::Operation, _) => StatusCode::INTERNAL_SERVER_ERROR,
        (Endpoint::Create, _, ErrorKind::AlreadyExists) => StatusCode::CONFLICT,
        (Endpoint::Create, _, _) => StatusCode::INTERNAL_SERVER_ERROR,
        (Endpoint::Remote, _, ErrorKind::AlreadyExists) => StatusCode::BAD_REQUEST,
        (Endpoint::Remote, _, ErrorKind::InvalidArgument) => StatusCode::INTERNAL_SERVER_ERROR,
        (Endpoint::Remote, _, ErrorKind::Unavailable) => StatusCode::BAD_GATEWAY,
        (_, _, kind) => kind_status(kind),
    }
}

/// A failure answered as `{"message": ...}` with a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    /// `Docker-Plugin-Name` of pull and upgrade errors that come after the name was parsed.
    pub(crate) plugin_name: Option<String>,
}

impl HttpError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        HttpError {
            status,
            message: message.into(),
            plugin_name: None,
        }
    }

    /// The same error answered with a `Docker-Plugin-Name` header.
    pub(crate) fn with_plugin_name(mut self, name: &str) -> Self {
        self.plugin_name = Some(name.to_owned());
        self
    }

    /// 400: Docker's invalid-parameter class.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 500: an untyped error in moby.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// 501: a Docker endpoint plugind does not provide.
    pub(crate) fn not_implemented(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("{what} is not implemented by plugind"),
        )
    }

    pub(crate) fn backend(endpoint: Endpoint, err: BackendError) -> Self {
        Self::new(backend_status(endpoint, &err), err.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_create_exceptions() {
        let op = BackendError::new(ErrorKind::InvalidArgument, "invalid format");
        let nf = BackendError::plugin_not_found("x");
        let amb = BackendError::lookup(ErrorKind::InvalidArgument, "multiple plugins found");
        assert_eq!(backend_status(Endpoint::Set, &op), 500);
        assert_eq!(backend_status(Endpoint::Set, &nf), 404);
        assert_eq!(backend_status(Endpoint::Set, &amb), 400);
        assert_eq!(backend_status(Endpoint::Other, &op), 400);
        let exists = BackendError::new(ErrorKind::AlreadyExists, "plugin x:latest already exists");
        assert_eq!(backend_status(Endpoint::Create, &exists), 409);
        assert_eq!(backend_status(Endpoint::Create, &op), 500);
        let pre = BackendError::new(ErrorKind::FailedPrecondition, "plugin x is enabled");
        assert_eq!(backend_status(Endpoint::Other, &pre), 409);
        assert_eq!(nf.message, r#"plugin "x" not found"#);
        let bad_ref = BackendError::new(ErrorKind::InvalidArgument, "invalid reference format");
        let down = BackendError::new(ErrorKind::Unavailable, "error resolving plugin reference");
        assert_eq!(backend_status(Endpoint::Remote, &exists), 400);
        assert_eq!(backend_status(Endpoint::Remote, &bad_ref), 500);
        assert_eq!(backend_status(Endpoint::Remote, &down), 502);
        assert_eq!(backend_status(Endpoint::Remote, &nf), 404);
        assert_eq!(backend_status(Endpoint::Remote, &pre), 409);
    }
}
