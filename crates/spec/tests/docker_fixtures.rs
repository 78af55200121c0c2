//! Generated specs compared with the specs Docker 20.10 generated for the same plugin config and
//! settings (tests/fixtures, copied from the shared fixtures; README.md there explains each).
//!
//! Host-specific inputs are substituted rather than ignored: each fixture is built with its own
//! plugin id and Docker's data root (`/var/lib/docker/plugins/<id>/rootfs`,
//! `.../propagated-mount`) and runtime dir (`/run/docker/plugins/<id>`), and the device facts
//! are those of `/dev/null`, fixed at `c 1:3 0666 root:root` on Linux.
//!
//! The one representational difference: oci-spec models capability sets as `HashSet`s, so their
//! JSON order is not Docker's; runtimes treat them as sets, and the comparison sorts them.

use std::path::{Path, PathBuf};

use plugind_spec::{build, DeviceKind, HostDevice, HostFacts, SpecInput};
use plugind_types::{
    config::{PluginConfig, PluginSettings},
    PluginId,
};
use serde_json::Value;

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn dev_null() -> HostDevice {
    HostDevice {
        path: PathBuf::from("/dev/null"),
        kind: DeviceKind::Char,
        major: 1,
        minor: 3,
        file_mode: 0o666,
        uid: 0,
        gid: 0,
    }
}

/// Sorts every capability list so that set order does not matter.
fn normalise(mut v: Value) -> Value {
    if let Some(caps) = v
        .pointer_mut("/process/capabilities")
        .and_then(Value::as_object_mut)
    {
        for list in caps.values_mut() {
            if let Some(items) = list.as_array_mut() {
                items.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    v
}

/// Builds our spec for a fixture and returns (ours, Docker's) as normalised JSON values.
fn generate(name: &str, id: &str) -> (Value, Value) {
    let dir = fixture_dir(name);
    let config =
        PluginConfig::from_json(&std::fs::read(dir.join("plugin-config.json")).unwrap()).unwrap();
    let settings: PluginSettings =
        serde_json::from_slice(&std::fs::read(dir.join("settings.json")).unwrap()).unwrap();
    let docker: Value =
        serde_json::from_slice(&std::fs::read(dir.join("oci-spec.json")).unwrap()).unwrap();
    let id = PluginId::parse(id).unwrap();
    let plugin_dir = PathBuf::from(format!("/var/lib/docker/plugins/{id}"));
    let runtime_dir = PathBuf::from(format!("/run/docker/plugins/{id}"));
    let host = HostFacts::plain();
    let devices = [dev_null()];
    let spec = build(&SpecInput {
        id: &id,
        config: &config,
        settings: &settings,
        rootfs: &plugin_dir.join("rootfs"),
        runtime_dir: &runtime_dir,
        propagated_mount_source: &plugin_dir.join("propagated-mount"),
        devices: &devices,
        host: &host,
    })
    .unwrap();
    (
        normalise(serde_json::to_value(&spec).unwrap()),
        normalise(docker),
    )
}

#[test]
fn basic_equals_docker() {
    let (ours, docker) = generate(
        "basic",
        "6e0b1aec24767833a5e9a45817ce4eca9e528b40449490511806247bd34227c6",
    );
    assert_eq!(ours, docker);
}

#[test]
fn isolated_equals_docker() {
    let (ours, docker) = generate(
        "isolated",
        "3337eb651be35f49678d7a6bff1c86fe609913c0f90c5cbf8aaa7c7cee896d3f",
    );
    assert_eq!(ours, docker);
}

#[test]
fn hostns_equals_docker() {
    let (ours, docker) = generate(
        "hostns",
        "2c2b838c218a8684b5b374f1f7953ab812382b8ad3a72fec670f4be4f955b777",
    );
    assert_eq!(ours, docker);
}

#[test]
fn allow_all_devices_equals_docker() {
    let (ours, docker) = generate(
        "allow-all-devices",
        "344f6f00a0b6b9090f9d904986cc1d7db7b59d00331fef546db46cb796ea522b",
    );
    assert_eq!(ours, docker);
}

#[test]
fn dev_shm_override_equals_docker() {
    let (ours, docker) = generate(
        "dev-shm-override",
        "7e81de9a93d4ebe42ac1d45154bb28e891f8cb16d4493ff250ec18be09a801d2",
    );
    assert_eq!(ours, docker);
}

/// Deliberate difference: Docker's override pass deletes from the mount list while iterating it
/// and so also drops the plugin's own `/dev/shm` mount; ours keeps it (the plugin's mount
/// replaces the default one, which is the intent). Everything else is equal.
#[test]
fn devices_mounts_differs_from_docker_only_by_the_kept_dev_shm_mount() {
    let (mut ours, docker) = generate(
        "devices-mounts",
        "96df5153edb79779c1e1994f99df7220e8661f19f65fba1f9e344c2ef46d72ba",
    );
    let mounts = ours["mounts"].as_array_mut().unwrap();
    let shm: Vec<usize> = mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| m["destination"] == "/dev/shm")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(shm.len(), 1, "exactly one /dev/shm mount: the plugin's");
    let kept = mounts.remove(shm[0]);
    assert_eq!(
        kept,
        serde_json::json!({"destination": "/dev/shm", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "noexec", "mode=1777", "size=8m"]})
    );
    // It sits where the config put it: after /mnt/src, before /run/docker/plugins.
    assert_eq!(mounts[shm[0] - 1]["destination"], "/mnt/src");
    assert_eq!(mounts[shm[0]]["destination"], "/run/docker/plugins");
    assert_eq!(ours, docker);
}
