//! Unix sockets that others connect to, created with their final owner and mode: the socket is
//! bound in a private 0700 directory next to its path, chowned and chmodded there, then renamed
//! into place, so it never exists at its final path with any other owner or mode. Also the
//! group lookup of dockerd's `--group` (`-G`).

use std::{
    io,
    os::unix::{fs::PermissionsExt, net::UnixListener},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

/// Who may connect to a socket: its owner, group and mode (e.g. `root:docker 0660`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOwner {
    /// Owning user id.
    pub uid: u32,
    /// Owning group id.
    pub gid: u32,
    /// Permission bits (e.g. `0o660`).
    pub mode: u32,
}

impl SocketOwner {
    /// This process's user and group with `mode` (tests, unprivileged runs).
    pub fn current(mode: u32) -> Self {
        SocketOwner {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            mode,
        }
    }

    /// `root:<gid>` with mode 0660, dockerd's API socket.
    pub fn root_group(gid: u32) -> Self {
        SocketOwner {
            uid: 0,
            gid,
            mode: 0o660,
        }
    }
}

/// dockerd's default socket group.
pub const DEFAULT_SOCKET_GROUP: &str = "docker";

/// Why a socket group cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// A group named with `--group` does not exist (dockerd's text).
    #[error("group {0} not found")]
    NotFound(String),
    /// The group database could not be read.
    #[error("reading the group database for {name}: {source}")]
    Lookup {
        /// The group asked for.
        name: String,
        /// The failure.
        source: io::Error,
    },
}

/// The gid of the API socket's group, as dockerd resolves `--group`: the default `docker` if
/// that group exists and root's group (0) otherwise; an empty name means root's group; another
/// name must be a group (by name, or a number) or it is an error, never a silent fallback.
pub fn socket_gid(name: &str) -> Result<u32, GroupError> {
    if name.is_empty() {
        return Ok(0);
    }
    if let Some(gid) = lookup_group(name)? {
        return Ok(gid);
    }
    if name == DEFAULT_SOCKET_GROUP {
        tracing::warn!(group = name, "socket group not found; using root's group");
        return Ok(0);
    }
    // dockerd accepts a numeric gid even without an /etc/group entry.
    name.parse::<u32>()
        .map_err(|_| GroupError::NotFound(name.to_owned()))
}

/// The gid of group `name` from the group database, `None` if there is no such group.
pub fn lookup_group(name: &str) -> Result<Option<u32>, GroupError> {
    match nix::unistd::Group::from_name(name) {
        Ok(group) => Ok(group.map(|g| g.gid.as_raw())),
        Err(errno) => Err(GroupError::Lookup {
            name: name.to_owned(),
            source: io::Error::from(errno),
        }),
    }
}

/// Distinguishes the private directories of concurrent binds in one process.
static BIND_SEQ: AtomicU64 = AtomicU64::new(0);

/// Binds a listening unix socket at `path` with `owner`'s uid, gid and mode. The socket is
/// made in a fresh 0700 directory beside `path` (same filesystem), given its owner and mode
/// there, and renamed over `path` (replacing whatever socket was there: callers check first
/// that no live server owns it); the parent directory is then synced. A failure leaves
/// nothing behind.
pub fn bind_unix_owned(path: &Path, owner: &SocketOwner) -> io::Result<UnixListener> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "socket path has no name"))?;
    let prefix = format!(".{}.bind-", name.to_string_lossy());
    remove_stale_binds(parent, &prefix);
    let private = parent.join(format!(
        "{prefix}{}-{}",
        std::process::id(),
        BIND_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut builder = std::fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&private)?;
    let result = bind_in(&private, name, path, owner);
    // Empty after a successful rename; after a failure the socket inside goes too.
    let _ = std::fs::remove_dir_all(&private);
    let listener = result?;
    crate::fs::fsync_dir(parent).map_err(io::Error::other)?;
    Ok(listener)
}

/// Prefix of the private directory [`bind_unix_owned_batch`] makes in the sockets' directory;
/// whoever owns that directory removes leftovers of a process that died mid-batch
/// ([`is_batch_leftover`]).
pub const BATCH_BIND_PREFIX: &str = ".plugind-bind-";

/// True for a name [`bind_unix_owned_batch`] gives its private directory.
pub fn is_batch_leftover(name: &str) -> bool {
    name.starts_with(BATCH_BIND_PREFIX)
}

/// Binds many listening unix sockets, all in one directory, each with `owner`'s uid, gid and
/// mode, as [`bind_unix_owned`] does one (bound in a private 0700 directory, given its owner
/// and mode there, renamed into place), with one private directory for the whole batch: a
/// published socket per plugin of a fleet costs a bind, chown, chmod and rename, not a
/// directory of its own, a scan of its neighbours and a directory fsync each. The directory is
/// not synced: a socket means nothing after a crash (no process listens on it any more), and
/// the caller removes stale ones at start. Nor are stale private directories looked for: the
/// caller removes those too ([`is_batch_leftover`]) when it prepares the directory. One result
/// per path, in order; a failed socket leaves nothing behind.
pub fn bind_unix_owned_batch(
    dir: &Path,
    names: &[&std::ffi::OsStr],
    owner: &SocketOwner,
) -> io::Result<Vec<io::Result<UnixListener>>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let private = dir.join(format!(
        "{BATCH_BIND_PREFIX}{}-{}",
        std::process::id(),
        BIND_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut builder = std::fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&private)?;
    let results = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            // Staged under a short name: the staged path must fit a socket address too.
            let staged = private.join(i.to_string());
            let result = bind_staged(&staged, &dir.join(name), owner);
            if result.is_err() {
                let _ = std::fs::remove_file(&staged);
            }
            result
        })
        .collect();
    let _ = std::fs::remove_dir_all(&private);
    Ok(results)
}

/// Removes the private directories a bind of the same socket left when its process died
/// between creating and removing them (a socket is bound by one caller at a time).
fn remove_stale_binds(parent: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn bind_in(
    private: &Path,
    name: &std::ffi::OsStr,
    path: &Path,
    owner: &SocketOwner,
) -> io::Result<UnixListener> {
    let staged: PathBuf = private.join(name);
    bind_staged(&staged, path, owner)
}

/// Binds at `staged` (in a private directory), gives the socket its owner and mode, renames
/// it to `path`.
fn bind_staged(staged: &Path, path: &Path, owner: &SocketOwner) -> io::Result<UnixListener> {
    let listener = UnixListener::bind(staged)?;
    std::os::unix::fs::chown(staged, Some(owner.uid), Some(owner.gid))?;
    std::fs::set_permissions(staged, std::fs::Permissions::from_mode(owner.mode))?;
    std::fs::rename(staged, path)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use super::*;

    #[test]
    fn socket_has_owner_and_mode_and_nothing_is_left_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let me = SocketOwner {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            mode: 0o640,
        };
        let listener = bind_unix_owned(&path, &me).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_eq!((meta.uid(), meta.gid()), (me.uid, me.gid));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["api.sock"]);
        // It listens: a client connects.
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        drop(listener);
        // A second bind replaces the stale socket.
        let _again = bind_unix_owned(&path, &me).unwrap();
    }

    #[test]
    fn leftovers_of_an_interrupted_bind_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(".api.sock.bind-1-0");
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join("api.sock"), "").unwrap();
        let _listener =
            bind_unix_owned(&dir.path().join("api.sock"), &SocketOwner::current(0o600)).unwrap();
        assert!(!stale.exists());
    }

    #[test]
    fn batch_binds_every_socket_with_owner_and_mode_and_leaves_nothing_beside_them() {
        let dir = tempfile::tempdir().unwrap();
        let me = SocketOwner {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            mode: 0o640,
        };
        // Into a directory that does not exist: the rename fails.
        let given = ["a.sock", "missing/c.sock", "b.sock"];
        let names: Vec<&std::ffi::OsStr> = given.iter().map(std::ffi::OsStr::new).collect();
        // A stale socket at a final path is replaced.
        drop(UnixListener::bind(dir.path().join("b.sock")).unwrap());
        let results = bind_unix_owned_batch(dir.path(), &names, &me).unwrap();
        assert_eq!(results.len(), 3);
        assert!(
            results[1].is_err(),
            "a name too long for a socket address fails alone"
        );
        for name in ["a.sock", "b.sock"] {
            let path = dir.path().join(name);
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert!(meta.file_type().is_socket());
            assert_eq!(meta.mode() & 0o7777, 0o640);
            assert_eq!((meta.uid(), meta.gid()), (me.uid, me.gid));
            std::os::unix::net::UnixStream::connect(&path).unwrap();
        }
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["a.sock", "b.sock"]);
        assert!(is_batch_leftover(&format!("{BATCH_BIND_PREFIX}1-2")));
        assert!(bind_unix_owned_batch(dir.path(), &[], &me)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn failed_bind_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let long = "x".repeat(200);
        assert!(bind_unix_owned(&dir.path().join(long), &SocketOwner::root_group(0)).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn groups_resolve_as_dockerd() {
        assert_eq!(socket_gid("").unwrap(), 0);
        assert_eq!(socket_gid("root").unwrap(), 0);
        assert_eq!(socket_gid("4242").unwrap(), 4242);
        assert_eq!(
            socket_gid("no-such-group-xyz").unwrap_err().to_string(),
            "group no-such-group-xyz not found"
        );
        let default = socket_gid(DEFAULT_SOCKET_GROUP).unwrap();
        assert_eq!(default, lookup_group("docker").unwrap().unwrap_or(0));
    }
}
