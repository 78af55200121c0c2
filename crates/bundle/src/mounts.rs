//! Mount clean-up from `/proc/self/mountinfo`, and the propagated-mount directory.
//!
//! Leftover mounts (a plugin's propagated mounts, anything a crashed run left below a bundle)
//! are unmounted deepest first with a plain `umount` (no lazy detach: a busy mount is reported,
//! not hidden). After the pass the mount table is read again, so a mount that disappeared
//! through propagation is not reported as a failure, and every mount that stayed is.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use plugind_sys::mount as sysmount;
use plugind_types::PluginId;

use crate::{BundleError, Result, UnmountFailure};

/// Mount tables show resolved paths; resolve ours the same way when it exists.
fn resolved(dir: &Path) -> PathBuf {
    fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Unmounts every mount at or below `dir`, deepest first (and, at one path, the most recent
/// first). Returns the mount points unmounted; fails with every mount that stayed.
pub fn unmount_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = resolved(dir);
    let mut targets: Vec<(usize, PathBuf)> = sysmount::mounts_under(&dir)?
        .into_iter()
        .enumerate()
        .collect();
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    targets.sort_by(|(ia, a), (ib, b)| {
        b.components()
            .count()
            .cmp(&a.components().count())
            .then(ib.cmp(ia))
    });
    let mut done = Vec::new();
    let mut failures = Vec::new();
    for (_, path) in targets {
        match sysmount::unmount(&path, false) {
            Ok(()) => done.push(path),
            Err(source) => failures.push(UnmountFailure { path, source }),
        }
    }
    if !failures.is_empty() {
        let still = sysmount::mounts_under(&dir)?;
        failures.retain(|f| still.contains(&f.path));
        if !failures.is_empty() {
            for f in &failures {
                tracing::warn!(path = %f.path.display(), error = %f.source, "unmount failed");
            }
            return Err(BundleError::Unmount { failures });
        }
    }
    tracing::debug!(count = done.len(), dir = %dir.display(), "unmounted leftovers");
    Ok(done)
}

/// Unmounts everything a plugin may have left mounted: below its data directory
/// `<data_root>/<id>` (propagated mounts), its runtime directory `<exec_root>/plugins/<id>` and
/// its bundle `<exec_root>/bundles/<id>`. Every directory is tried; failures are reported
/// together.
pub fn cleanup_plugin_mounts(
    data_root: &Path,
    exec_root: &Path,
    id: &PluginId,
) -> Result<Vec<PathBuf>> {
    let dirs = [
        data_root.join(id.as_str()),
        exec_root.join("plugins").join(id.as_str()),
        exec_root.join("bundles").join(id.as_str()),
    ];
    let mut done = Vec::new();
    let mut failures = Vec::new();
    for dir in &dirs {
        match unmount_under(dir) {
            Ok(d) => done.extend(d),
            Err(BundleError::Unmount { failures: f }) => failures.extend(f),
            Err(e) => return Err(e),
        }
    }
    if failures.is_empty() {
        Ok(done)
    } else {
        Err(BundleError::Unmount { failures })
    }
}

/// Prepares a propagated-mount directory as Docker does: creates it (0755), bind-mounts it on
/// itself unless it is already a mount point, and makes it `rshared`, so that mounts the plugin
/// makes below its `PropagatedMount` appear on the host. Undo with [`unmount_under`].
pub fn prepare_propagated_mount(dir: &Path) -> Result<()> {
    match fs::create_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(BundleError::io("create directory", dir, e)),
    }
    let dir = resolved(dir);
    if !sysmount::is_mount_point(&dir)? {
        sysmount::bind_mount(&dir, &dir, false)?;
    }
    sysmount::make_rshared(&dir)?;
    Ok(())
}
