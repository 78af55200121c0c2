//! [`ManagerError`]: every way a plugin operation can fail, with Docker's texts where the
//! docker CLI and SDK show them to users.

use plugind_types::ErrorKind;

use crate::{client::PluginCallError, layer::LayerError};

/// Result alias for this crate.
pub type Result<T, E = ManagerError> = std::result::Result<T, E>;

/// A failed plugin operation.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// Lookup, naming, persistence and `set` failures from the store.
    #[error(transparent)]
    Store(#[from] plugind_store::StoreError),
    /// `set` refused a setting.
    #[error(transparent)]
    Set(#[from] plugind_store::SetError),
    /// The blob store failed.
    #[error(transparent)]
    Blob(#[from] plugind_blobstore::BlobError),
    /// The create tar or a layer was refused.
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// The plugin's `config.json` is not valid JSON for a plugin config.
    #[error("failed to parse config: {detail}")]
    Config {
        /// The decoder's message.
        detail: String,
    },
    /// The plugin's `config.json` names a path that would leave the plugin's box.
    #[error(transparent)]
    InvalidConfig(#[from] plugind_types::validate::InvalidConfig),
    /// The name given to create is not a valid reference.
    #[error("failed to parse reference {name}: {source}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it is invalid.
        #[source]
        source: plugind_types::ReferenceError,
    },
    /// Create with a digest reference.
    #[error("canonical references are not permitted")]
    CanonicalName,
    /// Enable of an enabled plugin.
    #[error("plugin already enabled: plugin {name} is enabled")]
    AlreadyEnabled {
        /// The plugin's full name.
        name: String,
    },
    /// Disable of a disabled plugin.
    #[error("plugin is already disabled: plugin {name} found but disabled")]
    AlreadyDisabled {
        /// The plugin's full name.
        name: String,
    },
    /// Disable or remove while references are held.
    #[error("plugin {name} is in use")]
    InUse {
        /// The plugin's full name.
        name: String,
    },
    /// Remove of an enabled plugin without force.
    #[error("plugin {name} is enabled")]
    IsEnabled {
        /// The plugin's full name.
        name: String,
    },
    /// `set` on an enabled plugin.
    #[error("cannot set on an active plugin, disable plugin before setting")]
    SetWhileEnabled,
    /// A `set` argument under plugind's own namespace (`plugind.health.interval=...`) with an
    /// unknown key or an invalid value.
    #[error("invalid plugind option {arg:?}: {reason}")]
    InvalidOption {
        /// The argument as given.
        arg: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The plugin does not implement the capability a consumer asked for.
    #[error("plugin {name} does not implement {capability}")]
    NoCapability {
        /// The plugin's full name.
        name: String,
        /// The capability asked for (`volumedriver`).
        capability: String,
    },
    /// A consumer asked for a plugin that is not enabled and running.
    #[error("plugin {name} is not enabled")]
    NotEnabled {
        /// The plugin's full name.
        name: String,
    },
    /// The plugin's task could not be started or did not become ready.
    #[error("plugin {name} failed to start: {reason}")]
    StartFailed {
        /// The plugin's full name.
        name: String,
        /// What happened: exit status and stderr tail, runtime error, or timeout.
        reason: String,
    },
    /// The plugin's task could not be stopped (or its stop not confirmed by the executor): the
    /// plugin is marked failed and the next enable, disable or remove tries the stop again.
    #[error("plugin {name} could not be stopped: {reason}")]
    StopFailed {
        /// The plugin's full name.
        name: String,
        /// The executor's error.
        reason: String,
    },
    /// Building the OCI spec failed.
    #[error(transparent)]
    Spec(#[from] plugind_spec::SpecError),
    /// Writing or cleaning the bundle failed.
    #[error(transparent)]
    Bundle(#[from] plugind_bundle::BundleError),
    /// The executor failed.
    #[error(transparent)]
    Executor(#[from] plugind_executor::ExecutorError),
    /// A call to a plugin failed.
    #[error(transparent)]
    PluginCall(#[from] PluginCallError),
    /// A system operation failed.
    #[error(transparent)]
    Sys(#[from] plugind_sys::SysError),
    /// The state root is used by another plugind.
    #[error("state root {root} is in use by another plugind (pid {pid})")]
    RootLocked {
        /// The state root.
        root: std::path::PathBuf,
        /// The holder's pid as recorded in the lock file.
        pid: String,
    },
    /// The manager is shutting down.
    #[error("plugind is shutting down")]
    ShuttingDown,
    /// A push to a registry failed (Docker's text: `error pushing plugin: …`).
    #[error("error pushing plugin: {source}")]
    Push {
        /// What the registry client reported.
        #[source]
        source: plugind_distribution::DistributionError,
    },
    /// The plugin cannot be pushed as stored.
    #[error("error pushing plugin {name}: {reason}")]
    PushUnsupported {
        /// The plugin's full name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A background task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The remote of a pull or upgrade, or the local name, is not a valid reference (Docker's
    /// bare texts: `invalid reference format`, `… must be lowercase`).
    #[error(transparent)]
    RemoteReference(plugind_types::ReferenceError),
    /// A pull named its local plugin with a digest.
    #[error("cannot use digest in plugin tag")]
    DigestInPluginTag,
    /// The registry could not resolve the remote (Docker's prefix).
    #[error("error resolving plugin reference: {0}")]
    Resolve(#[source] plugind_distribution::DistributionError),
    /// Fetching from or pushing to a registry failed.
    #[error(transparent)]
    Distribution(#[from] plugind_distribution::DistributionError),
    /// The registry client could not be built.
    #[error("registry client unavailable: {0}")]
    RegistryClient(String),
    /// The privileges the user accepted are not the ones the plugin asks for.
    #[error("incorrect privileges")]
    IncorrectPrivileges,
    /// Upgrade of an enabled plugin.
    #[error("plugin must be disabled before upgrading: plugin {name} is enabled")]
    UpgradeEnabled {
        /// The plugin's full name.
        name: String,
    },
    /// The client went away; the operation stopped and left nothing.
    #[error("operation cancelled")]
    Cancelled,
    /// An entry of the declarative plugin set is invalid (a configuration error).
    #[error("{entry}: {reason}")]
    InvalidPluginSet {
        /// Which entry (`plugin 2`).
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A plugin of the plugin set asks for privileges its entry does not accept.
    #[error("plugin {name} asks for privileges not accepted by its entry: {missing}")]
    PrivilegesNotAccepted {
        /// The plugin's local name.
        name: String,
        /// The privileges (and values) not accepted.
        missing: String,
    },
}

impl ManagerError {
    /// The kind of this error, for the API's status codes.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ManagerError::Store(e) => e.kind(),
            ManagerError::Set(e) => e.kind(),
            ManagerError::Blob(e) => e.kind(),
            ManagerError::Layer(LayerError::Blob(e)) => e.kind(),
            ManagerError::Layer(LayerError::Unpack { .. } | LayerError::Special(_)) => {
                ErrorKind::Internal
            }
            ManagerError::Layer(_)
            | ManagerError::Config { .. }
            | ManagerError::InvalidConfig(_) => ErrorKind::InvalidArgument,
            ManagerError::InvalidName { .. }
            | ManagerError::CanonicalName
            | ManagerError::InvalidOption { .. } => ErrorKind::InvalidArgument,
            ManagerError::AlreadyEnabled { .. }
            | ManagerError::AlreadyDisabled { .. }
            | ManagerError::InUse { .. }
            | ManagerError::IsEnabled { .. }
            | ManagerError::SetWhileEnabled
            | ManagerError::NotEnabled { .. } => ErrorKind::FailedPrecondition,
            ManagerError::NoCapability { .. } => ErrorKind::NotFound,
            ManagerError::StartFailed { .. } | ManagerError::StopFailed { .. } => {
                ErrorKind::Internal
            }
            ManagerError::Spec(e) => e.kind(),
            ManagerError::Bundle(e) => e.kind(),
            ManagerError::Executor(e) => e.kind(),
            ManagerError::PluginCall(
                PluginCallError::Timeout { .. } | PluginCallError::Connect { .. },
            ) => ErrorKind::Unavailable,
            ManagerError::PluginCall(_) => ErrorKind::Internal,
            ManagerError::Sys(_) | ManagerError::Join(_) => ErrorKind::Internal,
            ManagerError::RootLocked { .. } | ManagerError::ShuttingDown => ErrorKind::Unavailable,
            ManagerError::Push { source } => source.kind(),
            ManagerError::PushUnsupported { .. } => ErrorKind::Internal,
            ManagerError::RemoteReference(_) | ManagerError::DigestInPluginTag => {
                ErrorKind::InvalidArgument
            }
            ManagerError::Resolve(e) | ManagerError::Distribution(e) => e.kind(),
            ManagerError::RegistryClient(_) => ErrorKind::Unavailable,
            ManagerError::IncorrectPrivileges | ManagerError::Cancelled => ErrorKind::Internal,
            ManagerError::UpgradeEnabled { .. } => ErrorKind::FailedPrecondition,
            ManagerError::InvalidPluginSet { .. } => ErrorKind::InvalidArgument,
            ManagerError::PrivilegesNotAccepted { .. } => ErrorKind::FailedPrecondition,
        }
    }
}
