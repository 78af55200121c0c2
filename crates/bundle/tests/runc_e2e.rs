//! End-to-end: a bundle built by these crates for a busybox rootfs, run with the real `runc`.
//!
//! One container run checks, from inside: args/env/cwd, the added capability in `CapEff`, the
//! host network namespace (and a private pid namespace), a device node from a device setting,
//! `/run/docker/plugins` being the per-plugin directory, and a mount made below the propagated
//! mount showing up on the host; then clean-up removes every mount the test made. "No mount
//! left" is checked on the mount points below the test's own root (before: none, after: none):
//! the whole mount table changes under tests of other crates running at the same time.

mod common;

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use plugind_bundle::{init_layer, mounts, socket, Bundle};
use plugind_spec::{build, DeviceKind, HostDevice, HostFacts, SpecInput};
use plugind_types::{
    config::{PluginConfig, PluginSettings},
    PluginId,
};

const SCRIPT: &str = r#"set -e
echo "ARGS=$0|$1|$2"
echo "CWD=$(pwd)"
echo "FOO=$FOO"
echo "PATHENV=$PATH"
echo "CAPEFF=$(grep CapEff /proc/self/status | cut -f2)"
echo "NETNS=$(readlink /proc/self/ns/net)"
echo "PIDNS=$(readlink /proc/self/ns/pid)"
echo "DEV=$(stat -c '%F %t:%T' /dev/kmsg)"
mkdir -p /data/vol1
mount -t tmpfs -o size=64k tmpfs /data/vol1
echo inside > /data/vol1/f
echo from-plugin > /run/docker/plugins/hello
echo "HOSTS=$(grep ' /etc/hosts ' /proc/self/mountinfo | cut -d' ' -f6)"
echo DONE
"#;

/// Unmounts everything below the test root even when an assertion failed.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = mounts::unmount_under(&self.0);
    }
}

fn busybox_rootfs(rootfs: &Path) {
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("work")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" && !applet.contains('/') {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
    }
}

fn runc_mount_options() -> Vec<String> {
    let out = Command::new("runc").arg("features").output().unwrap();
    if !out.status.success() {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    serde_json::from_value(v["mountOptions"].clone()).unwrap_or_default()
}

fn host_device(path: &str) -> HostDevice {
    let d = plugind_sys::mount::device_info(Path::new(path)).unwrap();
    HostDevice {
        path: d.path,
        kind: match d.kind {
            plugind_sys::mount::DeviceKind::Char => DeviceKind::Char,
            plugind_sys::mount::DeviceKind::Block => DeviceKind::Block,
        },
        major: i64::try_from(d.major).unwrap(),
        minor: i64::try_from(d.minor).unwrap(),
        file_mode: d.file_mode,
        uid: d.uid,
        gid: d.gid,
    }
}

#[test]
#[ignore = "needs root and runc"]
fn plugin_bundle_runs_under_runc() {
    common::require_root_and(&["runc", "/bin/busybox"]);
    let tmp = common::short_tempdir();
    let base = fs::canonicalize(tmp.path()).unwrap();
    let _guard = MountGuard(base.clone());
    assert!(common::mounts_under(&base).is_empty());
    let (data, exec) = (base.join("d"), base.join("x"));
    let id: PluginId = common::random_id();

    let rootfs = data.join(id.as_str()).join("rootfs");
    busybox_rootfs(&rootfs);
    assert!(init_layer::create_init_layer(&rootfs).unwrap().is_empty());
    let runtime_dir = socket::plugin_runtime_dir(&exec, &id);
    fs::create_dir_all(&runtime_dir).unwrap();
    fs::set_permissions(&runtime_dir, fs::Permissions::from_mode(0o700)).unwrap();
    socket::plugin_socket_path(&exec, &id, "t.sock").unwrap();
    let prop = data.join(id.as_str()).join("propagated-mount");
    mounts::prepare_propagated_mount(&prop).unwrap();

    let config = PluginConfig::from_json(
        serde_json::json!({
            "entrypoint": ["/bin/sh", "-c", SCRIPT, "argzero"],
            "workdir": "/work",
            "network": {"type": "host"},
            "propagatedMount": "/data",
            "interface": {"socket": "t.sock", "types": ["docker.volumedriver/1.0"]},
            "linux": {"capabilities": ["CAP_SYS_ADMIN"],
                      "devices": [{"name": "kmsg", "path": "/dev/kmsg", "settable": ["path"]}]},
            "env": [{"name": "FOO", "value": "bar baz", "settable": ["value"]}],
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let mut settings = PluginSettings::initial(&config);
    settings.args = vec!["a1".into(), "a 2".into()];
    let runtime_options = runc_mount_options();
    let host = HostFacts {
        in_user_namespace: plugind_sys::probe::in_user_namespace(),
        kernel_recursive_readonly: plugind_sys::probe::recursive_readonly_supported(),
        runtime_mount_options: &runtime_options,
        locked_mount_options: &|p: &Path| {
            plugind_sys::mount::mount_flags_of(p).ok().map(|f| {
                f.locked_option_names()
                    .into_iter()
                    .map(str::to_owned)
                    .collect()
            })
        },
    };
    let devices = [host_device("/dev/kmsg")];
    let spec = build(&SpecInput {
        id: &id,
        config: &config,
        settings: &settings,
        rootfs: &rootfs,
        runtime_dir: &runtime_dir,
        propagated_mount_source: &prop,
        devices: &devices,
        host: &host,
    })
    .unwrap();
    let spec_json = serde_json::to_value(&spec).unwrap();
    let hosts = spec_json["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/etc/hosts")
        .unwrap();
    let rro = host.kernel_recursive_readonly && runtime_options.iter().any(|o| o == "rro");
    assert_eq!(hosts["options"][1], if rro { "rro" } else { "ro" });
    let bundles = exec.join("bundles");
    let bundle = Bundle::create(&bundles, &id, &spec).unwrap();

    let out = Command::new("runc")
        .arg("--root")
        .arg(base.join("runc"))
        .args(["run", "--bundle"])
        .arg(bundle.path())
        .arg(id.as_str())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "runc run failed: {}\nstdout: {stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let facts: HashMap<&str, &str> = stdout.lines().filter_map(|l| l.split_once('=')).collect();
    assert!(
        stdout.lines().any(|l| l == "DONE"),
        "script did not finish: {stdout}"
    );

    assert_eq!(facts["ARGS"], "argzero|a1|a 2");
    assert_eq!(facts["CWD"], "/work");
    assert_eq!(facts["FOO"], "bar baz");
    assert_eq!(
        facts["PATHENV"],
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
    let cap_eff = u64::from_str_radix(facts["CAPEFF"], 16).unwrap();
    assert_ne!(
        cap_eff & (1 << 21),
        0,
        "CAP_SYS_ADMIN (bit 21) missing from CapEff {cap_eff:x}"
    );
    assert_eq!(cap_eff & (1 << 19), 0, "CAP_SYS_PTRACE was not asked for");
    let host_net = fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(
        facts["NETNS"],
        host_net.to_str().unwrap(),
        "host network mode shares the netns"
    );
    let host_pid = fs::read_link("/proc/self/ns/pid").unwrap();
    assert_ne!(
        facts["PIDNS"],
        host_pid.to_str().unwrap(),
        "the pid namespace is the plugin's own"
    );
    assert_eq!(
        facts["DEV"], "character special file 1:b",
        "/dev/kmsg is c 1:11"
    );
    assert!(
        facts["HOSTS"].split(',').any(|o| o == "ro"),
        "read-only /etc/hosts: {}",
        facts["HOSTS"]
    );

    assert_eq!(
        fs::read_to_string(runtime_dir.join("hello")).unwrap(),
        "from-plugin\n"
    );
    let vol = prop.join("vol1");
    assert!(
        common::mounts_under(&prop).contains(&vol),
        "the plugin's mount propagated to the host"
    );
    assert_eq!(fs::read_to_string(vol.join("f")).unwrap(), "inside\n");

    Bundle::delete(&bundles, &id).unwrap();
    let unmounted = mounts::cleanup_plugin_mounts(&data, &exec, &id).unwrap();
    assert!(
        unmounted.contains(&vol) && unmounted.contains(&prop),
        "{unmounted:?}"
    );
    assert!(
        common::mounts_under(&base).is_empty(),
        "mounts left: {:?}",
        common::mounts_under(&base)
    );
    assert!(!bundle.path().exists());
}
