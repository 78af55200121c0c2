//! Mount clean-up and bundle deletion with real mounts (root).

mod common;

use std::{fs, path::Path, process::Command};

use plugind_bundle::{
    mounts::{cleanup_plugin_mounts, prepare_propagated_mount, unmount_under},
    Bundle, BundleError,
};
use plugind_spec::oci_spec::runtime::{Root, Spec};

fn tmpfs(at: &Path) {
    fs::create_dir_all(at).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(at)
        .status()
        .unwrap();
    assert!(ok.success(), "mount tmpfs at {}", at.display());
}

#[test]
#[ignore = "needs root and mount"]
fn unmounts_nested_stacked_and_escaped_mounts_deepest_first() {
    common::require_root_and(&["mount"]);
    let tmp = common::short_tempdir();
    let base = fs::canonicalize(tmp.path()).unwrap();
    tmpfs(&base.join("a"));
    tmpfs(&base.join("a/b"));
    tmpfs(&base.join("a/sp ace\tx"));
    tmpfs(&base.join("c"));
    tmpfs(&base.join("c"));
    assert_eq!(common::mounts_under(&base).len(), 5);
    let done = unmount_under(&base).unwrap();
    assert_eq!(done.len(), 5);
    let pos = |p: &Path| done.iter().position(|d| d == p).unwrap();
    assert!(
        pos(&base.join("a/b")) < pos(&base.join("a")),
        "deepest first: {done:?}"
    );
    assert!(pos(&base.join("a/sp ace\tx")) < pos(&base.join("a")));
    assert!(common::mounts_under(&base).is_empty());
    assert!(unmount_under(&base).unwrap().is_empty());
}

#[test]
#[ignore = "needs root and mount"]
fn busy_mount_is_reported_with_its_path_and_delete_keeps_the_bundle() {
    common::require_root_and(&["mount"]);
    let tmp = common::short_tempdir();
    let dir = fs::canonicalize(tmp.path()).unwrap().join("bundles");
    let id = common::random_id();
    let mut spec = Spec::default();
    let mut root = Root::default();
    root.set_path("/r".into());
    spec.set_root(Some(root));
    let b = Bundle::create(&dir, &id, &spec).unwrap();
    let busy = b.path().join("busy");
    tmpfs(&busy);
    tmpfs(&b.path().join("free"));
    let cwd_holder = fs::File::create(busy.join("open")).unwrap();
    let err = Bundle::delete(&dir, &id).unwrap_err();
    match &err {
        BundleError::Unmount { failures } => {
            assert_eq!(failures.len(), 1);
            assert_eq!(failures[0].path, busy);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains(busy.to_str().unwrap()), "{err}");
    assert!(
        b.path().join("config.json").exists(),
        "bundle untouched under its name"
    );
    assert_eq!(
        common::mounts_under(b.path()),
        std::slice::from_ref(&busy),
        "the free mount was unmounted"
    );
    drop(cwd_holder);
    // Another test of this binary may fork (to run `mount`) while the file is open: the child
    // holds the descriptor until its exec closes it. Give that moment a few tries.
    let mut attempts = 0;
    while let Err(e) = Bundle::delete(&dir, &id) {
        attempts += 1;
        assert!(
            attempts < 100,
            "the mount stays busy after its holder closed: {e}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!b.path().exists());
    assert!(common::mounts_under(&dir).is_empty());
}

#[test]
#[ignore = "needs root and mount"]
fn plugin_mount_cleanup_covers_propagated_mounts() {
    common::require_root_and(&["mount"]);
    let tmp = common::short_tempdir();
    let base = fs::canonicalize(tmp.path()).unwrap();
    let (data, exec) = (base.join("d"), base.join("x"));
    let id = common::random_id();
    let prop = data.join(id.as_str()).join("propagated-mount");
    prepare_propagated_mount(&prop).unwrap();
    prepare_propagated_mount(&prop).unwrap();
    let info = plugind_sys::mount::read_mountinfo().unwrap();
    let m = info.iter().rev().find(|m| m.mount_point == prop).unwrap();
    assert!(m.is_shared(), "propagated-mount must be shared");
    assert_eq!(
        common::mounts_under(&prop).len(),
        1,
        "prepared once even when called twice"
    );
    tmpfs(&prop.join("vol1"));
    tmpfs(&exec.join("plugins").join(id.as_str()).join("shm"));
    let other = common::random_id();
    tmpfs(&data.join(other.as_str()).join("keep"));
    let done = cleanup_plugin_mounts(&data, &exec, &id).unwrap();
    assert_eq!(done.len(), 3);
    assert_eq!(
        common::mounts_under(&base),
        [data.join(other.as_str()).join("keep")],
        "other plugins untouched"
    );
    unmount_under(&base).unwrap();
}
