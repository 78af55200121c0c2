//! [`Manager`]: the plugin lifecycle (create, enable, disable, remove, set, references),
//! supervision of running plugins, and restore across restarts of plugind.
//!
//! Concurrency: every operation on one plugin takes that plugin's async lock, so enable,
//! disable, remove and exit handling of one plugin never interleave; different plugins
//! proceed in parallel. Task events arrive from the executor in order per task and are handled
//! in a [`KeyedQueue`] keyed by plugin id.

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex as StdMutex},
    time::{Duration, Instant, SystemTime},
};

use plugind_blobstore::BlobStore;
use plugind_bundle::Bundle;
use plugind_executor::{CreateTask, Executor, ExitInfo};
use plugind_queue::KeyedQueue;
use plugind_store::{PluginRecord, RunState, Store};
use plugind_sys::lock::LockFile;
use plugind_types::{config::PluginConfig, config::PluginRootfs, PluginId, Reference};
use tokio::sync::{watch, Mutex as AsyncMutex};

mod create;
mod health;
mod plugin_set;
mod push;
mod remote;
mod restore;
mod scrape;
mod supervise;
mod task;

pub use health::{
    parse_duration, HealthPolicy, HealthReport, HealthStatus, ProbeResult, HEALTH_INTERVAL,
    HEALTH_RETRIES, HEALTH_TIMEOUT, OPTION_PREFIX,
};
pub use plugin_set::{
    privileges_accepted, settings_drift, EntryState, EntryStatus, PluginSet, PluginSetEntry,
    PluginSetStatus, PRIVILEGE_NAMES,
};
pub use push::PushOutcome;
pub use remote::{PullNames, RemoteRequest};
pub use supervise::TaskEventReceiver;

use crate::{
    backoff::RestartPolicy,
    client::PluginClient,
    error::{ManagerError, Result},
    events::{EventHub, PluginEvent},
    layer::{self, LayerLimits},
};

/// Docker's start deadline for a plugin's socket (`pluginPostStart`: a first dial after 500 ms,
/// then up to three more 3 s apart, failing 3 s after the last).
pub const DOCKER_START_DEADLINE: Duration = Duration::from_millis(12_500);

/// Everything the manager needs to know; built by the daemon from its configuration.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// State root (`/var/lib/plugind`): records, rootfs, blobs.
    pub root: PathBuf,
    /// Exec root (`/run/plugind`): bundles, plugin runtime directories, sockets.
    pub exec_root: PathBuf,
    /// Leave plugins running across plugind restarts and re-attach to them.
    pub live_restore: bool,
    /// Grace between SIGTERM and SIGKILL when stopping a plugin (Docker: 10 s).
    pub stop_grace: Duration,
    /// How long a start (enable, restart, restore) waits for the plugin's socket before it
    /// fails: Docker dials after 0.5 s and then every 3 s, giving up after 12.5 s.
    pub default_ready_timeout: Duration,
    /// Restart policy for unexpected exits.
    pub restart: RestartPolicy,
    /// Limits for create tars and layers.
    pub layer_limits: LayerLimits,
    /// The most bytes read from one plugin HTTP answer (volume calls included).
    pub max_plugin_answer_bytes: usize,
    /// Reported as `Config.DockerVersion` of created plugins.
    pub docker_version: String,
    /// How registries are reached (install, upgrade, push, privileges).
    pub registry: plugind_distribution::RegistryOptions,
    /// Health checks of running plugins (overridable per plugin with `plugind.health.*`).
    pub health: HealthPolicy,
    /// Bounds of the durable event history under `<root>/events/`.
    pub events: crate::events::journal::JournalConfig,
}

impl ManagerConfig {
    /// Defaults for the given roots: no live restore, 10 s grace, Docker's 12.5 s start deadline.
    pub fn new(root: &Path, exec_root: &Path) -> Self {
        ManagerConfig {
            root: root.to_path_buf(),
            exec_root: exec_root.to_path_buf(),
            live_restore: false,
            stop_grace: Duration::from_secs(10),
            default_ready_timeout: DOCKER_START_DEADLINE,
            restart: RestartPolicy::DEFAULT,
            layer_limits: LayerLimits::DEFAULT,
            max_plugin_answer_bytes: crate::client::DEFAULT_MAX_ANSWER_BYTES,
            docker_version: concat!("plugind-", env!("CARGO_PKG_VERSION")).to_owned(),
            registry: plugind_distribution::RegistryOptions::default(),
            health: HealthPolicy::DEFAULT,
            events: crate::events::journal::JournalConfig::DEFAULT,
        }
    }

    fn bundles_dir(&self) -> PathBuf {
        self.exec_root.join("bundles")
    }
}

/// A plugin handed to a consumer by [`Manager::acquire`].
#[derive(Debug, Clone)]
pub struct PluginHandle {
    /// The plugin's id.
    pub id: PluginId,
    /// The plugin's full name.
    pub name: String,
    /// A client for the plugin's socket.
    pub client: PluginClient,
}

/// What restore found at start.
#[derive(Debug, Default)]
pub struct RestoreReport {
    /// Plugins re-attached while running (live restore).
    pub reattached: Vec<PluginId>,
    /// Plugins started because they were desired enabled but not running.
    pub started: Vec<PluginId>,
    /// Plugins that could not be started, with the reason.
    pub failed: Vec<(PluginId, String)>,
    /// Records that could not be read and were moved aside.
    pub quarantined: Vec<PathBuf>,
    /// Tasks, shims and bundles of an earlier run that nothing tracks (a killed enable, an
    /// unadoptable task), torn down: their ids.
    pub destroyed: Vec<String>,
}

/// A plugin as the API shows it: the record plus live facts.
#[derive(Debug, Clone)]
pub struct PluginView {
    /// The stored record (Docker's object and plugind's state).
    pub record: PluginRecord,
    /// Interfaces the plugin answered to `Plugin.Activate`, if it answered.
    pub implements: Option<Vec<String>>,
    /// The health of the running task (`None` while it does not run).
    pub health: Option<HealthReport>,
}

/// The running task of a plugin, as the manager tracks it.
#[derive(Debug)]
struct Running {
    pid: u32,
    started: Instant,
}

/// Per-plugin live state, kept in memory only.
#[derive(Debug, Default)]
struct Live {
    running: Option<Running>,
    /// Set while the manager itself stops the task, so its exit is not an unexpected one.
    stopping: bool,
    /// Why the last stop failed, while the executor has not confirmed the task gone (`running`
    /// is then kept, so nothing deletes the bundle of a task that may still run; the next
    /// enable, disable or remove tries the stop again).
    stop_error: Option<String>,
    /// Exits are published here while someone (enable, disable) waits for them.
    exit_tx: Option<watch::Sender<Option<ExitInfo>>>,
    fast_failures: u32,
    /// Bumped on every enable/disable so a stale restart timer does nothing.
    generation: u64,
    implements: Option<Vec<String>>,
    /// `enable?timeout=`: the deadline of every later call to the plugin (Docker's client
    /// timeout); kept across restarts of the task, not across restarts of plugind (as Docker).
    call_timeout: Option<Duration>,
    /// The health monitor of the running task.
    health: Option<health::HealthState>,
}

struct Inner {
    config: ManagerConfig,
    store: Store,
    blobs: BlobStore,
    executor: Arc<dyn Executor>,
    events: EventHub,
    /// One async lock per plugin: lifecycle operations of one plugin run one at a time.
    locks: StdMutex<HashMap<PluginId, Arc<AsyncMutex<()>>>>,
    live: StdMutex<HashMap<PluginId, Live>>,
    queue: KeyedQueue<PluginId>,
    /// A create holds it shared only while it commits a blob and adds it to `pending_blobs`
    /// (never across the client's upload); a sweep holds it exclusively, so it never deletes a
    /// blob a create is about to use.
    gc: std::sync::RwLock<()>,
    /// Blobs committed by creates in progress and not yet referenced by a record. A create
    /// adds its blob here while holding `gc` shared for the short commit only (never across
    /// the client's upload); sweeps treat these as live.
    pending_blobs: StdMutex<HashMap<plugind_types::Digest, usize>>,
    shutting_down: std::sync::atomic::AtomicBool,
    /// Tasks the manager spawned (event loop, restart timers, blob sweeps), joined at shutdown.
    background: StdMutex<tokio::task::JoinSet<()>>,
    /// Tells the event loop to stop (at shutdown).
    stop_events: watch::Sender<bool>,
    /// The quarantined plugin directories, as found (and pruned) at start; only a start
    /// quarantines, so this stays true without reading the disk again.
    quarantine: Vec<PathBuf>,
    /// The registry client (its error when it could not be built, e.g. no TLS roots).
    registry: std::result::Result<plugind_distribution::Registry, String>,
    /// The declarative plugin set and its runner's status.
    plugin_set: plugin_set::PluginSetRunner,
    /// The daemon's health policy in force (starts as `config.health`; SIGHUP may change it).
    health: StdMutex<HealthPolicy>,
    /// Wakes every health monitor when a policy changes (a reload, or a `set` of plugind's
    /// health options), so a shorter interval applies now, not after the old one.
    health_changed: tokio::sync::Notify,
    /// Held for the manager's lifetime: two daemons must never share one root.
    _root_lock: LockFile,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("root", &self.config.root)
            .finish_non_exhaustive()
    }
}

/// The plugin manager. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

use plugind_sys::sync::lock;

impl Manager {
    /// Opens the state root (taking its lock), reloads records, and restores plugins: with
    /// live restore, running plugins are re-attached; plugins desired enabled but not running
    /// are started. `events` is the receiving end of the channel given to the executor as its
    /// event handler (bounded in the daemon, so a slow manager holds events back, never drops
    /// them).
    pub async fn start(
        config: ManagerConfig,
        executor: Arc<dyn Executor>,
        events: impl Into<TaskEventReceiver>,
    ) -> Result<(Manager, RestoreReport)> {
        let began = Instant::now();
        // Opening walks and repairs the roots (fsyncs, removals): off the async workers.
        let opened = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || Self::open_roots(&config)).await??
        };
        let (root_lock, store, reload, blobs) = opened;
        tracing::debug!(elapsed = ?began.elapsed(), "start: roots and store open");
        // The durable event history; without it events still flow, kept in memory only.
        let journal = {
            let dir = config.root.join("events");
            let bounds = config.events;
            tokio::task::spawn_blocking(move || crate::events::journal::Journal::open(&dir, bounds))
                .await?
        };
        let event_hub = match journal {
            Ok(journal) => EventHub::with_journal(1024, journal),
            Err(e) => {
                tracing::warn!(error = %e, "event log unavailable: events are kept in memory only");
                EventHub::new(1024)
            }
        };
        let store_quarantine = store.quarantined();
        let registry =
            plugind_distribution::Registry::new(config.registry.clone()).map_err(|e| e.to_string());
        if let Err(e) = &registry {
            tracing::warn!(error = %e, "registry client unavailable: install, upgrade and push will fail");
        }
        let manager = Manager {
            inner: Arc::new(Inner {
                health: StdMutex::new(config.health),
                health_changed: tokio::sync::Notify::new(),
                config,
                store,
                blobs,
                executor,
                events: event_hub,
                locks: StdMutex::new(HashMap::new()),
                live: StdMutex::new(HashMap::new()),
                queue: KeyedQueue::new(4096),
                gc: std::sync::RwLock::new(()),
                pending_blobs: StdMutex::new(HashMap::new()),
                shutting_down: std::sync::atomic::AtomicBool::new(false),
                background: StdMutex::new(tokio::task::JoinSet::new()),
                stop_events: watch::channel(false).0,
                quarantine: store_quarantine,
                registry,
                plugin_set: Default::default(),
                _root_lock: root_lock,
            }),
        };
        tracing::debug!(elapsed = ?began.elapsed(), "start: roots, store and journal open");
        manager.spawn_event_loop(events.into());
        // Partial ingests of killed creates, and blobs they committed without a record: no
        // create of this run exists yet, so nothing is in flight and no grace is needed (a
        // grace period would restart with every restart and never expire). Then the output of
        // plugins that are gone (removed while down, or a crash cut the removal). Both walk
        // directories while restore mostly waits on shims and plugin sockets: they overlap it
        // (restore neither reads blobs nor writes logs of plugins without a record), and start
        // returns only once they are done, before any create can run.
        let this = manager.clone();
        let sweeps = tokio::task::spawn_blocking(move || {
            this.sweep_blobs_with(Duration::ZERO);
            let inner = &this.inner;
            if let Some(logs) = inner.executor.log_path("x").parent() {
                for p in plugind_executor::sweep_log_files(logs, |id| {
                    // Only files named by a plugin id are ours to judge.
                    PluginId::parse(id).map_or(true, |id| inner.store.get(&id).is_some())
                }) {
                    tracing::info!(path = %p.display(), "deleted the log of a removed plugin");
                }
            }
        });
        let mut report = manager.restore().await;
        tracing::debug!(elapsed = ?began.elapsed(), "start: restored");
        sweeps.await?;
        tracing::debug!(elapsed = ?began.elapsed(), "start: blobs and logs swept");
        report.quarantined = reload
            .quarantined
            .iter()
            .map(|q| q.moved_to.clone())
            .collect();
        Ok((manager, report))
    }

    /// The blocking half of [`Manager::start`]: takes the root lock, reloads the store, opens
    /// the blob store and removes leftovers of interrupted creates and bundle deletions.
    #[allow(clippy::type_complexity)]
    fn open_roots(
        config: &ManagerConfig,
    ) -> Result<(LockFile, Store, plugind_store::ReloadReport, BlobStore)> {
        fs::create_dir_all(&config.root).map_err(|e| {
            ManagerError::Sys(plugind_sys::SysError::Io {
                op: "create directory",
                path: config.root.clone(),
                source: e,
            })
        })?;
        let lock_path = config.root.join("plugind.lock");
        let root_lock = match LockFile::try_exclusive_with_pid(&lock_path) {
            Ok(l) => l,
            Err(plugind_sys::SysError::Locked { .. }) => {
                let pid = fs::read_to_string(&lock_path)
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                return Err(ManagerError::RootLocked {
                    root: config.root.clone(),
                    pid,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let (store, reload) = Store::open(&config.root)?;
        remote::repair_upgrades(&store);
        let blobs = BlobStore::open(&config.root.join("storage"))?;
        for dir in [
            config.exec_root.join("plugins"),
            config.bundles_dir(),
            config.root.join("tmp"),
        ] {
            plugind_sys::fs::create_dir_durable(&dir, 0o711)?;
        }
        // Leftovers of create attempts interrupted by a crash.
        if let Ok(entries) = fs::read_dir(config.root.join("tmp")) {
            for e in entries.flatten() {
                let _ = fs::remove_dir_all(e.path()).or_else(|_| fs::remove_file(e.path()));
            }
        }
        plugind_bundle::Bundle::sweep_deleting(&config.bundles_dir())?;
        Ok((root_lock, store, reload, blobs))
    }

    /// The quarantined plugin directories kept for inspection (bounded; see
    /// `plugind_store::QUARANTINE_MAX_ENTRIES`), oldest first.
    pub fn quarantined(&self) -> Vec<PathBuf> {
        self.inner.quarantine.clone()
    }

    /// Runs `f` on the blocking pool: store writes fsync, bundle preparation and removals walk
    /// trees, and none of that may stall the async workers serving the API.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Manager) -> T + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        Ok(tokio::task::spawn_blocking(move || f(&this)).await?)
    }

    /// [`Store::update`] on the blocking pool (it fsyncs).
    async fn update(
        &self,
        id: &PluginId,
        f: impl FnOnce(&mut PluginRecord) + Send + 'static,
    ) -> Result<PluginRecord> {
        let id = id.clone();
        Ok(self
            .blocking(move |m| m.inner.store.update(&id, f))
            .await??)
    }

    /// The event hub (for `/events`).
    pub fn events(&self) -> &EventHub {
        &self.inner.events
    }

    /// The manager's configuration.
    pub fn config(&self) -> &ManagerConfig {
        &self.inner.config
    }

    /// Resolves `name` and takes the plugin's lifecycle lock; the record is read again under
    /// the lock, so it reflects every operation that finished before.
    async fn lock_plugin(
        &self,
        name: &str,
    ) -> Result<(tokio::sync::OwnedMutexGuard<()>, PluginRecord)> {
        let id = self.inner.store.resolve(name)?.id().clone();
        let held = self.plugin_lock(&id).lock_owned().await;
        let record =
            self.inner
                .store
                .get(&id)
                .ok_or_else(|| plugind_store::StoreError::NotFound {
                    input: name.to_owned(),
                })?;
        Ok((held, record))
    }

    fn plugin_lock(&self, id: &PluginId) -> Arc<AsyncMutex<()>> {
        lock(&self.inner.locks)
            .entry(id.clone())
            .or_default()
            .clone()
    }

    fn publish(&self, action: &str, record: &PluginRecord) {
        self.publish_as(action, record, record.name());
    }

    /// Publishes with `Attributes.name` = `name_given`: Docker logs enable, disable and remove
    /// with the reference exactly as the client wrote it (`LogPluginEvent(id, refOrID, ..)`).
    fn publish_as(&self, action: &str, record: &PluginRecord, name_given: &str) {
        self.inner
            .events
            .publish(PluginEvent::now(action, record.id(), name_given));
    }

    // ----- queries -----------------------------------------------------------------------

    /// The host directories behind a plugin's in-plugin paths: its root filesystem and its
    /// propagated-mount directory (what Docker's `ScopedPath` maps answers into).
    pub fn host_dirs(&self, id: &PluginId) -> (PathBuf, PathBuf) {
        (
            self.inner.store.rootfs_dir(id),
            self.inner.store.propagated_mount_dir(id),
        )
    }

    /// Every plugin.
    pub fn list(&self) -> Vec<PluginView> {
        self.inner
            .store
            .list()
            .into_iter()
            .map(|r| self.view(r))
            .collect()
    }

    /// One plugin, looked up by full id, name or unique id prefix.
    pub fn inspect(&self, name: &str) -> Result<PluginView> {
        Ok(self.view(self.inner.store.resolve(name)?))
    }

    fn view(&self, record: PluginRecord) -> PluginView {
        let implements = lock(&self.inner.live)
            .get(record.id())
            .and_then(|l| l.implements.clone());
        let health = self.health_of(record.id());
        PluginView {
            record,
            implements,
            health,
        }
    }

    /// The host path of the plugin's log file (`<exec-root>/logs/<id>.log`).
    pub fn log_path(&self, name: &str) -> Result<PathBuf> {
        let record = self.inner.store.resolve(name)?;
        Ok(self.inner.executor.log_path(record.id().as_str()))
    }

    // ----- create ------------------------------------------------------------------------

    /// Enables a plugin: starts its task and waits until its socket accepts a connection (the
    /// start deadline of the config). `timeout` is Docker's `enable?timeout=`: the deadline of
    /// every later call to the plugin (`None` or zero: the callers' own deadlines). On failure
    /// the task is stopped, the observed state says why, and the desired state is unchanged.
    pub async fn enable(&self, name: &str, timeout: Option<Duration>) -> Result<()> {
        let (_held, record) = self.lock_plugin(name).await?;
        let id = record.id().clone();
        if record.desired_enabled() && self.is_running(&id) && !self.stop_failed(&id) {
            return Err(ManagerError::AlreadyEnabled {
                name: record.name().to_owned(),
            });
        }
        {
            let mut live = lock(&self.inner.live);
            let l = live.entry(id.clone()).or_default();
            l.generation += 1;
            l.fast_failures = 0;
            l.call_timeout = timeout.filter(|t| !t.is_zero());
        }
        let timeout = self.inner.config.default_ready_timeout;
        let started = Instant::now();
        match self.start_task(&record, timeout).await {
            Ok(pid) => {
                crate::metrics::Metrics::global()
                    .enable_seconds
                    .observe(started.elapsed().as_secs_f64());
                // A crash here leaves a running task whose record says disabled: the next start
                // finds its bundle and stops it (the bundle is the intent, written first).
                plugind_sys::failpoint::hit("enable-after-task-start");
                let record = self
                    .update(&id, move |r| {
                        r.plugin.enabled = true;
                        r.state.observed.state = RunState::Running { pid };
                        r.state.observed.restart_count = 0;
                    })
                    .await?;
                self.publish_as("enable", &record, name);
                Ok(())
            }
            Err(e) => {
                let reason = e.to_string();
                let _ = self
                    .update(&id, move |r| {
                        r.state.observed.state = RunState::Failed { reason }
                    })
                    .await;
                Err(e)
            }
        }
    }

    fn is_running(&self, id: &PluginId) -> bool {
        lock(&self.inner.live)
            .get(id)
            .is_some_and(|l| l.running.is_some())
    }

    /// The last stop of the plugin's task failed and the task was not confirmed gone.
    fn stop_failed(&self, id: &PluginId) -> bool {
        lock(&self.inner.live)
            .get(id)
            .is_some_and(|l| l.stop_error.is_some())
    }

    /// Disables a plugin: refused while references are held unless `force`; stops its task
    /// (SIGTERM, grace, SIGKILL) and cleans up.
    pub async fn disable(&self, name: &str, force: bool) -> Result<()> {
        let (_held, record) = self.lock_plugin(name).await?;
        let id = record.id().clone();
        if !record.desired_enabled() && !self.is_running(&id) {
            return Err(ManagerError::AlreadyDisabled {
                name: record.name().to_owned(),
            });
        }
        if record.ref_count() > 0 && !force {
            return Err(ManagerError::InUse {
                name: record.name().to_owned(),
            });
        }
        if let Some(l) = lock(&self.inner.live).get_mut(&id) {
            l.generation += 1;
        }
        let record = self.update(&id, |r| r.plugin.enabled = false).await?;
        // A crash here leaves a disabled record whose task runs: the next start stops it.
        plugind_sys::failpoint::hit("disable-after-record");
        let exit = self
            .stop_task(&id)
            .await
            .map_err(|reason| ManagerError::StopFailed {
                name: record.name().to_owned(),
                reason,
            })?;
        let record = self
            .update(&id, move |r| {
                r.state.observed.state = RunState::Stopped;
                if let Some(exit) = exit {
                    r.state.observed.last_exit = Some(exit_record(&exit));
                }
            })
            .await
            .unwrap_or(record);
        self.publish_as("disable", &record, name);
        Ok(())
    }

    /// Removes a plugin: refused while enabled or in use unless `force` (which disables it
    /// first). The plugin directory is renamed to `<id>-removing` before deletion, so a crash
    /// half-way is finished at the next start; unreferenced blobs are swept afterwards.
    pub async fn remove(&self, name: &str, force: bool) -> Result<()> {
        let (_held, record) = self.lock_plugin(name).await?;
        let id = record.id().clone();
        if !force {
            if record.ref_count() > 0 {
                return Err(ManagerError::InUse {
                    name: record.name().to_owned(),
                });
            }
            if record.desired_enabled() || self.is_running(&id) {
                return Err(ManagerError::IsEnabled {
                    name: record.name().to_owned(),
                });
            }
        }
        if let Some(l) = lock(&self.inner.live).get_mut(&id) {
            l.generation += 1;
        }
        if self.is_running(&id) || record.desired_enabled() {
            // A plugin whose task may still run is not removed: its rootfs is in use.
            self.stop_task(&id)
                .await
                .map_err(|reason| ManagerError::StopFailed {
                    name: record.name().to_owned(),
                    reason,
                })?;
        }
        // Renaming, unmounting and deleting a whole rootfs: on the blocking pool.
        let removed_id = id.clone();
        self.blocking(move |m| -> Result<()> {
            let removing = m.inner.store.begin_remove(&removed_id)?;
            if let Err(e) = plugind_bundle::mounts::unmount_under(&removing) {
                tracing::warn!(plugin = %removed_id, error = %e, "unmounting removed plugin failed");
            }
            m.inner.store.finish_remove(&removing)?;
            Ok(())
        })
        .await??;
        lock(&self.inner.live).remove(&id);
        lock(&self.inner.locks).remove(&id);
        // The plugin's output goes with it: it may hold secrets, and it fills the exec root.
        let log = self.inner.executor.log_path(id.as_str());
        let removed = tokio::task::spawn_blocking(move || {
            if let Err(e) = plugind_executor::remove_log_files(&log) {
                tracing::warn!(path = %log.display(), error = %e, "cannot delete plugin log");
            }
        });
        let _ = removed.await;
        let this = self.clone();
        self.spawn_background(async move {
            let _ = tokio::task::spawn_blocking(move || this.sweep_blobs()).await;
        });
        self.publish_as("remove", &record, name);
        Ok(())
    }

    /// Applies `set` arguments (`NAME=value`, `mount.source=/x`, `args=...`); refused while
    /// the plugin is enabled. All or nothing: a failing argument changes nothing.
    ///
    /// Arguments under plugind's own namespace (`plugind.health.interval=10s`, see
    /// [`OPTION_PREFIX`]) are plugind's options: they do not change the plugin's spec, so a
    /// `set` of only such arguments is accepted while the plugin is enabled and applies at once
    /// (the plugin's health monitor is woken).
    pub async fn set(&self, name: &str, args: &[String]) -> Result<()> {
        let (_held, record) = self.lock_plugin(name).await?;
        let (ours, docker): (Vec<&String>, Vec<&String>) =
            args.iter().partition(|a| health::is_option(a));
        let options = ours
            .into_iter()
            .map(|a| health::parse_option(a))
            .collect::<Result<Vec<_>>>()?;
        let docker: Vec<String> = docker.into_iter().cloned().collect();
        self.blocking(move |m| {
            m.inner.store.try_update::<ManagerError>(record.id(), |r| {
                if !docker.is_empty() {
                    if r.desired_enabled() {
                        return Err(ManagerError::SetWhileEnabled);
                    }
                    plugind_store::apply_settings(
                        &mut r.plugin.config,
                        &mut r.plugin.settings,
                        &docker,
                    )?;
                }
                r.state.options.extend(options);
                Ok(())
            })
        })
        .await??;
        self.inner.health_changed.notify_waiters();
        Ok(())
    }

    // ----- references -------------------------------------------------------------------

    /// Takes a reference on an enabled plugin implementing `capability` for `holder` (e.g.
    /// `volume:<name>`); persisted, so it survives restarts. Docker's plugin getter.
    pub async fn acquire(
        &self,
        name: &str,
        capability: &str,
        holder: &str,
    ) -> Result<PluginHandle> {
        let record = self.usable(name, capability)?;
        let holder = holder.to_owned();
        let record = self
            .update(record.id(), move |r| r.acquire(&holder))
            .await?;
        self.handle(&record)
    }

    /// A handle for an enabled plugin without taking a reference (for calls on behalf of an
    /// object that already holds one, e.g. after a restart).
    pub fn get_enabled(&self, name: &str, capability: &str) -> Result<PluginHandle> {
        let record = self.usable(name, capability)?;
        self.handle(&record)
    }

    /// Releases one reference of `holder` on the plugin (by id or name); unknown plugins and
    /// holders are ignored, so release is idempotent.
    pub async fn release(&self, name: &str, holder: &str) -> Result<()> {
        let Ok(record) = self.inner.store.resolve(name) else {
            return Ok(());
        };
        let holder = holder.to_owned();
        self.update(record.id(), move |r| {
            r.release(&holder);
        })
        .await?;
        Ok(())
    }

    /// The plugin named `name` if it implements `capability` and is enabled and running.
    fn usable(&self, name: &str, capability: &str) -> Result<PluginRecord> {
        let record = self.inner.store.resolve(name)?;
        if !record.plugin.config.capabilities().any(|c| c == capability) {
            return Err(ManagerError::NoCapability {
                name: record.name().to_owned(),
                capability: capability.to_owned(),
            });
        }
        if !record.desired_enabled() || !self.is_running(record.id()) {
            return Err(ManagerError::NotEnabled {
                name: record.name().to_owned(),
            });
        }
        Ok(record)
    }

    /// The host path of the plugin's socket: the one place enable, `handle()` and everything
    /// else get it from (same default for an empty `Socket`, same component check).
    fn socket_path(&self, record: &PluginRecord) -> Result<PathBuf> {
        Ok(plugind_bundle::socket::plugin_socket_path(
            &self.inner.config.exec_root,
            record.id(),
            record.plugin.config.interface.socket_name(),
        )?)
    }

    fn handle(&self, record: &PluginRecord) -> Result<PluginHandle> {
        let socket = self.socket_path(record)?;
        let call_timeout = lock(&self.inner.live)
            .get(record.id())
            .and_then(|l| l.call_timeout);
        Ok(PluginHandle {
            id: record.id().clone(),
            name: record.name().to_owned(),
            client: PluginClient::new(record.name(), &socket)
                .with_max_answer_bytes(self.inner.config.max_plugin_answer_bytes)
                .with_timeout(call_timeout),
        })
    }
}

enum NotReady {
    Exited(ExitInfo),
    Timeout,
}

fn exit_record(exit: &ExitInfo) -> plugind_store::ExitRecord {
    plugind_store::ExitRecord {
        status: exit.status,
        at: exit.exited_at.unwrap_or_else(SystemTime::now),
    }
}

/// Refuses a stranger's config whose paths would leave the plugin's box (see
/// `plugind_types::validate`), including a socket name too long for a unix socket under
/// this exec root. Reusable by install.
pub(crate) fn check_config(config: &PluginConfig, exec_root: &Path, id: &PluginId) -> Result<()> {
    use plugind_types::validate::{InvalidConfig, PathRule};
    config.validate()?;
    let socket = config.interface.socket_name();
    match plugind_bundle::socket::plugin_socket_path(exec_root, id, socket) {
        Ok(_) => Ok(()),
        Err(plugind_bundle::BundleError::SocketPathTooLong { len, max, .. }) => Err(
            InvalidConfig::new("Interface.Socket", socket, PathRule::TooLong { len, max }).into(),
        ),
        Err(e) => Err(e.into()),
    }
}

fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> ManagerError {
    ManagerError::Sys(plugind_sys::SysError::Io {
        op,
        path: path.to_path_buf(),
        source,
    })
}
