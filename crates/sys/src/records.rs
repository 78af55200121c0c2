//! Directories of records: the loading chores every record directory shares.
//!
//! The plugin store (`<root>/<id>/config.json`) and the volume records
//! (`<root>/volumes/<name>.json`) are both directories of records written with [`crate::fs`]'s
//! atomic replace. At start both do the same things before parsing anything: list the entries in
//! a stable order, delete the temporaries of interrupted writes, and move what cannot be used to
//! a `quarantine/` directory (kept for inspection, bounded in size and age) instead of failing or
//! deleting it. Those chores live here, once; what counts as a usable record stays with each
//! caller.

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{
    fs::{create_dir_durable, durable_rename, is_temp_name},
    Result, SysError,
};

/// The entries of a record directory, read once.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Entries whose names are UTF-8, sorted by name, temporaries left out.
    pub entries: Vec<(String, PathBuf)>,
    /// Entries whose names are not UTF-8: nothing plugind writes, so never a record.
    pub non_utf8: Vec<PathBuf>,
    /// Temporary files of interrupted atomic writes (see [`crate::fs::is_temp_name`]).
    pub temps: Vec<PathBuf>,
}

/// Lists `dir`: sorted UTF-8 names, the others apart, temporaries apart.
/// An entry that cannot be read while listing is skipped (the next start sees it again).
pub fn list(dir: &Path) -> Result<Listing> {
    let mut listing = Listing::default();
    let entries = fs::read_dir(dir).map_err(|e| SysError::io("read directory", dir, e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_name().into_string() {
            Ok(name) if is_temp_name(&name) => listing.temps.push(path),
            Ok(name) => listing.entries.push((name, path)),
            Err(_) => listing.non_utf8.push(path),
        }
    }
    listing.entries.sort();
    listing.temps.sort();
    listing.non_utf8.sort();
    Ok(listing)
}

/// What [`remove_temp_files`] did.
#[derive(Debug, Default)]
pub struct TempSweep {
    /// Temporaries deleted.
    pub removed: Vec<PathBuf>,
    /// Temporaries that could not be deleted (left for the next start).
    pub failed: Vec<SysError>,
}

/// Deletes the temporaries of interrupted atomic writes directly inside `dir`.
///
/// The caller must own the directory (hold the state root's lock): a temporary is only a
/// leftover when no other writer can be using it. The directory is not fsynced: a deletion
/// lost in a crash is redone at the next start.
pub fn remove_temp_files(dir: &Path) -> Result<TempSweep> {
    let temps = list(dir)?.temps;
    Ok(remove_files(temps))
}

/// Deletes the given temporaries (from [`Listing::temps`]).
pub fn remove_files(temps: Vec<PathBuf>) -> TempSweep {
    let mut sweep = TempSweep::default();
    for path in temps {
        match fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed leftover temporary file");
                sweep.removed.push(path);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => sweep.failed.push(SysError::io("remove", path, e)),
        }
    }
    sweep
}

/// A quarantine directory: where unusable records are moved, named
/// `<original name>-<unix seconds>[.<n>]`.
#[derive(Debug, Clone)]
pub struct Quarantine {
    dir: PathBuf,
    mode: u32,
}

impl Quarantine {
    /// The quarantine at `dir`, created with `mode` on first use.
    pub fn new(dir: impl Into<PathBuf>, mode: u32) -> Quarantine {
        Quarantine {
            dir: dir.into(),
            mode,
        }
    }

    /// The quarantine directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves `path` (a file or a directory) into the quarantine, durably, and returns where it
    /// went. Never overwrites an earlier entry: a second entry of the same name in the same
    /// second gets a `.<n>` suffix.
    pub fn move_in(&self, path: &Path) -> Result<PathBuf> {
        let name = path
            .file_name()
            .ok_or_else(|| SysError::InvalidPath {
                path: path.to_path_buf(),
                reason: "no file name to quarantine",
            })?
            .to_string_lossy()
            .into_owned();
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        create_dir_durable(&self.dir, self.mode)?;
        let mut target = self.dir.join(format!("{name}-{secs}"));
        let mut n = 1;
        while fs::symlink_metadata(&target).is_ok() {
            target = self.dir.join(format!("{name}-{secs}.{n}"));
            n += 1;
        }
        durable_rename(path, &target)?;
        Ok(target)
    }

    /// The entries with the time they were quarantined (from the `-<unix seconds>` suffix of
    /// their name, since a move keeps the entry's own mtime; the mtime when there is none),
    /// oldest first. A missing quarantine has no entries.
    pub fn entries(&self) -> Vec<(SystemTime, PathBuf)> {
        let mut entries: Vec<(SystemTime, PathBuf)> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let at = match quarantine_stamp(&name) {
                    Some(secs) => UNIX_EPOCH + Duration::from_secs(secs),
                    None => e
                        .metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(UNIX_EPOCH),
                };
                (at, e.path())
            })
            .collect();
        entries.sort();
        entries
    }

    /// Keeps the quarantine bounded: the entries older than `max_age`, then the oldest until at
    /// most `max_entries` are left, are handed to `remove` (the caller knows how to delete them
    /// safely, e.g. without reaching into mounts). Returns what `remove` deleted and its errors.
    pub fn prune<E>(
        &self,
        max_entries: usize,
        max_age: Duration,
        mut remove: impl FnMut(&Path) -> std::result::Result<(), E>,
    ) -> (Vec<PathBuf>, Vec<E>) {
        let now = SystemTime::now();
        let entries = self.entries();
        let excess = entries.len().saturating_sub(max_entries);
        let (mut pruned, mut failed) = (Vec::new(), Vec::new());
        for (n, (at, path)) in entries.into_iter().enumerate() {
            let too_old = now.duration_since(at).unwrap_or_default() > max_age;
            if n >= excess && !too_old {
                continue;
            }
            match remove(&path) {
                Ok(()) => pruned.push(path),
                Err(e) => failed.push(e),
            }
        }
        (pruned, failed)
    }
}

/// The `<unix seconds>` of a quarantine entry named `<name>-<secs>[.<n>]`.
fn quarantine_stamp(name: &str) -> Option<u64> {
    let (_, tail) = name.rsplit_once('-')?;
    let secs = tail.split_once('.').map_or(tail, |(s, _)| s);
    secs.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    #[test]
    fn list_sorts_names_and_sets_temporaries_and_non_utf8_apart() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("b.json"), b"{}").unwrap();
        fs::write(dir.path().join("a.json"), b"{}").unwrap();
        fs::create_dir(dir.path().join("c")).unwrap();
        fs::write(dir.path().join(".a.json.tmp-1-2"), b"x").unwrap();
        let odd = dir.path().join(std::ffi::OsStr::from_bytes(b"\xff.json"));
        fs::write(&odd, b"x").unwrap();

        let listing = list(dir.path()).unwrap();
        let names: Vec<&str> = listing.entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a.json", "b.json", "c"]);
        assert_eq!(listing.temps, vec![dir.path().join(".a.json.tmp-1-2")]);
        assert_eq!(listing.non_utf8, vec![odd]);
    }

    #[test]
    fn list_of_a_missing_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = list(&missing).unwrap_err();
        assert!(err.is_not_found());
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn remove_temp_files_deletes_only_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("config.json"), b"{}").unwrap();
        fs::write(dir.path().join(".config.json.tmp-7-1"), b"half").unwrap();
        // A dot file that is not one of ours stays.
        fs::write(dir.path().join(".hidden"), b"keep").unwrap();

        let sweep = remove_temp_files(dir.path()).unwrap();
        assert_eq!(sweep.removed, vec![dir.path().join(".config.json.tmp-7-1")]);
        assert!(sweep.failed.is_empty());
        assert!(dir.path().join("config.json").exists());
        assert!(dir.path().join(".hidden").exists());
        assert!(!dir.path().join(".config.json.tmp-7-1").exists());
    }

    #[test]
    fn quarantine_moves_files_and_directories_without_overwriting() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::new(dir.path().join("quarantine"), 0o700);
        assert!(q.entries().is_empty(), "a missing quarantine is empty");

        fs::write(dir.path().join("bad.json"), b"one").unwrap();
        let first = q.move_in(&dir.path().join("bad.json")).unwrap();
        fs::write(dir.path().join("bad.json"), b"two").unwrap();
        let second = q.move_in(&dir.path().join("bad.json")).unwrap();
        fs::create_dir(dir.path().join("plugin")).unwrap();
        fs::write(dir.path().join("plugin/config.json"), b"{").unwrap();
        let third = q.move_in(&dir.path().join("plugin")).unwrap();

        assert_ne!(first, second);
        assert_eq!(fs::read(&first).unwrap(), b"one");
        assert_eq!(fs::read(&second).unwrap(), b"two");
        assert_eq!(fs::read(third.join("config.json")).unwrap(), b"{");
        assert!(!dir.path().join("bad.json").exists());
        assert_eq!(q.entries().len(), 3);
        let mode = fs::metadata(q.dir()).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
    }

    #[test]
    fn quarantine_of_a_missing_path_fails_and_creates_no_entry() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::new(dir.path().join("quarantine"), 0o700);
        let err = q.move_in(&dir.path().join("gone.json")).unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert!(q.entries().is_empty());
    }

    #[test]
    fn entries_are_dated_by_their_name_and_pruned_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let qdir = dir.path().join("quarantine");
        fs::create_dir(&qdir).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // Names carry the time; their mtimes (all "now") must not be what counts.
        let ancient = format!("a-{}", now - 90 * 24 * 3600);
        let old = format!("b-{}", now - 3600);
        let older_same_second = format!("c-{}", now - 60);
        let newer_same_second = format!("c-{}.1", now - 60);
        let fresh = format!("d-{now}");
        for name in [
            &fresh,
            &old,
            &newer_same_second,
            &ancient,
            &older_same_second,
        ] {
            fs::write(qdir.join(name), b"x").unwrap();
        }
        let q = Quarantine::new(&qdir, 0o700);
        let order: Vec<PathBuf> = q.entries().into_iter().map(|(_, p)| p).collect();
        assert_eq!(
            order,
            [
                &ancient,
                &old,
                &older_same_second,
                &newer_same_second,
                &fresh
            ]
            .map(|n| qdir.join(n))
            .to_vec()
        );

        // At most 3 entries, none older than 30 days: the ancient one goes for its age, then
        // the oldest one for the count.
        let (pruned, failed) = q.prune(3, Duration::from_secs(30 * 24 * 3600), |p| {
            fs::remove_file(p)
        });
        assert!(failed.is_empty());
        assert_eq!(pruned, vec![qdir.join(&ancient), qdir.join(&old)]);
        assert_eq!(q.entries().len(), 3);

        // A remover that fails reports its errors and deletes nothing.
        let (pruned, failed) = q.prune(0, Duration::MAX, |_| Err("no"));
        assert!(pruned.is_empty());
        assert_eq!(failed, vec!["no"; 3]);
        assert_eq!(q.entries().len(), 3);
    }
}
