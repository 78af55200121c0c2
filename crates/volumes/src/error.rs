//! [`VolumeError`]: every way a volume operation can fail, with Docker's texts.
//!
//! Docker reports volume failures as `<op> <volume>: <cause>` (moby `volume/service` `OpErr`),
//! for example `get v1: no such volume` or `remove v1: volume is in use - [c1]`; [`VolumeError::Op`]
//! is that wrapper, and its message is the whole text the API shows. Causes that Docker prints
//! inline (a plugin's `Err`, a lookup failure) are kept as text for that reason, never as a
//! `#[source]`, so no chain reporter prints them twice.

use std::path::PathBuf;

use plugind_manager::client::PluginCallError;
use plugind_types::ErrorKind;

/// Result alias for this crate.
pub type Result<T, E = VolumeError> = std::result::Result<T, E>;

/// Docker's volume name rule, as its error message quotes it.
pub const NAME_CHARS: &str = "[a-zA-Z0-9][a-zA-Z0-9_.-]";

/// A failed volume operation.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// Docker's `OpErr`: the operation and volume, then the cause.
    #[error("{op} {name}: {err}")]
    Op {
        /// `create`, `get`, `remove`, `mount`, `unmount`.
        op: &'static str,
        /// The volume name as given.
        name: String,
        /// What went wrong.
        err: Box<VolumeError>,
    },
    /// The name breaks Docker's volume name rule.
    #[error(
        "{quoted} includes invalid characters for a local volume name, only \"{NAME_CHARS}\" are allowed. If you intended to pass a host directory, use absolute path",
        quoted = go_quote(name)
    )]
    InvalidName {
        /// The name as given.
        name: String,
    },
    /// The name is valid but longer than a record file name can be.
    #[error("volume name is too long: {len} bytes, at most {max}")]
    NameTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// No volume of that name is recorded.
    #[error("no such volume")]
    NoSuchVolume,
    /// The volume is mounted by the listed callers.
    #[error("volume is in use - [{}]", ids.join(", "))]
    InUse {
        /// The caller ids holding mounts.
        ids: Vec<String>,
    },
    /// Create of a name that exists with another driver.
    #[error("driver '{driver}' already has volume '{name}': volume name must be unique")]
    NameConflict {
        /// The driver the existing volume uses.
        driver: String,
        /// The volume name.
        name: String,
    },
    /// The driver plugin could not be looked up (missing, disabled, not a volume driver).
    #[error("error looking up volume plugin {driver}: {reason}")]
    DriverLookup {
        /// The driver name as asked for.
        driver: String,
        /// Not found, failed precondition (disabled), ...
        kind: ErrorKind,
        /// The lookup's own message, e.g. `plugin "x" not found`.
        reason: String,
    },
    /// A call to the driver plugin failed: its `Err` text, a timeout or connection failure
    /// naming the plugin, or a malformed answer.
    #[error("{message}")]
    Driver {
        /// The driver's name.
        driver: String,
        /// Unavailable for timeouts and unreachable sockets, internal otherwise.
        kind: ErrorKind,
        /// Docker's text for the failure.
        message: String,
    },
    /// The reference held on the driver plugin could not be released.
    #[error("cannot release volume plugin {driver}: {reason}")]
    Release {
        /// The driver's name.
        driver: String,
        /// Why.
        reason: String,
    },
    /// `mount`/`unmount` without a caller id.
    #[error("a mount needs a non-empty caller id")]
    EmptyCallerId,
    /// A filter key or value is not accepted (Docker's `invalid filter ...` texts).
    #[error("{text}")]
    InvalidFilter {
        /// The whole message, e.g. `invalid filter 'dangling=[maybe]'`.
        text: String,
    },
    /// A second prune while one runs.
    #[error("a prune operation is already running")]
    PruneRunning,
    /// Reading, writing or removing a volume record failed.
    #[error("volume record {path}")]
    Persist {
        /// The record file or directory.
        path: PathBuf,
        /// The system error.
        #[source]
        source: plugind_sys::SysError,
    },
    /// A background task failed.
    #[error("internal task failed")]
    Join(#[from] tokio::task::JoinError),
}

impl VolumeError {
    /// The kind of this error, for the API's status codes.
    pub fn kind(&self) -> ErrorKind {
        match self {
            VolumeError::Op { err, .. } => err.kind(),
            VolumeError::InvalidName { .. }
            | VolumeError::NameTooLong { .. }
            | VolumeError::EmptyCallerId
            | VolumeError::InvalidFilter { .. } => ErrorKind::InvalidArgument,
            VolumeError::NoSuchVolume => ErrorKind::NotFound,
            VolumeError::InUse { .. } | VolumeError::PruneRunning => ErrorKind::FailedPrecondition,
            VolumeError::NameConflict { .. } => ErrorKind::AlreadyExists,
            VolumeError::DriverLookup { kind, .. } | VolumeError::Driver { kind, .. } => *kind,
            VolumeError::Release { .. } | VolumeError::Persist { .. } | VolumeError::Join(_) => {
                ErrorKind::Internal
            }
        }
    }

    /// Wraps `self` as Docker's `<op> <name>: <self>`.
    pub(crate) fn op(self, op: &'static str, name: &str) -> VolumeError {
        VolumeError::Op {
            op,
            name: name.to_owned(),
            err: Box::new(self),
        }
    }

    /// The innermost cause (skips [`VolumeError::Op`] wrappers).
    pub fn cause(&self) -> &VolumeError {
        match self {
            VolumeError::Op { err, .. } => err.cause(),
            other => other,
        }
    }

    /// A failed plugin call, with Docker's text and plugind's kind: timeouts and unreachable
    /// sockets are unavailable (the plugin may come back), everything else internal.
    pub fn from_call(driver: &str, e: &PluginCallError) -> VolumeError {
        let (kind, message) = match e {
            PluginCallError::Timeout { .. } => (ErrorKind::Unavailable, e.to_string()),
            // The connect error's OS cause is its source; the API shows one line, so add it.
            PluginCallError::Connect { source, .. } => {
                (ErrorKind::Unavailable, format!("{e}: {source}"))
            }
            PluginCallError::NotImplemented { .. }
            | PluginCallError::Remote { .. }
            | PluginCallError::Protocol { .. } => (ErrorKind::Internal, e.to_string()),
        };
        VolumeError::Driver {
            driver: driver.to_owned(),
            kind,
            message,
        }
    }
}

/// Quotes `s` the way Go's `%q` does for the texts Docker shows (ASCII escapes; other
/// characters are printed as they are).
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_match_docker() {
        let e = VolumeError::InvalidName { name: "a/b".into() }.op("create", "a/b");
        assert_eq!(
            e.to_string(),
            "create a/b: \"a/b\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
        );
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);

        let e = VolumeError::NoSuchVolume.op("get", "v");
        assert_eq!(e.to_string(), "get v: no such volume");
        assert_eq!(e.kind(), ErrorKind::NotFound);

        let e = VolumeError::InUse {
            ids: vec!["c1".into(), "c2".into()],
        }
        .op("remove", "v");
        assert_eq!(e.to_string(), "remove v: volume is in use - [c1, c2]");
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition);

        let e = VolumeError::NameConflict {
            driver: "a:latest".into(),
            name: "v".into(),
        }
        .op("create", "v");
        assert_eq!(
            e.to_string(),
            "create v: driver 'a:latest' already has volume 'v': volume name must be unique"
        );
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);

        let e = VolumeError::DriverLookup {
            driver: "nope".into(),
            kind: ErrorKind::NotFound,
            reason: "plugin \"nope\" not found".into(),
        };
        assert_eq!(
            e.to_string(),
            "error looking up volume plugin nope: plugin \"nope\" not found"
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn call_errors_get_kinds_and_name_the_plugin() {
        let timeout = PluginCallError::Timeout {
            plugin: "slow:latest".into(),
            method: "VolumeDriver.Get".into(),
            timeout: std::time::Duration::from_millis(200),
        };
        let e = VolumeError::from_call("slow:latest", &timeout);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.to_string().contains("slow:latest"), "{e}");

        let connect = PluginCallError::Connect {
            plugin: "dead".into(),
            socket: "/x.sock".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        let e = VolumeError::from_call("dead", &connect);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(
            e.to_string()
                .starts_with("plugin dead: cannot connect to /x.sock: "),
            "{e}"
        );

        let remote = PluginCallError::Remote {
            plugin: "p".into(),
            message: "VolumeDriver.Create: disk full".into(),
        };
        let e = VolumeError::from_call("p", &remote).op("create", "v");
        assert_eq!(e.to_string(), "create v: VolumeDriver.Create: disk full");
        assert_eq!(e.kind(), ErrorKind::Internal);
    }

    #[test]
    fn go_quote_escapes_like_go() {
        assert_eq!(go_quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        assert_eq!(go_quote("x\u{1}"), "\"x\\x01\"");
    }
}
