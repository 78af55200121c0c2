//! Start and stop of plugind: re-attaching the tasks of an earlier run (live restore) or
//! restarting them, starting plugins that should run, and the shutdown that keeps or stops
//! plugins.

use std::{
    collections::HashSet,
    path::Path,
    time::{Duration, Instant},
};

use plugind_bundle::Bundle;
use plugind_executor::RestoreOutcome;
use plugind_store::RunState;
use plugind_types::PluginId;

use super::{exit_record, lock, Manager, RestoreReport, Running};

impl Manager {
    // ----- restore and shutdown -------------------------------------------------------------

    pub(super) async fn restore(&self) -> RestoreReport {
        let inner = &self.inner;
        let mut report = RestoreReport::default();
        let records = inner.store.list();
        let bundles_dir = inner.config.bundles_dir();
        // Every bundle on disk is an intent: enable writes it before it starts a shim, and
        // deletes it only once the executor confirmed the task gone. So the bundles, not the
        // records, say which tasks may still run.
        let on_disk = self
            .blocking({
                let dir = bundles_dir.clone();
                move |_| bundle_names(&dir)
            })
            .await
            .unwrap_or_default();
        let known: HashSet<&PluginId> = records.iter().map(|r| r.id()).collect();
        let mut with_record = Vec::new();
        let mut untracked = Vec::new();
        for name in on_disk {
            match PluginId::parse(&name) {
                Ok(id) if known.contains(&id) => {
                    with_record.push((name.clone(), Bundle::path_for(&bundles_dir, &id)))
                }
                Ok(id) => untracked.push(id),
                Err(_) => tracing::warn!(name, "ignoring a foreign entry in the bundles directory"),
            }
        }
        for id in untracked {
            // A plugin that is gone (or never was): nothing may keep running from its bundle.
            if self.destroy_leftover(&id).await {
                report.destroyed.push(id.to_string());
            }
        }
        let began = Instant::now();
        let outcomes = inner.executor.restore(with_record).await;
        tracing::debug!(elapsed = ?began.elapsed(), tasks = outcomes.len(), "restore: executor re-attached");
        let mut running = HashSet::new();
        for outcome in outcomes {
            let Ok(id) = PluginId::parse(outcome.id()) else {
                continue;
            };
            match outcome {
                RestoreOutcome::Running { pid, .. } => {
                    let desired = inner.store.get(&id).is_some_and(|r| r.desired_enabled());
                    lock(&inner.live).entry(id.clone()).or_default().running = Some(Running {
                        pid,
                        started: Instant::now(),
                    });
                    if desired && inner.config.live_restore {
                        running.insert(id.clone());
                    } else {
                        // Not wanted (a killed enable or disable), or live restore is off: stop
                        // it; a wanted one starts fresh below.
                        if let Err(reason) = self.stop_task(&id).await {
                            report.failed.push((id.clone(), reason));
                        }
                    }
                }
                RestoreOutcome::Exited { exit, .. } => {
                    if self.cleanup_task(&id).await.is_ok() {
                        let _ = self
                            .update(&id, move |r| {
                                r.state.observed.state = RunState::Stopped;
                                r.state.observed.last_exit = Some(exit_record(&exit));
                            })
                            .await;
                    }
                }
                RestoreOutcome::Failed { error, .. } => {
                    // Not adopted (no shim answers, or not the process that was started):
                    // tear down whatever runs from the bundle, or it is orphaned for good.
                    tracing::warn!(plugin = %id, error = %error, "cannot re-attach plugin task; destroying it");
                    if self.destroy_leftover(&id).await {
                        report.destroyed.push(id.to_string());
                    }
                }
            }
        }
        // Executor files of tasks without a bundle (a crash between the two).
        for name in inner.executor.leftovers() {
            let Ok(id) = PluginId::parse(&name) else {
                continue;
            };
            if !running.contains(&id) && !self.is_running(&id) && self.destroy_leftover(&id).await {
                report.destroyed.push(name);
            }
        }
        // A re-attached plugin must answer on its socket (it may have been killed while
        // starting, or hang): otherwise it is stopped and started afresh.
        // A task each: a fleet's checks spread over every worker.
        let checks: Vec<_> = running
            .iter()
            .cloned()
            .map(|id| {
                let this = self.clone();
                let task = id.clone();
                (
                    task,
                    tokio::spawn(async move { this.reattached_socket_answers(&id).await }),
                )
            })
            .collect();
        let mut checked = Vec::with_capacity(checks.len());
        for (id, check) in checks {
            checked.push((id, check.await.unwrap_or(false)));
        }
        tracing::debug!(elapsed = ?began.elapsed(), "restore: sockets of re-attached plugins checked");
        for (id, ok) in checked {
            if ok {
                let pid = lock(&inner.live)
                    .get(&id)
                    .and_then(|l| l.running.as_ref().map(|r| r.pid));
                // Only a record that says otherwise is rewritten: after a kill -9 with live
                // restore almost every record already says running with this pid, and a
                // record write is an fsync (1,000 of them, one after the other, were most of a
                // fleet's restore time).
                let already = |pid: u32| {
                    inner.store.get(&id).is_some_and(|r| {
                        matches!(r.state.observed.state, RunState::Running { pid: p } if p == pid)
                    })
                };
                if let Some(pid) = pid {
                    if !already(pid) {
                        let _ = self
                            .update(&id, move |r| {
                                r.state.observed.state = RunState::Running { pid }
                            })
                            .await;
                    }
                    self.spawn_health_monitor(&id, pid);
                }
                report.reattached.push(id);
            } else {
                tracing::warn!(plugin = %id, "re-attached plugin does not answer on its socket; restarting it");
                running.remove(&id);
                if let Err(reason) = self.stop_task(&id).await {
                    report.failed.push((id.clone(), reason));
                }
            }
        }
        tracing::debug!(elapsed = ?began.elapsed(), "restore: records and health monitors");
        // Leftover mounts and runtime directories of plugins that are not running (crash
        // while running), including directories of plugins nobody knows.
        let keep: HashSet<PluginId> = running.clone();
        let ids: Vec<PluginId> = records.iter().map(|r| r.id().clone()).collect();
        let _ = self
            .blocking(move |m| m.remove_stale_runtime_dirs(&ids, &keep))
            .await;
        // A disabled plugin whose record still says running (killed during a disable, or
        // before an exit was recorded) is stopped now: its task was stopped above, or is gone.
        for r in records
            .iter()
            .filter(|r| !r.desired_enabled() && !running.contains(r.id()))
        {
            let says_running = matches!(r.state.observed.state, RunState::Running { .. });
            if says_running && !self.is_running(r.id()) {
                let _ = self
                    .update(r.id(), |r| r.state.observed.state = RunState::Stopped)
                    .await;
            }
        }
        tracing::debug!(elapsed = ?began.elapsed(), "restore: stale runtime directories");
        let to_start: Vec<_> = records
            .into_iter()
            .filter(|r| r.desired_enabled() && !running.contains(r.id()))
            .collect();
        let starts = to_start.into_iter().map(|r| {
            let this = self.clone();
            async move {
                let id = r.id().clone();
                let guard = this.plugin_lock(&id);
                let _held = guard.lock().await;
                let result = this
                    .start_task(&r, this.inner.config.default_ready_timeout)
                    .await;
                match &result {
                    Ok(pid) => {
                        let pid = *pid;
                        let _ = this
                            .update(&id, move |r| {
                                r.state.observed.state = RunState::Running { pid }
                            })
                            .await;
                    }
                    Err(e) => {
                        let reason = e.to_string();
                        let _ = this
                            .update(&id, move |r| {
                                r.state.observed.state = RunState::Failed { reason }
                            })
                            .await;
                    }
                }
                (id, result)
            }
        });
        for (id, result) in futures::future::join_all(starts).await {
            match result {
                Ok(_) => report.started.push(id),
                Err(e) => {
                    // Still desired enabled: supervision keeps trying with backoff.
                    self.schedule_restart(id.clone(), Duration::ZERO, e.to_string());
                    report.failed.push((id, e.to_string()));
                }
            }
        }
        report
    }

    /// Tears down a task nobody tracks: the executor kills it and its shim and removes runc
    /// state; then its bundle, mounts and runtime directory go. True if it is all gone.
    async fn destroy_leftover(&self, id: &PluginId) -> bool {
        let bundle = Bundle::path_for(&self.inner.config.bundles_dir(), id);
        if let Err(e) = self.inner.executor.destroy(id.as_str(), &bundle).await {
            // The bundle is kept: it is the only trace of the task for the next attempt.
            tracing::error!(plugin = %id, error = %e, "cannot destroy leftover task; keeping its bundle for the next start");
            return false;
        }
        let gone = id.clone();
        let _ = self.blocking(move |m| m.remove_task_files(&gone)).await;
        if let Some(l) = lock(&self.inner.live).get_mut(id) {
            l.running = None;
            l.stop_error = None;
        }
        true
    }

    /// True once the socket of a re-attached plugin accepts a connection (within the ready
    /// timeout), false if it does not or the task exits meanwhile.
    async fn reattached_socket_answers(&self, id: &PluginId) -> bool {
        let Some(record) = self.inner.store.get(id) else {
            return false;
        };
        let socket_name = if record.plugin.config.interface.socket.is_empty() {
            "plugin.sock".to_owned()
        } else {
            record.plugin.config.interface.socket.clone()
        };
        // Not held while waiting: a fleet's checks would hold a copy of every record.
        drop(record);
        let socket_name = socket_name.as_str();
        let Ok(socket) = plugind_bundle::socket::plugin_socket_path(
            &self.inner.config.exec_root,
            id,
            socket_name,
        ) else {
            return false;
        };
        let (exit_tx, mut exit_rx) = tokio::sync::watch::channel(None);
        if let Some(l) = lock(&self.inner.live).get_mut(id) {
            l.exit_tx = Some(exit_tx);
        }
        let ready = super::task::wait_ready(
            &socket,
            self.inner.config.default_ready_timeout,
            &mut exit_rx,
        )
        .await
        .is_ok();
        if let Some(l) = lock(&self.inner.live).get_mut(id) {
            l.exit_tx = None;
        }
        ready
    }

    /// Unmounts and removes the runtime directories (`<exec-root>/plugins/<id>`) of every
    /// plugin not in `keep`, known (`ids`) or not, unmounts leftovers of known plugins, and
    /// deletes the output logs of plugins that no longer exist (a remove killed half-way).
    fn remove_stale_runtime_dirs(&self, ids: &[PluginId], keep: &HashSet<PluginId>) {
        let cfg = &self.inner.config;
        let known: HashSet<&str> = ids.iter().map(PluginId::as_str).collect();
        let any_log = self.inner.executor.log_path(&"0".repeat(64));
        if let Some(Ok(entries)) = any_log.parent().map(std::fs::read_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let id = name.split('.').next().unwrap_or_default();
                if PluginId::parse(id).is_ok() && !known.contains(id) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        for id in ids.iter().filter(|id| !keep.contains(*id)) {
            let _ = plugind_bundle::mounts::cleanup_plugin_mounts(&cfg.root, &cfg.exec_root, id);
        }
        let Ok(entries) = std::fs::read_dir(cfg.exec_root.join("plugins")) else {
            return;
        };
        for entry in entries.flatten() {
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| PluginId::parse(n).ok())
            else {
                continue;
            };
            if keep.contains(&id) || self.is_running(&id) {
                continue;
            }
            let dir = entry.path();
            match plugind_bundle::mounts::unmount_under(&dir) {
                Ok(_) => {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                Err(e) => {
                    tracing::warn!(plugin = %id, error = %e, "cannot unmount stale runtime directory")
                }
            }
        }
    }

    /// Shuts the manager down. With live restore, plugins keep running (only connections
    /// close); without, every running plugin is stopped in parallel (its desired state is
    /// kept, so the next start brings it back).
    pub async fn shutdown(&self) {
        self.inner
            .shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if !self.inner.config.live_restore {
            let ids: Vec<PluginId> = lock(&self.inner.live)
                .iter()
                .filter(|(_, l)| l.running.is_some())
                .map(|(id, _)| id.clone())
                .collect();
            let stops = ids.into_iter().map(|id| {
                let this = self.clone();
                async move {
                    let guard = this.plugin_lock(&id);
                    let _held = guard.lock().await;
                    if this.stop_task(&id).await.is_ok() {
                        let _ = this
                            .update(&id, |r| r.state.observed.state = RunState::Stopped)
                            .await;
                    }
                }
            });
            futures::future::join_all(stops).await;
        }
        // No restart may start after this, and nothing the manager spawned outlives it.
        self.join_background(self.inner.config.stop_grace).await;
        self.inner
            .queue
            .shutdown(plugind_queue::ShutdownMode::Drain)
            .await;
    }
}

/// Names of the bundle directories (hidden `.…-deleting` leftovers excluded).
fn bundle_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect()
}
