//! Start and stop of plugind: re-attaching the tasks of an earlier run (live restore) or
//! restarting them, starting plugins that should run, and the shutdown that keeps or stops
//! plugins.

use std::{
    collections::HashSet,
    path::PathBuf,
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
        let with_bundle: Vec<(String, PathBuf)> = records
            .iter()
            .map(|r| (r.id().to_string(), Bundle::path_for(&bundles_dir, r.id())))
            .filter(|(_, p)| p.is_dir())
            .collect();
        let outcomes = inner.executor.restore(with_bundle).await;
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
                        let _ = inner
                            .store
                            .update(&id, |r| r.state.observed.state = RunState::Running { pid });
                        running.insert(id.clone());
                        report.reattached.push(id);
                    } else {
                        // Not wanted, or live restore is off: stop it; a wanted one starts fresh.
                        self.stop_task(&id).await;
                    }
                }
                RestoreOutcome::Exited { exit, .. } => {
                    self.cleanup_task(&id).await;
                    let _ = inner.store.update(&id, |r| {
                        r.state.observed.state = RunState::Stopped;
                        r.state.observed.last_exit = Some(exit_record(&exit));
                    });
                }
                RestoreOutcome::Failed { error, .. } => {
                    tracing::warn!(plugin = %id, error = %error, "cannot re-attach plugin task");
                    self.cleanup_task(&id).await;
                }
            }
        }
        // Leftover mounts of plugins that are not running (crash while running).
        for r in &records {
            if !running.contains(r.id()) {
                let _ = plugind_bundle::mounts::cleanup_plugin_mounts(
                    &inner.config.root,
                    &inner.config.exec_root,
                    r.id(),
                );
            }
        }
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
                            .inner
                            .store
                            .update(&id, |r| r.state.observed.state = RunState::Running { pid });
                    }
                    Err(e) => {
                        let reason = e.to_string();
                        let _ = this.inner.store.update(&id, |r| {
                            r.state.observed.state = RunState::Failed { reason }
                        });
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
                    this.stop_task(&id).await;
                    let _ = this
                        .inner
                        .store
                        .update(&id, |r| r.state.observed.state = RunState::Stopped);
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
