//! The seam between the HTTP API and the plugin manager: [`PluginBackend`] and the shapes it
//! exchanges ([`PluginJson`], [`EventMessage`], [`LogLine`], [`BackendInfo`], [`BackendError`]).
//!
//! The API layer owns everything Docker-specific about HTTP (routes, versions, filters, status
//! codes, error texts); the backend owns plugin semantics (name lookup, state rules, the
//! messages of its errors). The backend's messages are sent to clients verbatim, so they must be
//! Docker's texts (docker-plugin-api.md §3, §5, §7).

use std::{collections::BTreeMap, fmt, io::Read, path::PathBuf, pin::Pin, time::Duration};

use async_trait::async_trait;
use futures::Stream;
use plugind_types::{
    config::{PluginConfig, PluginSettings},
    ErrorKind,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use plugind_manager::PluginPrivilege;

use crate::progress::ProgressSink;

/// What the API needs from the plugin manager.
///
/// Names are passed exactly as the client wrote them in the URL (`test/vol`, `test/vol:latest`,
/// a full id or a unique id prefix); resolving them is the backend's job (docker-plugin-api.md
/// §5.2). Every method is called concurrently from many connections.
#[async_trait]
pub trait PluginBackend: Send + Sync + 'static {
    /// Every installed plugin, in any order. The API applies Docker's `enabled` and
    /// `capability` filters itself.
    async fn list(&self) -> Result<Vec<PluginJson>, BackendError>;

    /// One plugin. Lookup failures are `NotFound` (`plugin "<name>" not found`) or, for an
    /// ambiguous id prefix, `InvalidArgument` (`multiple plugins found for "<name>"`).
    async fn inspect(&self, name: &str) -> Result<PluginJson, BackendError>;

    /// Creates a disabled plugin named `name` (raw `?name=` value) from an uncompressed tar
    /// (docker-plugin-api.md §3.9, §9) and publishes the `create` event.
    ///
    /// `tar` is fed from the HTTP request body while this future runs; it blocks, so read it
    /// only inside `tokio::task::spawn_blocking` (reading it on a runtime thread panics). It
    /// returns an error when the client disconnects or the body exceeds the size limit; the
    /// backend must then leave nothing behind. A name clash is `AlreadyExists` (409); every other
    /// error is answered 500, as Docker does.
    async fn create(&self, name: &str, tar: Box<dyn Read + Send>) -> Result<(), BackendError>;

    /// Checks the `?name=` of a create before its upload is read, so a taken name is answered
    /// 409 (and an invalid one 500) at once instead of after the whole tar: the errors
    /// [`PluginBackend::create`] would give for the name. `create` checks again (the name may
    /// be taken in between). The default accepts every name.
    async fn check_create_name(&self, name: &str) -> Result<(), BackendError> {
        let _ = name;
        Ok(())
    }

    /// Starts a plugin and waits until it serves its socket; publishes `enable` with the name as
    /// given. `timeout` is the client timeout for later calls to the plugin (`None` = none).
    /// Already enabled is `FailedPrecondition` (409).
    async fn enable(&self, name: &str, timeout: Option<Duration>) -> Result<(), BackendError>;

    /// Stops a plugin; publishes `disable`. Already disabled or in use (without `force`) is
    /// `FailedPrecondition` (409).
    async fn disable(&self, name: &str, force: bool) -> Result<(), BackendError>;

    /// Removes a plugin; publishes `remove`. In use or enabled (without `force`) is
    /// `FailedPrecondition` (409).
    async fn remove(&self, name: &str, force: bool) -> Result<(), BackendError>;

    /// Applies `set` arguments (docker-plugin-api.md §7). Errors from resolving `name` must be
    /// made with [`BackendError::lookup`]; every other error is answered 500, as Docker does.
    async fn set(&self, name: &str, args: Vec<String>) -> Result<(), BackendError>;

    /// The past events at or after `since_nano` (all when `None`), oldest first, and the
    /// events published after them, taken atomically: no event is both in the backlog and
    /// received, none is in neither. The real backend answers from the durable history
    /// (Docker keeps only the last 256, in memory).
    async fn subscribe_events(&self, since_nano: Option<i64>) -> EventSubscription;

    /// A plugin's output (plugind's extension, `GET /plugins/{name}/logs`). The stream yields
    /// the last `tail` lines (all when `None`) and then, if `follow`, new lines until the plugin
    /// is removed or the client goes away (the API drops the stream then).
    async fn logs(&self, name: &str, options: LogsOptions) -> Result<LogStream, BackendError>;

    /// Facts for `GET /info`.
    fn info(&self) -> BackendInfo;

    /// Pushes a plugin to the registry and repository its name points at
    /// (docker-plugin-api.md §3.10), reporting Docker's progress objects to `progress` (the
    /// last one the `aux` with tag, digest and size). `registry_auth` is the raw
    /// `X-Registry-Auth` header, "" when absent. An unknown plugin is `NotFound` (made with
    /// [`BackendError::lookup`]) before anything is reported. The default refuses.
    async fn push(
        &self,
        name: &str,
        registry_auth: &str,
        progress: crate::progress::ProgressSink,
    ) -> Result<(), BackendError> {
        let _ = (name, registry_auth, progress);
        Err(BackendError::new(
            ErrorKind::Internal,
            "plugin push is not supported by this backend",
        ))
    }

    /// The privileges the plugin at `remote` asks for (`GET /plugins/privileges`), in
    /// Docker's order. `auth` is the raw `X-Registry-Auth` header ("" when absent).
    async fn privileges(
        &self,
        remote: &str,
        auth: &str,
    ) -> Result<Vec<PluginPrivilege>, BackendError> {
        let _ = (remote, auth);
        Err(BackendError::new(
            ErrorKind::Internal,
            "registry access is not available",
        ))
    }

    /// The local name a pull of `remote` as `name` installs (moby's `getName`), or the
    /// request's error (invalid remote or name): checked before the stream starts, and sent
    /// as `Docker-Plugin-Name`.
    fn pull_name(&self, remote: &str, name: &str) -> Result<String, BackendError> {
        let _ = (remote, name);
        Err(BackendError::new(
            ErrorKind::Internal,
            "registry access is not available",
        ))
    }

    /// Installs `remote` as `name` (the value [`PluginBackend::pull_name`] returned),
    /// reporting to `progress`; publishes the `pull` event. An error returned before the first
    /// progress message is the request's error (status code); later ones end the stream.
    /// The future is dropped when the client goes away: the pull must then leave nothing.
    async fn pull(
        &self,
        request: RemoteOperation,
        progress: ProgressSink,
    ) -> Result<(), BackendError> {
        let _ = (request, progress);
        Err(BackendError::new(
            ErrorKind::Internal,
            "registry access is not available",
        ))
    }

    /// Upgrades the plugin `request.name` (normalised, `x:latest`) to `request.remote`,
    /// reporting to `progress`; as [`PluginBackend::pull`] for errors and cancellation.
    async fn upgrade(
        &self,
        request: RemoteOperation,
        progress: ProgressSink,
    ) -> Result<(), BackendError> {
        let _ = (request, progress);
        Err(BackendError::new(
            ErrorKind::Internal,
            "registry access is not available",
        ))
    }
}

/// What a pull or upgrade asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteOperation {
    /// The remote reference as the client wrote it.
    pub remote: String,
    /// The local plugin name, normalised (`x:latest`).
    pub name: String,
    /// The raw `X-Registry-Auth` header ("" when absent).
    pub auth: String,
    /// The privileges the user accepted (the request body).
    pub privileges: Vec<PluginPrivilege>,
}

/// A failed backend operation: its kind picks the HTTP status, its message is sent verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    /// What went wrong, independent of the endpoint.
    pub kind: ErrorKind,
    /// Docker's text for this failure, e.g. `plugin "foo" not found`.
    pub message: String,
    /// Where the failure happened; some endpoints map operation errors differently from
    /// lookup errors (docker-plugin-api.md §3.11).
    pub stage: Stage,
}

/// The part of a request an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Resolving the plugin name in the URL (Docker keeps these typed: 404, 400 for ambiguity).
    Lookup,
    /// The operation itself.
    Operation,
}

impl BackendError {
    /// An error of the operation itself.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        BackendError {
            kind,
            message: message.into(),
            stage: Stage::Operation,
        }
    }

    /// An error from resolving the plugin name.
    pub fn lookup(kind: ErrorKind, message: impl Into<String>) -> Self {
        BackendError {
            kind,
            message: message.into(),
            stage: Stage::Lookup,
        }
    }

    /// Docker's not-found error for a name as given: `plugin "<name>" not found`.
    pub fn plugin_not_found(name: &str) -> Self {
        Self::lookup(ErrorKind::NotFound, format!("plugin {name:?} not found"))
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BackendError {}

/// Docker's `Plugin` object, keys in moby's order (docker-plugin-api.md §4), followed by
/// plugind's own observations under `PluginD` (clients ignore unknown keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginJson {
    /// The plugin's `config.json`.
    #[serde(rename = "Config")]
    pub config: PluginConfig,
    /// Desired state: the user enabled it.
    #[serde(rename = "Enabled")]
    pub enabled: bool,
    /// 64-hex id.
    #[serde(rename = "Id", default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// `<familiar repo>:<tag>`.
    #[serde(rename = "Name")]
    pub name: String,
    /// Where it came from; omitted when empty.
    #[serde(
        rename = "PluginReference",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub plugin_reference: String,
    /// The user's settings.
    #[serde(rename = "Settings")]
    pub settings: PluginSettings,
    /// plugind's extra inspect fields; omitted when the backend has none.
    #[serde(rename = "PluginD", default, skip_serializing_if = "Option::is_none")]
    pub plugind: Option<PluginStatus>,
}

/// What plugind observed about a plugin's process (the `PluginD` key of [`PluginJson`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PluginStatus {
    /// Observed state, e.g. `running`, `stopped`, `starting`, `restarting`.
    #[serde(rename = "State")]
    pub state: String,
    /// Host pid of the plugin's process while it runs.
    #[serde(rename = "Pid", default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Restarts after unexpected exits since it was last enabled.
    #[serde(rename = "RestartCount")]
    pub restart_count: u32,
    /// The last start or exit failure, if any.
    #[serde(rename = "LastError", default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The health checks of the running task (Docker's container `State.Health` shape);
    /// omitted while the plugin does not run.
    #[serde(rename = "Health", default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthJson>,
}

/// A running plugin's health: Docker's container `State.Health` object.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HealthJson {
    /// `starting`, `healthy` or `unhealthy`.
    #[serde(rename = "Status")]
    pub status: String,
    /// Failed probes in a row.
    #[serde(rename = "FailingStreak")]
    pub failing_streak: u32,
    /// The last probes, oldest first.
    #[serde(rename = "Log")]
    pub log: Vec<HealthProbeJson>,
}

/// One probe (Docker's `HealthcheckResult`; `ExitCode` 0 for success, 1 for failure).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HealthProbeJson {
    /// When the probe began (RFC 3339 with nanoseconds).
    #[serde(rename = "Start")]
    pub start: String,
    /// When it ended.
    #[serde(rename = "End")]
    pub end: String,
    /// 0: healthy answer; 1: failure.
    #[serde(rename = "ExitCode")]
    pub exit_code: i32,
    /// What the plugin answered or why the probe failed.
    #[serde(rename = "Output")]
    pub output: String,
}

/// One event, serialised exactly as Docker's `events.Message` (docker-plugin-api.md §2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMessage {
    /// `plugin` (or `volume`, ...).
    #[serde(rename = "Type")]
    pub r#type: String,
    /// `create`, `enable`, `disable`, `remove`, `pull`.
    #[serde(rename = "Action")]
    pub action: String,
    /// What the event is about.
    #[serde(rename = "Actor")]
    pub actor: EventActor,
    /// Always `local` for plugins.
    #[serde(rename = "scope")]
    pub scope: String,
    /// Unix seconds.
    #[serde(rename = "time")]
    pub time: i64,
    /// Unix nanoseconds; the API filters `since`/`until` on it.
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

/// `events.Actor`: an id and attributes (a sorted map, as Go marshals maps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventActor {
    /// Plugin id (or remote reference for `pull`).
    #[serde(rename = "ID")]
    pub id: String,
    /// `name` and any other attributes.
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

impl EventMessage {
    /// A plugin event as moby publishes it: `Actor.Attributes = {"name": name}`, scope `local`.
    pub fn plugin(action: &str, id: &str, name: &str, time_nano: i64) -> Self {
        let attributes = BTreeMap::from([("name".to_owned(), name.to_owned())]);
        Self::new("plugin", action, id, attributes, time_nano)
    }

    /// An event of any type (`plugin`, `volume`) with scope `local`, as moby's `events.Log`.
    pub fn new(
        r#type: &str,
        action: &str,
        id: &str,
        attributes: BTreeMap<String, String>,
        time_nano: i64,
    ) -> Self {
        EventMessage {
            r#type: r#type.to_owned(),
            action: action.to_owned(),
            actor: EventActor {
                id: id.to_owned(),
                attributes,
            },
            scope: "local".to_owned(),
            time: time_nano.div_euclid(1_000_000_000),
            time_nano,
        }
    }
}

/// Events published after a backlog was taken, as a broadcast receiver yields them
/// (`Lagged` when the subscriber fell behind, `Closed` at the end).
pub type LiveEvents =
    Pin<Box<dyn Stream<Item = Result<EventMessage, broadcast::error::RecvError>> + Send>>;

/// The result of [`PluginBackend::subscribe_events`].
pub struct EventSubscription {
    /// Past events, oldest first.
    pub backlog: Vec<EventMessage>,
    /// Events published after the backlog was taken.
    pub live: LiveEvents,
}

impl fmt::Debug for EventSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSubscription")
            .field("backlog", &self.backlog.len())
            .finish_non_exhaustive()
    }
}

impl EventSubscription {
    /// A subscription whose live events come from `rx`, each converted by `convert`.
    pub fn from_broadcast<T: Clone + Send + 'static>(
        backlog: Vec<EventMessage>,
        rx: broadcast::Receiver<T>,
        convert: fn(T) -> EventMessage,
    ) -> Self {
        let live = futures::stream::unfold(Some(rx), move |rx| async move {
            let mut rx = rx?;
            match rx.recv().await {
                Ok(e) => Some((Ok(convert(e)), Some(rx))),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Some((Err(broadcast::error::RecvError::Lagged(n)), Some(rx)))
                }
                Err(broadcast::error::RecvError::Closed) => {
                    Some((Err(broadcast::error::RecvError::Closed), None))
                }
            }
        });
        EventSubscription {
            backlog,
            live: Box::pin(live),
        }
    }
}

/// Options of `GET /plugins/{name}/logs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogsOptions {
    /// Only the last N lines of the backlog; `None` for all.
    pub tail: Option<usize>,
    /// Keep streaming new lines.
    pub follow: bool,
}

/// One line of plugin output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When it was read, unix nanoseconds.
    pub time_nano: i64,
    /// stdout or stderr.
    pub source: LogSource,
    /// The text without its trailing newline.
    pub line: String,
}

/// Which output a [`LogLine`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    /// The plugin's stdout.
    Stdout,
    /// The plugin's stderr.
    Stderr,
}

/// The lines of [`PluginBackend::logs`]; dropping it ends a follow.
pub type LogStream = Pin<Box<dyn Stream<Item = LogLine> + Send>>;

/// Facts for `GET /info` that only the backend knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    /// A stable identifier of this daemon's state (`ID` in `docker info`).
    pub id: String,
    /// The state root (`DockerRootDir`).
    pub root_dir: PathBuf,
    /// Whether plugins keep running when the daemon stops (`LiveRestoreEnabled`).
    pub live_restore: bool,
    /// Name of the runtime used by default (`DefaultRuntime`).
    pub default_runtime: String,
    /// Configured runtimes by name (`Runtimes`).
    pub runtimes: BTreeMap<String, RuntimeInfo>,
    /// Installed plugins.
    pub plugins: usize,
    /// Of which enabled.
    pub plugins_enabled: usize,
    /// Plugin directories moved aside because their record could not be used (bounded).
    pub quarantined: Vec<PathBuf>,
    /// The declarative plugin set's status (`PluginD.PluginSet`); `None` when none is
    /// configured.
    pub plugin_set: Option<PluginSetInfo>,
}

/// `PluginD.PluginSet` of `GET /info`: how the configured plugin set stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PluginSetInfo {
    /// Unlisted plugins are removed.
    pub prune: bool,
    /// Reconcile runs finished since start.
    pub runs: u64,
    /// A run is in progress.
    pub reconciling: bool,
    /// When the last run finished (RFC 3339), "" before the first.
    pub last_run: String,
    /// One per `[[plugin]]` entry, in the file's order.
    pub entries: Vec<PluginSetEntryInfo>,
    /// Plugins removed by prune since start.
    pub pruned: Vec<String>,
    /// Unlisted plugins prune kept because they are in use.
    pub prune_kept: Vec<String>,
}

/// One entry of [`PluginSetInfo`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PluginSetEntryInfo {
    /// The local name.
    pub alias: String,
    /// The wanted reference.
    pub reference: String,
    /// `pending`, `in-sync`, `drift` or `failed`.
    pub status: String,
    /// Why it drifts, or the error of a failed entry.
    pub reason: String,
    /// The last error ("" once in sync again).
    pub last_error: String,
    /// Failures in a row.
    pub failures: u32,
    /// When a failed entry is tried again (RFC 3339), "" otherwise.
    pub next_retry: String,
}

/// One runtime in `GET /info`'s `Runtimes`, as Docker prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuntimeInfo {
    /// Executable.
    pub path: String,
    /// Extra arguments; omitted when none.
    #[serde(rename = "runtimeArgs", skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}
