//! `plugind_manager::fsck` on a real state root built the way create builds it (layer blob in
//! the blob store, rootfs unpacked from it, record written last), with each kind of object
//! damaged in turn: the report names it, `repair` fixes what the blobs can rebuild and keeps
//! what they cannot, and a second run shows what remains.

use std::{
    fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

use plugind_blobstore::BlobStore;
use plugind_manager::{
    fsck::{self, Depth, FsckError, FsckOptions, FsckReport, Repair, Severity},
    layer::{import_create_tar, unpack_layer, LayerLimits},
    PluginRecord,
};
use plugind_types::{config::PluginConfig, Digest, PluginId};
use sha2::{Digest as _, Sha256};

const CONFIG: &str = r#"{
  "description": "fsck fixture", "documentation": "",
  "entrypoint": ["/bin/tool"],
  "interface": {"types": ["docker.volumedriver/1.0"], "socket": "vol.sock"},
  "network": {"type": ""}
}"#;

/// A root holding one plugin created from a tar with small and large files and a symlink.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    id: PluginId,
    layer: Digest,
}

fn header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

fn add_file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = header(tar::EntryType::Regular, data.len() as u64);
    b.append_data(&mut h, path, data).unwrap();
}

fn add_dir(b: &mut tar::Builder<Vec<u8>>, path: &str) {
    let mut h = header(tar::EntryType::Directory, 0);
    b.append_data(&mut h, path, std::io::empty()).unwrap();
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("tmp")).unwrap();
        let blobs = BlobStore::open(&root.join("storage")).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        add_file(&mut b, "config.json", CONFIG.as_bytes());
        add_dir(&mut b, "rootfs");
        add_dir(&mut b, "rootfs/bin");
        add_file(&mut b, "rootfs/bin/tool", b"#!/bin/sh\necho tool\n");
        add_dir(&mut b, "rootfs/etc");
        add_file(&mut b, "rootfs/etc/conf", b"setting=1\n");
        add_file(&mut b, "rootfs/big.dat", &vec![7u8; 300 * 1024]);
        let mut h = header(tar::EntryType::Symlink, 0);
        b.append_link(&mut h, "rootfs/bin/alias", "tool").unwrap();
        let tar = b.into_inner().unwrap();
        let imported =
            import_create_tar(&blobs, "fixture", &tar[..], &LayerLimits::DEFAULT).unwrap();
        let id = PluginId::from_bytes([0x5a; 32]);
        let plugin_dir = root.join(id.as_str());
        fs::create_dir_all(plugin_dir.join("rootfs")).unwrap();
        unpack_layer(
            &blobs,
            &imported.layer,
            &plugin_dir.join("rootfs"),
            &LayerLimits::DEFAULT,
        )
        .unwrap();
        let mut config = PluginConfig::from_json(&imported.config).unwrap();
        // As Docker writes it for plugins: the gzip blob's digest.
        let diff_id = imported.layer.clone();
        config.rootfs = Some(
            serde_json::from_value(
                serde_json::json!({"type": "layers", "diff_ids": [diff_id.to_string()]}),
            )
            .unwrap(),
        );
        let mut record = PluginRecord::new(
            id.clone(),
            "fixture:latest".to_owned(),
            config,
            String::new(),
            SystemTime::now(),
        );
        record.state.blobs.layers = vec![imported.layer.clone()];
        fs::write(plugin_dir.join("config.json"), record.to_json().unwrap()).unwrap();
        Fixture {
            _dir: dir,
            root,
            id,
            layer: imported.layer,
        }
    }

    fn rootfs(&self) -> PathBuf {
        self.root.join(self.id.as_str()).join("rootfs")
    }

    fn run(&self, repair: bool, full: bool) -> FsckReport {
        fsck::run(&FsckOptions {
            root: self.root.clone(),
            exec_root: None,
            depth: Depth::Full,
            full_rootfs: full,
            repair,
        })
        .unwrap()
    }
}

/// Replaces every `diff_ids` list in `v` with `[digest]`.
fn set_diff_ids(v: &mut serde_json::Value, digest: &Digest) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                if k == "diff_ids" {
                    *x = serde_json::json!([digest.to_string()]);
                } else {
                    set_diff_ids(x, digest);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|x| set_diff_ids(x, digest)),
        _ => {}
    }
}

fn blob_path(root: &Path, d: &Digest) -> PathBuf {
    root.join("storage/blobs/sha256").join(d.hex())
}

fn kinds(report: &FsckReport) -> Vec<&'static str> {
    report.findings.iter().map(|f| f.kind).collect()
}

fn problems(report: &FsckReport) -> Vec<&'static str> {
    report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Problem)
        .map(|f| f.kind)
        .collect()
}

#[test]
fn a_root_as_create_leaves_it_is_clean() {
    let f = Fixture::new();
    let report = f.run(false, true);
    assert_eq!(problems(&report), Vec::<&str>::new(), "{report:#?}");
    assert_eq!(report.checked.records, 1);
    assert_eq!(report.checked.blobs, 1);
    // bin, bin/tool, etc, etc/conf, big.dat, bin/alias
    assert_eq!(report.checked.rootfs_entries, 6);
    assert_eq!(report.checked.rootfs_contents, 3);
    assert_eq!(report.remaining(), 0);
    // Sampled: the small files' contents at least.
    assert!(f.run(false, false).checked.rootfs_contents >= 2);
}

#[test]
fn an_unreadable_record_is_reported_and_never_deleted() {
    let f = Fixture::new();
    let record = f.root.join(f.id.as_str()).join("config.json");
    fs::write(&record, b"{not json").unwrap();
    let report = f.run(true, false);
    // Its layer blob is no readable record's, but the unreadable one may name it: kept.
    assert_eq!(
        problems(&report),
        ["record-unreadable", "orphan-blob"],
        "{report:#?}"
    );
    assert!(
        matches!(&report.findings[1].repair, Some(Repair::NotRepaired(why)) if why.contains("kept")),
        "{report:#?}"
    );
    let finding = &report.findings[0];
    assert!(
        matches!(&finding.repair, Some(Repair::NotRepaired(why)) if why.contains("cannot be rebuilt")),
        "{finding:?}"
    );
    assert_eq!(fs::read(&record).unwrap(), b"{not json");
    assert!(blob_path(&f.root, &f.layer).exists());
    assert_eq!(report.remaining(), 2);
}

#[test]
fn a_config_naming_another_layer_is_reported() {
    let f = Fixture::new();
    let path = f.root.join(f.id.as_str()).join("config.json");
    let mut record: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let other = Digest::from_sha256_bytes([9; 32]);
    set_diff_ids(&mut record, &other);
    fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
    let report = f.run(false, false);
    assert_eq!(problems(&report), ["rootfs-differs"], "{report:#?}");
    assert!(report.findings[0].detail.contains("rootfs.diff_ids names"));
}

#[test]
fn a_missing_blob_is_reported() {
    let f = Fixture::new();
    fs::remove_file(blob_path(&f.root, &f.layer)).unwrap();
    let report = f.run(true, false);
    assert_eq!(problems(&report), ["blob-missing"], "{report:#?}");
    assert_eq!(report.remaining(), 1);
}

#[test]
fn a_blob_with_wrong_content_goes_to_quarantine() {
    let f = Fixture::new();
    let blob = blob_path(&f.root, &f.layer);
    let mut bytes = fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&blob, &bytes).unwrap();
    assert_eq!(problems(&f.run(false, false)), ["blob-corrupt"]);
    let report = f.run(true, false);
    assert!(matches!(
        report.findings[0].repair,
        Some(Repair::Repaired(_))
    ));
    assert!(!blob.exists());
    assert!(f
        .root
        .join("storage/quarantine")
        .join(f.layer.hex())
        .exists());
    // What remains: the plugin's blob is gone (a re-install brings it back); the quarantined
    // copy is a notice.
    let again = f.run(false, false);
    assert_eq!(problems(&again), ["blob-missing"], "{again:#?}");
    assert!(kinds(&again).contains(&"quarantined-blob"));
}

#[test]
fn a_modified_rootfs_file_is_unpacked_again() {
    let f = Fixture::new();
    fs::write(f.rootfs().join("etc/conf"), b"setting=2\n").unwrap();
    let report = f.run(false, false);
    assert_eq!(problems(&report), ["rootfs-differs"]);
    assert!(report.findings[0]
        .detail
        .contains("etc/conf: content differs"));
    let report = f.run(true, false);
    assert!(
        matches!(report.findings[0].repair, Some(Repair::Repaired(_))),
        "{report:#?}"
    );
    assert_eq!(
        fs::read(f.rootfs().join("etc/conf")).unwrap(),
        b"setting=1\n"
    );
    assert_eq!(f.run(false, true).remaining(), 0);
}

#[test]
fn a_same_size_change_in_a_large_file_needs_full() {
    let f = Fixture::new();
    let big = f.rootfs().join("big.dat");
    let mut bytes = fs::read(&big).unwrap();
    bytes[1000] = 8;
    fs::write(&big, &bytes).unwrap();
    let report = f.run(false, true);
    assert_eq!(problems(&report), ["rootfs-differs"]);
    assert!(report.findings[0]
        .detail
        .contains("big.dat: content differs"));
}

#[test]
fn a_deleted_rootfs_file_and_a_deleted_rootfs_are_unpacked_again() {
    let f = Fixture::new();
    fs::remove_file(f.rootfs().join("bin/tool")).unwrap();
    let report = f.run(false, false);
    assert!(
        report.findings[0].detail.contains("bin/tool: missing"),
        "{report:#?}"
    );
    f.run(true, false);
    assert!(f.rootfs().join("bin/tool").exists());
    fs::remove_dir_all(f.rootfs()).unwrap();
    assert_eq!(problems(&f.run(false, false)), ["rootfs-missing"]);
    let report = f.run(true, false);
    assert!(matches!(
        report.findings[0].repair,
        Some(Repair::Repaired(_))
    ));
    assert_eq!(f.run(false, true).remaining(), 0);
    assert_eq!(
        fs::read_link(f.rootfs().join("bin/alias")).unwrap(),
        Path::new("tool")
    );
}

#[test]
fn leftovers_are_listed_with_sizes_and_deleted_by_repair() {
    let f = Fixture::new();
    // A plugin directory without a record (its rootfs is an orphan).
    let orphan = f.root.join(PluginId::from_bytes([0x11; 32]).as_str());
    fs::create_dir_all(orphan.join("rootfs")).unwrap();
    fs::write(orphan.join("rootfs/file"), vec![0u8; 1000]).unwrap();
    // Temporary files: of a create, of an atomic write.
    fs::create_dir_all(f.root.join("tmp/rootfs-abc")).unwrap();
    let temp = f.root.join(f.id.as_str()).join(".config.json.tmp-123");
    fs::write(&temp, b"partial").unwrap();
    // A damaged rootfs an interrupted repair set aside.
    let aside = f.root.join(f.id.as_str()).join("rootfs-fsck-damaged");
    fs::create_dir_all(&aside).unwrap();
    // An interrupted removal, an orphan ingest, an unreferenced blob.
    let removing = f
        .root
        .join(format!("{}-removing", PluginId::from_bytes([0x22; 32])));
    fs::create_dir_all(&removing).unwrap();
    let ingest = f.root.join("storage/ingest/abcd");
    fs::create_dir_all(&ingest).unwrap();
    fs::write(ingest.join("data"), vec![1u8; 4096]).unwrap();
    let stray = Digest::from_sha256_bytes(Sha256::digest(b"stray").into());
    fs::write(blob_path(&f.root, &stray), b"stray").unwrap();

    let report = f.run(false, false);
    let mut found = problems(&report);
    found.sort();
    assert_eq!(
        found,
        [
            "interrupted-removal",
            "orphan-blob",
            "orphan-ingest",
            "orphan-plugin-dir",
            "temp-file",
            "temp-file",
            "temp-file"
        ],
        "{report:#?}"
    );
    let size_of = |kind| {
        report
            .findings
            .iter()
            .find(|f| f.kind == kind)
            .unwrap()
            .size
    };
    assert!(size_of("orphan-plugin-dir").unwrap() >= 1000);
    assert!(size_of("orphan-ingest").unwrap() >= 4096);
    assert_eq!(size_of("orphan-blob"), Some(5));
    // Nothing was touched without repair.
    assert!(orphan.exists() && temp.exists() && ingest.exists());

    let report = f.run(true, false);
    assert_eq!(report.remaining(), 0, "{report:#?}");
    assert_eq!(report.repaired(), 7);
    for p in [
        &orphan,
        &temp,
        &aside,
        &ingest,
        &removing,
        &blob_path(&f.root, &stray),
    ] {
        assert!(!p.exists(), "{} deleted", p.display());
    }
    assert!(f.root.join("tmp").is_dir() && blob_path(&f.root, &f.layer).exists());
    assert_eq!(f.run(false, true).findings, []);
}

#[test]
fn quarantined_items_are_listed_and_kept() {
    let f = Fixture::new();
    let q = f
        .root
        .join("quarantine")
        .join(format!("{}-1700000000", PluginId::from_bytes([0x33; 32])));
    fs::create_dir_all(&q).unwrap();
    fs::write(q.join("config.json"), b"{").unwrap();
    let vq = f.root.join("volumes/quarantine/v1.json");
    fs::create_dir_all(vq.parent().unwrap()).unwrap();
    fs::write(&vq, b"{").unwrap();
    let report = f.run(true, false);
    assert_eq!(kinds(&report), ["quarantined-record", "quarantined-volume"]);
    assert!(vq.exists());
    assert_eq!(report.findings[0].severity, Severity::Notice);
    assert_eq!(
        report.findings[0].size,
        Some(fs::metadata(&q).unwrap().len() + 1)
    );
    assert!(q.exists());
    assert_eq!(report.remaining(), 0);
}

#[test]
fn repair_is_refused_while_plugind_holds_the_root() {
    let f = Fixture::new();
    let lock =
        plugind_sys::lock::LockFile::try_exclusive_with_pid(&f.root.join("plugind.lock")).unwrap();
    fs::write(f.rootfs().join("etc/conf"), b"setting=2\n").unwrap();
    let err = fsck::run(&FsckOptions {
        root: f.root.clone(),
        exec_root: None,
        depth: Depth::Full,
        full_rootfs: false,
        repair: true,
    })
    .unwrap_err();
    assert!(matches!(err, FsckError::RootInUse { .. }));
    assert!(err.to_string().contains("stop it before"), "{err}");
    assert_eq!(
        fs::read(f.rootfs().join("etc/conf")).unwrap(),
        b"setting=2\n"
    );
    // A report runs, and says the root is in use.
    let report = f.run(false, false);
    assert_eq!(kinds(&report), ["root-in-use", "rootfs-differs"]);
    drop(lock);
}
