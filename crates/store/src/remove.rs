//! Recursive removal that never reaches into a mounted filesystem.
//!
//! `std::fs::remove_dir_all` descends into mount points: on a `<id>-removing` directory with a
//! volume still mounted under `propagated-mount/`, it would delete the volume's data before
//! failing with EBUSY on the mount point (moby#34366 is the EBUSY half of that story). So the
//! store first looks for mount points under the tree in `/proc/self/mountinfo` and refuses with
//! [`StoreError::Busy`] if there are any, and while walking it does not descend into a directory
//! on another device. The walk is `plugind_sys::tree`'s: iterative and descriptor-relative, so a
//! plugin rootfs holding a directory chain thousands deep (longer than `PATH_MAX`) is removed
//! without overflowing the stack of the thread doing it.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use plugind_sys::tree::{remove_tree_same_device, RemoveTreeError};

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
    remove_tree_same_device(path).map_err(|e| match e {
        RemoveTreeError::OtherDevice(mount) => StoreError::Busy {
            path: path.to_path_buf(),
            mounts: vec![mount],
        },
        RemoveTreeError::Changed(p) => StoreError::Remove {
            path: p,
            source: io::Error::other("the tree changed while it was being removed"),
        },
        RemoveTreeError::Io {
            path: p, source, ..
        } => StoreError::Remove { path: p, source },
    })
}

/// Mount points at or below `path` in this process's mount namespace. An unreadable
/// mountinfo yields none; the device check of the walk still guards other filesystems.
pub(crate) fn mounts_under(path: &Path) -> Vec<PathBuf> {
    match plugind_sys::mount::mounts_under(path) {
        Ok(mounts) => mounts,
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

    /// A rootfs holding a 5,000-deep chain (the crash on `rm`) is removed on a thread
    /// with a small stack: the walk is iterative and does not build paths over `PATH_MAX`.
    #[test]
    fn removes_a_5000_deep_chain_on_a_small_stack() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("t");
        std::fs::create_dir(&tree).unwrap();
        // Built through /proc/self/fd so no path handed to the kernel exceeds PATH_MAX.
        let mut cur = std::fs::File::open(&tree).unwrap();
        for _ in 0..5000 {
            use std::os::fd::AsRawFd;
            let next = format!("/proc/self/fd/{}/d", cur.as_raw_fd());
            std::fs::create_dir(&next).unwrap();
            cur = std::fs::File::open(&next).unwrap();
        }
        drop(cur);
        let t = tree.clone();
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || remove_tree(&t))
            .unwrap()
            .join()
            .expect("no stack overflow")
            .unwrap();
        assert!(!tree.exists());
    }
}
