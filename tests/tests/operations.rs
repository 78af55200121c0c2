//! End-to-end: operating plugind (issue 16): health checks find a plugin that stops answering
//! without exiting and restart it, and `--metrics-addr` serves Prometheus text that a
//! Prometheus parser reads and whose values follow the operations.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use plugind_tests::{http_over_unix, sample_plugin_dir, Daemon};

/// `{{json .PluginD}}` of a plugin, parsed.
fn plugind_state(d: &Daemon, name: &str) -> serde_json::Value {
    let text = d.docker_ok(&["plugin", "inspect", "-f", "{{json .PluginD}}", name]);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Polls `check` on the plugin's `PluginD` until it holds; panics with the last state.
fn wait_for(
    d: &Daemon,
    name: &str,
    within: Duration,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let now = plugind_state(d, name);
        if check(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached; last PluginD: {now}\nplugind log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn health_status(v: &serde_json::Value) -> &str {
    v["Health"]["Status"].as_str().unwrap_or("")
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn a_plugin_that_stops_answering_is_found_unhealthy_restarted_and_usable_again() {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    // Daemon defaults that would take minutes; the plugin overrides the interval below.
    let d = Daemon::start_with(
        false,
        &[
            "--health-interval",
            "1m",
            "--health-timeout",
            "3s",
            "--health-retries",
            "2",
        ],
    );
    let name = "health/vol:latest";
    d.docker_ok(&[
        "plugin",
        "create",
        "health/vol",
        &sample_plugin_dir().to_string_lossy(),
    ]);
    // plugind's own settings: checked, and accepted while the plugin is enabled too.
    let err = d.docker_err(&["plugin", "set", name, "plugind.health.interval=soon"]);
    assert!(err.contains("plugind.health.interval"), "{err}");
    let err = d.docker_err(&["plugin", "set", name, "plugind.nope.x=1"]);
    assert!(err.contains("unknown plugind option"), "{err}");
    d.docker_ok(&["plugin", "enable", name]);
    d.docker_ok(&["plugin", "set", name, "plugind.health.interval=300ms"]);
    // Docker's settings keep Docker's rule.
    let err = d.docker_err(&["plugin", "set", name, "DEBUG=1"]);
    assert!(err.contains("cannot set on an active plugin"), "{err}");

    let healthy = wait_for(&d, name, Duration::from_secs(60), "healthy", |v| {
        health_status(v) == "healthy"
    });
    assert_eq!(healthy["Health"]["FailingStreak"], 0, "{healthy}");
    let log = healthy["Health"]["Log"].as_array().unwrap();
    assert_eq!(log.last().unwrap()["ExitCode"], 0, "{healthy}");
    let pid = healthy["Pid"].as_u64().expect("a running plugin has a pid");

    // Hung without exiting: only the health checks can tell.
    Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .unwrap();
    let restarted = wait_for(
        &d,
        name,
        Duration::from_secs(90),
        "restarted after failing its health checks",
        |v| {
            v["State"] == "running"
                && v["Pid"].as_u64().is_some_and(|p| p != pid)
                && health_status(v) == "healthy"
        },
    );
    // At least this restart (a loaded host may have failed a probe before the SIGSTOP too).
    assert!(
        restarted["RestartCount"].as_u64().is_some_and(|n| n >= 1),
        "{restarted}"
    );
    // The old process is gone (SIGKILL ends a stopped process).
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")),
        "the hung plugin process still exists"
    );

    // Usable again.
    d.docker_ok(&["volume", "create", "-d", name, "after-restart"]);
    d.docker_ok(&["volume", "rm", "after-restart"]);

    // The story in events: unhealthy, then restarted, then healthy again.
    let until = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1)
    .to_string();
    let events = d.docker_ok(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "type=plugin",
        "--format",
        "{{.Action}}",
    ]);
    let actions: Vec<&str> = events.lines().collect();
    let at = |a: &str| {
        actions
            .iter()
            .position(|x| *x == a)
            .unwrap_or_else(|| panic!("no {a:?} event in {actions:?}"))
    };
    let unhealthy = at("health_status: unhealthy");
    let restart = at("restart");
    assert!(at("health_status: healthy") < unhealthy, "{actions:?}");
    assert!(unhealthy < restart, "{actions:?}");
    assert!(
        actions[restart..].contains(&"health_status: healthy"),
        "{actions:?}"
    );

    d.docker_ok(&["plugin", "disable", name]);
    let off = plugind_state(&d, name);
    assert!(off.get("Health").is_none(), "{off}");
    d.docker_ok(&["plugin", "rm", name]);
}

/// One scrape of the metrics socket, parsed as a Prometheus server would.
fn scrape(socket: &std::path::Path) -> prometheus_parse::Scrape {
    let (status, body) =
        http_over_unix(socket, "GET", "/metrics", None).expect("the metrics socket answers");
    assert_eq!(status, 200, "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text")
}

/// The value of the sample `metric` whose labels include `labels` (0 when there is none).
fn value(s: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == metric)
        .find(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map_or(0.0, |x| match &x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            other => panic!("{metric}: unexpected {other:?}"),
        })
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn metrics_are_served_and_follow_operations() {
    let dir = tempfile::Builder::new()
        .prefix("pm")
        .tempdir_in("/tmp")
        .unwrap();
    let socket = dir.path().join("metrics.sock");
    let addr = format!("unix://{}", socket.display());
    let d = Daemon::start_with(false, &["--metrics-addr", &addr]);
    let name = "metrics/vol:latest";

    let before = scrape(&socket);
    assert_eq!(
        value(&before, "plugind_plugins", &[("state", "running")]),
        0.0
    );
    // Only the scrape itself so far: no API request counted for enable.
    let enables = |s: &prometheus_parse::Scrape| {
        value(
            s,
            "plugind_api_requests_total",
            &[("route", "/plugins/:name/enable"), ("status", "200")],
        )
    };
    assert_eq!(enables(&before), 0.0);

    d.docker_ok(&[
        "plugin",
        "create",
        "metrics/vol",
        &sample_plugin_dir().to_string_lossy(),
    ]);
    let created = scrape(&socket);
    assert_eq!(
        value(&created, "plugind_plugins", &[("state", "disabled")]),
        1.0
    );
    assert!(value(&created, "plugind_blobstore_bytes", &[]) > 0.0);
    assert!(value(&created, "plugind_blobstore_blobs", &[]) >= 1.0);

    d.docker_ok(&["plugin", "enable", name]);
    d.docker_ok(&["volume", "create", "-d", name, "m1"]);
    // A refused operation is counted with its status, under the route's template.
    let _ = d.docker(&["plugin", "enable", name]);
    let after = scrape(&socket);
    assert_eq!(
        value(&after, "plugind_plugins", &[("state", "running")]),
        1.0
    );
    assert_eq!(
        value(&after, "plugind_plugins", &[("state", "disabled")]),
        0.0
    );
    assert_eq!(enables(&after), 1.0);
    let refused: f64 = after
        .samples
        .iter()
        .filter(|s| {
            s.metric == "plugind_api_requests_total"
                && s.labels.get("route") == Some("/plugins/:name/enable")
                && s.labels.get("status") != Some("200")
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Untyped(v) | prometheus_parse::Value::Counter(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(refused, 1.0, "a refused enable is counted with its status");
    assert_eq!(
        value(&after, "plugind_plugin_enable_duration_seconds_count", &[]),
        1.0
    );
    assert!(
        value(
            &after,
            "plugind_volume_driver_call_duration_seconds_count",
            &[("plugin", name), ("method", "VolumeDriver.Create")],
        ) >= 1.0
    );
    assert_eq!(
        value(
            &after,
            "plugind_volume_driver_call_errors_total",
            &[("plugin", name), ("method", "VolumeDriver.Create")],
        ),
        0.0
    );
    // No raw path (or plugin name) ever becomes a route label.
    for s in after
        .samples
        .iter()
        .filter(|s| s.metric == "plugind_api_requests_total")
    {
        let route = s.labels.get("route").unwrap();
        assert!(!route.contains("metrics"), "raw path as a label: {route}");
    }
    // Other paths are not metrics.
    let (status, _) = http_over_unix(&socket, "GET", "/other", None).unwrap();
    assert_eq!(status, 404);

    d.docker_ok(&["volume", "rm", "m1"]);
    d.docker_ok(&["plugin", "disable", name]);
    d.docker_ok(&["plugin", "rm", name]);
    let gone = scrape(&socket);
    assert_eq!(
        value(&gone, "plugind_plugins", &[("state", "running")]),
        0.0
    );
    assert_eq!(
        value(&gone, "plugind_plugins", &[("state", "disabled")]),
        0.0
    );
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn a_plugin_reattached_by_live_restore_is_health_checked_with_its_own_settings() {
    // The daemon's interval is an hour: every probe this test sees comes from the plugin's
    // own `set` options, which wake its monitor at once and survive the restart.
    let mut d = Daemon::start_with(true, &["--health-interval", "1h", "--health-timeout", "3s"]);
    let name = "relive/vol:latest";
    d.docker_ok(&[
        "plugin",
        "create",
        "relive/vol",
        &sample_plugin_dir().to_string_lossy(),
    ]);
    d.docker_ok(&["plugin", "enable", name]);
    d.docker_ok(&[
        "plugin",
        "set",
        name,
        "plugind.health.interval=300ms",
        "plugind.health.retries=2",
    ]);
    let pid = wait_for(&d, name, Duration::from_secs(60), "healthy", |v| {
        health_status(v) == "healthy"
    })["Pid"]
        .as_u64()
        .unwrap();
    // plugind goes away and comes back; the plugin keeps running and is re-attached.
    d.stop();
    d.restart();
    let back = wait_for(
        &d,
        name,
        Duration::from_secs(60),
        "re-attached, healthy",
        |v| health_status(v) == "healthy",
    );
    assert_eq!(
        back["Pid"].as_u64(),
        Some(pid),
        "re-attached, not restarted"
    );
    // The per-plugin options survived the restart (in the record), and the monitor runs.
    Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .unwrap();
    wait_for(
        &d,
        name,
        Duration::from_secs(90),
        "restarted after failing its health check",
        |v| v["State"] == "running" && v["Pid"].as_u64().is_some_and(|p| p != pid),
    );
    d.docker_ok(&["plugin", "disable", name]);
    d.docker_ok(&["plugin", "rm", name]);
}
