//! [`Store`]: the on-disk plugin records, their reload at start, and the in-memory index with
//! Docker's lookup rules.

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
};

use plugind_sys::{
    fs::{atomic_write, create_dir_durable, durable_rename},
    records,
};
use plugind_types::{PluginId, Reference};

use crate::{
    canonical_name, model::RECORD_FORMAT_VERSION, remove::remove_tree, PluginRecord, Result,
    StoreError,
};

/// File name of a record inside its plugin directory.
const RECORD_FILE: &str = "config.json";
/// Suffix of a plugin directory whose removal is in progress.
const REMOVING_SUFFIX: &str = "-removing";
/// Where unreadable plugin directories are moved at reload.
const QUARANTINE_DIR: &str = "quarantine";
/// Mode of the root, plugin and quarantine directories: plugin state is root's business.
const DIR_MODE: u32 = 0o700;
/// At most this many quarantined plugin directories are kept; the oldest go first.
pub const QUARANTINE_MAX_ENTRIES: usize = 16;
/// Quarantined plugin directories older than this are deleted at reload.
pub const QUARANTINE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// The plugin records of one root directory, indexed in memory.
///
/// `Send + Sync`; every method is synchronous and does short, bounded filesystem work (async
/// callers use `spawn_blocking`). Changes to different plugins are persisted concurrently;
/// changes to one plugin are serialised by that plugin's own lock, and the in-memory copy is
/// replaced only after the new record is durably on disk.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    /// id -> slot. A std `RwLock` because no lock is held across an await (there are none) or a
    /// disk write: lookups only clone records, so they never wait for an fsync.
    index: RwLock<BTreeMap<PluginId, Arc<Slot>>>,
    /// Serialises `add` and renames, so "this name is free" and the insertion that takes it are
    /// one step. Taken after a slot's `persist` lock, never before.
    names: Mutex<()>,
}

#[derive(Debug)]
struct Slot {
    /// Held while a change of this plugin is persisted; `true` once the plugin has been removed,
    /// so an update that waited for the lock does not resurrect it.
    persist: Mutex<bool>,
    /// The current record; replaced whole, only after it was persisted.
    record: RwLock<PluginRecord>,
}

/// What [`Store::open`] found and did. Nothing in it stopped the store from opening.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// Plugins loaded into the index, in id order.
    pub loaded: Vec<PluginId>,
    /// Plugin directories moved to `<root>/quarantine/`.
    pub quarantined: Vec<Quarantined>,
    /// `<id>-removing` directories deleted.
    pub removals_finished: Vec<PathBuf>,
    /// Temporary files of interrupted atomic writes that were deleted.
    pub temp_files_removed: Vec<PathBuf>,
    /// Plugin directories without a record (a create killed between moving its rootfs in and
    /// writing the record: the record is written last, so the plugin never existed), deleted.
    pub incomplete_removed: Vec<PathBuf>,
    /// Quarantined directories deleted to keep the quarantine bounded
    /// ([`QUARANTINE_MAX_ENTRIES`], [`QUARANTINE_MAX_AGE`]).
    pub quarantine_pruned: Vec<PathBuf>,
    /// Everything that went wrong and was left in place (a removal blocked by a mount, a record
    /// from a newer plugind, a failed quarantine move, ...).
    pub failures: Vec<StoreError>,
}

/// A plugin directory that could not be loaded and was moved aside.
#[derive(Debug)]
pub struct Quarantined {
    /// Where it was (`<root>/<id>`).
    pub dir: PathBuf,
    /// Where it is now (`<root>/quarantine/<id>-<unix time>`).
    pub moved_to: PathBuf,
    /// Why it could not be loaded.
    pub reason: StoreError,
}

impl Store {
    /// Opens (creating if needed) the store at `root` and reloads it: loads every `<64 hex>`
    /// directory's record, finishes removals left as `<id>-removing`, deletes temporary files of
    /// interrupted writes, and quarantines records that cannot be used. One bad plugin never
    /// stops the others from loading; only failures on the root itself are errors.
    ///
    /// The caller must hold the root's lock (`plugind_sys::lock`): reload deletes temporary
    /// files and directories that another process writing under `root` could still be using.
    pub fn open(root: &Path) -> Result<(Store, ReloadReport)> {
        create_dir_durable(root, DIR_MODE).map_err(|source| StoreError::Fs {
            action: format!("create store root {}", root.display()),
            source,
        })?;
        let store = Store {
            root: root.to_path_buf(),
            index: RwLock::new(BTreeMap::new()),
            names: Mutex::new(()),
        };
        let report = store.reload()?;
        Ok((store, report))
    }

    fn reload(&self) -> Result<ReloadReport> {
        let mut report = ReloadReport::default();
        let listing = records::list(&self.root).map_err(|source| StoreError::Fs {
            action: format!("read store root {}", self.root.display()),
            source,
        })?;
        // Names that are not UTF-8 are neither records nor removals; temporaries directly in
        // the root are none of the store's (its writes happen inside plugin directories).
        let names: Vec<String> = listing.entries.into_iter().map(|(n, _)| n).collect();
        let mut index = BTreeMap::new();
        for name in &names {
            let path = self.root.join(name);
            if let Some(id) = name
                .strip_suffix(REMOVING_SUFFIX)
                .and_then(|s| PluginId::parse(s).ok())
            {
                match remove_tree(&path) {
                    Ok(()) => {
                        tracing::info!(plugin = %id, path = %path.display(), "finished interrupted plugin removal");
                        report.removals_finished.push(path);
                    }
                    Err(e) => {
                        tracing::warn!(plugin = %id, error = %error_chain(&e), "cannot finish plugin removal; will retry at next start");
                        report.failures.push(e);
                    }
                }
                continue;
            }
            let Ok(id) = PluginId::parse(name) else {
                continue;
            };
            if !path.is_dir() {
                continue;
            }
            self.remove_temp_files(&path, &mut report);
            match self.load_record(&id, &index) {
                Ok(record) => {
                    report.loaded.push(id.clone());
                    index.insert(id, Arc::new(Slot::new(record)));
                }
                Err(StoreError::MissingRecord { .. }) => match remove_tree(&path) {
                    // The record is the last thing a create writes: without it the plugin was
                    // never created, and nobody can refer to it. Keeping it would pile up.
                    Ok(()) => {
                        tracing::info!(plugin = %id, path = %path.display(), "removed plugin directory of an interrupted create");
                        report.incomplete_removed.push(path);
                    }
                    Err(e) => {
                        tracing::warn!(plugin = %id, error = %error_chain(&e), "cannot remove plugin directory of an interrupted create; will retry at next start");
                        report.failures.push(e);
                    }
                },
                Err(e @ (StoreError::NewerFormat { .. } | StoreError::Read { .. })) => {
                    tracing::error!(plugin = %id, error = %error_chain(&e), "plugin record not loaded; left in place");
                    report.failures.push(e);
                }
                Err(reason) => self.quarantine_dir(&path, reason, &mut report),
            }
        }
        *write(&self.index) = index;
        self.prune_quarantine(&mut report);
        for q in self.quarantined() {
            tracing::warn!(path = %q.display(), "quarantined plugin directory kept for inspection");
        }
        Ok(report)
    }

    /// The quarantined plugin directories (`<root>/quarantine/*`), oldest first.
    pub fn quarantined(&self) -> Vec<PathBuf> {
        self.quarantine()
            .entries()
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }

    fn quarantine(&self) -> records::Quarantine {
        records::Quarantine::new(self.root.join(QUARANTINE_DIR), DIR_MODE)
    }

    /// Keeps the quarantine bounded: deletes entries older than [`QUARANTINE_MAX_AGE`], then the
    /// oldest until at most [`QUARANTINE_MAX_ENTRIES`] are left.
    fn prune_quarantine(&self, report: &mut ReloadReport) {
        let (pruned, failed) =
            self.quarantine()
                .prune(QUARANTINE_MAX_ENTRIES, QUARANTINE_MAX_AGE, remove_tree);
        for path in &pruned {
            tracing::info!(path = %path.display(), "deleted old quarantined plugin directory");
        }
        report.quarantine_pruned.extend(pruned);
        report.failures.extend(failed);
    }

    fn remove_temp_files(&self, dir: &Path, report: &mut ReloadReport) {
        match records::remove_temp_files(dir) {
            Ok(sweep) => {
                report.temp_files_removed.extend(sweep.removed);
                report
                    .failures
                    .extend(sweep.failed.into_iter().map(|source| StoreError::Fs {
                        action: "remove leftover temporary file".to_owned(),
                        source,
                    }));
            }
            Err(source) => report.failures.push(StoreError::Fs {
                action: format!("read plugin directory {}", dir.display()),
                source,
            }),
        }
    }

    fn load_record(
        &self,
        id: &PluginId,
        loaded: &BTreeMap<PluginId, Arc<Slot>>,
    ) -> Result<PluginRecord> {
        let path = self.record_path(id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::MissingRecord {
                    dir: self.plugin_dir(id),
                })
            }
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        let (record, version) =
            PluginRecord::from_json(&bytes).map_err(|source| StoreError::Decode {
                path: path.clone(),
                source,
            })?;
        if version > RECORD_FORMAT_VERSION {
            return Err(StoreError::NewerFormat { path, version });
        }
        if record.id() != id {
            return Err(StoreError::IdMismatch {
                path,
                found: record.id().clone(),
            });
        }
        let name = record.name();
        let canonical = canonical_name(name).is_ok_and(|c| c == name);
        let taken = loaded.values().any(|s| read(&s.record).name() == name);
        if !canonical || taken {
            return Err(StoreError::BadRecordName {
                path,
                name: name.to_owned(),
            });
        }
        Ok(record)
    }

    fn quarantine_dir(&self, dir: &Path, reason: StoreError, report: &mut ReloadReport) {
        tracing::error!(dir = %dir.display(), error = %error_chain(&reason), "unusable plugin record; moving it to quarantine");
        match self.quarantine().move_in(dir) {
            Ok(moved_to) => report.quarantined.push(Quarantined {
                dir: dir.to_path_buf(),
                moved_to,
                reason,
            }),
            Err(source) => {
                let e = StoreError::Fs {
                    action: format!("quarantine {}", dir.display()),
                    source,
                };
                tracing::error!(error = %error_chain(&e), "plugin left in place and not loaded");
                report.failures.push(reason);
                report.failures.push(e);
            }
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<id>`: the plugin's directory.
    pub fn plugin_dir(&self, id: &PluginId) -> PathBuf {
        self.root.join(id.as_str())
    }

    /// `<root>/<id>/config.json`: the plugin's record.
    pub fn record_path(&self, id: &PluginId) -> PathBuf {
        self.plugin_dir(id).join(RECORD_FILE)
    }

    /// `<root>/<id>/rootfs`: the plugin's unpacked root filesystem.
    pub fn rootfs_dir(&self, id: &PluginId) -> PathBuf {
        self.plugin_dir(id).join("rootfs")
    }

    /// `<root>/<id>/propagated-mount`: host side of `Config.PropagatedMount`.
    pub fn propagated_mount_dir(&self, id: &PluginId) -> PathBuf {
        self.plugin_dir(id).join("propagated-mount")
    }

    /// Adds a new plugin: checks that its id and name are free and its name is in stored form
    /// ([`canonical_name`]), creates `<root>/<id>` if needed, persists the record, then indexes
    /// it. A name clash is `plugin <name> already exists` ([`StoreError::NameExists`]).
    pub fn add(&self, record: PluginRecord) -> Result<()> {
        let _names = lock(&self.names);
        check_canonical(record.name())?;
        let id = record.id().clone();
        if read(&self.index).contains_key(&id) {
            return Err(StoreError::IdExists { id });
        }
        self.check_name_free(record.name(), None)?;
        let dir = self.plugin_dir(&id);
        let existed = dir.exists();
        create_dir_durable(&dir, DIR_MODE).map_err(|source| StoreError::Fs {
            action: format!("create plugin directory for {id}"),
            source,
        })?;
        if let Err(e) = self.persist(&record) {
            if !existed {
                // Only the empty directory made above; anything else in it is not ours.
                let _ = fs::remove_dir(&dir);
            }
            return Err(e);
        }
        write(&self.index).insert(id, Arc::new(Slot::new(record)));
        Ok(())
    }

    /// The plugin with this id, if any.
    pub fn get(&self, id: &PluginId) -> Option<PluginRecord> {
        self.slot(id).map(|s| read(&s.record).clone())
    }

    /// Finds a plugin the way Docker resolves `{name}` in API paths (docker-plugin-api.md §5.2):
    /// 1. exactly 64 lowercase hex: that id, or not found;
    /// 2. otherwise a reference: unparsable or with a digest -> not found;
    /// 3. its familiar form with `:latest` added when untagged, compared with the stored names;
    /// 4. otherwise the raw input as an id prefix: one match wins, several are
    ///    [`StoreError::Ambiguous`], none is [`StoreError::NotFound`].
    pub fn resolve(&self, input: &str) -> Result<PluginRecord> {
        let not_found = || StoreError::NotFound {
            input: input.to_owned(),
        };
        let index = read(&self.index);
        if let Ok(id) = PluginId::parse(input) {
            return index
                .get(&id)
                .map(|s| read(&s.record).clone())
                .ok_or_else(not_found);
        }
        let reference = Reference::parse_normalized(input).map_err(|_| not_found())?;
        if reference.digest().is_some() {
            tracing::debug!(input, "canonical references cannot be resolved to a plugin");
            return Err(not_found());
        }
        let name = reference.with_default_tag().familiar_string();
        for slot in index.values() {
            let record = read(&slot.record);
            if record.name() == name {
                return Ok(record.clone());
            }
        }
        let mut matches = index
            .iter()
            .filter(|(id, _)| id.as_str().starts_with(input));
        match (matches.next(), matches.next()) {
            (Some((_, slot)), None) => Ok(read(&slot.record).clone()),
            (Some(_), Some(_)) => Err(StoreError::Ambiguous {
                input: input.to_owned(),
            }),
            (None, _) => Err(not_found()),
        }
    }

    /// Every plugin, in id order.
    pub fn list(&self) -> Vec<PluginRecord> {
        read(&self.index)
            .values()
            .map(|s| read(&s.record).clone())
            .collect()
    }

    /// Changes a plugin with `f` and persists the result atomically; returns the new record.
    /// See [`Store::try_update`].
    pub fn update(&self, id: &PluginId, f: impl FnOnce(&mut PluginRecord)) -> Result<PluginRecord> {
        self.try_update(id, |r| {
            f(r);
            Ok::<(), StoreError>(())
        })
    }

    /// Changes a plugin with `f`, which may refuse (its error is returned as is, nothing is
    /// written). The check and the change happen under the plugin's lock, so e.g. "disabled?
    /// then apply settings" is atomic. The new record is persisted before it becomes visible;
    /// if persisting fails, the in-memory record is unchanged. An unchanged record is not
    /// rewritten. Changing the name checks it like [`Store::add`]; changing the id is refused.
    pub fn try_update<E: From<StoreError>>(
        &self,
        id: &PluginId,
        f: impl FnOnce(&mut PluginRecord) -> Result<(), E>,
    ) -> Result<PluginRecord, E> {
        let not_found = || StoreError::NotFound {
            input: id.to_string(),
        };
        let slot = self.slot(id).ok_or_else(not_found)?;
        let removed = lock(&slot.persist);
        if *removed {
            return Err(not_found().into());
        }
        let old = read(&slot.record).clone();
        let mut new = old.clone();
        f(&mut new)?;
        if new.id() != old.id() {
            return Err(StoreError::IdChanged {
                id: old.id().clone(),
                new_id: new.id().clone(),
            }
            .into());
        }
        if new == old {
            return Ok(new);
        }
        let _names = if new.name() == old.name() {
            None
        } else {
            let guard = lock(&self.names);
            check_canonical(new.name())?;
            self.check_name_free(new.name(), Some(id))?;
            Some(guard)
        };
        self.persist(&new)?;
        *write(&slot.record) = new.clone();
        Ok(new)
    }

    /// Starts removing a plugin: renames `<root>/<id>` to `<root>/<id>-removing` durably and
    /// drops the plugin from the index; returns the new path for [`Store::finish_remove`]. After
    /// a crash the rename is either not done (the plugin is still there) or done (the next
    /// [`Store::open`] finishes the removal). Unmount what is mounted under the plugin first.
    pub fn begin_remove(&self, id: &PluginId) -> Result<PathBuf> {
        let not_found = || StoreError::NotFound {
            input: id.to_string(),
        };
        let slot = self.slot(id).ok_or_else(not_found)?;
        let mut removed = lock(&slot.persist);
        if *removed {
            return Err(not_found());
        }
        let to = self.root.join(format!("{id}{REMOVING_SUFFIX}"));
        // A leftover of an earlier removal of this id (killed, or blocked by a mount then) would
        // make the rename fail: finish it first.
        remove_tree(&to)?;
        durable_rename(&self.plugin_dir(id), &to).map_err(|source| StoreError::Fs {
            action: format!("move plugin {id} aside for removal"),
            source,
        })?;
        *removed = true;
        write(&self.index).remove(id);
        Ok(to)
    }

    /// Deletes a directory returned by [`Store::begin_remove`]. Refuses with
    /// [`StoreError::Busy`], touching nothing, while something is mounted under it; it is then
    /// retried at the next [`Store::open`]. A missing directory is fine.
    pub fn finish_remove(&self, path: &Path) -> Result<()> {
        let is_removing = path.parent() == Some(self.root.as_path())
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(REMOVING_SUFFIX))
                .is_some_and(|id| PluginId::parse(id).is_ok());
        if !is_removing {
            return Err(StoreError::NotRemoving {
                path: path.to_path_buf(),
            });
        }
        remove_tree(path)
    }

    fn slot(&self, id: &PluginId) -> Option<Arc<Slot>> {
        read(&self.index).get(id).cloned()
    }

    /// Fails when a plugin other than `except` has `name`. Call with `names` held.
    fn check_name_free(&self, name: &str, except: Option<&PluginId>) -> Result<()> {
        let taken = read(&self.index)
            .iter()
            .any(|(id, s)| Some(id) != except && read(&s.record).name() == name);
        if taken {
            return Err(StoreError::NameExists {
                name: name.to_owned(),
            });
        }
        Ok(())
    }

    fn persist(&self, record: &PluginRecord) -> Result<()> {
        let id = record.id();
        let json = record.to_json().map_err(|source| StoreError::Encode {
            id: id.clone(),
            source,
        })?;
        atomic_write(&self.record_path(id), &json).map_err(|source| StoreError::Persist {
            id: id.clone(),
            source,
        })
    }
}

impl Slot {
    fn new(record: PluginRecord) -> Self {
        Slot {
            persist: Mutex::new(false),
            record: RwLock::new(record),
        }
    }
}

fn check_canonical(name: &str) -> Result<()> {
    let expected = canonical_name(name)?;
    if expected != name {
        return Err(StoreError::NameNotCanonical {
            name: name.to_owned(),
            expected,
        });
    }
    Ok(())
}

/// The error and its sources on one line, for logs.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

// A panic while a lock is held cannot leave a half-changed record behind: records are replaced
// whole and only after persisting. So poisoned locks are safe to keep using.
use plugind_sys::sync::{lock, read, write};
