//! [`ShimExecutor`]: tasks run by `containerd-shim-runc-v2`, driven over ttrpc.
//!
//! Layout under the exec root (all created on demand):
//! - `events.sock`: the events service every shim publishes to (`TTRPC_ADDRESS`);
//! - `runtimes/<name>-<sha256>`: runtime wrapper scripts;
//! - `tasks/<id>/`: the task's stdio FIFOs and `task.json` (pid and start time of the task and
//!   of its shim, checked before anything is adopted after a restart);
//! - `logs/<id>.log` (+ `.1`): the task's output, size-bounded;
//! - `runc/`: the runtime state root (`runc --root <exec-root>/runc/<namespace> list`).

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
}

impl ExecutorConfig {
    /// A configuration with the usual values: shim `containerd-shim-runc-v2`, runc root
    /// `<exec_root>/runc`, 10 s per call, 1 s dial, 10 MiB logs, 1024 queued events.
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
}

/// A task the executor is attached to.
struct Task {
    id: String,
    bundle: PathBuf,
    /// `None` once its shim is known dead (restore cleaned it up); `exit` then says how it ended.
    client: Option<TaskClient>,
    /// The shim process, to wait for it to be gone after Shutdown.
    shim: Option<ProcessIdentity>,
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
mod restore;
mod start;

use book::{Admit, Book};

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

/// The shim prints its address as plain text (1.6), or as JSON (2.x); accept both.
fn parse_address(stdout: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stdout).trim().to_owned();
    if text.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        return v.get("address")?.as_str().map(str::to_owned);
    }
    (!text.is_empty()).then_some(text)
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
    /// Hands an event to the queue, applying the exactly-once and OOM rules.
    pub(crate) async fn publish(&self, mut event: TaskEvent) {
        let id = event.id().to_owned();
        let attached = lock(&self.tasks).contains_key(&id);
        let starting = !attached && lock(&self.starting).contains(&id);
        let init_exit = matches!(event, TaskEvent::Exited { exec_id: None, .. });
        if !(attached || starting) || (starting && init_exit) {
            // Unknown task, or the exit of one still starting: create reports that itself, and
            // once it registers the task it asks the shim for the state, so nothing is missed.
            tracing::debug!(task = %id, ?event, "event ignored");
            return;
        }
        {
            let mut book = lock(&self.book);
            match &mut event {
                TaskEvent::Oom { .. } => book.mark_oom(&id),
                TaskEvent::Exited {
                    exec_id, pid, exit, ..
                } => match book.admit_exit(&id, exec_id.as_deref(), *pid) {
                    Admit::Deliver { oom } => exit.oom_killed |= oom,
                    Admit::Duplicate => {
                        tracing::debug!(task = %id, pid, "duplicate exit ignored");
                        return;
                    }
                    Admit::Stale => {
                        tracing::debug!(task = %id, pid, "exit of an earlier task generation ignored");
                        return;
                    }
                },
                _ => {}
            }
        }
        tracing::debug!(task = %id, ?event, "task event");
        let handler = self.handler.clone();
        if let Err(e) = self
            .queue
            .append(id.clone(), async move { handler.handle(event).await })
            .await
        {
            tracing::warn!(task = %id, error = %e, "event dropped: queue closed");
        }
    }

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

    /// mkfifos the task's stdio FIFOs and the shim's log FIFO, and starts draining them.
    fn open_io(
        &self,
        id: &str,
        bundle: &Path,
        shim_tail: &Tail,
        err_tail: &Tail,
    ) -> Result<Drains> {
        let dir = self.config.task_dir(id);
        fs::create_dir_all(&dir).map_err(|e| ExecutorError::io("create dir", &dir, e))?;
        let logs_dir = self.config.exec_root.join("logs");
        fs::create_dir_all(&logs_dir).map_err(|e| ExecutorError::io("create dir", &logs_dir, e))?;
        let log = Arc::new(Mutex::new(LogFile::open(
            &self.log_path(id),
            self.config.log_limit,
        )?));
        let mut drains = Drains::default();
        let shim_log = bundle.join("log");
        mkfifo(&shim_log, 0o700)?;
        drains.add(&shim_log, Stream::Shim, id, None, shim_tail.clone())?;
        for (name, stream, tail) in [
            ("stdout", Stream::Stdout, Tail::default()),
            ("stderr", Stream::Stderr, err_tail.clone()),
        ] {
            let fifo = dir.join(name);
            mkfifo(&fifo, 0o600)?;
            drains.add(&fifo, stream, id, Some(log.clone()), tail)?;
        }
        Ok(drains)
    }

    fn shim_command(&self, id: &str, bundle: &Path, sub: &str) -> tokio::process::Command {
        let events = self.config.events_socket();
        let mut cmd = tokio::process::Command::new(&self.config.shim_binary);
        cmd.arg("-namespace")
            .arg(&self.config.namespace)
            .arg("-address")
            .arg(&events)
            .arg("-publish-binary")
            .arg(&self.config.shim_binary)
            .arg("-id")
            .arg(id);
        if sub == "delete" {
            cmd.arg("-bundle").arg(bundle);
        }
        cmd.arg(sub)
            .current_dir(bundle)
            .env_clear()
            .env("PATH", SHIM_PATH)
            .env("TTRPC_ADDRESS", &events)
            // `start` reads stdin to EOF (gotcha 3).
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs the shim's `start`, returns the address it serves on.
    async fn launch_shim(&self, id: &str, bundle: &Path, shim_tail: &Tail) -> Result<String> {
        let fail = |status, detail: String| ExecutorError::ShimStart {
            id: id.to_owned(),
            status,
            detail,
            shim_log: logs::tail_lines(shim_tail),
        };
        let out = tokio::time::timeout(
            self.config.rpc_timeout,
            self.shim_command(id, bundle, "start").output(),
        )
        .await
        .map_err(|_| fail(None, "start timed out".to_owned()))?
        .map_err(|e| {
            fail(
                None,
                format!("cannot run {}: {e}", self.config.shim_binary.display()),
            )
        })?;
        if !out.status.success() {
            return Err(fail(
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ));
        }
        parse_address(&out.stdout)
            .ok_or_else(|| fail(Some(0), "start printed no address".to_owned()))
    }

    /// Connects and pings with `Connect` (a shim that died after `start` printed its address
    /// would otherwise look alive; gotcha 4).
    async fn attach(
        &self,
        id: &str,
        address: &str,
        deadline: Duration,
    ) -> Result<(TaskClient, u32, u32)> {
        let client = TaskClient::connect(id, address, deadline).await?;
        let resp = client
            .connect_rpc(
                ConnectRequest {
                    id: id.to_owned(),
                    ..Default::default()
                },
                Some(deadline),
            )
            .await?;
        Ok((client, resp.shim_pid, resp.task_pid))
    }

    async fn state_of(&self, client: &TaskClient, id: &str) -> Result<StateResponse> {
        client
            .state(
                StateRequest {
                    id: id.to_owned(),
                    ..Default::default()
                },
                Some(self.config.rpc_timeout),
            )
            .await
    }

    /// Best-effort teardown of a task whose start failed: kill, delete, shut the shim down.
    async fn abort_start(
        &self,
        id: &str,
        client: Option<&TaskClient>,
        address: Option<&str>,
        shim: Option<ProcessIdentity>,
    ) {
        let t = Some(self.config.rpc_timeout);
        if let Some(c) = client {
            let kill = KillRequest {
                id: id.to_owned(),
                signal: SIGKILL,
                all: true,
                ..Default::default()
            };
            if c.kill(kill, t).await.is_ok() {
                let _ = c
                    .wait(
                        WaitRequest {
                            id: id.to_owned(),
                            ..Default::default()
                        },
                        t,
                    )
                    .await;
            }
            if let Err(e) = c
                .delete(
                    DeleteRequest {
                        id: id.to_owned(),
                        ..Default::default()
                    },
                    t,
                )
                .await
            {
                tracing::debug!(task = %id, error = %e, "delete after failed start");
            }
            let _ = c
                .shutdown(
                    ShutdownRequest {
                        id: id.to_owned(),
                        ..Default::default()
                    },
                    t,
                )
                .await;
        }
        if let Some(shim) = shim {
            self.wait_gone(shim).await;
        }
        if let Some(p) = address.and_then(socket_path) {
            // Present only if the shim died without cleaning up.
            if client.is_none() {
                remove_file_quiet(p);
            }
        }
        let dir = self.config.task_dir(id);
        if let Err(e) = fs::remove_dir_all(&dir) {
            tracing::debug!(task = %id, error = %e, "remove task dir");
        }
    }

    /// Waits (up to the call deadline, polling with growing intervals) until a process is gone.
    async fn wait_gone(&self, p: ProcessIdentity) {
        let deadline = tokio::time::Instant::now() + self.config.rpc_timeout;
        let mut delay = Duration::from_micros(500);
        while p.is_alive() && !plugind_sys::process::is_zombie(p.pid) {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(pid = p.pid, "shim still running after shutdown");
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(20));
        }
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
            let watcher = self.spawn_background(watch(
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

    /// The shim of an attached task died (it sends no event for that): clean up after it like
    /// restore does, and report the task as exited.
    async fn shim_died(&self, task: &Arc<Task>) {
        let id = task.id.as_str();
        let still_current = lock(&self.tasks)
            .get(id)
            .is_some_and(|t| Arc::ptr_eq(t, task));
        let Some(client) = task.client.as_ref().filter(|_| still_current) else {
            return;
        };
        // Confirm with a fresh connection: an error on the old one alone is not proof.
        if self
            .attach(id, client.address(), self.config.dial_timeout)
            .await
            .is_ok()
        {
            return;
        }
        tracing::warn!(task = %id, "shim died");
        let record: Option<TaskRecord> = fs::read(self.config.task_dir(id).join("task.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let (pid, exit) = match self
            .delete_dead_shim(id, &task.bundle, client.address(), record.as_ref())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(task = %id, error = %e, "cleanup after dead shim failed");
                (
                    record.map_or(0, |r| r.pid),
                    ExitInfo {
                        status: 137,
                        exited_at: None,
                        oom_killed: false,
                    },
                )
            }
        };
        task.drains.lock().await.stop().await;
        self.register(Task {
            id: id.to_owned(),
            bundle: task.bundle.clone(),
            client: None,
            shim: None,
            exit: Some(exit),
            drains: tokio::sync::Mutex::new(Drains::default()),
            watcher: Mutex::new(None),
        });
        self.publish(TaskEvent::Exited {
            id: id.to_owned(),
            exec_id: None,
            pid,
            exit,
        })
        .await;
    }

    /// Reports the exit of a task found stopped on attach (deduplicated against events).
    async fn report_stopped(&self, id: &str, state: &StateResponse) -> ExitInfo {
        let exit = exit_of(state);
        self.publish(TaskEvent::Exited {
            id: id.to_owned(),
            exec_id: None,
            pid: state.pid,
            exit,
        })
        .await;
        exit
    }

    async fn delete(&self, id: &str) -> Result<ExitInfo> {
        let task = self.task(id)?;
        let t = Some(self.config.rpc_timeout);
        let exit = match &task.client {
            Some(client) => {
                let st = self.state_of(client, id).await?;
                if status_of(&st) != TaskStatus::Stopped {
                    return Err(ExecutorError::StillRunning { id: id.to_owned() });
                }
                // Report the exit if the event has not come yet (deduplicated).
                let mut exit = self.report_stopped(id, &st).await;
                let resp = client
                    .delete(
                        DeleteRequest {
                            id: id.to_owned(),
                            ..Default::default()
                        },
                        t,
                    )
                    .await?;
                exit.status = resp.exit_status;
                if let Err(e) = client
                    .shutdown(
                        ShutdownRequest {
                            id: id.to_owned(),
                            ..Default::default()
                        },
                        t,
                    )
                    .await
                {
                    // The shim may exit before answering.
                    tracing::debug!(task = %id, error = %e, "shutdown");
                }
                // Shutdown answers before the shim exits; "deleted" should mean gone.
                if let Some(shim) = task.shim {
                    self.wait_gone(shim).await;
                }
                if let Some(p) = socket_path(client.address()) {
                    remove_file_quiet(p);
                }
                exit
            }
            None => task.exit.unwrap_or(ExitInfo {
                status: 137,
                exited_at: None,
                oom_killed: false,
            }),
        };
        self.forget(id);
        task.drains.lock().await.stop().await;
        let dir = self.config.task_dir(id);
        if let Err(e) = fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(ExecutorError::io("remove", &dir, e));
            }
        }
        remove_file_quiet(&task.bundle.join("log"));
        tracing::info!(task = %id, status = exit.status, "task deleted");
        Ok(exit)
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
        self.inner.join_background().await;
    }

    /// Number of background tasks still held (for tests).
    #[doc(hidden)]
    pub fn background_tasks(&self) -> usize {
        lock(&self.inner.background).len()
    }
}

#[async_trait]
impl Executor for ShimExecutor {
    async fn create(&self, req: CreateTask) -> Result<TaskState> {
        self.inner.create(req).await
    }

    fn log_tail(&self, id: &str, n: usize) -> Result<Vec<String>> {
        ShimExecutor::log_tail(self, id, n)
    }

    fn log_path(&self, id: &str) -> PathBuf {
        ShimExecutor::log_path(self, id)
    }

    async fn kill(&self, id: &str, grace: Duration) -> Result<ExitInfo> {
        let (_, c) = self.inner.client(id)?;
        let t = Some(self.inner.config.rpc_timeout);
        let wait = WaitRequest {
            id: id.to_owned(),
            ..Default::default()
        };
        match c
            .kill(
                KillRequest {
                    id: id.to_owned(),
                    signal: SIGTERM,
                    ..Default::default()
                },
                t,
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        // Zero grace: straight to SIGKILL (a zero ttrpc timeout would mean "no deadline").
        let waited = if grace.is_zero() {
            Err(ExecutorError::Timeout {
                id: id.to_owned(),
                method: "Wait",
            })
        } else {
            c.wait(wait.clone(), Some(grace)).await
        };
        let resp = match waited {
            Ok(r) => r,
            Err(ExecutorError::Timeout { .. } | ExecutorError::Rpc { .. }) => {
                // SIGTERM ignored (a PID 1 without a handler): escalate to every process.
                let kill = KillRequest {
                    id: id.to_owned(),
                    signal: SIGKILL,
                    all: true,
                    ..Default::default()
                };
                match c.kill(kill, t).await {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
                c.wait(wait, t).await?
            }
            Err(e) => return Err(e),
        };
        Ok(ExitInfo {
            status: resp.exit_status,
            exited_at: time_of(resp.exited_at.as_ref()),
            oom_killed: false,
        })
    }

    async fn delete(&self, id: &str) -> Result<ExitInfo> {
        self.inner.delete(id).await
    }

    async fn destroy(&self, id: &str, bundle: &Path) -> Result<()> {
        self.inner.destroy(id, bundle).await
    }

    fn leftovers(&self) -> Vec<String> {
        self.inner.leftovers()
    }

    async fn state(&self, id: &str) -> Result<TaskState> {
        let task = self.inner.task(id)?;
        let Some(c) = &task.client else {
            return Ok(TaskState {
                id: id.to_owned(),
                pid: 0,
                status: TaskStatus::Stopped,
                exit: task.exit,
            });
        };
        let st = self.inner.state_of(c, id).await?;
        let status = status_of(&st);
        let exit = (status == TaskStatus::Stopped).then(|| exit_of(&st));
        Ok(TaskState {
            id: id.to_owned(),
            pid: st.pid,
            status,
            exit,
        })
    }

    async fn restore(&self, tasks: Vec<(String, PathBuf)>) -> Vec<RestoreOutcome> {
        let inner = &self.inner;
        futures::future::join_all(tasks.into_iter().map(|(id, b)| inner.restore_one(id, b))).await
    }
}

/// How long one watching `Wait` call may last before it is renewed.
const WATCH_PERIOD: Duration = Duration::from_secs(600);

/// Keeps a `Wait` call open on the task's shim. It returns when the task exits (the exit event
/// reports that) or fails when the shim dies, which is then cleaned up and reported.
async fn watch(
    inner: std::sync::Weak<Inner>,
    task: std::sync::Weak<Task>,
    id: String,
    client: TaskClient,
) {
    loop {
        let req = WaitRequest {
            id: id.clone(),
            ..Default::default()
        };
        let res = client.wait(req, Some(WATCH_PERIOD)).await;
        let (Some(inner), Some(task)) = (inner.upgrade(), task.upgrade()) else {
            return;
        };
        match res {
            Ok(_) => return,
            Err(ExecutorError::Timeout { .. }) => continue,
            Err(e) if e.is_not_found() => return,
            Err(e) => {
                tracing::debug!(task = %id, error = %e, "watch failed");
                // Not awaited under an abort handle that delete may fire: detach the cleanup.
                let me = inner.clone();
                me.spawn_background(async move { inner.shim_died(&task).await });
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
