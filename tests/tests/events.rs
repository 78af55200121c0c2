//! End-to-end: the durable event history. Events published before a restart of plugind (a
//! graceful one and a kill -9) are returned by `docker events --since` after it, with the
//! `daemon` events of each start, and filters and `--until` apply to them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use plugind_tests::{sample_plugin_dir, Daemon};

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `docker events` from `since` until now, formatted.
fn events(d: &Daemon, since: u64, filter: &str, format: &str) -> Vec<String> {
    // `--until` is whole seconds: wait for the second of the last event to pass.
    std::thread::sleep(Duration::from_millis(1100));
    let until = now_secs().to_string();
    let since = since.to_string();
    let mut args = vec!["events", "--since", &since, "--until", &until];
    if !filter.is_empty() {
        args.extend(["--filter", filter]);
    }
    args.extend(["--format", format]);
    d.docker_ok(&args).lines().map(str::to_owned).collect()
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn events_before_a_restart_or_a_kill_9_are_returned_after_it() {
    let plugin = sample_plugin_dir().to_string_lossy().into_owned();
    let mut d = Daemon::start(false);
    let since = now_secs() - 1;
    d.docker_ok(&["plugin", "create", "before-stop", &plugin]);
    d.stop();
    d.restart();
    d.docker_ok(&["plugin", "create", "before-kill", &plugin]);
    d.kill9();
    d.restart();
    d.docker_ok(&["plugin", "create", "after", &plugin]);

    let plugins = events(
        &d,
        since,
        "type=plugin",
        "{{.Action}} {{.Actor.Attributes.name}}",
    );
    assert_eq!(
        plugins,
        [
            "create before-stop:latest",
            "create before-kill:latest",
            "create after:latest"
        ],
        "plugind log:\n{}",
        d.log()
    );

    // Each of the three starts is a `start` then a `restore` event of the engine.
    let daemon = events(
        &d,
        since,
        "type=daemon",
        "{{.Type}} {{.Action}} {{.Actor.Attributes.started}} {{.Actor.Attributes.failed}}",
    );
    let starts = daemon
        .iter()
        .filter(|l| l.starts_with("daemon start"))
        .count();
    let restores: Vec<&String> = daemon
        .iter()
        .filter(|l| l.starts_with("daemon restore"))
        .collect();
    assert_eq!((starts, restores.len()), (3, 3), "{daemon:?}");
    assert!(restores.iter().all(|l| l.ends_with(" 0 0")), "{daemon:?}");
    let ids = events(
        &d,
        since,
        "type=daemon",
        "{{.Actor.ID}} {{.Actor.Attributes.name}}",
    );
    let info_id = d.docker_ok(&["info", "--format", "{{.ID}}"]);
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(
        ids.iter()
            .all(|l| *l == format!("{} {}", info_id.trim(), hostname.trim())),
        "the actor is the engine, named by the host: {ids:?}"
    );

    // A filter on the plugin name applies to the stored history too.
    let named = events(&d, since, "plugin=before-stop", "{{.Action}}");
    assert_eq!(named, ["create"]);

    // The history is in files under the root, and a torn tail (a crash in the middle of a
    // record) is cut at the next start without losing the records before it.
    d.stop();
    let dir = d.dir.join("root/events");
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    let active = segments.last().unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(active)
        .unwrap();
    std::io::Write::write_all(&mut f, &[200, 0, 0, 0, 1, 2]).unwrap();
    drop(f);
    d.restart();
    let plugins = events(&d, since, "type=plugin", "{{.Actor.Attributes.name}}");
    assert_eq!(plugins.len(), 3, "{plugins:?}");
    assert!(d.log().contains("torn tail repaired"), "{}", d.log());
    for name in ["before-stop", "before-kill", "after"] {
        d.docker_ok(&["plugin", "rm", name]);
    }
}
