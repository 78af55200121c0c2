//! The "init layer" placeholders Docker creates in a plugin's rootfs before start
//! (plugin-protocol.md §2): mount points and files the runtime and Docker's conventions expect.
//!
//! Every path component is examined with `lstat` and created by us when missing; a component
//! that is a symlink (or not a directory) makes that entry skipped with a warning, so a rootfs
//! with `etc -> /tmp/x` can never make us create anything outside it. An entry that already
//! exists in any form (even a dangling symlink) is left alone, as Docker does. Files are
//! created with `O_CREAT|O_EXCL`, which never follows a symlink. The rootfs belongs to plugind
//! and nothing runs in it yet, so a race with a concurrent writer is not a concern.

use std::{
    fs::{self, OpenOptions},
    io,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Component, Path},
};

use crate::{BundleError, Result};

/// What kind of placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// A directory (0755).
    Dir,
    /// An empty file (0755, Docker's mode).
    File,
    /// A symlink to the given target.
    Symlink(&'static str),
}

/// Docker's init layer (moby `daemon/initlayer.Setup`), paths relative to the rootfs.
pub const INIT_LAYER: [(&str, Placeholder); 10] = [
    ("dev/pts", Placeholder::Dir),
    ("dev/shm", Placeholder::Dir),
    ("proc", Placeholder::Dir),
    ("sys", Placeholder::Dir),
    (".dockerenv", Placeholder::File),
    ("etc/resolv.conf", Placeholder::File),
    ("etc/hosts", Placeholder::File),
    ("etc/hostname", Placeholder::File),
    ("dev/console", Placeholder::File),
    ("etc/mtab", Placeholder::Symlink("/proc/mounts")),
];

/// Creates the init layer in `rootfs`; returns the entries skipped because a component on the
/// way is a symlink or not a directory.
pub fn create_init_layer(rootfs: &Path) -> Result<Vec<&'static str>> {
    let md = fs::symlink_metadata(rootfs).map_err(|e| BundleError::io("stat", rootfs, e))?;
    if !md.is_dir() {
        return Err(BundleError::io(
            "open rootfs",
            rootfs,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a directory (or a symlink)",
            ),
        ));
    }
    let mut skipped = Vec::new();
    for (rel, kind) in INIT_LAYER {
        if !create_entry(rootfs, rel, kind)? {
            tracing::warn!(rootfs = %rootfs.display(), entry = rel, "init layer entry skipped: symlink or non-directory on the way");
            skipped.push(rel);
        }
    }
    Ok(skipped)
}

/// Returns false when the entry was skipped for safety.
fn create_entry(rootfs: &Path, rel: &str, kind: Placeholder) -> Result<bool> {
    let rel = Path::new(rel);
    let mut cur = rootfs.to_path_buf();
    let parent = rel.parent().unwrap_or(Path::new(""));
    for comp in parent.components() {
        let Component::Normal(name) = comp else {
            return Ok(false);
        };
        cur.push(name);
        match fs::symlink_metadata(&cur) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&cur)
                    .map_err(|e| BundleError::io("create directory", &cur, e))?;
            }
            Err(e) => return Err(BundleError::io("stat", &cur, e)),
        }
    }
    let target = rootfs.join(rel);
    match fs::symlink_metadata(&target) {
        Ok(_) => return Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(BundleError::io("stat", &target, e)),
    }
    let made = match kind {
        Placeholder::Dir => fs::DirBuilder::new().mode(0o755).create(&target),
        Placeholder::File => OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&target)
            .map(drop),
        Placeholder::Symlink(to) => std::os::unix::fs::symlink(to, &target),
    };
    made.map_err(|e| BundleError::io("create", &target, e))?;
    Ok(true)
}
