//! plugind-bundle: the OCI bundle directories plugind hands to the containerd shim, and the
//! filesystem chores around them.
//!
//! Main items:
//! - [`Bundle`]: `<exec-root>/bundles/<id>/` with `config.json`; [`Bundle::create`] (rollback on
//!   failure, user-namespace group permissions), [`Bundle::load`], [`Bundle::delete`] (rename to
//!   a hidden sibling, then remove; never crosses a mount);
//! - [`socket`]: the shim socket address computed as the 1.6 shim does, and the 108-byte limit
//!   of unix socket paths for every socket plugind creates;
//! - [`init_layer`]: the placeholders Docker creates in a plugin rootfs before start, made
//!   without following symlinks out of the rootfs;
//! - [`mounts`]: unmounting what a plugin left behind (propagated mounts, ...) from
//!   `/proc/self/mountinfo`, deepest first; preparing the `rshared` propagated-mount directory.
//!
//! Rootfs choice: the spec's `root.path` is the plugin's absolute rootfs path, so a bundle holds
//! no `rootfs` directory and nothing is mounted into it (the shim's `delete` tolerates the
//! absence). [`Bundle::create`] rejects a relative `root.path`.
//!
//! Architecture invariant: `bundle` takes an `oci_spec::runtime::Spec` and never builds one
//! (that is `plugind-spec`'s job; `manager` passes the spec along).

#![warn(missing_docs)]

mod bundle;
mod error;
pub mod init_layer;
pub mod mounts;
pub mod socket;

pub use bundle::{Bundle, BUNDLE_DIR_MODE, BUNDLE_PARENT_MODE, CONFIG_FILE};
pub use error::{BundleError, Result, UnmountFailure};
