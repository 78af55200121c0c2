//! plugind-manager: the plugin lifecycle, where the leaf crates meet.
//!
//! [`Manager`] composes the store (records), blob store (layers), spec (OCI spec), bundle
//! (bundle directories, mounts) and executor (tasks through the shim) into the operations of
//! Docker's plugin subsystem: create, enable, disable, remove, set, references for consumers,
//! supervision with restart backoff, and restore across restarts of plugind.
//!
//! Modules:
//! - [`manager`]: [`Manager`], [`ManagerConfig`], [`PluginView`], [`PluginHandle`]; its
//!   submodules hold supervision (task events, restarts) and restore/shutdown;
//! - [`layer`]: `docker plugin create` tars into a layer blob, and safe unpacking of layers;
//! - [`events`]: [`events::EventHub`], the in-process broadcast of plugin events with history;
//! - [`backoff`]: the restart policy for plugins that exit unexpectedly;
//! - [`client`]: [`client::PluginClient`], the Docker plugin protocol over a plugin's socket;
//! - [`engine_id`]: the state root's stable random ID (`docker info`'s `ID`);
//! - [`progress`]: [`progress::Progress`], what install, upgrade and push report while they run;
//! - [`metrics`]: [`metrics::Metrics`], the Prometheus registry every crate records into.
//!
//! The manager has no syscalls and no on-disk formats of its own: records belong to the store,
//! blobs to the blob store, bundles to the bundle crate, OS operations to sys.

#![warn(missing_docs)]

pub mod backoff;
pub mod client;
pub mod engine_id;
mod error;
pub mod events;
pub mod fsck;
#[doc(hidden)]
pub mod fuzzing;
pub mod layer;
pub mod manager;
pub mod metrics;
pub mod progress;

pub use error::{ManagerError, Result};
pub use events::journal::JournalConfig;
pub use manager::{
    EntryState, EntryStatus, HealthPolicy, HealthReport, HealthStatus, Manager, ManagerConfig,
    PluginHandle, PluginSet, PluginSetEntry, PluginSetStatus, PluginView, ProbeResult, PushOutcome,
    RestoreReport, TaskEventReceiver, DOCKER_START_DEADLINE,
};
// What the manager's API names from the crates below it, re-exported item by item so that
// consumers (api, volumes, daemon, tests) use exactly the versions the manager uses. Whole
// crates are never re-exported: a consumer that needs more of a lower crate says so with a
// dependency edge that ARCHITECTURE.md and `tests/tests/tidy.rs` allow.
/// Registry credentials of a remote operation (decoded from `X-Registry-Auth`).
pub use plugind_distribution::AuthConfig;
/// The format of the file [`Manager::log_path`] names: its lines and how to read its end.
pub use plugind_executor::{read_log_tail, LogEntry, LogTail};
/// The executor the manager drives ([`Manager::start`] takes one) and its error, a source of
/// [`ManagerError::Executor`].
pub use plugind_executor::{Executor, ExecutorError};
/// A privilege a plugin asks for: what [`Manager::remote_privileges`] answers and
/// [`Manager::pull`] / [`Manager::upgrade`] compare with what the user accepted.
pub use plugind_store::PluginPrivilege;
/// The stored record of [`PluginView::record`], its observed run state, and the store's
/// error, a source of [`ManagerError::Store`] (lookups fail with its `NotFound`/`Ambiguous`).
pub use plugind_store::{PluginRecord, RunState, StoreError};

/// For `plugind check`: every socket plugind creates under `exec_root` (the events socket,
/// plugin sockets with the longest name allowed) and the API socket fit in a unix socket
/// address. The layout under the exec root is the manager's, so the check is too.
pub fn check_daemon_sockets(
    exec_root: &std::path::Path,
    api_socket: &std::path::Path,
) -> Result<()> {
    plugind_bundle::socket::check_daemon_sockets(exec_root, api_socket).map_err(ManagerError::from)
}
