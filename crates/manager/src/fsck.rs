//! `plugind fsck`: checks a state root offline and, asked to, repairs what can be rebuilt from
//! the blobs.
//!
//! What is checked ([`Depth::Full`] unless said otherwise):
//! - every plugin record parses, names its own directory, and its blobs (manifest, config,
//!   layers) exist ([`Depth::Cheap`]) and hash to their digests;
//! - each rootfs matches its layer: every entry of the layer exists with its type, size and
//!   symlink target; file contents are compared for a sample of the files (small files, and
//!   one in [`SAMPLE_ONE_IN`] of the others, chosen by path), or all with `full_rootfs`; the
//!   config's `rootfs.diff_ids` must name the layer (its blob digest, as Docker writes it, or
//!   its uncompressed digest);
//! - leftovers are listed with their sizes: plugin directories without a record, interrupted
//!   removals, temporary files, partial ingests, unreferenced blobs, upgrade leftovers,
//!   bundles no record claims, and quarantined items (records, blobs, volume records).
//!
//! Repairs (`repair`): a damaged or missing rootfs is unpacked again from its verified layer
//! (not while its plugin runs); a blob whose content does not match its digest is moved to the
//! blob quarantine; orphans (directories without a record, interrupted removals, temporary
//! files, ingests, unreferenced blobs) are deleted. A record that cannot be read is never
//! deleted: it cannot be rebuilt from the blobs, and the report says so. Quarantined items are
//! kept for inspection (plugind bounds them). Nothing is written without `repair`.

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    io::{self, Read},
    path::{Path, PathBuf},
};

use plugind_store::PluginRecord;
use plugind_types::{Digest, PluginId};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

mod rootfs;

/// In sampled mode, files above [`SAMPLE_SMALL_BYTES`] have their content compared when the
/// hash of their path falls in one of this many buckets.
pub const SAMPLE_ONE_IN: u64 = 8;
/// In sampled mode, files up to this size always have their content compared.
pub const SAMPLE_SMALL_BYTES: u64 = 64 * 1024;

/// How much to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Depth {
    /// What costs a directory listing and a stat per object (run at every daemon start):
    /// records parse, referenced blobs exist, leftovers.
    Cheap,
    /// Also hash every referenced blob and compare each rootfs with its layer.
    Full,
}

/// What [`run`] does.
#[derive(Debug, Clone)]
pub struct FsckOptions {
    /// The state root (`--root`).
    pub root: PathBuf,
    /// The runtime root (`--exec-root`), for bundles; `None` skips them.
    pub exec_root: Option<PathBuf>,
    /// How much to check.
    pub depth: Depth,
    /// Compare the contents of every rootfs file, not a sample.
    pub full_rootfs: bool,
    /// Fix what can be fixed.
    pub repair: bool,
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something is wrong or left over.
    Problem,
    /// Worth knowing, nothing to fix (quarantined items kept for inspection, a root in use).
    Notice,
}

/// The outcome of a repair attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "outcome", content = "detail")]
pub enum Repair {
    /// Fixed, and how.
    Repaired(String),
    /// Left as it is, and why.
    NotRepaired(String),
}

/// One thing fsck found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Problem or notice.
    pub severity: Severity,
    /// A stable code: `record-unreadable`, `blob-missing`, `rootfs-differs`, `temp-file`, ...
    pub kind: &'static str,
    /// The file or directory concerned.
    pub path: PathBuf,
    /// Its size in bytes (a directory: everything under it), when it exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// What is wrong, in words.
    pub detail: String,
    /// What `--repair` did, when it was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<Repair>,
}

impl Finding {
    /// A problem still there after the run: not repaired (or not asked to).
    pub fn remains(&self) -> bool {
        self.severity == Severity::Problem && !matches!(self.repair, Some(Repair::Repaired(_)))
    }
}

/// What was looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Checked {
    /// Plugin records read.
    pub records: usize,
    /// Blobs whose existence (and, at full depth, content) was checked.
    pub blobs: usize,
    /// Rootfs entries compared with their layers.
    pub rootfs_entries: usize,
    /// Rootfs files whose content was compared.
    pub rootfs_contents: usize,
}

/// The result of [`run`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FsckReport {
    /// Everything found, in the order found.
    pub findings: Vec<Finding>,
    /// What was looked at.
    pub checked: Checked,
}

impl FsckReport {
    /// Problems not repaired.
    pub fn remaining(&self) -> usize {
        self.findings.iter().filter(|f| f.remains()).count()
    }

    /// Problems repaired.
    pub fn repaired(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| matches!(f.repair, Some(Repair::Repaired(_))))
            .count()
    }
}

/// Why fsck could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum FsckError {
    /// `--repair` while a plugind holds the root.
    #[error("{root} is in use by plugind (pid {pid}); stop it before `plugind fsck --repair` (a report without --repair may run while it serves)")]
    RootInUse {
        /// The state root.
        root: PathBuf,
        /// The pid in the lock file, as written by the holder.
        pid: String,
    },
    /// The root is not a directory fsck can read.
    #[error("cannot read the state root {root}: {source}")]
    Root {
        /// The state root.
        root: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Taking the lock failed for another reason.
    #[error(transparent)]
    Sys(#[from] plugind_sys::SysError),
}

/// Runs the checks (and repairs) on `options.root`. With `repair`, takes the root's lock for
/// the whole run and refuses when a plugind holds it; without, reports even while a plugind
/// serves (with a notice: what it does meanwhile may show as leftovers). Blocking.
pub fn run(options: &FsckOptions) -> Result<FsckReport, FsckError> {
    let root = &options.root;
    fs::read_dir(root).map_err(|source| FsckError::Root {
        root: root.clone(),
        source,
    })?;
    let mut report = FsckReport::default();
    let lock_path = root.join("plugind.lock");
    let _lock = if options.repair {
        match plugind_sys::lock::LockFile::try_exclusive(&lock_path) {
            Ok(lock) => Some(lock),
            Err(plugind_sys::SysError::Locked { .. }) => {
                return Err(FsckError::RootInUse {
                    root: root.clone(),
                    pid: lock_pid(&lock_path),
                })
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    if !options.repair && lock_path.exists() {
        if let Err(plugind_sys::SysError::Locked { .. }) =
            plugind_sys::lock::LockFile::try_exclusive(&lock_path)
        {
            report.findings.push(Finding {
                severity: Severity::Notice,
                kind: "root-in-use",
                path: root.clone(),
                size: None,
                detail: format!(
                    "plugind (pid {}) is serving this root: work in progress may show as leftovers",
                    lock_pid(&lock_path)
                ),
                repair: None,
            });
        }
    }
    let mut fsck = Fsck {
        options,
        report,
        storage: root.join("storage"),
    };
    fsck.run();
    Ok(fsck.report)
}

fn lock_pid(lock_path: &Path) -> String {
    fs::read_to_string(lock_path)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Where a repair sets a damaged rootfs aside (inside the plugin directory) until the new one
/// is in place.
const DAMAGED_ROOTFS: &str = "rootfs-fsck-damaged";

/// Files or directories directly in the root that belong to plugind and are not plugins.
const ROOT_ENTRIES: [&str; 8] = [
    "plugind.lock",
    "storage",
    "tmp",
    "quarantine",
    "volumes",
    "events",
    "engine-id",
    "engine_id",
];

struct Fsck<'a> {
    options: &'a FsckOptions,
    report: FsckReport,
    storage: PathBuf,
}

impl Fsck<'_> {
    fn run(&mut self) {
        let root = self.options.root.clone();
        let mut records: BTreeMap<PluginId, PluginRecord> = BTreeMap::new();
        let mut unreadable = 0usize;
        for (name, path) in sorted_entries(&root) {
            if let Some(id) = name
                .strip_suffix("-removing")
                .filter(|s| PluginId::parse(s).is_ok())
            {
                self.leftover(
                    "interrupted-removal",
                    &path,
                    format!("removal of plugin {id} cut by a crash (plugind finishes it at start)"),
                );
                continue;
            }
            if plugind_sys::fs::is_temp_name(&name) {
                self.leftover(
                    "temp-file",
                    &path,
                    "temporary file of an interrupted write".to_owned(),
                );
                continue;
            }
            let Ok(id) = PluginId::parse(&name) else {
                if !ROOT_ENTRIES.contains(&name.as_str()) && !name.starts_with("engine") {
                    self.note(
                        "unknown-entry",
                        &path,
                        "not plugind's; left alone".to_owned(),
                    );
                }
                continue;
            };
            if !path.is_dir() {
                self.note(
                    "unknown-entry",
                    &path,
                    "a file named like a plugin; left alone".to_owned(),
                );
                continue;
            }
            match self.read_record(&id, &path) {
                Some(Ok(record)) => {
                    self.report.checked.records += 1;
                    records.insert(id, record);
                }
                Some(Err(())) => unreadable += 1,
                None => {}
            }
        }
        let mut referenced = HashSet::new();
        for (id, record) in &records {
            self.check_plugin(id, record, &mut referenced);
        }
        self.check_storage(&referenced, unreadable);
        self.check_dir_leftovers(
            &root.join("tmp"),
            "temp-file",
            "left by an interrupted create or install",
        );
        self.check_quarantine(&root.join("quarantine"), "quarantined-record");
        self.check_quarantine(&self.storage.join("quarantine"), "quarantined-blob");
        self.check_quarantine(&root.join("volumes/quarantine"), "quarantined-volume");
        for (name, path) in sorted_entries(&root.join("volumes")) {
            if plugind_sys::fs::is_temp_name(&name) {
                self.leftover(
                    "temp-file",
                    &path,
                    "temporary file of an interrupted write".to_owned(),
                );
            }
        }
        if let Some(exec_root) = &self.options.exec_root {
            self.check_bundles(&exec_root.join("bundles"), &records, unreadable);
        }
    }

    /// Reads `<dir>/config.json`: `None` when the directory has no record (reported as an
    /// orphan), `Some(Err)` when it cannot be used (reported).
    fn read_record(&mut self, id: &PluginId, dir: &Path) -> Option<Result<PluginRecord, ()>> {
        for (name, path) in sorted_entries(dir) {
            if plugind_sys::fs::is_temp_name(&name) {
                self.leftover(
                    "temp-file",
                    &path,
                    "temporary file of an interrupted write".to_owned(),
                );
            } else if name == DAMAGED_ROOTFS {
                self.leftover(
                    "temp-file",
                    &path,
                    "damaged rootfs set aside by an interrupted fsck --repair".to_owned(),
                );
            } else if name.starts_with("rootfs-previous-") {
                self.push(Finding {
                    severity: Severity::Problem,
                    kind: "upgrade-leftover",
                    size: Some(tree_size(&path)),
                    path,
                    detail: "previous rootfs of an upgrade cut by a crash".to_owned(),
                    repair: self.options.repair.then(|| {
                        Repair::NotRepaired(
                            "plugind finishes or rolls back the upgrade at start".to_owned(),
                        )
                    }),
                });
            }
        }
        let path = dir.join("config.json");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.leftover(
                    "orphan-plugin-dir",
                    dir,
                    "plugin directory without a record (a create cut by a crash); its rootfs is unused"
                        .to_owned(),
                );
                return None;
            }
            Err(e) => {
                self.unrebuildable(&path, format!("cannot read the record: {e}"));
                return Some(Err(()));
            }
        };
        let record = match PluginRecord::from_json(&bytes) {
            Ok((record, _)) => record,
            Err(e) => {
                self.unrebuildable(&path, format!("the record does not parse: {e}"));
                return Some(Err(()));
            }
        };
        if record.id() != id {
            self.unrebuildable(
                &path,
                format!(
                    "the record names plugin {}, not its directory's id",
                    record.id()
                ),
            );
            return Some(Err(()));
        }
        Some(Ok(record))
    }

    fn unrebuildable(&mut self, path: &Path, detail: String) {
        self.push(Finding {
            severity: Severity::Problem,
            kind: "record-unreadable",
            path: path.to_path_buf(),
            size: fs::metadata(path).ok().map(|m| m.len()),
            detail,
            repair: self.options.repair.then(|| {
                Repair::NotRepaired(
                    "a record cannot be rebuilt from the blobs; kept (plugind moves it to quarantine at start; remove the plugin directory by hand if it is not wanted)"
                        .to_owned(),
                )
            }),
        });
    }

    fn check_plugin(
        &mut self,
        id: &PluginId,
        record: &PluginRecord,
        referenced: &mut HashSet<Digest>,
    ) {
        let blobs = &record.state.blobs;
        let mut good_layer = None;
        let all: Vec<(&str, &Digest)> = blobs
            .manifest
            .iter()
            .map(|d| ("manifest", d))
            .chain(blobs.config.iter().map(|d| ("config", d)))
            .chain(blobs.layers.iter().map(|d| ("layer", d)))
            .collect();
        for (role, digest) in all {
            referenced.insert(digest.clone());
            self.report.checked.blobs += 1;
            if self.check_blob(id, role, digest) && role == "layer" && good_layer.is_none() {
                good_layer = Some(digest.clone());
            }
        }
        let rootfs = self.options.root.join(id.as_str()).join("rootfs");
        if !rootfs.is_dir() {
            let finding = Finding {
                severity: Severity::Problem,
                kind: "rootfs-missing",
                path: rootfs.clone(),
                size: None,
                detail: format!("plugin {} has no rootfs", record.name()),
                repair: None,
            };
            self.rootfs_damaged(finding, id, record, good_layer.as_ref());
            return;
        }
        if self.options.depth == Depth::Cheap {
            return;
        }
        let Some(layer) = good_layer else {
            if blobs.layers.is_empty() {
                self.note(
                    "rootfs-unchecked",
                    &rootfs,
                    "the record names no layer blob (created by an older plugind): nothing to compare with".to_owned(),
                );
            }
            return;
        };
        let diff_id = record
            .plugin
            .config
            .rootfs
            .as_ref()
            .and_then(|r| r.diff_ids.first().cloned());
        match self.compare_rootfs(&rootfs, &layer, diff_id.as_ref()) {
            Ok(differences) if differences.is_empty() => {}
            Ok(differences) => {
                let shown: Vec<&str> = differences.iter().take(5).map(String::as_str).collect();
                let more = differences.len().saturating_sub(shown.len());
                let finding = Finding {
                    severity: Severity::Problem,
                    kind: "rootfs-differs",
                    size: Some(tree_size(&rootfs)),
                    path: rootfs.clone(),
                    detail: format!(
                        "plugin {}: {}{}",
                        record.name(),
                        shown.join("; "),
                        if more > 0 {
                            format!("; and {more} more")
                        } else {
                            String::new()
                        }
                    ),
                    repair: None,
                };
                self.rootfs_damaged(finding, id, record, Some(&layer));
            }
            Err(e) => {
                let blob = self.blob_path(&layer);
                self.push(Finding {
                    severity: Severity::Problem,
                    kind: "layer-unreadable",
                    size: fs::metadata(&blob).ok().map(|m| m.len()),
                    path: blob,
                    detail: format!("cannot read layer {layer} of plugin {}: {e}", record.name()),
                    repair: self
                        .options
                        .repair
                        .then(|| Repair::NotRepaired("re-install the plugin".to_owned())),
                });
            }
        }
    }

    /// Checks one referenced blob; true when it exists (and, at full depth, its content
    /// hashes to its digest).
    fn check_blob(&mut self, id: &PluginId, role: &str, digest: &Digest) -> bool {
        let path = self.blob_path(digest);
        let size = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) => {
                self.push(Finding {
                    severity: Severity::Problem,
                    kind: "blob-missing",
                    path,
                    size: None,
                    detail: format!("{role} blob {digest} of plugin {id} is missing ({e})"),
                    repair: self.options.repair.then(|| {
                        Repair::NotRepaired(
                            "a blob cannot be rebuilt; re-install the plugin".to_owned(),
                        )
                    }),
                });
                return false;
            }
        };
        if self.options.depth == Depth::Cheap {
            return true;
        }
        match hash_file(&path) {
            Ok(actual) if actual == *digest => true,
            Ok(actual) => {
                let repair = self
                    .options
                    .repair
                    .then(|| self.quarantine_blob(&path, digest));
                self.push(Finding {
                    severity: Severity::Problem,
                    kind: "blob-corrupt",
                    path,
                    size: Some(size),
                    detail: format!("{role} blob of plugin {id} hashes to {actual}, not {digest}"),
                    repair,
                });
                false
            }
            Err(e) => {
                self.push(Finding {
                    severity: Severity::Problem,
                    kind: "blob-unreadable",
                    path,
                    size: Some(size),
                    detail: format!("{role} blob {digest} of plugin {id}: {e}"),
                    repair: self
                        .options
                        .repair
                        .then(|| Repair::NotRepaired("re-install the plugin".to_owned())),
                });
                false
            }
        }
    }

    fn quarantine_blob(&self, path: &Path, digest: &Digest) -> Repair {
        let dir = self.storage.join("quarantine");
        let target = (0u32..)
            .map(|n| {
                if n == 0 {
                    dir.join(digest.hex())
                } else {
                    dir.join(format!("{}.{n}", digest.hex()))
                }
            })
            .find(|p| !p.exists())
            .unwrap_or_else(|| dir.join(digest.hex()));
        let moved = plugind_sys::fs::create_dir_durable(&dir, 0o700)
            .and_then(|()| plugind_sys::fs::durable_rename(path, &target));
        match moved {
            Ok(()) => Repair::Repaired(format!(
                "moved to {} (the plugin needs a re-install)",
                target.display()
            )),
            Err(e) => Repair::NotRepaired(format!("cannot move it to the quarantine: {e}")),
        }
    }

    /// Blobs nobody references, and ingests (every ingest is a leftover while plugind is down).
    fn check_storage(&mut self, referenced: &HashSet<Digest>, unreadable: usize) {
        let blobs_dir = self.storage.join("blobs").join("sha256");
        for (name, path) in sorted_entries(&blobs_dir) {
            if plugind_sys::fs::is_temp_name(&name) || name.starts_with('.') {
                self.leftover(
                    "temp-file",
                    &path,
                    "temporary file of an interrupted blob commit".to_owned(),
                );
                continue;
            }
            let Ok(digest) = Digest::from_hex(&name) else {
                self.note(
                    "unknown-entry",
                    &path,
                    "not a blob name; left alone".to_owned(),
                );
                continue;
            };
            if referenced.contains(&digest) {
                continue;
            }
            if unreadable > 0 {
                self.push(Finding {
                    severity: Severity::Problem,
                    kind: "orphan-blob",
                    size: fs::metadata(&path).ok().map(|m| m.len()),
                    path,
                    detail: "no readable record references this blob".to_owned(),
                    repair: self.options.repair.then(|| {
                        Repair::NotRepaired(
                            "kept: an unreadable record may reference it".to_owned(),
                        )
                    }),
                });
                continue;
            }
            self.leftover(
                "orphan-blob",
                &path,
                "no record references this blob".to_owned(),
            );
        }
        self.check_dir_leftovers(
            &self.storage.join("ingest"),
            "orphan-ingest",
            "partial download or import (plugind sweeps it at start)",
        );
    }

    fn check_dir_leftovers(&mut self, dir: &Path, kind: &'static str, detail: &str) {
        for (_, path) in sorted_entries(dir) {
            self.leftover(kind, &path, detail.to_owned());
        }
    }

    fn check_quarantine(&mut self, dir: &Path, kind: &'static str) {
        for (_, path) in sorted_entries(dir) {
            self.push(Finding {
                severity: Severity::Notice,
                kind,
                size: Some(tree_size(&path)),
                path,
                detail: "kept for inspection (plugind bounds the quarantine)".to_owned(),
                repair: None,
            });
        }
    }

    fn check_bundles(
        &mut self,
        dir: &Path,
        records: &BTreeMap<PluginId, PluginRecord>,
        unreadable: usize,
    ) {
        for (name, path) in sorted_entries(dir) {
            let claimed = PluginId::parse(&name).is_ok_and(|id| records.contains_key(&id));
            if claimed || unreadable > 0 {
                continue;
            }
            self.push(Finding {
                severity: Severity::Problem,
                kind: "orphan-bundle",
                size: Some(tree_size(&path)),
                path,
                detail: "bundle no record claims".to_owned(),
                repair: self.options.repair.then(|| {
                    Repair::NotRepaired(
                        "its task may still run: plugind tears it down (task, shim, mounts) at start"
                            .to_owned(),
                    )
                }),
            });
        }
    }

    /// A problem whose repair is deleting `path`.
    fn leftover(&mut self, kind: &'static str, path: &Path, detail: String) {
        let size = tree_size(path);
        let repair = self.options.repair.then(|| match remove_any(path) {
            Ok(()) => Repair::Repaired("deleted".to_owned()),
            Err(e) => Repair::NotRepaired(format!("cannot delete it: {e}")),
        });
        self.push(Finding {
            severity: Severity::Problem,
            kind,
            path: path.to_path_buf(),
            size: Some(size),
            detail,
            repair,
        });
    }

    fn note(&mut self, kind: &'static str, path: &Path, detail: String) {
        self.push(Finding {
            severity: Severity::Notice,
            kind,
            path: path.to_path_buf(),
            size: None,
            detail,
            repair: None,
        });
    }

    fn push(&mut self, finding: Finding) {
        self.report.findings.push(finding);
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.storage.join("blobs").join("sha256").join(digest.hex())
    }
}

/// True when the record says its task runs and that process still exists.
fn record_running(record: &PluginRecord) -> bool {
    match &record.state.observed.state {
        plugind_store::RunState::Running { pid } => Path::new(&format!("/proc/{pid}")).exists(),
        _ => false,
    }
}

/// Sorted entries of a directory; none when it cannot be read.
fn sorted_entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    out.sort();
    out
}

/// Bytes under `path` (not following symlinks), best effort.
pub fn tree_size(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        total += md.len();
        if md.is_dir() {
            stack.extend(
                fs::read_dir(&p)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        }
    }
    total
}

fn remove_any(path: &Path) -> Result<(), String> {
    let md = fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if md.is_dir() {
        plugind_sys::tree::remove_tree_same_device(path).map_err(|e| e.to_string())
    } else {
        fs::remove_file(path).map_err(|e| e.to_string())
    }
}

fn hash_file(path: &Path) -> io::Result<Digest> {
    hash_reader(&mut fs::File::open(path)?)
}

fn hash_reader(r: &mut impl Read) -> io::Result<Digest> {
    let mut hasher = Sha256::new();
    io::copy(r, &mut hasher)?;
    Ok(Digest::from_sha256_bytes(hasher.finalize().into()))
}
