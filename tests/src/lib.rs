//! plugind-tests: the workspace's cross-crate tests and their harness.
//!
//! The harness starts the built `plugind` binary on a throwaway root, exec root and socket
//! ([`Daemon`]), drives it with the real docker CLI ([`Daemon::docker`]) and checks that
//! nothing is left behind. End-to-end tests need root, the shim, runc, the docker CLI and the
//! packaged sample plugin; [`require_e2e`] panics with the missing piece instead of letting a
//! test pass silently.

pub mod registry;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is one level down")
        .to_path_buf()
}

/// The `plugind` binary: `$PLUGIND_BIN`, else the workspace's debug build.
pub fn plugind_bin() -> PathBuf {
    std::env::var_os("PLUGIND_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/debug/plugind"))
}

/// The sample plugin's directory (`config.json` + `rootfs/`), made by `cargo xtask plugin`.
pub fn sample_plugin_dir() -> PathBuf {
    workspace().join("target/plugin/volume-plugin")
}

/// Looks a program up in `PATH` and the sbin directories (which non-login shells lack).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The docker CLI found on `PATH`; panics naming it when missing (`cargo xtask setup`
/// installs one on a machine that has none).
pub fn docker_cli() -> PathBuf {
    find_program("docker")
        .expect("end-to-end tests need the docker CLI on PATH (cargo xtask setup)")
}

/// Panics unless everything an end-to-end test needs is present.
pub fn require_e2e() {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    assert!(
        status.lines().any(|l| l.starts_with("Uid:\t0\t")),
        "end-to-end tests need root"
    );
    for bin in ["containerd-shim-runc-v2", "runc", "docker"] {
        assert!(
            find_program(bin).is_some(),
            "end-to-end tests need {bin} on PATH (cargo xtask setup)"
        );
    }
    assert!(
        plugind_bin().exists(),
        "{} missing: build it with `cargo build -p plugind`",
        plugind_bin().display()
    );
    assert!(
        sample_plugin_dir().join("rootfs/volume-plugin").exists(),
        "the sample plugin is not packaged: run `cargo xtask plugin`"
    );
}

/// A running plugind with its own root, exec root and socket.
#[derive(Debug)]
pub struct Daemon {
    /// Holds `root/`, `run/`, `plugind.sock`, `docker/` (CLI config) and `plugind.log`.
    pub dir: PathBuf,
    child: Option<Child>,
    live_restore: bool,
    extra_args: Vec<String>,
}

impl Daemon {
    /// Starts plugind in a fresh directory and waits until its API answers.
    pub fn start(live_restore: bool) -> Daemon {
        Daemon::start_with(live_restore, &[])
    }

    /// [`Daemon::start`] with extra plugind flags.
    pub fn start_with(live_restore: bool, extra_args: &[&str]) -> Daemon {
        require_e2e();
        let dir = tempfile::Builder::new()
            .prefix("pt")
            .tempdir_in("/tmp")
            .expect("tempdir")
            .keep();
        let extra_args = extra_args.iter().map(|a| a.to_string()).collect();
        let mut d = Daemon {
            dir,
            child: None,
            live_restore,
            extra_args,
        };
        d.restart();
        d
    }

    /// The plugind process's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// The command line that starts this daemon (for tests that start a second one).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(plugind_bin());
        cmd.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--exec-root")
            .arg(self.dir.join("run"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(&self.extra_args);
        if self.live_restore {
            cmd.arg("--live-restore");
        }
        cmd
    }

    /// The API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("plugind.sock")
    }

    /// Starts (again) the daemon process on the same directories.
    pub fn restart(&mut self) {
        self.spawn_with(|_| {});
        self.wait_until_serving();
    }

    /// Starts the daemon process on the same directories without waiting for its API;
    /// `configure` may add environment or flags to its command.
    pub fn spawn_with(&mut self, configure: impl FnOnce(&mut Command)) {
        assert!(self.child.is_none(), "daemon already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("plugind.log"))
            .unwrap();
        let mut cmd = self.command();
        cmd.stdout(log.try_clone().unwrap()).stderr(log);
        configure(&mut cmd);
        self.child = Some(cmd.spawn().expect("spawn plugind"));
    }

    /// Waits until the daemon's API answers `_ping`; panics with its log if it exits first.
    pub fn wait_until_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self
                .request("GET", "/_ping", None)
                .is_some_and(|(status, _)| status == 200)
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("plugind exited with {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("plugind did not answer within 30 s: {}", self.log());
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("plugind.log")).unwrap_or_default()
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("daemon running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM and wait: a graceful shutdown.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            panic!("plugind did not stop on SIGTERM within 60 s");
        }
    }

    /// Runs the docker CLI against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new(docker_cli())
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            .env("DOCKER_CONFIG", self.dir.join("docker"))
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    /// Runs the docker CLI and returns its stdout; panics with its stderr on failure.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed ({}): {}\nplugind log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the docker CLI expecting failure; returns its stderr.
    pub fn docker_err(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "docker {args:?} should fail with exit 1: {out:?}"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// One HTTP request to the API (JSON body); `None` when the socket does not answer.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
        http_over_unix(&self.socket(), method, path, body)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            // Without live restore, a graceful stop stops every plugin.
            self.live_restore = false;
            self.stop();
        }
        if std::thread::panicking() {
            return;
        }
        let run = self.dir.join("run").to_string_lossy().into_owned();
        let leftover_shims = processes_mentioning(&run);
        assert!(
            leftover_shims.is_empty(),
            "processes left behind: {leftover_shims:?}"
        );
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let dir = self.dir.to_string_lossy().into_owned();
        assert!(!mounts.contains(&dir), "mounts left under {dir}");
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Pids whose command line mentions `needle` (e.g. shims of one exec root).
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmd).contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

/// One HTTP request over a unix socket with an optional JSON body (the shared client of
/// `plugind-test-support`, 30 s per step); returns status and body, `None` when the socket does
/// not answer completely.
pub fn http_over_unix(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Option<(u16, String)> {
    let response = plugind_test_support::request(socket, method, path, body).ok()?;
    Some((response.status, response.text()))
}
