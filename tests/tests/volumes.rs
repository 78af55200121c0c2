//! End-to-end: `docker volume` through plugind and the sample volume plugin, references that
//! hold a plugin enabled, volumes and references surviving a restart, and the Python SDK's
//! volume calls.

use std::process::Command;

use plugind_tests::{sample_plugin_dir, workspace, Daemon};

fn setup(live_restore: bool) -> Daemon {
    let d = Daemon::start(live_restore);
    d.docker_ok(&[
        "plugin",
        "create",
        "vols/driver",
        &sample_plugin_dir().to_string_lossy(),
    ]);
    d.docker_ok(&["plugin", "enable", "vols/driver"]);
    d
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn docker_volume_commands_go_through_the_plugin() {
    let d = setup(false);
    assert_eq!(
        d.docker_ok(&["volume", "create", "-d", "vols/driver", "v1"])
            .trim(),
        "v1"
    );
    // Creating it again with the same driver is fine (idempotent).
    d.docker_ok(&["volume", "create", "-d", "vols/driver", "v1"]);
    let ls = d.docker_ok(&["volume", "ls", "--format", "{{.Driver}} {{.Name}}"]);
    assert_eq!(ls.trim(), "vols/driver:latest v1");
    let filtered = d.docker_ok(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        "driver=vols/driver:latest",
    ]);
    assert_eq!(filtered.trim(), "v1");
    assert_eq!(
        d.docker_ok(&["volume", "ls", "-q", "--filter", "driver=other"])
            .trim(),
        ""
    );
    let mountpoint = d.docker_ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", "v1"]);
    assert_eq!(mountpoint.trim(), "/data/volumes/v1");
    // The plugin really made it, under its propagated mount.
    let id = d.docker_ok(&["plugin", "inspect", "-f", "{{.Id}}", "vols/driver"]);
    assert!(d
        .dir
        .join(format!("root/{}/propagated-mount/volumes/v1", id.trim()))
        .is_dir());

    let err = d.docker_err(&["plugin", "disable", "vols/driver"]);
    assert!(err.contains("plugin vols/driver:latest is in use"), "{err}");
    let err = d.docker_err(&["volume", "inspect", "nope"]);
    assert!(err.contains("no such volume"), "{err}");

    assert_eq!(d.docker_ok(&["volume", "rm", "v1"]).trim(), "v1");
    assert_eq!(d.docker_ok(&["volume", "ls", "-q"]).trim(), "");
    d.docker_ok(&["plugin", "disable", "vols/driver"]);
    let err = d.docker_err(&["volume", "create", "-d", "vols/driver", "v2"]);
    assert!(
        err.contains("not enabled") || err.contains("not found"),
        "{err}"
    );
    let err = d.docker_err(&["volume", "create", "-d", "unknown", "v3"]);
    assert!(err.contains(r#"plugin "unknown" not found"#), "{err}");
    d.docker_ok(&["plugin", "rm", "vols/driver"]);
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn restart_keeps_volumes_and_references() {
    let mut d = setup(true);
    d.docker_ok(&["volume", "create", "-d", "vols/driver", "kept"]);
    d.kill9();
    d.restart();
    assert_eq!(d.docker_ok(&["volume", "ls", "-q"]).trim(), "kept");
    let err = d.docker_err(&["plugin", "disable", "vols/driver"]);
    assert!(
        err.contains("is in use"),
        "the reference survives the restart: {err}"
    );
    d.docker_ok(&["volume", "rm", "kept"]);
    d.docker_ok(&["plugin", "disable", "vols/driver"]);
    d.docker_ok(&["plugin", "rm", "vols/driver"]);
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn plugin_rm_force_leaves_no_hanging_orphans() {
    let d = setup(false);
    d.docker_ok(&["volume", "create", "-d", "vols/driver", "orphan"]);
    d.docker_ok(&["plugin", "rm", "-f", "vols/driver"]);
    // Docker retries the missing driver for 15 s per call here; plugind answers from its
    // record without calling a driver, and says why the driver is unavailable.
    assert_eq!(d.docker_ok(&["volume", "ls", "-q"]).trim(), "orphan");
    let inspect = d.docker_ok(&["volume", "inspect", "-f", "{{json .Status}}", "orphan"]);
    assert!(inspect.contains("not found"), "{inspect}");
    d.docker_ok(&["volume", "rm", "orphan"]);
}

const SDK_SCRIPT: &str = r#"
import sys, docker
client = docker.DockerClient(base_url="unix://" + sys.argv[1])
v = client.volumes.create(name="pyvol", driver="vols/driver", labels={"k": "v"})
assert v.name == "pyvol"
assert [x.name for x in client.volumes.list()] == ["pyvol"]
assert client.volumes.get("pyvol").attrs["Labels"] == {"k": "v"}
v.remove()
assert client.volumes.list() == []
print("SDK VOLUMES OK")
"#;

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker SDK venv and the packaged sample plugin"]
fn python_sdk_volumes() {
    let python = workspace().join("target/xtask-tools/venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run `cargo xtask setup`",
        python.display()
    );
    let d = setup(false);
    let out = Command::new(python)
        .arg("-c")
        .arg(SDK_SCRIPT)
        .arg(d.socket())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("SDK VOLUMES OK"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    d.docker_ok(&["plugin", "disable", "vols/driver"]);
    d.docker_ok(&["plugin", "rm", "vols/driver"]);
}
