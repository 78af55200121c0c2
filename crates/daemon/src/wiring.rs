//! Where the daemon meets the plugin manager: [`build_backend`] turns a [`Config`] into the
//! executor (shims, runtimes), the [`Manager`] (which takes the lock on its root and restores
//! plugins), the API's [`PluginBackend`], and a [`Lifecycle`] handle for reload and shutdown.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context;
use async_trait::async_trait;
use plugind_api::{ManagerBackend, PluginBackend, RuntimeFacts, RuntimeInfo};
use plugind_executor::{ExecutorConfig, RuntimeConfig, Runtimes, ShimExecutor};
use plugind_manager::{Manager, ManagerConfig};

use plugind_volumes::{
    publish::{PublishConfig, Publisher},
    VolumeConfig, VolumeService,
};

use crate::{
    authz::{Authz, V1Dirs},
    config::{Config, MetricsAddr},
};
use plugind_sys::socket::SocketOwner;

/// containerd namespace of plugind's shims; keeps their runc state apart from containerd's.
const NAMESPACE: &str = "plugind";

/// Task events waiting between the executor and the manager. When full, the executor's queue
/// waits (and then the shims retry): events are held back, never dropped.
const TASK_EVENT_CAPACITY: usize = 1024;

/// What the daemon asks of the manager besides the API calls.
#[async_trait]
pub trait Lifecycle: Send + Sync {
    /// Applies a re-read configuration (SIGHUP); only runtimes, the default runtime and the
    /// plugin set and the health policy change at run time (the set is reconciled in the background).
    async fn reload(&self, config: &Config) -> anyhow::Result<()>;

    /// Announces a finished reload as a `daemon` `reload` event (as dockerd does).
    fn reloaded(&self, attributes: std::collections::BTreeMap<String, String>);

    /// Stops the manager. With live restore plugins keep running; otherwise they are stopped.
    async fn shutdown(&self) -> anyhow::Result<()>;
}

/// What the daemon serves: the plugin backend, the volume service, and the lifecycle handle.
pub struct Wiring {
    /// The API's plugin backend.
    pub backend: Arc<dyn PluginBackend>,
    /// The volume service behind `/volumes`.
    pub volumes: Arc<VolumeService>,
    /// Reload and shutdown.
    pub lifecycle: Box<dyn Lifecycle>,
    /// The plugin manager (for the metrics server).
    pub manager: Manager,
    /// Owner, group and mode of the API socket (and of the published sockets).
    pub socket_owner: SocketOwner,
    /// The authorization plugin chain (empty when none is configured).
    pub authz: Arc<Authz>,
}

/// Builds the executor, the plugin manager (restoring plugins) and the volume service.
pub async fn build_backend(config: &Config) -> anyhow::Result<Wiring> {
    // First: a socket group that does not exist stops the start before any plugin runs.
    let socket_owner = SocketOwner {
        gid: plugind_sys::socket::socket_gid(&config.group).context("--group")?,
        ..SocketOwner::current(0o660)
    };
    let mut executor_config = ExecutorConfig::new(&config.exec_root, NAMESPACE);
    executor_config.shim_group = config.shim_group;
    executor_config.shim_binary = find_program("containerd-shim-runc-v2")
        .context("containerd-shim-runc-v2 not found (Debian package `containerd`)")?;
    let (events_tx, events_rx) = tokio::sync::mpsc::channel(TASK_EVENT_CAPACITY);
    let executor = ShimExecutor::new(executor_config, &runtimes(config)?, Arc::new(events_tx))
        .await
        .context("starting the executor")?;
    let mut manager_config = ManagerConfig::new(&config.root, &config.exec_root);
    manager_config.live_restore = config.live_restore;
    manager_config.default_ready_timeout = config.plugin_start_timeout;
    manager_config.registry.insecure_registries = config.insecure_registries.clone();
    manager_config.registry.user_agent = format!("plugind/{}", env!("CARGO_PKG_VERSION"));
    manager_config.health = config.health;
    manager_config.events = plugind_manager::JournalConfig {
        max_bytes: config.events_max_bytes,
        max_age: config.events_max_age,
    };
    let (manager, report) = Manager::start(manager_config, Arc::new(executor.clone()), events_rx)
        .await
        .context("starting the plugin manager")?;
    // After start's own repairs, so only what they left is reported; in the background, so a
    // root of many plugins does not delay serving.
    let root = config.root.clone();
    drop(tokio::task::spawn_blocking(move || {
        crate::fsck::log_cheap_checks(&root)
    }));
    tracing::info!(
        reattached = report.reattached.len(),
        started = report.started.len(),
        failed = report.failed.len(),
        quarantined = report.quarantined.len(),
        "plugins restored"
    );
    let volume_config = config
        .volume_timeout
        .map_or(VolumeConfig::DOCKER, VolumeConfig::uniform);
    let volumes = VolumeService::open(&config.root, Arc::new(manager.clone()), volume_config)
        .await
        .context("opening the volume service")?;
    // After Manager::start, which holds the root lock: the ID is created at most once.
    let root = config.root.clone();
    let engine_id =
        tokio::task::spawn_blocking(move || plugind_manager::engine_id::load_or_create(&root))
            .await?
            .context("loading the engine id")?;
    let backend = Arc::new(
        ManagerBackend::new(manager.clone(), runtime_facts(config)).with_engine_id(engine_id),
    );
    publish_start_events(&backend, &report);
    // Published sockets for Podman and Docker daemons, following the manager from now on.
    let publisher = Publisher::start(
        manager.clone(),
        PublishConfig {
            dir: config.publish_dir.clone(),
            docker_specs_dir: config.docker_specs_dir.clone(),
            calls: volume_config,
            socket_owner,
        },
    )
    .await
    .context("publishing volume plugins")?;
    // Restore and the first publish of a fleet leave much of the heap they grew free (record
    // loads, a connection and a state call per task): give it back before serving.
    drop(tokio::task::spawn_blocking(
        plugind_sys::limits::release_free_memory,
    ));
    // After restore, before the API serves: the chain's managed plugins were started by
    // `Manager::start` (as dockerd enables plugins before serving), so nothing can lock plugind
    // out at start, and a named plugin that is missing or unusable stops the start.
    let authz = Authz::load(
        manager.clone(),
        V1Dirs::default(),
        &config.authorization_plugins,
    )
    .await
    .context("checking the authorization plugins")?;
    // After restore and once the publisher follows the manager; reconciled in the background,
    // so neither the API socket nor READY=1 waits for registries.
    manager.apply_plugin_set(config.plugin_set()?);
    let lifecycle = Box::new(Wired {
        authz: authz.clone(),
        publisher,
        manager: manager.clone(),
        executor,
        backend: backend.clone(),
    });
    Ok(Wiring {
        backend,
        volumes: Arc::new(volumes),
        lifecycle,
        manager,
        socket_owner,
        authz,
    })
}

/// plugind's own restart in the event history: `start`, then `restore` with what restore
/// found (dockerd publishes no such events; plugind's are shaped as its `reload`).
fn publish_start_events(
    backend: &ManagerBackend,
    report: &plugind_manager::manager::RestoreReport,
) {
    backend.publish_daemon_event(
        "start",
        std::collections::BTreeMap::from([
            ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
            ("pid".to_owned(), std::process::id().to_string()),
        ]),
    );
    let count = |n: usize| n.to_string();
    backend.publish_daemon_event(
        "restore",
        std::collections::BTreeMap::from([
            ("reattached".to_owned(), count(report.reattached.len())),
            ("started".to_owned(), count(report.started.len())),
            ("failed".to_owned(), count(report.failed.len())),
            ("quarantined".to_owned(), count(report.quarantined.len())),
            ("destroyed".to_owned(), count(report.destroyed.len())),
        ]),
    );
}

struct Wired {
    authz: Arc<Authz>,
    publisher: Publisher,
    manager: Manager,
    executor: ShimExecutor,
    backend: Arc<ManagerBackend>,
}

#[async_trait]
impl Lifecycle for Wired {
    async fn reload(&self, config: &Config) -> anyhow::Result<()> {
        // First, so that a bad list changes nothing.
        self.authz
            .reload(&config.authorization_plugins)
            .await
            .context("reloading the authorization plugins")?;
        self.executor
            .reload_runtimes(&runtimes(config)?)
            .context("reloading runtimes")?;
        self.backend.set_runtimes(runtime_facts(config));
        self.manager.apply_plugin_set(config.plugin_set()?);
        self.manager.set_health_policy(config.health);
        Ok(())
    }

    fn reloaded(&self, attributes: std::collections::BTreeMap<String, String>) {
        self.backend.publish_daemon_event("reload", attributes);
    }

    async fn shutdown(&self) -> anyhow::Result<()> {
        self.publisher.shutdown();
        self.manager.shutdown().await;
        self.executor.shutdown().await;
        // The last events on disk (and synced) before the process exits.
        let manager = self.manager.clone();
        tokio::task::spawn_blocking(move || manager.events().sync()).await?;
        Ok(())
    }
}

/// The executor's runtimes from the configuration. crun needs its wrapper on hybrid-cgroup
/// hosts (shim-protocol.md, gotcha 17).
fn runtimes(config: &Config) -> anyhow::Result<Runtimes> {
    let mut out = Runtimes::runc();
    for (name, rt) in &config.runtimes {
        let path = find_program(&rt.path)
            .with_context(|| format!("runtime {name}: {} not found", rt.path))?;
        let hybrid = Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists()
            && Path::new("/sys/fs/cgroup/memory").is_dir();
        let is_crun = path.file_name().is_some_and(|n| n == "crun");
        let mut rc = if is_crun && hybrid {
            RuntimeConfig::crun_hybrid(&path)
        } else {
            RuntimeConfig::plain(&path)
        };
        rc.args = rt.args.clone();
        rc.single_call = rt.single_call;
        out = out.with(name, rc);
    }
    out.default = config.default_runtime.clone();
    Ok(out)
}

fn runtime_facts(config: &Config) -> RuntimeFacts {
    RuntimeFacts {
        default_runtime: config.default_runtime.clone(),
        runtimes: config
            .runtimes
            .iter()
            .map(|(n, r)| {
                (
                    n.clone(),
                    RuntimeInfo {
                        path: r.path.clone(),
                        args: r.args.clone(),
                    },
                )
            })
            .collect(),
    }
}

/// Binds the `--metrics-addr` listener. The unix socket is bound here with std, mode 0660 (as
/// the API socket), replacing a stale socket but never a live one or a non-socket file.
pub(crate) fn bind_metrics(
    addr: &MetricsAddr,
    owner: &SocketOwner,
) -> anyhow::Result<plugind_api::MetricsListener> {
    Ok(match addr {
        MetricsAddr::Unix(path) => {
            let listener = bind_unix_socket(path, owner)
                .with_context(|| format!("binding the metrics socket {}", path.display()))?;
            listener.set_nonblocking(true)?;
            plugind_api::MetricsListener::Unix(tokio::net::UnixListener::from_std(listener)?)
        }
        MetricsAddr::Tcp(addr) => {
            let listener = std::net::TcpListener::bind(addr)
                .with_context(|| format!("binding the metrics address {addr}"))?;
            listener.set_nonblocking(true)?;
            plugind_api::MetricsListener::Tcp(tokio::net::TcpListener::from_std(listener)?)
        }
    })
}

/// Binds the metrics socket with the API socket's owner and mode (`bind_unix_owned`), after
/// making sure no live server answers there.
fn bind_unix_socket(
    path: &Path,
    owner: &SocketOwner,
) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "a server already answers on this socket",
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "path exists and is not a socket",
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    plugind_sys::socket::bind_unix_owned(path, owner)
}

/// An absolute path as is, else the first match in `PATH` and the sbin directories.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    if p.is_absolute() {
        return p.exists().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|d| d.join(name))
        .find(|c| c.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_and_builds_runtimes() {
        assert_eq!(find_program("/bin/sh"), Some(PathBuf::from("/bin/sh")));
        assert!(find_program("/nonexistent/x").is_none());
        assert!(find_program("sh").is_some());
        let cli = crate::config::Cli::parse_from(["plugind".into()]).unwrap();
        let config = Config::load(&cli).unwrap();
        let facts = runtime_facts(&config);
        assert_eq!(facts.default_runtime, "runc");
        assert!(facts.runtimes.contains_key("runc"));
    }
}
