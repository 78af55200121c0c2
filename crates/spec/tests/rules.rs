//! One test per `InitSpec` rule that the Docker fixtures do not pin down (errors, `rro`,
//! user namespaces, override of several `/dev/` mounts, network and namespace variants).

use std::path::{Path, PathBuf};

use plugind_spec::{
    build, oci_spec::runtime::Spec, parse_capability, HostDevice, HostFacts, SpecError, SpecInput,
};
use plugind_types::{
    config::{PluginConfig, PluginDevice, PluginMount, PluginSettings},
    ErrorKind, PluginId,
};
use serde_json::{json, Value};

fn id() -> PluginId {
    PluginId::parse(&"ab".repeat(32)).unwrap()
}

fn try_build(
    config: &PluginConfig,
    settings: &PluginSettings,
    devices: &[HostDevice],
    host: &HostFacts<'_>,
) -> Result<Spec, SpecError> {
    let id = id();
    build(&SpecInput {
        id: &id,
        config,
        settings,
        rootfs: Path::new("/r/rootfs"),
        runtime_dir: Path::new("/x/plugins/p"),
        propagated_mount_source: Path::new("/r/propagated-mount"),
        devices,
        host,
    })
}

fn json_of(config: &PluginConfig, settings: &PluginSettings, host: &HostFacts<'_>) -> Value {
    serde_json::to_value(try_build(config, settings, &[], host).unwrap()).unwrap()
}

fn config(json: &str) -> PluginConfig {
    PluginConfig::from_json(json.as_bytes()).unwrap()
}

fn mount_options(v: &Value, destination: &str) -> Vec<String> {
    let m = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == destination)
        .unwrap();
    serde_json::from_value(m["options"].clone()).unwrap()
}

fn destinations(v: &Value) -> Vec<String> {
    v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn process_args_cwd_env_and_root() {
    let c = config(r#"{"entrypoint":["/bin/p","-a"],"workdir":""}"#);
    let s = PluginSettings {
        args: vec!["x".into(), "y z".into()],
        env: vec!["A=1".into(), "B=".into()],
        ..Default::default()
    };
    let v = json_of(&c, &s, &HostFacts::plain());
    assert_eq!(v["process"]["args"], json!(["/bin/p", "-a", "x", "y z"]));
    assert_eq!(v["process"]["cwd"], "/");
    assert_eq!(
        v["process"]["env"],
        json!([plugind_spec::DEFAULT_PATH_ENV, "A=1", "B="])
    );
    assert_eq!(
        v["process"].get("terminal"),
        None,
        "no terminal (absent = false)"
    );
    assert_eq!(
        v["root"],
        json!({"path": "/r/rootfs"}),
        "writable root at the rootfs path"
    );
    assert_eq!(
        mount_options(&v, "/run/docker/plugins"),
        ["rbind", "rshared"]
    );
    let rt = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/run/docker/plugins")
        .unwrap();
    assert_eq!(rt["source"], "/x/plugins/p");
}

#[test]
fn mount_without_source_is_a_typed_error() {
    let c =
        config(r#"{"mounts":[{"name":"m","destination":"/m","type":"bind","options":["rbind"]}]}"#);
    let s = PluginSettings::initial(&c);
    let err = try_build(&c, &s, &[], &HostFacts::plain()).unwrap_err();
    assert!(
        matches!(&err, SpecError::MountWithoutSource { destination, .. } if destination == "/m")
    );
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn set_source_comes_from_settings_by_name() {
    let c = config(
        r#"{"mounts":[{"name":"m","destination":"/m","type":"bind","source":"/default","options":["rbind"]}]}"#,
    );
    let mut s = PluginSettings::initial(&c);
    s.mounts[0].source = Some("/chosen".into());
    let v = json_of(&c, &s, &HostFacts::plain());
    let m = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/m")
        .unwrap();
    assert_eq!(m["source"], "/chosen");
}

#[test]
fn devices_need_a_path_and_resolved_facts() {
    let c = PluginConfig::default();
    let dev = |path: Option<&str>| PluginSettings {
        devices: vec![PluginDevice {
            name: "d".into(),
            path: path.map(Into::into),
            ..Default::default()
        }],
        ..Default::default()
    };
    let err = try_build(&c, &dev(None), &[], &HostFacts::plain()).unwrap_err();
    assert!(matches!(err, SpecError::DeviceWithoutPath { ref name, .. } if name == "d"));
    let err = try_build(&c, &dev(Some("/dev/sda")), &[], &HostFacts::plain()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal);
    let blk = HostDevice {
        path: PathBuf::from("/dev/sda"),
        kind: plugind_spec::DeviceKind::Block,
        major: 8,
        minor: 0,
        file_mode: 0o660,
        uid: 0,
        gid: 6,
    };
    let v = serde_json::to_value(
        try_build(&c, &dev(Some("/dev/sda")), &[blk], &HostFacts::plain()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        v["linux"]["devices"],
        json!([{"path":"/dev/sda","type":"b","major":8,"minor":0,"fileMode":0o660,"uid":0,"gid":6}])
    );
    let rules = v["linux"]["resources"]["devices"].as_array().unwrap();
    assert_eq!(rules.len(), 9);
    assert_eq!(
        rules[8],
        json!({"allow":true,"type":"b","major":8,"minor":0,"access":"rwm"})
    );
}

#[test]
fn capabilities_parse_and_unknown_ones_fail() {
    assert_eq!(
        parse_capability("sys_admin"),
        parse_capability("CAP_SYS_ADMIN")
    );
    assert!(parse_capability("CAP_SYS_ADMIN").is_some());
    let c = config(r#"{"linux":{"capabilities":["CAP_NOPE"]}}"#);
    let err = try_build(&c, &PluginSettings::default(), &[], &HostFacts::plain()).unwrap_err();
    assert!(
        matches!(err, SpecError::UnknownCapability { ref capability, .. } if capability == "CAP_NOPE")
    );
    let c = config(r#"{"linux":{"capabilities":["CAP_SYS_ADMIN","CAP_SYS_ADMIN"]}}"#);
    let v = json_of(&c, &PluginSettings::default(), &HostFacts::plain());
    assert_eq!(
        v["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .len(),
        15
    );
    assert_eq!(
        v["process"]["capabilities"]["inheritable"],
        json!(["CAP_SYS_ADMIN"])
    );
}

#[test]
fn rro_only_when_kernel_and_runtime_support_it() {
    let c = config(
        r#"{"network":{"type":"bridge"},
        "mounts":[{"destination":"/m","type":"bind","source":"/s","options":["rbind","ro"]},
                  {"destination":"/n","type":"bind","source":"/s","options":["bind","ro"]}]}"#,
    );
    let s = PluginSettings::initial(&c);
    let runtime = vec!["rbind".to_owned(), "rro".to_owned()];
    let facts = |kernel: bool, rt: &'static [String]| HostFacts {
        kernel_recursive_readonly: kernel,
        runtime_mount_options: rt,
        ..HostFacts::plain()
    };
    let rt: &'static [String] = Box::leak(runtime.into_boxed_slice());
    let both = json_of(&c, &s, &facts(true, rt));
    assert_eq!(mount_options(&both, "/etc/hosts"), ["rbind", "rro"]);
    assert_eq!(mount_options(&both, "/etc/resolv.conf"), ["rbind", "rro"]);
    assert_eq!(mount_options(&both, "/m"), ["rbind", "rro"]);
    assert_eq!(
        mount_options(&both, "/n"),
        ["bind", "ro"],
        "a non-recursive bind has nothing below it"
    );
    assert_eq!(
        mount_options(&both, "/sys"),
        ["nosuid", "noexec", "nodev", "ro"],
        "not a bind"
    );
    for v in [
        json_of(&c, &s, &facts(false, rt)),
        json_of(&c, &s, &facts(true, &[])),
    ] {
        assert_eq!(mount_options(&v, "/etc/hosts"), ["rbind", "ro"]);
        assert_eq!(mount_options(&v, "/m"), ["rbind", "ro"]);
    }
    // bridge keeps the network namespace but still gets the host files.
    let ns: Vec<&str> = both["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert_eq!(ns, ["mount", "network", "uts", "pid", "ipc"]);
}

#[test]
fn user_namespace_binds_keep_locked_flags_of_their_source() {
    let c = config(
        r#"{"propagatedMount":"/data","network":{"type":"host"},
        "mounts":[{"destination":"/m","type":"bind","source":"/s","options":["rbind","ro"]}]}"#,
    );
    let s = PluginSettings::initial(&c);
    let lookup = |p: &Path| -> Option<Vec<String>> {
        match p.to_str()? {
            "/s" => Some(vec!["ro".into(), "nosuid".into(), "nodev".into()]),
            _ => Some(vec!["nosuid".into(), "relatime".into()]),
        }
    };
    let host = HostFacts {
        in_user_namespace: true,
        locked_mount_options: &lookup,
        ..HostFacts::plain()
    };
    let v = json_of(&c, &s, &host);
    assert_eq!(mount_options(&v, "/m"), ["rbind", "ro", "nosuid", "nodev"]);
    assert_eq!(
        mount_options(&v, "/data"),
        ["rbind", "rw", "rshared", "nosuid", "relatime"]
    );
    assert_eq!(
        mount_options(&v, "/etc/hosts"),
        ["rbind", "ro", "nosuid", "relatime"]
    );
    assert_eq!(
        mount_options(&v, "/proc"),
        ["nosuid", "noexec", "nodev"],
        "only binds are affected"
    );

    let unknown = |_: &Path| None;
    let host = HostFacts {
        in_user_namespace: true,
        locked_mount_options: &unknown,
        ..HostFacts::plain()
    };
    let err = try_build(&c, &s, &[], &host).unwrap_err();
    assert!(matches!(err, SpecError::MountFlagsUnknown { .. }));
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
}

/// Two adjacent default /dev mounts overridden at once: moby's in-place deletion would skip the
/// second one; every default with a plugin replacement must go, every plugin mount must stay.
#[test]
fn dev_overrides_replace_each_default_and_keep_plugin_mounts() {
    let tmpfs = |d: &str| PluginMount {
        destination: d.into(),
        r#type: "tmpfs".into(),
        source: Some("tmpfs".into()),
        ..Default::default()
    };
    let c = PluginConfig {
        mounts: Some(vec![tmpfs("/dev/mqueue"), tmpfs("/dev/shm"), tmpfs("/dev")]),
        ..Default::default()
    };
    let v = json_of(&c, &PluginSettings::initial(&c), &HostFacts::plain());
    let d = destinations(&v);
    assert_eq!(
        d,
        [
            "/proc",
            "/dev",
            "/dev/pts",
            "/sys",
            "/sys/fs/cgroup",
            "/dev/mqueue",
            "/dev/shm",
            "/dev",
            "/run/docker/plugins"
        ],
        "defaults /dev/mqueue and /dev/shm replaced; /dev itself is not under /dev/ and stays"
    );
    let plugin_shm = &v["mounts"][6];
    assert_eq!(plugin_shm["source"], "tmpfs");
}

#[test]
fn host_namespaces_are_dropped_one_by_one() {
    for (json, expect) in [
        (
            r#"{"pidhost":true}"#,
            vec!["mount", "network", "uts", "ipc"],
        ),
        (
            r#"{"ipchost":true}"#,
            vec!["mount", "network", "uts", "pid"],
        ),
        (
            r#"{"network":{"type":"host"}}"#,
            vec!["mount", "uts", "pid", "ipc"],
        ),
    ] {
        let v = json_of(
            &config(json),
            &PluginSettings::default(),
            &HostFacts::plain(),
        );
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, expect, "{json}");
    }
}
