//! End-to-end: the `plugind` process itself: one daemon per state root, SIGHUP reloads the
//! runtimes, and a hung or killed volume plugin never holds a request past its deadline.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use plugind_tests::{sample_plugin_dir, Daemon};

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn a_second_daemon_on_the_same_root_is_refused() {
    let d = Daemon::start(false);
    // Same root and exec root, another socket: only the lock can refuse it.
    let out = Command::new(plugind_tests::plugind_bin())
        .arg("--root")
        .arg(d.dir.join("root"))
        .arg("--exec-root")
        .arg(d.dir.join("run"))
        .arg("-H")
        .arg(format!("unix://{}/other.sock", d.dir.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("in use by another plugind") && text.contains(&format!("pid {}", d.pid())),
        "{text}"
    );
    // The first one is unharmed.
    assert_eq!(d.request("GET", "/_ping", None).unwrap().0, 200);
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn sighup_reloads_runtimes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plugind.toml");
    std::fs::write(&file, "").unwrap();
    let d = Daemon::start_with(false, &["--config-file", file.to_str().unwrap()]);
    let runtimes = |d: &Daemon| {
        let (_, body) = d.request("GET", "/info", None).unwrap();
        let info: serde_json::Value = serde_json::from_str(&body).unwrap();
        info["Runtimes"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(runtimes(&d), ["runc"]);
    std::fs::write(
        &file,
        "[runtimes.fast]\npath = \"/usr/sbin/runc\"\nargs = [\"--debug\"]\n",
    )
    .unwrap();
    Command::new("kill")
        .args(["-HUP", &d.pid().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while runtimes(&d) != ["fast", "runc"] {
        assert!(
            Instant::now() < deadline,
            "reload not applied: {:?}\n{}",
            runtimes(&d),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The reload says what it applied: a `daemon` `reload` event, as dockerd sends.
    let (_, events) = d
        .request(
            "GET",
            &format!("/events?since=0&until={}", unix_now() + 1),
            None,
        )
        .unwrap();
    let reload = events
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["Type"] == "daemon" && e["Action"] == "reload")
        .unwrap_or_else(|| panic!("no reload event in {events}"));
    assert_eq!(
        reload["Actor"]["Attributes"]["applied"], "runtimes",
        "{reload}"
    );
    assert_eq!(
        reload["Actor"]["Attributes"]["runtimes"], "fast,runc",
        "{reload}"
    );
    // A setting that needs a restart is named as such, and not applied.
    std::fs::write(
        &file,
        "plugin-start-timeout = 30\n[runtimes.fast]\npath = \"/usr/sbin/runc\"\nargs = [\"--debug\"]\n",
    )
    .unwrap();
    Command::new("kill")
        .args(["-HUP", &d.pid().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log().contains("take effect only after a restart") {
        assert!(
            Instant::now() < deadline,
            "no restart warning:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(d.log().contains("plugin-start-timeout"), "{}", d.log());
    // The new runtime's wrapper script exists, named by its content hash.
    let scripts: Vec<_> = std::fs::read_dir(d.dir.join("run/runtimes"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        scripts
            .iter()
            .any(|n| n.starts_with("fast-") && n.len() > 60),
        "{scripts:?}"
    );
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Issue 10, defect 9: `docker plugin enable --timeout N` is the deadline of plugind's later
/// calls to that plugin, as in Docker: with no volume deadline configured (Docker's 2 min), a
/// call to a hung plugin ends after N seconds.
#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn enable_timeout_is_the_deadline_of_later_plugin_calls() {
    let d = Daemon::start(false);
    d.docker_ok(&[
        "plugin",
        "create",
        "slow/vol",
        &sample_plugin_dir().to_string_lossy(),
    ]);
    d.docker_ok(&["plugin", "enable", "--timeout", "2", "slow/vol"]);
    d.docker_ok(&["volume", "create", "-d", "slow/vol", "s1"]);
    let pid = d
        .docker_ok(&["plugin", "inspect", "-f", "{{.PluginD.Pid}}", "slow/vol"])
        .trim()
        .to_owned();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let err = d.docker_err(&["volume", "create", "-d", "slow/vol", "s2"]);
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    assert!(
        err.contains("slow/vol") && err.contains("did not answer within 2s"),
        "{err}"
    );
    // A timeout the API refuses changes nothing.
    let (status, body) = d
        .request("POST", "/plugins/slow/vol/enable?timeout=x", None)
        .unwrap();
    assert_eq!(status, 400, "{body}");
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn a_hung_then_killed_volume_plugin_fails_within_the_deadline() {
    let d = Daemon::start_with(false, &["--volume-timeout", "2"]);
    d.docker_ok(&[
        "plugin",
        "create",
        "hang/vol",
        &sample_plugin_dir().to_string_lossy(),
    ]);
    d.docker_ok(&["plugin", "enable", "hang/vol"]);
    d.docker_ok(&["volume", "create", "-d", "hang/vol", "h1"]);
    let pid = d
        .docker_ok(&["plugin", "inspect", "-f", "{{.PluginD.Pid}}", "hang/vol"])
        .trim()
        .to_owned();

    // Hung: the call ends at the deadline with an error naming the plugin.
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let err = d.docker_err(&["volume", "create", "-d", "hang/vol", "h2"]);
    assert!(err.contains("hang/vol"), "{err}");
    // The configured deadline ended the call (Docker's would be a minute).
    assert!(err.contains("did not answer within 2s"), "{err}");

    // Killed mid-call: a call is waiting on the stopped plugin when it is killed.
    let mut cmd = Command::new(plugind_tests::docker_cli());
    cmd.args(["volume", "create", "-d", "hang/vol", "h3"])
        .env("DOCKER_HOST", format!("unix://{}", d.socket().display()))
        .env("DOCKER_CONFIG", d.dir.join("docker"));
    let child = cmd.stderr(std::process::Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    Command::new("kill").args(["-KILL", &pid]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hang/vol"), "{err}");
    // The kill, not the deadline, ended it: the connection broke mid-call.
    assert!(!err.contains("did not answer within"), "{err}");

    // The manager restarts the killed plugin; the volume service recovers.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = d.docker_ok(&["plugin", "inspect", "-f", "{{json .PluginD}}", "hang/vol"]);
        if now.contains(r#""State":"running""#) && !now.contains(&format!(r#""Pid":{pid},"#)) {
            break;
        }
        assert!(Instant::now() < deadline, "plugin did not come back: {now}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        d.docker_ok(&["volume", "ls", "-q"]).trim(),
        "h1",
        "the failed creates left nothing"
    );
    d.docker_ok(&["volume", "rm", "h1"]);
    d.docker_ok(&["plugin", "disable", "hang/vol"]);
    d.docker_ok(&["plugin", "rm", "hang/vol"]);
}
