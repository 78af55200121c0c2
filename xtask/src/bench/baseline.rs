//! The baselines of enable -> ready: an OCI runtime run by hand on a copy of the plugin's own
//! bundle, timed from the command's start until the plugin's socket accepts.
//! - `runc run -d`, as the shim runs it (minus the shim);
//! - `crun run -d` in a private mount namespace without the cgroup2 mount (`unshare -m`, then
//!   `umount /sys/fs/cgroup/unified`): crun refuses this host's hybrid cgroup layout otherwise,
//!   and that namespace is what plugind's crun wrapper sets up too.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::bail;

use super::ROUNDS;
use crate::daemon::wait_for_socket;

/// Which runtime a baseline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Runtime {
    Runc,
    /// crun in a mount namespace with the cgroup2 mount hidden.
    CrunUnshared,
}

impl Runtime {
    fn name(self) -> &'static str {
        match self {
            Runtime::Runc => "runc",
            Runtime::CrunUnshared => "crun",
        }
    }

    /// The command running `args` with this runtime (state under `state`).
    fn command(self, state: &Path, args: &[&str]) -> Command {
        match self {
            Runtime::Runc => {
                let mut c = Command::new("runc");
                c.arg("--root").arg(state).args(args);
                c
            }
            Runtime::CrunUnshared => {
                let mut c = Command::new("unshare");
                c.args(["-m", "/bin/sh", "-c"])
                    .arg("umount /sys/fs/cgroup/unified 2>/dev/null; exec \"$@\"")
                    .args(["sh", "crun", "--root"])
                    .arg(state)
                    .args(args);
                c
            }
        }
    }
}

/// `<runtime> run -d` of the plugin's own bundle (a copy, with its runtime directory moved so
/// the socket is distinct), timed until the socket accepts, [`ROUNDS`] times.
pub(super) fn runtime_baseline(
    runtime: Runtime,
    dir: &Path,
    id: &str,
    config: &[u8],
) -> anyhow::Result<Vec<Duration>> {
    let base = dir.join(format!("{}b", runtime.name()));
    let bundle = base.join("bundle");
    let sockdir = base.join("sock");
    let state = base.join("state");
    for p in [&bundle, &sockdir, &state] {
        fs::create_dir_all(p)?;
    }
    let original = dir.join(format!("run/plugins/{id}"));
    let text = String::from_utf8_lossy(config).replace(
        &original.display().to_string(),
        &sockdir.display().to_string(),
    );
    fs::write(bundle.join("config.json"), text)?;
    let bundle_arg = bundle.display().to_string();
    let mut times = Vec::new();
    for i in 0..ROUNDS {
        let name = format!("{}-bench-{}-{i}", runtime.name(), std::process::id());
        let _ = fs::remove_file(sockdir.join("vol.sock"));
        // The runtime's errors go to a file, not a pipe: the detached container inherits the
        // runtime's stdio, so a pipe would never reach end of file.
        let errors = base.join("stderr");
        let t = Instant::now();
        let status = runtime
            .command(&state, &["run", "-d", "--bundle", &bundle_arg, &name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&errors)?)
            .status()?;
        if !status.success() {
            bail!(
                "{} run -d failed: {status}: {}",
                runtime.name(),
                fs::read_to_string(&errors).unwrap_or_default().trim()
            );
        }
        wait_for_socket(&sockdir.join("vol.sock"), Duration::from_secs(10))?;
        times.push(t.elapsed());
        runtime
            .command(&state, &["delete", "-f", &name])
            .stdout(Stdio::null())
            .status()?;
    }
    Ok(times)
}
