//! End-to-end: plugins sharing one `containerd-shim-runc-v2` (`--shim-group`) through the
//! plugind binary: 20 plugins in one group, kill -9 of the group shim and all 20 restarted by
//! the manager's supervision and usable, live restore re-attaching to the group shim without
//! starting another, a disable leaving the others running, the last disable stopping the shim.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use plugind_tests::{processes_mentioning, sample_plugin_dir, Daemon};

const PLUGINS: usize = 20;

/// Live (not zombie) shims of this daemon (only shims name its exec root on their command line).
fn shims(d: &Daemon) -> Vec<u32> {
    let run = d.dir.join("run").join("events.sock");
    let mut pids: Vec<u32> = processes_mentioning(&run.to_string_lossy())
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                !s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
        })
        .collect();
    pids.sort();
    pids
}

/// name -> (observed state, pid) of every plugin.
fn states(d: &Daemon) -> BTreeMap<String, (String, Option<u64>)> {
    let (status, body) = d.request("GET", "/plugins", None).expect("list");
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("json");
    list.as_array()
        .expect("array")
        .iter()
        .map(|p| {
            (
                p["Name"].as_str().unwrap_or_default().to_owned(),
                (
                    p["PluginD"]["State"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    p["PluginD"]["Pid"].as_u64(),
                ),
            )
        })
        .collect()
}

fn name(i: usize) -> String {
    format!("grp/p{i}")
}

/// The name as listed (with its tag).
fn key(i: usize) -> String {
    format!("{}:latest", name(i))
}

/// Waits (safety net: 120 s) until every plugin runs with a pid not in `old`.
fn wait_all_restarted(d: &Daemon, old: &BTreeMap<String, (String, Option<u64>)>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = states(d);
        let done = now.iter().all(|(n, (state, pid))| {
            state == "running" && pid.is_some() && old.get(n).is_none_or(|o| o.1 != *pid)
        });
        if done && now.len() == PLUGINS {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not all plugins restarted: {now:?}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn all_usable(d: &Daemon, round: &str) {
    for i in 0..PLUGINS {
        d.docker_ok(&["volume", "create", "-d", &name(i), &format!("v{i}{round}")]);
    }
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn twenty_plugins_share_a_shim_survive_its_kill_and_a_live_restore() {
    let mut d = Daemon::start_with(true, &["--shim-group", "all"]);
    let dir = sample_plugin_dir();
    for i in 0..PLUGINS {
        d.docker_ok(&["plugin", "create", &name(i), &dir.to_string_lossy()]);
        d.docker_ok(&["plugin", "enable", &name(i)]);
    }
    let shim = shims(&d);
    assert_eq!(shim.len(), 1, "one shim for {PLUGINS} plugins: {shim:?}");
    all_usable(&d, "a");

    // kill -9 of the group shim: every plugin it served is restarted (backoff path) and usable.
    let before = states(&d);
    assert!(before.values().all(|(s, _)| s == "running"), "{before:?}");
    kill9(shim[0]);
    wait_all_restarted(&d, &before);
    let shim2 = shims(&d);
    assert_eq!(shim2.len(), 1, "restarted into one new shim: {shim2:?}");
    assert_ne!(shim2, shim);
    all_usable(&d, "b");

    // Live restore: plugind killed and started again re-attaches; no shim is started.
    let running = states(&d);
    d.kill9();
    d.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    while states(&d) != running {
        assert!(Instant::now() < deadline, "{:?} != {running:?}", states(&d));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        shims(&d),
        shim2,
        "re-attached to the same shim, no duplicate"
    );
    all_usable(&d, "c");

    // One disable leaves the others running on the same shim.
    d.docker_ok(&["plugin", "disable", "-f", &name(0)]);
    assert_eq!(shims(&d), shim2);
    let now = states(&d);
    for i in 1..PLUGINS {
        assert_eq!(now[&key(i)], running[&key(i)], "{}", name(i));
    }
    // The last disable stops the shim: no orphan.
    for i in 1..PLUGINS {
        d.docker_ok(&["plugin", "disable", "-f", &name(i)]);
    }
    assert!(shims(&d).is_empty(), "shim left: {:?}", shims(&d));
    assert!(
        std::fs::read_dir(d.dir.join("run/groups")).is_ok_and(|mut r| r.next().is_none()),
        "group directories left"
    );
}

/// SIGKILL by pid.
fn kill9(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -9 {pid}");
}
