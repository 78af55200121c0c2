//! `plugind`: the daemon binary. Parses the configuration, installs logging and signal
//! handling, builds the plugin manager (`wiring`) and serves the Docker plugin API until
//! SIGTERM/SIGINT; SIGHUP re-reads the configuration. Under systemd (`Type=notify`) it says
//! `READY=1` once serving (`notify`). No lifecycle logic lives here.

mod authz;
mod check;
mod config;
mod fsck;
mod logging;
mod notify;
mod version;
mod wiring;

use std::{ffi::OsString, process::ExitCode};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    config::{Cli, Config, ReloadDiff},
    wiring::Lifecycle,
};

fn main() -> ExitCode {
    // First, while there is one thread: no child (shim, runc) may inherit NOTIFY_SOCKET.
    let notifier = notify::Notifier::take_from_env();
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "fsck") {
        return fsck::main(&args);
    }
    let cli = Cli::parse_from(args.clone()).unwrap_or_else(|e| e.exit());
    if cli.version {
        print!("{}", version::version_text());
        return ExitCode::SUCCESS;
    }
    let config = match Config::load(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("plugind: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if cli.validate {
        let problems = check::check_host(&config);
        if problems.is_empty() {
            println!("{}", check::OK_LINE);
            return ExitCode::SUCCESS;
        }
        for problem in problems {
            eprintln!("plugind: {problem}");
        }
        return ExitCode::FAILURE;
    }
    if cli.podman_conf {
        return match podman_conf(&config, cli.podman_conf_output.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("plugind: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    logging::init(config.log_level, config.log_format);
    // Before any thread starts (issue 15: idle RSS of a fleet): one malloc arena. Threads keep
    // their own tcache, so contention is low, and a second arena kept ~1.4 MiB of fragments
    // after a burst (300 enabled plugins: idle RSS 23.7 -> 22.3 MiB, peak 56 -> 43 MiB).
    // MALLOC_ARENA_MAX still wins.
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        plugind_sys::limits::limit_malloc_arenas(1);
    }
    // Before any thread starts, so every thread and child sees the raised limit.
    let nofile = match plugind_sys::limits::raise_nofile_limit() {
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the descriptor limit");
            None
        }
    };
    let result = tokio::runtime::Runtime::new()
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(run(&args, config, nofile, &notifier)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "plugind failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    args: &[OsString],
    config: Config,
    nofile: Option<plugind_sys::limits::NofileLimit>,
    notifier: &notify::Notifier,
) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let wiring::Wiring {
        backend,
        volumes,
        lifecycle,
        manager,
        socket_owner,
        authz,
    } = wiring::build_backend(&config).await?;
    let (metrics_stop, metrics) = serve_metrics(&config, manager, &socket_owner)?;
    let listener = plugind_api::bind_owned(&config.socket, &socket_owner)?;
    let mut options = plugind_api::ServerOptions::new(env!("CARGO_PKG_VERSION"));
    options.create_body_limit = config.create_body_limit;
    options.volumes = Some(volumes);
    options.header_timeout = config.api_header_timeout;
    options.idle_timeout = config.api_idle_timeout;
    options.body_timeout = config.api_body_timeout;
    options.max_connections = api_max_connections(&config, nofile);
    options.authz = Some(authz);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(plugind_api::serve(listener, backend, options, async {
        let _ = stop_rx.await;
    }));
    tracing::info!(socket = %config.socket.display(), root = %config.root.display(), "plugind serving");
    if notifier.enabled() {
        tracing::debug!("notifying the service manager (NOTIFY_SOCKET)");
    }
    // The socket listens and build_backend finished restore: `systemctl start` may return.
    notifier.notify("READY=1\nSTATUS=serving");
    // The settings in force: SIGHUP updates those it can apply.
    let mut config = config;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                notifier.notify("RELOADING=1\nSTATUS=reloading the configuration");
                config = reload(args, &config, &*lifecycle).await;
                notifier.notify("READY=1\nSTATUS=serving");
            }
            res = &mut server => return Ok(res.context("api server task failed")??),
        }
    }
    tracing::info!(grace = ?config.shutdown_timeout, "shutting down");
    notifier.notify("STOPPING=1\nSTATUS=shutting down");
    let _ = stop_tx.send(());
    let _ = metrics_stop.send(());
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    if let Some(config::MetricsAddr::Unix(path)) = &config.metrics_addr {
        let _ = std::fs::remove_file(path);
    }
    let stopping = async {
        let served = server.await.context("api server task failed");
        lifecycle.shutdown().await?;
        Ok::<_, anyhow::Error>(served??)
    };
    let result = tokio::time::timeout(config.shutdown_timeout, stopping).await;
    let _ = std::fs::remove_file(&config.socket);
    match result {
        Ok(done) => done,
        Err(_) => anyhow::bail!(
            "shutdown did not finish within {:?}",
            config.shutdown_timeout
        ),
    }
}

/// Starts the `--metrics-addr` server, if configured: a stop sender and the server's task.
#[allow(clippy::type_complexity)]
fn serve_metrics(
    config: &Config,
    manager: plugind_manager::Manager,
    owner: &plugind_sys::socket::SocketOwner,
) -> anyhow::Result<(
    tokio::sync::oneshot::Sender<()>,
    Option<tokio::task::JoinHandle<()>>,
)> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let Some(addr) = &config.metrics_addr else {
        return Ok((stop_tx, None));
    };
    let listener = wiring::bind_metrics(addr, owner)?;
    tracing::info!(addr = ?addr, "serving metrics");
    let task = tokio::spawn(plugind_api::serve_metrics(listener, manager, async {
        let _ = stop_rx.await;
    }));
    Ok((stop_tx, Some(task)))
}

/// `plugind podman-conf`: the drop-in the running daemon keeps in its publish directory,
/// printed or written atomically to `output`.
fn podman_conf(config: &Config, output: Option<&std::path::Path>) -> anyhow::Result<()> {
    let path = config
        .publish_dir
        .join(plugind_volumes::publish::DROP_IN_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (is plugind running with this --exec-root/--publish-dir?)",
            path.display()
        )
    })?;
    match output {
        None => print!("{text}"),
        Some(out) => plugind_volumes::publish::write_drop_in(out, &text)
            .with_context(|| format!("cannot write {}", out.display()))?,
    }
    Ok(())
}

/// The configured connection cap, lowered to what fits under the descriptor limit with room
/// for plugin work (a daemon at its descriptor limit cannot start plugins or answer anyone).
fn api_max_connections(config: &Config, nofile: Option<plugind_sys::limits::NofileLimit>) -> usize {
    let Some(limit) = nofile else {
        return config.api_max_connections;
    };
    let budget = plugind_api::connection_budget(limit.soft);
    if budget < config.api_max_connections {
        tracing::warn!(
            configured = config.api_max_connections,
            used = budget,
            nofile = limit.soft,
            reserved = plugind_api::reserved_descriptors(limit.soft),
            "API connection cap lowered to fit the descriptor limit"
        );
    }
    tracing::debug!(
        nofile = limit.soft,
        max_connections = budget.min(config.api_max_connections),
        "descriptor limit"
    );
    budget.min(config.api_max_connections)
}

/// SIGHUP: re-read flags and file, apply what can change at run time, and say what was applied
/// and what waits for a restart (log line and `daemon` `reload` event). A bad file keeps the
/// running configuration. Returns the configuration now in force.
async fn reload(args: &[OsString], running: &Config, lifecycle: &dyn Lifecycle) -> Config {
    let loaded = Cli::parse_from(args.to_vec())
        .map_err(anyhow::Error::from)
        .and_then(|cli| Config::load(&cli));
    let new = match loaded {
        Ok(new) => new,
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "reload failed; keeping the running configuration"
            );
            return running.clone();
        }
    };
    if let Err(e) = lifecycle.reload(&new).await {
        tracing::error!(
            error = format!("{e:#}"),
            "reload failed; keeping the running configuration"
        );
        return running.clone();
    }
    let diff = ReloadDiff::between(running, &new);
    let in_force = ReloadDiff::apply(running, &new);
    tracing::info!(
        applied = %diff.applied.join(","),
        needs_restart = %diff.needs_restart.join(","),
        "configuration reloaded"
    );
    if !diff.needs_restart.is_empty() {
        tracing::warn!(
            settings = %diff.needs_restart.join(","),
            "changed settings take effect only after a restart of plugind"
        );
    }
    lifecycle.reloaded(reload_attributes(&in_force, &diff));
    in_force
}

/// Attributes of the `reload` event: the reloadable settings now in force (dockerd lists its
/// own the same way), and plugind's lists of applied and restart-only changes.
fn reload_attributes(
    config: &Config,
    diff: &ReloadDiff,
) -> std::collections::BTreeMap<String, String> {
    let runtimes: Vec<&str> = config.runtimes.keys().map(String::as_str).collect();
    std::collections::BTreeMap::from([
        ("default-runtime".to_owned(), config.default_runtime.clone()),
        ("runtimes".to_owned(), runtimes.join(",")),
        (
            "shutdown-timeout".to_owned(),
            config.shutdown_timeout.as_secs().to_string(),
        ),
        (
            "authorization-plugins".to_owned(),
            config.authorization_plugins.join(","),
        ),
        ("applied".to_owned(), diff.applied.join(",")),
        ("needs-restart".to_owned(), diff.needs_restart.join(",")),
    ])
}
