//! Public-API tests of `Store`: reload of hand-made roots, Docker's lookup rules, name
//! uniqueness, persistence and removal.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use plugind_store::{apply_settings, PluginRecord, RunState, SetError, Store, StoreError};
use plugind_types::{config::PluginConfig, ErrorKind, PluginId};

fn id(prefix: &str) -> PluginId {
    let hex = format!("{prefix}{}", "0".repeat(64 - prefix.len()));
    PluginId::parse(&hex).expect("test id")
}

fn record(id: &PluginId, name: &str) -> PluginRecord {
    let config = PluginConfig::from_json(
        br#"{"Description":"test","Entrypoint":["/plugin"],
        "Interface":{"Socket":"p.sock","Types":["docker.volumedriver/1.0"]},
        "Env":[{"Name":"DEBUG","Value":"0","Settable":["value"]}]}"#,
    )
    .expect("config");
    PluginRecord::new(
        id.clone(),
        name.to_owned(),
        config,
        name.to_owned(),
        UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    )
}

fn open(root: &Path) -> Store {
    Store::open(root).expect("open").0
}

fn write_record(root: &Path, dir: &str, rec: &PluginRecord) {
    fs::create_dir_all(root.join(dir).join("rootfs")).unwrap();
    fs::write(root.join(dir).join("config.json"), rec.to_json().unwrap()).unwrap();
}

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
}

#[test]
fn reload_loads_good_records_finishes_removals_and_quarantines_bad_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let good = id("a1");
    write_record(root, good.as_str(), &record(&good, "test/vol:latest"));
    let temp = root.join(good.as_str()).join(".config.json.tmp-4242-7");
    fs::write(&temp, b"half").unwrap();
    // A removal interrupted after the rename.
    let removing = root.join(format!("{}-removing", id("b2")));
    fs::create_dir_all(removing.join("rootfs/bin")).unwrap();
    fs::write(removing.join("rootfs/bin/x"), b"x").unwrap();
    // Corrupt JSON.
    let corrupt = id("c3");
    fs::create_dir_all(root.join(corrupt.as_str())).unwrap();
    fs::write(
        root.join(corrupt.as_str()).join("config.json"),
        b"{not json",
    )
    .unwrap();
    // A record whose Id is not its directory's.
    let moved = id("d4");
    write_record(root, moved.as_str(), &record(&id("d5"), "other:latest"));
    // An install interrupted before its record: the plugin never existed; deleted, not
    // quarantined (quarantining it would pile up one rootfs per killed create).
    let incomplete = root.join(id("e6").as_str());
    fs::create_dir_all(incomplete.join("rootfs/bin")).unwrap();
    fs::write(incomplete.join("rootfs/bin/x"), b"x").unwrap();
    // A second record with a name already loaded.
    let dup = id("f7");
    write_record(root, dup.as_str(), &record(&dup, "test/vol:latest"));
    // A record from a newer plugind: left where it is.
    let newer = id("99");
    let mut v: serde_json::Value =
        serde_json::from_slice(&record(&newer, "newer:latest").to_json().unwrap()).unwrap();
    v["plugind"]["version"] = 99.into();
    fs::create_dir_all(root.join(newer.as_str())).unwrap();
    fs::write(root.join(newer.as_str()).join("config.json"), v.to_string()).unwrap();
    // Other content of the root is not the store's.
    fs::create_dir_all(root.join("storage/blobs")).unwrap();
    fs::write(root.join("notes-removing"), b"x").unwrap();

    let (store, report) = Store::open(root).expect("a bad record must not stop the store");

    assert_eq!(report.loaded, std::slice::from_ref(&good));
    assert_eq!(
        store
            .list()
            .iter()
            .map(|r| r.id().clone())
            .collect::<Vec<_>>(),
        std::slice::from_ref(&good)
    );
    assert_eq!(store.get(&good).unwrap(), record(&good, "test/vol:latest"));
    assert_eq!(report.temp_files_removed, std::slice::from_ref(&temp));
    assert!(!temp.exists());
    assert_eq!(report.removals_finished, std::slice::from_ref(&removing));
    assert!(!removing.exists());

    let mut quarantined: Vec<(String, &StoreError)> = report
        .quarantined
        .iter()
        .map(|q| {
            (
                q.dir.file_name().unwrap().to_str().unwrap()[..2].to_owned(),
                &q.reason,
            )
        })
        .collect();
    quarantined.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(quarantined.len(), 3, "{:?}", report.quarantined);
    assert!(matches!(quarantined[0], (ref p, StoreError::Decode { .. }) if p == "c3"));
    assert!(matches!(quarantined[1], (ref p, StoreError::IdMismatch { .. }) if p == "d4"));
    assert!(matches!(quarantined[2], (ref p, StoreError::BadRecordName { .. }) if p == "f7"));
    assert_eq!(report.incomplete_removed, std::slice::from_ref(&incomplete));
    assert!(!incomplete.exists());
    assert_eq!(store.quarantined().len(), 3, "quarantines are listed");
    for q in &report.quarantined {
        assert!(!q.dir.exists());
        assert_eq!(q.moved_to.parent().unwrap(), root.join("quarantine"));
        let name = q.moved_to.file_name().unwrap().to_str().unwrap();
        let (dir_name, secs) = name.rsplit_once('-').unwrap();
        assert_eq!(dir_name, q.dir.file_name().unwrap().to_str().unwrap());
        assert!(secs.parse::<u64>().unwrap() > 1_700_000_000);
    }
    assert!(
        report
            .quarantined
            .iter()
            .any(|q| q.moved_to.join("config.json").exists()),
        "content moved, not deleted"
    );

    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert!(matches!(
        report.failures[0],
        StoreError::NewerFormat { version: 99, .. }
    ));
    assert!(root.join(newer.as_str()).join("config.json").exists());
    assert!(root.join("storage/blobs").is_dir() && root.join("notes-removing").exists());

    // A second open finds a clean root.
    let (_, again) = Store::open(root).unwrap();
    assert_eq!(again.loaded, [good]);
    assert!(
        again.quarantined.is_empty()
            && again.removals_finished.is_empty()
            && again.temp_files_removed.is_empty()
    );
}

#[test]
fn open_creates_a_missing_root() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("a/b");
    let (store, report) = Store::open(&root).unwrap();
    assert!(root.is_dir() && report.loaded.is_empty() && store.list().is_empty());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&root).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

#[test]
fn resolve_follows_dockers_lookup_order() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let vol = id("3fa4");
    let lower = id("e521");
    // A plugin whose name looks like a prefix of another plugin's id.
    let named_like_prefix = id("77");
    let abc = id("abc");
    store.add(record(&vol, "test/vol:latest")).unwrap();
    store.add(record(&lower, "t/lower:latest")).unwrap();
    store.add(record(&abc, "x/y:latest")).unwrap();
    store.add(record(&named_like_prefix, "abc:latest")).unwrap();
    let found = |input: &str| store.resolve(input).map(|r| r.id().clone());

    for input in [
        "test/vol",
        "test/vol:latest",
        "docker.io/test/vol:latest",
        "docker.io/test/vol",
        vol.as_str(),
        "3fa4",
        "3",
    ] {
        assert_eq!(found(input).unwrap(), vol, "{input}");
    }
    assert_eq!(
        found("abc").unwrap(),
        named_like_prefix,
        "the name wins over the id prefix"
    );
    assert_eq!(found("abc0").unwrap(), abc, "not a name, so an id prefix");
    assert_eq!(found("t/lower").unwrap(), lower);

    let e = found("TEST/vol").unwrap_err();
    assert_eq!(e.to_string(), r#"plugin "TEST/vol" not found"#);
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.is_not_found());
    for missing in [
        "t/lower:other",
        "nope",
        "",
        id("ff").as_str(),
        "3fa4:latest",
    ] {
        assert!(
            matches!(found(missing), Err(StoreError::NotFound { input }) if input == missing),
            "{missing:?}"
        );
    }
    let by_digest = format!("test/vol@sha256:{}", "a".repeat(64));
    assert!(
        found(&by_digest).unwrap_err().is_not_found(),
        "digest references are never resolved"
    );

    let store2 = open(&tmp.path().join("two"));
    store2.add(record(&id("ab1"), "one:latest")).unwrap();
    store2.add(record(&id("ab2"), "two:latest")).unwrap();
    let e = store2.resolve("ab").unwrap_err();
    assert_eq!(e.to_string(), r#"multiple plugins found for "ab""#);
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_eq!(store2.resolve("ab2").unwrap().name(), "two:latest");
}

#[test]
fn add_enforces_unique_ids_and_canonical_unique_names() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let a = id("a");
    store.add(record(&a, "test/vol:latest")).unwrap();
    assert!(store.record_path(&a).is_file());

    let e = store.add(record(&id("b"), "test/vol:latest")).unwrap_err();
    assert_eq!(e.to_string(), "plugin test/vol:latest already exists");
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert!(!store.plugin_dir(&id("b")).exists(), "nothing left behind");

    let e = store.add(record(&a, "other:latest")).unwrap_err();
    assert!(matches!(e, StoreError::IdExists { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);

    for (bad, kind) in [
        ("test/vol", ErrorKind::InvalidArgument),
        ("docker.io/x/y:1", ErrorKind::InvalidArgument),
        ("BAD:latest", ErrorKind::InvalidArgument),
    ] {
        let e = store.add(record(&id("c"), bad)).unwrap_err();
        assert_eq!(e.kind(), kind, "{bad}: {e}");
    }
    let e = store.add(record(&id("c"), "test/vol")).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"plugin name "test/vol" is not canonical: expected "test/vol:latest""#
    );
    assert_eq!(store.list().len(), 1);
}

#[test]
fn updates_persist_and_survive_reopen_and_renames_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let a = id("a");
    let b = id("b");
    store.add(record(&a, "a:latest")).unwrap();
    store.add(record(&b, "b:latest")).unwrap();

    let updated = store
        .update(&a, |r| {
            r.plugin.enabled = true;
            r.state.observed.state = RunState::Failed {
                reason: "exec: no such file".into(),
            };
            r.acquire("volume:v");
        })
        .unwrap();
    assert_eq!(store.get(&a).unwrap(), updated);

    let e = store
        .update(&a, |r| r.plugin.name = "b:latest".into())
        .unwrap_err();
    assert_eq!(e.to_string(), "plugin b:latest already exists");
    assert_eq!(store.get(&a).unwrap(), updated);
    let e = store.update(&a, |r| r.plugin.id = b.clone()).unwrap_err();
    assert!(matches!(e, StoreError::IdChanged { .. }));
    store.update(&a, |r| r.plugin.name = "c:v1".into()).unwrap();
    assert_eq!(store.resolve("c:v1").unwrap().id(), &a);
    assert!(
        store.resolve("a:latest").unwrap_err().is_not_found(),
        "the old name is gone"
    );

    let reopened = open(tmp.path());
    let r = reopened.get(&a).unwrap();
    assert!(
        r.desired_enabled(),
        "desired state kept apart from the failed observation"
    );
    assert_eq!(
        r.state.observed.state,
        RunState::Failed {
            reason: "exec: no such file".into()
        }
    );
    assert_eq!(r.ref_count(), 1);
    assert_eq!(r.name(), "c:v1");
    assert!(store.update(&id("ee"), |_| {}).unwrap_err().is_not_found());
}

#[test]
fn set_through_try_update_is_atomic_and_refuses_active_plugins() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let a = id("a");
    store.add(record(&a, "a:latest")).unwrap();
    let set = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        store.try_update(&a, |r| {
            if r.plugin.enabled {
                return Err(StoreError::from(SetError::ActivePlugin));
            }
            apply_settings(&mut r.plugin.config, &mut r.plugin.settings, &args)
                .map_err(StoreError::from)
        })
    };
    assert_eq!(set(&["DEBUG=1"]).unwrap().plugin.settings.env, ["DEBUG=1"]);
    let e = set(&["DEBUG=2", "nope=1"]).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"setting "nope" not found in the plugin configuration"#
    );
    assert_eq!(
        open(tmp.path()).get(&a).unwrap().plugin.settings.env,
        ["DEBUG=1"],
        "nothing persisted"
    );
    store.update(&a, |r| r.plugin.enabled = true).unwrap();
    let e = set(&["DEBUG=3"]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot set on an active plugin, disable plugin before setting"
    );
}

#[test]
fn failed_persistence_leaves_the_memory_copy_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let a = id("a");
    store.add(record(&a, "a:latest")).unwrap();
    // Take the directory away so the atomic write cannot create its temp file.
    fs::remove_dir_all(store.plugin_dir(&a)).unwrap();
    let e = store.update(&a, |r| r.plugin.enabled = true).unwrap_err();
    assert!(matches!(e, StoreError::Persist { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::Internal);
    assert!(!store.get(&a).unwrap().desired_enabled());
}

#[test]
fn unchanged_updates_do_not_rewrite_the_record() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let a = id("a");
    store.add(record(&a, "a:latest")).unwrap();
    fs::write(store.record_path(&a), b"sentinel").unwrap();
    store.update(&a, |_| {}).unwrap();
    assert_eq!(fs::read(store.record_path(&a)).unwrap(), b"sentinel");
}

#[test]
fn removal_is_two_steps_and_survives_a_crash_in_between() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let a = id("a");
    let b = id("b");
    store.add(record(&a, "a:latest")).unwrap();
    store.add(record(&b, "b:latest")).unwrap();
    fs::create_dir_all(store.rootfs_dir(&a).join("bin")).unwrap();
    fs::write(store.rootfs_dir(&a).join("bin/x"), b"x").unwrap();
    assert_eq!(
        store.propagated_mount_dir(&a),
        tmp.path().join(a.as_str()).join("propagated-mount")
    );

    let path = store.begin_remove(&a).unwrap();
    assert_eq!(path, tmp.path().join(format!("{a}-removing")));
    assert!(path.join("rootfs/bin/x").exists() && !store.plugin_dir(&a).exists());
    assert!(store.get(&a).is_none());
    assert!(store.resolve("a:latest").unwrap_err().is_not_found());
    assert!(store.begin_remove(&a).unwrap_err().is_not_found());
    assert!(store.update(&a, |_| {}).unwrap_err().is_not_found());
    // The name is free again.
    store.add(record(&id("c"), "a:latest")).unwrap();

    let e = store.finish_remove(&store.plugin_dir(&b)).unwrap_err();
    assert!(matches!(e, StoreError::NotRemoving { .. }));
    assert!(store.finish_remove(Path::new("/tmp/x-removing")).is_err());
    assert!(store.plugin_dir(&b).exists());

    // Crash here: the next open finishes the removal.
    let (reopened, report) = Store::open(tmp.path()).unwrap();
    assert_eq!(report.removals_finished, std::slice::from_ref(&path));
    assert!(!path.exists());
    assert_eq!(reopened.list().len(), 2);

    let path_b = reopened.begin_remove(&b).unwrap();
    reopened.finish_remove(&path_b).unwrap();
    assert!(!path_b.exists());
    reopened.finish_remove(&path_b).unwrap();
}

/// A `<id>-removing` left by an earlier removal of the same id (killed, or blocked by a mount
/// then) made the next `plugin rm` fail with 500: it is now removed first.
#[test]
fn a_stale_removing_directory_does_not_block_removal() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let a = id("a");
    store.add(record(&a, "a:latest")).unwrap();
    let stale = tmp.path().join(format!("{a}-removing"));
    fs::create_dir_all(stale.join("rootfs/old/deep")).unwrap();
    fs::write(stale.join("rootfs/old/deep/f"), b"old").unwrap();
    fs::create_dir_all(store.rootfs_dir(&a).join("bin")).unwrap();
    fs::write(store.rootfs_dir(&a).join("bin/x"), b"new").unwrap();

    let path = store.begin_remove(&a).unwrap();
    assert_eq!(path, stale);
    assert!(path.join("rootfs/bin/x").exists(), "the new tree was moved");
    assert!(
        !path.join("rootfs/old").exists(),
        "the stale tree went first"
    );
    store.finish_remove(&path).unwrap();
    assert!(!path.exists() && !store.plugin_dir(&a).exists());
}

#[test]
fn concurrent_updates_are_all_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(open(tmp.path()));
    let ids: Vec<PluginId> = (1..=4).map(|i| id(&format!("{i}"))).collect();
    for (i, pid) in ids.iter().enumerate() {
        store.add(record(pid, &format!("p{i}:latest"))).unwrap();
    }
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            let pid = ids[t % ids.len()].clone();
            std::thread::spawn(move || {
                for _ in 0..10 {
                    store
                        .update(&pid, |r| r.state.observed.restart_count += 1)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let reopened = open(tmp.path());
    for pid in &ids {
        assert_eq!(store.get(pid).unwrap().state.observed.restart_count, 20);
        assert_eq!(reopened.get(pid).unwrap().state.observed.restart_count, 20);
    }
}

/// Panics unless running as root with `mount`/`umount` available.
fn require_root_and_mount() {
    let uid = fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned())
    });
    assert_eq!(
        uid.as_deref(),
        Some("0"),
        "this test needs root (it mounts a tmpfs)"
    );
    for bin in ["mount", "umount"] {
        let ok = std::process::Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(ok, "this test needs the `{bin}` binary");
    }
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
#[ignore = "needs root and mount(8)"]
fn removal_never_deletes_through_a_mount() {
    require_root_and_mount();
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let a = id("a");
    store.add(record(&a, "a:latest")).unwrap();
    let mnt = store.propagated_mount_dir(&a).join("vol");
    fs::create_dir_all(&mnt).unwrap();
    let path = store.begin_remove(&a).unwrap();
    let mnt = path.join("propagated-mount/vol");
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs");
    let guard = Unmount(mnt.clone());
    fs::write(mnt.join("user-data"), b"precious").unwrap();

    let e = store.finish_remove(&path).unwrap_err();
    assert!(
        matches!(&e, StoreError::Busy { mounts, .. } if mounts == &[mnt.canonicalize().unwrap()]),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(fs::read(mnt.join("user-data")).unwrap(), b"precious");

    let (_, report) = Store::open(tmp.path()).expect("open must not fail on a busy removal");
    assert!(
        matches!(report.failures.as_slice(), [StoreError::Busy { .. }]),
        "{:?}",
        report.failures
    );
    assert!(report.removals_finished.is_empty());
    assert_eq!(fs::read(mnt.join("user-data")).unwrap(), b"precious");

    drop(guard);
    store.finish_remove(&path).unwrap();
    assert!(!path.exists());
}

#[test]
fn quarantine_is_bounded_oldest_and_expired_entries_go_first() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let q = root.join("quarantine");
    fs::create_dir_all(&q).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // One entry far too old, and more recent ones than the cap allows.
    let expired = q.join(format!("{}-{}", id("aa"), now - 400 * 24 * 3600));
    fs::create_dir_all(expired.join("rootfs")).unwrap();
    let total = plugind_store::QUARANTINE_MAX_ENTRIES + 3;
    let recent: Vec<_> = (0..total)
        .map(|n| {
            let p = q.join(format!("{}-{}", id("bb"), now - 1000 + n as u64));
            fs::create_dir_all(p.join("rootfs")).unwrap();
            p
        })
        .collect();

    let (store, report) = Store::open(root).unwrap();

    let kept = store.quarantined();
    assert_eq!(kept.len(), plugind_store::QUARANTINE_MAX_ENTRIES);
    assert_eq!(kept, recent[3..].to_vec(), "the newest entries are kept");
    assert!(!expired.exists());
    assert_eq!(report.quarantine_pruned.len(), 4);
}
