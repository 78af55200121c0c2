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
        ConnectRequest, CreateTaskRequest, DeleteRequest, DeleteResponse, ExecProcessRequest,
        KillRequest, PauseRequest, PidsRequest, ResumeRequest, ShutdownRequest, StartRequest,
        StateRequest, StateResponse, StatsRequest, WaitRequest,
    },
    cgroups, cgroups_v2,
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
    logs::{self, Drains, LogFile, SharedLog, Stream, Tail},
    runtime::{self, Resolved, Runtimes},
    types::{CreateTask, ExitInfo, RestoreOutcome, TaskEvent, TaskState, TaskStats, TaskStatus},
    EventHandler, Executor,
};

/// `PATH` given to shims (and so to runtimes): the executor never reads the daemon's environment.
const SHIM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Type URL of the runc shim's options (typeurl v1: no prefix; shim-protocol.md gotcha 7).
const OPTIONS_URL: &str = "containerd.runc.v1.Options";
/// Type URL containerd uses for an exec's process spec (the shim does not check it).
const PROCESS_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
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
    /// The task's log file, shared by the drains of the task and of its exec processes so that
    /// rotation sees every write; `None` for a task whose shim was found dead.
    log: Option<SharedLog>,
    /// tokio mutexes: held across the awaits that flush the drains.
    drains: tokio::sync::Mutex<Drains>,
    execs: tokio::sync::Mutex<HashMap<String, Drains>>,
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

/// How many exits one task generation remembers (its init and its most recent exec processes);
/// older entries are forgotten first, so a task running execs in a loop stays bounded.
const EXITS_PER_GENERATION: usize = 256;

/// Exactly-once bookkeeping for exits and OOM marks, per task *generation*.
///
/// A generation begins when `create` or `restore` takes a task id and ends when `delete` (or a
/// failed start) releases it; everything recorded for the id goes with it. So a later task with
/// the same id, whose init may get an old pid back, starts clean and its exit is delivered, and
/// the book never holds more than the tasks the executor knows.
#[derive(Default)]
struct Book {
    /// Source of generation numbers (never reused within one executor).
    next_generation: u64,
    /// The current generation of every task id the executor knows.
    tasks: HashMap<String, Generation>,
}

/// What one task generation has delivered.
#[derive(Debug, Default)]
struct Generation {
    number: u64,
    /// The init pid of this generation, once known: an init exit with another pid belongs to an
    /// earlier generation (a late event of a previous shim) and is not this task's.
    init_pid: Option<u32>,
    /// (exec id or "", pid) of every exit already handed to the queue, oldest first.
    delivered: std::collections::VecDeque<(String, u32)>,
    /// An OOM event came since the last init exit.
    oom: bool,
}

/// What [`Book::admit_exit`] decided about an exit.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    /// Deliver it; `oom` says whether an OOM event preceded this init exit.
    Deliver { oom: bool },
    /// Already delivered in this generation.
    Duplicate,
    /// It belongs to an earlier generation of the id, or to no generation at all.
    Stale,
}

impl Book {
    /// Starts a new generation of `id`, forgetting everything of the previous one.
    fn begin(&mut self, id: &str) -> u64 {
        self.next_generation += 1;
        let number = self.next_generation;
        self.tasks.insert(
            id.to_owned(),
            Generation {
                number,
                ..Generation::default()
            },
        );
        number
    }

    /// Records the init pid of the current generation of `id`.
    fn set_init_pid(&mut self, id: &str, pid: u32) {
        if let Some(g) = self.tasks.get_mut(id) {
            g.init_pid = Some(pid);
        }
    }

    /// Ends the generation `number` of `id` (a no-op if a newer one has begun).
    fn end(&mut self, id: &str, number: Option<u64>) {
        if let Some(g) = self.tasks.get(id) {
            if number.is_none_or(|n| n == g.number) {
                self.tasks.remove(id);
            }
        }
    }

    /// Forgets the exits of one exec process (it was deleted; its id may be used again).
    fn forget_exec(&mut self, id: &str, exec_id: &str) {
        if let Some(g) = self.tasks.get_mut(id) {
            g.delivered.retain(|(e, _)| e != exec_id);
        }
    }

    fn mark_oom(&mut self, id: &str) {
        if let Some(g) = self.tasks.get_mut(id) {
            g.oom = true;
        }
    }

    /// Decides whether an exit is delivered, recording it if so.
    ///
    /// Exit times are not compared with the generation's start: a clock stepped back would make
    /// a real exit look old, and a dropped exit is never noticed again.
    fn admit_exit(&mut self, id: &str, exec_id: Option<&str>, pid: u32) -> Admit {
        let Some(g) = self.tasks.get_mut(id) else {
            return Admit::Stale;
        };
        if exec_id.is_none() && g.init_pid.is_some_and(|p| p != pid && pid != 0) {
            return Admit::Stale;
        }
        let key = (exec_id.unwrap_or_default().to_owned(), pid);
        if g.delivered.contains(&key) {
            return Admit::Duplicate;
        }
        if g.delivered.len() >= EXITS_PER_GENERATION {
            g.delivered.pop_front();
        }
        g.delivered.push_back(key);
        let oom = exec_id.is_none() && std::mem::take(&mut g.oom);
        Admit::Deliver { oom }
    }

    /// Number of entries held, for tests of boundedness.
    #[cfg(test)]
    fn size(&self) -> usize {
        self.tasks.values().map(|g| 1 + g.delivered.len()).sum()
    }
}

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

/// Ids and exec ids become file names: keep them to a safe alphabet.
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
    ) -> Result<(Drains, SharedLog)> {
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
        drains.add(&shim_log, Stream::Shim, id, None, None, shim_tail.clone())?;
        for (name, stream, tail) in [
            ("stdout", Stream::Stdout, Tail::default()),
            ("stderr", Stream::Stderr, err_tail.clone()),
        ] {
            let fifo = dir.join(name);
            mkfifo(&fifo, 0o600)?;
            drains.add(&fifo, stream, id, None, Some(log.clone()), tail)?;
        }
        Ok((drains, log))
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

    async fn state_of(
        &self,
        client: &TaskClient,
        id: &str,
        exec_id: &str,
    ) -> Result<StateResponse> {
        client
            .state(
                StateRequest {
                    id: id.to_owned(),
                    exec_id: exec_id.to_owned(),
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
        for (_, mut d) in task.execs.lock().await.drain() {
            d.stop().await;
        }
        self.register(Task {
            id: id.to_owned(),
            bundle: task.bundle.clone(),
            client: None,
            shim: None,
            exit: Some(exit),
            log: None,
            drains: tokio::sync::Mutex::new(Drains::default()),
            execs: tokio::sync::Mutex::new(HashMap::new()),
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

    async fn create(&self, req: CreateTask) -> Result<TaskState> {
        let id = req.id.as_str();
        check_id(id)?;
        let bundle = &req.bundle;
        let invalid = |reason| ExecutorError::InvalidBundle {
            id: id.to_owned(),
            bundle: bundle.clone(),
            reason,
        };
        if !bundle.is_absolute() {
            return Err(invalid("not an absolute path"));
        }
        if bundle.file_name().and_then(|n| n.to_str()) != Some(id) {
            return Err(invalid("directory name differs from the task id"));
        }
        if !bundle.join("config.json").is_file() {
            return Err(invalid("no config.json"));
        }
        let (runtime, binary) =
            plugind_sys::sync::read(&self.runtimes).binary(req.runtime.as_deref())?;
        if lock(&self.tasks).contains_key(id) || !lock(&self.starting).insert(id.to_owned()) {
            return Err(ExecutorError::AlreadyExists { id: id.to_owned() });
        }
        let generation = lock(&self.book).begin(id);
        let result = self.create_started(id, bundle, &runtime, &binary).await;
        if result.is_err() {
            lock(&self.book).end(id, Some(generation));
        }
        lock(&self.starting).remove(id);
        result
    }

    async fn create_started(
        &self,
        id: &str,
        bundle: &Path,
        runtime: &str,
        binary: &Path,
    ) -> Result<TaskState> {
        let shim_tail = Tail::default();
        let err_tail = Tail::default();
        let (mut drains, log) = self.open_io(id, bundle, &shim_tail, &err_tail)?;
        let address = match self.launch_shim(id, bundle, &shim_tail).await {
            Ok(a) => a,
            Err(e) => {
                drains.stop().await;
                self.abort_start(id, None, None, None).await;
                return Err(e);
            }
        };
        let (client, shim_pid, _) = match self.attach(id, &address, self.config.rpc_timeout).await {
            Ok(c) => c,
            Err(e) => {
                drains.stop().await;
                self.abort_start(id, None, Some(&address), None).await;
                return Err(ExecutorError::ShimStart {
                    id: id.to_owned(),
                    status: None,
                    detail: format!("shim does not answer: {e}"),
                    shim_log: logs::tail_lines(&shim_tail),
                });
            }
        };
        let shim = ProcessIdentity::of(shim_pid).ok();
        match self.create_and_start(id, bundle, binary, &client).await {
            Ok(pid) => {
                lock(&self.book).set_init_pid(id, pid);
                let record = TaskRecord {
                    pid,
                    start_time: ProcessIdentity::of(pid).map(|p| p.start_time).unwrap_or(0),
                    shim_pid,
                    shim_start_time: shim.map_or(0, |p| p.start_time),
                    runtime: runtime.to_owned(),
                };
                // A crash here leaves a running task that restore cannot adopt (no record of
                // its identity): only `destroy` can reclaim it (tests).
                plugind_sys::failpoint::hit("executor-task-started-unrecorded");
                if let Err(e) = self.write_task_record(id, &record) {
                    // The task runs but could not be recorded (EMFILE, a full tmpfs): stop it
                    // and its shim now, or it outlives this failure unseen and the next create
                    // of this id finds it ("task ... already exists").
                    drains.stop().await;
                    self.abort_start(id, Some(&client), Some(&address), shim)
                        .await;
                    return Err(e);
                }
                self.register(Task {
                    id: id.to_owned(),
                    bundle: bundle.to_owned(),
                    client: Some(client.clone()),
                    shim,
                    exit: None,
                    log: Some(log),
                    drains: tokio::sync::Mutex::new(drains),
                    execs: tokio::sync::Mutex::new(HashMap::new()),
                    watcher: Mutex::new(None),
                });
                // Events are hints: an exit between Start and registration was ignored, so ask.
                let st = self.state_of(&client, id, "").await?;
                let status = status_of(&st);
                let exit = if status == TaskStatus::Stopped {
                    Some(self.report_stopped(id, &st).await)
                } else {
                    None
                };
                tracing::info!(task = %id, pid, runtime, "task started");
                Ok(TaskState {
                    id: id.to_owned(),
                    pid,
                    status,
                    exit,
                })
            }
            Err(e) => {
                // Let the drains take the last output before the tails are read.
                let state = self.state_of(&client, id, "").await.ok();
                drains.stop().await;
                self.abort_start(id, Some(&client), Some(&address), shim)
                    .await;
                match state {
                    Some(st) if status_of(&st) == TaskStatus::Stopped => {
                        Err(ExecutorError::TaskExited {
                            id: id.to_owned(),
                            exit_status: st.exit_status,
                            stderr: logs::tail_lines(&err_tail),
                            shim_log: logs::tail_lines(&shim_tail),
                        })
                    }
                    _ => Err(e),
                }
            }
        }
    }

    /// Writes `tasks/<id>/task.json`, replaced atomically but not fsynced: the exec root is a
    /// tmpfs in production and the record matters only as long as the task does, which a
    /// reboot ends anyway.
    fn write_task_record(&self, id: &str, record: &TaskRecord) -> Result<()> {
        let path = self.config.task_dir(id).join("task.json");
        let json = serde_json::to_vec(record).expect("a TaskRecord always serialises");
        // Replaced atomically but not fsynced: the exec root is a tmpfs in production and
        // the record matters only as long as the task does, which a reboot ends anyway.
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, &json).map_err(|e| ExecutorError::io("write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| ExecutorError::io("rename", &path, e))
    }

    /// Create + Start; a task that is already stopped when Start returns is an error.
    async fn create_and_start(
        &self,
        id: &str,
        bundle: &Path,
        binary: &Path,
        client: &TaskClient,
    ) -> Result<u32> {
        let t = Some(self.config.rpc_timeout);
        let dir = self.config.task_dir(id);
        let options = Options {
            binary_name: binary.to_string_lossy().into_owned(),
            root: self.config.runc_root.to_string_lossy().into_owned(),
            ..Default::default()
        };
        let any = Any {
            type_url: OPTIONS_URL.to_owned(),
            value: options
                .write_to_bytes()
                .expect("encoding a protobuf message into a Vec cannot fail"),
            ..Default::default()
        };
        let create = CreateTaskRequest {
            id: id.to_owned(),
            bundle: bundle.to_string_lossy().into_owned(),
            stdout: dir.join("stdout").to_string_lossy().into_owned(),
            stderr: dir.join("stderr").to_string_lossy().into_owned(),
            options: Some(any).into(),
            ..Default::default()
        };
        client.create(create, t).await?;
        let pid = client
            .start(
                StartRequest {
                    id: id.to_owned(),
                    ..Default::default()
                },
                t,
            )
            .await?
            .pid;
        let st = self.state_of(client, id, "").await?;
        if status_of(&st) == TaskStatus::Stopped {
            return Err(ExecutorError::TaskExited {
                id: id.to_owned(),
                exit_status: st.exit_status,
                stderr: Vec::new(),
                shim_log: Vec::new(),
            });
        }
        Ok(pid)
    }

    async fn restore_one(&self, id: String, bundle: PathBuf) -> RestoreOutcome {
        match self.restore_task(&id, &bundle).await {
            Ok(o) => o,
            Err(error) => {
                // Nothing was adopted: end the generation restore began, unless the id belongs
                // to a task that is attached or starting (then the error was "already exists").
                let known =
                    lock(&self.tasks).contains_key(&id) || lock(&self.starting).contains(&id);
                if !known {
                    lock(&self.book).end(&id, None);
                }
                RestoreOutcome::Failed { id, error }
            }
        }
    }

    async fn restore_task(&self, id: &str, bundle: &Path) -> Result<RestoreOutcome> {
        check_id(id)?;
        if bundle.file_name().and_then(|n| n.to_str()) != Some(id) {
            return Err(ExecutorError::InvalidBundle {
                id: id.to_owned(),
                bundle: bundle.to_owned(),
                reason: "directory name differs from the task id",
            });
        }
        if lock(&self.tasks).contains_key(id) {
            return Err(ExecutorError::AlreadyExists { id: id.to_owned() });
        }
        lock(&self.book).begin(id);
        let addr_file = bundle.join("address");
        let address = match fs::read_to_string(&addr_file) {
            Ok(a) => a.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ExecutorError::NotFound { id: id.to_owned() })
            }
            Err(e) => return Err(ExecutorError::io("read", &addr_file, e)),
        };
        let record_path = self.config.task_dir(id).join("task.json");
        let record: Option<TaskRecord> = fs::read(&record_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let shim_tail = Tail::default();
        let (mut drains, log) = self.open_io(id, bundle, &shim_tail, &Tail::default())?;
        match self.attach(id, &address, self.config.dial_timeout).await {
            Ok((client, shim_pid, task_pid)) => {
                let st = match self.state_of(&client, id, "").await {
                    Ok(st) => st,
                    Err(e) => {
                        drains.stop().await;
                        return Err(e);
                    }
                };
                let status = status_of(&st);
                // Adopt only the process that was started: same pid, and while it runs, the same
                // start time (a stopped task's pid may already belong to someone else).
                let matches = record.as_ref().is_some_and(|r| {
                    r.pid == task_pid
                        && (status == TaskStatus::Stopped
                            || ProcessIdentity {
                                pid: r.pid,
                                start_time: r.start_time,
                            }
                            .is_alive())
                });
                if !matches {
                    drains.stop().await;
                    return Err(ExecutorError::IdentityMismatch {
                        id: id.to_owned(),
                        pid: task_pid,
                    });
                }
                lock(&self.book).set_init_pid(id, task_pid);
                self.register(Task {
                    id: id.to_owned(),
                    bundle: bundle.to_owned(),
                    client: Some(client),
                    shim: ProcessIdentity::of(shim_pid).ok(),
                    exit: None,
                    log: Some(log),
                    drains: tokio::sync::Mutex::new(drains),
                    execs: tokio::sync::Mutex::new(HashMap::new()),
                    watcher: Mutex::new(None),
                });
                if status == TaskStatus::Stopped {
                    let exit = self.report_stopped(id, &st).await;
                    Ok(RestoreOutcome::Exited {
                        id: id.to_owned(),
                        exit,
                    })
                } else {
                    Ok(RestoreOutcome::Running {
                        id: id.to_owned(),
                        pid: task_pid,
                    })
                }
            }
            Err(e) => {
                tracing::info!(task = %id, error = %e, "shim is gone: cleaning up");
                self.kill_unresponsive_shim(id, record.as_ref()).await;
                let exit = self
                    .delete_dead_shim(id, bundle, &address, record.as_ref())
                    .await;
                drains.stop().await;
                let exit = exit?;
                self.register(Task {
                    id: id.to_owned(),
                    bundle: bundle.to_owned(),
                    client: None,
                    shim: None,
                    exit: Some(exit.1),
                    log: None,
                    drains: tokio::sync::Mutex::new(Drains::default()),
                    execs: tokio::sync::Mutex::new(HashMap::new()),
                    watcher: Mutex::new(None),
                });
                self.publish(TaskEvent::Exited {
                    id: id.to_owned(),
                    exec_id: None,
                    pid: exit.0,
                    exit: exit.1,
                })
                .await;
                Ok(RestoreOutcome::Exited {
                    id: id.to_owned(),
                    exit: exit.1,
                })
            }
        }
    }

    /// Cleans up after a dead shim with its `delete` subcommand (which also kills a container
    /// still running; runc checks the container's own identity first). Returns (pid, exit).
    async fn delete_dead_shim(
        &self,
        id: &str,
        bundle: &Path,
        address: &str,
        record: Option<&TaskRecord>,
    ) -> Result<(u32, ExitInfo)> {
        let recorded_pid = record.map_or(0, |r| r.pid);
        let result = if bundle.join("runtime").exists() {
            let out = tokio::time::timeout(
                self.config.rpc_timeout,
                self.shim_command(id, bundle, "delete").output(),
            )
            .await
            .map_err(|_| ExecutorError::ShimDelete {
                id: id.to_owned(),
                status: None,
                stderr: "timed out".into(),
            })?
            .map_err(|e| ExecutorError::ShimDelete {
                id: id.to_owned(),
                status: None,
                stderr: e.to_string(),
            })?;
            if !out.status.success() {
                return Err(ExecutorError::ShimDelete {
                    id: id.to_owned(),
                    status: out.status.code(),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                });
            }
            let resp = DeleteResponse::parse_from_bytes(&out.stdout).map_err(|e| {
                ExecutorError::Decode {
                    id: id.to_owned(),
                    what: "delete response",
                    source: Box::new(e),
                }
            })?;
            let pid = if resp.pid == u32::MAX {
                recorded_pid
            } else {
                resp.pid
            };
            (
                pid,
                ExitInfo {
                    status: resp.exit_status,
                    exited_at: time_of(resp.exited_at.as_ref()),
                    oom_killed: false,
                },
            )
        } else {
            // The shim died before Create: there is no container to delete.
            (
                recorded_pid,
                ExitInfo {
                    status: 137,
                    exited_at: None,
                    oom_killed: false,
                },
            )
        };
        if let Some(p) = socket_path(address) {
            remove_file_quiet(p);
        }
        Ok(result)
    }

    /// Tears down what an earlier run left for a task that is not attached (restore could not
    /// adopt it, or nobody tracks it any more): through its shim if one answers at the bundle's
    /// `address` (SIGKILL to every process, delete, shutdown, wait for the shim to be gone),
    /// then the shim's `delete` subcommand (`runc delete --force`: the container if the shim
    /// was dead, runc state, cgroup, rootfs mounts), the shim socket and the task directory.
    /// The shim at the bundle's address runs only containers of that bundle, so whatever it
    /// reports is ours to kill. Idempotent: `Ok` once nothing of the task is left.
    async fn destroy(&self, id: &str, bundle: &Path) -> Result<()> {
        check_id(id)?;
        if lock(&self.tasks).contains_key(id) || lock(&self.starting).contains(id) {
            return Err(ExecutorError::AlreadyExists { id: id.to_owned() });
        }
        let address = fs::read_to_string(bundle.join("address"))
            .ok()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty());
        let mut shim_answered = false;
        if let Some(address) = &address {
            if let Ok((client, shim_pid, _)) =
                self.attach(id, address, self.config.dial_timeout).await
            {
                let shim = ProcessIdentity::of(shim_pid).ok();
                self.abort_start(id, Some(&client), Some(address), shim)
                    .await;
                shim_answered = true;
            }
        }
        if !shim_answered {
            let record: Option<TaskRecord> = fs::read(self.config.task_dir(id).join("task.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            self.kill_unresponsive_shim(id, record.as_ref()).await;
        }
        if bundle.is_dir() {
            self.delete_dead_shim(id, bundle, address.as_deref().unwrap_or(""), None)
                .await?;
        }
        // A `runc create` cut short (its shim stopped mid-create) leaves cgroups that no runc
        // state names any more. Plugin specs set no `cgroupsPath`, so runc's default applies:
        // `/<id>` in every hierarchy.
        let cgroup = PathBuf::from(format!("/{id}"));
        match tokio::task::spawn_blocking(move || plugind_sys::cgroup::remove(&cgroup)).await {
            Ok(Ok(removed)) if !removed.is_empty() => {
                tracing::info!(task = %id, cgroups = removed.len(), "removed leftover cgroups");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(ExecutorError::Sys(e)),
            Err(e) => tracing::warn!(task = %id, error = %e, "cgroup clean-up panicked"),
        }
        let dir = self.config.task_dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ExecutorError::io("remove", &dir, e)),
        }
        tracing::info!(task = %id, "leftover task destroyed");
        Ok(())
    }

    /// A shim that lives but does not answer (stopped, hung, or too slow under load) would
    /// outlive everything once its task is deleted behind its back: SIGKILL it if it is still
    /// the process recorded at start (pid and start time).
    async fn kill_unresponsive_shim(&self, id: &str, record: Option<&TaskRecord>) {
        let Some(r) = record.filter(|r| r.shim_start_time != 0) else {
            return;
        };
        let shim = ProcessIdentity {
            pid: r.shim_pid,
            start_time: r.shim_start_time,
        };
        if shim.is_alive() && !plugind_sys::process::is_zombie(r.shim_pid) {
            tracing::warn!(task = %id, pid = r.shim_pid, "killing a shim that does not answer");
            let _ = plugind_sys::process::send_signal(r.shim_pid, SIGKILL as i32);
            self.wait_gone(shim).await;
        }
    }

    /// Ids that have a task directory on disk but no attached or starting task.
    fn leftovers(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.config.exec_root.join("tasks")) else {
            return Vec::new();
        };
        let tasks = lock(&self.tasks);
        let starting = lock(&self.starting);
        entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|id| !tasks.contains_key(id) && !starting.contains(id))
            .collect()
    }

    async fn delete(&self, id: &str) -> Result<ExitInfo> {
        let task = self.task(id)?;
        let t = Some(self.config.rpc_timeout);
        let exit = match &task.client {
            Some(client) => {
                let st = self.state_of(client, id, "").await?;
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
        for (_, mut d) in task.execs.lock().await.drain() {
            d.stop().await;
        }
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
            for (_, mut d) in t.execs.lock().await.drain() {
                d.stop().await;
            }
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

    async fn signal(&self, id: &str, signal: u32) -> Result<()> {
        let (_, c) = self.inner.client(id)?;
        let req = KillRequest {
            id: id.to_owned(),
            signal,
            ..Default::default()
        };
        c.kill(req, Some(self.inner.config.rpc_timeout)).await?;
        Ok(())
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
        let st = self.inner.state_of(c, id, "").await?;
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

    async fn pids(&self, id: &str) -> Result<Vec<u32>> {
        let (_, c) = self.inner.client(id)?;
        let resp = c
            .pids(
                PidsRequest {
                    id: id.to_owned(),
                    ..Default::default()
                },
                Some(self.inner.config.rpc_timeout),
            )
            .await?;
        Ok(resp.processes.iter().map(|p| p.pid).collect())
    }

    async fn stats(&self, id: &str) -> Result<TaskStats> {
        let (_, c) = self.inner.client(id)?;
        let resp = c
            .stats(
                StatsRequest {
                    id: id.to_owned(),
                    ..Default::default()
                },
                Some(self.inner.config.rpc_timeout),
            )
            .await?;
        let any = resp.stats.into_option().unwrap_or_default();
        decode_stats(id, &any)
    }

    async fn pause(&self, id: &str) -> Result<()> {
        let (_, c) = self.inner.client(id)?;
        c.pause(
            PauseRequest {
                id: id.to_owned(),
                ..Default::default()
            },
            Some(self.inner.config.rpc_timeout),
        )
        .await?;
        Ok(())
    }

    async fn resume(&self, id: &str) -> Result<()> {
        let (_, c) = self.inner.client(id)?;
        c.resume(
            ResumeRequest {
                id: id.to_owned(),
                ..Default::default()
            },
            Some(self.inner.config.rpc_timeout),
        )
        .await?;
        Ok(())
    }

    async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process: &oci_spec::runtime::Process,
    ) -> Result<u32> {
        check_id(exec_id)?;
        let (task, c) = self.inner.client(id)?;
        let t = Some(self.inner.config.rpc_timeout);
        let dir = self.inner.config.task_dir(id);
        if task.execs.lock().await.contains_key(exec_id) {
            return Err(ExecutorError::AlreadyExists {
                id: format!("{id}/{exec_id}"),
            });
        }
        let log = task.log.clone();
        let mut drains = Drains::default();
        let mut paths = Vec::new();
        for (name, stream) in [("stdout", Stream::Stdout), ("stderr", Stream::Stderr)] {
            let fifo = dir.join(format!("exec-{exec_id}.{name}"));
            mkfifo(&fifo, 0o600)?;
            drains.add(
                &fifo,
                stream,
                id,
                Some(exec_id),
                log.clone(),
                Tail::default(),
            )?;
            paths.push(fifo.to_string_lossy().into_owned());
        }
        let spec = serde_json::to_vec(process).map_err(|e| ExecutorError::Decode {
            id: id.to_owned(),
            what: "exec process spec",
            source: Box::new(e),
        })?;
        let req = ExecProcessRequest {
            id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            stdout: paths[0].clone(),
            stderr: paths[1].clone(),
            spec: Some(Any {
                type_url: PROCESS_URL.to_owned(),
                value: spec,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let started = async {
            c.exec(req, t).await?;
            c.start(
                StartRequest {
                    id: id.to_owned(),
                    exec_id: exec_id.to_owned(),
                    ..Default::default()
                },
                t,
            )
            .await
        }
        .await;
        match started {
            Ok(resp) => {
                task.execs.lock().await.insert(exec_id.to_owned(), drains);
                Ok(resp.pid)
            }
            Err(e) => {
                drains.stop().await;
                let _ = c
                    .delete(
                        DeleteRequest {
                            id: id.to_owned(),
                            exec_id: exec_id.to_owned(),
                            ..Default::default()
                        },
                        t,
                    )
                    .await;
                for p in paths {
                    remove_file_quiet(Path::new(&p));
                }
                Err(e)
            }
        }
    }

    async fn wait(&self, id: &str, exec_id: Option<&str>, timeout: Duration) -> Result<ExitInfo> {
        let task = self.inner.task(id)?;
        let Some(c) = &task.client else {
            return task
                .exit
                .ok_or_else(|| ExecutorError::NotFound { id: id.to_owned() });
        };
        let req = WaitRequest {
            id: id.to_owned(),
            exec_id: exec_id.unwrap_or("").to_owned(),
            ..Default::default()
        };
        let resp = c.wait(req, Some(timeout)).await?;
        Ok(ExitInfo {
            status: resp.exit_status,
            exited_at: time_of(resp.exited_at.as_ref()),
            oom_killed: false,
        })
    }

    async fn delete_exec(&self, id: &str, exec_id: &str) -> Result<ExitInfo> {
        check_id(exec_id)?;
        let (task, c) = self.inner.client(id)?;
        let req = DeleteRequest {
            id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            ..Default::default()
        };
        let resp = c.delete(req, Some(self.inner.config.rpc_timeout)).await?;
        lock(&self.inner.book).forget_exec(id, exec_id);
        if let Some(mut d) = task.execs.lock().await.remove(exec_id) {
            d.stop().await;
        }
        let dir = self.inner.config.task_dir(id);
        for name in ["stdout", "stderr"] {
            remove_file_quiet(&dir.join(format!("exec-{exec_id}.{name}")));
        }
        Ok(ExitInfo {
            status: resp.exit_status,
            exited_at: time_of(resp.exited_at.as_ref()),
            oom_killed: false,
        })
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

/// Decodes the shim's cgroup metrics (v1 on hybrid hosts, v2 on unified ones).
fn decode_stats(id: &str, any: &Any) -> Result<TaskStats> {
    let decode_err = |e: containerd_shim_protos::protobuf::Error| ExecutorError::Decode {
        id: id.to_owned(),
        what: "stats",
        source: Box::new(e),
    };
    // Kernel "unlimited" values are near u64::MAX / i64::MAX rounded to pages.
    let limit = |l: u64| (l != 0 && l < (1 << 62)).then_some(l);
    if any.type_url.ends_with("cgroups.v2.Metrics") {
        let m = cgroups_v2::metrics::Metrics::parse_from_bytes(&any.value).map_err(decode_err)?;
        return Ok(TaskStats {
            cpu_usage_ns: m.cpu.usage_usec * 1000,
            memory_usage: m.memory.usage,
            memory_limit: limit(m.memory.usage_limit),
            pids: m.pids.current,
        });
    }
    let m = cgroups::metrics::Metrics::parse_from_bytes(&any.value).map_err(decode_err)?;
    Ok(TaskStats {
        cpu_usage_ns: m.cpu.usage.total,
        memory_usage: m.memory.usage.usage,
        memory_limit: limit(m.memory.usage.limit),
        pids: m.pids.current,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_inner(dir: &Path, handler: Arc<dyn EventHandler>) -> Arc<Inner> {
        Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            config: ExecutorConfig::new(dir, "test"),
            runtimes: RwLock::new(Arc::new(Resolved {
                default: "runc".into(),
                binaries: Default::default(),
            })),
            tasks: Mutex::new(HashMap::new()),
            starting: Mutex::new(HashSet::new()),
            book: Mutex::new(Book::default()),
            queue: KeyedQueue::new(16),
            handler,
            background: Mutex::new(tokio::task::JoinSet::new()),
        })
    }

    /// A task attached without a shim (as after a dead shim): enough for event delivery.
    fn shimless_task(id: &str) -> Task {
        Task {
            id: id.to_owned(),
            bundle: PathBuf::from("/nonexistent").join(id),
            client: None,
            shim: None,
            exit: None,
            log: None,
            drains: tokio::sync::Mutex::new(Drains::default()),
            execs: tokio::sync::Mutex::new(HashMap::new()),
            watcher: Mutex::new(None),
        }
    }

    fn init_exit(id: &str, pid: u32, status: u32) -> TaskEvent {
        TaskEvent::Exited {
            id: id.into(),
            exec_id: None,
            pid,
            exit: ExitInfo {
                status,
                exited_at: None,
                oom_killed: false,
            },
        }
    }

    /// Issue 10, defect 2: a plugin restarted under the same task id whose init gets the old
    /// pid back must still have its exit delivered (it was dropped as a duplicate, so the
    /// plugin stayed "running" and was never restarted).
    #[tokio::test]
    async fn exit_of_a_recreated_task_with_the_same_pid_is_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let inner = test_inner(dir.path(), Arc::new(tx));
        let start = |inner: &Inner| {
            lock(&inner.book).begin("t");
            lock(&inner.book).set_init_pid("t", 42);
            inner.register(shimless_task("t"));
        };
        // A marker after each step proves what was (not) delivered before it.
        let marker = TaskEvent::Paused { id: "t".into() };

        start(&inner);
        inner.publish(init_exit("t", 42, 1)).await;
        assert_eq!(rx.recv().await, Some(init_exit("t", 42, 1)));
        inner.publish(init_exit("t", 42, 1)).await;
        inner.publish(marker.clone()).await;
        assert_eq!(rx.recv().await, Some(marker.clone()), "duplicate delivered");

        // Deleted, then created again: same id, same pid.
        inner.forget("t");
        start(&inner);
        inner.publish(init_exit("t", 42, 2)).await;
        assert_eq!(
            rx.recv().await,
            Some(init_exit("t", 42, 2)),
            "second exit lost"
        );
        // A late exit of another pid belongs to an earlier generation.
        inner.publish(init_exit("t", 41, 9)).await;
        inner.publish(marker.clone()).await;
        assert_eq!(rx.recv().await, Some(marker));
        inner.forget("t");
        assert_eq!(lock(&inner.book).size(), 0);
    }

    /// Issue 10, defect 9: tasks the executor spawns are joined at shutdown, and finished ones
    /// do not pile up.
    #[tokio::test]
    async fn background_tasks_are_reaped_and_joined() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let inner = test_inner(dir.path(), Arc::new(tx));
        for _ in 0..100 {
            inner.spawn_background(async {});
            tokio::task::yield_now().await;
        }
        assert!(
            lock(&inner.background).len() < 100,
            "finished tasks are reaped"
        );
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        inner.spawn_background(async move {
            tokio::task::yield_now().await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        inner.join_background().await;
        assert!(done.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(lock(&inner.background).len(), 0);
    }

    /// Issue 10, defect 9: with a bounded channel to the manager, a full channel holds the
    /// executor back (its queue fills, then `publish` waits) and every exit still arrives.
    #[tokio::test]
    async fn a_full_event_channel_holds_events_back_and_drops_none() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let inner = test_inner(dir.path(), Arc::new(tx));
        let ids: Vec<String> = (0..50).map(|i| format!("t{i}")).collect();
        for id in &ids {
            lock(&inner.book).begin(id);
            inner.register(shimless_task(id));
        }
        let publisher = {
            let inner = inner.clone();
            let ids = ids.clone();
            tokio::spawn(async move {
                for (n, id) in ids.iter().enumerate() {
                    inner.publish(init_exit(id, 1000 + n as u32, 0)).await;
                }
            })
        };
        // 50 exits cannot fit in a channel of 1 and a queue of 16: the publisher must wait.
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
        assert!(!publisher.is_finished(), "events were not held back");
        let mut got = std::collections::BTreeSet::new();
        while got.len() < ids.len() {
            match rx.recv().await {
                Some(TaskEvent::Exited { id, .. }) => {
                    got.insert(id);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        publisher.await.unwrap();
        assert_eq!(got.len(), 50, "an exit was dropped");
    }

    #[test]
    fn exit_bookkeeping_stays_bounded() {
        let mut book = Book::default();
        for round in 0..10_000u32 {
            let id = format!("p{}", round % 7);
            let generation = book.begin(&id);
            book.set_init_pid(&id, 100 + round % 3);
            book.mark_oom(&id);
            for e in 0..5 {
                let exec = format!("e{e}");
                assert!(matches!(
                    book.admit_exit(&id, Some(&exec), 1000 + e),
                    Admit::Deliver { oom: false }
                ));
                book.forget_exec(&id, &exec);
            }
            assert_eq!(
                book.admit_exit(&id, None, 100 + round % 3),
                Admit::Deliver { oom: true }
            );
            assert_eq!(
                book.admit_exit(&id, None, 100 + round % 3),
                Admit::Duplicate
            );
            book.end(&id, Some(generation));
        }
        assert_eq!(book.size(), 0, "every deleted task is forgotten");
        assert_eq!(book.admit_exit("p0", None, 100), Admit::Stale);

        // One long-lived task running exec processes that are never deleted.
        book.begin("long");
        for pid in 0..10_000 {
            book.admit_exit("long", Some("loop"), pid);
        }
        assert!(book.size() <= 1 + EXITS_PER_GENERATION, "{}", book.size());
        // Ending an old generation leaves a newer one alone.
        let old = book.begin("x");
        let new = book.begin("x");
        book.end("x", Some(old));
        assert!(book.tasks.get("x").is_some_and(|g| g.number == new));
    }

    #[test]
    fn address_is_parsed_from_text_or_json() {
        assert_eq!(
            parse_address(b"unix:///run/containerd/s/ab"),
            Some("unix:///run/containerd/s/ab".into())
        );
        assert_eq!(parse_address(b"  unix:///x\n"), Some("unix:///x".into()));
        assert_eq!(
            parse_address(br#"{"version":3,"address":"unix:///y","protocol":"ttrpc"}"#),
            Some("unix:///y".into())
        );
        assert_eq!(parse_address(b""), None);
        assert_eq!(socket_path("unix:///run/s/1"), Some(Path::new("/run/s/1")));
    }

    #[test]
    fn ids_are_file_name_safe() {
        check_id("plugin-1_a.b").expect("ok");
        for bad in ["", "..", ".x", "a/b", "a b", &"x".repeat(129)] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stats_decode_v1_and_treat_huge_limits_as_unlimited() {
        let mut m = cgroups::metrics::Metrics::new();
        m.pids.mut_or_insert_default().current = 3;
        m.memory
            .mut_or_insert_default()
            .usage
            .mut_or_insert_default()
            .usage = 4096;
        m.memory
            .mut_or_insert_default()
            .usage
            .mut_or_insert_default()
            .limit = 9223372036854771712;
        let any = Any {
            type_url: "io.containerd.cgroups.v1.Metrics".into(),
            value: m.write_to_bytes().expect("encode"),
            ..Default::default()
        };
        let s = decode_stats("t", &any).expect("decode");
        assert_eq!((s.pids, s.memory_usage, s.memory_limit), (3, 4096, None));
    }
}
