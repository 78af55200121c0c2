//! Public-API tests of bundle directories, socket paths and the init layer.

mod common;

use std::{
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
};

use plugind_bundle::{
    init_layer::{create_init_layer, INIT_LAYER},
    socket::{self, check_socket_path, MAX_SOCKET_PATH},
    Bundle, BundleError,
};
use plugind_spec::oci_spec::runtime::{LinuxIdMappingBuilder, Root, Spec};
use plugind_types::ErrorKind;

fn spec_with_root(root: &str) -> Spec {
    let mut spec = Spec::default();
    let mut r = Root::default();
    r.set_path(PathBuf::from(root));
    spec.set_root(Some(r));
    spec
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn create_load_delete() {
    let tmp = common::short_tempdir();
    let dir = tmp.path().join("bundles");
    let id = common::random_id();
    let spec = spec_with_root("/some/rootfs");
    let b = Bundle::create(&dir, &id, &spec).unwrap();
    assert_eq!(b.path(), dir.join(id.as_str()));
    assert_eq!(
        b.path().file_name().unwrap(),
        id.as_str(),
        "dir name must equal the task id"
    );
    assert_eq!(mode(&dir), 0o711);
    assert_eq!(mode(b.path()), 0o700);
    assert_eq!(b.spec().unwrap(), spec);
    assert!(
        !b.path().join("rootfs").exists(),
        "root.path is absolute: no rootfs dir"
    );

    let again = Bundle::create(&dir, &id, &spec).unwrap_err();
    assert_eq!(again.kind(), ErrorKind::AlreadyExists);

    assert_eq!(Bundle::load(&dir, &id).unwrap(), b);
    Bundle::delete(&dir, &id).unwrap();
    assert!(!b.path().exists());
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "no hidden leftover");
    Bundle::delete(&dir, &id).unwrap();
    assert_eq!(
        Bundle::load(&dir, &id).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

/// The spec is written without fsync (bundles need no durability) but still by temporary and
/// rename: the bundle holds exactly `config.json` (no temporary left), mode 0600 whatever the
/// umask.
#[test]
fn create_writes_only_config_json_0600_by_rename() {
    let tmp = common::short_tempdir();
    let dir = tmp.path().join("bundles");
    let id = common::random_id();
    let spec = spec_with_root("/some/rootfs");
    let b = Bundle::create(&dir, &id, &spec).unwrap();
    let names: Vec<String> = fs::read_dir(b.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["config.json"]);
    assert_eq!(mode(&b.config_path()), 0o600);
    assert_eq!(b.spec().unwrap(), spec);
}

#[test]
fn relative_root_is_rejected_and_leaves_nothing() {
    let tmp = common::short_tempdir();
    let dir = tmp.path().join("bundles");
    let id = common::random_id();
    let err = Bundle::create(&dir, &id, &spec_with_root("rootfs")).unwrap_err();
    assert!(matches!(err, BundleError::InvalidSpec { .. }));
    assert!(!dir.join(id.as_str()).exists());
}

/// A failure half-way (here: no inode left for config.json on a tiny tmpfs, after the bundle
/// directory was made) removes the bundle directory again.
#[test]
#[ignore = "needs root and mount"]
fn failed_create_rolls_back() {
    common::require_root_and(&["mount", "umount"]);
    let tmp = common::short_tempdir();
    let dir = tmp.path().join("bundles");
    fs::create_dir(&dir).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "nr_inodes=2,size=64k", "tmpfs"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(ok.success());
    let id = common::random_id();
    let result = Bundle::create(&dir, &id, &spec_with_root("/r"));
    let left: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(Command::new("umount").arg(&dir).status().unwrap().success());
    let err = result.unwrap_err();
    // Bundle files are written without fsync (no durability on the exec root), so the
    // failure is the bundle's own write error.
    assert!(matches!(err, BundleError::Io { .. }), "{err:?}");
    assert!(left.is_empty(), "half-made bundle left behind: {left:?}");
}

#[test]
fn interrupted_delete_is_finished() {
    let tmp = common::short_tempdir();
    let dir = tmp.path().join("bundles");
    let id = common::random_id();
    fs::create_dir_all(dir.join(format!(".{id}-deleting/sub"))).unwrap();
    Bundle::delete(&dir, &id).unwrap();
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    fs::create_dir_all(dir.join(format!(".{id}-deleting/sub"))).unwrap();
    Bundle::sweep_deleting(&dir).unwrap();
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
#[ignore = "needs root and chown"]
fn user_namespace_root_group_gets_0710() {
    common::require_root_and(&[]);
    let tmp = common::short_tempdir();
    let dir = tmp.path().join("bundles");
    let id = common::random_id();
    let mut spec = spec_with_root("/r");
    let map = LinuxIdMappingBuilder::default()
        .container_id(0u32)
        .host_id(231072u32)
        .size(65536u32)
        .build()
        .unwrap();
    spec.linux_mut()
        .as_mut()
        .unwrap()
        .set_gid_mappings(Some(vec![map]));
    let b = Bundle::create(&dir, &id, &spec).unwrap();
    let md = fs::metadata(b.path()).unwrap();
    assert_eq!(md.gid(), 231072);
    assert_eq!(md.permissions().mode() & 0o7777, 0o710);
    Bundle::delete(&dir, &id).unwrap();
}

#[test]
fn socket_path_limit_is_107_bytes() {
    let path = |len: usize| PathBuf::from(format!("/{}", "a".repeat(len - 1)));
    assert_eq!(path(107).as_os_str().len(), 107);
    check_socket_path(&path(107)).unwrap();
    for len in [108, 109] {
        let err = check_socket_path(&path(len)).unwrap_err();
        assert!(
            matches!(err, BundleError::SocketPathTooLong { len: l, max: MAX_SOCKET_PATH, .. } if l == len)
        );
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(
            err.to_string().contains(&path(len).display().to_string()),
            "the message names the path"
        );
    }
}

#[test]
fn daemon_and_plugin_socket_checks() {
    let id = common::random_id();
    // <root>/plugins/<64>/vol.sock: 9 + 64 + 1 + 8 = 82 bytes plus the root.
    let fits = Path::new("/run/plugind");
    assert_eq!(
        socket::plugin_socket_path(fits, &id, "vol.sock").unwrap(),
        fits.join("plugins").join(id.as_str()).join("vol.sock")
    );
    socket::check_daemon_sockets(fits, &fits.join("plugind.sock")).unwrap();
    let root_107 = PathBuf::from(format!("/{}", "r".repeat(107 - 82 - 1)));
    assert_eq!(
        socket::plugin_socket_path(&root_107, &id, "vol.sock")
            .unwrap()
            .as_os_str()
            .len(),
        107
    );
    let root_108 = PathBuf::from(format!("/{}", "r".repeat(108 - 82 - 1)));
    let err = socket::plugin_socket_path(&root_108, &id, "vol.sock").unwrap_err();
    assert!(matches!(
        err,
        BundleError::SocketPathTooLong { len: 108, .. }
    ));
    let long_root = PathBuf::from(format!("/{}", "x".repeat(40)));
    assert!(socket::check_daemon_sockets(&long_root, Path::new("/run/p.sock")).is_err());
    let api = PathBuf::from(format!("/{}", "y".repeat(108)));
    assert!(matches!(
        socket::check_daemon_sockets(fits, &api).unwrap_err(),
        BundleError::SocketPathTooLong { path, .. } if path == api
    ));
}

#[test]
fn shim_socket_address_is_sha256_of_joined_address() {
    // printf '%s' /run/plugind/plugind.sock/plugind/t1 | sha256sum
    let want =
        "unix:///run/containerd/s/1dd3cfad929eee9b6c2f2a9207266521e7bf6d5ecdc2e387a42a3cb86225d800";
    assert_eq!(
        socket::shim_socket_address("/run/plugind/plugind.sock", "plugind", "t1"),
        want
    );
    assert_eq!(
        socket::shim_socket_address("/run/plugind//plugind.sock/", "plugind", "t1"),
        want,
        "Go's filepath.Join cleans"
    );
    assert_eq!(
        socket::shim_socket_path("/a", "b", "c").as_os_str().len(),
        82
    );
}

/// The real 1.6 shim agrees: `start` prints the address it computed. Its serving child dies at
/// once (no log FIFO in this bundle), leaving only the socket file, which the test removes.
#[test]
#[ignore = "needs root and containerd-shim-runc-v2"]
fn shim_socket_address_matches_the_real_shim() {
    common::require_root_and(&["containerd-shim-runc-v2"]);
    let tmp = common::short_tempdir();
    let dir = tmp.path().join("bundles");
    let id = common::random_id();
    let b = Bundle::create(&dir, &id, &spec_with_root("/r")).unwrap();
    let address = tmp.path().join("d.sock");
    let out = Command::new(common::find_binary("containerd-shim-runc-v2").unwrap())
        .args(["-namespace", "pbtest", "-address"])
        .arg(&address)
        .args(["-publish-binary", "/bin/true", "-id", id.as_str(), "start"])
        .current_dir(b.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    let ours = socket::shim_socket_address(address.to_str().unwrap(), "pbtest", id.as_str());
    let _ = fs::remove_file(socket::shim_socket_path(
        address.to_str().unwrap(),
        "pbtest",
        id.as_str(),
    ));
    Bundle::delete(&dir, &id).unwrap();
    assert!(
        out.status.success(),
        "shim start failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(printed.trim(), ours);
}

#[test]
fn init_layer_creates_docker_placeholders() {
    let tmp = common::short_tempdir();
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir(&rootfs).unwrap();
    fs::create_dir(rootfs.join("etc")).unwrap();
    fs::write(rootfs.join("etc/hosts"), "keep").unwrap();
    let skipped = create_init_layer(&rootfs).unwrap();
    assert!(skipped.is_empty());
    for dir in ["dev/pts", "dev/shm", "proc", "sys"] {
        assert!(
            fs::symlink_metadata(rootfs.join(dir)).unwrap().is_dir(),
            "{dir}"
        );
    }
    for file in [
        ".dockerenv",
        "etc/resolv.conf",
        "etc/hostname",
        "dev/console",
    ] {
        assert!(
            fs::symlink_metadata(rootfs.join(file)).unwrap().is_file(),
            "{file}"
        );
    }
    assert_eq!(
        fs::read_to_string(rootfs.join("etc/hosts")).unwrap(),
        "keep",
        "existing files are kept"
    );
    assert_eq!(
        fs::read_link(rootfs.join("etc/mtab")).unwrap(),
        Path::new("/proc/mounts")
    );
    assert_eq!(INIT_LAYER.len(), 10);
    // Idempotent.
    assert!(create_init_layer(&rootfs).unwrap().is_empty());
}

#[test]
fn init_layer_never_writes_through_symlinks() {
    let tmp = common::short_tempdir();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir(&rootfs).unwrap();
    std::os::unix::fs::symlink(&outside, rootfs.join("etc")).unwrap();
    std::os::unix::fs::symlink("/nonexistent-target-x", rootfs.join(".dockerenv")).unwrap();
    fs::write(rootfs.join("dev"), "a file where a dir should be").unwrap();
    let skipped = create_init_layer(&rootfs).unwrap();
    assert_eq!(
        skipped,
        [
            "dev/pts",
            "dev/shm",
            "etc/resolv.conf",
            "etc/hosts",
            "etc/hostname",
            "dev/console",
            "etc/mtab"
        ]
    );
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing created outside the rootfs"
    );
    assert!(
        !Path::new("/nonexistent-target-x").exists(),
        "a dangling symlink is not followed"
    );
    assert!(rootfs.join("proc").is_dir() && rootfs.join("sys").is_dir());
    // A rootfs that is itself a symlink is refused.
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&rootfs, &link).unwrap();
    assert!(create_init_layer(&link).is_err());
}
