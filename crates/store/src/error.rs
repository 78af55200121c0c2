//! [`StoreError`]: every failure of the store, with the plugin, name or path involved.

use std::{io, path::PathBuf};

use plugind_sys::SysError;
use plugind_types::{ErrorKind, PluginId, ReferenceError};

use crate::SetError;

/// Result alias for this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A failed store operation. Lookup messages are Docker's (docker-plugin-api.md §3, §5.2).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No plugin matches the input (also: unparsable names and digest references).
    #[error("plugin {input:?} not found")]
    NotFound {
        /// The input exactly as given.
        input: String,
    },
    /// The input is a prefix of several plugin ids (Docker: 400).
    #[error("multiple plugins found for {input:?}")]
    Ambiguous {
        /// The input exactly as given.
        input: String,
    },
    /// Another plugin already has this name (Docker: 409 on create, 400 on pull).
    #[error("plugin {name} already exists")]
    NameExists {
        /// The stored name (`foo:latest`).
        name: String,
    },
    /// A plugin with this id is already in the store.
    #[error("plugin {id} already exists")]
    IdExists {
        /// The id.
        id: PluginId,
    },
    /// The name is not a valid reference.
    #[error("invalid plugin name {name:?}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why the parser refused it.
        #[source]
        source: ReferenceError,
    },
    /// The name carries a digest; plugin names never do.
    #[error("plugin name {name:?} must not contain a digest")]
    DigestInName {
        /// The rejected name.
        name: String,
    },
    /// The name is valid but not in the stored form (`<familiar repo>:<tag>`).
    #[error("plugin name {name:?} is not canonical: expected {expected:?}")]
    NameNotCanonical {
        /// The given name.
        name: String,
        /// What it must be stored as.
        expected: String,
    },
    /// An update tried to change the plugin id.
    #[error("update of plugin {id} changed its id to {new_id}")]
    IdChanged {
        /// The record's id.
        id: PluginId,
        /// The id the update wrote.
        new_id: PluginId,
    },
    /// The settings could not be applied.
    #[error(transparent)]
    Set(#[from] SetError),
    /// Writing a record failed; the in-memory copy is unchanged.
    #[error("cannot save plugin {id}")]
    Persist {
        /// The plugin.
        id: PluginId,
        /// The failed step (path and OS error).
        #[source]
        source: SysError,
    },
    /// A record could not be encoded (a bug: every model type is serialisable).
    #[error("cannot encode plugin {id}")]
    Encode {
        /// The plugin.
        id: PluginId,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// Reading a file or directory failed.
    #[error("cannot read {path}")]
    Read {
        /// What was read.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A record's JSON is invalid.
    #[error("cannot decode plugin record {path}")]
    Decode {
        /// The record file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A plugin directory has no `config.json` (an install interrupted before its record).
    #[error("plugin directory {dir} has no config.json")]
    MissingRecord {
        /// The plugin directory.
        dir: PathBuf,
    },
    /// A record's `Id` differs from the name of its directory.
    #[error("record {path} holds id {found}, not its directory's")]
    IdMismatch {
        /// The record file.
        path: PathBuf,
        /// The id inside it.
        found: PluginId,
    },
    /// A record's name is invalid or held by another record at reload.
    #[error("record {path} has an unusable name {name:?}")]
    BadRecordName {
        /// The record file.
        path: PathBuf,
        /// The name inside it.
        name: String,
    },
    /// A record was written by a newer plugind; it is left untouched and not loaded.
    #[error("record {path} has format version {version}, newer than this plugind understands")]
    NewerFormat {
        /// The record file.
        path: PathBuf,
        /// Its version.
        version: u32,
    },
    /// A filesystem operation of the store failed (creating the root, renaming a directory...).
    #[error("cannot {action}")]
    Fs {
        /// What the store was doing, e.g. `move plugin <id> aside for removal`.
        action: String,
        /// The failed step (path and OS error).
        #[source]
        source: SysError,
    },
    /// Removing a directory tree failed.
    #[error("cannot remove {path}")]
    Remove {
        /// The entry that could not be removed.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Something is still mounted under a directory being removed; nothing under a mount is
    /// touched. Retry after unmounting.
    #[error("cannot remove {path}: still mounted under it: {mounts:?}")]
    Busy {
        /// The directory being removed.
        path: PathBuf,
        /// The mount points found under it.
        mounts: Vec<PathBuf>,
    },
    /// `finish_remove` was given a path that is not a `<root>/<id>-removing` directory.
    #[error("{path} is not a plugin directory being removed")]
    NotRemoving {
        /// The path given.
        path: PathBuf,
    },
}

impl StoreError {
    /// The kind of failure, for the API's status mapping.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::NotFound { .. } => ErrorKind::NotFound,
            StoreError::Ambiguous { .. }
            | StoreError::InvalidName { .. }
            | StoreError::DigestInName { .. }
            | StoreError::NameNotCanonical { .. }
            | StoreError::NotRemoving { .. } => ErrorKind::InvalidArgument,
            StoreError::NameExists { .. } | StoreError::IdExists { .. } => ErrorKind::AlreadyExists,
            StoreError::Set(e) => e.kind(),
            StoreError::Busy { .. } => ErrorKind::Unavailable,
            StoreError::IdChanged { .. }
            | StoreError::Persist { .. }
            | StoreError::Encode { .. }
            | StoreError::Read { .. }
            | StoreError::Decode { .. }
            | StoreError::MissingRecord { .. }
            | StoreError::IdMismatch { .. }
            | StoreError::BadRecordName { .. }
            | StoreError::NewerFormat { .. }
            | StoreError::Fs { .. }
            | StoreError::Remove { .. } => ErrorKind::Internal,
        }
    }

    /// True for [`StoreError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}
