//! End-to-end: the real docker CLI (Docker 28) against the built `plugind` binary with the
//! real shim, runc and the sample volume plugin: the plugin commands, Docker's error texts and
//! exit codes, events, and a kill -9 of plugind with live restore.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use plugind_tests::{http_over_unix, sample_plugin_dir, Daemon};

const IGNORE: &str =
    "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin";

fn plugin_dir() -> String {
    sample_plugin_dir().to_string_lossy().into_owned()
}

fn inspect(d: &Daemon, name: &str, format: &str) -> String {
    d.docker_ok(&["plugin", "inspect", "-f", format, name])
        .trim()
        .to_owned()
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn plugin_commands_work_like_docker() {
    let _ = IGNORE;
    let d = Daemon::start(false);
    assert_eq!(
        d.docker_ok(&["plugin", "create", "sample/vol", &plugin_dir()])
            .trim(),
        "sample/vol"
    );
    let id = inspect(&d, "sample/vol", "{{.Id}}");
    assert_eq!(id.len(), 64);

    let ls = d.docker_ok(&["plugin", "ls"]);
    assert!(
        ls.contains("sample/vol:latest") && ls.contains("false"),
        "{ls}"
    );
    assert_eq!(d.docker_ok(&["plugin", "ls", "-q"]).trim(), &id[..12]);
    assert_eq!(
        d.docker_ok(&["plugin", "ls", "--no-trunc", "-q"]).trim(),
        id
    );
    assert_eq!(
        d.docker_ok(&["plugin", "ls", "--format", "{{.Name}}={{.Enabled}}"])
            .trim(),
        "sample/vol:latest=false"
    );
    assert_eq!(
        d.docker_ok(&["plugin", "ls", "-q", "--filter", "enabled=true"])
            .trim(),
        ""
    );
    assert_eq!(
        d.docker_ok(&["plugin", "ls", "-q", "--filter", "capability=volumedriver"])
            .trim(),
        &id[..12]
    );
    assert_eq!(
        d.docker_ok(&["plugin", "ls", "-q", "--filter", "capability=authz"])
            .trim(),
        ""
    );

    // Enable by unique id prefix, as Docker allows.
    assert_eq!(
        d.docker_ok(&["plugin", "enable", &id[..6]]).trim(),
        &id[..6]
    );
    assert_eq!(inspect(&d, "sample/vol", "{{.Enabled}}"), "true");
    let pid: u32 = inspect(&d, "sample/vol", "{{.PluginD.Pid}}")
        .parse()
        .unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    // The plugin answers on its socket under the exec root.
    let sock = d.dir.join(format!("run/plugins/{id}/vol.sock"));
    let (status, body) = http_over_unix(&sock, "POST", "/VolumeDriver.List", Some("{}")).unwrap();
    assert_eq!(status, 200, "{body}");

    let err = d.docker_err(&["plugin", "set", "sample/vol", "DEBUG=1"]);
    assert!(
        err.contains("cannot set on an active plugin, disable plugin before setting"),
        "{err}"
    );
    let err = d.docker_err(&["plugin", "enable", "sample/vol"]);
    assert!(
        err.contains("plugin already enabled: plugin sample/vol:latest is enabled"),
        "{err}"
    );
    let err = d.docker_err(&["plugin", "rm", "sample/vol"]);
    assert!(err.contains("plugin sample/vol:latest is enabled"), "{err}");

    assert_eq!(
        d.docker_ok(&["plugin", "disable", "sample/vol"]).trim(),
        "sample/vol"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "disable stops the process"
    );
    let err = d.docker_err(&["plugin", "disable", "sample/vol"]);
    assert!(
        err.contains("plugin is already disabled: plugin sample/vol:latest found but disabled"),
        "{err}"
    );

    d.docker_ok(&["plugin", "set", "sample/vol", "DEBUG=1"]);
    assert!(inspect(&d, "sample/vol", "{{json .Settings.Env}}").contains("DEBUG=1"));
    let err = d.docker_err(&["plugin", "set", "sample/vol", "NOPE=1"]);
    assert!(
        err.contains(r#"setting "NOPE" not found in the plugin configuration"#),
        "{err}"
    );

    let err = d.docker_err(&["plugin", "create", "sample/vol", &plugin_dir()]);
    assert!(
        err.contains("plugin sample/vol:latest already exists"),
        "{err}"
    );
    let err = d.docker_err(&["plugin", "inspect", "nope"]);
    assert!(err.contains(r#"plugin "nope" not found"#), "{err}");

    assert_eq!(
        d.docker_ok(&["plugin", "rm", "sample/vol"]).trim(),
        "sample/vol"
    );
    assert_eq!(d.docker_ok(&["plugin", "ls", "-q"]).trim(), "");
    assert!(!d.dir.join("root").join(&id).exists());
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn rm_force_stops_an_enabled_plugin() {
    let d = Daemon::start(false);
    d.docker_ok(&["plugin", "create", "forced", &plugin_dir()]);
    d.docker_ok(&["plugin", "enable", "forced"]);
    let pid = inspect(&d, "forced", "{{.PluginD.Pid}}");
    d.docker_ok(&["plugin", "rm", "-f", "forced"]);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(d.docker_ok(&["plugin", "ls", "-q"]).trim(), "");
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn events_report_the_lifecycle_with_since_and_until() {
    let d = Daemon::start(false);
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    d.docker_ok(&["plugin", "create", "ev", &plugin_dir()]);
    d.docker_ok(&["plugin", "enable", "ev"]);
    d.docker_ok(&["plugin", "disable", "ev"]);
    d.docker_ok(&["plugin", "rm", "ev"]);
    std::thread::sleep(Duration::from_millis(1100));
    let until = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let out = d.docker_ok(&[
        "events",
        "--filter",
        "type=plugin",
        "--since",
        &since.to_string(),
        "--until",
        &until.to_string(),
        "--format",
        "{{.Action}} {{.Actor.Attributes.name}}",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            // create names the stored reference; the others the name as typed (moby).
            "create ev:latest",
            "enable ev",
            "disable ev",
            "remove ev"
        ]
    );
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn kill_9_of_plugind_with_live_restore_keeps_plugins_running() {
    let mut d = Daemon::start(true);
    d.docker_ok(&["plugin", "create", "survivor", &plugin_dir()]);
    d.docker_ok(&["plugin", "enable", "survivor"]);
    let id = inspect(&d, "survivor", "{{.Id}}");
    let pid = inspect(&d, "survivor", "{{.PluginD.Pid}}");
    d.kill9();
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "plugin outlives plugind"
    );
    d.restart();
    let ls = d.docker_ok(&["plugin", "ls", "--format", "{{.Name}} {{.Enabled}}"]);
    assert_eq!(ls.trim(), "survivor:latest true");
    assert_eq!(
        inspect(&d, "survivor", "{{.PluginD.Pid}}"),
        pid,
        "re-attached, not restarted"
    );
    let sock = d.dir.join(format!("run/plugins/{id}/vol.sock"));
    let (status, _) = http_over_unix(&sock, "POST", "/VolumeDriver.List", Some("{}")).unwrap();
    assert_eq!(status, 200, "the plugin is usable after restore");
    d.docker_ok(&["plugin", "disable", "survivor"]);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    d.docker_ok(&["plugin", "rm", "survivor"]);
}
