//! Removal of a directory tree of any depth: iterative (an explicit stack, so a hostile
//! 100,000-deep chain cannot overflow a thread's stack), relative to directory descriptors (so
//! paths longer than `PATH_MAX` are no obstacle), never following a symlink and never crossing a
//! mount point (another filesystem, or a bind mount of the same one: the walk stops with an
//! error and nothing below the mount point is touched).
//!
//! Only one directory descriptor is held at a time: going back up opens `..` and checks that it
//! is the directory we came from (device and inode), so a tree renamed under the walk stops it
//! instead of sending it elsewhere.

use std::{
    ffi::{CStr, OsStr, OsString},
    os::{
        fd::{AsFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

use nix::{
    dir::{Dir, Type},
    errno::Errno,
    fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag, AT_FDCWD},
    sys::stat::{fstat, fstatat, Mode, SFlag},
    unistd::{unlinkat, UnlinkatFlags},
};

/// Why [`remove_tree_same_device`] stopped. What was removed before stays removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveTreeError {
    /// A directory below the root is on another filesystem (a mount point); nothing below it
    /// was touched.
    #[error("{0} is on another filesystem (a mount point)")]
    OtherDevice(PathBuf),
    /// The tree was moved or replaced while it was being removed.
    #[error("{0} changed while it was being removed")]
    Changed(PathBuf),
    /// A system call failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path (as seen from the root given).
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Removes `root` and everything below it, staying on `root`'s filesystem. A missing `root`
/// is not an error; a non-directory `root` is unlinked.
pub fn remove_tree_same_device(root: &Path) -> Result<(), RemoveTreeError> {
    let io = |op, path: &Path, e: Errno| RemoveTreeError::Io {
        op,
        path: path.to_path_buf(),
        source: std::io::Error::from(e),
    };
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut cur = match openat(AT_FDCWD, root, dir_flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        // A symlink or a file: remove the entry itself.
        Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => {
            return match unlinkat(AT_FDCWD, root, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => Ok(()),
                Err(e) => Err(io("unlink", root, e)),
            };
        }
        Err(e) => return Err(io("open", root, e)),
    };
    let root_stat = fstat(&cur).map_err(|e| io("stat", root, e))?;
    let dev = root_stat.st_dev;
    let mut cur_ino = root_stat.st_ino;
    // One entry per level below the root: the parent's inode and our name in it.
    let mut stack: Vec<(u64, OsString)> = Vec::new();
    let here = |stack: &[(u64, OsString)], name: Option<&OsStr>| -> PathBuf {
        let mut p = root.to_path_buf();
        p.extend(stack.iter().map(|(_, n)| n.as_os_str()));
        if let Some(n) = name {
            p.push(n);
        }
        p
    };
    loop {
        match next_subdir(&cur, dev) {
            Err((op, name, e)) => {
                return Err(match e {
                    Errno::EXDEV => RemoveTreeError::OtherDevice(here(&stack, name.as_deref())),
                    e => io(op, &here(&stack, name.as_deref()), e),
                })
            }
            Ok(Some(name)) => {
                let child = open_child(&cur, &name, dir_flags).map_err(|e| match e {
                    Errno::EXDEV => RemoveTreeError::OtherDevice(here(&stack, Some(&name))),
                    e => io("open", &here(&stack, Some(&name)), e),
                })?;
                let st = fstat(&child).map_err(|e| io("stat", &here(&stack, Some(&name)), e))?;
                if st.st_dev != dev {
                    return Err(RemoveTreeError::OtherDevice(here(&stack, Some(&name))));
                }
                stack.push((cur_ino, name));
                cur = child;
                cur_ino = st.st_ino;
            }
            Ok(None) => {
                // `cur` is empty: go up and remove it from its parent.
                let Some((parent_ino, name)) = stack.pop() else {
                    drop(cur);
                    return match unlinkat(AT_FDCWD, root, UnlinkatFlags::RemoveDir) {
                        Ok(()) | Err(Errno::ENOENT) => Ok(()),
                        Err(e) => Err(io("remove directory", root, e)),
                    };
                };
                let parent = openat(&cur, "..", dir_flags, Mode::empty())
                    .map_err(|e| io("open", &here(&stack, None), e))?;
                let st = fstat(&parent).map_err(|e| io("stat", &here(&stack, None), e))?;
                if st.st_dev != dev || st.st_ino != parent_ino {
                    return Err(RemoveTreeError::Changed(here(&stack, None)));
                }
                unlinkat(&parent, name.as_os_str(), UnlinkatFlags::RemoveDir)
                    .map_err(|e| io("remove directory", &here(&stack, Some(&name)), e))?;
                cur = parent;
                cur_ino = parent_ino;
            }
        }
    }
}

/// Opens the subdirectory `name` of `dir` without following a symlink and without crossing
/// any mount point: `RESOLVE_NO_XDEV` also catches a bind mount of the same filesystem, which
/// the device check cannot see (`EXDEV`). Kernels before 5.6 fall back to a plain open and the
/// device check.
fn open_child(dir: &OwnedFd, name: &OsStr, flags: OFlag) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new().flags(flags).resolve(
        ResolveFlag::RESOLVE_NO_XDEV
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_BENEATH,
    );
    match openat2(dir, name, how) {
        Err(Errno::ENOSYS) => openat(dir, name, flags, Mode::empty()),
        r => r,
    }
}

type StepError = (&'static str, Option<OsString>, Errno);

/// Unlinks every non-directory in `dir` and returns the name of a subdirectory, or `None`
/// once `dir` is empty. A subdirectory on another device is `EXDEV`.
fn next_subdir(dir: &OwnedFd, dev: u64) -> Result<Option<OsString>, StepError> {
    loop {
        let fd = openat(
            dir,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ("open", None, e))?;
        let mut listing = Dir::from_fd(fd).map_err(|e| ("read directory", None, e))?;
        let mut saw_any = false;
        for entry in listing.iter() {
            let entry = entry.map_err(|e| ("read directory", None, e))?;
            let name: &CStr = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            saw_any = true;
            let owned = OsStr::from_bytes(name.to_bytes()).to_owned();
            let is_dir = match entry.file_type() {
                Some(Type::Directory) => true,
                Some(_) => false,
                None => match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) => {
                        SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
                    }
                    Err(Errno::ENOENT) => continue,
                    Err(e) => return Err(("stat", Some(owned), e)),
                },
            };
            if is_dir {
                let st = fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(|e| ("stat", Some(owned.clone()), e))?;
                if st.st_dev != dev {
                    return Err(("stat", Some(owned), Errno::EXDEV));
                }
                return Ok(Some(owned));
            }
            match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(("unlink", Some(owned), e)),
            }
        }
        // Unlinking while reading may hide entries from this pass: only a pass that saw
        // nothing proves the directory empty.
        if !saw_any {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Makes a chain of `depth` directories named `d` under `base`, through descriptors (the
    /// full path is far longer than `PATH_MAX`), with a file at the bottom.
    fn deep_chain(base: &Path, depth: usize) {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut cur = openat(AT_FDCWD, base, flags, Mode::empty()).unwrap();
        for _ in 0..depth {
            nix::sys::stat::mkdirat(&cur, "d", Mode::from_bits_truncate(0o755)).unwrap();
            cur = openat(&cur, "d", flags, Mode::empty()).unwrap();
        }
        let f = openat(
            &cur,
            "f",
            OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        drop(f);
    }

    #[test]
    fn removes_a_5000_deep_chain_on_a_small_stack() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("t");
        std::fs::create_dir(&tree).unwrap();
        deep_chain(&tree, 5000);
        let t = tree.clone();
        // A recursive walk needs far more than 64 KiB for 5,000 levels.
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || remove_tree_same_device(&t))
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        assert!(!tree.exists());
    }

    #[test]
    fn symlinks_are_removed_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(outside.path().join("sub")).unwrap();
        std::fs::write(outside.path().join("sub/keep"), b"x").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("t");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        for i in 0..300 {
            std::fs::write(tree.join(format!("a/b/f{i}")), b"x").unwrap();
        }
        std::os::unix::fs::symlink(outside.path(), tree.join("a/link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("sub"), tree.join("top")).unwrap();
        remove_tree_same_device(&tree).unwrap();
        assert!(!tree.exists());
        assert!(outside.path().join("sub/keep").exists());
        // Missing: fine. A symlink as the root: the link goes, not its target.
        remove_tree_same_device(&tree).unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();
        remove_tree_same_device(&link).unwrap();
        assert!(link.symlink_metadata().is_err());
        assert!(outside.path().join("sub/keep").exists());
    }

    #[test]
    #[ignore = "needs root: bind-mounts a tmpfs directory into the tree"]
    fn stops_at_another_filesystem() {
        assert!(nix::unistd::geteuid().is_root(), "this test needs root");
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("t");
        let mnt = tree.join("m");
        std::fs::create_dir_all(&mnt).unwrap();
        let src = tempfile::tempdir_in("/dev/shm").unwrap();
        std::fs::write(src.path().join("keep"), b"x").unwrap();
        nix::mount::mount(
            Some(src.path()),
            &mnt,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind mount");
        let err = remove_tree_same_device(&tree).unwrap_err();
        nix::mount::umount(&mnt).unwrap();
        assert!(
            matches!(err, RemoveTreeError::OtherDevice(ref p) if p == &mnt),
            "{err}"
        );
        assert!(src.path().join("keep").exists());
        remove_tree_same_device(&tree).unwrap();
    }

    /// A bind mount of the same filesystem has the same device number: only the mount
    /// boundary tells it apart, and the walk must not delete through it.
    #[test]
    #[ignore = "needs root: bind-mounts a directory of the same filesystem into the tree"]
    fn stops_at_a_bind_mount_of_the_same_filesystem() {
        assert!(nix::unistd::geteuid().is_root(), "this test needs root");
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("keep"), b"x").unwrap();
        let tree = dir.path().join("t");
        let mnt = tree.join("a/m");
        std::fs::create_dir_all(&mnt).unwrap();
        nix::mount::mount(
            Some(&src),
            &mnt,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind mount");
        let err = remove_tree_same_device(&tree).unwrap_err();
        nix::mount::umount(&mnt).unwrap();
        assert!(
            matches!(err, RemoveTreeError::OtherDevice(ref p) if p == &mnt),
            "{err}"
        );
        assert!(src.join("keep").exists(), "deleted through the bind mount");
        remove_tree_same_device(&tree).unwrap();
    }
}
