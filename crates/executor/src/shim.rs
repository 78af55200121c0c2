//! [`ShimExecutor`]: tasks run by `containerd-shim-runc-v2`, driven over ttrpc.
//!
//! Layout under the exec root (all created on demand):
//! - `events.sock`: the events service every shim publishes to (`TTRPC_ADDRESS`);
//! - `runtimes/<name>-<sha256>`: runtime wrapper scripts;
//! - `tasks/<id>/`: the task's stdio FIFOs and `task.json` (pid and start time of the task and
//!   of its shim, checked before anything is adopted after a restart);
//! - `logs/<id>.log` (+ `.1`): the task's output, size-bounded;
//! - `runc/`: the runtime state root (`runc --root <exec-root>/runc/<namespace> list`).
//! - `groups/group-<n>/`: a shim group's working directory (`config.json` with only the group
//!   annotation, the shim's `log` FIFO and `address`), while the group lives (`group`).
//!
//! This file holds the executor's state (configuration, attached tasks, [`ShimExecutor`]'s own
//! methods); one job per submodule: `start` (shim launch, Create + Start, undoing a half-done
//! start), `calls` (the [`Executor`] implementation: the task RPCs, delete), `restore`
//! (re-attach after a restart, teardown of leftovers), `watch` (noticing a dead shim and
//! cleaning up after it), `book` (which events reach the handler: exactly-once exits, OOM),
//! `group` (shim groups: tasks sharing one shim, and when that shim goes).

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use async_trait::async_trait;
use containerd_shim_protos::{
    api::{
        ConnectRequest, CreateTaskRequest, DeleteRequest, DeleteResponse, KillRequest,
        ShutdownRequest, StartRequest, StateRequest, StateResponse, WaitRequest,
    },
    protobuf::{well_known_types::any::Any, Message},
    shim::oci::Options,
    shim_async::create_events,
    ttrpc::r#async::Server,
    types::task::Status,
};
use plugind_queue::{KeyedQueue, ShutdownMode};
use plugind_sys::process::{mkfifo, ProcessIdentity};
use serde::{Deserialize, Serialize};

use crate::{
    client::TaskClient,
    error::{ExecutorError, Result},
    events::{time_of, EventsService},
    logs::{self, Drains, LogFile, Stream, Tail},
    runtime::{self, Resolved, Runtimes},
    types::{CreateTask, ExitInfo, RestoreOutcome, TaskEvent, TaskState, TaskStatus},
    EventHandler, Executor,
};

/// `PATH` given to shims (and so to runtimes): the executor never reads the daemon's environment.
const SHIM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Type URL of the runc shim's options (typeurl v1: no prefix; shim-protocol.md gotcha 7).
const OPTIONS_URL: &str = "containerd.runc.v1.Options";
const SIGTERM: u32 = 15;
const SIGKILL: u32 = 9;

/// Parameters of a [`ShimExecutor`].
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Exec root (e.g. `/run/plugind`); keep it short: `<exec-root>/events.sock` must fit in a
    /// unix socket address (107 bytes).
    pub exec_root: PathBuf,
    /// containerd namespace given to shims; isolates runc state and shim sockets from other users.
    pub namespace: String,
    /// The shim binary (`containerd-shim-runc-v2`, absolute or found in `PATH`).
    pub shim_binary: PathBuf,
    /// Runtime state root passed to the shim (`Options.root`).
    pub runc_root: PathBuf,
    /// Deadline of each ttrpc call (Create, Start, Delete, ...), and of the shim's `start`.
    pub rpc_timeout: Duration,
    /// Deadline of connecting to a shim (short: restore dials every task in parallel).
    pub dial_timeout: Duration,
    /// Size of a task's log file before it rotates to `<id>.log.1`.
    pub log_limit: u64,
    /// Capacity of the event queue (events waiting across all tasks).
    pub queue_capacity: usize,
    /// How tasks share shims (`--shim-group`); see [`ShimGroup`].
    pub shim_group: ShimGroup,
}

impl ExecutorConfig {
    /// A configuration with the usual values: shim `containerd-shim-runc-v2`, runc root
    /// `<exec_root>/runc`, 10 s per call, 1 s dial, 10 MiB logs, 1024 queued events, a shim
    /// per task.
    pub fn new(exec_root: &Path, namespace: &str) -> ExecutorConfig {
        ExecutorConfig {
            exec_root: exec_root.to_owned(),
            namespace: namespace.to_owned(),
            shim_binary: PathBuf::from("containerd-shim-runc-v2"),
            runc_root: exec_root.join("runc"),
            rpc_timeout: Duration::from_secs(10),
            dial_timeout: Duration::from_secs(1),
            log_limit: 10 << 20,
            queue_capacity: 1024,
            // The library keeps Docker's shim per task; the daemon passes its `--shim-group`.
            shim_group: ShimGroup::None,
        }
    }

    fn events_socket(&self) -> PathBuf {
        self.exec_root.join("events.sock")
    }

    fn task_dir(&self, id: &str) -> PathBuf {
        self.exec_root.join("tasks").join(id)
    }
}

/// What is recorded per task at start, to recognise its processes after a restart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct TaskRecord {
    pid: u32,
    start_time: u64,
    shim_pid: u32,
    shim_start_time: u64,
    runtime: String,
    /// The shim group the task runs in (`None`: a shim of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<String>,
}

/// A task the executor is attached to.
struct Task {
    id: String,
    bundle: PathBuf,
    /// `None` once its shim is known dead (restore cleaned it up); `exit` then says how it ended.
    client: Option<TaskClient>,
    /// The shim process, to wait for it to be gone after Shutdown.
    shim: Option<ProcessIdentity>,
    /// The shim group it runs in; its shim is shut down when its last member leaves.
    group: Option<Arc<Group>>,
    exit: Option<ExitInfo>,
    /// A tokio mutex: held across the awaits that flush the drains.
    drains: tokio::sync::Mutex<Drains>,
    /// The watcher that notices the death of the shim (which sends no event).
    watcher: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Task {
    fn drop(&mut self) {
        self.stop_watcher();
    }
}

impl Task {
    fn stop_watcher(&self) {
        if let Some(h) = lock(&self.watcher).take() {
            h.abort();
        }
    }
}

/// How many exits one task generation remembers; older entries are forgotten first, so the
/// bookkeeping stays bounded even if a shim reports exits of exec processes (which the executor
/// never starts) in a loop.
const EXITS_PER_GENERATION: usize = 256;

mod book;
mod calls;
mod group;
mod restore;
mod start;
mod watch;

use book::Book;
use group::{Group, Groups};
pub use group::{InvalidShimGroup, ShimGroup};

/// State shared by the executor and its events service.
pub(crate) struct Inner {
    /// Itself, for the per-task watchers it spawns.
    me: std::sync::Weak<Inner>,
    config: ExecutorConfig,
    /// Swapped whole on reload; a running task keeps the binary it was created with (the shim
    /// stores it in `<bundle>/runtime`).
    runtimes: RwLock<Arc<Resolved>>,
    /// std mutexes: never held across an await.
    tasks: Mutex<HashMap<String, Arc<Task>>>,
    starting: Mutex<HashSet<String>>,
    book: Mutex<Book>,
    groups: Mutex<Groups>,
    queue: KeyedQueue<String>,
    handler: Arc<dyn EventHandler>,
    /// Tasks the executor spawned (shim watchers, clean-ups after a dead shim), joined at
    /// shutdown.
    background: Mutex<tokio::task::JoinSet<()>>,
}

/// The executor over `containerd-shim-runc-v2`. Cheap to clone.
#[derive(Clone)]
pub struct ShimExecutor {
    inner: Arc<Inner>,
    /// Kept alive: dropping the server stops the events service.
    server: Arc<tokio::sync::Mutex<Option<Server>>>,
}

impl std::fmt::Debug for ShimExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShimExecutor")
            .field("config", &self.inner.config)
            .finish()
    }
}

// A poisoned lock only means a panic elsewhere; the maps stay consistent.
use plugind_sys::sync::lock;

/// Task ids become file names: keep them to a safe alphabet.
fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ExecutorError::InvalidId { id: id.to_owned() })
    }
}

fn status_of(s: &StateResponse) -> TaskStatus {
    match s.status.enum_value_or_default() {
        Status::CREATED => TaskStatus::Created,
        Status::RUNNING => TaskStatus::Running,
        Status::STOPPED => TaskStatus::Stopped,
        Status::PAUSED => TaskStatus::Paused,
        Status::PAUSING => TaskStatus::Pausing,
        Status::UNKNOWN => TaskStatus::Unknown,
    }
}

fn exit_of(s: &StateResponse) -> ExitInfo {
    ExitInfo {
        status: s.exit_status,
        exited_at: time_of(s.exited_at.as_ref()),
        oom_killed: false,
    }
}

fn socket_path(address: &str) -> Option<&Path> {
    address.strip_prefix("unix://").map(Path::new)
}

fn remove_file_quiet(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove");
        }
    }
}

impl Inner {
    fn task(&self, id: &str) -> Result<Arc<Task>> {
        lock(&self.tasks)
            .get(id)
            .cloned()
            .ok_or_else(|| ExecutorError::NotFound { id: id.to_owned() })
    }

    fn client(&self, id: &str) -> Result<(Arc<Task>, TaskClient)> {
        let task = self.task(id)?;
        let client = task
            .client
            .clone()
            .ok_or_else(|| ExecutorError::NotFound { id: id.to_owned() })?;
        Ok((task, client))
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.config.exec_root.join("logs").join(format!("{id}.log"))
    }

    /// Runs `job` in the executor's set of background tasks (joined at shutdown); finished ones
    /// are reaped here, so the set holds only live tasks.
    fn spawn_background(
        &self,
        job: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::AbortHandle {
        let mut set = lock(&self.background);
        while let Some(done) = set.try_join_next() {
            if let Err(e) = done {
                if e.is_panic() {
                    tracing::error!(error = %e, "executor background task panicked");
                }
            }
        }
        set.spawn(job)
    }

    /// Waits for the executor's background tasks (watchers were aborted above; a clean-up after
    /// a dead shim finishes) up to the call deadline, then aborts what is left.
    async fn join_background(&self) {
        let mut set = std::mem::take(&mut *lock(&self.background));
        let joined = tokio::time::timeout(self.config.rpc_timeout, async {
            while let Some(done) = set.join_next().await {
                if let Err(e) = done {
                    if e.is_panic() {
                        tracing::error!(error = %e, "executor background task panicked");
                    }
                }
            }
        })
        .await;
        if joined.is_err() {
            tracing::warn!(
                left = set.len(),
                "executor tasks still running at shutdown: aborted"
            );
            set.shutdown().await;
        }
    }

    /// Detaches a task and ends its generation: a later task with this id starts with a clean
    /// book, so its exit is delivered even if its init gets the same pid back.
    fn forget(&self, id: &str) {
        if let Some(t) = lock(&self.tasks).remove(id) {
            t.stop_watcher();
        }
        lock(&self.book).end(id, None);
    }

    fn register(&self, task: Task) -> Arc<Task> {
        let task = Arc::new(task);
        if let Some(client) = task.client.clone() {
            let watcher = self.spawn_background(watch::watch(
                self.me.clone(),
                Arc::downgrade(&task),
                task.id.clone(),
                client,
            ));
            *lock(&task.watcher) = Some(watcher);
        }
        if let Some(old) = lock(&self.tasks).insert(task.id.clone(), task.clone()) {
            old.stop_watcher();
        }
        task
    }
}

impl ShimExecutor {
    /// Starts the executor: writes the runtime wrappers (removing stale ones), and serves the
    /// events service at `<exec-root>/events.sock`. Events are handed to `handler`, in order per
    /// task id, inside the event queue.
    pub async fn new(
        config: ExecutorConfig,
        runtimes: &Runtimes,
        handler: Arc<dyn EventHandler>,
    ) -> Result<ShimExecutor> {
        let root = &config.exec_root;
        for dir in [
            root.clone(),
            root.join("tasks"),
            root.join("logs"),
            config.runc_root.clone(),
        ] {
            fs::create_dir_all(&dir).map_err(|e| ExecutorError::io("create dir", &dir, e))?;
        }
        let rt_dir = root.join("runtimes");
        let resolved = runtime::resolve(runtimes, &rt_dir)?;
        runtime::remove_stale(&rt_dir, &resolved)?;
        let inner = Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            queue: KeyedQueue::new(config.queue_capacity),
            runtimes: RwLock::new(Arc::new(resolved)),
            tasks: Mutex::new(HashMap::new()),
            starting: Mutex::new(HashSet::new()),
            book: Mutex::new(Book::default()),
            groups: Mutex::new(Groups::default()),
            handler,
            background: Mutex::new(tokio::task::JoinSet::new()),
            config,
        });
        let sock = inner.config.events_socket();
        // A stale socket from a crashed run: bind does not unlink it (gotcha 18).
        remove_file_quiet(&sock);
        let service = Arc::new(EventsService {
            inner: Arc::downgrade(&inner),
            namespace: inner.config.namespace.clone(),
        });
        let server_err = |source| ExecutorError::EventsServer {
            path: sock.clone(),
            source,
        };
        let mut server = Server::new()
            .bind(&format!("unix://{}", sock.display()))
            .map_err(server_err)?
            .register_service(create_events(service));
        server.start().await.map_err(server_err)?;
        inner.load_groups().await;
        Ok(ShimExecutor {
            inner,
            server: Arc::new(tokio::sync::Mutex::new(Some(server))),
        })
    }

    /// Replaces the runtime configuration as a whole. Tasks already running keep the runtime
    /// (and wrapper script) they were started with.
    pub fn reload_runtimes(&self, runtimes: &Runtimes) -> Result<()> {
        let resolved = runtime::resolve(runtimes, &self.inner.config.exec_root.join("runtimes"))?;
        *plugind_sys::sync::write(&self.inner.runtimes) = Arc::new(resolved);
        Ok(())
    }

    /// The binary the shim runs for runtime `name` (`None`: the default), e.g. a wrapper script.
    pub fn runtime_binary(&self, name: Option<&str>) -> Result<PathBuf> {
        Ok(plugind_sys::sync::read(&self.inner.runtimes)
            .binary(name)?
            .1)
    }

    /// The task's log file (`<exec-root>/logs/<id>.log`; the previous generation is `<...>.1`).
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.inner.log_path(id)
    }

    /// The last `n` lines of a task's log, across rotation. Each line is
    /// `<unix seconds>.<millis> <stdout|stderr>[/<exec id>] <text>`.
    pub fn log_tail(&self, id: &str, n: usize) -> Result<Vec<String>> {
        check_id(id)?;
        logs::read_tail(&self.inner.log_path(id), n)
    }

    /// Ids of the tasks the executor is attached to.
    pub fn task_ids(&self) -> Vec<String> {
        lock(&self.inner.tasks).keys().cloned().collect()
    }

    /// Stops serving events and reading output, leaving every shim and task running (live
    /// restore picks them up). Queued events are handled first. The events socket is removed,
    /// which makes shims retry undelivered events for longer (about 45 s instead of 15 s).
    pub async fn shutdown(&self) {
        if let Some(mut server) = self.server.lock().await.take() {
            let _ = server.shutdown().await;
        }
        remove_file_quiet(&self.inner.config.events_socket());
        self.inner.queue.shutdown(ShutdownMode::Drain).await;
        let tasks: Vec<Arc<Task>> = lock(&self.inner.tasks).drain().map(|(_, t)| t).collect();
        lock(&self.inner.book).tasks.clear();
        for t in tasks {
            t.stop_watcher();
            t.drains.lock().await.stop().await;
        }
        self.inner.stop_group_drains().await;
        self.inner.join_background().await;
    }

    /// The live shim groups and their members, sorted by group name (for tests).
    #[doc(hidden)]
    pub fn shim_groups(&self) -> Vec<(String, Vec<String>)> {
        let mut g = self.inner.group_members();
        g.sort();
        g
    }

    /// Number of background tasks still held (for tests).
    #[doc(hidden)]
    pub fn background_tasks(&self) -> usize {
        lock(&self.inner.background).len()
    }
}

#[cfg(test)]
mod tests;
