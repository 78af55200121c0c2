//! Crash-safe file updates.
//!
//! The discipline used for every state change on disk: write a temporary file in the same
//! directory, fsync it, rename it over the target, fsync the directory. After a crash at any
//! point the target holds either the old or the new content, never a mix; a leftover temporary
//! (named `.<name>.tmp-<pid>-<n>`) is recognised by [`is_temp_name`] and removed at restart.

use std::{
    fs::{self, File, OpenOptions},
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use crate::{Result, SysError};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Marker inside temporary file names made by this module.
const TEMP_MARKER: &str = ".tmp-";

/// True for names of temporary files made by [`atomic_write`] (leftovers after a crash).
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(TEMP_MARKER)
}

/// fsyncs a directory so that renames and creations inside it are durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(|e| SysError::io("open directory", dir, e))?;
    f.sync_all()
        .map_err(|e| SysError::io("fsync directory", dir, e))
}

/// fsyncs a file's data and metadata.
pub fn fsync_file(file: &File, path: &Path) -> Result<()> {
    file.sync_all().map_err(|e| SysError::io("fsync", path, e))
}

/// Flushes the whole filesystem holding `path` to disk (`syncfs(2)`): makes a tree just
/// written (an unpacked rootfs: every file and directory) durable in one call, before the
/// rename that publishes it.
pub fn sync_filesystem(path: &Path) -> Result<()> {
    let f = File::open(path).map_err(|e| SysError::io("open", path, e))?;
    nix::unistd::syncfs(&f).map_err(|e| SysError::errno("syncfs", path, e))
}

/// Starts writing `file`'s dirty pages to disk without waiting (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE`): a later fsync or [`sync_filesystem`] then finds most of the data
/// already written instead of flushing it all at once. Makes nothing durable by itself (neither
/// the metadata nor a guarantee of completion): it only moves disk work earlier.
pub fn start_writeback(file: &File, path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range takes a file descriptor we own for the duration of the call
    // (borrowed from `file`) and integers; it touches no memory of ours.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if rc == -1 {
        return Err(SysError::io(
            "sync_file_range",
            path,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// [`start_writeback`] of the file at `path`, opened read-only without following a symlink
/// in its last component.
pub fn start_writeback_at(path: &Path) -> Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(|e| SysError::io("open", path, e))?;
    start_writeback(&file, path)
}

/// Replaces `path` with `contents` atomically and durably (mode 0600 unless `mode` is given).
pub fn atomic_write(path: &Path, contents: &[u8]) -> Result<()> {
    atomic_write_mode(path, contents, 0o600)
}

/// [`atomic_write`] with an explicit file mode.
pub fn atomic_write_mode(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let (dir, tmp) = temp_path_for(path)?;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| SysError::io("create", &tmp, e))?;
        f.write_all(contents)
            .map_err(|e| SysError::io("write", &tmp, e))?;
        // The mode given to open is filtered by the umask; state files must have exactly `mode`.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| SysError::io("chmod", &tmp, e))?;
        fsync_file(&f, &tmp)?;
        fs::rename(&tmp, path).map_err(|e| SysError::io("rename", path, e))?;
        fsync_dir(&dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Renames `from` to `to` and fsyncs the parent directories of both.
pub fn durable_rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| SysError::io("rename", from, e))?;
    let to_dir = parent_of(to)?;
    fsync_dir(&to_dir)?;
    let from_dir = parent_of(from)?;
    if from_dir != to_dir {
        fsync_dir(&from_dir)?;
    }
    Ok(())
}

/// Creates a directory (and parents) with `mode` on the last component, then fsyncs its parent.
pub fn create_dir_durable(dir: &Path, mode: u32) -> Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = parent_of(dir)?;
            fs::create_dir_all(&parent)
                .map_err(|e| SysError::io("create directory", &parent, e))?;
            fs::create_dir(dir)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| SysError::io("create directory", dir, e))?;
        }
        Err(e) => return Err(SysError::io("create directory", dir, e)),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(|e| SysError::io("chmod", dir, e))?;
    fsync_dir(&parent_of(dir)?)
}

/// The kind of special file [`make_special_file`] creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialFile {
    /// A character device node.
    Char {
        /// Device major number.
        major: u64,
        /// Device minor number.
        minor: u64,
    },
    /// A block device node.
    Block {
        /// Device major number.
        major: u64,
        /// Device minor number.
        minor: u64,
    },
    /// A named pipe.
    Fifo,
}

/// Creates a device node or FIFO at `path` with permission bits `mode` (`mknod(2)`), owned by
/// `uid`:`gid`. Used when unpacking plugin root filesystems, which may carry `/dev` entries.
pub fn make_special_file(
    path: &Path,
    kind: SpecialFile,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<()> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let (flag, dev) = match kind {
        SpecialFile::Char { major, minor } => (SFlag::S_IFCHR, makedev(major, minor)),
        SpecialFile::Block { major, minor } => (SFlag::S_IFBLK, makedev(major, minor)),
        SpecialFile::Fifo => (SFlag::S_IFIFO, 0),
    };
    mknod(path, flag, Mode::from_bits_truncate(mode & 0o7777), dev)
        .map_err(|e| SysError::errno("mknod", path, e))?;
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(|e| SysError::io("chown", path, e))?;
    // mknod's mode is filtered by the umask; the archive's mode must win.
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
        .map_err(|e| SysError::io("chmod", path, e))
}

fn parent_of(path: &Path) -> Result<PathBuf> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Ok(PathBuf::from(".")),
        Some(p) => Ok(p.to_path_buf()),
        None => Err(SysError::InvalidPath {
            path: path.to_path_buf(),
            reason: "has no parent",
        }),
    }
}

fn temp_path_for(path: &Path) -> Result<(PathBuf, PathBuf)> {
    let dir = parent_of(path)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or(SysError::InvalidPath {
            path: path.to_path_buf(),
            reason: "has no file name",
        })?;
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}{TEMP_MARKER}{}-{n}", std::process::id()));
    Ok((dir, tmp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_filesystem_flushes_a_tree_and_names_a_missing_path() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/b/f"), b"data").unwrap();
        sync_filesystem(dir.path()).unwrap();
        let missing = dir.path().join("missing");
        let err = sync_filesystem(&missing).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn start_writeback_accepts_a_written_file_and_names_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let mut f = File::create(&p).unwrap();
        f.write_all(&[7u8; 1 << 16]).unwrap();
        start_writeback(&f, &p).unwrap();
        // A read-only handle is enough; by path, a symlink is not followed.
        start_writeback_at(&p).unwrap();
        std::os::unix::fs::symlink(&p, dir.path().join("link")).unwrap();
        assert!(start_writeback_at(&dir.path().join("link")).is_err());
        assert_eq!(fs::read(&p).unwrap(), vec![7u8; 1 << 16]);
        // Not a file: a pipe has no pages to write back.
        let (r, _w) = nix::unistd::pipe().unwrap();
        let pipe = File::from(r);
        let err = start_writeback(&pipe, Path::new("the-pipe")).unwrap_err();
        assert!(err.to_string().contains("the-pipe"), "{err}");
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["config.json"]);
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn atomic_write_into_missing_dir_fails_typed_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing/config.json");
        let err = atomic_write(&p, b"x").unwrap_err();
        assert!(err.is_not_found());
        assert!(!dir.path().join("missing").exists());
    }

    #[test]
    fn temp_names_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let (_, tmp) = temp_path_for(&dir.path().join("x.json")).unwrap();
        assert!(is_temp_name(tmp.file_name().unwrap().to_str().unwrap()));
        assert!(!is_temp_name("x.json"));
    }

    #[test]
    fn special_files_get_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        make_special_file(&fifo, SpecialFile::Fifo, 0o640, 0, 0).unwrap();
        let meta = fs::symlink_metadata(&fifo).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(meta.file_type().is_fifo());
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert!(make_special_file(&fifo, SpecialFile::Fifo, 0o640, 0, 0).is_err());
    }

    #[test]
    fn durable_rename_and_create_dir() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        create_dir_durable(&d, 0o700).unwrap();
        create_dir_durable(&d, 0o700).unwrap();
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        durable_rename(&d, &dir.path().join("a/c")).unwrap();
        assert!(dir.path().join("a/c").is_dir() && !d.exists());
    }
}
