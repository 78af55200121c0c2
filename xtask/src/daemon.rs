//! A plugind process for xtask's demo and benchmarks: started on a throwaway root, exec root
//! and socket, spoken to over HTTP on its unix socket with the workspace's test client
//! (`plugind-test-support`).

use std::{
    fs,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

/// A running plugind.
pub(crate) struct Plugind {
    pub(crate) dir: PathBuf,
    binary: PathBuf,
    live_restore: bool,
    /// Extra command-line arguments and environment of every spawn (benchmarks).
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Plugind {
    /// Starts `binary` in a fresh directory under /tmp (short paths: sockets must fit 107 bytes).
    pub(crate) fn start(binary: &Path, tag: &str, live_restore: bool) -> anyhow::Result<Plugind> {
        Self::start_with(binary, tag, live_restore, &[], &[])
    }

    /// [`Plugind::start`] with extra arguments and environment variables on every spawn.
    pub(crate) fn start_with(
        binary: &Path,
        tag: &str,
        live_restore: bool,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Plugind> {
        let dir = PathBuf::from(format!("/tmp/pd-{tag}-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
        }
        fs::create_dir_all(&dir)?;
        let mut p = Plugind {
            dir,
            binary: binary.to_path_buf(),
            live_restore,
            extra_args: args.iter().map(|a| (*a).to_owned()).collect(),
            extra_env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            child: None,
        };
        p.spawn()?;
        Ok(p)
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.join("plugind.sock")
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process (again) and waits until `/_ping` answers; returns how long that took.
    pub(crate) fn spawn(&mut self) -> anyhow::Result<Duration> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("plugind.log"))?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--exec-root")
            .arg(self.dir.join("run"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if self.live_restore {
            cmd.arg("--live-restore");
        }
        cmd.args(&self.extra_args);
        cmd.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        let started = Instant::now();
        self.child = Some(
            cmd.spawn()
                .with_context(|| format!("spawn {}", self.binary.display()))?,
        );
        while started.elapsed() < Duration::from_secs(60) {
            if self
                .request("GET", "/_ping", &[])
                .is_ok_and(|(s, _)| s == 200)
            {
                return Ok(started.elapsed());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "plugind exited with {status}; see {}/plugind.log",
                    self.dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        bail!("plugind did not answer within 60 s")
    }

    /// SIGKILL, no shutdown path.
    pub(crate) fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGTERM and wait (without live restore plugind stops its plugins).
    pub(crate) fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status()?;
            c.wait()?;
        }
        Ok(())
    }

    /// One request; returns the status and body.
    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, String)> {
        http(&self.socket(), method, path, body)
    }

    /// One request that must answer 2xx.
    pub(crate) fn ok(&self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<String> {
        let (status, text) = self.request(method, path, body)?;
        if !(200..300).contains(&status) {
            bail!("{method} {path}: {status} {text}");
        }
        Ok(text)
    }
}

impl Drop for Plugind {
    fn drop(&mut self) {
        let _ = self.stop();
        if self.live_restore {
            // A live-restore stop leaves plugins running: one more run without live restore
            // takes them over and its graceful stop ends them.
            self.live_restore = false;
            if self.spawn().is_ok() {
                let _ = self.stop();
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One request over a unix socket (the shared client of `plugind-test-support`); the body is
/// read to the end whatever its framing.
pub(crate) fn http(
    socket: &Path,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    http_timeout(socket, method, path, body, Duration::from_secs(120))
}

/// [`http`] with a caller-chosen limit on each step (connect, answer head, each body piece):
/// the torture loop must not wait two minutes on a daemon that hangs.
pub(crate) fn http_timeout(
    socket: &Path,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    let content_type = if path.starts_with("/plugins/create") {
        "application/x-tar"
    } else {
        "application/json"
    };
    let response = plugind_test_support::Request::new(method, path)
        .header("Content-Type", content_type)
        .body(body)
        .timeout(timeout)
        .send(socket)
        .with_context(|| format!("{method} {path} on {}", socket.display()))?;
    Ok((response.status, response.text()))
}

/// Waits until `socket` accepts a connection, polling every 0.2 ms.
pub(crate) fn wait_for_socket(socket: &Path, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if UnixStream::connect(socket).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    bail!("{} did not accept within {limit:?}", socket.display())
}
