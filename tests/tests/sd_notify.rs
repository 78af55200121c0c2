//! End-to-end: systemd readiness. Started with `NOTIFY_SOCKET`, plugind sends `READY=1` only
//! once its API answers and restore has finished (a plugin enabled in the previous run is
//! already running), `RELOADING=1` then `READY=1` around SIGHUP, `STOPPING=1` at shutdown,
//! and no shim or plugin inherits the variable.

use std::{os::unix::net::UnixDatagram, process::Command, time::Duration};

use plugind_tests::{processes_mentioning, sample_plugin_dir, Daemon};

/// Receives datagrams until one has the line `line`; returns everything received so far.
fn wait_for(socket: &UnixDatagram, line: &str, d: &Daemon) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let mut buf = vec![0u8; 4096];
        let n = socket.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "no {line} from plugind ({e}); received {seen:?}\nlog:\n{}",
                d.log()
            )
        });
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let found = text.lines().any(|l| l == line);
        seen.push(text);
        if found {
            return seen;
        }
    }
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn ready_is_sent_once_serving_and_restored() {
    let mut d = Daemon::start(false);
    let plugin_dir = sample_plugin_dir();
    d.docker_ok(&["plugin", "create", "sdn/vol", plugin_dir.to_str().unwrap()]);
    d.docker_ok(&["plugin", "enable", "sdn/vol"]);
    // Without live restore a graceful stop stops the plugin; it stays desired-enabled, so the
    // next start has to start it again during restore.
    d.stop();

    let notify_path = d.dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    d.spawn_with(|cmd| {
        cmd.env("NOTIFY_SOCKET", &notify_path);
    });
    let before_ready = wait_for(&notify, "READY=1", &d);
    assert!(
        before_ready.iter().all(|m| !m.contains("STOPPING=1")),
        "{before_ready:?}"
    );

    // At the moment READY arrives: the API answers and the plugin already runs.
    assert_eq!(
        d.request("GET", "/_ping", None).map(|(status, _)| status),
        Some(200),
        "API not answering at READY=1:\n{}",
        d.log()
    );
    let (status, body) = d.request("GET", "/plugins/sdn/vol/json", None).unwrap();
    assert_eq!(status, 200, "{body}");
    let inspect: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(inspect["Enabled"], true, "{inspect}");
    assert_eq!(
        inspect["PluginD"]["State"], "running",
        "restore not finished at READY=1: {inspect}"
    );

    // Neither the shim nor the plugin inherited NOTIFY_SOCKET (runc would proxy it into the
    // plugin and wait for the plugin's own READY=1).
    // (plugind's own /proc environ is the one it was started with: it is not checked.)
    let mut pids = processes_mentioning(&d.dir.join("run").to_string_lossy());
    pids.retain(|&pid| pid != d.pid());
    let plugin_pid = inspect["PluginD"]["Pid"]
        .as_u64()
        .expect("running plugin has a pid");
    pids.push(u32::try_from(plugin_pid).unwrap());
    assert!(pids.len() >= 2, "no shim found: {pids:?}");
    for pid in pids {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&environ).contains("NOTIFY_SOCKET="),
            "process {pid} inherited NOTIFY_SOCKET"
        );
    }
    // SIGHUP: RELOADING=1, then READY=1 again.
    Command::new("kill")
        .args(["-HUP", &d.pid().to_string()])
        .status()
        .unwrap();
    let reload = wait_for(&notify, "READY=1", &d);
    assert!(
        reload.iter().any(|m| m.lines().any(|l| l == "RELOADING=1")),
        "{reload:?}"
    );

    d.stop();
    let stop = wait_for(&notify, "STOPPING=1", &d);
    assert!(!stop.is_empty());
}
