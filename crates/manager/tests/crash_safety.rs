//! Crash safety of the manager, proved at the points a random-kill loop cannot hit reliably:
//! a child process runs a manager until a failpoint (`plugind_sys::failpoint`, compiled in
//! only for tests) aborts it between two steps of create or enable, then a fresh manager
//! starts on the same roots and the test checks that nothing is left behind (no shim, bundle,
//! runtime or task directory, runc state, mount, partial ingest, stray blob or quarantined
//! rootfs) and that the record is consistent. Also: a stop that fails is not reported as done,
//! a big `rm` does not stall the async workers, and a stalled upload blocks nobody.
//!
//! They need root, `containerd-shim-runc-v2`, runc and the packaged sample plugin (`cargo
//! xtask plugin`), and are `#[ignore]`d for plain `cargo test`; `cargo xtask ci` runs them.

use std::{
    fs,
    io::Read,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use plugind_executor::{
    CreateTask, Executor, ExecutorConfig, ExitInfo, RestoreOutcome, Runtimes, ShimExecutor,
    TaskState,
};
use plugind_manager::{
    manager::{PullNames, RemoteRequest},
    AuthConfig, Manager, ManagerConfig, ManagerError, RunState,
};
use plugind_types::Reference;

type Events = tokio::sync::mpsc::UnboundedReceiver<plugind_executor::TaskEvent>;

const SHIM: &str = "/usr/bin/containerd-shim-runc-v2";
const CHILD_ENV: &str = "PLUGIND_CRASH_TEST_CHILD";

fn plugin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugin/volume-plugin")
}

/// Panics unless the prerequisites are there: opted-in tests never pass silently.
fn require_prerequisites() {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:\t0\t")),
        "these tests need root"
    );
    for bin in [SHIM, "/usr/sbin/runc"] {
        assert!(Path::new(bin).exists(), "these tests need {bin}");
    }
    assert!(
        plugin_dir().join("rootfs/volume-plugin").exists(),
        "the sample plugin is not packaged: run `cargo xtask plugin` first"
    );
}

/// Short roots under /tmp (socket paths must fit 107 bytes) and a unique containerd namespace.
struct World {
    dir: PathBuf,
    namespace: String,
}

impl World {
    fn new() -> World {
        require_prerequisites();
        let dir = tempfile::Builder::new()
            .prefix("pc")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        World {
            namespace: format!("plugind-ct-{:08x}", rand::random::<u32>()),
            dir,
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    fn run(&self) -> PathBuf {
        self.dir.join("run")
    }

    fn config(&self, live_restore: bool) -> ManagerConfig {
        let mut c = ManagerConfig::new(&self.root(), &self.run());
        c.live_restore = live_restore;
        c.stop_grace = Duration::from_secs(5);
        c.default_ready_timeout = Duration::from_secs(20);
        c
    }

    async fn executor(&self) -> (Arc<ShimExecutor>, Events) {
        let mut ec = ExecutorConfig::new(&self.run(), &self.namespace);
        ec.shim_binary = PathBuf::from(SHIM);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let executor = ShimExecutor::new(ec, &Runtimes::runc(), Arc::new(tx))
            .await
            .unwrap();
        (Arc::new(executor), rx)
    }

    async fn manager_on(
        &self,
        executor: Arc<dyn Executor>,
        events: Events,
        live_restore: bool,
    ) -> Manager {
        let (manager, _report) = Manager::start(self.config(live_restore), executor, events)
            .await
            .unwrap();
        manager
    }

    async fn manager(&self, live_restore: bool) -> Manager {
        let (executor, events) = self.executor().await;
        self.manager_on(executor, events, live_restore).await
    }

    /// The sample plugin's create tar.
    fn sample_tar(&self) -> Vec<u8> {
        let tar = Command::new("tar")
            .arg("-C")
            .arg(plugin_dir())
            .args(["-cf", "-", "config.json", "rootfs"])
            .output()
            .unwrap();
        assert!(tar.status.success());
        tar.stdout
    }

    async fn create(&self, manager: &Manager, name: &str) -> String {
        manager
            .create(name, Box::new(std::io::Cursor::new(self.sample_tar())))
            .await
            .unwrap()
            .to_string()
    }

    /// Runs `step` in a child process (a manager of its own, as a separate plugind would be)
    /// and checks that it completes.
    fn run_child(&self, step: &str) {
        let out = self.child(step).output().unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("NO CRASH"),
            "child step {step} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn child(&self, step: &str) -> Command {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "child_runs_until_its_failpoint", "--nocapture"])
            .arg("--include-ignored")
            .env(
                CHILD_ENV,
                format!("{},{},{step}", self.dir.display(), self.namespace),
            );
        cmd
    }

    /// Runs `step` in a child process with `failpoint` armed and checks that it crashed there.
    fn crash_child(&self, step: &str, failpoint: &str) {
        let out = self
            .child(step)
            .env(plugind_sys::failpoint::ENV, format!("{failpoint}=abort"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(6),
            "the child must abort at {failpoint}; stderr: {stderr}"
        );
        assert!(
            stderr.contains(&format!("failpoint {failpoint}")),
            "{stderr}"
        );
    }

    /// Entries of a directory (empty if it does not exist).
    fn entries(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Plugin directories (64 hex) under the state root.
    fn plugin_dirs(&self) -> Vec<String> {
        Self::entries(&self.root())
            .into_iter()
            .filter(|n| n.len() >= 64 && n[..64].bytes().all(|b| b.is_ascii_hexdigit()))
            .collect()
    }

    /// Nothing of a task may be left: no shim, bundle, runtime or task dir, runc state.
    fn assert_no_task_debris(&self) {
        assert!(
            shims_of(&self.namespace).is_empty(),
            "orphan shims of {}",
            self.namespace
        );
        let run = self.run();
        for sub in ["bundles", "plugins", "tasks"] {
            let left: Vec<_> = Self::entries(&run.join(sub))
                .into_iter()
                .filter(|n| !n.starts_with('.'))
                .collect();
            assert!(left.is_empty(), "{sub}/ holds {left:?}");
        }
        let runc_state = Self::entries(&run.join("runc").join(&self.namespace));
        assert!(runc_state.is_empty(), "runc state left: {runc_state:?}");
        assert_eq!(mounts_under(&self.dir), 0, "mounts left");
    }

    /// No plugin directory, quarantine, staging, ingest or blob is left.
    fn assert_no_create_debris(&self) {
        let root = self.root();
        assert!(self.plugin_dirs().is_empty(), "{:?}", self.plugin_dirs());
        for sub in [
            "quarantine",
            "tmp",
            "storage/ingest",
            "storage/blobs/sha256",
        ] {
            let left = Self::entries(&root.join(sub));
            assert!(left.is_empty(), "{sub}/ holds {left:?}");
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        assert_eq!(mounts_under(&self.dir), 0, "mounts left");
        assert!(shims_of(&self.namespace).is_empty(), "shims left");
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn mounts_under(dir: &Path) -> usize {
    let dir = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&dir))
        .count()
}

fn shims_of(namespace: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("containerd-shim-runc-v2") && cmd.contains(namespace) {
            pids.push(pid);
        }
    }
    pids
}

/// The process exists and is not a zombie (killed processes wait for a reaper in containers).
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

fn is_running(manager: &Manager, name: &str) -> Option<u32> {
    match manager.inspect(name).unwrap().record.state.observed.state {
        RunState::Running { pid } => Some(pid),
        _ => None,
    }
}

/// Child mode: start a manager on the given world and run one step; the armed failpoint ends
/// the process half-way (the parent checks the abort).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child-process helper of the crash tests, started by them with --include-ignored"]
async fn child_runs_until_its_failpoint() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        // Run directly (e.g. with --include-ignored) it has nothing to do: it is a helper the
        // parent test starts in a child process with PLUGIND_CRASH_TEST_CHILD set, not a test of its own.
        return;
    };
    let mut parts = spec.splitn(3, ',');
    let (dir, namespace, step) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let world = World {
        dir: PathBuf::from(dir),
        namespace: namespace.to_owned(),
    };
    let m = world.manager(false).await;
    match step {
        "create" => {
            world.create(&m, "victim").await;
        }
        "enable" => {
            m.enable("victim", None).await.unwrap();
        }
        "create-enable-disable" => {
            world.create(&m, "victim").await;
            m.enable("victim", None).await.unwrap();
            m.disable("victim", false).await.unwrap();
        }
        "create-enable" => {
            world.create(&m, "victim").await;
            m.enable("victim", None).await.unwrap();
        }
        other if other.starts_with("pull ") => {
            pull(&m, &other["pull ".len()..], "victim").await;
        }
        other if other.starts_with("upgrade ") => {
            let remote = Reference::parse_normalized(&other["upgrade ".len()..]).unwrap();
            let auth = AuthConfig::from_header("");
            let privileges = m
                .remote_privileges(&remote.full_string(), &auth)
                .await
                .unwrap();
            let request = RemoteRequest {
                auth: &auth,
                privileges: &privileges,
            };
            m.upgrade(
                "victim:latest",
                &remote,
                request,
                Arc::new(|_: plugind_manager::progress::Progress| {}),
            )
            .await
            .unwrap();
        }
        other => panic!("unknown step {other}"),
    }
    std::mem::forget(world);
    println!("NO CRASH");
}

/// A create killed at `failpoint` leaves nothing after a restart, and the name is free.
async fn create_crash_leaves_nothing(failpoint: &str, debris: impl FnOnce(&World)) {
    let world = World::new();
    world.crash_child("create", failpoint);
    debris(&world);
    let m = world.manager(false).await;
    assert!(m.list().is_empty(), "a half-created plugin is listed");
    world.assert_no_create_debris();
    assert!(m.quarantined().is_empty());
    // The name is free and a create works.
    world.create(&m, "victim").await;
    m.remove("victim", false).await.unwrap();
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, runc, containerd-shim-runc-v2 and the packaged sample plugin"]
async fn create_killed_between_rootfs_rename_and_record_leaves_nothing() {
    create_crash_leaves_nothing("create-after-rename", |w| {
        let dirs = w.plugin_dirs();
        assert_eq!(dirs.len(), 1, "the crash left a rootfs without record");
        assert!(w.root().join(&dirs[0]).join("rootfs").is_dir());
        assert!(!w.root().join(&dirs[0]).join("config.json").exists());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, runc, containerd-shim-runc-v2 and the packaged sample plugin"]
async fn create_killed_mid_blob_commit_leaves_no_ingest_or_blob() {
    create_crash_leaves_nothing("blob-commit-linked", |w| {
        let storage = w.root().join("storage");
        assert_eq!(World::entries(&storage.join("ingest")).len(), 1);
        assert_eq!(World::entries(&storage.join("blobs/sha256")).len(), 1);
    })
    .await;
}

/// An enable killed at `failpoint` (task running, record not updated) leaves no task debris
/// after a restart; the plugin is consistent (disabled, not running) and can be enabled.
async fn enable_crash_is_repaired(failpoint: &str, forget_record: bool, live_restore: bool) {
    let world = World::new();
    world.run_child("create");
    world.crash_child("enable", failpoint);
    assert!(
        !shims_of(&world.namespace).is_empty(),
        "the crash left a running shim"
    );
    if forget_record {
        // A plugin nobody knows any more (its record is gone): the task must still go.
        for d in world.plugin_dirs() {
            let dir = world.root().join(d);
            let _ = Command::new("umount")
                .arg("-R")
                .arg(dir.join("propagated-mount"))
                .status();
            fs::remove_dir_all(dir).unwrap();
        }
    }
    let m = world.manager(live_restore).await;
    world.assert_no_task_debris();
    if forget_record {
        assert!(m.list().is_empty());
        let logs = World::entries(&world.run().join("logs"));
        assert!(logs.is_empty(), "logs of a plugin that is gone: {logs:?}");
        m.shutdown().await;
        return;
    }
    let view = m.inspect("victim").unwrap();
    assert!(!view.record.desired_enabled(), "the enable never finished");
    assert!(is_running(&m, "victim").is_none());
    // The plugin is fully usable.
    m.enable("victim", None).await.unwrap();
    assert!(is_running(&m, "victim").is_some());
    m.disable("victim", false).await.unwrap();
    m.remove("victim", false).await.unwrap();
    m.shutdown().await;
    world.assert_no_task_debris();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, runc, containerd-shim-runc-v2 and the packaged sample plugin"]
async fn enable_killed_between_task_start_and_record_is_repaired() {
    enable_crash_is_repaired("enable-after-task-start", false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, runc, containerd-shim-runc-v2 and the packaged sample plugin"]
async fn enable_killed_between_task_start_and_record_is_repaired_with_live_restore() {
    enable_crash_is_repaired("enable-after-task-start", false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, runc, containerd-shim-runc-v2 and the packaged sample plugin"]
async fn enable_killed_before_the_executor_recorded_its_task_leaves_no_orphan_shim() {
    enable_crash_is_repaired("executor-task-started-unrecorded", false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, runc, containerd-shim-runc-v2 and the packaged sample plugin"]
async fn task_of_a_plugin_without_record_is_destroyed_at_start() {
    enable_crash_is_repaired("enable-after-task-start", true, false).await;
}

/// An executor whose `kill` fails while `fail_kill` is set (a shim that does not answer), and
/// whose `delete` fails (keeping the task) while `fail_delete` is set.
struct FlakyExecutor {
    inner: Arc<ShimExecutor>,
    fail_kill: AtomicBool,
    fail_delete: AtomicBool,
}

#[async_trait]
impl Executor for FlakyExecutor {
    async fn create(&self, req: CreateTask) -> plugind_executor::Result<TaskState> {
        self.inner.create(req).await
    }
    async fn kill(&self, id: &str, grace: Duration) -> plugind_executor::Result<ExitInfo> {
        if self.fail_kill.load(Ordering::SeqCst) {
            return Err(plugind_executor::ExecutorError::StillRunning { id: id.to_owned() });
        }
        self.inner.kill(id, grace).await
    }
    async fn delete(&self, id: &str) -> plugind_executor::Result<ExitInfo> {
        if self.fail_delete.load(Ordering::SeqCst) {
            return Err(plugind_executor::ExecutorError::StillRunning { id: id.to_owned() });
        }
        self.inner.delete(id).await
    }
    async fn destroy(&self, id: &str, bundle: &Path) -> plugind_executor::Result<()> {
        self.inner.destroy(id, bundle).await
    }
    fn leftovers(&self) -> Vec<String> {
        self.inner.leftovers()
    }
    async fn state(&self, id: &str) -> plugind_executor::Result<TaskState> {
        self.inner.state(id).await
    }
    async fn restore(&self, tasks: Vec<(String, PathBuf)>) -> Vec<RestoreOutcome> {
        self.inner.restore(tasks).await
    }
    fn log_tail(&self, id: &str, n: usize) -> plugind_executor::Result<Vec<String>> {
        Executor::log_tail(&*self.inner, id, n)
    }
    fn log_path(&self, id: &str) -> PathBuf {
        Executor::log_path(&*self.inner, id)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, runc, containerd-shim-runc-v2 and the packaged sample plugin"]
async fn a_failed_stop_is_not_reported_as_stopped_and_is_retried() {
    let world = World::new();
    let (inner, events) = world.executor().await;
    let flaky = Arc::new(FlakyExecutor {
        inner,
        fail_kill: AtomicBool::new(false),
        fail_delete: AtomicBool::new(false),
    });
    let m = world.manager_on(flaky.clone(), events, false).await;
    let id = world.create(&m, "victim").await;
    m.enable("victim", None).await.unwrap();
    let pid = is_running(&m, "victim").unwrap();

    flaky.fail_kill.store(true, Ordering::SeqCst);
    let err = m.disable("victim", false).await.unwrap_err();
    assert!(matches!(err, ManagerError::StopFailed { .. }), "{err}");
    // Not forgotten: the task runs, its bundle is there, the plugin says why it failed.
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert!(world.run().join("bundles").join(&id).is_dir());
    match m.inspect("victim").unwrap().record.state.observed.state {
        RunState::Failed { reason } => assert!(reason.contains("stopping"), "{reason}"),
        other => panic!("expected failed, got {other:?}"),
    }
    // Removing a plugin whose task may run is refused, even forced.
    assert!(m.remove("victim", true).await.is_err());
    assert!(world.root().join(&id).join("rootfs").is_dir());
    // The next enable retries the stop first, and only then starts a new task.
    let err = m.enable("victim", None).await.unwrap_err();
    assert!(
        err.to_string().contains("could not be stopped"),
        "enable must not start over a task it could not stop: {err}"
    );
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    flaky.fail_kill.store(false, Ordering::SeqCst);
    m.enable("victim", None).await.unwrap();
    let new_pid = is_running(&m, "victim").unwrap();
    assert_ne!(new_pid, pid);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(shims_of(&world.namespace).len(), 1, "one shim, the new one");
    m.disable("victim", false).await.unwrap();
    m.remove("victim", false).await.unwrap();
    m.shutdown().await;
    world.assert_no_task_debris();
}

/// On a single-threaded runtime, a list must get its answer while a big rootfs is being
/// deleted: the deletion runs on the blocking pool, not on the (only) async worker.
#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, runc, containerd-shim-runc-v2 and the packaged sample plugin"]
async fn a_big_rm_does_not_stall_the_async_workers() {
    let world = World::new();
    let m = world.manager(false).await;
    let id = world.create(&m, "big").await;
    let bulk = world.root().join(&id).join("rootfs/bulk");
    for d in 0..50 {
        let dir = bulk.join(d.to_string());
        fs::create_dir_all(&dir).unwrap();
        for f in 0..200 {
            fs::write(dir.join(f.to_string()), b"x").unwrap();
        }
    }
    let remover = m.clone();
    let remove = tokio::spawn(async move { remover.remove("big", false).await });
    // Let the removal start: it runs until it waits for something.
    tokio::task::yield_now().await;
    // (The plugin may already be out of the index: the removal is under way.)
    let listed = m.list();
    assert!(
        !remove.is_finished(),
        "the removal of 10,000 files finished before a list could run: it blocked the worker"
    );
    assert!(listed.len() <= 1);
    remove.await.unwrap().unwrap();
    assert!(m.list().is_empty());
    assert!(!world.root().join(&id).exists());
    m.shutdown().await;
}

/// A reader that hands out `head`, then blocks until released, then hands out the rest.
struct StalledUpload {
    data: std::io::Cursor<Vec<u8>>,
    head: u64,
    release: Option<std::sync::mpsc::Receiver<()>>,
    reached: Option<std::sync::mpsc::Sender<()>>,
}

impl Read for StalledUpload {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let pos = self.data.position();
        if pos >= self.head {
            if let Some(r) = self.release.take() {
                if let Some(tx) = self.reached.take() {
                    let _ = tx.send(());
                }
                let _ = r.recv();
            }
            return self.data.read(buf);
        }
        let n = buf.len().min((self.head - pos) as usize);
        self.data.read(&mut buf[..n])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, runc, containerd-shim-runc-v2 and the packaged sample plugin"]
async fn a_stalled_upload_blocks_no_other_create_and_no_rm() {
    let world = World::new();
    let m = world.manager(false).await;
    let tar = world.sample_tar();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    let (reached_tx, reached_rx) = std::sync::mpsc::channel();
    let upload = StalledUpload {
        head: (tar.len() / 2) as u64,
        data: std::io::Cursor::new(tar),
        release: Some(release_rx),
        reached: Some(reached_tx),
    };
    let slow = m.clone();
    let stalled = tokio::spawn(async move { slow.create("slow", Box::new(upload)).await });
    tokio::task::spawn_blocking(move || reached_rx.recv().unwrap())
        .await
        .unwrap();
    // While the slow client is stuck half-way: creates and removes (each removal sweeps blobs,
    // which waits for in-flight commits) all finish. A hang here fails by the guard below.
    let others = async {
        for n in 0..3 {
            let name = format!("quick{n}");
            world.create(&m, &name).await;
            m.remove(&name, false).await.unwrap();
        }
        world.create(&m, "last").await;
    };
    tokio::time::timeout(Duration::from_secs(120), others)
        .await
        .expect("creates and removes must not wait for a stalled upload");
    assert!(!stalled.is_finished());
    release_tx.send(()).unwrap();
    stalled.await.unwrap().unwrap();
    // The slow plugin is complete: its blobs survived the sweeps of the removals.
    m.enable("slow", None).await.unwrap();
    m.disable("slow", false).await.unwrap();
    for name in ["slow", "last"] {
        m.remove(name, false).await.unwrap();
    }
    m.shutdown().await;
}

/// A plugin recorded enabled whose task runs but whose socket is dead when plugind comes back
/// (live restore) is not left "running" and unusable: start restarts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, runc, containerd-shim-runc-v2 and the packaged sample plugin"]
async fn a_reattached_plugin_with_a_dead_socket_is_restarted() {
    let world = World::new();
    // The child ends without shutting down: like a kill, the plugin keeps running.
    world.run_child("create-enable");
    let id = world.plugin_dirs().pop().unwrap();
    let old_pid = shims_of(&world.namespace);
    assert_eq!(old_pid.len(), 1);
    let socket = world.run().join("plugins").join(&id).join("vol.sock");
    fs::remove_file(&socket).unwrap();

    let (executor, events) = world.executor().await;
    let mut config = world.config(true);
    config.default_ready_timeout = Duration::from_secs(2);
    let (m, report) = Manager::start(config, executor, events).await.unwrap();
    assert!(report.reattached.is_empty(), "{report:?}");
    assert_eq!(report.started.len(), 1, "{report:?}");
    let handle = m.acquire("victim", "volumedriver", "t").await.unwrap();
    handle
        .client
        .call(
            "VolumeDriver.List",
            Some(&serde_json::json!({})),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    m.release("victim", "t").await.unwrap();
    assert_eq!(shims_of(&world.namespace).len(), 1, "the old shim is gone");
    m.disable("victim", false).await.unwrap();
    m.remove("victim", false).await.unwrap();
    m.shutdown().await;
    world.assert_no_task_debris();
}

/// A delete that fails after the kill leaves the task with the executor: the manager must not
/// forget it (the next enable used to fail with "task already exists" and the bundle of the
/// task was gone); the next enable finishes the stop and starts afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, runc, containerd-shim-runc-v2 and the packaged sample plugin"]
async fn a_failed_delete_is_retried_by_the_next_enable() {
    let world = World::new();
    let (inner, events) = world.executor().await;
    let flaky = Arc::new(FlakyExecutor {
        inner,
        fail_kill: AtomicBool::new(false),
        fail_delete: AtomicBool::new(false),
    });
    let m = world.manager_on(flaky.clone(), events, false).await;
    let id = world.create(&m, "victim").await;
    m.enable("victim", None).await.unwrap();
    let pid = is_running(&m, "victim").unwrap();
    flaky.fail_delete.store(true, Ordering::SeqCst);
    let err = m.disable("victim", false).await.unwrap_err();
    assert!(matches!(err, ManagerError::StopFailed { .. }), "{err}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "killed");
    assert!(
        world.run().join("bundles").join(&id).is_dir(),
        "the bundle stays until the task is deleted"
    );
    match m.inspect("victim").unwrap().record.state.observed.state {
        RunState::Failed { reason } => assert!(reason.contains("deleting"), "{reason}"),
        other => panic!("expected failed, got {other:?}"),
    }
    flaky.fail_delete.store(false, Ordering::SeqCst);
    m.enable("victim", None).await.unwrap();
    assert!(is_running(&m, "victim").is_some());
    assert_eq!(shims_of(&world.namespace).len(), 1, "one shim, the new one");
    m.disable("victim", false).await.unwrap();
    m.remove("victim", false).await.unwrap();
    m.shutdown().await;
    world.assert_no_task_debris();
}

/// A shim that is alive but does not answer when plugind comes back (here: stopped with
/// SIGSTOP) is not left behind: restore kills it (it is the recorded process) and starts the
/// plugin afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, runc, containerd-shim-runc-v2 and the packaged sample plugin"]
async fn a_shim_that_does_not_answer_at_restart_is_killed() {
    let world = World::new();
    world.run_child("create-enable");
    let shims = shims_of(&world.namespace);
    assert_eq!(shims.len(), 1);
    let stopped = Command::new("kill")
        .args(["-STOP", &shims[0].to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());

    let m = world.manager(false).await;
    assert!(!alive(shims[0]), "the unresponsive shim is gone");
    assert!(is_running(&m, "victim").is_some(), "started afresh");
    assert_eq!(shims_of(&world.namespace).len(), 1, "one shim, the new one");
    m.disable("victim", false).await.unwrap();
    m.remove("victim", false).await.unwrap();
    m.shutdown().await;
    world.assert_no_task_debris();
}

/// A disable killed after its record was written but before the task stopped: the next start
/// stops the task and the record says stopped, not "running" for a disabled plugin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, runc, containerd-shim-runc-v2 and the packaged sample plugin"]
async fn disable_killed_after_its_record_leaves_no_running_task() {
    for live_restore in [false, true] {
        let world = World::new();
        world.crash_child("create-enable-disable", "disable-after-record");
        assert_eq!(shims_of(&world.namespace).len(), 1, "the task still runs");
        let m = world.manager(live_restore).await;
        let view = m.inspect("victim").unwrap();
        assert!(!view.record.desired_enabled());
        assert!(
            matches!(view.record.state.observed.state, RunState::Stopped),
            "{:?}",
            view.record.state.observed.state
        );
        world.assert_no_task_debris();
        m.remove("victim", false).await.unwrap();
        m.shutdown().await;
    }
}

/// An unreadable record is moved to the quarantine and listed (for `/info` and the log), not
/// loaded and not deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, runc, containerd-shim-runc-v2 and the packaged sample plugin"]
async fn quarantined_records_are_listed() {
    let world = World::new();
    let bad = world.root().join("ab".repeat(32));
    fs::create_dir_all(bad.join("rootfs")).unwrap();
    fs::write(bad.join("config.json"), b"{not json").unwrap();
    let m = world.manager(false).await;
    let listed = m.quarantined();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].join("config.json").exists());
    assert!(m.list().is_empty());
    m.shutdown().await;
}

/// Installs `remote` as `name` with the privileges it asks for.
async fn pull(m: &Manager, remote: &str, name: &str) {
    let auth = AuthConfig::from_header("");
    let privileges = m.remote_privileges(remote, &auth).await.unwrap();
    let request = RemoteRequest {
        auth: &auth,
        privileges: &privileges,
    };
    m.pull(
        &PullNames::parse(remote, name).unwrap(),
        request,
        Arc::new(|_: plugind_manager::progress::Progress| {}),
    )
    .await
    .unwrap();
}

/// Debian's `docker-registry` on a free loopback port with throwaway storage; killed on drop.
struct LocalRegistry {
    child: std::process::Child,
    addr: String,
}

impl LocalRegistry {
    fn start(dir: &Path) -> LocalRegistry {
        let binary = ["/usr/bin/docker-registry", "/usr/local/bin/registry"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("these tests need docker-registry (cargo xtask setup)");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        fs::create_dir_all(dir.join("storage")).unwrap();
        let config = dir.join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.join("storage").display()
            ),
        )
        .unwrap();
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let registry = LocalRegistry { child, addr };
        for _ in 0..600 {
            if std::net::TcpStream::connect(&registry.addr).is_ok() {
                return registry;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("docker-registry did not listen on {}", registry.addr);
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sample plugin pushed as `<registry>/acme/crash:1.0` and, with another description and
/// one more file in its rootfs, as `:2.0`; returns the two config digests.
async fn seed_registry(registry: &LocalRegistry) -> (String, String) {
    let seeder = World::new();
    let m = seeder.manager(false).await;
    let mut digests = Vec::new();
    for version in ["1.0", "2.0"] {
        let name = format!("{}/acme/crash:{version}", registry.addr);
        let src = seeder.dir.join(format!("src-{version}"));
        let copied = Command::new("cp")
            .arg("-a")
            .arg(plugin_dir())
            .arg(&src)
            .status()
            .unwrap();
        assert!(copied.success());
        let config = fs::read_to_string(src.join("config.json")).unwrap();
        fs::write(
            src.join("config.json"),
            config.replacen(
                "\"description\": \"",
                &format!("\"description\": \"version {version}: "),
                1,
            ),
        )
        .unwrap();
        fs::write(src.join("rootfs/VERSION"), version).unwrap();
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&src)
            .args(["-cf", "-", "config.json", "rootfs"])
            .output()
            .unwrap();
        assert!(tar.status.success());
        m.create(&name, Box::new(std::io::Cursor::new(tar.stdout)))
            .await
            .unwrap();
        m.push(&name, &AuthConfig::from_header(""), &|_| {})
            .await
            .unwrap();
        let view = m.inspect(&name).unwrap();
        digests.push(view.record.state.blobs.config.unwrap().to_string());
    }
    m.shutdown().await;
    (digests.remove(0), digests.remove(0))
}

/// The plugin `victim` is whole at `version`: record (reference, config digest), its config
/// blob stored, its rootfs holding that version; no staging, previous rootfs or ingest left.
fn assert_whole_at(world: &World, m: &Manager, remote: &str, config_digest: &str, version: &str) {
    let view = m.inspect("victim").unwrap();
    let record = &view.record;
    assert_eq!(record.plugin.plugin_reference, remote);
    let config = record.state.blobs.config.as_ref().unwrap();
    assert_eq!(config.to_string(), config_digest);
    let hex = config.to_string()["sha256:".len()..].to_owned();
    assert!(
        world
            .root()
            .join("storage/blobs/sha256")
            .join(&hex)
            .exists(),
        "the config blob of the record is not stored"
    );
    assert!(record
        .plugin
        .config
        .description
        .starts_with(&format!("version {version}: ")));
    let dir = world.root().join(record.id().to_string());
    assert_eq!(
        fs::read_to_string(dir.join("rootfs/VERSION")).unwrap(),
        version
    );
    assert!(dir.join("rootfs/volume-plugin").exists());
    let previous: Vec<_> = World::entries(&dir)
        .into_iter()
        .filter(|n| n.starts_with("rootfs-previous"))
        .collect();
    assert!(previous.is_empty(), "{previous:?}");
    assert_no_transfer_debris(world);
}

/// No staging directory and no ingest is left after a restart.
fn assert_no_transfer_debris(world: &World) {
    for sub in ["tmp", "storage/ingest"] {
        let left = World::entries(&world.root().join(sub));
        assert!(left.is_empty(), "{sub}/ holds {left:?}");
    }
}

/// A pull killed after its rootfs is in place but before its record: after a restart there
/// is no plugin, no rootfs, no staging, ingest or stray blob, and the same pull then works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, runc, containerd-shim-runc-v2, docker-registry and the packaged sample plugin"]
async fn pull_killed_before_its_record_leaves_nothing() {
    let world = World::new();
    let registry = LocalRegistry::start(&world.dir.join("registry"));
    let (v1, _) = seed_registry(&registry).await;
    let remote = format!("{}/acme/crash:1.0", registry.addr);
    world.crash_child(&format!("pull {remote}"), "pull-before-record");
    assert_eq!(world.plugin_dirs().len(), 1, "the crash left no rootfs");
    let m = world.manager(false).await;
    assert!(m.list().is_empty(), "a half-pulled plugin is listed");
    world.assert_no_create_debris();
    pull(&m, &remote, "victim").await;
    assert_whole_at(&world, &m, &remote, &v1, "1.0");
    m.shutdown().await;
}

/// An upgrade killed at `failpoint` (before its record names the new version) is rolled back
/// completely at the next start; a second upgrade then works.
async fn upgrade_crash_rolls_back(failpoint: &str) {
    let world = World::new();
    let registry = LocalRegistry::start(&world.dir.join("registry"));
    let (v1, v2) = seed_registry(&registry).await;
    let (old, new) = (
        format!("{}/acme/crash:1.0", registry.addr),
        format!("{}/acme/crash:2.0", registry.addr),
    );
    {
        let m = world.manager(false).await;
        pull(&m, &old, "victim").await;
        m.shutdown().await;
    }
    world.crash_child(&format!("upgrade {new}"), failpoint);
    let m = world.manager(false).await;
    assert_eq!(m.list().len(), 1);
    assert_whole_at(&world, &m, &old, &v1, "1.0");
    let auth = AuthConfig::from_header("");
    let privileges = m.remote_privileges(&new, &auth).await.unwrap();
    let request = RemoteRequest {
        auth: &auth,
        privileges: &privileges,
    };
    m.upgrade(
        "victim:latest",
        &Reference::parse_normalized(&new).unwrap(),
        request,
        Arc::new(|_: plugind_manager::progress::Progress| {}),
    )
    .await
    .unwrap();
    assert_whole_at(&world, &m, &new, &v2, "2.0");
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, runc, containerd-shim-runc-v2, docker-registry and the packaged sample plugin"]
async fn upgrade_killed_after_moving_the_old_rootfs_aside_rolls_back() {
    upgrade_crash_rolls_back("upgrade-after-move-aside").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, runc, containerd-shim-runc-v2, docker-registry and the packaged sample plugin"]
async fn upgrade_killed_before_its_record_rolls_back() {
    upgrade_crash_rolls_back("upgrade-before-record").await;
}
