//! Volume records on disk: `<root>/volumes/<name>.json`, one file per volume, replaced with
//! plugind-sys's atomic write (temp file, fsync, rename, fsync dir) and removed with a directory
//! fsync, so after a crash each record is either the old or the new version.
//!
//! Loading never fails because of one bad record: unreadable or inconsistent files are moved to
//! `<root>/volumes/quarantine/<file>-<unix time>[.<n>]` and reported; temporaries of interrupted writes
//! are deleted; records from a newer plugind are left in place and reported.

use std::{
    fs,
    path::{Path, PathBuf},
};

use plugind_sys::{records, SysError};

use crate::{
    error::{Result, VolumeError},
    volume::{validate_name, VolumeRecord, RECORD_FORMAT_VERSION},
};

/// Subdirectory of the state root holding the records.
pub const VOLUMES_DIR: &str = "volumes";
/// Subdirectory of [`VOLUMES_DIR`] for records that could not be used.
pub const QUARANTINE_DIR: &str = "quarantine";
/// Volume state is root's business, like plugin state.
const DIR_MODE: u32 = 0o700;

/// What loading the records found.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Records loaded (in any state), by name order.
    pub records: Vec<VolumeRecord>,
    /// Files moved to quarantine: (original path, why).
    pub quarantined: Vec<(PathBuf, String)>,
    /// Temporary files of interrupted writes that were deleted.
    pub temp_files_removed: Vec<PathBuf>,
    /// Records written by a newer plugind, left untouched and not loaded.
    pub skipped: Vec<PathBuf>,
}

/// The record directory of one state root.
#[derive(Debug, Clone)]
pub(crate) struct RecordDir {
    dir: PathBuf,
}

fn persist_err(path: &Path) -> impl FnOnce(SysError) -> VolumeError + '_ {
    move |source| VolumeError::Persist {
        path: path.to_path_buf(),
        source,
    }
}

impl RecordDir {
    /// Creates `<root>/volumes` if needed.
    pub(crate) fn open(root: &Path) -> Result<RecordDir> {
        let dir = root.join(VOLUMES_DIR);
        plugind_sys::fs::create_dir_durable(&dir, DIR_MODE).map_err(persist_err(&dir))?;
        Ok(RecordDir { dir })
    }

    pub(crate) fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Writes `record` durably.
    pub(crate) fn save(&self, record: &VolumeRecord) -> Result<()> {
        let path = self.path_of(&record.name);
        let mut bytes = serde_json::to_vec_pretty(record)
            .expect("a volume record is strings and maps, which always serialise");
        bytes.push(b'\n');
        plugind_sys::fs::atomic_write(&path, &bytes).map_err(persist_err(&path))
    }

    /// Removes the record of `name` durably; a missing record is fine.
    pub(crate) fn delete(&self, name: &str) -> Result<()> {
        let path = self.path_of(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(VolumeError::Persist {
                    path,
                    source: SysError::Io {
                        op: "remove",
                        path: self.path_of(name),
                        source: e,
                    },
                })
            }
        }
        plugind_sys::fs::fsync_dir(&self.dir).map_err(persist_err(&self.dir))
    }

    /// Loads every record; see the module doc for what happens to bad files.
    pub(crate) fn load(&self) -> Result<LoadReport> {
        let mut report = LoadReport::default();
        let listing = records::list(&self.dir).map_err(persist_err(&self.dir))?;
        for path in listing.non_utf8 {
            // A name that is not UTF-8 cannot be a record plugind wrote.
            self.quarantine(&path, "file name is not UTF-8", &mut report);
        }
        let sweep = records::remove_files(listing.temps);
        for e in &sweep.failed {
            tracing::warn!(error = %e, "cannot remove temporary volume record");
        }
        report.temp_files_removed = sweep.removed;
        for (file, path) in listing.entries {
            if file == QUARANTINE_DIR {
                continue;
            }
            match self.read_one(&file, &path) {
                Ok(Some(record)) => report.records.push(record),
                Ok(None) => report.skipped.push(path),
                Err(reason) => self.quarantine(&path, &reason, &mut report),
            }
        }
        if !report.quarantined.is_empty() || !report.temp_files_removed.is_empty() {
            if let Err(e) = plugind_sys::fs::fsync_dir(&self.dir) {
                tracing::warn!(error = %e, "cannot fsync the volume record directory");
            }
        }
        Ok(report)
    }

    /// One record: `Ok(None)` for a newer format, `Err(reason)` for anything unusable.
    fn read_one(
        &self,
        file: &str,
        path: &Path,
    ) -> std::result::Result<Option<VolumeRecord>, String> {
        let stem = file
            .strip_suffix(".json")
            .ok_or_else(|| "not a volume record (no .json suffix)".to_owned())?;
        let meta = fs::symlink_metadata(path).map_err(|e| format!("stat: {e}"))?;
        if !meta.is_file() {
            return Err("not a regular file".to_owned());
        }
        let bytes = fs::read(path).map_err(|e| format!("read: {e}"))?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("parse: {e}"))?;
        let version = value
            .get("FormatVersion")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| "no FormatVersion".to_owned())?;
        if version > u64::from(RECORD_FORMAT_VERSION) {
            tracing::warn!(path = %path.display(), version, "volume record from a newer plugind, not loaded");
            return Ok(None);
        }
        let record: VolumeRecord =
            serde_json::from_value(value).map_err(|e| format!("parse: {e}"))?;
        if record.name != stem {
            return Err(format!("record names volume {:?}", record.name));
        }
        validate_name(&record.name).map_err(|e| e.to_string())?;
        if record.driver.is_empty() {
            return Err("record has no driver".to_owned());
        }
        Ok(Some(record))
    }

    fn quarantine(&self, path: &Path, reason: &str, report: &mut LoadReport) {
        let quarantine = records::Quarantine::new(self.dir.join(QUARANTINE_DIR), DIR_MODE);
        match quarantine.move_in(path) {
            Ok(target) => {
                tracing::warn!(path = %path.display(), to = %target.display(), reason, "volume record quarantined");
                report
                    .quarantined
                    .push((path.to_path_buf(), reason.to_owned()));
            }
            Err(e) => {
                // Left in place: it is not loaded either way, and the next start tries again.
                tracing::error!(path = %path.display(), reason, error = %e, "cannot quarantine volume record");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::volume::RecordState;

    fn record(name: &str) -> VolumeRecord {
        VolumeRecord {
            format_version: RECORD_FORMAT_VERSION,
            name: name.into(),
            driver: "vol:latest".into(),
            driver_id: None,
            options: BTreeMap::new(),
            labels: BTreeMap::from([("a".into(), "b".into())]),
            created_at: "2026-11-26T13:19:00Z".into(),
            scope: "local".into(),
            state: RecordState::Ready,
            mounts: BTreeSet::from(["c1".into()]),
        }
    }

    #[test]
    fn save_load_delete_round_trip() {
        let root = tempfile::tempdir().unwrap();
        let dir = RecordDir::open(root.path()).unwrap();
        dir.save(&record("v1")).unwrap();
        dir.save(&record("v2")).unwrap();
        dir.delete("v2").unwrap();
        dir.delete("never-existed").unwrap();
        let report = dir.load().unwrap();
        assert_eq!(report.records, vec![record("v1")]);
        assert!(report.quarantined.is_empty());
    }

    #[test]
    fn bad_records_are_quarantined_and_temps_removed() {
        let root = tempfile::tempdir().unwrap();
        let dir = RecordDir::open(root.path()).unwrap();
        dir.save(&record("good")).unwrap();
        let vdir = root.path().join(VOLUMES_DIR);
        fs::write(vdir.join("torn.json"), b"{\"FormatVersion\":1,\"Na").unwrap();
        let mut other = record("other");
        other.name = "mismatch".into();
        fs::write(vdir.join("other.json"), serde_json::to_vec(&other).unwrap()).unwrap();
        fs::write(vdir.join("stray.txt"), b"x").unwrap();
        fs::write(vdir.join(".good.json.tmp-1-2"), b"partial").unwrap();
        let mut newer = serde_json::to_value(record("future")).unwrap();
        newer["FormatVersion"] = 99.into();
        fs::write(vdir.join("future.json"), newer.to_string()).unwrap();

        let report = dir.load().unwrap();
        assert_eq!(report.records, vec![record("good")]);
        let mut q: Vec<_> = report
            .quarantined
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        q.sort();
        assert_eq!(q, vec!["other.json", "stray.txt", "torn.json"]);
        assert_eq!(report.temp_files_removed.len(), 1);
        assert_eq!(report.skipped, vec![vdir.join("future.json")]);
        // Quarantined files are kept for inspection, out of the way of the next load.
        assert_eq!(fs::read_dir(vdir.join(QUARANTINE_DIR)).unwrap().count(), 3);
        assert!(vdir.join("future.json").exists());
        let again = dir.load().unwrap();
        assert_eq!(again.records.len(), 1);
        assert!(again.quarantined.is_empty());
    }

    #[test]
    fn a_second_quarantine_in_the_same_second_keeps_the_first() {
        // Both bad copies must survive for inspection; the quarantine used to be named by the
        // second alone, so the second move replaced the first.
        let root = tempfile::tempdir().unwrap();
        let dir = RecordDir::open(root.path()).unwrap();
        let vdir = root.path().join(VOLUMES_DIR);
        fs::write(vdir.join("torn.json"), b"first").unwrap();
        assert_eq!(dir.load().unwrap().quarantined.len(), 1);
        fs::write(vdir.join("torn.json"), b"second").unwrap();
        assert_eq!(dir.load().unwrap().quarantined.len(), 1);
        let mut kept: Vec<Vec<u8>> = fs::read_dir(vdir.join(QUARANTINE_DIR))
            .unwrap()
            .map(|e| fs::read(e.unwrap().path()).unwrap())
            .collect();
        kept.sort();
        assert_eq!(kept, vec![b"first".to_vec(), b"second".to_vec()]);
    }
}
