//! Unit tests of pulls and upgrades: names, carried settings, repair of cut upgrades.

use super::*;

fn config(json: &str) -> PluginConfig {
    PluginConfig::from_json(json.as_bytes()).unwrap()
}

#[test]
fn pull_names_follow_docker() {
    let n = PullNames::parse("127.0.0.1:5000/acme/sample:1.0", "").unwrap();
    assert_eq!(n.local, "127.0.0.1:5000/acme/sample:1.0");
    assert_eq!(n.plugin_reference(), "127.0.0.1:5000/acme/sample:1.0");
    let n = PullNames::parse("vieux/sshfs", "x").unwrap();
    assert_eq!(n.local, "x:latest");
    assert_eq!(n.plugin_reference(), "docker.io/vieux/sshfs:latest");
    assert_eq!(n.plugin_reference_for_event(), "vieux/sshfs:latest");
    let hex = "a".repeat(64);
    let n = PullNames::parse(&format!("acme/s:2.0@sha256:{hex}"), "").unwrap();
    assert_eq!(n.local, "acme/s:2.0");
    assert_eq!(
        n.plugin_reference(),
        format!("docker.io/acme/s@sha256:{hex}")
    );
    let n = PullNames::parse(&format!("acme/s@sha256:{hex}"), "").unwrap();
    assert_eq!(n.local, "acme/s:latest");
    let err = |r: &str, n: &str| PullNames::parse(r, n).unwrap_err().to_string();
    assert_eq!(err("", ""), "invalid reference format");
    assert_eq!(
        err("Acme/x", ""),
        "invalid reference format: repository name must be lowercase"
    );
    assert_eq!(
        err("acme/x", &format!("a@sha256:{hex}")),
        "cannot use digest in plugin tag"
    );
}

#[test]
fn upgrade_keeps_the_settings_the_new_config_still_declares() {
    let new = config(
        r#"{"Env":[{"Name":"DEBUG","Value":"0","Settable":["value"]},{"Name":"NEW","Value":"n"}],
        "Mounts":[{"Name":"data","Source":"/new","Destination":"/d","Settable":["source"]}],
        "Args":{"Name":"args","Settable":["value"],"Value":["--new"]}}"#,
    );
    let old = PluginSettings {
        env: vec!["DEBUG=1".into(), "GONE=x".into()],
        mounts: vec![plugind_types::config::PluginMount {
            name: "data".into(),
            source: Some("/kept".into()),
            ..Default::default()
        }],
        args: vec!["-a".into()],
        devices: Vec::new(),
    };
    let s = carry_settings(&old, &new);
    assert_eq!(s.env, ["DEBUG=1", "NEW=n"]);
    assert_eq!(s.mounts[0].source.as_deref(), Some("/kept"));
    assert_eq!(s.mounts[0].destination, "/d");
    assert_eq!(s.args, ["-a"]);
    let no_args = config(r#"{"Args":{"Value":["--fixed"]}}"#);
    assert_eq!(carry_settings(&old, &no_args).args, ["--fixed"]);
}

/// An upgrade cut after the old rootfs moved aside: rolled back when the record still
/// names the old config, finished when it names the new one.
#[test]
fn repair_finishes_or_rolls_back_a_cut_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let mut digests = Vec::new();
    for n in 0..2u8 {
        let id = PluginId::from_bytes([n + 1; 32]);
        let mut r = PluginRecord::new(
            id.clone(),
            format!("p{n}:latest"),
            config("{}"),
            String::new(),
            SystemTime::now(),
        );
        let old = Digest::from_sha256_bytes([9; 32]);
        r.state.blobs.config = Some(if n == 0 {
            old.clone()
        } else {
            Digest::from_sha256_bytes([8; 32])
        });
        fs::create_dir_all(store.plugin_dir(&id)).unwrap();
        store.add(r).unwrap();
        let previous = store
            .plugin_dir(&id)
            .join(format!("{PREVIOUS_ROOTFS}{}", old.hex()));
        fs::create_dir_all(previous.join("old")).unwrap();
        fs::create_dir_all(store.rootfs_dir(&id).join("new")).unwrap();
        digests.push((id, previous));
    }
    repair_upgrades(&store);
    // p0: the record names the old config: the old rootfs is back.
    let (id, previous) = &digests[0];
    assert!(store.rootfs_dir(id).join("old").exists());
    assert!(!store.rootfs_dir(id).join("new").exists());
    assert!(!previous.exists());
    // p1: the record names another config: the upgrade committed.
    let (id, previous) = &digests[1];
    assert!(store.rootfs_dir(id).join("new").exists());
    assert!(!previous.exists());
}
