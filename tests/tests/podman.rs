//! End-to-end with the real consumer: Podman (Debian's 4.3) uses plugind's published socket of
//! the sample volume plugin through `[engine.volume_plugins]`, with a throwaway
//! containers.conf and storage.conf (volume-consumers.md: cgroupfs, file events, runc, vfs,
//! default ulimits) and a busybox rootfs imported as a local image. Proves: volume create, a
//! container writes and a second reads, the file is in the plugin's storage on the host, a tmpfs
//! the plugin mounts per volume reaches the host and the containers, disable refused while
//! Podman has a volume mounted, published sockets working again after a plugind restart with
//! live restore, volume rm.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use plugind_tests::{find_program, plugind_bin, sample_plugin_dir, Daemon};

/// Podman's cache file written under /var/lib/containers whatever the storage root
/// (volume-consumers.md, gotcha 7), and the directories it creates for it.
const BLOB_CACHE: &str = "/var/lib/containers/cache/blob-info-cache-v1.boltdb";
const BLOB_CACHE_DIRS: [&str; 2] = ["/var/lib/containers/cache", "/var/lib/containers"];

/// A Podman confined to a scratch directory.
struct Podman {
    dir: PathBuf,
    blob_cache_existed: bool,
    cache_dirs_existed: Vec<bool>,
    cgroups_before: Vec<PathBuf>,
}

fn libpod_cgroups() -> Vec<PathBuf> {
    fs::read_dir("/sys/fs/cgroup")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path().join("libpod_parent"))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

impl Podman {
    /// Writes the configuration (with the `[engine.volume_plugins]` table `plugins`) and
    /// imports the busybox image.
    fn new(plugins: &str) -> Podman {
        find_program("podman").expect("podman missing: run `cargo xtask setup`");
        let busybox = find_program("busybox").expect("busybox missing: run `cargo xtask setup`");
        let dir = tempfile::Builder::new()
            .prefix("podman-e2e")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        let w = dir.display();
        fs::write(
            dir.join("containers.conf"),
            format!(
                r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[network]
network_config_dir = "{w}/net"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{w}/events.log"
runtime = "runc"
tmp_dir = "{w}/tmp"
{plugins}"#
            ),
        )
        .unwrap();
        fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{w}/storage\"\nrunroot = \"{w}/run\"\n"
            ),
        )
        .unwrap();
        let rootfs = dir.join("rootfs");
        for sub in ["bin", "etc", "mnt", "tmp"] {
            fs::create_dir_all(rootfs.join(sub)).unwrap();
        }
        fs::copy(&busybox, rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "cat", "echo", "grep", "ls", "sleep"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
        let p = Podman {
            dir,
            blob_cache_existed: Path::new(BLOB_CACHE).exists(),
            cache_dirs_existed: BLOB_CACHE_DIRS.map(|d| Path::new(d).exists()).to_vec(),
            cgroups_before: libpod_cgroups(),
        };
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let import = p
            .command(&["import", "-", "localhost/bb:latest"])
            .stdin(tar.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(tar.wait().unwrap().success(), "tar of the rootfs failed");
        assert!(import.status.success(), "podman import: {import:?}");
        p
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        cmd.args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"));
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `podman run --rm --network none -v VOLUME:/mnt localhost/bb CMD...`.
    fn container(&self, volume: &str, cmd: &[&str]) -> String {
        let mount = format!("{volume}:/mnt");
        let mut args = vec![
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &mount,
            "localhost/bb",
        ];
        args.extend_from_slice(cmd);
        self.ok(&args)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-a", "-f"]);
        let _ = fs::remove_dir_all(&self.dir);
        if !self.blob_cache_existed {
            let _ = fs::remove_file(BLOB_CACHE);
        }
        for (dir, existed) in BLOB_CACHE_DIRS.iter().zip(&self.cache_dirs_existed) {
            if !existed {
                let _ = fs::remove_dir(dir);
            }
        }
        for cg in libpod_cgroups() {
            if !self.cgroups_before.contains(&cg) {
                let _ = fs::remove_dir(cg.join("conmon"));
                let _ = fs::remove_dir(&cg);
            }
        }
    }
}

/// The sample plugin's directory plus `/bin/busybox`, which its `tmpfs=` option mounts with.
fn plugin_with_busybox() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(sample_plugin_dir())
        .arg(dir.path().join("p"))
        .status()
        .unwrap();
    assert!(status.success());
    let bin = dir.path().join("p/rootfs/bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy(find_program("busybox").unwrap(), bin.join("busybox")).unwrap();
    dir
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} missing", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The file system type mounted exactly at `path` on the host, if any.
fn mounted_fstype(path: &Path) -> Option<String> {
    let path = path.to_string_lossy();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            (fields.get(4) == Some(&path.as_ref())).then(|| fields[sep + 1].to_owned())
        })
        .next_back()
}

#[test]
#[ignore = "needs root, podman, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn podman_uses_plugind_volume_plugins() {
    assert!(
        find_program("podman").is_some(),
        "podman missing: run `cargo xtask setup`"
    );
    let mut d = Daemon::start(true);
    let plugin = plugin_with_busybox();
    d.docker_ok(&[
        "plugin",
        "create",
        "vols/driver",
        &plugin.path().join("p").to_string_lossy(),
    ]);
    d.docker_ok(&["plugin", "enable", "vols/driver"]);
    let socket = d.dir.join("run/publish/vols+driver.sock");
    wait_for(&socket);
    let id = d
        .docker_ok(&["plugin", "inspect", "-f", "{{.Id}}", "vols/driver"])
        .trim()
        .to_owned();
    let volumes = d.dir.join(format!("root/{id}/propagated-mount/volumes"));

    // Podman's configuration comes from `plugind podman-conf` (written right after the socket
    // appears: wait until it names it).
    let deadline = Instant::now() + Duration::from_secs(30);
    let conf = loop {
        let out = Command::new(plugind_bin())
            .args(["podman-conf", "--exec-root"])
            .arg(d.dir.join("run"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.contains(&*socket.to_string_lossy()) {
            break text;
        }
        assert!(Instant::now() < deadline, "podman-conf: {out:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let p = Podman::new(&conf);

    // Create, write in one container, read in another; the file is the plugin's.
    p.ok(&["volume", "create", "--driver", "vols/driver", "v1"]);
    p.container("v1", &["sh", "-c", "echo hi-plugind > /mnt/f"]);
    assert_eq!(p.container("v1", &["cat", "/mnt/f"]), "hi-plugind\n");
    assert_eq!(
        fs::read_to_string(volumes.join("v1/f")).unwrap(),
        "hi-plugind\n"
    );

    // A tmpfs the plugin mounts inside its propagated mount is on the host and in containers.
    p.ok(&[
        "volume",
        "create",
        "--driver",
        "vols/driver",
        "-o",
        "tmpfs=1m",
        "vt",
    ]);
    assert_eq!(
        mounted_fstype(&volumes.join("vt")).as_deref(),
        Some("tmpfs"),
        "the plugin's tmpfs did not reach the host"
    );
    let seen = p.container(
        "vt",
        &[
            "sh",
            "-c",
            "echo t > /mnt/g && grep ' /mnt ' /proc/self/mountinfo",
        ],
    );
    assert!(seen.contains(" - tmpfs "), "container sees {seen}");
    assert_eq!(fs::read_to_string(volumes.join("vt/g")).unwrap(), "t\n");

    // While Podman has a volume mounted, disable is refused with Docker's text; -f would win.
    p.ok(&["volume", "mount", "v1"]);
    let err = d.docker_err(&["plugin", "disable", "vols/driver"]);
    assert!(err.contains("plugin vols/driver:latest is in use"), "{err}");
    p.ok(&["volume", "unmount", "v1"]);
    // The same with a running container: mounted at its start, unmounted when it goes.
    let ctr = p.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "-v",
        "v1:/mnt",
        "localhost/bb",
        "sleep",
        "600",
    ]);
    let err = d.docker_err(&["plugin", "disable", "vols/driver"]);
    assert!(err.contains("plugin vols/driver:latest is in use"), "{err}");
    p.ok(&["rm", "-f", "-t", "0", ctr.trim()]);
    // Podman unmounted it on removal: the plugin's record holds no consumer reference.
    let record = fs::read_to_string(d.dir.join(format!("root/{id}/config.json"))).unwrap();
    assert!(!record.contains("consumer:"), "references left: {record}");

    // plugind restarts with live restore: Podman keeps working through the same socket.
    d.kill9();
    d.restart();
    wait_for(&socket);
    let ls = p.ok(&["volume", "ls", "--format", "{{.Driver}} {{.Name}}"]);
    assert!(
        ls.contains("vols/driver v1") && ls.contains("vols/driver vt"),
        "{ls}"
    );
    assert_eq!(p.container("v1", &["cat", "/mnt/f"]), "hi-plugind\n");

    p.ok(&["volume", "rm", "v1", "vt"]);
    assert!(!volumes.join("v1").exists());
    assert_eq!(mounted_fstype(&volumes.join("vt")), None);
    d.docker_ok(&["plugin", "disable", "vols/driver"]);
    d.docker_ok(&["plugin", "rm", "vols/driver"]);
}
