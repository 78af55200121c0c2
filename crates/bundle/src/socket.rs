//! Unix socket paths: the containerd shim's socket address and the 108-byte `sun_path` limit.
//!
//! A unix socket path must fit in `sun_path` (108 bytes) including its terminating NUL, so at
//! most [`MAX_SOCKET_PATH`] = 107 bytes are usable; a longer path fails only at `bind`, with an
//! unhelpful error, so plugind checks every socket it creates up front.

use std::path::{Path, PathBuf};

use plugind_types::{validate::check_file_name, PluginId};
use sha2::{Digest, Sha256};

use crate::{BundleError, Result};

/// Usable bytes of a unix socket path (`sun_path` is 108 bytes including the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Where the 1.6 shim puts its sockets; hard-coded in the shim and shared with any containerd.
pub const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

/// Socket name length reserved for plugins when checking a configured exec root before any
/// plugin is known (`vol.sock`, `plugin.sock`, ... fit); each plugin's real socket path is
/// checked again with [`plugin_socket_path`].
pub const RESERVED_PLUGIN_SOCKET_NAME: usize = 16;

/// Fails with [`BundleError::SocketPathTooLong`] naming `path` when it exceeds 107 bytes.
pub fn check_socket_path(path: &Path) -> Result<()> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(BundleError::SocketPathTooLong {
            path: path.to_path_buf(),
            len,
            max: MAX_SOCKET_PATH,
        });
    }
    Ok(())
}

/// The plugin's runtime directory `<exec_root>/plugins/<id>` (bound at `/run/docker/plugins`).
pub fn plugin_runtime_dir(exec_root: &Path, id: &PluginId) -> PathBuf {
    exec_root.join("plugins").join(id.as_str())
}

/// The host path of a plugin's socket, `<exec_root>/plugins/<id>/<socket>`, checked: `socket`
/// (from the plugin's `config.json`, so from a stranger) must be a plain file name, or
/// `PathBuf::join` would leave the runtime directory (an absolute name replaces the whole
/// path, `..` climbs out) and enable would remove and dial a host path as root.
/// Pass [`PluginInterface::socket_name`](plugind_types::config::PluginInterface::socket_name),
/// which applies the default for an empty `Socket`.
pub fn plugin_socket_path(exec_root: &Path, id: &PluginId, socket: &str) -> Result<PathBuf> {
    check_file_name(socket, MAX_SOCKET_PATH).map_err(|rule| BundleError::InvalidSocketName {
        name: socket.to_owned(),
        rule,
    })?;
    let path = plugin_runtime_dir(exec_root, id).join(socket);
    check_socket_path(&path)?;
    Ok(path)
}

/// The ttrpc events socket the shims publish to, `<exec_root>/events.sock`.
pub fn events_socket_path(exec_root: &Path) -> PathBuf {
    exec_root.join("events.sock")
}

/// Checks, at start-up, every socket plugind creates for a configured exec root and API
/// socket: the events socket, the API socket, and a plugin socket with a name of
/// [`RESERVED_PLUGIN_SOCKET_NAME`] bytes.
pub fn check_daemon_sockets(exec_root: &Path, api_socket: &Path) -> Result<()> {
    check_socket_path(&events_socket_path(exec_root))?;
    check_socket_path(api_socket)?;
    let longest_id = PluginId::from_bytes([0; 32]);
    let name = "s".repeat(RESERVED_PLUGIN_SOCKET_NAME);
    plugin_socket_path(exec_root, &longest_id, &name).map(|_| ())
}

/// Go's `filepath.Clean` on a joined path (the shim hashes `filepath.Join(address, ns, id)`).
fn go_clean_join(parts: &[&str]) -> String {
    let joined = parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/");
    let rooted = joined.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|p| *p != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            p => out.push(p),
        }
    }
    let body = out.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_owned(),
        (false, false) => body,
    }
}

/// The socket path a 1.6 `containerd-shim-runc-v2` listens on for `-address <address>
/// -namespace <namespace>` and a container id (or its `io.containerd.runc.v2.group`
/// annotation): `/run/containerd/s/` + hex sha256 of `filepath.Join(address, namespace, id)`.
/// Always 82 bytes, well within the limit.
pub fn shim_socket_path(address: &str, namespace: &str, id_or_group: &str) -> PathBuf {
    let hashed = go_clean_join(&[address, namespace, id_or_group]);
    let digest = Sha256::digest(hashed.as_bytes());
    Path::new(SHIM_SOCKET_DIR).join(hex::encode(digest))
}

/// [`shim_socket_path`] as the shim prints it: `unix:///run/containerd/s/<hex>`.
pub fn shim_socket_address(address: &str, namespace: &str, id_or_group: &str) -> String {
    format!(
        "unix://{}",
        shim_socket_path(address, namespace, id_or_group).display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_clean_join_matches_filepath_join() {
        assert_eq!(
            go_clean_join(&["/run/x/daemon.sock", "ns", "t1"]),
            "/run/x/daemon.sock/ns/t1"
        );
        assert_eq!(go_clean_join(&["/run//x/", "ns", "t1"]), "/run/x/ns/t1");
        assert_eq!(go_clean_join(&["/run/x/../y", "", "t1"]), "/run/y/t1");
        assert_eq!(go_clean_join(&["/..", "a"]), "/a");
        assert_eq!(go_clean_join(&["a/..", "."]), ".");
        assert_eq!(go_clean_join(&["../a", "b"]), "../a/b");
    }

    #[test]
    fn plugin_socket_path_stays_in_the_runtime_dir() {
        let exec = Path::new("/run/plugind");
        let id = PluginId::from_bytes([7; 32]);
        let dir = plugin_runtime_dir(exec, &id);
        assert_eq!(
            plugin_socket_path(exec, &id, "vol.sock").unwrap(),
            dir.join("vol.sock")
        );
        for bad in ["/tmp/x/host-file", "../x", "..", ".", "", "a/b", "a\0b"] {
            let err = plugin_socket_path(exec, &id, bad).unwrap_err();
            assert!(
                matches!(err, BundleError::InvalidSocketName { .. }),
                "{bad:?}: {err}"
            );
            assert_eq!(err.kind(), plugind_types::ErrorKind::InvalidArgument);
        }
    }
}
