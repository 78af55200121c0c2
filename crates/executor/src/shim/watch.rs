//! Noticing that a shim died (it sends no event then): a long-polling `Wait` per attached task,
//! the clean-up after a dead shim, and the report of its task's exit.

use super::*;

/// How long one watching `Wait` call may last before it is renewed.
const WATCH_PERIOD: Duration = Duration::from_secs(600);

/// Keeps a `Wait` call open on the task's shim. It returns when the task exits (the exit event
/// reports that) or fails when the shim dies, which is then cleaned up and reported.
pub(super) async fn watch(
    inner: std::sync::Weak<Inner>,
    task: std::sync::Weak<Task>,
    id: String,
    client: TaskClient,
) {
    loop {
        let req = WaitRequest {
            id: id.clone(),
            ..Default::default()
        };
        let res = client.wait(req, Some(WATCH_PERIOD)).await;
        let (Some(inner), Some(task)) = (inner.upgrade(), task.upgrade()) else {
            return;
        };
        match res {
            Ok(_) => return,
            Err(ExecutorError::Timeout { .. }) => continue,
            Err(e) if e.is_not_found() => return,
            Err(e) => {
                tracing::debug!(task = %id, error = %e, "watch failed");
                // Not awaited under an abort handle that delete may fire: detach the cleanup.
                let me = inner.clone();
                me.spawn_background(async move { inner.shim_died(&task).await });
                return;
            }
        }
    }
}

impl Inner {
    /// The shim of an attached task died (it sends no event for that): clean up after it like
    /// restore does, and report the task as exited.
    pub(super) async fn shim_died(&self, task: &Arc<Task>) {
        let id = task.id.as_str();
        let still_current = lock(&self.tasks)
            .get(id)
            .is_some_and(|t| Arc::ptr_eq(t, task));
        let Some(client) = task.client.as_ref().filter(|_| still_current) else {
            return;
        };
        // Confirm with a fresh connection: an error on the old one alone is not proof.
        if self
            .attach(id, client.address(), self.config.dial_timeout)
            .await
            .is_ok()
        {
            return;
        }
        tracing::warn!(task = %id, "shim died");
        if let Some(g) = &task.group {
            // Its restart must not join the dead shim's group (whose socket the clean-ups
            // below remove).
            self.group_died(g);
        }
        let record: Option<TaskRecord> = fs::read(self.config.task_dir(id).join("task.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let (pid, exit) = match self
            .delete_dead_shim(id, &task.bundle, client.address(), record.as_ref())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(task = %id, error = %e, "cleanup after dead shim failed");
                (
                    record.map_or(0, |r| r.pid),
                    ExitInfo {
                        status: 137,
                        exited_at: None,
                        oom_killed: false,
                    },
                )
            }
        };
        task.drains.lock().await.stop().await;
        self.register(Task {
            id: id.to_owned(),
            bundle: task.bundle.clone(),
            client: None,
            shim: None,
            group: task.group.clone(),
            exit: Some(exit),
            drains: tokio::sync::Mutex::new(Drains::default()),
            watcher: Mutex::new(None),
        });
        self.publish(TaskEvent::Exited {
            id: id.to_owned(),
            exec_id: None,
            pid,
            exit,
        })
        .await;
    }

    /// Reports the exit of a task found stopped on attach (deduplicated against events).
    pub(super) async fn report_stopped(&self, id: &str, state: &StateResponse) -> ExitInfo {
        let exit = exit_of(state);
        self.publish(TaskEvent::Exited {
            id: id.to_owned(),
            exec_id: None,
            pid: state.pid,
            exit,
        })
        .await;
        exit
    }

    /// Waits (up to the call deadline, polling with growing intervals) until a process is gone.
    pub(super) async fn wait_gone(&self, p: ProcessIdentity) {
        let deadline = tokio::time::Instant::now() + self.config.rpc_timeout;
        let mut delay = Duration::from_micros(500);
        while p.is_alive() && !plugind_sys::process::is_zombie(p.pid) {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(pid = p.pid, "shim still running after shutdown");
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(20));
        }
    }
}
