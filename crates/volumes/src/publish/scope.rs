//! What the published sockets compute from names and paths: the stable file name of a plugin's
//! published socket, and the host path of a path a managed plugin answers (Docker's
//! `Plugin.ScopedPath`, done at component boundaries, normalised first, and confined to the
//! plugin's own directories).

use std::path::{Component, Path, PathBuf};

/// The longest published file stem (before `.sock` / `.spec`): leaves room under the 108-byte
/// unix socket path limit for a short publish directory, and is far above any real name.
pub const MAX_STEM_BYTES: usize = 80;

/// The file stem of a plugin's published socket and spec file, from its full name.
///
/// Docker's short form is used for the default tag (`sample:latest` -> `sample`), since a
/// Docker daemon looks spec files up by the name its user types. Characters a reference can
/// hold but a file name should not are replaced by characters no reference can hold, so the
/// mapping stays one-to-one: `/` -> `+`, `:` -> `=`, `@` -> `%`. Letters, digits, `.`, `_` and
/// `-` stay. `None` for a name that maps to nothing safe (anything else, empty, too long).
///
/// `vieux/sshfs:latest` -> `vieux+sshfs`, `registry:5000/a/b:v2` -> `registry=5000+a+b=v2`.
pub fn published_stem(plugin_name: &str) -> Option<String> {
    // Only a real `:latest` tag is dropped (not a port, not part of a digest).
    let short = match plugin_name.strip_suffix(":latest") {
        Some(s) if !s.contains('@') && !s.rsplit('/').next().unwrap_or(s).contains(':') => s,
        _ => plugin_name,
    };
    let mut out = String::with_capacity(short.len());
    for c in short.chars() {
        out.push(match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' => c,
            '/' => '+',
            ':' => '=',
            '@' => '%',
            _ => return None,
        });
    }
    let first_ok = out
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    (first_ok && out.len() <= MAX_STEM_BYTES).then_some(out)
}

/// Why a plugin's answered path was not given to a consumer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// Not an absolute path.
    #[error("mountpoint {path:?} is not an absolute path")]
    NotAbsolute {
        /// As answered.
        path: String,
    },
    /// Resolves (through a symbolic link) to a place outside the plugin's directories.
    #[error("mountpoint {path:?} leads outside the plugin's directories (to {resolved})")]
    Escapes {
        /// As answered.
        path: String,
        /// Where it led on the host.
        resolved: PathBuf,
    },
    /// The host path could not be examined.
    #[error("mountpoint {path:?}: cannot examine {host}: {reason}")]
    Unreadable {
        /// As answered.
        path: String,
        /// The host path examined.
        host: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Where a plugin's in-plugin paths live on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDirs {
    /// `<root>/<id>/rootfs`.
    pub rootfs: PathBuf,
    /// `<root>/<id>/propagated-mount`.
    pub propagated_mount: PathBuf,
    /// `Config.PropagatedMount` (absolute, in the plugin); empty for none.
    pub propagated_in_plugin: String,
}

/// `path` made absolute-clean: `.` and empty components dropped, `..` applied lexically (never
/// above `/`), as Go's `filepath.Clean`. `None` for a relative path.
pub fn normalise(path: &str) -> Option<Vec<String>> {
    if !path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<String> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p.to_owned()),
        }
    }
    Some(parts)
}

/// The host path Docker would hand out for `in_plugin` (lexical only; see [`confine`]): below
/// the propagated-mount directory when the normalised path is `PropagatedMount` or below it at
/// a component boundary, else below the plugin's rootfs. Returns the base directory too.
pub fn scoped_path(dirs: &PluginDirs, in_plugin: &str) -> Result<(PathBuf, PathBuf), ScopeError> {
    let parts = normalise(in_plugin).ok_or_else(|| ScopeError::NotAbsolute {
        path: in_plugin.to_owned(),
    })?;
    let propagated = normalise(&dirs.propagated_in_plugin).filter(|p| !p.is_empty());
    let (base, rest) = match propagated {
        Some(prefix) if parts.starts_with(&prefix) => {
            (&dirs.propagated_mount, &parts[prefix.len()..])
        }
        _ => (&dirs.rootfs, &parts[..]),
    };
    let mut host = base.clone();
    host.extend(rest);
    Ok((base.clone(), host))
}

/// Resolves `host` on the host file system and refuses it unless it stays below `base`: the
/// longest existing prefix is canonicalised (following the plugin's symbolic links as a
/// consumer's bind mount would) and must lie below the canonical `base` at a component
/// boundary; the missing rest is appended as is (it holds no link and no `..`). Blocking.
pub fn confine(answered: &str, base: &Path, host: &Path) -> Result<PathBuf, ScopeError> {
    let unreadable = |at: &Path, e: std::io::Error| ScopeError::Unreadable {
        path: answered.to_owned(),
        host: at.to_path_buf(),
        reason: e.to_string(),
    };
    let canonical_base = base.canonicalize().map_err(|e| unreadable(base, e))?;
    let mut existing = host.to_path_buf();
    let mut missing: Vec<std::ffi::OsString> = Vec::new();
    let resolved = loop {
        match existing.canonicalize() {
            Ok(p) => break p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let Some(name) = existing.file_name() else {
                    return Err(unreadable(host, e));
                };
                missing.push(name.to_owned());
                if !existing.pop() {
                    return Err(unreadable(host, e));
                }
            }
            Err(e) => return Err(unreadable(&existing, e)),
        }
    };
    let mut out = resolved;
    out.extend(missing.iter().rev());
    let below = out.starts_with(&canonical_base)
        && out
            .strip_prefix(&canonical_base)
            .is_ok_and(|rest| rest.components().all(|c| matches!(c, Component::Normal(_))));
    if below {
        Ok(out)
    } else {
        Err(ScopeError::Escapes {
            path: answered.to_owned(),
            resolved: out,
        })
    }
}

/// [`scoped_path`] then [`confine`]: the host path a consumer may bind, or why not. Blocking.
pub fn host_path(dirs: &PluginDirs, in_plugin: &str) -> Result<PathBuf, ScopeError> {
    let (base, host) = scoped_path(dirs, in_plugin)?;
    confine(in_plugin, &base, &host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(propagated: &str) -> PluginDirs {
        PluginDirs {
            rootfs: PathBuf::from("/r/id/rootfs"),
            propagated_mount: PathBuf::from("/r/id/propagated-mount"),
            propagated_in_plugin: propagated.to_owned(),
        }
    }

    fn lexical(d: &PluginDirs, p: &str) -> PathBuf {
        scoped_path(d, p).unwrap().1
    }

    #[test]
    fn stems_are_short_safe_and_one_to_one() {
        assert_eq!(published_stem("sample:latest").as_deref(), Some("sample"));
        assert_eq!(
            published_stem("vieux/sshfs:latest").as_deref(),
            Some("vieux+sshfs")
        );
        assert_eq!(
            published_stem("registry:5000/a/b:v2").as_deref(),
            Some("registry=5000+a+b=v2")
        );
        assert_eq!(published_stem("a/b:v1").as_deref(), Some("a+b=v1"));
        assert_eq!(
            published_stem("a/b@sha256:00").as_deref(),
            Some("a+b%sha256=00")
        );
        // Nothing that could leave the directory or hide as a dot file.
        for bad in ["", "../x", ".x", "a b", "a\nb", "/abs", "é"] {
            assert_eq!(published_stem(bad), None, "{bad:?}");
        }
        assert_eq!(published_stem(&"a".repeat(MAX_STEM_BYTES + 1)), None);
        // Distinct names never share a stem.
        assert_ne!(published_stem("a/b:c"), published_stem("a/b=c"));
        assert_ne!(published_stem("a+b"), published_stem("a/b"));
    }

    #[test]
    fn propagated_prefix_matches_at_component_boundaries_only() {
        let d = dirs("/data");
        assert_eq!(
            lexical(&d, "/data/v1"),
            PathBuf::from("/r/id/propagated-mount/v1")
        );
        assert_eq!(
            lexical(&d, "/data"),
            PathBuf::from("/r/id/propagated-mount")
        );
        // moby maps this to propagated-mount/base/x.
        assert_eq!(
            lexical(&d, "/database/x"),
            PathBuf::from("/r/id/rootfs/database/x")
        );
        assert_eq!(lexical(&d, "/srv/v"), PathBuf::from("/r/id/rootfs/srv/v"));
        assert_eq!(
            lexical(&dirs(""), "/data/v"),
            PathBuf::from("/r/id/rootfs/data/v")
        );
    }

    #[test]
    fn dot_dot_is_applied_before_the_prefix_test_and_never_climbs_out() {
        let d = dirs("/data");
        // Not "propagated-mount/../../etc", and not the host's /etc.
        assert_eq!(
            lexical(&d, "/data/../../etc"),
            PathBuf::from("/r/id/rootfs/etc")
        );
        assert_eq!(
            lexical(&d, "/x/../data/./v//"),
            PathBuf::from("/r/id/propagated-mount/v")
        );
        assert_eq!(
            lexical(&d, "/data/v/../../../.."),
            PathBuf::from("/r/id/rootfs")
        );
        assert_eq!(
            scoped_path(&d, "data/v"),
            Err(ScopeError::NotAbsolute {
                path: "data/v".into()
            })
        );
    }

    #[test]
    fn symlinks_leaving_the_plugin_are_refused_and_inner_ones_resolved() {
        let tmp = tempfile::tempdir().unwrap();
        let d = PluginDirs {
            rootfs: tmp.path().join("rootfs"),
            propagated_mount: tmp.path().join("pm"),
            propagated_in_plugin: "/data".into(),
        };
        std::fs::create_dir_all(d.rootfs.join("srv")).unwrap();
        std::fs::create_dir_all(d.propagated_mount.join("v1")).unwrap();
        std::fs::create_dir_all(tmp.path().join("outside")).unwrap();
        // A plugin-made link to a host directory: a consumer would bind the host's directory.
        std::os::unix::fs::symlink(tmp.path().join("outside"), d.propagated_mount.join("evil"))
            .unwrap();
        std::os::unix::fs::symlink("/etc", d.rootfs.join("etc")).unwrap();
        // A relative link inside the plugin's own directory is fine.
        std::os::unix::fs::symlink("v1", d.propagated_mount.join("alias")).unwrap();
        let canon = |p: &Path| p.canonicalize().unwrap();
        assert_eq!(
            host_path(&d, "/data/v1").unwrap(),
            canon(&d.propagated_mount.join("v1"))
        );
        assert_eq!(
            host_path(&d, "/data/alias").unwrap(),
            canon(&d.propagated_mount.join("v1"))
        );
        // Not there yet: the missing tail is kept.
        assert_eq!(
            host_path(&d, "/data/new/sub").unwrap(),
            canon(&d.propagated_mount).join("new/sub")
        );
        assert_eq!(
            host_path(&d, "/srv/x").unwrap(),
            canon(&d.rootfs).join("srv/x")
        );
        for bad in ["/data/evil", "/data/evil/deeper", "/etc", "/etc/passwd"] {
            assert!(
                matches!(host_path(&d, bad), Err(ScopeError::Escapes { .. })),
                "{bad}: {:?}",
                host_path(&d, bad)
            );
        }
    }
}
