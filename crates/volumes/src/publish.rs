//! Published sockets: one unix socket per enabled volume-driver plugin, served by plugind, for
//! consumers outside plugind (Podman's `[engine.volume_plugins]`, a Docker daemon's v1
//! discovery).
//!
//! A managed plugin answers paths valid only inside its own root filesystem and mount
//! namespace (`/data/v1`). Docker rewrites them for its own use (`Plugin.ScopedPath`); outside
//! consumers cannot, so each published socket `<publish-dir>/<stem>.sock` answers
//! `Plugin.Activate` itself and forwards `VolumeDriver.*` calls to the plugin, rewriting
//! every mountpoint of the answers to the host path ([`scope`]). Mounts through it are
//! references on the plugin (`consumer:["<volume>","<id>"]`), so `plugin disable` is refused
//! while a consumer has a volume mounted.
//!
//! The [`Publisher`] follows the manager: a socket appears when its plugin is enabled and
//! running, stays (answering a quick error) while the plugin restarts, and goes when the
//! plugin is disabled or removed. It also keeps `<publish-dir>/containers.conf`, the Podman
//! drop-in naming every published socket, and, when asked, Docker's spec files
//! (`<specs-dir>/<stem>.spec`, `unix://<socket>`).

pub mod scope;
mod serve;

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex as StdMutex},
};

use plugind_manager::Manager;
use plugind_types::PluginId;
use tokio::{sync::Mutex as AsyncMutex, task::JoinHandle};

pub use scope::{published_stem, PluginDirs, ScopeError};
pub use serve::{rewrite_answer, CONSUMER_HOLDER_PREFIX, MAX_CONNECTIONS, MAX_REQUEST_BYTES};

use crate::driver::{VolumeConfig, CAPABILITY};

/// The Podman containers.conf drop-in kept in the publish directory.
pub const DROP_IN_FILE: &str = "containers.conf";

/// Where Docker daemons look for v1 plugin spec files first.
pub const DOCKER_SPECS_DIR: &str = "/etc/docker/plugins";

/// Where and how to publish.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// The directory of the published sockets (plugind owns it: stale sockets are removed).
    pub dir: PathBuf,
    /// Write Docker spec files here (`None`: do not).
    pub docker_specs_dir: Option<PathBuf>,
    /// Deadlines of the forwarded calls.
    pub calls: VolumeConfig,
    /// Owner, group and mode of every published socket (the API socket's: `root:<group>`
    /// 0660); a socket never appears with another.
    pub socket_owner: plugind_sys::socket::SocketOwner,
}

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A file or directory operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// An atomic write failed.
    #[error(transparent)]
    Sys(#[from] plugind_sys::SysError),
}

/// A socket being served.
#[derive(Debug)]
struct Served {
    name: String,
    stem: String,
    task: JoinHandle<()>,
}

/// Publishes the sockets of enabled volume plugins (see the module doc). Dropping it stops
/// serving; [`Publisher::shutdown`] does so and waits.
#[derive(Debug)]
pub struct Publisher {
    shared: Arc<Shared>,
    follower: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    manager: Manager,
    config: PublishConfig,
    served: StdMutex<BTreeMap<PluginId, Served>>,
    /// One reconcile at a time.
    reconciling: AsyncMutex<()>,
}

impl Publisher {
    /// Prepares the publish directory (removing sockets an earlier run left), publishes every
    /// enabled volume plugin and follows the manager's events from then on.
    pub async fn start(manager: Manager, config: PublishConfig) -> Result<Publisher, PublishError> {
        let began = std::time::Instant::now();
        let dir = config.dir.clone();
        let specs = config.docker_specs_dir.clone();
        tokio::task::spawn_blocking(move || prepare_dir(&dir, specs.as_deref()))
            .await
            .map_err(|e| PublishError::Io {
                op: "prepare",
                path: config.dir.clone(),
                source: std::io::Error::other(e),
            })??;
        let shared = Arc::new(Shared {
            manager,
            config,
            served: StdMutex::new(BTreeMap::new()),
            reconciling: AsyncMutex::new(()),
        });
        // Subscribed before the first reconcile: nothing published in between is missed.
        let (_, mut events) = shared.manager.events().subscribe_where(|_| false);
        tracing::debug!(elapsed = ?began.elapsed(), "publish: directory prepared");
        shared.reconcile().await;
        tracing::debug!(elapsed = ?began.elapsed(), "publish: first reconcile");
        let stale = {
            let dir = shared.config.dir.clone();
            let served: BTreeSet<String> = plugind_sys::sync::lock(&shared.served)
                .values()
                .map(|s| format!("{}.sock", s.stem))
                .collect();
            move || remove_stale_sockets(&dir, &served)
        };
        tokio::task::spawn_blocking(stale)
            .await
            .map_err(|e| PublishError::Io {
                op: "prepare",
                path: shared.config.dir.clone(),
                source: std::io::Error::other(e),
            })??;
        let follower = {
            let shared = shared.clone();
            tokio::spawn(async move {
                use tokio::sync::broadcast::error::{RecvError, TryRecvError};
                loop {
                    // An event, then every one already queued behind it: a burst (a fleet
                    // enabled by many clients) is one reconcile of the plugins it names, not a
                    // walk over every plugin per event.
                    let mut changed = Changed::default();
                    match events.recv().await {
                        Ok(e) => changed.add(&e),
                        Err(RecvError::Lagged(_)) => changed.everything = true,
                        Err(RecvError::Closed) => return,
                    }
                    let closed = loop {
                        match events.try_recv() {
                            Ok(e) => changed.add(&e),
                            Err(TryRecvError::Lagged(_)) => changed.everything = true,
                            Err(TryRecvError::Empty) => break false,
                            Err(TryRecvError::Closed) => break true,
                        }
                    };
                    if changed.everything {
                        shared.reconcile().await;
                    } else if !changed.plugins.is_empty() {
                        shared.reconcile_plugins(&changed.plugins).await;
                    }
                    if closed {
                        return;
                    }
                }
            })
        };
        Ok(Publisher { shared, follower })
    }

    /// The published socket of every plugin served now: full plugin name -> socket path.
    pub fn published(&self) -> BTreeMap<String, PathBuf> {
        plugind_sys::sync::lock(&self.shared.served)
            .values()
            .map(|s| (s.name.clone(), self.shared.socket_path(&s.stem)))
            .collect()
    }

    /// Re-reads the manager's state now (the event follower does this on every plugin event).
    pub async fn reconcile(&self) {
        self.shared.reconcile().await;
    }

    /// Stops following and serving. The socket files stay (a restarted plugind binds them
    /// again; meanwhile consumers get "connection refused" at once).
    pub fn shutdown(&self) {
        self.follower.abort();
        for (_, served) in std::mem::take(&mut *plugind_sys::sync::lock(&self.shared.served)) {
            served.task.abort();
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What a burst of manager events may have changed.
#[derive(Debug, Default)]
struct Changed {
    /// Plugins named by an event.
    plugins: BTreeSet<PluginId>,
    /// Something not tied to one plugin (a missed event, a `pull` named by its remote
    /// reference): look at every plugin.
    everything: bool,
}

impl Changed {
    fn add(&mut self, e: &plugind_manager::events::PluginEvent) {
        if e.r#type.as_str() != "plugin" {
            return;
        }
        // Health changes change nothing published (a restart that follows an unhealthy one
        // has its own event).
        if e.action.starts_with("health_status") {
            return;
        }
        match PluginId::parse(&e.id) {
            Ok(id) => {
                self.plugins.insert(id);
            }
            Err(_) => self.everything = true,
        }
    }
}

/// A plugin that should be published.
struct Wanted {
    id: PluginId,
    name: String,
    stem: String,
    dirs: PluginDirs,
}

impl Shared {
    fn socket_path(&self, stem: &str) -> PathBuf {
        self.config.dir.join(format!("{stem}.sock"))
    }

    /// Enabled volume plugins that run (or ran and are being restarted) should be published.
    fn wanted(&self) -> BTreeMap<PluginId, Wanted> {
        let served = plugind_sys::sync::lock(&self.served);
        self.manager
            .list()
            .iter()
            .filter_map(|view| self.wanted_record(&view.record, &served))
            .map(|w| (w.id.clone(), w))
            .collect()
    }

    /// [`Shared::wanted`] restricted to `ids` (a plugin that is gone is not wanted).
    fn wanted_among(&self, ids: &BTreeSet<PluginId>) -> BTreeMap<PluginId, Wanted> {
        let served = plugind_sys::sync::lock(&self.served);
        ids.iter()
            .filter_map(|id| self.manager.inspect(id.as_str()).ok())
            .filter_map(|view| self.wanted_record(&view.record, &served))
            .map(|w| (w.id.clone(), w))
            .collect()
    }

    /// The plugin of `record`, if it should be published.
    fn wanted_record(
        &self,
        record: &plugind_manager::PluginRecord,
        served: &BTreeMap<PluginId, Served>,
    ) -> Option<Wanted> {
        let id = record.id();
        let is_volume = record.plugin.config.capabilities().any(|c| c == CAPABILITY);
        let live = record.is_running() || served.contains_key(id);
        if !(is_volume && record.desired_enabled() && live) {
            return None;
        }
        let Some(stem) = published_stem(record.name()) else {
            tracing::warn!(
                plugin = record.name(),
                "name has no safe published file name; not published"
            );
            return None;
        };
        let (rootfs, propagated_mount) = self.manager.host_dirs(id);
        Some(Wanted {
            id: id.clone(),
            name: record.name().to_owned(),
            stem,
            dirs: PluginDirs {
                rootfs,
                propagated_mount,
                propagated_in_plugin: record.plugin.config.propagated_mount.clone(),
            },
        })
    }

    /// Publishes and unpublishes after every plugin.
    async fn reconcile(&self) {
        let _one = self.reconciling.lock().await;
        let wanted = self.wanted();
        self.apply(wanted, None).await;
        self.write_drop_in_or_warn().await;
    }

    /// Publishes and unpublishes after the plugins `ids` only (the others did not change).
    async fn reconcile_plugins(&self, ids: &BTreeSet<PluginId>) {
        let _one = self.reconciling.lock().await;
        let wanted = self.wanted_among(ids);
        if self.apply(wanted, Some(ids)).await {
            self.write_drop_in_or_warn().await;
        }
    }

    /// Makes the served sockets those `wanted`, among `scope` (`None`: among all plugins).
    /// True if a socket was published or removed.
    async fn apply(
        &self,
        wanted: BTreeMap<PluginId, Wanted>,
        scope: Option<&BTreeSet<PluginId>>,
    ) -> bool {
        let gone: Vec<(PluginId, Served)> = {
            let mut served = plugind_sys::sync::lock(&self.served);
            let ids: Vec<PluginId> = served
                .keys()
                .filter(|id| scope.is_none_or(|s| s.contains(*id)))
                .filter(|id| !wanted.contains_key(*id))
                .cloned()
                .collect();
            ids.into_iter()
                .filter_map(|id| served.remove(&id).map(|s| (id, s)))
                .collect()
        };
        let changed = !gone.is_empty();
        let files: Vec<(PathBuf, Option<PathBuf>)> = gone
            .iter()
            .map(|(_, served)| {
                served.task.abort();
                (self.socket_path(&served.stem), self.spec_path(&served.stem))
            })
            .collect();
        if !files.is_empty() {
            let _ = tokio::task::spawn_blocking(move || {
                for (socket, spec) in files {
                    remove_if_exists(&socket);
                    if let Some(spec) = spec {
                        remove_spec_if_ours(&spec, &socket);
                    }
                }
            })
            .await;
        }
        for (_, served) in gone {
            tracing::info!(plugin = %served.name, "published socket removed");
        }
        let new: Vec<Wanted> = {
            let served = plugind_sys::sync::lock(&self.served);
            wanted
                .into_values()
                .filter(|w| !served.contains_key(&w.id))
                .collect()
        };
        let changed = changed || !new.is_empty();
        for (want, result) in self.publish_all(new).await {
            match result {
                Ok(served) => {
                    let socket = self.socket_path(&served.stem);
                    tracing::info!(
                        plugin = %served.name,
                        socket = %socket.display(),
                        "published socket ready"
                    );
                    plugind_sys::sync::lock(&self.served).insert(want, served);
                }
                Err(e) => {
                    tracing::warn!(plugin = %want, error = %e, "cannot publish a volume plugin")
                }
            }
        }
        changed
    }

    async fn write_drop_in_or_warn(&self) {
        if let Err(e) = self.write_drop_in().await {
            tracing::warn!(error = %e, "cannot write the Podman drop-in");
        }
    }

    fn spec_path(&self, stem: &str) -> Option<PathBuf> {
        self.config
            .docker_specs_dir
            .as_ref()
            .map(|d| d.join(format!("{stem}.spec")))
    }

    /// Binds the sockets of `wants` (and writes their spec files) in one blocking job, then
    /// serves each; one result per plugin.
    async fn publish_all(
        &self,
        wants: Vec<Wanted>,
    ) -> Vec<(PluginId, Result<Served, PublishError>)> {
        if wants.is_empty() {
            return Vec::new();
        }
        let stems: Vec<String> = wants.iter().map(|w| w.stem.clone()).collect();
        let dir = self.config.dir.clone();
        let specs = self.config.docker_specs_dir.clone();
        let owner = self.config.socket_owner;
        let bound = tokio::task::spawn_blocking(move || {
            bind_sockets(&dir, specs.as_deref(), &stems, &owner)
        })
        .await
        .unwrap_or_else(|e| {
            Err(PublishError::Io {
                op: "bind",
                path: self.config.dir.clone(),
                source: std::io::Error::other(e),
            })
        });
        let mut bound = match bound {
            Ok(listeners) => listeners.into_iter(),
            Err(e) => {
                // Nothing was bound: every plugin gets the same error.
                let text = e.to_string();
                return wants
                    .into_iter()
                    .map(|w| {
                        let path = self.socket_path(&w.stem);
                        let source = std::io::Error::other(text.clone());
                        (
                            w.id,
                            Err(PublishError::Io {
                                op: "bind",
                                path,
                                source,
                            }),
                        )
                    })
                    .collect();
            }
        };
        wants
            .into_iter()
            .map(|want| {
                let listener = bound.next().unwrap_or_else(|| {
                    Err(PublishError::Io {
                        op: "bind",
                        path: self.socket_path(&want.stem),
                        source: std::io::Error::other("not bound"),
                    })
                });
                let id = want.id.clone();
                (id, listener.and_then(|l| self.serve(want, l)))
            })
            .collect()
    }

    /// Serves a bound socket for `want`.
    fn serve(
        &self,
        want: Wanted,
        listener: std::os::unix::net::UnixListener,
    ) -> Result<Served, PublishError> {
        let listener =
            tokio::net::UnixListener::from_std(listener).map_err(|source| PublishError::Io {
                op: "serve",
                path: self.socket_path(&want.stem),
                source,
            })?;
        let endpoint = Arc::new(serve::Endpoint {
            manager: self.manager.clone(),
            id: want.id,
            name: want.name.clone(),
            dirs: want.dirs,
            calls: self.config.calls,
        });
        Ok(Served {
            name: want.name,
            stem: want.stem,
            task: tokio::spawn(serve::serve(listener, endpoint)),
        })
    }

    async fn write_drop_in(&self) -> Result<(), PublishError> {
        let entries: Vec<(String, PathBuf)> = plugind_sys::sync::lock(&self.served)
            .values()
            .map(|s| (s.name.clone(), self.socket_path(&s.stem)))
            .collect();
        let text = drop_in_text(&entries);
        let path = self.config.dir.join(DROP_IN_FILE);
        tokio::task::spawn_blocking(move || {
            if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
                return Ok(());
            }
            plugind_sys::fs::atomic_write_mode(&path, text.as_bytes(), 0o644)
        })
        .await
        .map_err(|e| PublishError::Io {
            op: "write",
            path: self.config.dir.join(DROP_IN_FILE),
            source: std::io::Error::other(e),
        })??;
        Ok(())
    }
}

/// The Podman containers.conf drop-in for `(plugin name, socket)` pairs: each plugin under its
/// full name and, when Docker's short form differs (`sample` for `sample:latest`), under that
/// too, so `podman volume create --driver` takes either.
pub fn drop_in_text(entries: &[(String, PathBuf)]) -> String {
    let mut out = String::from(
        "# Written by plugind: the volume plugins it publishes, for Podman\n\
         # (copy to /etc/containers/containers.conf.d/plugind.conf).\n\
         [engine.volume_plugins]\n",
    );
    for (name, socket) in entries {
        let socket = serde_json::to_string(&socket.to_string_lossy()).unwrap_or_default();
        let mut names = vec![name.as_str()];
        if let Some(short) = name.strip_suffix(":latest") {
            names.push(short);
        }
        for key in names {
            let key = serde_json::to_string(key).unwrap_or_default();
            out.push_str(&format!("{key} = {socket}\n"));
        }
    }
    out
}

/// Writes a Podman drop-in (the text of [`DROP_IN_FILE`]) to `path` atomically, creating its
/// directory (`plugind podman-conf --podman-conf-output`).
pub fn write_drop_in(path: &Path, text: &str) -> Result<(), PublishError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| PublishError::Io {
            op: "create directory",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    plugind_sys::fs::atomic_write_mode(path, text.as_bytes(), 0o644)?;
    Ok(())
}

/// The text of a Docker spec file naming `socket`.
pub fn spec_text(socket: &Path) -> String {
    format!("unix://{}\n", socket.display())
}

/// Creates the publish directory (0755) and removes what an earlier run left in it: temp files
/// and interrupted binds (its sockets go after the first reconcile: [`remove_stale_sockets`]);
/// spec files naming a socket of this directory (rewritten as plugins are published) and
/// interrupted spec writes go too.
fn prepare_dir(dir: &Path, specs: Option<&Path>) -> Result<(), PublishError> {
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| PublishError::Io { op, path, source }
    };
    std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(io("chmod", dir))?;
    for entry in std::fs::read_dir(dir).map_err(io("read directory", dir))? {
        let entry = entry.map_err(io("read directory", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if plugind_sys::socket::is_batch_leftover(&name) {
            // The private directory of a bind a crash interrupted.
            let _ = std::fs::remove_dir_all(entry.path());
            continue;
        }
        // Sockets an earlier run left stay until the first reconcile: those of plugins still
        // published are replaced in place (a rename over them), the others removed then. A
        // filesystem that keeps freed inodes from reuse for a while (ext4) makes a thousand
        // binds right after a thousand removals slow.
        let leftover = name.ends_with(".sock.tmp") || plugind_sys::fs::is_temp_name(&name);
        if leftover {
            remove_if_exists(&entry.path());
        }
    }
    if let Some(specs) = specs {
        if let Ok(entries) = std::fs::read_dir(specs) {
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                // A spec file write a crash interrupted (ours by the name's shape).
                if plugind_sys::fs::is_temp_name(&name) && name.contains(".spec.tmp-") {
                    remove_if_exists(&path);
                    continue;
                }
                let Ok(text) = std::fs::read_to_string(&path) else {
                    continue;
                };
                let ours = text
                    .trim_end()
                    .strip_prefix("unix://")
                    .is_some_and(|s| Path::new(s).parent() == Some(dir));
                if ours {
                    remove_if_exists(&path);
                }
            }
        }
    }
    Ok(())
}

/// Binds `<dir>/<stem>.sock` for every stem, atomically with its final owner and mode (bound
/// in a private directory, then renamed into place), so a consumer sees either no socket or one
/// that is listening, and never one with looser permissions: whoever may mount volumes through
/// it controls what containers see. With `specs`, each bound socket's Docker spec file is
/// written too. One result per stem, in order.
fn bind_sockets(
    dir: &Path,
    specs: Option<&Path>,
    stems: &[String],
    owner: &plugind_sys::socket::SocketOwner,
) -> Result<Vec<Result<std::os::unix::net::UnixListener, PublishError>>, PublishError> {
    let names: Vec<std::ffi::OsString> = stems.iter().map(|s| format!("{s}.sock").into()).collect();
    let refs: Vec<&std::ffi::OsStr> = names.iter().map(|n| n.as_os_str()).collect();
    let bound =
        plugind_sys::socket::bind_unix_owned_batch(dir, &refs, owner).map_err(|source| {
            PublishError::Io {
                op: "bind",
                path: dir.to_path_buf(),
                source,
            }
        })?;
    Ok(bound
        .into_iter()
        .zip(stems)
        .map(|(listener, stem)| {
            let socket = dir.join(format!("{stem}.sock"));
            let listener = listener.map_err(|source| PublishError::Io {
                op: "bind",
                path: socket.clone(),
                source,
            })?;
            listener
                .set_nonblocking(true)
                .map_err(|source| PublishError::Io {
                    op: "configure",
                    path: socket.clone(),
                    source,
                })?;
            if let Some(specs) = specs {
                std::fs::create_dir_all(specs).map_err(|source| PublishError::Io {
                    op: "create directory",
                    path: specs.to_path_buf(),
                    source,
                })?;
                let spec = specs.join(format!("{stem}.spec"));
                plugind_sys::fs::atomic_write_mode(&spec, spec_text(&socket).as_bytes(), 0o644)?;
            }
            Ok(listener)
        })
        .collect())
}

/// Removes the sockets in `dir` an earlier run left that are not `served` now.
fn remove_stale_sockets(dir: &Path, served: &BTreeSet<String>) -> Result<(), PublishError> {
    let entries = std::fs::read_dir(dir).map_err(|source| PublishError::Io {
        op: "read directory",
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".sock") && !served.contains(&name) {
            remove_if_exists(&entry.path());
        }
    }
    Ok(())
}

fn remove_if_exists(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove");
        }
    }
}

/// Removes a spec file only if it still names our socket (someone else's stays).
fn remove_spec_if_ours(spec: &Path, socket: &Path) {
    if std::fs::read_to_string(spec).is_ok_and(|t| t == spec_text(socket)) {
        remove_if_exists(spec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_in_names_full_and_short_names_as_quoted_keys() {
        let text = drop_in_text(&[
            ("sample:latest".into(), PathBuf::from("/run/p/sample.sock")),
            (
                "vieux/sshfs:v2".into(),
                PathBuf::from("/run/p/vieux+sshfs=v2.sock"),
            ),
        ]);
        let parsed: toml_check::Table = toml_check::parse(&text);
        assert_eq!(
            parsed.get("sample:latest").map(String::as_str),
            Some("/run/p/sample.sock")
        );
        assert_eq!(
            parsed.get("sample").map(String::as_str),
            Some("/run/p/sample.sock")
        );
        assert_eq!(
            parsed.get("vieux/sshfs:v2").map(String::as_str),
            Some("/run/p/vieux+sshfs=v2.sock")
        );
        assert_eq!(parsed.len(), 3);
    }

    /// A minimal reader of the drop-in's `"key" = "value"` lines (the crate has no TOML
    /// dependency): every line after the table header must be one such pair.
    mod toml_check {
        pub type Table = std::collections::BTreeMap<String, String>;
        pub fn parse(text: &str) -> Table {
            let mut lines = text.lines().filter(|l| !l.starts_with('#'));
            assert_eq!(lines.next(), Some("[engine.volume_plugins]"));
            lines
                .map(|l| {
                    let (k, v) = l.split_once(" = ").expect("key = value");
                    (
                        serde_json::from_str(k).expect("quoted key"),
                        serde_json::from_str(v).expect("quoted value"),
                    )
                })
                .collect()
        }
    }

    #[test]
    fn prepare_and_first_reconcile_remove_stale_sockets_and_only_our_spec_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("publish");
        let specs = tmp.path().join("specs");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&specs).unwrap();
        let _stale = std::os::unix::net::UnixListener::bind(dir.join("old.sock")).unwrap();
        std::fs::write(dir.join(DROP_IN_FILE), "x").unwrap();
        std::fs::write(dir.join(".containers.conf.tmp-1-2"), "x").unwrap();
        std::fs::write(specs.join(".old.spec.tmp-1-2"), "x").unwrap();
        std::fs::write(specs.join("old.spec"), spec_text(&dir.join("old.sock"))).unwrap();
        std::fs::write(specs.join("theirs.spec"), "unix:///run/other/theirs.sock\n").unwrap();
        std::fs::create_dir(dir.join(format!("{}1-2", plugind_sys::socket::BATCH_BIND_PREFIX)))
            .unwrap();
        let _kept = std::os::unix::net::UnixListener::bind(dir.join("kept.sock")).unwrap();
        prepare_dir(&dir, Some(&specs)).unwrap();
        assert!(
            dir.join("old.sock").exists(),
            "sockets stay until the first reconcile"
        );
        assert!(!dir
            .join(format!("{}1-2", plugind_sys::socket::BATCH_BIND_PREFIX))
            .exists());
        remove_stale_sockets(&dir, &BTreeSet::from(["kept.sock".to_owned()])).unwrap();
        assert!(!dir.join("old.sock").exists());
        assert!(dir.join("kept.sock").exists());
        assert!(dir.join(DROP_IN_FILE).exists());
        assert!(!dir.join(".containers.conf.tmp-1-2").exists());
        assert!(!specs.join(".old.spec.tmp-1-2").exists());
        assert!(!specs.join("old.spec").exists());
        assert!(specs.join("theirs.spec").exists());
    }
}
