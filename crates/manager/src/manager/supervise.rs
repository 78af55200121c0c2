//! Supervision: task events from the executor, handled in order per plugin, and restarts of
//! plugins that exit unexpectedly (capped, jittered backoff; "failed" after repeated fast
//! failures, while the plugin stays desired-enabled).

use std::{sync::Arc, time::Duration};

use plugind_executor::TaskEvent;
use plugind_store::RunState;
use plugind_types::PluginId;
use tokio::sync::mpsc;

use super::{exit_record, lock, Manager};

impl Manager {
    // ----- events and supervision ----------------------------------------------------------

    pub(super) fn spawn_event_loop(&self, mut events: mpsc::UnboundedReceiver<TaskEvent>) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let Some(inner) = weak.upgrade() else { break };
                let manager = Manager { inner };
                let Ok(id) = PluginId::parse(event.id()) else {
                    continue;
                };
                let m = manager.clone();
                if manager
                    .inner
                    .queue
                    .append(id, async move { m.handle_event(event).await })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
    }

    async fn handle_event(&self, event: TaskEvent) {
        let TaskEvent::Exited {
            id,
            exec_id: None,
            pid,
            exit,
        } = event
        else {
            return;
        };
        let Ok(id) = PluginId::parse(&id) else { return };
        // Whoever waits for this exit (enable's readiness wait, a stop) gets it first.
        let (expected, stopping, ran_for) = {
            let live = lock(&self.inner.live);
            match live.get(&id) {
                Some(l) => {
                    if let Some(tx) = &l.exit_tx {
                        let _ = tx.send(Some(exit));
                    }
                    let expected = l.running.as_ref().is_some_and(|r| r.pid == pid);
                    (
                        expected,
                        l.stopping,
                        l.running.as_ref().map(|r| r.started.elapsed()),
                    )
                }
                None => (false, false, None),
            }
        };
        if !expected || stopping {
            return; // a late or duplicate event, or an exit the manager caused itself
        }
        let guard = self.plugin_lock(&id);
        let _held = guard.lock().await;
        // Re-check under the lock: disable may have run in between.
        let still_ours = lock(&self.inner.live)
            .get(&id)
            .is_some_and(|l| !l.stopping && l.running.as_ref().is_some_and(|r| r.pid == pid));
        if !still_ours {
            return;
        }
        tracing::warn!(plugin = %id, status = exit.status, oom = exit.oom_killed, "plugin exited unexpectedly");
        // If the executor cannot confirm the task gone, the plugin is now failed and the task
        // stays tracked; a restart (below) retries the stop before starting anything.
        let cleaned = self.cleanup_task(&id).await;
        let Some(record) = self.inner.store.get(&id) else {
            return;
        };
        if cleaned.is_ok() {
            let _ = self
                .update(&id, move |r| {
                    r.state.observed.state = RunState::Stopped;
                    r.state.observed.last_exit = Some(exit_record(&exit));
                })
                .await;
        }
        if !record.desired_enabled()
            || self
                .inner
                .shutting_down
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let why = format!(
            "exited with status {}{}",
            exit.status,
            if exit.oom_killed { " (OOM-killed)" } else { "" }
        );
        self.schedule_restart(id, ran_for.unwrap_or_default(), why);
    }

    /// Plans the next start of a plugin that exited or failed to start (`why`).
    pub(super) fn schedule_restart(&self, id: PluginId, ran_for: Duration, why: String) {
        let (decision, generation) = {
            let mut live = lock(&self.inner.live);
            let l = live.entry(id.clone()).or_default();
            (
                self.inner
                    .config
                    .restart
                    .next(&mut l.fast_failures, ran_for, rand::random()),
                l.generation,
            )
        };
        let this = self.clone();
        tokio::spawn(async move {
            if decision.failed {
                let reason = format!(
                    "plugin keeps failing (last: {why}); retrying every {:?}",
                    decision.delay
                );
                if let Ok(record) = this
                    .update(&id, move |r| {
                        r.state.observed.state = RunState::Failed { reason }
                    })
                    .await
                {
                    this.publish("failed", &record);
                }
            }
            tokio::time::sleep(decision.delay).await;
            this.restart(id, generation).await;
        });
    }

    async fn restart(&self, id: PluginId, generation: u64) {
        let guard = self.plugin_lock(&id);
        let _held = guard.lock().await;
        let current = lock(&self.inner.live).get(&id).map(|l| l.generation);
        if current != Some(generation)
            || (self.is_running(&id) && !self.stop_failed(&id))
            || self
                .inner
                .shutting_down
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let Some(record) = self.inner.store.get(&id) else {
            return;
        };
        if !record.desired_enabled() {
            return;
        }
        match self
            .start_task(&record, self.inner.config.default_ready_timeout)
            .await
        {
            Ok(pid) => {
                if let Ok(record) = self
                    .update(&id, move |r| {
                        r.state.observed.state = RunState::Running { pid };
                        r.state.observed.restart_count += 1;
                    })
                    .await
                {
                    self.publish("restart", &record);
                }
            }
            Err(e) => {
                tracing::warn!(plugin = %id, error = %e, "restarting plugin failed");
                let reason = e.to_string();
                let failed = reason.clone();
                let _ = self
                    .update(&id, move |r| {
                        r.state.observed.state = RunState::Failed { reason: failed }
                    })
                    .await;
                self.schedule_restart(id, Duration::ZERO, reason);
            }
        }
    }
}
