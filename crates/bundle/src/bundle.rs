//! [`Bundle`]: create, load and delete `<bundles-dir>/<id>/`.
//!
//! Nothing here fsyncs. Bundles live under the exec root (a tmpfs in a normal install, where
//! fsync costs nothing anyway, but the exec root may be any directory) and need no durability:
//! a task does not outlive a host crash, and every start deletes and rebuilds its bundle. Files
//! are still replaced by rename and deletes still go through the hidden `.<id>-deleting` name,
//! so a plugind killed at any point leaves either a whole bundle or a recognisable leftover.

use std::{
    fs, io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use oci_spec::runtime::Spec;
use plugind_types::PluginId;

use crate::{mounts, BundleError, Result};

/// Name of the runtime spec inside a bundle.
pub const CONFIG_FILE: &str = "config.json";
/// Mode of the directory holding the bundles: others may traverse, not list.
pub const BUNDLE_PARENT_MODE: u32 = 0o711;
/// Mode of a bundle directory (0710 with the group set when the spec maps container root).
pub const BUNDLE_DIR_MODE: u32 = 0o700;

/// An OCI bundle directory whose name is the task id (the shim's `delete` rebuilds the bundle
/// path as `dirname(cwd)/<id>`, so the two must agree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    id: PluginId,
    path: PathBuf,
}

/// The host group that container root maps to, if the spec maps it (user namespaces).
fn root_group(spec: &Spec) -> Option<u32> {
    spec.linux()
        .as_ref()?
        .gid_mappings()
        .as_ref()?
        .iter()
        .find(|m| m.container_id() == 0)
        .map(|m| m.host_id())
}

impl Bundle {
    /// The bundle directory for `id` under `bundles_dir`.
    pub fn path_for(bundles_dir: &Path, id: &PluginId) -> PathBuf {
        bundles_dir.join(id.as_str())
    }

    fn hidden_path_for(bundles_dir: &Path, id: &PluginId) -> PathBuf {
        bundles_dir.join(format!(".{id}-deleting"))
    }

    /// Creates `<bundles_dir>/<id>/config.json` from `spec`.
    ///
    /// `bundles_dir` is created 0711 if missing; the bundle is 0700, or 0710 and owned by the
    /// host group of container root when the spec has a gid mapping for container id 0 (so the
    /// remapped root can reach its bundle, as containerd does). `spec.root.path` must be
    /// absolute: the bundle holds no rootfs. On any failure the bundle directory is removed.
    pub fn create(bundles_dir: &Path, id: &PluginId, spec: &Spec) -> Result<Bundle> {
        let path = Self::path_for(bundles_dir, id);
        let root_ok = spec.root().as_ref().is_some_and(|r| r.path().is_absolute());
        if !root_ok {
            return Err(BundleError::InvalidSpec {
                path,
                reason: "root.path must be absolute",
            });
        }
        create_parent(bundles_dir)?;
        match fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(BundleError::AlreadyExists { path });
            }
            Err(e) => return Err(BundleError::io("create directory", path, e)),
        }
        let bundle = Bundle {
            id: id.clone(),
            path,
        };
        match bundle.fill(spec) {
            Ok(()) => {
                tracing::debug!(plugin = %id, path = %bundle.path.display(), "bundle created");
                Ok(bundle)
            }
            Err(e) => match fs::remove_dir_all(&bundle.path) {
                Ok(()) => Err(e),
                Err(cleanup) => Err(BundleError::Rollback {
                    path: bundle.path,
                    source: Box::new(e),
                    cleanup,
                }),
            },
        }
    }

    fn fill(&self, spec: &Spec) -> Result<()> {
        let mode = match root_group(spec) {
            Some(gid) => {
                std::os::unix::fs::chown(&self.path, None, Some(gid))
                    .map_err(|e| BundleError::io("chown", &self.path, e))?;
                0o710
            }
            None => BUNDLE_DIR_MODE,
        };
        fs::set_permissions(&self.path, fs::Permissions::from_mode(mode))
            .map_err(|e| BundleError::io("chmod", &self.path, e))?;
        let config = self.config_path();
        let json = serde_json::to_vec_pretty(spec).map_err(|source| BundleError::Json {
            path: config.clone(),
            source,
        })?;
        write_replacing(&config, &json, 0o600)
    }

    /// Opens an existing bundle; `NotFound` when the directory or its `config.json` is missing.
    pub fn load(bundles_dir: &Path, id: &PluginId) -> Result<Bundle> {
        let path = Self::path_for(bundles_dir, id);
        let bundle = Bundle {
            id: id.clone(),
            path,
        };
        match fs::symlink_metadata(bundle.config_path()) {
            Ok(md) if md.is_file() => Ok(bundle),
            Ok(_) => Err(BundleError::NotFound {
                path: bundle.config_path(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BundleError::NotFound {
                path: bundle.config_path(),
            }),
            Err(e) => Err(BundleError::io("stat", bundle.config_path(), e)),
        }
    }

    /// The task id (the directory's name).
    pub fn id(&self) -> &PluginId {
        &self.id
    }

    /// The bundle directory (the shim's cwd).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<bundle>/config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.path.join(CONFIG_FILE)
    }

    /// Reads the bundle's spec back.
    pub fn spec(&self) -> Result<Spec> {
        let config = self.config_path();
        let bytes = fs::read(&config).map_err(|e| BundleError::io("read", &config, e))?;
        serde_json::from_slice(&bytes).map_err(|source| BundleError::Json {
            path: config,
            source,
        })
    }

    /// Deletes the bundle of `id`: everything mounted below it is unmounted first (a mount
    /// that stays makes the delete fail, naming it, with the bundle untouched); then the
    /// directory is renamed to the hidden `.<id>-deleting` and removed, so a crash never
    /// leaves a half-deleted bundle under its real name. A leftover hidden directory of an
    /// earlier attempt is removed too. A missing bundle is not an error.
    pub fn delete(bundles_dir: &Path, id: &PluginId) -> Result<()> {
        let path = Self::path_for(bundles_dir, id);
        let hidden = Self::hidden_path_for(bundles_dir, id);
        remove_unmounted(&hidden)?;
        match fs::symlink_metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(BundleError::io("stat", path, e)),
        }
        mounts::unmount_under(&path)?;
        // No fsync: see the module doc (bundles need no durability).
        fs::rename(&path, &hidden).map_err(|e| BundleError::io("rename", &path, e))?;
        remove_unmounted(&hidden)?;
        tracing::debug!(plugin = %id, path = %path.display(), "bundle deleted");
        Ok(())
    }

    /// Removes leftovers of interrupted deletes (`.<id>-deleting`) in `bundles_dir`.
    pub fn sweep_deleting(bundles_dir: &Path) -> Result<()> {
        let entries = match fs::read_dir(bundles_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(BundleError::io("read directory", bundles_dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| BundleError::io("read directory", bundles_dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with("-deleting") {
                remove_unmounted(&entry.path())?;
            }
        }
        Ok(())
    }
}

/// Creates the bundles directory (and its parents) if missing and gives it
/// [`BUNDLE_PARENT_MODE`]; no fsync (see the module doc).
fn create_parent(bundles_dir: &Path) -> Result<()> {
    fs::create_dir_all(bundles_dir)
        .map_err(|e| BundleError::io("create directory", bundles_dir, e))?;
    fs::set_permissions(bundles_dir, fs::Permissions::from_mode(BUNDLE_PARENT_MODE))
        .map_err(|e| BundleError::io("chmod", bundles_dir, e))
}

/// Writes `contents` to a temporary in `path`'s directory and renames it over `path`: a
/// plugind killed mid-write never leaves a truncated `config.json` under its real name. No
/// fsync: see the module doc.
fn write_replacing(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| BundleError::io("create", &tmp, e))?;
        f.write_all(contents)
            .map_err(|e| BundleError::io("write", &tmp, e))?;
        // The mode given to open is filtered by the umask; the spec must be exactly `mode`.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| BundleError::io("chmod", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| BundleError::io("rename", path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes `dir` recursively after making sure nothing is mounted below it (so the removal
/// cannot descend into a mounted filesystem); a missing `dir` is fine.
fn remove_unmounted(dir: &Path) -> Result<()> {
    if fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    mounts::unmount_under(dir)?;
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BundleError::io("remove", dir, e)),
    }
}
