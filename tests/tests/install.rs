//! End-to-end: `docker plugin install`, `upgrade` and the privileges and pull endpoints of the
//! built `plugind` against the real `docker-registry` (distribution.md §3, §4), with the real
//! docker CLI, shim and runc. The registry is seeded with the sample plugin through the
//! distribution crate (the blobs `docker plugin push` would upload).
//!
//! `#[ignore]`d for plain `cargo test` (root, registry, CLI); CI runs them.

use std::{path::Path, time::Duration};

use plugind_distribution::{AuthConfig, PluginManifest, Registry, RegistryOptions};
use plugind_manager::layer::{import_create_tar, LayerLimits};
use plugind_tests::{registry::TestRegistry, sample_plugin_dir, Daemon};
use plugind_types::{
    config::{PluginConfig, PluginRootfs},
    Digest, Reference,
};

const IGNORE: &str =
    "needs root, docker-registry, runc, the shim, the docker CLI and the sample plugin";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A layer blob made from a plain directory tree (for layers create would refuse).
fn raw_layer(store: &plugind_blobstore::BlobStore, entries: &[(&str, &[u8])]) -> Digest {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        // Written raw so that `..` survives (the builder refuses it).
        let name = h.as_old_mut().name.as_mut();
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        tar.append(&h, *data).unwrap();
    }
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let gz = gz.finish().unwrap();
    store.ingest("raw-layer", &gz[..], None).unwrap().digest
}

/// Pushes the sample plugin as `<registry>/<repo_tag>`, its config changed by `edit` and its
/// layer replaced by `layer` when given; returns the manifest digest.
fn seed(
    registry: &TestRegistry,
    repo_tag: &str,
    edit: impl FnOnce(&mut PluginConfig),
    layer: Option<&[(&str, &[u8])]>,
) -> Digest {
    let dir = tempfile::tempdir().unwrap();
    let store = plugind_blobstore::BlobStore::open(&dir.path().join("blobs")).unwrap();
    let tar_path = sample_plugin_dir().with_extension("tar");
    let tar = std::fs::File::open(&tar_path)
        .unwrap_or_else(|e| panic!("{}: {e} (run cargo xtask plugin)", tar_path.display()));
    let imported = import_create_tar(&store, "seed", tar, &LayerLimits::DEFAULT).unwrap();
    let layer_digest = match layer {
        Some(entries) => raw_layer(&store, entries),
        None => imported.layer,
    };
    let mut config = PluginConfig::from_json(&imported.config).unwrap();
    edit(&mut config);
    config.docker_version = "20.10.24+dfsg1".into();
    config.rootfs = Some(PluginRootfs {
        diff_ids: vec![layer_digest.clone()],
        r#type: "layers".into(),
    });
    let mut config_bytes = serde_json::to_vec(&config).unwrap();
    config_bytes.push(b'\n');
    let c = store.ingest("config", &config_bytes[..], None).unwrap();
    let l = store.info(&layer_digest).unwrap();
    let manifest = PluginManifest::for_plugin((c.digest, c.size), (l.digest, l.size));
    let client = Registry::new(RegistryOptions {
        request_timeout: Duration::from_secs(20),
        ..RegistryOptions::default()
    })
    .unwrap();
    let target = Reference::parse_normalized(&format!("{}/{repo_tag}", registry.addr())).unwrap();
    let (digest, _) = runtime()
        .block_on(client.push(
            &target,
            &AuthConfig::from_header(""),
            &manifest,
            &store,
            &|_| {},
        ))
        .unwrap();
    digest
}

fn inspect(d: &Daemon, name: &str, format: &str) -> String {
    d.docker_ok(&["plugin", "inspect", "-f", format, name])
        .trim()
        .to_owned()
}

fn leftovers(d: &Daemon) -> Vec<String> {
    let mut out = Vec::new();
    let tmp = d.dir.join("root/tmp");
    for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        out.push(e.path().display().to_string());
    }
    for p in std::fs::read_dir(d.dir.join("root"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for e in std::fs::read_dir(p.path()).into_iter().flatten().flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with("rootfs-previous")
            {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

#[test]
#[ignore = "needs root, docker-registry, runc, the shim, the docker CLI and the sample plugin"]
fn install_from_a_registry_like_docker() {
    let _ = IGNORE;
    let registry = TestRegistry::start();
    let addr = registry.addr().to_owned();
    let digest = seed(&registry, "acme/sample:1.0", |_| {}, None);
    let d = Daemon::start(false);
    let remote = format!("{addr}/acme/sample:1.0");

    // Privileges: Docker's array, no trailing newline.
    let (status, body) = d
        .request("GET", &format!("/plugins/privileges?remote={remote}"), None)
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        r#"[{"Name":"capabilities","Description":"list of additional capabilities required","Value":["CAP_SYS_ADMIN"]}]"#
    );
    // Its side effect, as Docker's: the manifest is in the blob store (distribution.md §3.1).
    assert!(
        d.dir
            .join("root/storage/blobs/sha256")
            .join(digest.hex())
            .exists(),
        "the privileges call did not store the manifest"
    );

    // Install disabled, with an alias and a setting.
    let out = d.docker_ok(&[
        "plugin",
        "install",
        "--grant-all-permissions",
        "--disable",
        "--alias",
        "x",
        &remote,
        "DEBUG=1",
    ]);
    assert!(
        out.contains(&format!("1.0: Pulling from {addr}/acme/sample")),
        "{out}"
    );
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert!(
        out.contains(": Waiting") && out.contains(": Download complete"),
        "{out}"
    );
    assert!(out.contains(": Complete"), "{out}");
    assert!(
        out.trim_end()
            .ends_with(&format!("Installed plugin {remote}")),
        "{out}"
    );
    assert_eq!(inspect(&d, "x", "{{.Name}} {{.Enabled}}"), "x:latest false");
    assert_eq!(inspect(&d, "x", "{{.PluginReference}}"), remote);
    assert_eq!(
        inspect(&d, "x", "{{json .Settings.Env}}"),
        r#"["VOLUME_ROOT=/data/volumes","DEBUG=1"]"#
    );
    assert_eq!(inspect(&d, "x", "{{.Config.Interface.Socket}}"), "vol.sock");
    // The pull event names the remote and the local name.
    let (_, events) = d
        .request(
            "GET",
            &format!(
                "/events?since=0&until={}&filters=%7B%22event%22%3A%5B%22pull%22%5D%7D",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
                    + 1
            ),
            None,
        )
        .unwrap();
    assert!(
        events.contains(&format!(
            r#""Action":"pull","Actor":{{"ID":"{remote}","Attributes":{{"name":"x:latest"}}}}"#
        )),
        "{events}"
    );

    // The same name again: 400 with Docker's text; nothing changes.
    let err = d.docker_err(&[
        "plugin",
        "install",
        "--grant-all-permissions",
        "--alias",
        "x",
        &remote,
    ]);
    assert!(err.contains("plugin x:latest already exists"), "{err}");

    // A second install of the same blobs: "Already exists", and it enables (real runc).
    let out = d.docker_ok(&[
        "plugin",
        "install",
        "--grant-all-permissions",
        "--alias",
        "y",
        &remote,
    ]);
    assert!(out.contains(": Already exists"), "{out}");
    assert!(!out.contains(": Download complete"), "{out}");
    assert_eq!(inspect(&d, "y", "{{.Enabled}}"), "true");
    d.docker_ok(&["plugin", "disable", "y"]);

    // Privileges mismatch: in-stream `incorrect privileges`, nothing installed.
    let (status, body) = d
        .request(
            "POST",
            &format!("/plugins/pull?remote={remote}&name=z"),
            Some("[]"),
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.trim_end().ends_with(
            r#"{"errorDetail":{"message":"incorrect privileges"},"error":"incorrect privileges"}"#
        ),
        "{body}"
    );
    let err = d.docker_err(&["plugin", "inspect", "z"]);
    assert!(err.contains("not found"), "{err}");

    // Body errors come first, with Docker's texts.
    let (status, body) = d
        .request("POST", &format!("/plugins/pull?remote={remote}"), None)
        .unwrap();
    assert_eq!(
        (status, body.trim()),
        (500, r#"{"message":"failed to parse privileges: EOF"}"#)
    );
    let (status, body) = d.request("POST", "/plugins/pull", Some("[]")).unwrap();
    assert_eq!(
        (status, body.trim()),
        (500, r#"{"message":"invalid reference format"}"#)
    );
    let (status, body) = d
        .request(
            "POST",
            &format!(
                "/plugins/pull?remote={remote}&name=a@sha256:{}",
                digest.hex()
            ),
            Some("[]"),
        )
        .unwrap();
    assert_eq!(
        (status, body.trim()),
        (500, r#"{"message":"cannot use digest in plugin tag"}"#)
    );

    // Missing tag, missing repository, registry down: Docker's prefix and the reason.
    for missing in [
        format!("{addr}/acme/sample:nope"),
        format!("{addr}/acme/nothere:1.0"),
    ] {
        let err = d.docker_err(&["plugin", "install", "--grant-all-permissions", &missing]);
        assert!(err.contains("error resolving plugin reference"), "{err}");
        let (status, _) = d
            .request(
                "GET",
                &format!("/plugins/privileges?remote={missing}"),
                None,
            )
            .unwrap();
        assert_eq!(status, 404);
    }
    let down = format!(
        "127.0.0.1:{}/acme/sample:1.0",
        plugind_tests::registry::free_port()
    );
    let err = d.docker_err(&["plugin", "install", "--grant-all-permissions", &down]);
    assert!(err.contains("error resolving plugin reference"), "{err}");
    let (status, _) = d
        .request("GET", &format!("/plugins/privileges?remote={down}"), None)
        .unwrap();
    assert_eq!(status, 502);

    // Install by digest (Docker 20.10 panics): verified, named `:latest`, referenced by digest.
    let by_digest = format!("{addr}/acme/sample@{digest}");
    let (status, body) = d
        .request(
            "POST",
            &format!("/plugins/pull?remote={by_digest}"),
            Some(r#"[{"Name":"capabilities","Value":["CAP_SYS_ADMIN"]}]"#),
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("errorDetail"), "{body}");
    let name = format!("{addr}/acme/sample:latest");
    assert_eq!(inspect(&d, &name, "{{.PluginReference}}"), by_digest);
    let wrong = format!("{addr}/acme/sample:1.0@sha256:{}", "0".repeat(64));
    let (status, body) = d
        .request("GET", &format!("/plugins/privileges?remote={wrong}"), None)
        .unwrap();
    assert_ne!(status, 200, "{body}");

    assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
}

#[test]
#[ignore = "needs root, docker-registry, runc, the shim, the docker CLI and the sample plugin"]
fn upgrade_keeps_id_and_settings_and_rolls_back() {
    let registry = TestRegistry::start();
    let addr = registry.addr().to_owned();
    seed(&registry, "acme/sample:1.0", |_| {}, None);
    seed(
        &registry,
        "acme/sample:2.0",
        |c| {
            c.ipc_host = true;
            c.linux
                .capabilities
                .get_or_insert_with(Vec::new)
                .push("CAP_NET_ADMIN".into());
        },
        None,
    );
    seed(
        &registry,
        "acme/sample:bad",
        |_| {},
        Some(&[("../escape", b"out of the rootfs")]),
    );
    let mut d = Daemon::start(false);
    let v1 = format!("{addr}/acme/sample:1.0");
    let v2 = format!("{addr}/acme/sample:2.0");
    d.docker_ok(&[
        "plugin",
        "install",
        "--grant-all-permissions",
        "--alias",
        "up",
        &v1,
    ]);
    let id = inspect(&d, "up", "{{.Id}}");
    // Enabled: 409 with Docker's text (the CLI refuses on its own first).
    let (status, body) = d
        .request(
            "POST",
            &format!("/plugins/up/upgrade?remote={v2}"),
            Some("[]"),
        )
        .unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("plugin must be disabled before upgrading: plugin up:latest is enabled"),
        "{body}"
    );
    // Unknown: 404 with the normalised name; no body: the body error first.
    let (status, body) = d
        .request(
            "POST",
            &format!("/plugins/nosuch/upgrade?remote={v2}"),
            Some("[]"),
        )
        .unwrap();
    assert_eq!(
        (status, body.trim()),
        (404, r#"{"message":"plugin \"nosuch:latest\" not found"}"#)
    );
    let (status, _) = d
        .request(
            "POST",
            &format!("/plugins/nosuch/upgrade?remote={v2}"),
            None,
        )
        .unwrap();
    assert_eq!(status, 500);

    d.docker_ok(&["plugin", "disable", "up"]);
    d.docker_ok(&["plugin", "set", "up", "DEBUG=1"]);
    // Old privileges for the new version: refused in-stream, plugin unchanged.
    let (status, body) = d
        .request(
            "POST",
            &format!("/plugins/up/upgrade?remote={v2}"),
            Some(r#"[{"Name":"capabilities","Value":["CAP_SYS_ADMIN"]}]"#),
        )
        .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("incorrect privileges"), "{body}");
    assert_eq!(inspect(&d, "up", "{{.PluginReference}}"), v1);

    let out = d.docker_ok(&[
        "plugin",
        "upgrade",
        "--grant-all-permissions",
        "--skip-remote-check",
        "up",
        &v2,
    ]);
    assert!(
        out.contains(&format!("Upgraded plugin up:latest to {v2}")),
        "{out}"
    );
    let check = |d: &Daemon| {
        assert_eq!(inspect(d, "up", "{{.Id}}"), id);
        assert_eq!(inspect(d, "up", "{{.PluginReference}}"), v2);
        assert_eq!(inspect(d, "up", "{{.Config.IpcHost}}"), "true");
        assert!(inspect(d, "up", "{{json .Config.Linux.Capabilities}}").contains("CAP_NET_ADMIN"));
        assert!(inspect(d, "up", "{{json .Settings.Env}}").contains("DEBUG=1"));
    };
    check(&d);
    // The record is right across a restart (Docker keeps the old reference).
    d.stop();
    d.restart();
    check(&d);
    d.docker_ok(&["plugin", "enable", "up"]);
    d.docker_ok(&["plugin", "disable", "up"]);

    // A layer that escapes its rootfs: the upgrade fails and rolls back completely.
    let bad = format!("{addr}/acme/sample:bad");
    let err = d.docker_err(&[
        "plugin",
        "upgrade",
        "--grant-all-permissions",
        "--skip-remote-check",
        "up",
        &bad,
    ]);
    assert!(!err.is_empty());
    check(&d);
    let rootfs = d.dir.join(format!("root/{id}/rootfs"));
    assert!(
        Path::new(&rootfs).join("volume-plugin").exists(),
        "old rootfs intact"
    );
    assert!(!d.dir.join(format!("root/{id}/escape")).exists());
    assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
    d.docker_ok(&["plugin", "enable", "up"]);
    d.docker_ok(&["plugin", "rm", "-f", "up"]);
}

/// Incompressible bytes (a pull of them takes long enough to be interrupted).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sends a pull of `remote` as `name` on a raw connection and reads the stream until `until`
/// appears in it; returns the open connection.
fn pull_until(d: &Daemon, remote: &str, name: &str, until: &str) -> std::os::unix::net::UnixStream {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = r#"[{"Name":"capabilities","Value":["CAP_SYS_ADMIN"]}]"#;
    write!(
        s,
        "POST /plugins/pull?remote={remote}&name={name} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(until) {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "stream ended before {until:?}: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    s
}

/// The plugin `name` is either absent or whole (its rootfs holds the full big file); nothing
/// half-made is left in tmp, and no ingest outlives a restart.
fn whole_or_nothing(d: &Daemon, name: &str, size: usize) -> bool {
    let out = d.docker(&["plugin", "inspect", "-f", "{{.Id}}", name]);
    let installed = out.status.success();
    if installed {
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let big = d.dir.join(format!("root/{id}/rootfs/big"));
        assert_eq!(std::fs::metadata(&big).unwrap().len(), size as u64);
    }
    assert!(leftovers(d).is_empty(), "{:?}", leftovers(d));
    installed
}

#[test]
#[ignore = "needs root, docker-registry, runc, the shim, the docker CLI and the sample plugin"]
fn interrupted_installs_leave_a_whole_plugin_or_nothing() {
    const SIZE: usize = 48 << 20;
    let registry = TestRegistry::start();
    let addr = registry.addr().to_owned();
    let big = noise(SIZE, 7);
    seed(&registry, "acme/big:1.0", |_| {}, Some(&[("big", &big)]));
    let remote = format!("{addr}/acme/big:1.0");

    // kill -9 of plugind while the layer downloads, then a restart.
    let mut d = Daemon::start(false);
    let conn = pull_until(&d, &remote, "k", "Waiting");
    d.kill9();
    drop(conn);
    d.restart();
    let installed = whole_or_nothing(&d, "k", SIZE);
    let ingests: Vec<_> = std::fs::read_dir(d.dir.join("root/storage/ingest"))
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    assert!(
        ingests.is_empty(),
        "ingests left after restart: {ingests:?}"
    );
    if installed {
        d.docker_ok(&["plugin", "rm", "k"]);
    }

    // The client goes away mid-pull: the pull is cancelled and leaves no plugin.
    let conn = pull_until(&d, &remote, "gone", "Waiting");
    drop(conn);
    let mut cancelled = false;
    for _ in 0..600 {
        if d.log().contains("client went away") {
            cancelled = true;
            break;
        }
        if d.docker(&["plugin", "inspect", "gone"]).status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(cancelled, "the pull was not cancelled:\n{}", d.log());
    // Blocking work of the cancelled pull stops and cleans up behind it.
    for _ in 0..200 {
        if leftovers(&d).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !whole_or_nothing(&d, "gone", SIZE),
        "a cancelled pull installed the plugin"
    );
}

#[test]
#[ignore = "needs root, docker-registry, runc, the shim, the docker CLI and the sample plugin"]
fn concurrent_installs_download_a_shared_layer_once() {
    const SIZE: usize = 16 << 20;
    let registry = TestRegistry::start();
    let addr = registry.addr().to_owned();
    let big = noise(SIZE, 11);
    let digest = seed(&registry, "acme/shared:1.0", |_| {}, Some(&[("big", &big)]));
    let _ = digest;
    let remote = format!("{addr}/acme/shared:1.0");
    let d = Daemon::start(false);
    std::thread::scope(|s| {
        for alias in ["c1", "c2", "c3"] {
            let (d, remote) = (&d, &remote);
            s.spawn(move || {
                d.docker_ok(&[
                    "plugin",
                    "install",
                    "--grant-all-permissions",
                    "--disable",
                    "--alias",
                    alias,
                    remote,
                ])
            });
        }
    });
    for alias in ["c1", "c2", "c3"] {
        assert!(whole_or_nothing(&d, alias, SIZE), "{alias} not installed");
    }
    let layer = inspect(&d, "c1", "{{index .Config.Rootfs.DiffIds 0}}");
    let hex = layer.trim_start_matches("sha256:");
    assert_eq!(hex.len(), 64, "{layer}");
    assert_eq!(
        registry.count_requests("GET", &format!("/blobs/sha256:{hex}")),
        1,
        "{}",
        registry.log()
    );
}

/// The layer is unpacked while it downloads (distribution.md §2: `Extracting` before
/// `Download complete`); before, every `Extracting` came after the download had finished.
#[test]
#[ignore = "needs root, docker-registry, runc, the shim, the docker CLI and the sample plugin"]
fn install_unpacks_the_layer_while_it_downloads() {
    use std::io::Read;
    const SIZE: usize = 6 << 20;
    let registry = TestRegistry::start();
    let big = noise(SIZE, 11);
    seed(&registry, "acme/stream:1.0", |_| {}, Some(&[("big", &big)]));
    let remote = format!("{}/acme/stream:1.0", registry.addr());
    let d = Daemon::start(false);
    let mut conn = pull_until(&d, &remote, "s", "Pulling from");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // Up to the chunked body's last chunk (the connection stays open).
    while !seen.ends_with(b"0\r\n\r\n") {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let stream = String::from_utf8_lossy(&seen);
    let extracting = stream.find(r#""status":"Extracting""#);
    let downloaded = stream.find(r#""status":"Download complete""#);
    let complete = stream.find(r#""status":"Complete""#);
    assert!(
        extracting.is_some() && downloaded.is_some() && complete.is_some(),
        "{stream}"
    );
    assert!(extracting < downloaded && downloaded < complete, "{stream}");
    assert!(!stream.contains("errorDetail"), "{stream}");
    assert!(whole_or_nothing(&d, "s", SIZE), "not installed: {stream}");
    let id = inspect(&d, "s", "{{.Id}}");
    assert_eq!(
        std::fs::read(d.dir.join(format!("root/{id}/rootfs/big"))).unwrap(),
        big
    );

    // A layer of many small files unpacks whole while it streams.
    let names: Vec<String> = (0..300).map(|i| format!("f{i}")).collect();
    let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), n.as_bytes())).collect();
    seed(&registry, "acme/many:1.0", |_| {}, Some(&entries));
    let many = format!("{}/acme/many:1.0", registry.addr());
    d.docker_ok(&[
        "plugin",
        "install",
        "--grant-all-permissions",
        "--disable",
        "--alias",
        "many",
        &many,
    ]);
    let id = inspect(&d, "many", "{{.Id}}");
    for name in &names {
        assert_eq!(
            std::fs::read_to_string(d.dir.join(format!("root/{id}/rootfs/{name}"))).unwrap(),
            *name
        );
    }
    assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
}

#[test]
fn the_noise_layer_unpacks() {
    let dir = tempfile::tempdir().unwrap();
    let store = plugind_blobstore::BlobStore::open(&dir.path().join("blobs")).unwrap();
    let big = noise(1 << 20, 3);
    let digest = raw_layer(&store, &[("big", &big)]);
    let dest = dir.path().join("rootfs");
    std::fs::create_dir(&dest).unwrap();
    let r = plugind_manager::layer::unpack_layer(&store, &digest, &dest, &LayerLimits::DEFAULT);
    if let Err(e) = &r {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(x) = src {
            s += &format!(": {x}");
            src = x.source();
        }
        panic!("{s}");
    }
    assert_eq!(std::fs::read(dest.join("big")).unwrap(), big);
}

const SDK_SCRIPT: &str = r#"
import sys, docker
client = docker.DockerClient(base_url="unix://" + sys.argv[1])
api = client.api
remote, v2 = sys.argv[2], sys.argv[3]
privs = api.plugin_privileges(remote)
assert privs == [{"Name": "capabilities", "Description": "list of additional capabilities required", "Value": ["CAP_SYS_ADMIN"]}], privs
p = client.plugins.install(remote, local_name="py")
assert p.name == "py:latest", p.name
assert not p.enabled
assert p.attrs["PluginReference"] == remote, p.attrs
events = list(api.pull_plugin(remote, [], name="py2"))
assert events[-1].get("error") == "incorrect privileges", events
try:
    client.plugins.install(remote, local_name="py")
    raise SystemExit("expected APIError")
except docker.errors.APIError as e:
    assert e.status_code == 400 and "plugin py:latest already exists" in str(e), str(e)
out = list(api.upgrade_plugin("py", v2, api.plugin_privileges(v2)))
assert out and not any("error" in o for o in out), out
p.reload()
assert p.attrs["PluginReference"] == v2, p.attrs
assert p.attrs["Config"]["IpcHost"], p.attrs
print("SDK OK")
"#;

#[test]
#[ignore = "needs root, docker-registry, the docker SDK venv (cargo xtask setup) and the sample plugin"]
fn python_sdk_installs_and_upgrades() {
    let python = plugind_tests::workspace().join("target/xtask-tools/venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run `cargo xtask setup`",
        python.display()
    );
    let registry = TestRegistry::start();
    let addr = registry.addr().to_owned();
    seed(&registry, "acme/sample:1.0", |_| {}, None);
    seed(
        &registry,
        "acme/sample:2.0",
        |c| {
            c.ipc_host = true;
            c.linux
                .capabilities
                .get_or_insert_with(Vec::new)
                .push("CAP_NET_ADMIN".into());
        },
        None,
    );
    let d = Daemon::start(false);
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(SDK_SCRIPT)
        .arg(d.socket())
        .arg(format!("{addr}/acme/sample:1.0"))
        .arg(format!("{addr}/acme/sample:2.0"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("SDK OK"),
        "SDK script failed: {stdout}\n{}\nplugind log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
}

/// The docker CLI's stored credentials for `registry` (what `docker login` writes).
fn write_cli_credentials(d: &Daemon, registry: &str, user: &str, password: &str) {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let dir = d.dir.join("docker");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        format!(r#"{{"auths":{{"{registry}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
}

#[test]
#[ignore = "needs root, docker-registry, runc, the shim, the docker CLI and the sample plugin"]
fn install_from_a_registry_with_basic_auth() {
    let registry = TestRegistry::start_with_htpasswd("alice", "s3cret");
    let addr = registry.addr().to_owned();
    // Seeded with the credentials (the push is the distribution crate's).
    let dir = tempfile::tempdir().unwrap();
    let store = plugind_blobstore::BlobStore::open(&dir.path().join("blobs")).unwrap();
    let tar = std::fs::File::open(sample_plugin_dir().with_extension("tar")).unwrap();
    let imported = import_create_tar(&store, "seed", tar, &LayerLimits::DEFAULT).unwrap();
    let mut config = PluginConfig::from_json(&imported.config).unwrap();
    config.rootfs = Some(PluginRootfs {
        diff_ids: vec![imported.layer.clone()],
        r#type: "layers".into(),
    });
    let mut bytes = serde_json::to_vec(&config).unwrap();
    bytes.push(b'\n');
    let c = store.ingest("config", &bytes[..], None).unwrap();
    let l = store.info(&imported.layer).unwrap();
    let manifest = PluginManifest::for_plugin((c.digest, c.size), (l.digest, l.size));
    let remote = format!("{addr}/acme/private:1.0");
    runtime()
        .block_on(Registry::new(RegistryOptions::default()).unwrap().push(
            &Reference::parse_normalized(&remote).unwrap(),
            &AuthConfig::basic("alice", "s3cret"),
            &manifest,
            &store,
            &|_| {},
        ))
        .unwrap();

    let d = Daemon::start(false);
    // No credentials: refused with the registry's reason.
    let err = d.docker_err(&[
        "plugin",
        "install",
        "--grant-all-permissions",
        "--disable",
        &remote,
    ]);
    assert!(err.contains("error resolving plugin reference"), "{err}");
    // Wrong credentials: refused too.
    write_cli_credentials(&d, &addr, "alice", "wrong");
    let err = d.docker_err(&[
        "plugin",
        "install",
        "--grant-all-permissions",
        "--disable",
        &remote,
    ]);
    assert!(err.contains("error resolving plugin reference"), "{err}");
    assert!(!d.docker(&["plugin", "inspect", &remote]).status.success());
    // The CLI's stored credentials (X-Registry-Auth): installed.
    write_cli_credentials(&d, &addr, "alice", "s3cret");
    let out = d.docker_ok(&[
        "plugin",
        "install",
        "--grant-all-permissions",
        "--disable",
        &remote,
    ]);
    assert!(out.contains(&format!("Installed plugin {remote}")), "{out}");
    assert_eq!(inspect(&d, &remote, "{{.PluginReference}}"), remote);
}
