//! The [`Executor`] implementation: the task RPCs (`Connect`, `State`, `Kill` + `Wait`,
//! `Delete` + `Shutdown`) the manager's operations come down to.

use super::*;

#[async_trait]
impl Executor for ShimExecutor {
    async fn create(&self, req: CreateTask) -> Result<TaskState> {
        self.inner.create(req).await
    }

    fn log_tail(&self, id: &str, n: usize) -> Result<Vec<String>> {
        ShimExecutor::log_tail(self, id, n)
    }

    fn log_path(&self, id: &str) -> PathBuf {
        ShimExecutor::log_path(self, id)
    }

    async fn kill(&self, id: &str, grace: Duration) -> Result<ExitInfo> {
        let (_, c) = self.inner.client(id)?;
        let t = Some(self.inner.config.rpc_timeout);
        let wait = WaitRequest {
            id: id.to_owned(),
            ..Default::default()
        };
        match c
            .kill(
                KillRequest {
                    id: id.to_owned(),
                    signal: SIGTERM,
                    ..Default::default()
                },
                t,
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        // Zero grace: straight to SIGKILL (a zero ttrpc timeout would mean "no deadline").
        let waited = if grace.is_zero() {
            Err(ExecutorError::Timeout {
                id: id.to_owned(),
                method: "Wait",
            })
        } else {
            c.wait(wait.clone(), Some(grace)).await
        };
        let resp = match waited {
            Ok(r) => r,
            Err(ExecutorError::Timeout { .. } | ExecutorError::Rpc { .. }) => {
                // SIGTERM ignored (a PID 1 without a handler): escalate to every process.
                let kill = KillRequest {
                    id: id.to_owned(),
                    signal: SIGKILL,
                    all: true,
                    ..Default::default()
                };
                match c.kill(kill, t).await {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
                c.wait(wait, t).await?
            }
            Err(e) => return Err(e),
        };
        Ok(ExitInfo {
            status: resp.exit_status,
            exited_at: time_of(resp.exited_at.as_ref()),
            oom_killed: false,
        })
    }

    async fn delete(&self, id: &str) -> Result<ExitInfo> {
        self.inner.delete(id).await
    }

    async fn destroy(&self, id: &str, bundle: &Path) -> Result<()> {
        self.inner.destroy(id, bundle).await
    }

    fn leftovers(&self) -> Vec<String> {
        self.inner.leftovers()
    }

    async fn state(&self, id: &str) -> Result<TaskState> {
        let task = self.inner.task(id)?;
        let Some(c) = &task.client else {
            return Ok(TaskState {
                id: id.to_owned(),
                pid: 0,
                status: TaskStatus::Stopped,
                exit: task.exit,
            });
        };
        let st = self.inner.state_of(c, id).await?;
        let status = status_of(&st);
        let exit = (status == TaskStatus::Stopped).then(|| exit_of(&st));
        Ok(TaskState {
            id: id.to_owned(),
            pid: st.pid,
            status,
            exit,
        })
    }

    async fn restore(&self, tasks: Vec<(String, PathBuf)>) -> Vec<RestoreOutcome> {
        // A task each: a fleet's re-attaches (file reads, a dial or a call per task) spread
        // over every worker instead of being polled by one.
        let handles: Vec<_> = tasks
            .into_iter()
            .map(|(id, bundle)| {
                let inner = self.inner.clone();
                let task = (id.clone(), bundle.clone());
                (
                    task,
                    tokio::spawn(async move { inner.restore_one(id, bundle).await }),
                )
            })
            .collect();
        let mut outcomes = Vec::with_capacity(handles.len());
        for ((id, bundle), handle) in handles {
            outcomes.push(handle.await.unwrap_or_else(|e| RestoreOutcome::Failed {
                id,
                error: ExecutorError::io("restore", &bundle, std::io::Error::other(e)),
            }));
        }
        outcomes
    }
}

impl Inner {
    /// Connects and pings with `Connect` (a shim that died after `start` printed its address
    /// would otherwise look alive; gotcha 4).
    pub(super) async fn attach(
        &self,
        id: &str,
        address: &str,
        deadline: Duration,
    ) -> Result<(TaskClient, u32, u32)> {
        let client = TaskClient::connect(id, address, deadline).await?;
        let resp = self.connect_rpc(&client, id, deadline).await?;
        Ok((client, resp.shim_pid, resp.task_pid))
    }

    /// `Connect` for task `id`: the shim's and the task's pids.
    pub(super) async fn connect_rpc(
        &self,
        client: &TaskClient,
        id: &str,
        deadline: Duration,
    ) -> Result<containerd_shim_protos::api::ConnectResponse> {
        client
            .connect_rpc(
                ConnectRequest {
                    id: id.to_owned(),
                    ..Default::default()
                },
                Some(deadline),
            )
            .await
    }

    pub(super) async fn state_of(&self, client: &TaskClient, id: &str) -> Result<StateResponse> {
        client
            .state(
                StateRequest {
                    id: id.to_owned(),
                    ..Default::default()
                },
                Some(self.config.rpc_timeout),
            )
            .await
    }

    pub(super) async fn delete(&self, id: &str) -> Result<ExitInfo> {
        let task = self.task(id)?;
        let t = Some(self.config.rpc_timeout);
        let exit = match &task.client {
            Some(client) => {
                let st = self.state_of(client, id).await?;
                if status_of(&st) != TaskStatus::Stopped {
                    return Err(ExecutorError::StillRunning { id: id.to_owned() });
                }
                // Report the exit if the event has not come yet (deduplicated).
                let mut exit = self.report_stopped(id, &st).await;
                let resp = client
                    .delete(
                        DeleteRequest {
                            id: id.to_owned(),
                            ..Default::default()
                        },
                        t,
                    )
                    .await?;
                exit.status = resp.exit_status;
                if let Some(g) = &task.group {
                    // The group's shim goes only with its last task.
                    self.leave_group(g, id).await;
                } else if let Err(e) = client
                    .shutdown(
                        ShutdownRequest {
                            id: id.to_owned(),
                            ..Default::default()
                        },
                        t,
                    )
                    .await
                {
                    // The shim may exit before answering.
                    tracing::debug!(task = %id, error = %e, "shutdown");
                }
                if task.group.is_none() {
                    // Shutdown answers before the shim exits; "deleted" should mean gone.
                    if let Some(shim) = task.shim {
                        self.wait_gone(shim).await;
                    }
                    if let Some(p) = socket_path(client.address()) {
                        remove_file_quiet(p);
                    }
                }
                exit
            }
            None => {
                if let Some(g) = &task.group {
                    self.leave_group(g, id).await;
                }
                task.exit.unwrap_or(ExitInfo {
                    status: 137,
                    exited_at: None,
                    oom_killed: false,
                })
            }
        };
        self.forget(id);
        task.drains.lock().await.stop().await;
        let dir = self.config.task_dir(id);
        if let Err(e) = fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(ExecutorError::io("remove", &dir, e));
            }
        }
        remove_file_quiet(&task.bundle.join("log"));
        tracing::info!(task = %id, status = exit.status, "task deleted");
        Ok(exit)
    }
}
