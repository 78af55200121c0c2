//! plugind-volumes: Docker's volume service over volume-driver plugins.
//!
//! [`VolumeService`] keeps the volumes plugind created (name, driver, options, labels, creation
//! time, who has them mounted) as records under `<root>/volumes/`, talks to their driver
//! plugins with the `VolumeDriver.*` calls of the plugin protocol, each with a deadline
//! ([`VolumeConfig`]), and holds one reference per volume on its driver plugin so that a plugin
//! with volumes cannot be disabled or removed without force.
//!
//! Modules:
//! - [`service`]: [`VolumeService`] (create, get, list, remove, prune, mount, unmount, open);
//! - [`driver`]: [`PluginGetter`], the seam to the plugin manager, [`DriverHandle`],
//!   [`VolumeConfig`], and the typed driver calls;
//! - [`getter`]: [`PluginGetter`] for [`plugind_manager::Manager`];
//! - [`volume`]: [`Volume`] (Docker's JSON object), [`VolumeRecord`] (what is stored), name and
//!   time rules;
//! - [`filters`]: [`VolumeFilters`], Docker's list and prune filters;
//! - [`records`]: the record files, written atomically, quarantined when unreadable;
//! - [`publish`]: [`publish::Publisher`], one socket per enabled volume plugin for consumers
//!   outside plugind (Podman, a Docker daemon), with answers' paths rewritten to host paths and
//!   consumers' mounts held as references;
//!
//! Errors are [`VolumeError`]s with Docker's texts (`get v: no such volume`, `remove v: volume
//! is in use - [id]`, ...) and an [`plugind_types::ErrorKind`] for the status code.
//!
//! What this crate does not do: it starts, stops or installs no plugin (the manager does), it
//! mounts nothing itself (drivers do), and its Docker API volumes report mountpoints as the driver
//! gives them (only the published sockets map them to host paths, for outside consumers).

#![warn(missing_docs)]

pub mod driver;
mod error;
pub mod filters;
#[doc(hidden)]
pub mod fuzzing;
pub mod getter;
pub mod publish;
pub mod records;
pub mod service;
pub mod volume;

pub use driver::{DriverHandle, PluginGetter, VolumeConfig, CAPABILITY};
pub use error::{Result, VolumeError, NAME_CHARS};
pub use filters::{CompiledFilters, FilterUse, VolumeFilters};
pub use service::{OpenReport, PruneReport, VolumeService, DEFAULT_DRIVER};
pub use volume::{Volume, VolumeRecord, ANONYMOUS_LABEL};
