//! [`ExecutorError`]: every failure of the executor, with the task id and what was being done.

use std::{io, path::PathBuf};

use containerd_shim_protos::ttrpc;
use plugind_types::ErrorKind;

/// Result alias for this crate.
pub type Result<T, E = ExecutorError> = std::result::Result<T, E>;

/// A failed executor operation.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The bundle given to `create` is unusable (relative path, name differs from the id, ...).
    #[error("invalid bundle {bundle} for task {id}: {reason}")]
    InvalidBundle {
        /// Task id.
        id: String,
        /// Bundle directory.
        bundle: PathBuf,
        /// Why it is unusable.
        reason: &'static str,
    },
    /// A task id that cannot be used as a file name.
    #[error("invalid task id {id:?}")]
    InvalidId {
        /// The rejected id.
        id: String,
    },
    /// The named runtime is not configured.
    #[error("unknown runtime {name}")]
    UnknownRuntime {
        /// The runtime name asked for.
        name: String,
    },
    /// A runtime configuration is unusable.
    #[error("invalid runtime {name}: {reason}")]
    InvalidRuntime {
        /// The runtime name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// No task with this id is known to the executor.
    #[error("task {id} not found")]
    NotFound {
        /// Task id.
        id: String,
    },
    /// A task with this id is already known to the executor.
    #[error("task {id} already exists")]
    AlreadyExists {
        /// Task id.
        id: String,
    },
    /// The operation needs a stopped task (e.g. `delete` of a running one).
    #[error("task {id} is still running")]
    StillRunning {
        /// Task id.
        id: String,
    },
    /// The shim did not come up: its `start` failed, or it did not answer on its socket.
    #[error("shim for task {id} failed to start (exit status {status:?}): {detail}; shim log tail: {shim_log:?}")]
    ShimStart {
        /// Task id.
        id: String,
        /// Exit status of the `start` command, when it exited non-zero.
        status: Option<i32>,
        /// What went wrong (the command's stderr, or the connect error).
        detail: String,
        /// Last lines of the shim's log FIFO.
        shim_log: Vec<String>,
    },
    /// The task exited before it was reported running (bad entrypoint, crash on start, ...).
    #[error("task {id} exited with status {exit_status} while starting; stderr tail: {stderr:?}; shim log tail: {shim_log:?}")]
    TaskExited {
        /// Task id.
        id: String,
        /// Exit status (code, or 128 + signal).
        exit_status: u32,
        /// Last lines the task wrote to stderr.
        stderr: Vec<String>,
        /// Last lines of the shim's log.
        shim_log: Vec<String>,
    },
    /// A ttrpc call to a shim failed. The message carries the shim's own reason (for Create,
    /// the runtime's error: a missing entrypoint, a missing mount source, ...).
    #[error("{method} of task {id} failed: {}", rpc_reason(source))]
    Rpc {
        /// Task id.
        id: String,
        /// The task service method.
        method: &'static str,
        /// The ttrpc error (an `RpcStatus` carries the shim's gRPC code).
        #[source]
        source: ttrpc::Error,
    },
    /// A ttrpc call to a shim did not answer within its deadline.
    #[error("{method} of task {id} timed out")]
    Timeout {
        /// Task id.
        id: String,
        /// The task service method.
        method: &'static str,
    },
    /// The shim of a task is gone (its socket refuses connections or the connection broke).
    #[error("shim of task {id} at {address} is unreachable")]
    ShimUnreachable {
        /// Task id.
        id: String,
        /// The shim's ttrpc address.
        address: String,
        /// The connect error.
        #[source]
        source: ttrpc::Error,
    },
    /// The process found for a task is not the one that was started (pid reused or record lost).
    #[error("task {id}: process {pid} does not match the recorded identity")]
    IdentityMismatch {
        /// Task id.
        id: String,
        /// The pid reported by the shim.
        pid: u32,
    },
    /// The shim's `delete` subcommand failed while cleaning up after a dead shim.
    #[error("cleanup of dead shim for task {id} failed (exit status {status:?}): {stderr}")]
    ShimDelete {
        /// Task id.
        id: String,
        /// Exit status of the command.
        status: Option<i32>,
        /// Its stderr.
        stderr: String,
    },
    /// The shim answered with something that cannot be decoded.
    #[error("cannot decode {what} for task {id}")]
    Decode {
        /// Task id.
        id: String,
        /// What was decoded.
        what: &'static str,
        /// The decoder's message.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A system call wrapper in `plugind-sys` failed.
    #[error(transparent)]
    Sys(#[from] plugind_sys::SysError),
    /// The event queue refused a job (it is shutting down).
    #[error("event queue refused an event for task {id}")]
    Queue {
        /// Task id.
        id: String,
        /// The queue's error.
        #[source]
        source: plugind_queue::QueueError,
    },
    /// The events service could not be set up.
    #[error("events service at {path}")]
    EventsServer {
        /// Socket path.
        path: PathBuf,
        /// The ttrpc error.
        #[source]
        source: ttrpc::Error,
    },
}

impl ExecutorError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ExecutorError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The kind of failure, for the API's status code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ExecutorError::InvalidBundle { .. }
            | ExecutorError::InvalidId { .. }
            | ExecutorError::UnknownRuntime { .. }
            | ExecutorError::InvalidRuntime { .. } => ErrorKind::InvalidArgument,
            ExecutorError::NotFound { .. } => ErrorKind::NotFound,
            ExecutorError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            ExecutorError::IdentityMismatch { .. }
            | ExecutorError::StillRunning { .. }
            | ExecutorError::TaskExited { .. } => ErrorKind::FailedPrecondition,
            ExecutorError::Timeout { .. }
            | ExecutorError::ShimUnreachable { .. }
            | ExecutorError::Queue { .. } => ErrorKind::Unavailable,
            ExecutorError::Rpc { source, .. } => rpc_kind(source),
            ExecutorError::Sys(e) if e.is_not_found() => ErrorKind::NotFound,
            ExecutorError::ShimStart { .. }
            | ExecutorError::ShimDelete { .. }
            | ExecutorError::Decode { .. }
            | ExecutorError::Io { .. }
            | ExecutorError::Sys(_)
            | ExecutorError::EventsServer { .. } => ErrorKind::Internal,
        }
    }

    /// True when the shim said the task or process does not exist (any more).
    pub fn is_not_found(&self) -> bool {
        self.kind() == ErrorKind::NotFound
    }
}

/// Longest shim reason copied into an error message, in bytes.
const REASON_LIMIT: usize = 2048;

/// The shim's reason for a failed call: the status message it sent (for Create, runc's error
/// text), or the transport error; cut to [`REASON_LIMIT`] bytes on a character boundary.
fn rpc_reason(e: &ttrpc::Error) -> String {
    let text = match e {
        ttrpc::Error::RpcStatus(s) if !s.message().is_empty() => s.message().trim().to_owned(),
        ttrpc::Error::RpcStatus(s) => format!("{:?}", s.code()),
        other => other.to_string(),
    };
    if text.len() <= REASON_LIMIT {
        return text;
    }
    let mut end = REASON_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Maps a shim's gRPC status code onto an error kind (containerd errdefs).
fn rpc_kind(e: &ttrpc::Error) -> ErrorKind {
    use ttrpc::Code;
    match e {
        ttrpc::Error::RpcStatus(s) => match s.code() {
            Code::NOT_FOUND => ErrorKind::NotFound,
            Code::ALREADY_EXISTS => ErrorKind::AlreadyExists,
            Code::INVALID_ARGUMENT => ErrorKind::InvalidArgument,
            Code::FAILED_PRECONDITION => ErrorKind::FailedPrecondition,
            Code::UNAVAILABLE | Code::DEADLINE_EXCEEDED => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        },
        _ => ErrorKind::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_codes_map_to_kinds() {
        let status = |code| {
            let mut s = ttrpc::Status::new();
            s.set_code(code);
            ExecutorError::Rpc {
                id: "t".into(),
                method: "Kill",
                source: ttrpc::Error::RpcStatus(s),
            }
        };
        assert_eq!(status(ttrpc::Code::NOT_FOUND).kind(), ErrorKind::NotFound);
        assert!(status(ttrpc::Code::NOT_FOUND).is_not_found());
        assert_eq!(status(ttrpc::Code::UNKNOWN).kind(), ErrorKind::Internal);
        // The shim's own reason is part of the message, not only of the source chain.
        let mut s = ttrpc::Status::new();
        s.set_code(ttrpc::Code::UNKNOWN);
        s.set_message(
            "OCI runtime create failed: runc create failed: unable to start container process: \
             exec: \"/nope\": stat /nope: no such file or directory: unknown"
                .into(),
        );
        let msg = ExecutorError::Rpc {
            id: "t".into(),
            method: "Create",
            source: ttrpc::Error::RpcStatus(s),
        }
        .to_string();
        assert!(
            msg.starts_with("Create of task t failed: OCI runtime create failed")
                && msg.contains("/nope: no such file or directory"),
            "{msg}"
        );
        let mut s = ttrpc::Status::new();
        s.set_message("x".repeat(10_000));
        let long = ExecutorError::Rpc {
            id: "t".into(),
            method: "Create",
            source: ttrpc::Error::RpcStatus(s),
        }
        .to_string();
        assert!(long.len() < REASON_LIMIT + 100, "{}", long.len());
        assert_eq!(
            ExecutorError::NotFound { id: "x".into() }.kind(),
            ErrorKind::NotFound
        );
        let msg = ExecutorError::TaskExited {
            id: "t1".into(),
            exit_status: 2,
            stderr: vec!["boom".into()],
            shim_log: vec![],
        }
        .to_string();
        assert!(
            msg.contains("t1") && msg.contains("status 2") && msg.contains("boom"),
            "{msg}"
        );
    }
}
