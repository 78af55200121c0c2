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

use crate::config::Config;

/// containerd namespace of plugind's shims; keeps their runc state apart from containerd's.
const NAMESPACE: &str = "plugind";

/// Task events waiting between the executor and the manager. When full, the executor's queue
/// waits (and then the shims retry): events are held back, never dropped.
const TASK_EVENT_CAPACITY: usize = 1024;

/// What the daemon asks of the manager besides the API calls.
#[async_trait]
pub trait Lifecycle: Send + Sync {
    /// Applies a re-read configuration (SIGHUP); only runtimes and the default runtime change
    /// at run time.
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
}

/// Builds the executor, the plugin manager (restoring plugins) and the volume service.
pub async fn build_backend(config: &Config) -> anyhow::Result<Wiring> {
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
    let (manager, report) = Manager::start(manager_config, Arc::new(executor.clone()), events_rx)
        .await
        .context("starting the plugin manager")?;
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
    // Published sockets for Podman and Docker daemons, following the manager from now on.
    let publisher = Publisher::start(
        manager.clone(),
        PublishConfig {
            dir: config.publish_dir.clone(),
            docker_specs_dir: config.docker_specs_dir.clone(),
            calls: volume_config,
        },
    )
    .await
    .context("publishing volume plugins")?;
    let lifecycle = Box::new(Wired {
        publisher,
        manager,
        executor,
        backend: backend.clone(),
    });
    Ok(Wiring {
        backend,
        volumes: Arc::new(volumes),
        lifecycle,
    })
}

struct Wired {
    publisher: Publisher,
    manager: Manager,
    executor: ShimExecutor,
    backend: Arc<ManagerBackend>,
}

#[async_trait]
impl Lifecycle for Wired {
    async fn reload(&self, config: &Config) -> anyhow::Result<()> {
        self.executor
            .reload_runtimes(&runtimes(config)?)
            .context("reloading runtimes")?;
        self.backend.set_runtimes(runtime_facts(config));
        Ok(())
    }

    fn reloaded(&self, attributes: std::collections::BTreeMap<String, String>) {
        self.backend.publish_daemon_event("reload", attributes);
    }

    async fn shutdown(&self) -> anyhow::Result<()> {
        self.publisher.shutdown();
        self.manager.shutdown().await;
        self.executor.shutdown().await;
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
