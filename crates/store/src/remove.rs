//! Recursive removal that never reaches into a mounted filesystem.
//!
//! `std::fs::remove_dir_all` descends into mount points: on a `<id>-removing` directory with a
//! volume still mounted under `propagated-mount/`, it would delete the volume's data before
//! failing with EBUSY on the mount point (moby#34366 is the EBUSY half of that story). So the
//! store first looks for mount points under the tree in `/proc/self/mountinfo` and refuses with
//! [`StoreError::Busy`] if there are any, and while walking it does not descend into a directory
//! on another device.

use std::{
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::StoreError;

/// Removes `path` and everything under it, unless something is mounted under it.
/// A missing `path` is not an error.
pub(crate) fn remove_tree(path: &Path) -> Result<(), StoreError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StoreError::Remove {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if !meta.is_dir() {
        return fs::remove_file(path).map_err(|source| StoreError::Remove {
            path: path.to_path_buf(),
            source,
        });
    }
    let mounts = mounts_under(path);
    if !mounts.is_empty() {
        return Err(StoreError::Busy {
            path: path.to_path_buf(),
            mounts,
        });
    }
    remove_dir_on_device(path, meta.dev()).map_err(|e| match e {
        WalkError::OtherDevice(mount) => StoreError::Busy {
            path: path.to_path_buf(),
            mounts: vec![mount],
        },
        WalkError::Io(p, source) => StoreError::Remove { path: p, source },
    })
}

enum WalkError {
    OtherDevice(PathBuf),
    Io(PathBuf, io::Error),
}

fn remove_dir_on_device(dir: &Path, dev: u64) -> Result<(), WalkError> {
    let entries = fs::read_dir(dir).map_err(|e| WalkError::Io(dir.to_path_buf(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| WalkError::Io(dir.to_path_buf(), e))?;
        let p = entry.path();
        let meta = fs::symlink_metadata(&p).map_err(|e| WalkError::Io(p.clone(), e))?;
        if meta.is_dir() {
            if meta.dev() != dev {
                return Err(WalkError::OtherDevice(p));
            }
            remove_dir_on_device(&p, dev)?;
        } else {
            fs::remove_file(&p).map_err(|e| WalkError::Io(p.clone(), e))?;
        }
    }
    fs::remove_dir(dir).map_err(|e| WalkError::Io(dir.to_path_buf(), e))
}

/// Mount points at or below `path` in this process's mount namespace. An unreadable
/// mountinfo yields none; the device check of the walk still guards other filesystems.
pub(crate) fn mounts_under(path: &Path) -> Vec<PathBuf> {
    let Ok(base) = fs::canonicalize(path) else {
        return Vec::new();
    };
    match plugind_sys::mount::read_mountinfo() {
        Ok(mounts) => mounts
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|m| m.starts_with(&base))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read mountinfo; relying on the device check");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_a_tree_with_symlinks_without_following_them() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"x").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("t");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), tree.join("a/link")).unwrap();
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert!(outside.path().join("keep").exists());
        remove_tree(&tree).unwrap();
    }
}
