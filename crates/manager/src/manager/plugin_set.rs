//! The declarative plugin set: a list of plugins (remote reference, local alias, settings,
//! accepted privileges, enabled) that the manager keeps installed and configured, as an
//! operator's configuration management ships it to every host (`[[plugin]]` tables of the
//! daemon's file).
//!
//! [`Manager::apply_plugin_set`] hands a new set over and returns at once; one background
//! runner reconciles it, so neither the daemon's start nor its readiness wait for registries.
//! Runs are serialized: a new set given during a run queues exactly one more run (a
//! `Notify` permit), and each run works on the latest set. For each entry, in order and each
//! on its own (one entry's failure never stops the others), the runner:
//! - installs a missing plugin through [`Manager::pull`], after checking that every privilege
//!   the plugin asks for is among the entry's accepted ones;
//! - upgrades a plugin whose stored reference differs from the entry's: a running plugin is
//!   disabled, upgraded through [`Manager::upgrade`] and enabled again (re-enabled as it was
//!   when the upgrade fails); a plugin in use is left alone and reported as drift;
//! - applies the entry's settings when they would change the plugin (the store's `set` rules,
//!   which need the plugin disabled: disable, set, enable; not while in use);
//! - enables or disables it as the entry says (not disabling a plugin in use).
//!
//! Registry credentials come from the entry's auth file (read at each attempt), else none.
//! A tag that moves in the registry is not followed: an entry is in sync once the plugin was
//! installed from its reference (change the reference, or pin a digest, to upgrade).
//!
//! With `prune`, installed plugins no entry names are removed (disabled first), except those
//! in use. A failed entry is retried with capped exponential backoff; a new set resets the
//! backoff. Every action publishes the manager's usual plugin events (`pull`, `enable`,
//! `disable`, `remove`, named with the alias); each change of an entry's status publishes a
//! plugind `reconcile` plugin event (`status` = `in-sync`, `drift` or `failed`, `reason`). The
//! last status of every entry is [`Manager::plugin_set_status`] (`info`'s `PluginD.PluginSet`).

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicBool, Ordering},
};

use plugind_distribution::AuthConfig;
use plugind_store::PluginPrivilege;

use super::*;
use crate::manager::remote::RemoteRequest;

/// Privilege names a plugin can ask for (moby's `computePrivileges`), the only keys an entry's
/// accepted privileges may use.
pub const PRIVILEGE_NAMES: [&str; 7] = [
    "network",
    "host ipc namespace",
    "host pid namespace",
    "mount",
    "device",
    "allow-all-devices",
    "capabilities",
];

/// First wait before a failed entry is tried again; doubled per failure up to
/// [`RETRY_MAX`].
pub const RETRY_INITIAL: Duration = Duration::from_secs(5);
/// Longest wait between two attempts of a failed entry.
pub const RETRY_MAX: Duration = Duration::from_secs(300);

/// One plugin of the set, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSetEntry {
    /// The remote and the local name (the alias, normalised with its tag).
    pub names: PullNames,
    /// `docker plugin set` arguments (`KEY=VALUE`, `mount.source=…`, `args=…`).
    pub settings: Vec<String>,
    /// The privileges the operator accepts, by name; a plugin asking for a value not listed
    /// here is not installed.
    pub accepted: BTreeMap<String, Vec<String>>,
    /// Whether the plugin should run.
    pub enabled: bool,
    /// A file with the registry credentials (see `credentials_from_file`); anonymous when
    /// `None`. Read at each attempt, so a rotated secret is picked up without a reload.
    pub auth_file: Option<PathBuf>,
}

impl PluginSetEntry {
    /// Checks one entry: the reference and alias as `docker plugin install REF --alias NAME`
    /// checks them, settings of the form `KEY=VALUE`, privilege names Docker knows.
    /// `what` names the entry in errors (e.g. `plugin 2`).
    pub fn parse(
        what: &str,
        reference: &str,
        alias: Option<&str>,
        settings: Vec<String>,
        accepted: BTreeMap<String, Vec<String>>,
        enabled: bool,
    ) -> Result<PluginSetEntry> {
        let invalid = |reason: String| ManagerError::InvalidPluginSet {
            entry: what.to_owned(),
            reason,
        };
        let names = PullNames::parse(reference, alias.unwrap_or(""))
            .map_err(|e| invalid(format!("reference {reference:?}: {e}")))?;
        for arg in &settings {
            if !matches!(arg.split_once('='), Some((key, _)) if !key.is_empty()) {
                return Err(invalid(format!(
                    "setting {arg:?} is not of the form KEY=VALUE"
                )));
            }
        }
        for name in accepted.keys() {
            if !PRIVILEGE_NAMES.contains(&name.as_str()) {
                return Err(invalid(format!(
                    "unknown privilege {name:?} (known: {})",
                    PRIVILEGE_NAMES.join(", ")
                )));
            }
        }
        Ok(PluginSetEntry {
            names,
            settings,
            accepted,
            enabled,
            auth_file: None,
        })
    }

    /// The entry with its registry credentials read from `path` (an absolute path).
    pub fn with_auth_file(mut self, what: &str, path: &Path) -> Result<PluginSetEntry> {
        if !path.is_absolute() {
            return Err(ManagerError::InvalidPluginSet {
                entry: what.to_owned(),
                reason: format!(
                    "registry auth file {} is not an absolute path",
                    path.display()
                ),
            });
        }
        self.auth_file = Some(path.to_path_buf());
        Ok(self)
    }

    /// The local name the entry manages (`alias:tag`).
    pub fn alias(&self) -> &str {
        &self.names.local
    }
}

/// The whole set: entries with distinct aliases, and whether unlisted plugins are removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginSet {
    entries: Vec<PluginSetEntry>,
    prune: bool,
}

impl PluginSet {
    /// A set; two entries naming the same local plugin are an error.
    pub fn new(entries: Vec<PluginSetEntry>, prune: bool) -> Result<PluginSet> {
        for (i, e) in entries.iter().enumerate() {
            if let Some(j) = entries[..i].iter().position(|f| f.alias() == e.alias()) {
                return Err(ManagerError::InvalidPluginSet {
                    entry: format!("plugin {}", i + 1),
                    reason: format!("alias {:?} is already used by plugin {}", e.alias(), j + 1),
                });
            }
        }
        Ok(PluginSet { entries, prune })
    }

    /// The entries, in the file's order.
    pub fn entries(&self) -> &[PluginSetEntry] {
        &self.entries
    }

    /// Whether plugins no entry names are removed.
    pub fn prune(&self) -> bool {
        self.prune
    }

    /// No entry and no prune: nothing to do.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && !self.prune
    }
}

/// Where an entry stands after its last attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryState {
    /// Not reconciled yet.
    Pending,
    /// The plugin is installed from the entry's reference, with its settings, enabled as
    /// the entry says.
    InSync,
    /// The plugin differs from the entry and the runner left it so on purpose (e.g. in use).
    Drift(String),
    /// The last attempt failed; retried with backoff.
    Failed(String),
}

impl EntryState {
    /// `pending`, `in-sync`, `drift`, `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            EntryState::Pending => "pending",
            EntryState::InSync => "in-sync",
            EntryState::Drift(_) => "drift",
            EntryState::Failed(_) => "failed",
        }
    }

    /// The drift reason or the error; empty otherwise.
    pub fn reason(&self) -> &str {
        match self {
            EntryState::Drift(r) | EntryState::Failed(r) => r,
            _ => "",
        }
    }
}

/// The status of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryStatus {
    /// The local name (`alias:tag`).
    pub alias: String,
    /// The wanted reference (as `PluginReference` shows it).
    pub reference: String,
    /// Where it stands.
    pub state: EntryState,
    /// The last error, kept after a later success until the next failure (cleared when the
    /// entry is in sync).
    pub last_error: Option<String>,
    /// Failures in a row.
    pub failures: u32,
    /// When a failed entry is tried again.
    pub next_retry: Option<SystemTime>,
}

/// What [`Manager::plugin_set_status`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginSetStatus {
    /// A set with entries or prune is configured.
    pub configured: bool,
    /// Unlisted plugins are removed.
    pub prune: bool,
    /// Finished runs since start.
    pub runs: u64,
    /// A run is in progress.
    pub running: bool,
    /// When the last run finished.
    pub last_run: Option<SystemTime>,
    /// One per entry, in the set's order.
    pub entries: Vec<EntryStatus>,
    /// Plugins removed by prune (since start, names).
    pub pruned: Vec<String>,
    /// Unlisted plugins prune left because they are in use (last run, names).
    pub prune_kept: Vec<String>,
}

/// The runner's shared state, one per manager.
pub(super) struct PluginSetRunner {
    desired: StdMutex<PluginSet>,
    /// A new set was given since the runner last looked (backoff is reset).
    fresh: AtomicBool,
    started: AtomicBool,
    wake: tokio::sync::Notify,
    status: watch::Sender<PluginSetStatus>,
}

impl Default for PluginSetRunner {
    fn default() -> Self {
        PluginSetRunner {
            desired: StdMutex::new(PluginSet::default()),
            fresh: AtomicBool::new(false),
            started: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            status: watch::channel(PluginSetStatus::default()).0,
        }
    }
}

/// A failed entry's backoff.
#[derive(Debug, Clone, Copy)]
struct Retry {
    failures: u32,
    at: tokio::time::Instant,
}

fn retry_delay(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    RETRY_INITIAL.saturating_mul(1 << shift).min(RETRY_MAX)
}

/// The largest registry auth file read.
const MAX_AUTH_FILE: u64 = 1 << 20;

/// The credentials for the registry `domain` (a reference's, e.g. `docker.io`,
/// `registry.example.com:5000`) in a registry auth file: either a docker CLI `config.json`
/// (its `auths` object, keyed by registry as `docker login` writes it, Docker Hub as
/// `https://index.docker.io/v1/`; no entry for the registry means anonymous), or one auth object
/// (`username`/`password`, `auth`, `identitytoken`, `registrytoken`, as in `X-Registry-Auth`).
pub fn credentials_from_file(
    bytes: &[u8],
    domain: &str,
) -> std::result::Result<AuthConfig, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let serde_json::Value::Object(map) = value else {
        return Err("not a JSON object".to_owned());
    };
    let Some(auths) = map.get("auths") else {
        return Ok(AuthConfig::from_json(bytes));
    };
    let serde_json::Value::Object(auths) = auths else {
        return Err("`auths` is not an object".to_owned());
    };
    let host = |key: &str| -> String {
        let key = key
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let host = key.split('/').next().unwrap_or_default();
        match host {
            "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
            other => other.to_owned(),
        }
    };
    Ok(auths
        .iter()
        .find(|(key, _)| host(key) == domain)
        .map(|(_, entry)| AuthConfig::from_json(entry.to_string().as_bytes()))
        .unwrap_or_default())
}

/// True when every privilege `wanted` asks for is accepted: each of its values is listed
/// under its name (a privilege without values needs its name listed).
pub fn privileges_accepted(
    wanted: &[PluginPrivilege],
    accepted: &BTreeMap<String, Vec<String>>,
) -> std::result::Result<(), String> {
    let mut missing = Vec::new();
    for p in wanted {
        let Some(values) = accepted.get(&p.name) else {
            missing.push(format!("{} {:?}", p.name, p.value));
            continue;
        };
        let refused: Vec<&String> = p.value.iter().filter(|v| !values.contains(v)).collect();
        if !refused.is_empty() {
            missing.push(format!("{} {:?}", p.name, refused));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join(", "))
    }
}

/// True when `set` arguments would change the plugin's config or settings (a failing argument
/// is an error: the entry cannot be applied).
pub fn settings_drift(record: &PluginRecord, args: &[String]) -> Result<bool> {
    if args.is_empty() {
        return Ok(false);
    }
    let mut config = record.plugin.config.clone();
    let mut settings = record.plugin.settings.clone();
    plugind_store::apply_settings(&mut config, &mut settings, args)?;
    Ok(config != record.plugin.config || settings != record.plugin.settings)
}

impl Manager {
    /// Takes `set` as the plugin set to keep and reconciles it in the background (see the
    /// module's documentation); returns at once. The first call with a non-empty set starts
    /// the runner; later calls queue a run with the new set.
    pub fn apply_plugin_set(&self, set: PluginSet) {
        let runner = &self.inner.plugin_set;
        let empty = set.is_empty();
        *lock(&runner.desired) = set;
        runner.fresh.store(true, Ordering::SeqCst);
        if runner.started.load(Ordering::SeqCst) {
            runner.wake.notify_one();
        } else if !empty && !runner.started.swap(true, Ordering::SeqCst) {
            let this = self.clone();
            self.spawn_background(async move { this.run_plugin_set().await });
        }
    }

    /// The plugin set's last known status.
    pub fn plugin_set_status(&self) -> PluginSetStatus {
        self.inner.plugin_set.status.borrow().clone()
    }

    /// Follows the plugin set's status (tests wait for a run with it).
    pub fn watch_plugin_set(&self) -> watch::Receiver<PluginSetStatus> {
        self.inner.plugin_set.status.subscribe()
    }

    async fn run_plugin_set(&self) {
        let runner = &self.inner.plugin_set;
        let mut stop = self.inner.stop_events.subscribe();
        let mut retries: HashMap<String, Retry> = HashMap::new();
        loop {
            if *stop.borrow() || self.inner.shutting_down.load(Ordering::SeqCst) {
                return;
            }
            let set = lock(&runner.desired).clone();
            if runner.fresh.swap(false, Ordering::SeqCst) {
                retries.clear();
            }
            runner.status.send_modify(|s| {
                s.running = true;
                s.configured = !set.is_empty();
                s.prune = set.prune;
            });
            // At shutdown (plugins already stopped) the run is dropped rather than waited for:
            // a pull or upgrade dropped half-way leaves nothing, and a hung registry must not
            // hold plugind's exit for the whole grace period.
            tokio::select! {
                _ = self.reconcile_plugin_set(&set, &mut retries) => {}
                _ = stop.changed() => return,
            }
            runner.status.send_modify(|s| {
                s.running = false;
                s.runs += 1;
                s.last_run = Some(SystemTime::now());
            });
            let next = retries.values().map(|r| r.at).min();
            tokio::select! {
                _ = runner.wake.notified() => {}
                _ = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One run over `set`: every entry due (not waiting for a retry), then prune.
    async fn reconcile_plugin_set(&self, set: &PluginSet, retries: &mut HashMap<String, Retry>) {
        let runner = &self.inner.plugin_set;
        retries.retain(|alias, _| set.entries.iter().any(|e| e.alias() == alias));
        // The new set's entries, each with its last status if it names the same plugin from
        // the same reference, else pending; updated entry by entry as the run goes on.
        let statuses: Vec<EntryStatus> = {
            let previous = &runner.status.borrow().entries;
            set.entries
                .iter()
                .map(|entry| {
                    let reference = entry.names.plugin_reference();
                    previous
                        .iter()
                        .find(|s| s.alias == entry.alias() && s.reference == reference)
                        .cloned()
                        .unwrap_or(EntryStatus {
                            alias: entry.alias().to_owned(),
                            reference,
                            state: EntryState::Pending,
                            last_error: None,
                            failures: 0,
                            next_retry: None,
                        })
                })
                .collect()
        };
        runner.status.send_modify(|s| s.entries = statuses.clone());
        for (index, (entry, mut status)) in set.entries.iter().zip(statuses).enumerate() {
            let now = tokio::time::Instant::now();
            if retries.get(entry.alias()).is_some_and(|r| r.at > now) {
                continue;
            }
            if self.inner.shutting_down.load(Ordering::SeqCst) {
                return;
            }
            let state = match self.reconcile_entry(entry).await {
                Ok(None) => EntryState::InSync,
                Ok(Some(drift)) => EntryState::Drift(drift),
                Err(e) => EntryState::Failed(e.to_string()),
            };
            if let EntryState::Failed(error) = &state {
                let failures = retries.get(entry.alias()).map_or(0, |r| r.failures) + 1;
                let delay = retry_delay(failures);
                retries.insert(
                    entry.alias().to_owned(),
                    Retry {
                        failures,
                        at: now + delay,
                    },
                );
                tracing::warn!(plugin = %entry.alias(), error = %error, retry_in = ?delay, "plugin set entry failed");
                status.failures = failures;
                status.next_retry = Some(SystemTime::now() + delay);
                status.last_error = Some(error.clone());
            } else {
                retries.remove(entry.alias());
                status.failures = 0;
                status.next_retry = None;
                if state == EntryState::InSync {
                    status.last_error = None;
                }
            }
            if status.state != state {
                self.publish_reconcile(entry, &state);
            }
            status.state = state;
            runner.status.send_modify(|s| {
                if let Some(slot) = s.entries.get_mut(index) {
                    *slot = status;
                }
            });
        }
        if set.prune {
            self.prune_unlisted(set).await;
        } else {
            runner.status.send_modify(|s| s.prune_kept.clear());
        }
    }

    fn publish_reconcile(&self, entry: &PluginSetEntry, state: &EntryState) {
        let record = self.find_named(entry.alias());
        let mut event = match &record {
            Some(r) => PluginEvent::now("reconcile", r.id(), entry.alias()),
            None => {
                // No plugin yet: Actor.ID is the remote, as for a `pull`.
                let mut e = PluginEvent::now("reconcile", &PluginId::from_bytes([0; 32]), "");
                e.id = entry.names.remote.familiar_string();
                e.attributes
                    .insert("name".to_owned(), entry.alias().to_owned());
                e
            }
        };
        event
            .attributes
            .insert("status".to_owned(), state.as_str().to_owned());
        event
            .attributes
            .insert("reference".to_owned(), entry.names.plugin_reference());
        if !state.reason().is_empty() {
            event
                .attributes
                .insert("reason".to_owned(), state.reason().to_owned());
        }
        self.inner.events.publish(event);
    }

    /// The plugin whose name is exactly `name`.
    fn find_named(&self, name: &str) -> Option<PluginRecord> {
        self.inner
            .store
            .list()
            .into_iter()
            .find(|r| r.name() == name)
    }

    fn find_entry_plugin(&self, entry: &PluginSetEntry) -> Result<PluginRecord> {
        self.find_named(entry.alias()).ok_or_else(|| {
            plugind_store::StoreError::NotFound {
                input: entry.alias().to_owned(),
            }
            .into()
        })
    }

    /// Brings one plugin to its entry; `Ok(Some(reason))` when it was left different on
    /// purpose.
    async fn reconcile_entry(&self, entry: &PluginSetEntry) -> Result<Option<String>> {
        let alias = entry.alias();
        let auth = self.entry_auth(entry).await?;
        let progress: crate::progress::SharedProgress = Arc::new(|_| {});
        let wanted_reference = entry.names.plugin_reference();
        let record = match self.find_named(alias) {
            Some(r) => r,
            None => {
                let privileges = self.accepted_privileges(entry, &auth).await?;
                let request = RemoteRequest {
                    auth: &auth,
                    privileges: &privileges,
                };
                tracing::info!(plugin = %alias, remote = %wanted_reference, "plugin set: installing");
                self.pull(&entry.names, request, progress.clone()).await?;
                self.find_entry_plugin(entry)?
            }
        };
        if record.plugin.plugin_reference != wanted_reference {
            if record.ref_count() > 0 && (record.desired_enabled() || self.is_running(record.id()))
            {
                return Ok(Some(format!(
                    "installed from {}, not upgraded to {wanted_reference}: the plugin is in use",
                    record.plugin.plugin_reference
                )));
            }
            let privileges = self.accepted_privileges(entry, &auth).await?;
            tracing::info!(plugin = %alias, from = %record.plugin.plugin_reference, to = %wanted_reference, "plugin set: upgrading");
            self.while_disabled(entry, &record, || async {
                let request = RemoteRequest {
                    auth: &auth,
                    privileges: &privileges,
                };
                self.upgrade(alias, &entry.names.remote, request, progress.clone())
                    .await
            })
            .await?;
        }
        let record = self.find_entry_plugin(entry)?;
        if settings_drift(&record, &entry.settings)? {
            if record.ref_count() > 0 && record.desired_enabled() {
                return Ok(Some(
                    "settings differ, not applied: the plugin is in use".to_owned(),
                ));
            }
            tracing::info!(plugin = %alias, "plugin set: applying settings");
            self.while_disabled(entry, &record, || self.set(alias, &entry.settings))
                .await?;
        }
        let record = self.find_entry_plugin(entry)?;
        match (entry.enabled, record.desired_enabled()) {
            (true, false) => self.enable(alias, None).await?,
            (false, true) => {
                if record.ref_count() > 0 {
                    return Ok(Some(
                        "enabled, not disabled: the plugin is in use".to_owned(),
                    ));
                }
                self.disable(alias, false).await?;
            }
            (true, true) => {
                if let RunState::Failed { reason } = &record.state.observed.state {
                    return Ok(Some(format!("enabled but not running: {reason}")));
                }
            }
            (false, false) => {}
        }
        Ok(None)
    }

    /// The entry's registry credentials: anonymous without an auth file; an unreadable or
    /// malformed file fails the entry (a pull without the credentials would fail less clearly).
    async fn entry_auth(&self, entry: &PluginSetEntry) -> Result<AuthConfig> {
        let Some(path) = entry.auth_file.clone() else {
            return Ok(AuthConfig::default());
        };
        let domain = entry.names.remote.domain().to_owned();
        let read = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut bytes = Vec::new();
            fs::File::open(&path)
                .and_then(|f| f.take(MAX_AUTH_FILE).read_to_end(&mut bytes))
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            credentials_from_file(&bytes, &domain)
                .map_err(|e| format!("registry auth file {}: {e}", path.display()))
        })
        .await?;
        read.map_err(|reason| ManagerError::InvalidPluginSet {
            entry: entry.alias().to_owned(),
            reason,
        })
    }

    /// The privileges the entry's remote asks for, if the entry accepts them all (then given to
    /// pull or upgrade, which compare them with the config they fetch again).
    async fn accepted_privileges(
        &self,
        entry: &PluginSetEntry,
        auth: &AuthConfig,
    ) -> Result<Vec<PluginPrivilege>> {
        let wanted = self
            .remote_privileges(&entry.names.remote.full_string(), auth)
            .await?;
        privileges_accepted(&wanted, &entry.accepted).map_err(|missing| {
            ManagerError::PrivilegesNotAccepted {
                name: entry.alias().to_owned(),
                missing,
            }
        })?;
        Ok(wanted)
    }

    /// Runs `change` with the plugin disabled: a desired-enabled plugin is disabled first and,
    /// if `entry` wants it enabled, enabled again afterwards, also when `change` fails (the
    /// plugin then runs as before).
    async fn while_disabled<F, Fut>(
        &self,
        entry: &PluginSetEntry,
        record: &PluginRecord,
        change: F,
    ) -> Result<()>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let name = record.name().to_owned();
        let was_enabled = record.desired_enabled();
        if was_enabled {
            self.disable(&name, false).await?;
        }
        let changed = change().await;
        if was_enabled && (entry.enabled || changed.is_err()) {
            let enabled = self.enable(&name, None).await;
            changed?;
            return enabled;
        }
        changed
    }

    /// Removes installed plugins no entry names, except those in use.
    async fn prune_unlisted(&self, set: &PluginSet) {
        let mut kept = Vec::new();
        for record in self.inner.store.list() {
            if set.entries.iter().any(|e| e.alias() == record.name()) {
                continue;
            }
            let name = record.name().to_owned();
            if record.ref_count() > 0 {
                kept.push(name);
                continue;
            }
            tracing::info!(plugin = %name, "plugin set: pruning a plugin not in the set");
            match self.remove(&name, true).await {
                Ok(()) => self
                    .inner
                    .plugin_set
                    .status
                    .send_modify(|s| s.pruned.push(name)),
                Err(e) => {
                    tracing::warn!(plugin = %name, error = %e, "plugin set: prune failed");
                    kept.push(name);
                }
            }
        }
        self.inner
            .plugin_set
            .status
            .send_modify(|s| s.prune_kept = kept);
    }
}

#[cfg(test)]
mod tests;
