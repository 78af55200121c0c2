//! Supervision: task events from the executor, handled in order per plugin, and restarts of
//! plugins that exit unexpectedly (capped, jittered backoff; "failed" after repeated fast
//! failures, while the plugin stays desired-enabled).

use std::{future::Future, sync::Arc, time::Duration};

use plugind_executor::TaskEvent;
use plugind_store::RunState;
use plugind_types::PluginId;
use tokio::sync::mpsc;

use super::{exit_record, lock, Manager};

/// The receiving end of the executor's event channel. The daemon uses a bounded channel (a full
/// channel holds the executor's event queue back, which holds the shims back: nothing is
/// dropped); tests may use an unbounded one.
#[derive(Debug)]
pub enum TaskEventReceiver {
    /// A bounded channel (`mpsc::channel`).
    Bounded(mpsc::Receiver<TaskEvent>),
    /// An unbounded channel (`mpsc::unbounded_channel`).
    Unbounded(mpsc::UnboundedReceiver<TaskEvent>),
}

impl TaskEventReceiver {
    async fn recv(&mut self) -> Option<TaskEvent> {
        match self {
            TaskEventReceiver::Bounded(r) => r.recv().await,
            TaskEventReceiver::Unbounded(r) => r.recv().await,
        }
    }
}

impl From<mpsc::Receiver<TaskEvent>> for TaskEventReceiver {
    fn from(r: mpsc::Receiver<TaskEvent>) -> Self {
        TaskEventReceiver::Bounded(r)
    }
}

impl From<mpsc::UnboundedReceiver<TaskEvent>> for TaskEventReceiver {
    fn from(r: mpsc::UnboundedReceiver<TaskEvent>) -> Self {
        TaskEventReceiver::Unbounded(r)
    }
}

/// Resolves once shutdown has begun.
pub(super) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    // An error means the manager is gone: stopped as well.
    let _ = stop.wait_for(|s| *s).await;
}

impl Manager {
    // ----- events and supervision ----------------------------------------------------------

    /// Runs `task` in the manager's set of background tasks, which shutdown joins. Finished
    /// tasks are reaped here, so the set holds only live ones.
    pub(super) fn spawn_background(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut set = lock(&self.inner.background);
        while let Some(done) = set.try_join_next() {
            if let Err(e) = done {
                if e.is_panic() {
                    tracing::error!(error = %e, "manager background task panicked");
                }
            }
        }
        set.spawn(task);
    }

    /// Number of background tasks still held (for tests).
    #[doc(hidden)]
    pub fn background_tasks(&self) -> usize {
        lock(&self.inner.background).len()
    }

    /// Stops the event loop and restart timers and waits up to `deadline` for every background
    /// task; what is still running then is aborted.
    pub(super) async fn join_background(&self, deadline: Duration) {
        self.inner.stop_events.send_replace(true);
        let mut set = std::mem::take(&mut *lock(&self.inner.background));
        let joined = tokio::time::timeout(deadline, async {
            while let Some(done) = set.join_next().await {
                if let Err(e) = done {
                    if e.is_panic() {
                        tracing::error!(error = %e, "manager background task panicked");
                    }
                }
            }
        })
        .await;
        if joined.is_err() {
            tracing::warn!(
                left = set.len(),
                "manager tasks still running at shutdown: aborted"
            );
            set.shutdown().await;
        }
    }

    pub(super) fn spawn_event_loop(&self, mut events: TaskEventReceiver) {
        let weak = Arc::downgrade(&self.inner);
        let mut stop = self.inner.stop_events.subscribe();
        self.spawn_background(async move {
            loop {
                let event = tokio::select! {
                    event = events.recv() => event,
                    () = stopped(&mut stop) => None,
                };
                let Some(event) = event else { break };
                // Only a task's own exit concerns the manager. Other events are not queued: a
                // plugin flooding events (OOM kills, say) behind a job waiting for its lock
                // would otherwise fill the queue and, through the bounded channel, stall the
                // executor that the lock holder is waiting on.
                if !matches!(event, TaskEvent::Exited { exec_id: None, .. }) {
                    continue;
                }
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
        let mut stop = self.inner.stop_events.subscribe();
        self.spawn_background(async move {
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
            tokio::select! {
                _ = tokio::time::sleep(decision.delay) => this.restart(id, generation).await,
                () = stopped(&mut stop) => {}
            }
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
                    crate::metrics::Metrics::global()
                        .restarts
                        .get_or_create(&crate::metrics::PluginLabels {
                            plugin: record.name().to_owned(),
                        })
                        .inc();
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

#[cfg(test)]
mod tests {
    use std::{
        path::PathBuf,
        sync::atomic::{AtomicBool, Ordering},
    };

    use async_trait::async_trait;
    use plugind_executor::{
        CreateTask, Executor, ExecutorError, ExitInfo, RestoreOutcome, TaskState,
    };

    use super::*;
    use crate::ManagerConfig;

    /// An executor that knows no task: enough for a manager with no plugin running.
    struct NoTasks;

    fn none<T>(id: &str) -> plugind_executor::Result<T> {
        Err(ExecutorError::NotFound { id: id.to_owned() })
    }

    #[async_trait]
    impl Executor for NoTasks {
        async fn create(&self, req: CreateTask) -> plugind_executor::Result<TaskState> {
            none(&req.id)
        }
        async fn kill(&self, id: &str, _: Duration) -> plugind_executor::Result<ExitInfo> {
            none(id)
        }
        async fn delete(&self, id: &str) -> plugind_executor::Result<ExitInfo> {
            none(id)
        }
        async fn destroy(&self, _: &str, _: &std::path::Path) -> plugind_executor::Result<()> {
            Ok(())
        }
        fn leftovers(&self) -> Vec<String> {
            Vec::new()
        }
        async fn state(&self, id: &str) -> plugind_executor::Result<TaskState> {
            none(id)
        }
        async fn restore(&self, _: Vec<(String, PathBuf)>) -> Vec<RestoreOutcome> {
            Vec::new()
        }
        fn log_tail(&self, id: &str, _: usize) -> plugind_executor::Result<Vec<String>> {
            none(id)
        }
        fn log_path(&self, id: &str) -> PathBuf {
            PathBuf::from(id)
        }
    }

    /// Issue 10, defect 9: a flood of events for a plugin whose exit is waiting for the plugin
    /// lock is not queued behind it, so the bounded channel from the executor keeps flowing
    /// (a full channel would stall the executor, which the lock holder may be waiting on).
    #[tokio::test]
    async fn event_flood_behind_a_locked_plugin_does_not_stall_the_channel() {
        let dir = tempfile::tempdir().unwrap();
        let config = ManagerConfig::new(&dir.path().join("root"), &dir.path().join("run"));
        let (tx, rx) = mpsc::channel(4);
        let (manager, _) = Manager::start(config, Arc::new(NoTasks), rx).await.unwrap();
        let id = PluginId::from_bytes([9; 32]);
        lock(&manager.inner.live)
            .entry(id.clone())
            .or_default()
            .running = Some(super::super::Running {
            pid: 5,
            started: std::time::Instant::now(),
        });
        let held = manager.plugin_lock(&id);
        let guard = held.lock().await;
        // An exit whose handling now waits for the lock...
        tx.send(TaskEvent::Exited {
            id: id.to_string(),
            exec_id: None,
            pid: 5,
            exit: ExitInfo {
                status: 1,
                exited_at: None,
                oom_killed: false,
            },
        })
        .await
        .unwrap();
        // ...and more events for the same plugin than the manager's queue holds.
        let flood = {
            let tx = tx.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                for _ in 0..5000 {
                    tx.send(TaskEvent::Oom { id: id.clone() }).await.unwrap();
                }
            })
        };
        // A hang detector, not a performance bound: without the fix this never finishes.
        tokio::time::timeout(Duration::from_secs(60), flood)
            .await
            .expect("the event channel stalled behind a locked plugin")
            .unwrap();
        drop(guard);
        manager.shutdown().await;
    }

    /// Issue 10, defect 9: tasks the manager spawns (event loop, restart timers, sweeps) are
    /// joined at shutdown instead of being left running.
    #[tokio::test]
    async fn shutdown_joins_background_tasks_and_cancels_restart_timers() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ManagerConfig::new(&dir.path().join("root"), &dir.path().join("run"));
        // A restart timer that would fire long after the test.
        config.restart.initial = Duration::from_secs(3600);
        config.restart.max = Duration::from_secs(3600);
        let (tx, rx) = mpsc::channel(4);
        let (manager, _) = Manager::start(config, Arc::new(NoTasks), rx).await.unwrap();
        assert_eq!(manager.background_tasks(), 1, "the event loop");

        let finished = Arc::new(AtomicBool::new(false));
        let flag = finished.clone();
        manager.spawn_background(async move {
            tokio::task::yield_now().await;
            flag.store(true, Ordering::SeqCst);
        });
        let id = PluginId::from_bytes([7; 32]);
        manager.schedule_restart(id, Duration::ZERO, "test".into());

        manager.shutdown().await;
        assert!(
            finished.load(Ordering::SeqCst),
            "a background task was not joined"
        );
        assert_eq!(manager.background_tasks(), 0);
        // The event loop is gone: its receiver was dropped.
        assert!(tx.is_closed(), "the event loop still runs");
    }
}
