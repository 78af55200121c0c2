//! plugind-store: the installed plugins' records, on disk and in memory.
//!
//! Job: keep one durable record per plugin, reload them at start (cleaning up after crashes),
//! find plugins by the names users type, and hold the Docker rules that are pure functions of a
//! plugin's config: `set` and privileges.
//!
//! Main types:
//! - [`Store`]: opened with [`Store::open`], which reloads the root and returns a
//!   [`ReloadReport`]; `add`, `get`, `resolve` (Docker's lookup order: full id, name, unique id
//!   prefix), `list`, `update`/`try_update` (persist first, then publish), `begin_remove` /
//!   `finish_remove`, and the paths of a plugin's directories. `Send + Sync`, synchronous.
//! - [`PluginRecord`]: Docker's [`Plugin`] object (what the API returns; `Enabled` is the
//!   *desired* state) plus [`PluginState`]: creation time, [`ObservedState`] (running / stopped /
//!   failed with reason, restart count, last exit), references held on the plugin, the chosen
//!   runtime and the blobs it came from.
//! - [`apply_settings`] and [`SetError`]: `docker plugin set`, all-or-nothing.
//! - [`privileges`], [`privileges_match`] and [`PluginPrivilege`].
//! - [`StoreError`], with [`StoreError::kind`] for the API's status mapping.
//!
//! On-disk layout under the root (the daemon's `/var/lib/plugind`):
//! ```text
//! <root>/<64-hex id>/config.json        the record, replaced atomically (temp, fsync, rename, fsync dir)
//! <root>/<64-hex id>/rootfs/            unpacked root filesystem (written by the manager)
//! <root>/<64-hex id>/propagated-mount/  host side of Config.PropagatedMount
//! <root>/<64-hex id>-removing/          a removal in progress; finished by the next open
//! <root>/quarantine/<name>-<unix time>/ plugin directories whose record could not be used
//! ```
//! `config.json` is Docker's `Plugin` object in Docker's key order with one extra key,
//! `"plugind"`, holding [`PluginState`] and the record format version.
//!
//! What this crate does not do: it takes no decisions about the lifecycle (the manager checks
//! "enabled" before `set` or remove, and chooses restarts), it holds no process or mount state
//! beyond what is written in records, and it never deletes through a mount point.

#![warn(missing_docs)]

mod error;
mod model;
mod privileges;
mod remove;
mod settings;
mod store;
mod time;

pub use error::{Result, StoreError};
pub use model::{
    canonical_name, ExitRecord, ObservedState, Plugin, PluginBlobs, PluginRecord, PluginState,
    RunState, RECORD_FORMAT_VERSION,
};
pub use privileges::{privileges, privileges_match, PluginPrivilege};
pub use settings::{apply_settings, SetError};
pub use store::{Quarantined, ReloadReport, Store, QUARANTINE_MAX_AGE, QUARANTINE_MAX_ENTRIES};
