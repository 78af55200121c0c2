//! Helpers for the executor's end-to-end tests: prerequisites, busybox bundles, a per-test
//! environment (namespace, exec root) and the checks that nothing was left behind.

#![allow(dead_code)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};

use plugind_executor::{EventHandler, ExecutorConfig, Runtimes, ShimExecutor, TaskEvent};
use tokio::sync::mpsc;

pub const SHIM: &str = "/usr/bin/containerd-shim-runc-v2";

/// Panics unless we are root and every binary exists (opted-in tests must not pass silently).
pub fn require_root_and(bins: &[&str]) {
    assert!(
        plugind_sys::process::start_time(1).is_ok() && fs::metadata("/proc/self").is_ok(),
        "needs /proc"
    );
    let uid = fs::read_to_string("/proc/self/status")
        .expect("read status")
        .lines()
        .find_map(|l| {
            l.strip_prefix("Uid:")
                .map(|r| r.split_whitespace().next().unwrap_or("").to_owned())
        })
        .expect("uid line");
    assert_eq!(uid, "0", "this test needs root");
    for b in bins {
        assert!(Path::new(b).exists(), "this test needs {b}");
    }
}

/// One test's world: a short temp dir with the exec root and the bundles, and a unique namespace.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub namespace: String,
}

impl Env {
    pub fn new() -> Env {
        require_root_and(&[SHIM, "/usr/sbin/runc", "/bin/busybox"]);
        // Short paths: unix socket addresses must fit in 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("pe")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let namespace = format!("plugind-test-{:08x}", rand::random::<u32>());
        Env { dir, namespace }
    }

    /// Reuses an existing directory and namespace (the child process of the restore test).
    pub fn exec_root(&self) -> PathBuf {
        self.dir.path().join("x")
    }

    pub fn bundles(&self) -> PathBuf {
        self.dir.path().join("b")
    }

    pub fn config(&self) -> ExecutorConfig {
        let mut c = ExecutorConfig::new(&self.exec_root(), &self.namespace);
        c.shim_binary = PathBuf::from(SHIM);
        c.rpc_timeout = Duration::from_secs(20);
        c
    }

    pub fn id(&self, name: &str) -> String {
        format!("{name}-{:06x}", rand::random::<u32>() & 0xff_ffff)
    }

    /// Builds a busybox bundle `<bundles>/<id>` running `args`; `edit` may change config.json.
    pub fn bundle(
        &self,
        id: &str,
        args: &[&str],
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> PathBuf {
        make_bundle(&self.bundles(), id, args, edit)
    }

    /// Executor whose events arrive on the returned channel.
    pub async fn executor(
        &self,
        runtimes: &Runtimes,
    ) -> (ShimExecutor, mpsc::UnboundedReceiver<TaskEvent>) {
        executor_at(&self.config(), runtimes).await
    }

    /// Asserts nothing of this test is left: no process naming the namespace, no runc container,
    /// no mount under the temp dir, no shim socket, no events socket.
    pub fn assert_clean(&self, shim_sockets: &[PathBuf]) {
        let procs = processes_with(&self.namespace);
        assert!(procs.is_empty(), "processes left: {procs:?}");
        let state = self.exec_root().join("runc").join(&self.namespace);
        if state.exists() {
            let out = Command::new("runc")
                .arg("--root")
                .arg(&state)
                .args(["list", "-q"])
                .output()
                .expect("runc list");
            let list = String::from_utf8_lossy(&out.stdout);
            assert!(list.trim().is_empty(), "runc containers left: {list}");
        }
        let mounts = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let root = self.dir.path().to_string_lossy().to_string();
        assert!(!mounts.contains(&root), "mounts left under {root}");
        for s in shim_sockets {
            assert!(!s.exists(), "shim socket left: {}", s.display());
        }
        assert!(
            !self.exec_root().join("events.sock").exists(),
            "events socket left"
        );
    }

    /// The shim socket named in a bundle's `address` file.
    pub fn shim_socket(&self, bundle: &Path) -> PathBuf {
        let a = fs::read_to_string(bundle.join("address")).expect("address file");
        PathBuf::from(a.trim().strip_prefix("unix://").expect("unix address"))
    }
}

impl Drop for Env {
    /// Last-resort cleanup for a failed test: kill what is left and delete runc state.
    fn drop(&mut self) {
        for pid in processes_with(&self.namespace) {
            let _ = plugind_sys::process::send_signal(pid, 9);
        }
        let state = self.exec_root().join("runc").join(&self.namespace);
        if let Ok(out) = Command::new("runc")
            .arg("--root")
            .arg(&state)
            .args(["list", "-q"])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&state)
                    .args(["delete", "-f", id])
                    .status();
            }
        }
        if let Ok(entries) = fs::read_dir(self.bundles()) {
            for e in entries.flatten() {
                if let Ok(a) = fs::read_to_string(e.path().join("address")) {
                    if let Some(p) = a.trim().strip_prefix("unix://") {
                        let _ = fs::remove_file(p);
                    }
                }
            }
        }
    }
}

pub async fn executor_at(
    config: &ExecutorConfig,
    runtimes: &Runtimes,
) -> (ShimExecutor, mpsc::UnboundedReceiver<TaskEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler: Arc<dyn EventHandler> = Arc::new(tx);
    let ex = ShimExecutor::new(config.clone(), runtimes, handler)
        .await
        .expect("executor");
    (ex, rx)
}

pub fn make_bundle(
    dir: &Path,
    id: &str,
    args: &[&str],
    edit: impl FnOnce(&mut serde_json::Value),
) -> PathBuf {
    let bundle = dir.join(id);
    let rootfs = bundle.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).expect("mkdir rootfs");
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
    // Rebuilding a bundle replaces its config.
    let _ = fs::remove_file(bundle.join("config.json"));
    let out = Command::new("runc")
        .arg("spec")
        .arg("--bundle")
        .arg(&bundle)
        .output()
        .expect("runc spec");
    assert!(
        out.status.success(),
        "runc spec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = bundle.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).expect("read spec")).expect("parse spec");
    v["process"]["terminal"] = false.into();
    v["process"]["args"] = args.iter().map(|a| serde_json::Value::from(*a)).collect();
    v["root"]["readonly"] = true.into();
    edit(&mut v);
    fs::write(&path, serde_json::to_vec_pretty(&v).expect("encode")).expect("write spec");
    bundle
}

/// Pids of processes whose command line mentions `needle`.
pub fn processes_with(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut pids = Vec::new();
    for e in fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(cmd) = fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(needle) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Waits (safety net: 60 s) for an event matching `pred`; returns it.
pub async fn next_event(
    rx: &mut mpsc::UnboundedReceiver<TaskEvent>,
    mut pred: impl FnMut(&TaskEvent) -> bool,
) -> TaskEvent {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let ev = rx.recv().await.expect("event channel open");
            if pred(&ev) {
                return ev;
            }
        }
    })
    .await
    .expect("expected event did not come within 60 s")
}

/// Polls the task log (growing intervals, 60 s safety net) until a line ends with `suffix`.
pub async fn wait_log(ex: &ShimExecutor, id: &str, suffix: &str) -> Vec<String> {
    let mut delay = Duration::from_millis(1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let lines = ex.log_tail(id, 100).expect("log tail");
        if lines.iter().any(|l| l.ends_with(suffix)) {
            return lines;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "log of {id} never showed {suffix:?}: {lines:?}"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}
