//! Test harness: an in-memory fake [`PluginBackend`] with Docker's messages, the server on a
//! temporary unix socket, and a small HTTP client over that socket.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::{
    collections::BTreeMap,
    io::Read,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use plugind_api::{
    BackendError, BackendInfo, EventMessage, EventSubscription, LogLine, LogSource, LogStream,
    LogsOptions, PluginBackend, PluginJson, PluginPrivilege, PluginStatus, ProgressSink,
    RemoteOperation, RuntimeInfo, ServerOptions,
};
use plugind_manager::{manager::PullNames, progress::Progress};
use plugind_types::{
    config::{PluginConfig, PluginSettings},
    ErrorKind, Reference,
};
use tokio::sync::{broadcast, oneshot};

pub fn now_nanos() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

/// An in-memory plugin manager with Docker's rules and messages for the parts the API shows.
pub struct Fake {
    plugins: Mutex<Vec<PluginJson>>,
    events: Mutex<Vec<EventMessage>>,
    tx: broadcast::Sender<EventMessage>,
    logs_tx: broadcast::Sender<LogLine>,
    /// Every mutating call, for "nothing changed" assertions: (op, name).
    pub calls: Mutex<Vec<(String, String)>>,
    /// The last enable timeout seen.
    pub last_timeout: Mutex<Option<Option<Duration>>>,
    /// Bytes read by the last create.
    pub last_create_bytes: Mutex<u64>,
    next_id: Mutex<u8>,
}

impl Fake {
    pub fn new() -> Arc<Self> {
        Arc::new(Fake {
            plugins: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            tx: broadcast::channel(64).0,
            logs_tx: broadcast::channel(64).0,
            calls: Mutex::new(Vec::new()),
            last_timeout: Mutex::new(None),
            last_create_bytes: Mutex::new(0),
            next_id: Mutex::new(0),
        })
    }

    /// Adds a plugin directly (no event), returns its id.
    pub fn add(&self, name: &str, config_json: &str, enabled: bool) -> String {
        let config = PluginConfig::from_json(config_json.as_bytes()).unwrap();
        let id = {
            let mut n = self.next_id.lock().unwrap();
            *n += 1;
            format!("{:02x}", *n).repeat(32)
        };
        let settings = PluginSettings::initial(&config);
        self.plugins.lock().unwrap().push(PluginJson {
            config,
            enabled,
            id: id.clone(),
            name: name.to_owned(),
            plugin_reference: name.to_owned(),
            settings,
            plugind: Some(PluginStatus {
                state: if enabled { "running" } else { "stopped" }.to_owned(),
                pid: enabled.then_some(4242),
                restart_count: 0,
                last_error: None,
                health: None,
            }),
        });
        id
    }

    pub fn publish(&self, ev: EventMessage) {
        let mut events = self.events.lock().unwrap();
        events.push(ev.clone());
        let _ = self.tx.send(ev);
    }

    pub fn event_receivers(&self) -> usize {
        self.tx.receiver_count()
    }

    pub fn log(&self, line: &str) {
        let _ = self.logs_tx.send(LogLine {
            time_nano: now_nanos(),
            source: LogSource::Stdout,
            line: line.to_owned(),
        });
    }

    pub fn log_receivers(&self) -> usize {
        self.logs_tx.receiver_count()
    }

    pub fn names(&self) -> Vec<String> {
        self.plugins
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }

    fn record(&self, op: &str, name: &str) {
        self.calls
            .lock()
            .unwrap()
            .push((op.to_owned(), name.to_owned()));
    }

    /// moby's `resolvePluginID` over the fake's plugins; returns the index.
    fn find(&self, plugins: &[PluginJson], name: &str) -> Result<usize, BackendError> {
        if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return plugins
                .iter()
                .position(|p| p.id == name)
                .ok_or_else(|| BackendError::plugin_not_found(name));
        }
        let r =
            Reference::parse_normalized(name).map_err(|_| BackendError::plugin_not_found(name))?;
        if r.digest().is_some() {
            return Err(BackendError::plugin_not_found(name));
        }
        let familiar = r.with_default_tag().familiar_string();
        if let Some(i) = plugins.iter().position(|p| p.name == familiar) {
            return Ok(i);
        }
        let matches: Vec<usize> = plugins
            .iter()
            .enumerate()
            .filter(|(_, p)| !name.is_empty() && p.id.starts_with(name))
            .map(|(i, _)| i)
            .collect();
        match matches.as_slice() {
            [i] => Ok(*i),
            [] => Err(BackendError::plugin_not_found(name)),
            _ => Err(BackendError::lookup(
                ErrorKind::InvalidArgument,
                format!("multiple plugins found for {name:?}"),
            )),
        }
    }
}

#[async_trait]
impl PluginBackend for Fake {
    async fn list(&self) -> Result<Vec<PluginJson>, BackendError> {
        Ok(self.plugins.lock().unwrap().clone())
    }

    async fn inspect(&self, name: &str) -> Result<PluginJson, BackendError> {
        let plugins = self.plugins.lock().unwrap();
        let i = self.find(&plugins, name)?;
        Ok(plugins[i].clone())
    }

    async fn check_create_name(&self, name: &str) -> Result<(), BackendError> {
        let r = Reference::parse_normalized(name).map_err(|e| {
            BackendError::new(
                ErrorKind::InvalidArgument,
                format!("failed to parse reference {name}: {e}"),
            )
        })?;
        let full = r.with_default_tag().familiar_string();
        if self.plugins.lock().unwrap().iter().any(|p| p.name == full) {
            return Err(BackendError::new(
                ErrorKind::AlreadyExists,
                format!("plugin {full} already exists"),
            ));
        }
        Ok(())
    }

    async fn create(&self, name: &str, tar: Box<dyn Read + Send>) -> Result<(), BackendError> {
        let r = Reference::parse_normalized(name).map_err(|e| {
            BackendError::new(
                ErrorKind::InvalidArgument,
                format!("failed to parse reference {name}: {e}"),
            )
        })?;
        let full = r.with_default_tag().familiar_string();
        if self.plugins.lock().unwrap().iter().any(|p| p.name == full) {
            return Err(BackendError::new(
                ErrorKind::AlreadyExists,
                format!("plugin {full} already exists"),
            ));
        }
        // Read the whole tar on a blocking thread, as the trait requires.
        let (config, read) = tokio::task::spawn_blocking(move || {
            let mut counted = CountingReader { inner: tar, n: 0 };
            let mut config = None;
            let mut rootfs = false;
            {
                let mut archive = tar::Archive::new(&mut counted);
                let entries = archive
                    .entries()
                    .map_err(|e| format!("failed to read from tar: {e}"))?;
                for entry in entries {
                    let mut entry = entry.map_err(|e| format!("failed to read from tar: {e}"))?;
                    let path = entry
                        .path()
                        .map_err(|e| e.to_string())?
                        .to_string_lossy()
                        .into_owned();
                    let path = path
                        .trim_start_matches("./")
                        .trim_start_matches('/')
                        .to_owned();
                    if path == "config.json" {
                        let mut buf = Vec::new();
                        entry.read_to_end(&mut buf).map_err(|e| e.to_string())?;
                        config = Some(buf);
                    } else if path == "rootfs" || path.starts_with("rootfs/") {
                        rootfs = true;
                    }
                }
            }
            // Drain what the tar reader left (padding), so the count is the body size.
            std::io::copy(&mut counted, &mut std::io::sink()).map_err(|e| e.to_string())?;
            if !rootfs {
                return Err("no rootfs found: EOF".to_owned());
            }
            let config = config.ok_or_else(|| "config not found".to_owned())?;
            let config = PluginConfig::from_json(&config)
                .map_err(|e| format!("failed to parse config: {}", e.detail()))?;
            Ok((config, counted.n))
        })
        .await
        .unwrap()
        .map_err(|m| BackendError::new(ErrorKind::InvalidArgument, m))?;
        *self.last_create_bytes.lock().unwrap() = read;
        let id = self.add(&full, "{}", false);
        {
            let mut plugins = self.plugins.lock().unwrap();
            let p = plugins.iter_mut().find(|p| p.id == id).unwrap();
            p.settings = PluginSettings::initial(&config);
            p.config = config;
        }
        self.record("create", name);
        self.publish(EventMessage::plugin("create", &id, &full, now_nanos()));
        Ok(())
    }

    async fn enable(&self, name: &str, timeout: Option<Duration>) -> Result<(), BackendError> {
        *self.last_timeout.lock().unwrap() = Some(timeout);
        let id = {
            let mut plugins = self.plugins.lock().unwrap();
            let i = self.find(&plugins, name)?;
            let p = &mut plugins[i];
            if p.enabled {
                return Err(BackendError::new(
                    ErrorKind::FailedPrecondition,
                    format!("plugin already enabled: plugin {} is enabled", p.name),
                ));
            }
            if p.config.entrypoint.as_deref() == Some(&["/fail".to_owned()][..]) {
                return Err(BackendError::new(
                    ErrorKind::Internal,
                    "failed to create shim task: OCI runtime create failed: exec: \"/fail\": stat /fail: no such file or directory: unknown",
                ));
            }
            p.enabled = true;
            p.id.clone()
        };
        self.record("enable", name);
        self.publish(EventMessage::plugin("enable", &id, name, now_nanos()));
        Ok(())
    }

    async fn disable(&self, name: &str, _force: bool) -> Result<(), BackendError> {
        let id = {
            let mut plugins = self.plugins.lock().unwrap();
            let i = self.find(&plugins, name)?;
            let p = &mut plugins[i];
            if !p.enabled {
                return Err(BackendError::new(
                    ErrorKind::FailedPrecondition,
                    format!(
                        "plugin is already disabled: plugin {} found but disabled",
                        p.name
                    ),
                ));
            }
            p.enabled = false;
            p.id.clone()
        };
        self.record("disable", name);
        self.publish(EventMessage::plugin("disable", &id, name, now_nanos()));
        Ok(())
    }

    async fn remove(&self, name: &str, force: bool) -> Result<(), BackendError> {
        let id = {
            let mut plugins = self.plugins.lock().unwrap();
            let i = self.find(&plugins, name)?;
            if plugins[i].enabled && !force {
                return Err(BackendError::new(
                    ErrorKind::FailedPrecondition,
                    format!("plugin {} is enabled", plugins[i].name),
                ));
            }
            plugins.remove(i).id
        };
        self.record("remove", name);
        self.publish(EventMessage::plugin("remove", &id, name, now_nanos()));
        Ok(())
    }

    async fn set(&self, name: &str, args: Vec<String>) -> Result<(), BackendError> {
        let mut plugins = self.plugins.lock().unwrap();
        let i = self.find(&plugins, name)?;
        let p = &mut plugins[i];
        if p.enabled {
            return Err(BackendError::new(
                ErrorKind::FailedPrecondition,
                "cannot set on an active plugin, disable plugin before setting",
            ));
        }
        for arg in &args {
            let (key, value) = arg.split_once('=').unwrap_or((arg, ""));
            if key.is_empty() {
                return Err(BackendError::new(
                    ErrorKind::InvalidArgument,
                    "invalid format, must be <name>[.<field>][=<value>]",
                ));
            }
            let known = p.config.env.iter().flatten().any(|e| e.name == key);
            if !known {
                return Err(BackendError::new(
                    ErrorKind::InvalidArgument,
                    format!("setting {key:?} not found in the plugin configuration"),
                ));
            }
            let entry = format!("{key}={value}");
            match p
                .settings
                .env
                .iter_mut()
                .find(|e| e.split('=').next() == Some(key))
            {
                Some(e) => *e = entry,
                None => p.settings.env.push(entry),
            }
        }
        drop(plugins);
        self.record("set", name);
        Ok(())
    }

    async fn subscribe_events(&self, _since_nano: Option<i64>) -> EventSubscription {
        let events = self.events.lock().unwrap();
        EventSubscription::from_broadcast(events.clone(), self.tx.subscribe(), |e| e)
    }

    async fn logs(&self, name: &str, options: LogsOptions) -> Result<LogStream, BackendError> {
        {
            let plugins = self.plugins.lock().unwrap();
            self.find(&plugins, name)?;
        }
        let all: Vec<LogLine> = (1..=3)
            .map(|i| LogLine {
                time_nano: 1_000_000_000 * i,
                source: LogSource::Stderr,
                line: format!("line {i}"),
            })
            .collect();
        let skip = options.tail.map_or(0, |t| all.len().saturating_sub(t));
        let backlog = futures::stream::iter(all.into_iter().skip(skip));
        if !options.follow {
            return Ok(Box::pin(backlog));
        }
        let rx = self.logs_tx.subscribe();
        let live =
            futures::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.ok().map(|l| (l, rx)) },
            );
        Ok(Box::pin(futures::StreamExt::chain(backlog, live)))
    }

    async fn privileges(
        &self,
        remote: &str,
        _auth: &str,
    ) -> Result<Vec<PluginPrivilege>, BackendError> {
        self.pull_name(remote, "")?;
        if remote.contains("missing") {
            return Err(BackendError::new(
                ErrorKind::NotFound,
                "error resolving plugin reference: manifest unknown",
            ));
        }
        Ok(vec![PluginPrivilege {
            name: "network".into(),
            description: "permissions to access a network".into(),
            value: vec!["host".into()],
        }])
    }

    fn pull_name(&self, remote: &str, name: &str) -> Result<String, BackendError> {
        PullNames::parse(remote, name)
            .map(|n| n.local)
            .map_err(|e| BackendError::new(e.kind(), e.to_string()))
    }

    /// Docker's order: name taken (400), resolve (404 for `missing`), then the stream; empty
    /// privileges fail in-stream; success adds a disabled volume plugin.
    async fn pull(
        &self,
        request: RemoteOperation,
        progress: ProgressSink,
    ) -> Result<(), BackendError> {
        self.calls
            .lock()
            .unwrap()
            .push(("pull".into(), request.name.clone()));
        if self.names().contains(&request.name) {
            return Err(BackendError::new(
                ErrorKind::AlreadyExists,
                format!("plugin {} already exists", request.name),
            ));
        }
        if request.remote.contains("missing") {
            return Err(BackendError::new(
                ErrorKind::NotFound,
                "error resolving plugin reference: manifest unknown",
            ));
        }
        progress.send(Progress::Named {
            status: "Pulling from acme/sample".into(),
            id: "latest".into(),
        });
        progress.send(Progress::step("Waiting", &"ab".repeat(32)));
        progress.send(Progress::bytes(
            "Extracting",
            &"ab".repeat(32),
            1_146_880,
            1_669_322,
        ));
        if request.privileges.is_empty() {
            return Err(BackendError::new(
                ErrorKind::Internal,
                "incorrect privileges",
            ));
        }
        progress.send(Progress::step("Complete", &"ab".repeat(32)));
        self.add(&request.name, VOLUME_CONFIG, false);
        Ok(())
    }

    async fn upgrade(
        &self,
        request: RemoteOperation,
        progress: ProgressSink,
    ) -> Result<(), BackendError> {
        let plugins = self.plugins.lock().unwrap().clone();
        let i = self.find(&plugins, &request.name)?;
        if plugins[i].enabled {
            return Err(BackendError::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "plugin must be disabled before upgrading: plugin {} is enabled",
                    plugins[i].name
                ),
            ));
        }
        progress.send(Progress::Named {
            status: "Pulling from acme/sample".into(),
            id: "2.0".into(),
        });
        Ok(())
    }

    fn info(&self) -> BackendInfo {
        let plugins = self.plugins.lock().unwrap();
        BackendInfo {
            id: "fake-backend".to_owned(),
            root_dir: PathBuf::from("/var/lib/plugind"),
            live_restore: true,
            default_runtime: "runc".to_owned(),
            runtimes: BTreeMap::from([(
                "runc".to_owned(),
                RuntimeInfo {
                    path: "runc".to_owned(),
                    args: Vec::new(),
                },
            )]),
            plugins: plugins.len(),
            plugins_enabled: plugins.iter().filter(|p| p.enabled).count(),
            quarantined: Vec::new(),
            plugin_set: None,
        }
    }
}

struct CountingReader {
    inner: Box<dyn Read + Send>,
    n: u64,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// The API served on a temporary socket; stops when dropped.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    pub backend: Arc<Fake>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    pub async fn start() -> Server {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ServerOptions)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let backend = Fake::new();
        let listener = plugind_api::bind(&sock).unwrap();
        let mut options = ServerOptions::new("0.1.0-test");
        tweak(&mut options);
        let (tx, rx) = oneshot::channel::<()>();
        let b: Arc<dyn PluginBackend> = backend.clone();
        let task = tokio::spawn(async move {
            plugind_api::serve(listener, b, options, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Server {
            dir,
            sock,
            backend,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the server and waits until it has returned.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> Response<Incoming> {
        let stream = tokio::net::UnixStream::connect(&self.sock).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        sender.send_request(req).await.unwrap()
    }

    /// One request, whole response.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("Host", "api.moby.localhost");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = self
            .send(b.body(Full::new(Bytes::copy_from_slice(body))).unwrap())
            .await;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, &[], b"").await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Asserts a Docker error reply: status, exact content type and message.
    #[track_caller]
    pub fn assert_error(&self, status: u16, message: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert_eq!(
            self.text(),
            format!("{}\n", serde_json::json!({ "message": message }))
        );
    }
}

pub const VOLUME_CONFIG: &str = r#"{"Description":"a volume plugin","Entrypoint":["/vol"],
  "Interface":{"Socket":"vol.sock","Types":["docker.volumedriver/1.0"]},
  "Env":[{"Name":"DEBUG","Settable":["value"],"Value":"0"}]}"#;
pub const AUTHZ_CONFIG: &str = r#"{"Description":"authz","Entrypoint":["/a"],
  "Interface":{"Socket":"a.sock","Types":["docker.authz/1.0"]}}"#;

/// A plugin tar as the docker CLI makes it: `config.json` then `rootfs/` entries.
pub fn plugin_tar(config: &str, padding: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(config.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "config.json", config.as_bytes())
        .unwrap();
    let mut d = tar::Header::new_gnu();
    d.set_entry_type(tar::EntryType::Directory);
    d.set_mode(0o755);
    d.set_size(0);
    d.set_cksum();
    b.append_data(&mut d, "rootfs/", &[][..]).unwrap();
    let data = vec![7u8; padding];
    let mut f = tar::Header::new_gnu();
    f.set_size(data.len() as u64);
    f.set_mode(0o755);
    f.set_cksum();
    b.append_data(&mut f, "rootfs/bin/x", &data[..]).unwrap();
    b.into_inner().unwrap()
}
