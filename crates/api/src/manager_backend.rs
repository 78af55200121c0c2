//! [`ManagerBackend`]: the [`PluginBackend`] of the real daemon, over
//! [`plugind_manager::Manager`]. It converts the manager's records, errors and events into the
//! API's shapes; it holds no lifecycle logic of its own.

use std::{
    collections::{BTreeMap, VecDeque},
    io::Read,
    path::{Path, PathBuf},
    sync::RwLock,
    time::Duration,
};

use async_trait::async_trait;
use plugind_manager::{
    events::PluginEvent, read_log_tail, LogEntry, Manager, ManagerError, PluginView, RunState,
    StoreError,
};
use plugind_types::Reference;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::backend::{
    BackendError, BackendInfo, EventMessage, EventSubscription, HealthJson, HealthProbeJson,
    LogLine, LogSource, LogStream, LogsOptions, PluginBackend, PluginJson, PluginPrivilege,
    PluginStatus, RemoteOperation, RuntimeInfo,
};
use crate::progress::ProgressSink;
use plugind_manager::{
    manager::{PullNames, RemoteRequest},
    AuthConfig,
};

/// Runtime facts shown by `GET /info`; replaced on reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeFacts {
    /// Name of the default runtime.
    pub default_runtime: String,
    /// Every runtime by name.
    pub runtimes: BTreeMap<String, RuntimeInfo>,
}

/// The API backend of the real daemon.
#[derive(Debug)]
pub struct ManagerBackend {
    manager: Manager,
    runtimes: RwLock<RuntimeFacts>,
    /// `ID` of `/info`; see [`ManagerBackend::with_engine_id`].
    engine_id: String,
}

impl ManagerBackend {
    /// Wraps `manager`; its events are the API's (`/events` converts them as they go out).
    pub fn new(manager: Manager, runtimes: RuntimeFacts) -> Self {
        ManagerBackend {
            manager,
            runtimes: RwLock::new(runtimes),
            engine_id: String::new(),
        }
    }

    /// Sets the engine ID `/info` reports (`plugind_manager::engine_id::load_or_create`); until
    /// then `/info` reports the state root's path.
    pub fn with_engine_id(mut self, engine_id: String) -> Self {
        self.engine_id = engine_id;
        self
    }

    /// Publishes a `daemon` event (dockerd's `LogDaemonEventWithAttributes`, e.g. `reload`):
    /// the actor is the daemon's id, and `name` (the host name) is added to `attributes`. It
    /// goes through the manager's hub, so it is kept in the durable history too.
    pub fn publish_daemon_event(&self, action: &str, mut attributes: BTreeMap<String, String>) {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        attributes.insert("name".to_owned(), hostname.trim().to_owned());
        self.manager
            .events()
            .publish(PluginEvent::daemon(action, &self.info().id, attributes));
    }

    /// The wrapped manager.
    pub fn manager(&self) -> &Manager {
        &self.manager
    }

    /// Replaces the runtime facts shown by `/info` (after a reload).
    pub fn set_runtimes(&self, runtimes: RuntimeFacts) {
        *self
            .runtimes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = runtimes;
    }
}

fn to_message(e: PluginEvent) -> EventMessage {
    EventMessage::new(
        e.r#type.as_str(),
        &e.action,
        &e.id,
        e.attributes,
        e.time_nano as i64,
    )
}

fn to_json(view: PluginView) -> PluginJson {
    let r = view.record;
    let observed = &r.state.observed;
    let (state, pid, last_error) = match &observed.state {
        RunState::Stopped => ("stopped", None, None),
        RunState::Running { pid } => ("running", Some(*pid), None),
        RunState::Failed { reason } => ("failed", None, Some(reason.clone())),
    };
    PluginJson {
        config: r.plugin.config,
        enabled: r.plugin.enabled,
        id: r.plugin.id.to_string(),
        name: r.plugin.name,
        plugin_reference: r.plugin.plugin_reference,
        settings: r.plugin.settings,
        plugind: Some(PluginStatus {
            state: state.to_owned(),
            pid,
            restart_count: observed.restart_count,
            last_error,
            health: view.health.map(|h| HealthJson {
                status: h.status.as_str().to_owned(),
                failing_streak: h.failing_streak,
                log: h
                    .log
                    .into_iter()
                    .map(|p| HealthProbeJson {
                        start: time_text(p.start),
                        end: time_text(p.end),
                        exit_code: i32::from(!p.ok),
                        output: p.output,
                    })
                    .collect(),
            }),
        }),
    }
}

fn time_text(t: std::time::SystemTime) -> String {
    let nanos = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    crate::query::rfc3339_nano(nanos)
}

/// Lookup failures keep their own status (404, 400 for ambiguity); everything else is an
/// operation error whose status the API picks per endpoint.
fn to_error(e: ManagerError) -> BackendError {
    let kind = e.kind();
    let message = e.to_string();
    match e {
        ManagerError::Store(StoreError::NotFound { .. } | StoreError::Ambiguous { .. }) => {
            BackendError::lookup(kind, message)
        }
        _ => BackendError::new(kind, message),
    }
}

#[async_trait]
impl PluginBackend for ManagerBackend {
    async fn list(&self) -> Result<Vec<PluginJson>, BackendError> {
        Ok(self.manager.list().into_iter().map(to_json).collect())
    }

    async fn inspect(&self, name: &str) -> Result<PluginJson, BackendError> {
        self.manager.inspect(name).map(to_json).map_err(to_error)
    }

    async fn create(&self, name: &str, tar: Box<dyn Read + Send>) -> Result<(), BackendError> {
        self.manager
            .create(name, tar)
            .await
            .map(drop)
            .map_err(to_error)
    }

    async fn check_create_name(&self, name: &str) -> Result<(), BackendError> {
        // The checks `Manager::create` makes before it reads the tar, with its errors.
        let reference = Reference::parse_normalized(name).map_err(|source| {
            to_error(ManagerError::InvalidName {
                name: name.to_owned(),
                source,
            })
        })?;
        if reference.digest().is_some() {
            return Err(to_error(ManagerError::CanonicalName));
        }
        let stored_name = reference.with_default_tag().familiar_string();
        if self
            .manager
            .list()
            .iter()
            .any(|p| p.record.name() == stored_name)
        {
            return Err(to_error(
                StoreError::NameExists { name: stored_name }.into(),
            ));
        }
        Ok(())
    }

    async fn enable(&self, name: &str, timeout: Option<Duration>) -> Result<(), BackendError> {
        // Docker's `timeout` is the client timeout of later calls to the plugin, not a bound on
        // start-up; readiness uses the manager's own deadline.
        self.manager.enable(name, timeout).await.map_err(to_error)
    }

    async fn disable(&self, name: &str, force: bool) -> Result<(), BackendError> {
        self.manager.disable(name, force).await.map_err(to_error)
    }

    async fn remove(&self, name: &str, force: bool) -> Result<(), BackendError> {
        self.manager.remove(name, force).await.map_err(to_error)
    }

    async fn set(&self, name: &str, args: Vec<String>) -> Result<(), BackendError> {
        self.manager.set(name, &args).await.map_err(to_error)
    }

    async fn push(
        &self,
        name: &str,
        registry_auth: &str,
        progress: crate::progress::ProgressSink,
    ) -> Result<(), BackendError> {
        let auth = plugind_manager::AuthConfig::from_header(registry_auth);
        self.manager
            .push(name, &auth, progress.as_fn())
            .await
            .map(|_| ())
            .map_err(to_error)
    }

    async fn subscribe_events(&self, since_nano: Option<i64>) -> EventSubscription {
        let (past, live) = if since_nano == Some(i64::MAX) {
            // Live events only: no history to read.
            self.manager.events().subscribe(Some(i128::MAX))
        } else {
            let manager = self.manager.clone();
            let since = since_nano.map(i128::from);
            // Reads the durable history: off the async workers.
            match tokio::task::spawn_blocking(move || manager.events().subscribe_durable(since))
                .await
            {
                Ok(sub) => sub,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the event history failed");
                    self.manager.events().subscribe(since)
                }
            }
        };
        EventSubscription::from_broadcast(
            past.into_iter().map(to_message).collect(),
            live,
            to_message,
        )
    }

    async fn logs(&self, name: &str, options: LogsOptions) -> Result<LogStream, BackendError> {
        let path = self.manager.log_path(name).map_err(to_error)?;
        Ok(follow_log(path, options).await)
    }

    async fn privileges(
        &self,
        remote: &str,
        auth: &str,
    ) -> Result<Vec<PluginPrivilege>, BackendError> {
        let auth = AuthConfig::from_header(auth);
        self.manager
            .remote_privileges(remote, &auth)
            .await
            .map_err(to_error)
    }

    fn pull_name(&self, remote: &str, name: &str) -> Result<String, BackendError> {
        PullNames::parse(remote, name)
            .map(|n| n.local)
            .map_err(to_error)
    }

    async fn pull(
        &self,
        request: RemoteOperation,
        progress: ProgressSink,
    ) -> Result<(), BackendError> {
        let (names, auth) = parse_remote(&request)?;
        self.manager
            .pull(&names, remote_request(&request, &auth), progress.shared())
            .await
            .map(drop)
            .map_err(to_error)
    }

    async fn upgrade(
        &self,
        request: RemoteOperation,
        progress: ProgressSink,
    ) -> Result<(), BackendError> {
        let (names, auth) = parse_remote(&request)?;
        let remote = remote_request(&request, &auth);
        self.manager
            .upgrade(&request.name, &names.remote, remote, progress.shared())
            .await
            .map_err(to_error)
    }

    fn info(&self) -> BackendInfo {
        let plugins = self.manager.list();
        let runtimes = self
            .runtimes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let config = self.manager.config();
        BackendInfo {
            id: if self.engine_id.is_empty() {
                config.root.display().to_string()
            } else {
                self.engine_id.clone()
            },
            root_dir: config.root.clone(),
            live_restore: config.live_restore,
            default_runtime: runtimes.default_runtime,
            runtimes: runtimes.runtimes,
            plugins: plugins.len(),
            plugins_enabled: plugins
                .iter()
                .filter(|p| p.record.desired_enabled())
                .count(),
            quarantined: self.manager.quarantined(),
            plugin_set: plugin_set_info(self.manager.plugin_set_status()),
        }
    }
}

/// `PluginD.PluginSet` from the manager's status; `None` when no set is configured.
fn plugin_set_info(status: plugind_manager::PluginSetStatus) -> Option<crate::PluginSetInfo> {
    fn time(t: Option<std::time::SystemTime>) -> String {
        t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or_else(String::new, |d| {
                crate::query::rfc3339_nano(d.as_nanos() as i128)
            })
    }
    if !status.configured {
        return None;
    }
    Some(crate::PluginSetInfo {
        prune: status.prune,
        runs: status.runs,
        reconciling: status.running,
        last_run: time(status.last_run),
        entries: status
            .entries
            .into_iter()
            .map(|e| crate::PluginSetEntryInfo {
                status: e.state.as_str().to_owned(),
                reason: e.state.reason().to_owned(),
                alias: e.alias,
                reference: e.reference,
                last_error: e.last_error.unwrap_or_default(),
                failures: e.failures,
                next_retry: time(e.next_retry),
            })
            .collect(),
        pruned: status.pruned,
        prune_kept: status.prune_kept,
    })
}

fn to_log_line(line: &str) -> LogLine {
    let e = LogEntry::parse(line);
    LogLine {
        time_nano: e.time_nano,
        source: if e.stderr {
            LogSource::Stderr
        } else {
            LogSource::Stdout
        },
        line: e.text,
    }
}

/// The last lines of the log (rotated generation `<path>.1` first), then, with `follow`, new
/// lines as they are written (checked every 100 ms; a rotation restarts at the new file).
async fn follow_log(path: PathBuf, options: LogsOptions) -> LogStream {
    // Read from the end of the files (not whole), on the blocking pool.
    let tail = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || read_log_tail(&path, options.tail))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    };
    let offset = tail.offset;
    let lines: VecDeque<LogLine> = tail.lines.iter().map(|l| to_log_line(l)).collect();
    struct State {
        path: PathBuf,
        pending: VecDeque<LogLine>,
        offset: u64,
        partial: String,
        follow: bool,
    }
    let state = State {
        path,
        pending: lines,
        offset,
        partial: String::new(),
        follow: options.follow,
    };
    Box::pin(futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(line) = s.pending.pop_front() {
                return Some((line, s));
            }
            if !s.follow {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            read_new(&mut s.offset, &mut s.partial, &mut s.pending, &s.path).await;
        }
    }))
}

async fn read_new(
    offset: &mut u64,
    partial: &mut String,
    pending: &mut VecDeque<LogLine>,
    path: &Path,
) {
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return;
    };
    let Ok(meta) = file.metadata().await else {
        return;
    };
    if meta.len() < *offset {
        // Rotated or truncated: the new generation starts from its beginning.
        *offset = 0;
        partial.clear();
    }
    if meta.len() == *offset || file.seek(std::io::SeekFrom::Start(*offset)).await.is_err() {
        return;
    }
    let mut buf = Vec::new();
    if file.read_to_end(&mut buf).await.is_err() {
        return;
    }
    *offset += buf.len() as u64;
    partial.push_str(&String::from_utf8_lossy(&buf));
    while let Some(i) = partial.find('\n') {
        let line: String = partial.drain(..=i).collect();
        pending.push_back(to_log_line(line.trim_end_matches('\n')));
    }
}

/// The names and credentials of a pull or upgrade request.
fn parse_remote(request: &RemoteOperation) -> Result<(PullNames, AuthConfig), BackendError> {
    let names = PullNames::parse(&request.remote, &request.name).map_err(to_error)?;
    Ok((names, AuthConfig::from_header(&request.auth)))
}

/// The manager's view of a pull or upgrade request.
fn remote_request<'a>(request: &'a RemoteOperation, auth: &'a AuthConfig) -> RemoteRequest<'a> {
    RemoteRequest {
        auth,
        privileges: &request.privileges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn plugin_set_status_renders_as_info_plugin_set() {
        use plugind_manager::{EntryState, EntryStatus, PluginSetStatus};
        assert_eq!(plugin_set_info(PluginSetStatus::default()), None);
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1);
        let status = PluginSetStatus {
            configured: true,
            prune: true,
            runs: 2,
            running: false,
            last_run: Some(at),
            entries: vec![
                EntryStatus {
                    alias: "vol:latest".into(),
                    reference: "r/vol:1".into(),
                    state: EntryState::Failed("boom".into()),
                    last_error: Some("boom".into()),
                    failures: 3,
                    next_retry: Some(at),
                },
                EntryStatus {
                    alias: "b:latest".into(),
                    reference: "r/b:1".into(),
                    state: EntryState::InSync,
                    last_error: None,
                    failures: 0,
                    next_retry: None,
                },
            ],
            pruned: vec!["old:latest".into()],
            prune_kept: vec![],
        };
        let json = serde_json::to_value(plugin_set_info(status).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "Prune": true, "Runs": 2, "Reconciling": false,
                "LastRun": "1970-01-01T00:00:01Z",
                "Entries": [
                    {"Alias": "vol:latest", "Reference": "r/vol:1", "Status": "failed",
                     "Reason": "boom", "LastError": "boom", "Failures": 3,
                     "NextRetry": "1970-01-01T00:00:01Z"},
                    {"Alias": "b:latest", "Reference": "r/b:1", "Status": "in-sync",
                     "Reason": "", "LastError": "", "Failures": 0, "NextRetry": ""}
                ],
                "Pruned": ["old:latest"], "PruneKept": []
            })
        );
    }

    #[tokio::test]
    async fn tail_then_follow_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.log");
        std::fs::write(dir.path().join("p.log.1"), "1.000 stdout old\n").unwrap();
        std::fs::write(&path, "2.000 stdout a\n3.000 stderr b\n").unwrap();
        let all: Vec<_> = follow_log(
            path.clone(),
            LogsOptions {
                tail: None,
                follow: false,
            },
        )
        .await
        .collect()
        .await;
        assert_eq!(
            all.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
            ["old", "a", "b"]
        );
        let mut s = follow_log(
            path.clone(),
            LogsOptions {
                tail: Some(1),
                follow: true,
            },
        )
        .await;
        assert_eq!(s.next().await.unwrap().line, "b");
        std::fs::write(&path, "4.000 stdout fresh\n").unwrap(); // rotation: shorter file
        let next = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(next.line, "fresh");
    }
}
