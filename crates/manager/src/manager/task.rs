//! A plugin's task: bundle preparation, start and readiness wait, and stops that report failure
//! instead of forgetting a task the executor did not confirm gone.

use super::*;

impl Manager {
    /// Starts the plugin's task and waits for readiness. Caller holds the plugin lock.
    pub(super) async fn start_task(&self, record: &PluginRecord, timeout: Duration) -> Result<u32> {
        let inner = &self.inner;
        let id = record.id().clone();
        let cfg = &inner.config;
        let runtime_dir = plugind_bundle::socket::plugin_runtime_dir(&cfg.exec_root, &id);
        let socket = self.socket_path(record)?;
        // A task whose stop failed earlier may still run from the bundle about to be replaced
        // (or the executor still holds one the manager lost track of, which would make the
        // create below fail with "already exists"): stop it first, or fail without touching it.
        let executor_has_it = match inner.executor.state(id.as_str()).await {
            Ok(_) => true,
            Err(e) => !e.is_not_found(),
        };
        if self.is_running(&id) || executor_has_it {
            self.stop_task(&id)
                .await
                .map_err(|reason| ManagerError::StopFailed {
                    name: record.name().to_owned(),
                    reason,
                })?;
        }
        let phase = Instant::now();
        let (bundle, spec_time) = {
            let (record, runtime_dir, socket) =
                (record.clone(), runtime_dir.clone(), socket.clone());
            self.blocking(move |m| m.prepare_bundle(&record, &runtime_dir, &socket))
                .await??
        };
        let bundle_time = phase.elapsed();

        let (exit_tx, mut exit_rx) = watch::channel(None);
        {
            let mut live = lock(&inner.live);
            let l = live.entry(id.clone()).or_default();
            l.exit_tx = Some(exit_tx);
            l.stopping = false;
        }
        let created = inner
            .executor
            .create(CreateTask {
                id: id.to_string(),
                bundle: bundle.path().to_path_buf(),
                runtime: record.state.runtime.clone(),
            })
            .await;
        let state = match created {
            Ok(state) => state,
            Err(e) => {
                let mut reason = e.to_string();
                if let Err(stop) = self.cleanup_task(&id).await {
                    reason = format!("{reason}; {stop}");
                }
                return Err(ManagerError::StartFailed {
                    name: record.name().to_owned(),
                    reason,
                });
            }
        };
        {
            let mut live = lock(&inner.live);
            let l = live.entry(id.clone()).or_default();
            l.running = Some(Running {
                pid: state.pid,
                started: Instant::now(),
            });
        }
        let task_time = phase.elapsed() - bundle_time;
        let ready = wait_ready(&socket, timeout, &mut exit_rx).await;
        let ready_time = phase.elapsed() - bundle_time - task_time;
        match ready {
            Ok(()) => {}
            Err(why) => {
                let tail = self.log_tail(&id, 20).await;
                let reason = match why {
                    NotReady::Exited(exit) => format!(
                        "plugin exited with status {} before its socket {} accepted connections; last output: {}",
                        exit.status,
                        socket.display(),
                        tail
                    ),
                    NotReady::Timeout => format!(
                        "socket {} did not accept connections within {:?}; last output: {}",
                        socket.display(),
                        timeout,
                        tail
                    ),
                };
                let reason = match self.stop_task(&id).await {
                    Ok(_) => reason,
                    Err(stop) => format!("{reason}; {stop}"),
                };
                return Err(ManagerError::StartFailed {
                    name: record.name().to_owned(),
                    reason,
                });
            }
        }
        // Docker never activates managed plugins; we ask as a courtesy and record the answer.
        let client = PluginClient::new(record.name(), &socket)
            .with_max_answer_bytes(self.inner.config.max_plugin_answer_bytes);
        match client
            .call("Plugin.Activate", None, Duration::from_secs(5))
            .await
        {
            Ok(answer) => {
                let implements = answer
                    .get("Implements")
                    .and_then(|v| v.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    });
                if let Some(l) = lock(&inner.live).get_mut(&id) {
                    l.implements = implements;
                }
            }
            Err(e) => {
                tracing::debug!(plugin = %id, error = %e, "Plugin.Activate not answered (fine)")
            }
        }
        let total = phase.elapsed();
        // One line per start with every phase in microseconds (integers, so `cargo xtask bench
        // daemon` reads them from the JSON log): spec build, bundle write (the blocking step
        // holding both, spec included), executor create (shim, runtime create + start), socket
        // ready, Plugin.Activate.
        tracing::debug!(
            plugin = %id,
            spec_us = micros(spec_time),
            bundle_us = micros(bundle_time.saturating_sub(spec_time)),
            task_us = micros(task_time),
            ready_us = micros(ready_time),
            activate_us = micros(total - bundle_time - task_time - ready_time),
            total_us = micros(total),
            "plugin start phases"
        );
        self.spawn_health_monitor(&id, state.pid);
        Ok(state.pid)
    }

    pub(super) fn prepare_bundle(
        &self,
        record: &PluginRecord,
        runtime_dir: &Path,
        socket: &Path,
    ) -> Result<(Bundle, Duration)> {
        let cfg = &self.inner.config;
        let id = record.id();
        // Records written before create checked paths (or edited on disk) get the same rules.
        record.plugin.config.validate()?;
        record.plugin.settings.validate()?;
        fs::create_dir_all(runtime_dir).map_err(|e| io_err("create directory", runtime_dir, e))?;
        let _ = fs::remove_file(socket);
        let rootfs = self.inner.store.rootfs_dir(id);
        plugind_bundle::init_layer::create_init_layer(&rootfs)?;
        let propagated = self.inner.store.propagated_mount_dir(id);
        if !record.plugin.config.propagated_mount.is_empty() {
            plugind_bundle::mounts::prepare_propagated_mount(&propagated)?;
        }
        let devices = record
            .plugin
            .settings
            .devices
            .iter()
            .filter_map(|d| d.path.as_deref())
            .map(|p| {
                let info = plugind_sys::mount::device_info(Path::new(p))?;
                Ok(plugind_spec::HostDevice {
                    path: info.path,
                    kind: match info.kind {
                        plugind_sys::mount::DeviceKind::Char => plugind_spec::DeviceKind::Char,
                        plugind_sys::mount::DeviceKind::Block => plugind_spec::DeviceKind::Block,
                    },
                    major: info.major as i64,
                    minor: info.minor as i64,
                    file_mode: info.file_mode,
                    uid: info.uid,
                    gid: info.gid,
                })
            })
            .collect::<std::result::Result<Vec<_>, plugind_sys::SysError>>()?;
        let locked = |p: &Path| {
            plugind_sys::mount::mount_flags_of(p).ok().map(|f| {
                f.locked_option_names()
                    .into_iter()
                    .map(str::to_owned)
                    .collect()
            })
        };
        let spec_started = Instant::now();
        let host = plugind_spec::HostFacts {
            in_user_namespace: plugind_sys::probe::in_user_namespace(),
            kernel_recursive_readonly: plugind_sys::probe::recursive_readonly_supported(),
            // runc 1.1 does not advertise `rro`; plain `ro` binds are what Docker uses too.
            runtime_mount_options: &[],
            locked_mount_options: &locked,
        };
        let spec = plugind_spec::build(&plugind_spec::SpecInput {
            id,
            config: &record.plugin.config,
            settings: &record.plugin.settings,
            rootfs: &rootfs,
            runtime_dir,
            propagated_mount_source: &propagated,
            devices: &devices,
            host: &host,
        })?;
        let spec_time = spec_started.elapsed();
        Bundle::delete(&cfg.bundles_dir(), id)?;
        Ok((Bundle::create(&cfg.bundles_dir(), id, &spec)?, spec_time))
    }

    /// The last `n` lines of the plugin's output, read on the blocking pool.
    pub(super) async fn log_tail(&self, id: &PluginId, n: usize) -> String {
        let id = id.clone();
        let lines = self
            .blocking(move |m| m.inner.executor.log_tail(id.as_str(), n))
            .await;
        match lines {
            Ok(Ok(lines)) if !lines.is_empty() => lines.join(" | "),
            Ok(Ok(_)) => "(no output)".to_owned(),
            Ok(Err(e)) => format!("(log unavailable: {e})"),
            Err(e) => format!("(log unavailable: {e})"),
        }
    }

    /// Stops the task (SIGTERM, grace, SIGKILL), waits for its exit, and cleans up. Caller
    /// holds the plugin lock. Returns the exit, if the task was running. The task is forgotten
    /// only once the executor confirmed it gone; otherwise the error says why, the plugin is
    /// marked failed and the task stays tracked, so the next enable, disable or remove retries.
    pub(super) async fn stop_task(
        &self,
        id: &PluginId,
    ) -> std::result::Result<Option<ExitInfo>, String> {
        {
            let mut live = lock(&self.inner.live);
            if let Some(l) = live.get_mut(id) {
                l.stopping = true;
            }
        }
        let exit = match self
            .inner
            .executor
            .kill(id.as_str(), self.inner.config.stop_grace)
            .await
        {
            Ok(exit) => Some(exit),
            Err(e) if e.is_not_found() => None,
            Err(e) => match self.inner.executor.state(id.as_str()).await {
                // A task that already exited cannot be killed; it only needs deleting.
                Ok(state) if state.status == plugind_executor::TaskStatus::Stopped => state.exit,
                _ => {
                    let reason = format!("stopping its task failed: {e}");
                    self.stop_failed_with(id, &reason).await;
                    return Err(reason);
                }
            },
        };
        self.cleanup_task(id).await?;
        Ok(exit)
    }

    /// Records a failed stop: the task stays tracked (`running`), the plugin is failed.
    pub(super) async fn stop_failed_with(&self, id: &PluginId, reason: &str) {
        tracing::warn!(plugin = %id, reason, "plugin task not stopped");
        if let Some(l) = lock(&self.inner.live).get_mut(id) {
            l.stopping = false;
            l.stop_error = Some(reason.to_owned());
        }
        let reason = reason.to_owned();
        let _ = self
            .update(id, move |r| {
                r.state.observed.state = RunState::Failed { reason }
            })
            .await;
    }

    /// Releases everything a stopped task left: the executor's task, the bundle, mounts, the
    /// runtime directory. Fails, keeping the bundle and the task tracked, when the executor
    /// cannot confirm the task gone (deleting the bundle of a task that may still run would
    /// orphan it); failures after that (bundle, mounts) are logged and repaired by the next
    /// start of the plugin or of plugind.
    pub(super) async fn cleanup_task(&self, id: &PluginId) -> std::result::Result<(), String> {
        let inner = &self.inner;
        match inner.executor.delete(id.as_str()).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                let reason = format!("deleting its task failed: {e}");
                self.stop_failed_with(id, &reason).await;
                return Err(reason);
            }
        }
        let removed = self
            .blocking({
                let id = id.clone();
                move |m| m.remove_task_files(&id)
            })
            .await;
        if let Err(e) = removed {
            tracing::warn!(plugin = %id, error = %e, "cleaning up plugin task files failed");
        }
        let mut live = lock(&inner.live);
        if let Some(l) = live.get_mut(id) {
            l.running = None;
            l.stopping = false;
            l.stop_error = None;
            l.exit_tx = None;
            // Ends the task's health monitor.
            l.health = None;
        }
        Ok(())
    }

    /// Deletes a gone task's bundle, unmounts its leftovers and removes its runtime directory
    /// (blocking; errors are logged).
    pub(super) fn remove_task_files(&self, id: &PluginId) {
        let inner = &self.inner;
        if let Err(e) = Bundle::delete(&inner.config.bundles_dir(), id) {
            tracing::warn!(plugin = %id, error = %e, "deleting bundle failed");
        }
        if let Err(e) = plugind_bundle::mounts::cleanup_plugin_mounts(
            &inner.config.root,
            &inner.config.exec_root,
            id,
        ) {
            tracing::warn!(plugin = %id, error = %e, "unmounting plugin leftovers failed");
        }
        let runtime_dir = plugind_bundle::socket::plugin_runtime_dir(&inner.config.exec_root, id);
        let _ = fs::remove_dir_all(&runtime_dir);
    }

    // ----- disable / remove / set ---------------------------------------------------------
}

/// How long [`wait_ready`] polls every millisecond before backing off.
const TIGHT_POLL: Duration = Duration::from_millis(100);

/// A duration in whole microseconds, for log fields a program reads.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Polls the socket from the first millisecond: every millisecond (the resolution of tokio's
/// timer, so the tightest a timer-driven poll gets) for the first [`TIGHT_POLL`], when almost
/// every plugin binds, then with intervals doubling to 5 ms; fails at once if the task exits
/// meanwhile. A failed connect to a missing socket costs a few microseconds, so even 8
/// concurrent enables poll at a negligible cost. Docker sleeps 500 ms before its first try and
/// 3 s between tries.
pub(super) async fn wait_ready(
    socket: &Path,
    timeout: Duration,
    exit: &mut watch::Receiver<Option<ExitInfo>>,
) -> std::result::Result<(), NotReady> {
    let deadline = tokio::time::Instant::now() + timeout;
    let tight_until = tokio::time::Instant::now() + TIGHT_POLL;
    let mut interval = Duration::from_millis(1);
    loop {
        if let Some(exited) = *exit.borrow() {
            return Err(NotReady::Exited(exited));
        }
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(NotReady::Timeout);
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = exit.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
        if tokio::time::Instant::now() >= tight_until {
            interval = (interval * 2).min(Duration::from_millis(5));
        }
    }
}
