//! Public-API tests of the volume service: a fake plugin getter (counting references like the
//! manager does) pointing at real `volume-plugin` processes on temporary sockets, plus fake
//! drivers that hang or drop connections.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use plugind_manager::client::PluginClient;
use plugind_types::ErrorKind;
use plugind_volumes::{
    DriverHandle, FilterUse, PluginGetter, Volume, VolumeConfig, VolumeError, VolumeFilters,
    VolumeService, ANONYMOUS_LABEL,
};
use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;

// ----- fake getter ---------------------------------------------------------------------------

#[derive(Debug)]
struct FakePlugin {
    socket: PathBuf,
    enabled: bool,
    /// A new id per `add`, like a plugin created again after `rm -f`.
    id: String,
}

/// (volume, action, attributes) of one published volume event.
type LoggedEvent = (String, String, BTreeMap<String, String>);

#[derive(Debug, Default)]
struct FakeState {
    /// Full name -> plugin.
    plugins: BTreeMap<String, FakePlugin>,
    /// (plugin, holder) -> count, like the manager's persisted references.
    refs: BTreeMap<(String, String), u32>,
    acquires: u32,
    releases: u32,
    next_id: u32,
    events: Vec<LoggedEvent>,
}

/// The manager's plugin getter, in memory: names resolve with an implicit `:latest`.
#[derive(Debug, Default)]
struct FakeGetter {
    state: Mutex<FakeState>,
}

impl FakeGetter {
    fn add(&self, name: &str, socket: &Path) {
        let mut s = self.state.lock().unwrap();
        s.next_id += 1;
        let id = format!("{:064x}", s.next_id);
        s.plugins.insert(
            name.to_owned(),
            FakePlugin {
                socket: socket.to_path_buf(),
                enabled: true,
                id,
            },
        );
    }

    fn events(&self) -> Vec<LoggedEvent> {
        std::mem::take(&mut self.state.lock().unwrap().events)
    }

    /// `docker plugin rm -f`: the plugin and its references are gone.
    fn remove_plugin(&self, name: &str) {
        let mut s = self.state.lock().unwrap();
        s.plugins.remove(name);
        s.refs.retain(|(p, _), _| p != name);
    }

    fn set_enabled(&self, name: &str, enabled: bool) {
        self.state
            .lock()
            .unwrap()
            .plugins
            .get_mut(name)
            .unwrap()
            .enabled = enabled;
    }

    fn set_socket(&self, name: &str, socket: &Path) {
        self.state
            .lock()
            .unwrap()
            .plugins
            .get_mut(name)
            .unwrap()
            .socket = socket.to_path_buf();
    }

    fn refs(&self, plugin: &str, volume: &str) -> u32 {
        let key = (plugin.to_owned(), format!("volume:{volume}"));
        self.state
            .lock()
            .unwrap()
            .refs
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    fn total_refs(&self) -> u32 {
        self.state.lock().unwrap().refs.values().sum()
    }

    fn acquires(&self) -> u32 {
        self.state.lock().unwrap().acquires
    }

    fn releases(&self) -> u32 {
        self.state.lock().unwrap().releases
    }

    fn resolve(&self, driver: &str) -> Result<DriverHandle, VolumeError> {
        let s = self.state.lock().unwrap();
        let full = if driver.contains(':') {
            driver.to_owned()
        } else {
            format!("{driver}:latest")
        };
        let Some(p) = s.plugins.get(&full) else {
            return Err(VolumeError::DriverLookup {
                driver: driver.to_owned(),
                kind: ErrorKind::NotFound,
                reason: format!("plugin {driver:?} not found"),
            });
        };
        if !p.enabled {
            return Err(VolumeError::DriverLookup {
                driver: driver.to_owned(),
                kind: ErrorKind::FailedPrecondition,
                reason: format!("plugin {full} is not enabled"),
            });
        }
        Ok(DriverHandle {
            name: full.clone(),
            id: p.id.clone(),
            client: PluginClient::new(&full, &p.socket),
        })
    }
}

#[async_trait]
impl PluginGetter for FakeGetter {
    async fn acquire(&self, driver: &str, holder: &str) -> Result<DriverHandle, VolumeError> {
        let h = self.resolve(driver)?;
        let mut s = self.state.lock().unwrap();
        s.acquires += 1;
        *s.refs
            .entry((h.name.clone(), holder.to_owned()))
            .or_insert(0) += 1;
        Ok(h)
    }

    async fn release(&self, driver: &str, holder: &str) -> Result<(), VolumeError> {
        let mut s = self.state.lock().unwrap();
        s.releases += 1;
        // By id (what the service uses when it recorded one) or by name, like the manager.
        let name = s
            .plugins
            .iter()
            .find(|(_, p)| p.id == driver)
            .map_or(driver.to_owned(), |(n, _)| n.clone());
        let key = (name, holder.to_owned());
        if let Some(n) = s.refs.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                s.refs.remove(&key);
            }
        }
        Ok(())
    }

    async fn get(&self, driver: &str) -> Result<DriverHandle, VolumeError> {
        self.resolve(driver)
    }

    async fn plugin_exists(&self, id: &str) -> bool {
        self.state
            .lock()
            .unwrap()
            .plugins
            .values()
            .any(|p| p.id == id)
    }

    async fn reference_holder(&self, holder: &str) -> Option<String> {
        let s = self.state.lock().unwrap();
        s.refs
            .keys()
            .find(|(_, h)| h == holder)
            .and_then(|(plugin, _)| s.plugins.get(plugin))
            .map(|p| p.id.clone())
    }

    fn log_volume_event(&self, volume: &str, action: &str, attributes: BTreeMap<String, String>) {
        self.state
            .lock()
            .unwrap()
            .events
            .push((volume.to_owned(), action.to_owned(), attributes));
    }
}

// ----- real and fake drivers -----------------------------------------------------------------

fn plugin_binary() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(t) = option_env!("CARGO_TARGET_DIR") {
        candidates.push(Path::new(t).join("debug/volume-plugin"));
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    candidates.push(target.join("debug/volume-plugin"));
    candidates.push(target.join("x86_64-unknown-linux-gnu/release/volume-plugin"));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!("volume-plugin binary not found (looked at {candidates:?}): run `cargo build -p volume-plugin` first")
        })
}

/// A `volume-plugin` process serving `<dir>/<tag>.sock` with volumes under `<dir>/<tag>-data`.
struct SamplePlugin {
    child: Child,
    socket: PathBuf,
    data: PathBuf,
}

impl SamplePlugin {
    fn start(dir: &Path, tag: &str) -> SamplePlugin {
        let socket = dir.join(format!("{tag}.sock"));
        let data = dir.join(format!("{tag}-data"));
        let mut child = Command::new(plugin_binary())
            .arg("--root")
            .arg(&data)
            .arg("--socket")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn volume-plugin");
        // Readiness = the socket accepts; give up (and fail) if the process dies or after 20 s.
        for _ in 0..4000 {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return SamplePlugin {
                    child,
                    socket,
                    data,
                };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("volume-plugin exited before listening: {status}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("volume-plugin did not listen on {}", socket.display());
    }

    /// SIGKILL, as a crash would.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SamplePlugin {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A driver that accepts connections and never answers.
fn hung_driver(socket: &Path) -> tokio::task::JoinHandle<()> {
    let listener = UnixListener::bind(socket).unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    })
}

/// A driver that reads the request and then closes the connection (a crash mid-call).
fn dropping_driver(socket: &Path) -> tokio::task::JoinHandle<()> {
    let listener = UnixListener::bind(socket).unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            drop(conn);
        }
    })
}

struct Env {
    dir: tempfile::TempDir,
    getter: Arc<FakeGetter>,
    service: VolumeService,
    plugin: SamplePlugin,
}

fn config() -> VolumeConfig {
    // Short, so the hang tests end quickly; the sample plugin answers in microseconds.
    VolumeConfig::uniform(Duration::from_secs(2))
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let plugin = SamplePlugin::start(dir.path(), "vol");
    let getter = Arc::new(FakeGetter::default());
    getter.add("vol:latest", &plugin.socket);
    let service = VolumeService::open(&dir.path().join("state"), getter.clone(), config())
        .await
        .unwrap();
    Env {
        dir,
        getter,
        service,
        plugin,
    }
}

fn no_filters() -> VolumeFilters {
    VolumeFilters::default()
}

fn names(vols: &[Volume]) -> Vec<String> {
    vols.iter().map(|v| v.name.clone()).collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn create(s: &VolumeService, name: &str, driver: &str) -> Result<Volume, VolumeError> {
    s.create(Some(name), driver, BTreeMap::new(), BTreeMap::new())
        .await
}

fn record_path(e: &Env, name: &str) -> PathBuf {
    e.dir
        .path()
        .join("state/volumes")
        .join(format!("{name}.json"))
}

// ----- tests ---------------------------------------------------------------------------------

#[tokio::test]
async fn create_inspect_list_remove_with_a_real_driver() {
    let e = env().await;
    let v = e
        .service
        .create(
            Some("v1"),
            "vol",
            labels(&[("o", "1")]),
            labels(&[("team", "a")]),
        )
        .await
        .unwrap();
    assert_eq!(v.name, "v1");
    assert_eq!(v.driver, "vol:latest");
    assert_eq!(v.scope, "local");
    assert_eq!(v.options, labels(&[("o", "1")]));
    assert_eq!(v.labels, labels(&[("team", "a")]));
    assert_eq!(v.created_at.len(), "2026-11-26T13:19:00Z".len());
    assert!(v.created_at.ends_with('Z'));
    assert!(
        e.plugin.data.join("v1").is_dir(),
        "the driver created the volume"
    );
    assert_eq!(e.getter.refs("vol:latest", "v1"), 1);
    assert!(record_path(&e, "v1").is_file());

    let got = e.service.get("v1").await.unwrap();
    let expected_mp = e.plugin.data.join("v1").display().to_string();
    assert_eq!(got.mountpoint, expected_mp);
    assert_eq!(got.status.as_ref().unwrap()["mounts"], 0);
    assert_eq!(got.created_at, v.created_at);

    let (vols, warnings) = e.service.list(&no_filters()).await.unwrap();
    assert_eq!(names(&vols), ["v1"]);
    assert_eq!(vols[0].mountpoint, expected_mp);
    assert!(
        vols[0].status.is_none(),
        "list carries no Status, as in Docker"
    );
    assert!(warnings.is_empty(), "{warnings:?}");

    // Idempotent for the same driver, by short or full name: no second reference.
    for d in ["vol", "vol:latest"] {
        let again = create(&e.service, "v1", d).await.unwrap();
        assert_eq!(again.created_at, v.created_at);
        assert_eq!(again.labels, v.labels);
    }
    // Without a driver, create returns the existing volume too (Docker skips the check).
    assert_eq!(
        create(&e.service, "v1", "").await.unwrap().driver,
        "vol:latest"
    );
    assert_eq!(e.getter.acquires(), 1);
    assert_eq!(e.getter.refs("vol:latest", "v1"), 1);
    // A new volume without a driver asks for `local`, which this setup does not have.
    let err = create(&e.service, "v9", "").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "create v9: error looking up volume plugin local: plugin \"local\" not found"
    );

    e.service.remove("v1", false).await.unwrap();
    assert_eq!(e.getter.refs("vol:latest", "v1"), 0);
    assert!(
        !e.plugin.data.join("v1").exists(),
        "the driver removed the volume"
    );
    assert!(!record_path(&e, "v1").exists());
    let err = e.service.get("v1").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.to_string(), "get v1: no such volume");
    let err = e.service.remove("v1", false).await.unwrap_err();
    assert_eq!(err.to_string(), "get v1: no such volume");
    e.service.remove("v1", true).await.unwrap();
}

#[tokio::test]
async fn create_refuses_bad_names_unknown_drivers_and_other_drivers() {
    let e = env().await;
    let other = SamplePlugin::start(e.dir.path(), "other");
    e.getter.add("other:latest", &other.socket);
    create(&e.service, "v1", "vol").await.unwrap();

    let err = create(&e.service, "v1", "other").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(
        err.to_string(),
        "create v1: driver 'vol:latest' already has volume 'v1': volume name must be unique"
    );

    let err = create(&e.service, "v2", "nope").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        err.to_string(),
        "create v2: error looking up volume plugin nope: plugin \"nope\" not found"
    );

    for bad in ["a", "a/b", "../x", "-x", "x y"] {
        let err = create(&e.service, bad, "vol").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad}");
        assert!(
            err.to_string()
                .contains("includes invalid characters for a local volume name"),
            "{err}"
        );
    }

    e.getter.set_enabled("other:latest", false);
    let err = create(&e.service, "v3", "other").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);

    // Nothing half-made is left: one volume, one reference, one record file.
    let (vols, _) = e.service.list(&no_filters()).await.unwrap();
    assert_eq!(names(&vols), ["v1"]);
    assert_eq!(e.getter.total_refs(), 1);
    let files = std::fs::read_dir(e.dir.path().join("state/volumes"))
        .unwrap()
        .count();
    assert_eq!(files, 1);
}

#[tokio::test]
async fn anonymous_volumes_get_a_random_name_and_the_label() {
    let e = env().await;
    let v = e
        .service
        .create(None, "vol", BTreeMap::new(), BTreeMap::new())
        .await
        .unwrap();
    assert_eq!(v.name.len(), 64);
    assert!(v.name.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(v.labels, labels(&[(ANONYMOUS_LABEL, "")]));
    assert_eq!(e.getter.refs("vol:latest", &v.name), 1);
}

#[tokio::test]
async fn concurrent_creates_of_one_name_take_one_reference() {
    let e = env().await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = e.service.clone();
        tasks.push(tokio::spawn(async move { create(&s, "same", "vol").await }));
    }
    let mut created = Vec::new();
    for t in tasks {
        created.push(t.await.unwrap().unwrap().created_at);
    }
    created.dedup();
    assert_eq!(created.len(), 1);
    assert_eq!(e.getter.acquires(), 1);
    assert_eq!(e.getter.refs("vol:latest", "same"), 1);
}

#[tokio::test]
async fn filters_and_prune() {
    let e = env().await;
    let s = &e.service;
    s.create(
        Some("alpha"),
        "vol",
        BTreeMap::new(),
        labels(&[("env", "prod")]),
    )
    .await
    .unwrap();
    s.create(
        Some("beta"),
        "vol",
        BTreeMap::new(),
        labels(&[("env", "dev")]),
    )
    .await
    .unwrap();
    let anon = s
        .create(None, "vol", BTreeMap::new(), BTreeMap::new())
        .await
        .unwrap()
        .name;
    let mp = s.mount("beta", "c1").await.unwrap();
    assert_eq!(mp, e.plugin.data.join("beta").display().to_string());

    let list = |json: &'static str| {
        let s = s.clone();
        async move {
            let f = VolumeFilters::parse(json, FilterUse::List).unwrap();
            names(&s.list(&f).await.unwrap().0)
        }
    };
    assert_eq!(list(r#"{"label":["env"]}"#).await, ["alpha", "beta"]);
    assert_eq!(list(r#"{"label":{"env=prod":true}}"#).await, ["alpha"]);
    let mut unused = vec!["alpha".to_owned(), anon.clone()];
    unused.sort();
    assert_eq!(list(r#"{"dangling":["true"]}"#).await, unused);
    assert_eq!(list(r#"{"dangling":["false"]}"#).await, ["beta"]);
    assert_eq!(list(r#"{"name":["lph"]}"#).await, ["alpha"]);
    assert_eq!(list(r#"{"driver":["vol"]}"#).await.len(), 3);
    assert!(list(r#"{"driver":["other"]}"#).await.is_empty());
    let err = s
        .list(&VolumeFilters {
            all: Some(true),
            ..VolumeFilters::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "invalid filter 'all'");

    // Default prune: only anonymous volumes.
    let prune = |json: &'static str| {
        let s = s.clone();
        async move {
            s.prune(&VolumeFilters::parse(json, FilterUse::Prune).unwrap())
                .await
                .unwrap()
        }
    };
    let r = prune("").await;
    assert_eq!(r.volumes_deleted, vec![anon.clone()]);
    assert_eq!(r.space_reclaimed, 0);
    assert_eq!(e.getter.refs("vol:latest", &anon), 0);
    // all=true, but label! keeps alpha; beta is mounted.
    let r = prune(r#"{"all":["true"],"label!":["env=prod"]}"#).await;
    assert!(r.volumes_deleted.is_empty(), "{r:?}");
    let r = prune(r#"{"all":["true"]}"#).await;
    assert_eq!(r.volumes_deleted, ["alpha"]);
    assert_eq!(e.getter.refs("vol:latest", "alpha"), 0);
    assert_eq!(e.getter.refs("vol:latest", "beta"), 1);
    assert_eq!(list("").await, ["beta"]);
}

#[tokio::test]
async fn mounted_volumes_cannot_be_removed() {
    let e = env().await;
    create(&e.service, "v1", "vol").await.unwrap();
    e.service.mount("v1", "c1").await.unwrap();
    e.service.mount("v1", "c2").await.unwrap();
    for force in [false, true] {
        let err = e.service.remove("v1", force).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        assert_eq!(err.to_string(), "remove v1: volume is in use - [c1, c2]");
    }
    assert_eq!(
        e.service.get("v1").await.unwrap().status.unwrap()["mounts"],
        2,
        "the driver saw both mounts"
    );
    let err = e.service.mount("v1", "").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let err = e.service.mount("nope", "c1").await.unwrap_err();
    assert_eq!(err.to_string(), "get nope: no such volume");

    e.service.unmount("v1", "c1").await.unwrap();
    e.service.unmount("v1", "c2").await.unwrap();
    e.service.remove("v1", false).await.unwrap();
    assert_eq!(e.getter.total_refs(), 0);
}

#[tokio::test]
async fn force_removes_the_record_when_the_driver_refuses() {
    let e = env().await;
    create(&e.service, "v1", "vol").await.unwrap();
    // Mounted behind plugind's back, so the driver itself refuses to remove it.
    PluginClient::new("vol:latest", &e.plugin.socket)
        .call(
            "VolumeDriver.Mount",
            Some(&serde_json::json!({"Name": "v1", "ID": "outside"})),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let err = e.service.remove("v1", false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal);
    assert_eq!(
        err.to_string(),
        "remove v1: VolumeDriver.Remove: volume v1 is in use (1 mounts)"
    );
    // The failed remove left the volume as it was.
    assert!(e.service.get("v1").await.is_ok());
    assert_eq!(e.getter.refs("vol:latest", "v1"), 1);

    e.service.remove("v1", true).await.unwrap();
    assert!(e.service.get("v1").await.is_err());
    assert_eq!(e.getter.refs("vol:latest", "v1"), 0);
    assert!(!record_path(&e, "v1").exists());
}

#[tokio::test]
async fn reopen_keeps_volumes_and_references_without_reacquiring() {
    let e = env().await;
    create(&e.service, "v1", "vol").await.unwrap();
    create(&e.service, "v2", "vol").await.unwrap();
    e.service.mount("v2", "c1").await.unwrap();
    let state = e.dir.path().join("state");
    let vdir = state.join("volumes");
    // A torn record, and a create that crashed after taking its reference.
    std::fs::write(vdir.join("torn.json"), b"{\"FormatVersion\":1,").unwrap();
    let mut crashed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vdir.join("v1.json")).unwrap()).unwrap();
    crashed["Name"] = "v3".into();
    crashed["State"] = "creating".into();
    std::fs::write(vdir.join("v3.json"), crashed.to_string()).unwrap();
    e.getter.acquire("vol:latest", "volume:v3").await.unwrap();
    drop(e.service);

    let acquires = e.getter.acquires();
    let service = VolumeService::open(&state, e.getter.clone(), config())
        .await
        .unwrap();
    let report = service.open_report();
    assert_eq!(report.loaded, ["v1", "v2"]);
    assert_eq!(report.finished, ["v3"]);
    assert_eq!(report.quarantined.len(), 1);
    assert_eq!(e.getter.acquires(), acquires, "open took no reference");
    assert_eq!(e.getter.refs("vol:latest", "v1"), 1);
    assert_eq!(e.getter.refs("vol:latest", "v2"), 1);
    assert_eq!(
        e.getter.refs("vol:latest", "v3"),
        0,
        "the crashed create was rolled back"
    );
    assert!(!vdir.join("v3.json").exists());

    let (vols, _) = service.list(&no_filters()).await.unwrap();
    assert_eq!(names(&vols), ["v1", "v2"]);
    let err = service.remove("v2", false).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "remove v2: volume is in use - [c1]",
        "mounts survive"
    );
    service.remove("v1", false).await.unwrap();
    assert_eq!(e.getter.refs("vol:latest", "v1"), 0);
}

#[tokio::test]
async fn a_hung_driver_fails_calls_at_their_deadline_and_names_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let getter = Arc::new(FakeGetter::default());
    let hang_sock = dir.path().join("hang.sock");
    let _hang = hung_driver(&hang_sock);
    getter.add("hang:latest", &hang_sock);
    let plugin = SamplePlugin::start(dir.path(), "vol");
    getter.add("vol:latest", &plugin.socket);
    let service = VolumeService::open(
        &dir.path().join("state"),
        getter.clone(),
        VolumeConfig::uniform(Duration::from_millis(300)),
    )
    .await
    .unwrap();

    let err = create(&service, "h1", "hang").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        err.to_string()
            .starts_with("create h1: plugin hang:latest: VolumeDriver."),
        "{err}"
    );
    assert!(
        err.to_string().contains("did not answer within 300ms"),
        "{err}"
    );
    assert_eq!(
        getter.total_refs(),
        0,
        "the failed create released its reference"
    );
    assert!(service.list(&no_filters()).await.unwrap().0.is_empty());

    // A working driver that hangs later (same plugin, now answering nothing).
    create(&service, "v1", "vol").await.unwrap();
    getter.set_socket("vol:latest", &hang_sock);
    let err = service.get("v1").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        err.to_string()
            .contains("plugin vol:latest: VolumeDriver.Get did not answer"),
        "{err}"
    );
    let (vols, warnings) = service.list(&no_filters()).await.unwrap();
    assert_eq!(names(&vols), ["v1"]);
    assert_eq!(
        warnings,
        ["list vol:latest: plugin vol:latest: VolumeDriver.List did not answer within 300ms"]
    );
    let err = service.mount("v1", "c1").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let err = service.remove("v1", false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(
        getter.refs("vol:latest", "v1"),
        1,
        "a failed remove keeps the reference"
    );
    service.remove("v1", true).await.unwrap();
    assert_eq!(getter.total_refs(), 0);
}

#[tokio::test]
async fn a_killed_or_crashing_driver_gives_clear_errors() {
    let mut e = env().await;
    create(&e.service, "v1", "vol").await.unwrap();
    e.plugin.kill();
    let err = e.service.get("v1").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        err.to_string()
            .starts_with("get v1: plugin vol:latest: cannot connect to "),
        "{err}"
    );

    // A driver that dies in the middle of answering.
    let drop_sock = e.dir.path().join("drop.sock");
    let _drop = dropping_driver(&drop_sock);
    e.getter.set_socket("vol:latest", &drop_sock);
    let err = e.service.mount("v1", "c1").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal);
    assert!(
        err.to_string()
            .starts_with("mount v1: plugin vol:latest: VolumeDriver.Mount: "),
        "{err}"
    );
    e.service.remove("v1", true).await.unwrap();
    assert_eq!(e.getter.total_refs(), 0);
}

#[tokio::test]
async fn orphaned_volumes_answer_at_once_and_can_be_removed() {
    let mut e = env().await;
    create(&e.service, "v1", "vol").await.unwrap();
    create(&e.service, "v2", "vol").await.unwrap();
    e.service.mount("v2", "c1").await.unwrap();
    // `docker plugin rm -f vol`: the process and the plugin are gone.
    e.plugin.kill();
    e.getter.remove_plugin("vol:latest");

    let (vols, warnings) = e.service.list(&no_filters()).await.unwrap();
    assert_eq!(names(&vols), ["v1", "v2"]);
    assert_eq!(vols[0].driver, "vol:latest");
    assert!(warnings.is_empty(), "{warnings:?}");
    let v = e.service.get("v1").await.unwrap();
    assert_eq!(v.driver, "vol:latest");
    assert_eq!(
        v.status.unwrap()["Error"],
        "error looking up volume plugin vol:latest: plugin \"vol:latest\" not found"
    );

    let releases = e.getter.releases();
    e.service.remove("v1", false).await.unwrap();
    assert_eq!(
        e.getter.releases(),
        releases + 1,
        "release is still asked for, and ignored"
    );
    assert!(e.service.get("v1").await.is_err());
    // A mount of the gone driver is forgotten on unmount, then the volume can go.
    e.service.unmount("v2", "c1").await.unwrap();
    e.service.remove("v2", false).await.unwrap();
    assert!(e.service.list(&no_filters()).await.unwrap().0.is_empty());
}

#[tokio::test]
async fn a_disabled_driver_blocks_remove_unless_forced() {
    let e = env().await;
    create(&e.service, "v1", "vol").await.unwrap();
    e.getter.set_enabled("vol:latest", false);
    let v = e.service.get("v1").await.unwrap();
    assert!(v.status.unwrap()["Error"]
        .as_str()
        .unwrap()
        .contains("is not enabled"));
    let err = e.service.remove("v1", false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(
        err.to_string()
            .starts_with("remove v1: error looking up volume plugin vol:latest"),
        "{err}"
    );
    assert_eq!(e.getter.refs("vol:latest", "v1"), 1);
    e.service.remove("v1", true).await.unwrap();
    assert_eq!(e.getter.refs("vol:latest", "v1"), 0);
}

fn event(volume: &str, action: &str, attributes: &[(&str, &str)]) -> LoggedEvent {
    (volume.to_owned(), action.to_owned(), labels(attributes))
}

#[tokio::test]
async fn volume_events_are_published_like_dockers() {
    let e = env().await;
    let driver = [("driver", "vol:latest")];
    create(&e.service, "v1", "vol").await.unwrap();
    create(&e.service, "v1", "vol").await.unwrap();
    assert_eq!(
        e.getter.events(),
        [event("v1", "create", &driver)],
        "a create of an existing volume is no event"
    );
    e.service.mount("v1", "c1").await.unwrap();
    e.service.unmount("v1", "c1").await.unwrap();
    e.service.remove("v1", false).await.unwrap();
    let with_caller = [("container", "c1"), ("driver", "vol:latest")];
    assert_eq!(
        e.getter.events(),
        [
            event("v1", "mount", &with_caller),
            event("v1", "unmount", &with_caller),
            event("v1", "destroy", &driver),
        ]
    );
    let anon = e
        .service
        .create(None, "vol", BTreeMap::new(), BTreeMap::new())
        .await
        .unwrap();
    e.service.prune(&no_filters()).await.unwrap();
    assert_eq!(
        e.getter.events(),
        [
            event(&anon.name, "create", &driver),
            event(&anon.name, "destroy", &driver),
            event("", "prune", &[("reclaimed", "0")]),
        ]
    );
    // Failures publish nothing.
    assert!(create(&e.service, "v2", "missing").await.is_err());
    assert!(e.service.remove("nope", false).await.is_err());
    assert!(e.getter.events().is_empty());
}

/// `docker plugin rm -f` of a driver with volumes, then a new plugin of the same name: Docker
/// sends the old volumes' calls to the new plugin (which answers "no such volume": 500) and the
/// old references no longer protect anything. plugind treats them as orphans.
#[tokio::test]
async fn a_recreated_plugin_of_the_same_name_is_not_the_orphans_driver() {
    let mut e = env().await;
    for v in ["v1", "v2", "v3"] {
        create(&e.service, v, "vol").await.unwrap();
    }
    assert!(e.plugin.data.join("v1").is_dir());
    e.plugin.kill();
    e.getter.remove_plugin("vol:latest");
    let new = SamplePlugin::start(e.dir.path(), "vol-again");
    e.getter.add("vol:latest", &new.socket);

    let v = e.service.get("v1").await.unwrap();
    let status = v.status.unwrap()["Error"].as_str().unwrap().to_owned();
    assert!(status.contains("was removed"), "{status}");
    assert_eq!(v.mountpoint, "");
    let (vols, warnings) = e.service.list(&no_filters()).await.unwrap();
    assert_eq!(names(&vols), ["v1", "v2", "v3"]);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(
        e.getter.total_refs() == 0,
        "no old volume holds the new plugin: it can be disabled"
    );
    let err = e.service.mount("v1", "c1").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    // Removal answers at once without asking the new plugin, enabled or not.
    e.service.remove("v1", false).await.unwrap();
    e.getter.set_enabled("vol:latest", false);
    e.service.remove("v2", false).await.unwrap();
    e.getter.set_enabled("vol:latest", true);
    // A create of an orphan's name makes a new volume on the new plugin.
    let v3 = create(&e.service, "v3", "vol").await.unwrap();
    assert_eq!(v3.driver, "vol:latest");
    assert_eq!(e.getter.refs("vol:latest", "v3"), 1);
    assert!(new.data.join("v3").is_dir());
    assert!(!new.data.join("v1").exists());
    assert!(e
        .service
        .get("v3")
        .await
        .unwrap()
        .status
        .is_none_or(|s| !s.contains_key("Error")));
    e.service.remove("v3", false).await.unwrap();
    assert_eq!(e.getter.total_refs(), 0);
    assert_eq!(
        names(&e.service.list(&no_filters()).await.unwrap().0),
        Vec::<String>::new()
    );
}

/// Records written before plugind kept driver ids get the id of the plugin holding their
/// reference at the next open, so the orphan rule covers them too.
#[tokio::test]
async fn open_records_the_driver_id_of_older_records() {
    let mut e = env().await;
    create(&e.service, "v1", "vol").await.unwrap();
    let path = record_path(&e, "v1");
    let mut old: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(old["DriverId"].is_string(), "{old}");
    old.as_object_mut().unwrap().remove("DriverId");
    std::fs::write(&path, old.to_string()).unwrap();
    drop(e.service);
    let service = VolumeService::open(&e.dir.path().join("state"), e.getter.clone(), config())
        .await
        .unwrap();
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(rec["DriverId"].is_string(), "{rec}");
    // Now a re-created plugin of the same name is not taken for its driver.
    e.plugin.kill();
    e.getter.remove_plugin("vol:latest");
    let new = SamplePlugin::start(e.dir.path(), "vol-new");
    e.getter.add("vol:latest", &new.socket);
    let v = service.get("v1").await.unwrap();
    assert!(v.status.unwrap()["Error"]
        .as_str()
        .unwrap()
        .contains("was removed"));
    service.remove("v1", false).await.unwrap();
}
