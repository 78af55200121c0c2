//! Exclusive advisory locks with `flock(2)`.
//!
//! `flock` locks belong to the open file description, so they exclude other processes *and*
//! other handles in the same process, and the kernel drops them when the holder dies: a
//! daemon killed with SIGKILL never leaves a stale lock behind.

use std::{
    fs::{File, OpenOptions},
    io::{Seek, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};

use crate::{Result, SysError};

/// A held exclusive lock; released when dropped.
#[derive(Debug)]
pub struct LockFile {
    path: PathBuf,
    // Held for its Drop, which unlocks.
    _lock: Flock<File>,
}

impl LockFile {
    /// Takes the lock at `path` (creating the file, mode 0600) without waiting.
    ///
    /// Returns [`SysError::Locked`] when someone else holds it.
    pub fn try_exclusive(path: &Path) -> Result<LockFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| SysError::io("open lock file", path, e))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(LockFile {
                path: path.to_path_buf(),
                _lock: lock,
            }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(SysError::Locked {
                path: path.to_path_buf(),
            }),
            Err((_, errno)) => Err(SysError::errno("flock", path, errno)),
        }
    }

    /// Takes the lock and records this process's pid in the file, for the operator who finds
    /// a root locked (the pid is informational; the lock itself is what excludes).
    pub fn try_exclusive_with_pid(path: &Path) -> Result<LockFile> {
        let mut lock = Self::try_exclusive(path)?;
        let file: &mut File = &mut lock._lock;
        file.set_len(0)
            .map_err(|e| SysError::io("truncate", path, e))?;
        file.rewind().map_err(|e| SysError::io("seek", path, e))?;
        writeln!(file, "{}", std::process::id()).map_err(|e| SysError::io("write", path, e))?;
        Ok(lock)
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_first_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let first = LockFile::try_exclusive_with_pid(&p).unwrap();
        let second = LockFile::try_exclusive(&p).unwrap_err();
        assert!(matches!(second, SysError::Locked { .. }));
        assert_eq!(
            std::fs::read_to_string(&p).unwrap().trim(),
            std::process::id().to_string()
        );
        drop(first);
        LockFile::try_exclusive(&p).unwrap();
    }
}
