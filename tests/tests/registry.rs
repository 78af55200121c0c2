//! The registry client against the real `docker-registry` (distribution 2.8): push then
//! resolve and fetch, re-push uploading nothing, cross-repository mounts, htpasswd Basic auth,
//! a registry that is down, missing tags and repositories, references by digest.
//!
//! `#[ignore]`d for plain `cargo test` (they start a registry); CI runs them. They panic when
//! `docker-registry` is missing.

use plugind_blobstore::BlobStore;
use plugind_distribution::{
    AuthConfig, DistributionError, FetchOutcome, PluginManifest, PushProgress, Registry,
    RegistryOptions,
};
use plugind_tests::registry::{free_port, TestRegistry};
use plugind_types::Reference;
use std::{sync::Mutex, time::Duration};

/// A blob store holding a plugin's config and layer, and the manifest naming them.
struct Fixture {
    _dir: tempfile::TempDir,
    store: BlobStore,
    manifest: PluginManifest,
}

fn fixture(seed: u8, layer_size: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&dir.path().join("blobs")).unwrap();
    let config = format!("{{\"Description\":\"test plugin {seed}\"}}\n").into_bytes();
    // Content that does not compress away, different per seed.
    let layer: Vec<u8> = (0..layer_size)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(u32::from(seed)) as u8
        })
        .collect();
    let c = store.ingest("config", &config[..], None).unwrap();
    let l = store.ingest("layer", &layer[..], None).unwrap();
    let manifest = PluginManifest::for_plugin((c.digest, c.size), (l.digest, l.size));
    Fixture {
        _dir: dir,
        store,
        manifest,
    }
}

fn client() -> Registry {
    Registry::new(RegistryOptions {
        request_timeout: Duration::from_secs(10),
        retries: 1,
        ..RegistryOptions::default()
    })
    .unwrap()
}

fn reference(s: &str) -> Reference {
    Reference::parse_normalized(s).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

const ANON: AuthConfig = AuthConfig {
    username: None,
    password: None,
    identity_token: None,
    registry_token: None,
};

#[test]
#[ignore = "starts docker-registry"]
fn push_then_resolve_and_fetch_round_trip() {
    let registry = TestRegistry::start();
    let fx = fixture(1, 300_000);
    let target = reference(&format!("{}/acme/sample:1.0", registry.addr()));
    let rt = runtime();
    let client = client();
    let events = Mutex::new(Vec::new());
    let (digest, size) = rt
        .block_on(client.push(&target, &ANON, &fx.manifest, &fx.store, &|p| {
            events.lock().unwrap().push(p)
        }))
        .unwrap();
    assert_eq!(digest, fx.manifest.digest);
    assert_eq!(size, fx.manifest.bytes.len() as u64);
    let events = events.into_inner().unwrap();
    for d in [&fx.manifest.layers[0], &fx.manifest.config] {
        assert!(events.contains(&PushProgress::Preparing(d.digest.clone())));
        assert!(events.contains(&PushProgress::UploadComplete(d.digest.clone())));
    }

    // A fresh client and store: everything comes from the registry.
    let other = self::client();
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let resolved = rt.block_on(other.resolve(&target, &ANON)).unwrap();
    assert_eq!(resolved, fx.manifest);
    let config = rt
        .block_on(other.fetch_config(&target, &ANON, &resolved.config, &store))
        .unwrap();
    assert_eq!(config, b"{\"Description\":\"test plugin 1\"}\n");
    assert!(store.contains(&resolved.config.digest));
    let seen = Mutex::new(0u64);
    let outcome = rt
        .block_on(
            other.fetch_blob(&target, &ANON, &resolved.layers[0], &store, &|n| {
                *seen.lock().unwrap() = n
            }),
        )
        .unwrap();
    assert_eq!(outcome, FetchOutcome::Downloaded);
    assert_eq!(*seen.lock().unwrap(), 300_000);
    assert_eq!(
        store.info(&resolved.layers[0].digest).unwrap().size,
        300_000
    );
    let again = rt
        .block_on(other.fetch_blob(&target, &ANON, &resolved.layers[0], &store, &|_| {}))
        .unwrap();
    assert_eq!(again, FetchOutcome::AlreadyExists);

    // By digest, and by tag plus digest.
    let by_digest = reference(&format!("{}/acme/sample@{}", registry.addr(), digest));
    assert_eq!(
        rt.block_on(other.resolve(&by_digest, &ANON)).unwrap(),
        fx.manifest
    );
    let both = reference(&format!("{}/acme/sample:1.0@{}", registry.addr(), digest));
    assert_eq!(
        rt.block_on(other.resolve(&both, &ANON)).unwrap(),
        fx.manifest
    );
}

#[test]
#[ignore = "starts docker-registry"]
fn repush_uploads_nothing_and_a_second_repository_mounts() {
    let registry = TestRegistry::start();
    let fx = fixture(2, 100_000);
    let target = reference(&format!("{}/acme/sample:1.0", registry.addr()));
    let rt = runtime();
    let client = client();
    rt.block_on(client.push(&target, &ANON, &fx.manifest, &fx.store, &|_| {}))
        .unwrap();
    let uploads = || registry.count_requests("PUT", "/blobs/uploads/");
    let upload_starts = || registry.count_requests("POST", "/blobs/uploads/");
    let manifest_puts = || registry.count_requests("PUT", "/manifests/");
    assert_eq!((uploads(), manifest_puts()), (2, 1), "{}", registry.log());

    // Again, with a fresh client (no memory of the first push): HEADs only.
    rt.block_on(super_fresh_push(&target, &fx)).unwrap();
    assert_eq!(
        (uploads(), upload_starts(), manifest_puts()),
        (2, 2, 1),
        "re-push uploaded something:\n{}",
        registry.log()
    );

    // The same blobs to another repository: mounted from the first, not uploaded.
    let events = Mutex::new(Vec::new());
    let second = reference(&format!("{}/acme/copy:2", registry.addr()));
    rt.block_on(client.push(&second, &ANON, &fx.manifest, &fx.store, &|p| {
        events.lock().unwrap().push(p)
    }))
    .unwrap();
    assert_eq!(
        uploads(),
        2,
        "blobs uploaded instead of mounted:\n{}",
        registry.log()
    );
    assert_eq!(registry.count_requests("POST", "mount="), 2);
    assert!(events.into_inner().unwrap().iter().any(
        |e| matches!(e, PushProgress::MountedFrom { repository, .. } if repository == "acme/sample")
    ));
    assert_eq!(
        rt.block_on(client.resolve(&second, &ANON)).unwrap(),
        fx.manifest
    );
}

async fn super_fresh_push(
    target: &Reference,
    fx: &Fixture,
) -> Result<(plugind_types::Digest, u64), DistributionError> {
    client()
        .push(target, &ANON, &fx.manifest, &fx.store, &|_| {})
        .await
}

#[test]
#[ignore = "starts docker-registry"]
fn htpasswd_basic_auth_right_and_wrong_credentials() {
    let registry = TestRegistry::start_with_htpasswd("alice", "s3cret:pw");
    let fx = fixture(3, 10_000);
    let target = reference(&format!("{}/private/plug:1", registry.addr()));
    let rt = runtime();
    let client = client();
    let good = AuthConfig::basic("alice", "s3cret:pw");
    let bad = AuthConfig::basic("alice", "wrong");

    let refused = rt.block_on(client.push(&target, &ANON, &fx.manifest, &fx.store, &|_| {}));
    assert!(
        matches!(refused, Err(DistributionError::Unauthorized { .. })),
        "{refused:?}"
    );
    let wrong = rt.block_on(client.push(&target, &bad, &fx.manifest, &fx.store, &|_| {}));
    assert!(
        matches!(wrong, Err(DistributionError::Unauthorized { .. })),
        "{wrong:?}"
    );
    rt.block_on(client.push(&target, &good, &fx.manifest, &fx.store, &|_| {}))
        .unwrap();
    // Credentials cached for alice are not used for an anonymous request.
    let anon = rt.block_on(client.resolve(&target, &ANON));
    assert!(
        matches!(anon, Err(DistributionError::Unauthorized { .. })),
        "{anon:?}"
    );
    let wrong = rt.block_on(client.resolve(&target, &bad));
    assert!(
        matches!(wrong, Err(DistributionError::Unauthorized { .. })),
        "{wrong:?}"
    );
    assert_eq!(
        rt.block_on(client.resolve(&target, &good)).unwrap(),
        fx.manifest
    );
}

#[test]
#[ignore = "starts docker-registry"]
fn missing_tag_and_repository_are_manifest_unknown() {
    let registry = TestRegistry::start();
    let fx = fixture(4, 1000);
    let rt = runtime();
    let client = client();
    let target = reference(&format!("{}/acme/sample:1.0", registry.addr()));
    rt.block_on(client.push(&target, &ANON, &fx.manifest, &fx.store, &|_| {}))
        .unwrap();
    for missing in ["acme/sample:nope", "acme/nothere:1.0"] {
        let r = reference(&format!("{}/{missing}", registry.addr()));
        let err = rt.block_on(client.resolve(&r, &ANON)).unwrap_err();
        assert!(
            matches!(err, DistributionError::ManifestUnknown { .. }),
            "{missing}: {err:?}"
        );
        assert_eq!(err.kind(), plugind_types::ErrorKind::NotFound);
    }
    let unknown_digest = reference(&format!(
        "{}/acme/sample@sha256:{}",
        registry.addr(),
        "0".repeat(64)
    ));
    assert!(matches!(
        rt.block_on(client.resolve(&unknown_digest, &ANON)),
        Err(DistributionError::ManifestUnknown { .. })
    ));
}

#[test]
#[ignore = "starts docker-registry"]
fn registry_down_is_unreachable() {
    // Proves the harness is usable here, then talks to a port nothing listens on.
    let _registry = TestRegistry::start();
    let rt = runtime();
    let r = reference(&format!("127.0.0.1:{}/acme/sample:1.0", free_port()));
    let err = rt.block_on(client().resolve(&r, &ANON)).unwrap_err();
    assert!(
        matches!(err, DistributionError::Unreachable { .. }),
        "{err:?}"
    );
    assert_eq!(err.kind(), plugind_types::ErrorKind::Unavailable);
    let text = err.to_string();
    assert!(
        text.contains("failed to do request: Get \"http://127.0.0.1:") && text.contains("refused"),
        "{text}"
    );
}

// ----- end to end: plugind + the docker CLI + docker-registry ---------------------------

const E2E: &str =
    "needs root, runc, the shim, the docker CLI, the packaged sample plugin and docker-registry";

fn sample_dir() -> String {
    plugind_tests::sample_plugin_dir()
        .to_string_lossy()
        .into_owned()
}

/// The registry's answer to a plain GET (no credentials): status and body.
fn registry_get(registry: &TestRegistry, path: &str, accept: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(registry.addr()).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n",
        registry.addr()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, raw[split + 4..].to_vec())
}

#[test]
#[ignore = "needs root, runc, the shim, the docker CLI, the packaged sample plugin and docker-registry"]
fn docker_plugin_push_then_repush_uploads_nothing() {
    let _ = E2E;
    let registry = TestRegistry::start();
    let d = plugind_tests::Daemon::start(false);
    let name = format!("{}/acme/sample:1.0", registry.addr());
    d.docker_ok(&["plugin", "create", &name, &sample_dir()]);

    let out = d.docker_ok(&["plugin", "push", &name]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "The push refers to repository [{}/acme/sample]",
            registry.addr()
        ),
        "{out}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.ends_with(": Preparing")).count(),
        6,
        "{out}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.ends_with(": Upload complete"))
            .count(),
        3,
        "{out}"
    );
    let uploads = || registry.count_requests("PUT", "/blobs/uploads/");
    let manifest_puts = || registry.count_requests("PUT", "/manifests/");
    assert_eq!((uploads(), manifest_puts()), (2, 1), "{}", registry.log());

    // Re-push: the same output, and nothing uploaded.
    assert_eq!(d.docker_ok(&["plugin", "push", &name]), out);
    assert_eq!(
        (uploads(), manifest_puts()),
        (2, 1),
        "re-push uploaded:\n{}",
        registry.log()
    );

    // The registry holds Docker's objects: the manifest the stream's aux names, and a config
    // blob that is the plugin's Config as Go encodes it (the CLI re-encodes it with Go's
    // encoding/json and Docker's field order) plus a newline.
    let (status, stream) = d
        .request("POST", &format!("/plugins/{name}/push"), None)
        .unwrap();
    assert_eq!(status, 200, "{stream}");
    let last: serde_json::Value =
        serde_json::from_str(stream.trim_end().lines().last().unwrap()).unwrap();
    let aux = &last["aux"];
    assert_eq!(aux["Tag"], "1.0", "{stream}");
    let digest = aux["Digest"].as_str().unwrap().to_owned();
    let (status, manifest) = registry_get(
        &registry,
        "/v2/acme/sample/manifests/1.0",
        "application/vnd.docker.distribution.manifest.v2+json",
    );
    assert_eq!(status, 200);
    assert_eq!(aux["Size"], manifest.len() as u64);
    assert_eq!(
        plugind_distribution::sha256_digest(&manifest).to_string(),
        digest
    );
    let parsed = PluginManifest::parse(manifest).unwrap();
    let (status, config_blob) = registry_get(
        &registry,
        &format!("/v2/acme/sample/blobs/{}", parsed.config.digest),
        "*/*",
    );
    assert_eq!(status, 200);
    let docker_encoded = d.docker_ok(&["plugin", "inspect", "-f", "{{json .Config}}", &name]);
    assert_eq!(String::from_utf8(config_blob).unwrap(), docker_encoded);
    // The layer is the one create stored, and the config names it in rootfs.diff_ids.
    let diff_id = d.docker_ok(&[
        "plugin",
        "inspect",
        "-f",
        "{{index .Config.Rootfs.DiffIds 0}}",
        &name,
    ]);
    assert_eq!(diff_id.trim(), parsed.layers[0].digest.to_string());
}

#[test]
#[ignore = "needs root, runc, the shim, the docker CLI, the packaged sample plugin and docker-registry"]
fn docker_plugin_push_errors_read_as_dockers() {
    let registry = TestRegistry::start();
    let d = plugind_tests::Daemon::start(false);
    let missing = format!("{}/acme/nosuch:1.0", registry.addr());
    let err = d.docker_err(&["plugin", "push", &missing]);
    assert!(
        err.contains(&format!("plugin \"{missing}\" not found")),
        "{err}"
    );
    let down = format!("127.0.0.1:{}/acme/down:1.0", free_port());
    d.docker_ok(&["plugin", "create", &down, &sample_dir()]);
    let err = d.docker_err(&["plugin", "push", &down]);
    assert!(
        err.starts_with("error pushing plugin: failed to do request: Head \"http://127.0.0.1:"),
        "{err}"
    );
}

#[test]
#[ignore = "needs root, runc, the shim, the docker CLI, the packaged sample plugin and docker-registry"]
fn created_pushed_installed_and_pushed_again_keeps_the_digest() {
    let registry = TestRegistry::start();
    let d = plugind_tests::Daemon::start(false);
    let first = format!("{}/acme/sample:1.0", registry.addr());
    d.docker_ok(&["plugin", "create", &first, &sample_dir()]);
    let aux = |name: &str| -> serde_json::Value {
        let (status, stream) = d
            .request("POST", &format!("/plugins/{name}/push"), None)
            .unwrap();
        assert_eq!(status, 200, "{stream}");
        let last = stream.trim_end().lines().last().unwrap().to_owned();
        serde_json::from_str::<serde_json::Value>(&last).unwrap()["aux"].clone()
    };
    let pushed = aux(&first);
    d.docker_ok(&["plugin", "rm", &first]);

    // Installed from the registry under another repository's name, then pushed there: the
    // stored manifest goes as is (same digest), its blobs mounted or found, none uploaded.
    let second = format!("{}/other/copy:2.0", registry.addr());
    d.docker_ok(&[
        "plugin",
        "install",
        "--grant-all-permissions",
        "--disable",
        "--alias",
        &second,
        &first,
    ]);
    let uploads_before = registry.count_requests("PUT", "/blobs/uploads/");
    let again = aux(&second);
    assert_eq!(again["Digest"], pushed["Digest"]);
    assert_eq!(again["Size"], pushed["Size"]);
    assert_eq!(again["Tag"], "2.0");
    assert_eq!(
        registry.count_requests("PUT", "/blobs/uploads/"),
        uploads_before,
        "blobs uploaded again:\n{}",
        registry.log()
    );
    assert_eq!(
        registry.count_requests("POST", "mount="),
        2,
        "{}",
        registry.log()
    );
}
