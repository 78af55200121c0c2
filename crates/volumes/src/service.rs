//! [`VolumeService`]: Docker's volume operations over driver plugins.
//!
//! Invariants:
//! - a `Ready` volume holds exactly one reference (`volume:<name>`) on its driver plugin, taken
//!   at create and dropped at remove; opening the service never acquires (the manager persists
//!   references), it only finishes operations a crash interrupted;
//! - a create or remove is bracketed by records on disk (`Creating` before the reference is
//!   taken, `Removing` before the driver is asked to remove), so a crash never leaks a reference
//!   silently: open releases the reference of every such leftover (release is idempotent and
//!   a volume holds at most one) and deletes its record. The driver may keep the volume's data
//!   in that case, as Docker's drivers do when the daemon loses a volume;
//! - operations on one volume name run one at a time (a per-name async lock); reads (`get`,
//!   `list`) take no name lock, so a slow driver call on one volume never delays another;
//! - every driver call has a deadline ([`VolumeConfig`]) and no lock of the service is held
//!   across a driver call except the name lock of the volume being changed;
//! - a volume whose driver plugin is gone (the getter says not found, or the plugin it was
//!   created with was removed and the name now belongs to another plugin: an orphan) never
//!   causes a driver call: list and inspect answer from the record at once, remove succeeds,
//!   and a create of its name replaces it. Docker instead keeps calling whatever plugin has the
//!   name and answers 500 (docs/compat.md);
//! - every visible change is published as a Docker volume event through the getter
//!   (`create`, `destroy`, `mount`, `unmount`, `prune`);
//! - mutating operations run in their own task, so a caller that goes away (an HTTP client
//!   disconnecting) cannot stop one half way.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex as StdMutex, OnceLock,
    },
    time::SystemTime,
};

use plugind_manager::client::PluginCallError;
use plugind_types::ErrorKind;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::{
    driver::{Driver, DriverHandle, PluginGetter, VolumeConfig},
    error::{Result, VolumeError},
    filters::{FilterUse, VolumeFilters},
    records::RecordDir,
    volume::{
        holder, random_name, rfc3339, validate_name, RecordState, Volume, VolumeRecord,
        ANONYMOUS_LABEL, RECORD_FORMAT_VERSION,
    },
};

/// Driver name used when create is given none (Docker's default driver). plugind has no
/// built-in driver, so this only works when a volume plugin is named `local`.
pub const DEFAULT_DRIVER: &str = "local";

/// Result of [`VolumeService::prune`] (Docker's `VolumesPruneReport`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Names of the removed volumes.
    pub volumes_deleted: Vec<String>,
    /// Always 0: plugind cannot measure space inside driver plugins (Docker reports sizes only
    /// for its built-in local driver).
    pub space_reclaimed: u64,
}

/// What [`VolumeService::open`] found on disk.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Volumes loaded.
    pub loaded: Vec<String>,
    /// Creates and removes interrupted by a crash that were finished (reference released,
    /// record deleted).
    pub finished: Vec<String>,
    /// Interrupted operations that could not be finished now (retried by the next open or by
    /// the next operation on the name), with the reason.
    pub unfinished: Vec<(String, String)>,
    /// Record files moved to quarantine, with the reason.
    pub quarantined: Vec<(PathBuf, String)>,
    /// Temporary files of interrupted writes that were deleted.
    pub temp_files_removed: Vec<PathBuf>,
    /// Records of a newer plugind, left alone.
    pub skipped: Vec<PathBuf>,
}

/// The volume service. Cheap to clone; all clones share one state.
#[derive(Debug, Clone)]
pub struct VolumeService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    records: RecordDir,
    getter: Arc<dyn PluginGetter>,
    config: VolumeConfig,
    /// name -> record, in any state; only `Ready` records are visible. A std mutex: it is never
    /// held across an await, and readers only clone records out.
    index: StdMutex<BTreeMap<String, VolumeRecord>>,
    locks: NameLocks,
    /// Docker allows one prune at a time.
    pruning: AtomicBool,
    /// Set once by `open`, after the interrupted operations were finished.
    report: OnceLock<OpenReport>,
}

use plugind_sys::sync::lock;

impl VolumeService {
    /// Opens the volume records under `<root>/volumes` (created if missing), quarantining bad
    /// ones and finishing creates and removes that a crash interrupted. Does not call drivers
    /// and takes no references: the manager kept them across the restart.
    pub async fn open(
        root: &Path,
        getter: Arc<dyn PluginGetter>,
        config: VolumeConfig,
    ) -> Result<VolumeService> {
        let root = root.to_path_buf();
        let (records, load) = tokio::task::spawn_blocking(move || {
            let dir = RecordDir::open(&root)?;
            let load = dir.load()?;
            Ok::<_, VolumeError>((dir, load))
        })
        .await??;
        let mut report = OpenReport {
            quarantined: load.quarantined,
            temp_files_removed: load.temp_files_removed,
            skipped: load.skipped,
            ..OpenReport::default()
        };
        let mut index = BTreeMap::new();
        let mut leftovers = Vec::new();
        for record in load.records {
            if record.state == RecordState::Ready {
                report.loaded.push(record.name.clone());
            } else {
                leftovers.push(record.clone());
            }
            index.insert(record.name.clone(), record);
        }
        let service = VolumeService {
            inner: Arc::new(Inner {
                records,
                getter,
                config,
                index: StdMutex::new(index),
                locks: NameLocks::default(),
                pruning: AtomicBool::new(false),
                report: OnceLock::new(),
            }),
        };
        for record in leftovers {
            match service.finish_interrupted(&record).await {
                Ok(()) => report.finished.push(record.name),
                Err(e) => report.unfinished.push((record.name, e.to_string())),
            }
        }
        service.record_driver_ids(&report.loaded).await;
        tracing::info!(
            loaded = report.loaded.len(),
            finished = report.finished.len(),
            quarantined = report.quarantined.len(),
            "volume records loaded"
        );
        let _ = service.inner.report.set(report);
        Ok(service)
    }

    /// What open found.
    pub fn open_report(&self) -> &OpenReport {
        static NOTHING: OpenReport = OpenReport {
            loaded: Vec::new(),
            finished: Vec::new(),
            unfinished: Vec::new(),
            quarantined: Vec::new(),
            temp_files_removed: Vec::new(),
            skipped: Vec::new(),
        };
        self.inner.report.get().unwrap_or(&NOTHING)
    }

    /// The deadlines in use.
    pub fn config(&self) -> &VolumeConfig {
        &self.inner.config
    }

    /// Creates a volume (Docker's `POST /volumes/create`). `name` `None` or empty gives a
    /// random 64-hex name and the [`ANONYMOUS_LABEL`]. Creating an existing volume with the
    /// same driver or with an empty `driver` returns it unchanged (options and labels of the
    /// request are ignored, as in Docker); with another driver it is a name conflict. For a new
    /// volume an empty `driver` means [`DEFAULT_DRIVER`].
    pub async fn create(
        &self,
        name: Option<&str>,
        driver: &str,
        opts: BTreeMap<String, String>,
        labels: BTreeMap<String, String>,
    ) -> Result<Volume> {
        let mut labels = labels;
        let name = match name.filter(|n| !n.is_empty()) {
            Some(n) => n.to_owned(),
            None => {
                labels.insert(ANONYMOUS_LABEL.to_owned(), String::new());
                random_name()
            }
        };
        validate_name(&name).map_err(|e| e.op("create", &name))?;
        let driver = driver.to_owned();
        let this = self.clone();
        tokio::spawn(async move { this.create_locked(&name, &driver, opts, labels).await }).await?
    }

    async fn create_locked(
        &self,
        name: &str,
        driver: &str,
        opts: BTreeMap<String, String>,
        labels: BTreeMap<String, String>,
    ) -> Result<Volume> {
        let op = |e: VolumeError| e.op("create", name);
        let _guard = self.inner.locks.lock(name).await;
        let existing = lock(&self.inner.index).get(name).cloned();
        if let Some(rec) = existing {
            let orphan = rec.state == RecordState::Ready
                && rec.mounts.is_empty()
                && self.orphan_reason(&rec).await.is_some();
            if rec.state == RecordState::Ready && !orphan {
                return self.create_existing(&rec, driver).await.map_err(op);
            }
            // An interrupted operation, or a volume whose driver plugin was removed: nothing
            // of it remains to use, so the name is free.
            self.finish_interrupted(&rec).await.map_err(op)?;
        }
        let driver = if driver.is_empty() {
            DEFAULT_DRIVER
        } else {
            driver
        };
        // Resolve the driver's full name first: it is what the record stores and what the
        // reference is taken on.
        let found = self.inner.getter.get(driver).await.map_err(op)?;
        let mut record = VolumeRecord {
            format_version: RECORD_FORMAT_VERSION,
            name: name.to_owned(),
            driver: found.name.clone(),
            driver_id: None,
            options: opts,
            labels,
            created_at: rfc3339(SystemTime::now()),
            scope: "local".to_owned(),
            state: RecordState::Creating,
            mounts: Default::default(),
        };
        self.save(&record).await.map_err(op)?;
        let handle = match self
            .inner
            .getter
            .acquire(&record.driver, &record.holder())
            .await
        {
            Ok(h) => h,
            Err(e) => {
                self.discard(&record).await;
                return Err(op(e));
            }
        };
        record.driver_id = (!handle.id.is_empty()).then(|| handle.id.clone());
        let created = self.driver_create(&handle, &record).await;
        let (scope, mountpoint) = match created {
            Ok(v) => v,
            Err(e) => {
                self.release_logged(&record).await;
                self.discard(&record).await;
                return Err(op(e));
            }
        };
        record.scope = scope;
        record.state = RecordState::Ready;
        if let Err(e) = self.save(&record).await {
            self.release_logged(&record).await;
            self.discard(&record).await;
            return Err(op(e));
        }
        lock(&self.inner.index).insert(name.to_owned(), record.clone());
        tracing::info!(volume = name, driver = %record.driver, "volume created");
        self.event(name, "create", &[("driver", &record.driver)]);
        let mut volume = record.to_volume();
        volume.mountpoint = mountpoint;
        Ok(volume)
    }

    /// Create of a name that exists: the same volume if no driver was given or the driver is
    /// the same, else a conflict.
    async fn create_existing(&self, rec: &VolumeRecord, driver: &str) -> Result<Volume> {
        let same_without_lookup = driver.is_empty()
            || driver == rec.driver
            || rec.driver.strip_suffix(":latest") == Some(driver);
        if !same_without_lookup {
            // Docker compares full names ("vol" and "vol:latest" are the same driver).
            let found = self.inner.getter.get(driver).await?;
            if found.name != rec.driver {
                return Err(VolumeError::NameConflict {
                    driver: rec.driver.clone(),
                    name: rec.name.clone(),
                });
            }
        }
        Ok(rec.to_volume())
    }

    /// Capabilities, then Get (Docker does not call Create for a volume the driver already
    /// has), then Create. Returns the scope and, if the driver already had the volume, its
    /// mountpoint.
    async fn driver_create(
        &self,
        handle: &DriverHandle,
        record: &VolumeRecord,
    ) -> Result<(String, String)> {
        let d = Driver {
            handle,
            config: &self.inner.config,
        };
        let call = |e: PluginCallError| VolumeError::from_call(&handle.name, &e);
        let scope = d.scope().await.map_err(call)?;
        let mountpoint = match d.get(&record.name).await {
            Ok(Some(v)) => return Ok((scope, v.mountpoint)),
            Ok(None) => String::new(),
            // An unreachable or hung driver will not create either: fail now, once.
            Err(e @ (PluginCallError::Timeout { .. } | PluginCallError::Connect { .. })) => {
                return Err(call(e))
            }
            // Drivers answer "no such volume" with an error.
            Err(_) => String::new(),
        };
        d.create(&record.name, &record.options)
            .await
            .map_err(call)?;
        Ok((scope, mountpoint))
    }

    /// Inspects a volume (Docker's `GET /volumes/{name}`): the record plus the driver's
    /// `Mountpoint` and `Status` from `VolumeDriver.Get`. If the driver plugin cannot be looked
    /// up (removed, disabled) the record is returned at once with `Status.Error` saying why;
    /// if the driver no longer knows the volume, likewise. A failed or timed-out driver call
    /// is an error naming the plugin.
    pub async fn get(&self, name: &str) -> Result<Volume> {
        let op = |e: VolumeError| e.op("get", name);
        let rec = self
            .ready(name)
            .ok_or_else(|| op(VolumeError::NoSuchVolume))?;
        let mut volume = rec.to_volume();
        let handle = match self.lookup(&rec).await {
            Lookup::Driver(h) => h,
            Lookup::Gone(e) | Lookup::Failed(e) => {
                volume.status = Some(status_error(e.to_string()));
                return Ok(volume);
            }
        };
        let d = Driver {
            handle: &handle,
            config: &self.inner.config,
        };
        match d.get(name).await {
            Ok(Some(v)) => {
                volume.mountpoint = v.mountpoint;
                volume.status = v.status;
            }
            Ok(None) => {
                volume.status = Some(status_error(format!(
                    "volume driver {} has no volume {name}",
                    handle.name
                )));
            }
            Err(e) => return Err(op(VolumeError::from_call(&handle.name, &e))),
        }
        Ok(volume)
    }

    /// Lists volumes (Docker's `GET /volumes`), sorted by name, with mountpoints from one
    /// `VolumeDriver.List` per driver, called concurrently. A driver that fails or times out
    /// adds a warning (`list <driver>: <error>`) and its volumes are listed from their records;
    /// a driver plugin that is gone is not called and adds no warning.
    pub async fn list(&self, filters: &VolumeFilters) -> Result<(Vec<Volume>, Vec<String>)> {
        filters.check(FilterUse::List)?;
        let compiled = filters.compile();
        let records: Vec<VolumeRecord> = lock(&self.inner.index)
            .values()
            .filter(|r| r.state == RecordState::Ready && compiled.matches(r))
            .cloned()
            .collect();
        let drivers: std::collections::BTreeSet<String> =
            records.iter().map(|r| r.driver.clone()).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for driver in drivers {
            let getter = Arc::clone(&self.inner.getter);
            let config = self.inner.config;
            tasks.spawn(async move {
                let Ok(handle) = getter.get(&driver).await else {
                    return (driver, Ok(None));
                };
                let id = handle.id.clone();
                let d = Driver {
                    handle: &handle,
                    config: &config,
                };
                let listed = d
                    .list()
                    .await
                    .map(|map| Some((id, map)))
                    .map_err(|e| VolumeError::from_call(&handle.name, &e).op("list", &driver));
                (driver, listed)
            });
        }
        // Driver name -> (the plugin's id, volume name -> mountpoint).
        let mut mountpoints: HashMap<String, (String, BTreeMap<String, String>)> = HashMap::new();
        let mut warnings = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((driver, Ok(Some(map)))) => {
                    mountpoints.insert(driver, map);
                }
                Ok((_, Ok(None))) => {}
                Ok((_, Err(e))) => warnings.push(e.to_string()),
                Err(e) => warnings.push(VolumeError::from(e).to_string()),
            }
        }
        warnings.sort();
        let volumes = records
            .iter()
            .map(|r| {
                let mut v = r.to_volume();
                let listed = mountpoints.get(&r.driver).filter(|(id, _)| {
                    // An orphan's name now belongs to another plugin: not its driver.
                    id.is_empty() || r.driver_id.as_ref().is_none_or(|mine| mine == id)
                });
                if let Some(mp) = listed.and_then(|(_, m)| m.get(&r.name)) {
                    v.mountpoint = mp.clone();
                }
                v
            })
            .collect();
        Ok((volumes, warnings))
    }

    /// Removes a volume (Docker's `DELETE /volumes/{name}`): refused while mounted (even with
    /// `force`, as in Docker); asks the driver to remove it, releases the plugin reference and
    /// deletes the record. With `force`, a driver failure does not stop the removal and a
    /// missing volume is not an error. A volume whose driver plugin is gone is removed without
    /// a driver call, `force` or not.
    pub async fn remove(&self, name: &str, force: bool) -> Result<()> {
        let this = self.clone();
        let name = name.to_owned();
        tokio::spawn(async move { this.remove_locked(&name, force).await }).await?
    }

    async fn remove_locked(&self, name: &str, force: bool) -> Result<()> {
        let _guard = self.inner.locks.lock(name).await;
        let Some(rec) = lock(&self.inner.index).get(name).cloned() else {
            return if force {
                Ok(())
            } else {
                Err(VolumeError::NoSuchVolume.op("get", name))
            };
        };
        if rec.state != RecordState::Ready {
            // A leftover of a crash: removing it means finishing it.
            return self
                .finish_interrupted(&rec)
                .await
                .map_err(|e| e.op("remove", name));
        }
        self.remove_ready(&rec, force)
            .await
            .map_err(|e| e.op("remove", name))
    }

    async fn remove_ready(&self, rec: &VolumeRecord, force: bool) -> Result<()> {
        if !rec.mounts.is_empty() {
            return Err(VolumeError::InUse {
                ids: rec.mounts.iter().cloned().collect(),
            });
        }
        let mut removing = rec.clone();
        removing.state = RecordState::Removing;
        self.save(&removing).await?;
        let driver_result = match self.lookup(rec).await {
            Lookup::Gone(e) => {
                tracing::info!(volume = %rec.name, driver = %rec.driver, reason = %e, "driver plugin is gone, removing the record only");
                Ok(())
            }
            Lookup::Failed(e) => Err(e),
            Lookup::Driver(handle) => Driver {
                handle: &handle,
                config: &self.inner.config,
            }
            .remove(&rec.name)
            .await
            .map_err(|e| VolumeError::from_call(&handle.name, &e)),
        };
        if let Err(e) = driver_result {
            if !force {
                if let Err(e2) = self.save(rec).await {
                    // The Removing record stays; the next open finishes the removal.
                    tracing::error!(volume = %rec.name, error = %e2, "cannot restore the volume record after a failed remove");
                }
                return Err(e);
            }
            tracing::warn!(volume = %rec.name, error = %e, "driver failed to remove the volume; forced removal goes on");
        }
        // Release before deleting the record: if plugind dies in between, the Removing record
        // makes the next open release again, which is harmless.
        self.release_logged(rec).await;
        let deleted = self.delete(&rec.name).await;
        lock(&self.inner.index).remove(&rec.name);
        tracing::info!(volume = %rec.name, driver = %rec.driver, "volume removed");
        // The volume is gone from plugind whether or not the driver agreed (forced removal):
        // watchers learn it (Docker logs `destroy` only when the driver succeeded).
        self.event(&rec.name, "destroy", &[("driver", &rec.driver)]);
        deleted
    }

    /// Removes every unused volume that the filters select (Docker's `POST /volumes/prune`),
    /// concurrently; volumes that fail to be removed are skipped (logged), as in Docker. See
    /// [`VolumeFilters`] for `all` and the anonymous label. Unlike Docker, which prunes only its
    /// built-in `local` driver, plugind prunes volumes of every driver: it has no other kind.
    pub async fn prune(&self, filters: &VolumeFilters) -> Result<PruneReport> {
        filters.check(FilterUse::Prune)?;
        let this = self.clone();
        let filters = filters.clone();
        tokio::spawn(async move { this.prune_now(&filters).await }).await?
    }

    async fn prune_now(&self, filters: &VolumeFilters) -> Result<PruneReport> {
        if self.inner.pruning.swap(true, Ordering::AcqRel) {
            return Err(VolumeError::PruneRunning);
        }
        struct Reset<'a>(&'a AtomicBool);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _reset = Reset(&self.inner.pruning);
        let candidates: Vec<String> = lock(&self.inner.index)
            .values()
            .filter(|r| r.state == RecordState::Ready && filters.prune_selects(r))
            .map(|r| r.name.clone())
            .collect();
        let mut tasks = tokio::task::JoinSet::new();
        for name in candidates {
            let this = self.clone();
            tasks.spawn(async move {
                let r = this.remove_locked(&name, false).await;
                (name, r)
            });
        }
        let mut report = PruneReport::default();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((name, Ok(()))) => report.volumes_deleted.push(name),
                Ok((name, Err(e))) => {
                    tracing::warn!(volume = %name, error = %e, "prune could not remove volume")
                }
                Err(e) => tracing::warn!(error = %e, "prune task failed"),
            }
        }
        report.volumes_deleted.sort();
        // moby logs one `prune` event with an empty actor id after the removals.
        self.event(
            "",
            "prune",
            &[("reclaimed", &report.space_reclaimed.to_string())],
        );
        Ok(report)
    }

    /// Mounts the volume for `caller_id` through the driver (`VolumeDriver.Mount`) and returns
    /// the driver's mountpoint. The caller id is recorded, so the volume counts as in use
    /// (remove refuses, `dangling=false`) until [`VolumeService::unmount`] with the same id.
    pub async fn mount(&self, name: &str, caller_id: &str) -> Result<String> {
        if caller_id.is_empty() {
            return Err(VolumeError::EmptyCallerId.op("mount", name));
        }
        let this = self.clone();
        let (name, id) = (name.to_owned(), caller_id.to_owned());
        tokio::spawn(async move { this.mount_locked(&name, &id).await }).await?
    }

    async fn mount_locked(&self, name: &str, id: &str) -> Result<String> {
        let _guard = self.inner.locks.lock(name).await;
        let rec = self
            .ready(name)
            .ok_or_else(|| VolumeError::NoSuchVolume.op("get", name))?;
        let op = |e: VolumeError| e.op("mount", name);
        let handle = match self.lookup(&rec).await {
            Lookup::Driver(h) => h,
            Lookup::Gone(e) | Lookup::Failed(e) => return Err(op(e)),
        };
        let d = Driver {
            handle: &handle,
            config: &self.inner.config,
        };
        let mountpoint = match d.mount(name, id).await {
            Ok(mp) => mp,
            Err(e) => {
                // Docker unmounts after a failed mount; pointless if the driver is unreachable.
                if matches!(
                    e,
                    PluginCallError::Remote { .. } | PluginCallError::Protocol { .. }
                ) {
                    let _ = d.unmount(name, id).await;
                }
                return Err(op(VolumeError::from_call(&handle.name, &e)));
            }
        };
        if !rec.mounts.contains(id) {
            let mut next = rec.clone();
            next.mounts.insert(id.to_owned());
            if let Err(e) = self.save(&next).await {
                let _ = d.unmount(name, id).await;
                return Err(op(e));
            }
            lock(&self.inner.index).insert(name.to_owned(), next);
        }
        // Docker also names the container's destination, mode and propagation; plugind's
        // callers mount no container, so only the driver and the caller id are known.
        self.event(name, "mount", &[("driver", &rec.driver), ("container", id)]);
        Ok(mountpoint)
    }

    /// Unmounts the volume for `caller_id` (`VolumeDriver.Unmount`) and forgets the caller.
    /// If the driver plugin is gone, the caller is forgotten without a driver call.
    pub async fn unmount(&self, name: &str, caller_id: &str) -> Result<()> {
        if caller_id.is_empty() {
            return Err(VolumeError::EmptyCallerId.op("unmount", name));
        }
        let this = self.clone();
        let (name, id) = (name.to_owned(), caller_id.to_owned());
        tokio::spawn(async move { this.unmount_locked(&name, &id).await }).await?
    }

    async fn unmount_locked(&self, name: &str, id: &str) -> Result<()> {
        let _guard = self.inner.locks.lock(name).await;
        let rec = self
            .ready(name)
            .ok_or_else(|| VolumeError::NoSuchVolume.op("get", name))?;
        let op = |e: VolumeError| e.op("unmount", name);
        match self.lookup(&rec).await {
            Lookup::Gone(e) => {
                tracing::info!(volume = name, driver = %rec.driver, reason = %e, "driver plugin is gone, forgetting the mount");
            }
            Lookup::Failed(e) => return Err(op(e)),
            Lookup::Driver(handle) => Driver {
                handle: &handle,
                config: &self.inner.config,
            }
            .unmount(name, id)
            .await
            .map_err(|e| op(VolumeError::from_call(&handle.name, &e)))?,
        }
        if rec.mounts.contains(id) {
            let mut next = rec.clone();
            next.mounts.remove(id);
            self.save(&next).await.map_err(op)?;
            lock(&self.inner.index).insert(name.to_owned(), next);
        }
        self.event(
            name,
            "unmount",
            &[("driver", &rec.driver), ("container", id)],
        );
        Ok(())
    }

    // ----- helpers ---------------------------------------------------------------------------

    /// Records of an older plugind lack their driver's id: take it from the plugin that holds
    /// the volume's reference. A volume whose reference nobody holds keeps matching its driver
    /// by name.
    async fn record_driver_ids(&self, names: &[String]) {
        for name in names {
            let Some(mut rec) = self.ready(name).filter(|r| r.driver_id.is_none()) else {
                continue;
            };
            let Some(id) = self.inner.getter.reference_holder(&rec.holder()).await else {
                continue;
            };
            rec.driver_id = Some(id);
            match self.save(&rec).await {
                Ok(()) => {
                    lock(&self.inner.index).insert(name.clone(), rec);
                }
                Err(e) => {
                    tracing::warn!(volume = %name, error = %e, "cannot record the driver's id")
                }
            }
        }
    }

    fn event(&self, volume: &str, action: &str, attributes: &[(&str, &str)]) {
        let attributes = attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.inner
            .getter
            .log_volume_event(volume, action, attributes);
    }

    /// Why the volume is an orphan, if it is: the plugin it was created with was removed. Only
    /// volumes recorded with their driver's id can be recognised.
    async fn orphan_reason(&self, rec: &VolumeRecord) -> Option<String> {
        let id = rec.driver_id.as_deref()?;
        if self.inner.getter.plugin_exists(id).await {
            return None;
        }
        Some(orphan_text(rec, id))
    }

    /// The volume's driver, or why there is none: gone for good (not found, or the plugin of
    /// that name is not the one the volume was created with) or unusable now (disabled).
    async fn lookup(&self, rec: &VolumeRecord) -> Lookup {
        let gone = |reason: String| {
            Lookup::Gone(VolumeError::DriverLookup {
                driver: rec.driver.clone(),
                kind: ErrorKind::NotFound,
                reason,
            })
        };
        match self.inner.getter.get(&rec.driver).await {
            Ok(h) => match rec.driver_id.as_deref() {
                Some(id) if !h.id.is_empty() && h.id != id => gone(orphan_text(rec, id)),
                _ => Lookup::Driver(h),
            },
            Err(e) if e.kind() == ErrorKind::NotFound => Lookup::Gone(e),
            Err(e) => match self.orphan_reason(rec).await {
                Some(reason) => gone(reason),
                None => Lookup::Failed(e),
            },
        }
    }

    /// The plugin the volume's reference is held on: by id when recorded, so an orphan's
    /// release never touches a newer plugin of the same name.
    fn reference_target(record: &VolumeRecord) -> &str {
        record.driver_id.as_deref().unwrap_or(&record.driver)
    }

    fn ready(&self, name: &str) -> Option<VolumeRecord> {
        lock(&self.inner.index)
            .get(name)
            .filter(|r| r.state == RecordState::Ready)
            .cloned()
    }

    async fn save(&self, record: &VolumeRecord) -> Result<()> {
        let dir = self.inner.records.clone();
        let record = record.clone();
        tokio::task::spawn_blocking(move || dir.save(&record)).await?
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let dir = self.inner.records.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || dir.delete(&name)).await?
    }

    /// Drops the record of a create that failed before the volume became visible.
    async fn discard(&self, record: &VolumeRecord) {
        if let Err(e) = self.delete(&record.name).await {
            // Still `Creating` on disk: the next open releases (a no-op) and deletes it.
            tracing::error!(volume = %record.name, error = %e, "cannot delete the record of a failed create");
        }
    }

    /// Releases the volume's reference; a failure is logged, not returned, because the volume
    /// is going away either way and an error here would leave the caller unable to finish.
    async fn release_logged(&self, record: &VolumeRecord) {
        if let Err(e) = self
            .inner
            .getter
            .release(Self::reference_target(record), &record.holder())
            .await
        {
            tracing::error!(volume = %record.name, driver = %record.driver, error = %e, "cannot release the volume's plugin reference");
        }
    }

    /// Finishes a create or remove interrupted by a crash: releases the reference it may have
    /// taken and deletes its record. Errors leave the record for the next attempt.
    async fn finish_interrupted(&self, record: &VolumeRecord) -> Result<()> {
        self.inner
            .getter
            .release(Self::reference_target(record), &holder(&record.name))
            .await?;
        self.delete(&record.name).await?;
        lock(&self.inner.index).remove(&record.name);
        tracing::info!(volume = %record.name, state = ?record.state, "finished an interrupted volume operation");
        Ok(())
    }
}

/// What [`VolumeService::lookup`] found.
enum Lookup {
    /// The volume's driver, enabled.
    Driver(DriverHandle),
    /// The driver is gone for good: the volume is an orphan.
    Gone(VolumeError),
    /// The driver exists but cannot be used now (disabled, not a volume driver).
    Failed(VolumeError),
}

fn orphan_text(rec: &VolumeRecord, id: &str) -> String {
    format!(
        "plugin {} (id {id}) that created this volume was removed; its data went with it",
        rec.driver
    )
}

fn status_error(text: String) -> serde_json::Map<String, serde_json::Value> {
    serde_json::Map::from_iter([("Error".to_owned(), serde_json::Value::String(text))])
}

/// One async lock per volume name, created on demand and dropped when nobody holds or waits
/// for it, so the map does not grow with every name ever used.
#[derive(Debug, Default)]
struct NameLocks {
    map: StdMutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

struct NameGuard<'a> {
    locks: &'a NameLocks,
    name: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl NameLocks {
    async fn lock(&self, name: &str) -> NameGuard<'_> {
        let m = Arc::clone(lock(&self.map).entry(name.to_owned()).or_default());
        let guard = m.lock_owned().await;
        NameGuard {
            locks: self,
            name: name.to_owned(),
            guard: Some(guard),
        }
    }
}

impl Drop for NameGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = lock(&self.locks.map);
        // Only the map's own Arc left: nobody holds or waits for this name.
        if map
            .get(&self.name)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn name_locks_serialise_one_name_and_clean_up() {
        let locks = Arc::new(NameLocks::default());
        let g = locks.lock("a").await;
        // Another name is independent.
        let other = locks.lock("b").await;
        drop(other);
        let l2 = Arc::clone(&locks);
        let waiter = tokio::spawn(async move {
            let _g = l2.lock("a").await;
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert_eq!(lock(&locks.map).len(), 1, "b was removed, a is held");
        drop(g);
        waiter.await.unwrap();
        assert!(lock(&locks.map).is_empty());
    }
}
