//! End-to-end test of the volume service over the real plugin manager (shim, runc and the
//! packaged sample plugin): volumes hold references that block `disable`, references survive a
//! reopen without being taken twice, and volumes of a force-removed plugin stay usable.
//!
//! Needs root, `containerd-shim-runc-v2`, runc and `target/plugin/volume-plugin` (made by
//! `cargo xtask plugin`); `#[ignore]`d for plain `cargo test`, run by `cargo xtask ci`.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};

use plugind_executor::{ExecutorConfig, Runtimes, ShimExecutor};
use plugind_manager::{Manager, ManagerConfig};
use plugind_types::ErrorKind;
use plugind_volumes::{volume::random_name, VolumeConfig, VolumeFilters, VolumeService};

const SHIM: &str = "/usr/bin/containerd-shim-runc-v2";

fn plugin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugin/volume-plugin")
}

/// Panics unless the prerequisites are there: opted-in tests never pass silently.
fn require_prerequisites() {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:\t0\t")),
        "this test needs root"
    );
    for bin in [SHIM, "/usr/sbin/runc"] {
        assert!(
            Path::new(bin).exists(),
            "this test needs {bin} (cargo xtask setup)"
        );
    }
    assert!(
        plugin_dir().join("rootfs/volume-plugin").exists(),
        "the sample plugin is not packaged: run `cargo xtask plugin` first"
    );
}

async fn start_manager(dir: &Path, namespace: &str) -> Manager {
    let mut ec = ExecutorConfig::new(&dir.join("run"), namespace);
    ec.shim_binary = PathBuf::from(SHIM);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let executor = ShimExecutor::new(ec, &Runtimes::runc(), Arc::new(tx))
        .await
        .unwrap();
    let mut config = ManagerConfig::new(&dir.join("root"), &dir.join("run"));
    config.stop_grace = Duration::from_secs(5);
    let (manager, _) = Manager::start(config, Arc::new(executor), rx)
        .await
        .unwrap();
    manager
}

async fn install_sample(manager: &Manager, name: &str) -> String {
    let tar = Command::new("tar")
        .arg("-C")
        .arg(plugin_dir())
        .args(["-cf", "-", "config.json", "rootfs"])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let id = manager
        .create(name, Box::new(std::io::Cursor::new(tar.stdout)))
        .await
        .unwrap();
    manager.enable(name, None).await.unwrap();
    id.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, runc, containerd-shim-runc-v2 and the packaged sample plugin"]
async fn volumes_hold_references_on_real_plugins() {
    require_prerequisites();
    // Short paths under /tmp: socket addresses must fit in 107 bytes.
    let dir = tempfile::Builder::new()
        .prefix("pv")
        .tempdir_in("/tmp")
        .unwrap();
    let namespace = format!("plugind-vt-{}", &random_name()[..8]);
    let manager = start_manager(dir.path(), &namespace).await;
    let id = install_sample(&manager, "sample/vol").await;
    let root = dir.path().join("root");
    let config = VolumeConfig::uniform(Duration::from_secs(10));
    let service = VolumeService::open(&root, Arc::new(manager.clone()), config)
        .await
        .unwrap();

    let v = service
        .create(Some("v1"), "sample/vol", BTreeMap::new(), BTreeMap::new())
        .await
        .unwrap();
    assert_eq!(v.driver, "sample/vol:latest");
    assert_eq!(v.scope, "local");
    let host_dir = root.join(&id).join("propagated-mount/volumes/v1");
    assert!(host_dir.is_dir(), "{} missing", host_dir.display());
    let got = service.get("v1").await.unwrap();
    // The driver's path inside the plugin, as Docker reports it for inspect.
    assert_eq!(got.mountpoint, "/data/volumes/v1");
    assert_eq!(got.status.unwrap()["mounts"], 0);
    assert_eq!(service.mount("v1", "c1").await.unwrap(), "/data/volumes/v1");
    service.unmount("v1", "c1").await.unwrap();

    let err = manager.disable("sample/vol", false).await.unwrap_err();
    assert_eq!(err.to_string(), "plugin sample/vol:latest is in use");

    // Reopen: the volume is back, and its single reference was not taken again.
    drop(service);
    let service = VolumeService::open(&root, Arc::new(manager.clone()), config)
        .await
        .unwrap();
    assert_eq!(service.open_report().loaded, ["v1"]);
    let refs = manager.inspect("sample/vol").unwrap().record.ref_count();
    assert_eq!(refs, 1);
    service.remove("v1", false).await.unwrap();
    assert!(!host_dir.exists());
    assert_eq!(manager.inspect("sample/vol").unwrap().record.ref_count(), 0);

    // Lookups of a missing driver use Docker's text.
    let err = service
        .create(Some("v9"), "nope", BTreeMap::new(), BTreeMap::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        err.to_string(),
        "create v9: error looking up volume plugin nope: plugin \"nope\" not found"
    );

    // `docker plugin rm -f` of a plugin with a volume: the volume stays listed, inspect
    // answers from the record, remove succeeds.
    service
        .create(Some("v2"), "sample/vol", BTreeMap::new(), BTreeMap::new())
        .await
        .unwrap();
    manager.remove("sample/vol", true).await.unwrap();
    let (vols, warnings) = service.list(&VolumeFilters::default()).await.unwrap();
    assert_eq!(vols.len(), 1);
    assert!(warnings.is_empty(), "{warnings:?}");
    let orphan = service.get("v2").await.unwrap();
    let status = orphan.status.unwrap();
    assert!(
        status["Error"].as_str().unwrap().contains("not found"),
        "{status:?}"
    );
    service.remove("v2", false).await.unwrap();
    assert!(service
        .list(&VolumeFilters::default())
        .await
        .unwrap()
        .0
        .is_empty());

    manager.shutdown().await;
}
