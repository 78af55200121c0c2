//! End-to-end: access control. Authorization plugins (`authz/1.0`) with the sample
//! `examples/authz-plugin` (allows everything but volume creation): the docker CLI sees
//! Docker's texts, reads go through, a plugin of the chain cannot be removed, disabling it
//! lifts the denial, a restart keeps enforcing, a hanging plugin fails requests closed within
//! its deadline, and plugind refuses to start with a missing plugin or group. Sockets: the API
//! socket and the published volume sockets are `root:<group>` 0660.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use plugind_tests::{sample_plugin_dir, workspace, Daemon};

const AUTHZ: &str = "authz/plugin";
const DENIED: &str =
    "Error response from daemon: authorization denied by plugin authz/plugin:latest: volume creation is not allowed";

fn authz_plugin_dir() -> PathBuf {
    let dir = workspace().join("target/plugin/authz-plugin");
    assert!(
        dir.join("rootfs/authz-plugin").exists(),
        "the sample authz plugin is not packaged: run `cargo xtask plugin`"
    );
    dir
}

fn write_chain(file: &Path, chain: &[&str]) {
    let list: Vec<String> = chain.iter().map(|n| format!("{n:?}")).collect();
    std::fs::write(
        file,
        format!("authorization-plugins = [{}]\n", list.join(", ")),
    )
    .unwrap();
}

fn sighup(d: &Daemon) {
    assert!(Command::new("kill")
        .args(["-HUP", &d.pid().to_string()])
        .status()
        .unwrap()
        .success());
}

/// Waits until `docker volume create` is denied (or allowed), bounded.
fn wait_for_denial(d: &Daemon, denied: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = d.docker(&["volume", "create", "-d", "vols/driver", "probe"]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let is_denied = stderr.contains(DENIED);
        if is_denied == denied {
            if !denied {
                d.docker_ok(&["volume", "rm", "probe"]);
            }
            return;
        }
        assert!(
            Instant::now() < deadline,
            "volume creation still {}: {stderr}\n{}",
            if denied { "allowed" } else { "denied" },
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugins"]
fn authorization_plugins_deny_with_dockers_texts_and_fail_closed() {
    let cfg = tempfile::tempdir().unwrap();
    let file = cfg.path().join("plugind.toml");
    std::fs::write(&file, "").unwrap();
    let mut d = Daemon::start_with(false, &["--config-file", file.to_str().unwrap()]);
    d.docker_ok(&[
        "plugin",
        "create",
        "vols/driver",
        &sample_plugin_dir().to_string_lossy(),
    ]);
    d.docker_ok(&["plugin", "enable", "vols/driver"]);
    d.docker_ok(&[
        "plugin",
        "create",
        AUTHZ,
        &authz_plugin_dir().to_string_lossy(),
    ]);
    d.docker_ok(&["plugin", "enable", AUTHZ]);

    // SIGHUP puts the chain in force.
    write_chain(&file, &[AUTHZ]);
    sighup(&d);
    wait_for_denial(&d, true);
    let err = d.docker_err(&["volume", "create", "-d", "vols/driver", "v1"]);
    assert!(err.contains(DENIED), "{err}");
    // Denied before it ran: there is no such volume.
    assert_eq!(d.docker_ok(&["volume", "ls", "-q"]).trim(), "");
    // Reads (and other writes) go through.
    assert!(d.docker_ok(&["plugin", "ls"]).contains(AUTHZ));
    d.docker_ok(&["volume", "ls"]);
    // A plugin of the chain cannot be removed, even forced.
    let err = d.docker_err(&["plugin", "rm", "-f", AUTHZ]);
    assert!(
        err.contains("plugin authz/plugin:latest is in use"),
        "{err}"
    );

    // A reload naming a plugin that does not exist changes nothing: the chain stays.
    write_chain(&file, &["no-such-authz"]);
    sighup(&d);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d
        .log()
        .contains("authorization plugin no-such-authz: plugin not found")
    {
        assert!(Instant::now() < deadline, "no failed reload: {}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = d.docker_err(&["volume", "create", "-d", "vols/driver", "v1"]);
    assert!(err.contains(DENIED), "after a failed reload: {err}");
    write_chain(&file, &[AUTHZ]);

    // A restart with the chain configured keeps enforcing: the plugin is started before the
    // API serves.
    d.stop();
    d.restart();
    let err = d.docker_err(&["volume", "create", "-d", "vols/driver", "v1"]);
    assert!(err.contains(DENIED), "after restart: {err}");

    // Disabling the plugin takes it out of the chain.
    d.docker_ok(&["plugin", "disable", AUTHZ]);
    assert_eq!(
        d.docker_ok(&["volume", "create", "-d", "vols/driver", "v1"])
            .trim(),
        "v1"
    );
    d.docker_ok(&["volume", "rm", "v1"]);

    // A plugin that hangs: requests fail closed with Docker's 500 text once the plugin's
    // deadline (enable --timeout) passes, instead of hanging or running unchecked.
    d.docker_ok(&["plugin", "set", AUTHZ, "HANG=1"]);
    d.docker_ok(&["plugin", "enable", "--timeout", "2", AUTHZ]);
    let out = d.docker(&["volume", "ls"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "a hanging plugin let a request through"
    );
    assert!(
        err.contains("Error response from daemon: plugin authz/plugin:latest failed with error: "),
        "{err}"
    );
    assert!(
        err.contains("AuthZPlugin.AuthZReq: no answer within 2s"),
        "{err}"
    );

    // Locked out on purpose: the administrator's way back is the configuration.
    write_chain(&file, &[]);
    sighup(&d);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.docker(&["volume", "ls"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "reload did not lift the chain: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d.docker_ok(&["plugin", "disable", AUTHZ]);
    d.docker_ok(&["plugin", "rm", AUTHZ]);
    d.docker_ok(&["plugin", "disable", "vols/driver"]);
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugins"]
fn plugind_refuses_to_start_with_a_missing_authz_plugin_or_group() {
    let mut d = Daemon::start(false);
    d.docker_ok(&[
        "plugin",
        "create",
        "vols/driver",
        &sample_plugin_dir().to_string_lossy(),
    ]);
    let dir = d.dir.clone();
    let start = |root: &str, run: &str, args: &[&str]| {
        let out = Command::new(plugind_tests::plugind_bin())
            .arg("--root")
            .arg(dir.join(root))
            .arg("--exec-root")
            .arg(dir.join(run))
            .arg("-H")
            .arg(format!("unix://{}/other.sock", dir.display()))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "started with {args:?}");
        assert!(!dir.join("other.sock").exists(), "never served");
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
    };
    let text = start(
        "root2",
        "run2",
        &["--authorization-plugin", "no-such-authz"],
    );
    assert!(
        text.contains("authorization plugin no-such-authz: plugin not found"),
        "{text}"
    );
    let text = start("root2", "run2", &["-G", "no-such-group-plugind"]);
    assert!(
        text.contains("group no-such-group-plugind not found"),
        "{text}"
    );
    // A plugin that exists but is no authorization plugin (on the first daemon's root, which
    // is stopped for this: one daemon per root).
    d.stop();
    let text = start("root", "run", &["--authorization-plugin", "vols/driver"]);
    assert!(
        text.contains(
            "authorization plugin vols/driver: plugin vols/driver:latest is not an authorization plugin"
        ),
        "{text}"
    );
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn api_and_published_sockets_are_root_group_0660() {
    // `daemon` (gid 1) is a group that is not root's: a chown that did not happen shows.
    let d = Daemon::start_with(false, &["-G", "daemon"]);
    let meta = std::fs::metadata(d.socket()).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, 1, 0o660),
        "api socket"
    );
    d.docker_ok(&[
        "plugin",
        "create",
        "vols/driver",
        &sample_plugin_dir().to_string_lossy(),
    ]);
    d.docker_ok(&["plugin", "enable", "vols/driver"]);
    let published = d.dir.join("run/publish/vols+driver.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !published.exists() {
        assert!(Instant::now() < deadline, "not published: {}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let meta = std::fs::metadata(&published).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, 1, 0o660),
        "published socket"
    );
    // Nothing but the sockets: no bind directories left beside them.
    for dir in [d.dir.clone(), d.dir.join("run/publish")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                !name.contains(".bind-"),
                "left in {}: {name}",
                dir.display()
            );
        }
    }
    d.docker_ok(&["plugin", "disable", "vols/driver"]);
}

/// The sample authz plugin run on the host as a v1 plugin (its socket under
/// `/run/docker/plugins`); killed and its socket removed when dropped.
struct V1Plugin {
    child: std::process::Child,
    socket: PathBuf,
}

impl Drop for V1Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugins"]
fn a_v1_authorization_plugin_is_found_by_name() {
    let name = format!("plugind-e2e-authz-{}", std::process::id());
    let socket = PathBuf::from(format!("/run/docker/plugins/{name}.sock"));
    std::fs::create_dir_all("/run/docker/plugins").unwrap();
    let child = Command::new(authz_plugin_dir().join("rootfs/authz-plugin"))
        .env("SOCKET", &socket)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let plugin = V1Plugin { child, socket };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&plugin.socket).is_err() {
        assert!(Instant::now() < deadline, "the v1 plugin did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let d = Daemon::start_with(false, &["--authorization-plugin", &name]);
    d.docker_ok(&[
        "plugin",
        "create",
        "vols/driver",
        &sample_plugin_dir().to_string_lossy(),
    ]);
    d.docker_ok(&["plugin", "enable", "vols/driver"]);
    let err = d.docker_err(&["volume", "create", "-d", "vols/driver", "v1"]);
    assert!(
        err.contains(&format!(
            "Error response from daemon: authorization denied by plugin {name}: volume creation is not allowed"
        )),
        "{err}"
    );
    d.docker_ok(&["volume", "ls"]);
    d.docker_ok(&["plugin", "disable", "vols/driver"]);
    drop(d);
    drop(plugin);
}
