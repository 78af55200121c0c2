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
//! - [`progress`]: [`progress::Progress`], what install, upgrade and push report while they run.
//!
//! The manager has no syscalls and no on-disk formats of its own: records belong to the store,
//! blobs to the blob store, bundles to the bundle crate, OS operations to sys.

#![warn(missing_docs)]

pub mod backoff;
pub mod client;
pub mod engine_id;
mod error;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod layer;
pub mod manager;
pub mod progress;

pub use error::{ManagerError, Result};
pub use manager::{
    Manager, ManagerConfig, PluginHandle, PluginView, PushOutcome, RestoreReport,
    TaskEventReceiver, DOCKER_START_DEADLINE,
};
/// For `plugind check`: the daemon's socket paths fit a unix socket address.
pub use plugind_bundle::socket::check_daemon_sockets;
/// Re-exported so consumers (api, volumes, daemon) use exactly the versions the manager uses.
pub use {
    plugind_distribution as distribution, plugind_executor as executor, plugind_store as store,
    plugind_sys as sys, plugind_types as types,
};
