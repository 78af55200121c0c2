//! End-to-end: the published socket of a volume plugin, driven with raw plugin-protocol
//! requests as Podman and Docker daemons send them: `Plugin.Activate` answered by plugind,
//! mountpoints rewritten to host paths, consumer mounts held as references (disable refused),
//! the socket kept across a plugind restart with live restore, Docker spec files and the
//! Podman drop-in, and the socket gone after disable.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use plugind_tests::{http_over_unix, sample_plugin_dir, Daemon};
use serde_json::Value;

/// Waits until `path` exists or not (`present`), up to 30 s (a readiness wait, not a timing
/// assertion).
fn wait_for(path: &Path, present: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while path.exists() != present {
        assert!(
            Instant::now() < deadline,
            "{} still {}",
            path.display(),
            if present { "missing" } else { "present" }
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn call(socket: &Path, method: &str, body: &str) -> (u16, Value) {
    let (status, text) = http_over_unix(socket, "POST", &format!("/{method}"), Some(body))
        .unwrap_or_else(|| panic!("{} does not answer {method}", socket.display()));
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method}: {e}: {text}"));
    (status, value)
}

fn plugin_id(d: &Daemon, name: &str) -> String {
    d.docker_ok(&["plugin", "inspect", "-f", "{{.Id}}", name])
        .trim()
        .to_owned()
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn published_socket_rewrites_paths_counts_mounts_and_follows_the_plugin() {
    let specs = tempfile::tempdir().unwrap();
    let specs_dir = specs.path().to_string_lossy().into_owned();
    let mut d = Daemon::start_with(
        true,
        &["--publish-docker-specs", "--docker-specs-dir", &specs_dir],
    );
    d.docker_ok(&[
        "plugin",
        "create",
        "vols/driver",
        &sample_plugin_dir().to_string_lossy(),
    ]);
    let socket = d.dir.join("run/publish/vols+driver.sock");
    assert!(!socket.exists(), "published before enable");
    d.docker_ok(&["plugin", "enable", "vols/driver"]);
    wait_for(&socket, true);
    let id = plugin_id(&d, "vols/driver");
    let host_volumes = d
        .dir
        .join(format!("root/{id}/propagated-mount/volumes"))
        .canonicalize()
        .unwrap_or_else(|_| d.dir.join(format!("root/{id}/propagated-mount/volumes")));

    // plugind answers Activate (the sample plugin itself would too, but need not).
    let (status, activate) = call(&socket, "Plugin.Activate", "");
    assert_eq!(status, 200);
    assert_eq!(activate["Implements"], serde_json::json!(["VolumeDriver"]));

    // Podman's create: Get (an error: not there yet), then Create.
    let (status, get) = call(&socket, "VolumeDriver.Get", r#"{"Name":"v1"}"#);
    assert_eq!(status, 500);
    assert_eq!(get["Err"], "no such volume: v1", "the plugin's own text");
    let (status, _) = call(&socket, "VolumeDriver.Create", r#"{"Name":"v1"}"#);
    assert_eq!(status, 200);

    // Every mountpoint is a host path under the propagated-mount directory.
    let expected = host_volumes.join("v1").to_string_lossy().into_owned();
    let (_, get) = call(&socket, "VolumeDriver.Get", r#"{"Name":"v1"}"#);
    assert_eq!(get["Volume"]["Mountpoint"], expected.as_str());
    let (_, list) = call(&socket, "VolumeDriver.List", "");
    assert_eq!(list["Volumes"][0]["Mountpoint"], expected.as_str());
    let (_, path) = call(&socket, "VolumeDriver.Path", r#"{"Name":"v1"}"#);
    assert_eq!(path["Mountpoint"], expected.as_str());
    let (status, mount) = call(
        &socket,
        "VolumeDriver.Mount",
        r#"{"Name":"v1","ID":"consumer-1"}"#,
    );
    assert_eq!(status, 200, "{mount}");
    assert_eq!(mount["Mountpoint"], expected.as_str());
    // A file written at the host path is the plugin's volume.
    std::fs::write(Path::new(&expected).join("f"), "hi").unwrap();
    assert!(d
        .dir
        .join(format!("root/{id}/propagated-mount/volumes/v1/f"))
        .is_file());

    // The consumer's mount is a reference: disable is refused with Docker's text.
    let err = d.docker_err(&["plugin", "disable", "vols/driver"]);
    assert!(err.contains("plugin vols/driver:latest is in use"), "{err}");

    // Spec file for Docker daemons, drop-in for Podman.
    let spec = specs.path().join("vols+driver.spec");
    assert_eq!(
        std::fs::read_to_string(&spec).unwrap(),
        format!("unix://{}\n", socket.display())
    );
    // The drop-in is rewritten right after the socket appears: wait until it names it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let conf = loop {
        let out = std::process::Command::new(plugind_tests::plugind_bin())
            .args(["podman-conf", "--exec-root"])
            .arg(d.dir.join("run"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.contains(&*socket.to_string_lossy()) {
            break text;
        }
        assert!(Instant::now() < deadline, "podman-conf: {out:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        conf.contains(&format!(
            "\"vols/driver:latest\" = \"{}\"",
            socket.display()
        )),
        "{conf}"
    );
    assert!(
        conf.contains(&format!("\"vols/driver\" = \"{}\"", socket.display())),
        "{conf}"
    );
    // ... and written atomically where Podman reads drop-ins.
    let drop_in = specs.path().join("containers.conf.d/plugind.conf");
    let wrote = std::process::Command::new(plugind_tests::plugind_bin())
        .args(["podman-conf", "--exec-root"])
        .arg(d.dir.join("run"))
        .arg("--podman-conf-output")
        .arg(&drop_in)
        .output()
        .unwrap();
    assert!(wrote.status.success(), "{wrote:?}");
    assert!(wrote.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&drop_in).unwrap(), conf);

    // Unknown methods are 404s, methods other than POST refused.
    let (status, _) = call(&socket, "VolumeDriver.Nope", "{}");
    assert_eq!(status, 404);
    let (status, _) = http_over_unix(&socket, "GET", "/Plugin.Activate", None).unwrap();
    assert_eq!(status, 405);

    // plugind restarts (kill -9, live restore): the socket is served again, the reference kept.
    d.kill9();
    d.restart();
    wait_for(&socket, true);
    let (status, get) = call(&socket, "VolumeDriver.Get", r#"{"Name":"v1"}"#);
    assert_eq!(status, 200, "{get}");
    assert_eq!(get["Volume"]["Mountpoint"], expected.as_str());
    let err = d.docker_err(&["plugin", "disable", "vols/driver"]);
    assert!(err.contains("is in use"), "{err}");

    // Unmount releases it; then disable works and the socket and spec file go.
    let (status, _) = call(
        &socket,
        "VolumeDriver.Unmount",
        r#"{"Name":"v1","ID":"consumer-1"}"#,
    );
    assert_eq!(status, 200);
    let (status, _) = call(&socket, "VolumeDriver.Remove", r#"{"Name":"v1"}"#);
    assert_eq!(status, 200);
    d.docker_ok(&["plugin", "disable", "vols/driver"]);
    wait_for(&socket, false);
    wait_for(&spec, false);
    d.docker_ok(&["plugin", "rm", "vols/driver"]);
}
