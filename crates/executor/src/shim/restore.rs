//! Re-attaching to running shims after a restart, and tearing down what an earlier run left:
//! dead shims, leftover tasks, their runc state and cgroups.

use super::*;

impl Inner {
    pub(super) async fn restore_one(&self, id: String, bundle: PathBuf) -> RestoreOutcome {
        match self.restore_task(&id, &bundle).await {
            Ok(o) => o,
            Err(error) => {
                // Nothing was adopted: end the generation restore began, unless the id belongs
                // to a task that is attached or starting (then the error was "already exists").
                let known =
                    lock(&self.tasks).contains_key(&id) || lock(&self.starting).contains(&id);
                if !known {
                    lock(&self.book).end(&id, None);
                }
                RestoreOutcome::Failed { id, error }
            }
        }
    }

    pub(super) async fn restore_task(&self, id: &str, bundle: &Path) -> Result<RestoreOutcome> {
        check_id(id)?;
        if bundle.file_name().and_then(|n| n.to_str()) != Some(id) {
            return Err(ExecutorError::InvalidBundle {
                id: id.to_owned(),
                bundle: bundle.to_owned(),
                reason: "directory name differs from the task id",
            });
        }
        if lock(&self.tasks).contains_key(id) {
            return Err(ExecutorError::AlreadyExists { id: id.to_owned() });
        }
        lock(&self.book).begin(id);
        let addr_file = bundle.join("address");
        let address = match fs::read_to_string(&addr_file) {
            Ok(a) => a.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ExecutorError::NotFound { id: id.to_owned() })
            }
            Err(e) => return Err(ExecutorError::io("read", &addr_file, e)),
        };
        let record_path = self.config.task_dir(id).join("task.json");
        let record: Option<TaskRecord> = fs::read(&record_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let group = self.recorded_group(id);
        let shim_tail = Tail::default();
        let mut drains = self.open_io(id, bundle, &shim_tail, &Tail::default(), group.is_none())?;
        let attached = match &group {
            Some(g) => self.reattach_member(g, id, &address).await,
            None => self
                .attach(id, &address, self.config.dial_timeout)
                .await
                .map(|(client, shim_pid, task_pid)| (client, shim_pid, task_pid, None)),
        };
        match attached {
            Ok((client, shim_pid, task_pid, st)) => {
                let st = match st {
                    Some(st) => st,
                    None => match self.state_of(&client, id).await {
                        Ok(st) => st,
                        Err(e) => {
                            drains.stop().await;
                            return Err(e);
                        }
                    },
                };
                let status = status_of(&st);
                // Adopt only the process that was started: same pid, and while it runs, the same
                // start time (a stopped task's pid may already belong to someone else).
                let matches = record.as_ref().is_some_and(|r| {
                    r.pid == task_pid
                        && (status == TaskStatus::Stopped
                            || ProcessIdentity {
                                pid: r.pid,
                                start_time: r.start_time,
                            }
                            .is_alive())
                });
                if !matches {
                    drains.stop().await;
                    return Err(ExecutorError::IdentityMismatch {
                        id: id.to_owned(),
                        pid: task_pid,
                    });
                }
                lock(&self.book).set_init_pid(id, task_pid);
                self.register(Task {
                    id: id.to_owned(),
                    bundle: bundle.to_owned(),
                    client: Some(client),
                    shim: ProcessIdentity::of(shim_pid).ok(),
                    group,
                    exit: None,
                    drains: tokio::sync::Mutex::new(drains),
                    watcher: Mutex::new(None),
                });
                if status == TaskStatus::Stopped {
                    let exit = self.report_stopped(id, &st).await;
                    Ok(RestoreOutcome::Exited {
                        id: id.to_owned(),
                        exit,
                    })
                } else {
                    Ok(RestoreOutcome::Running {
                        id: id.to_owned(),
                        pid: task_pid,
                    })
                }
            }
            Err(e) => {
                tracing::info!(task = %id, error = %e, "shim is gone: cleaning up");
                if let Some(g) = &group {
                    self.group_died(g);
                }
                self.kill_unresponsive_shim(id, record.as_ref()).await;
                let exit = self
                    .delete_dead_shim(id, bundle, &address, record.as_ref())
                    .await;
                drains.stop().await;
                let exit = exit?;
                self.register(Task {
                    id: id.to_owned(),
                    bundle: bundle.to_owned(),
                    client: None,
                    shim: None,
                    group,
                    exit: Some(exit.1),
                    drains: tokio::sync::Mutex::new(Drains::default()),
                    watcher: Mutex::new(None),
                });
                self.publish(TaskEvent::Exited {
                    id: id.to_owned(),
                    exec_id: None,
                    pid: exit.0,
                    exit: exit.1,
                })
                .await;
                Ok(RestoreOutcome::Exited {
                    id: id.to_owned(),
                    exit: exit.1,
                })
            }
        }
    }

    /// Cleans up after a dead shim with its `delete` subcommand (which also kills a container
    /// still running; runc checks the container's own identity first). Returns (pid, exit).
    pub(super) async fn delete_dead_shim(
        &self,
        id: &str,
        bundle: &Path,
        address: &str,
        record: Option<&TaskRecord>,
    ) -> Result<(u32, ExitInfo)> {
        let recorded_pid = record.map_or(0, |r| r.pid);
        let result = if bundle.join("runtime").exists() {
            let out = tokio::time::timeout(
                self.config.rpc_timeout,
                self.shim_command(id, bundle, "delete").output(),
            )
            .await
            .map_err(|_| ExecutorError::ShimDelete {
                id: id.to_owned(),
                status: None,
                stderr: "timed out".into(),
            })?
            .map_err(|e| ExecutorError::ShimDelete {
                id: id.to_owned(),
                status: None,
                stderr: e.to_string(),
            })?;
            if !out.status.success() {
                return Err(ExecutorError::ShimDelete {
                    id: id.to_owned(),
                    status: out.status.code(),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                });
            }
            let resp = DeleteResponse::parse_from_bytes(&out.stdout).map_err(|e| {
                ExecutorError::Decode {
                    id: id.to_owned(),
                    what: "delete response",
                    source: Box::new(e),
                }
            })?;
            let pid = if resp.pid == u32::MAX {
                recorded_pid
            } else {
                resp.pid
            };
            (
                pid,
                ExitInfo {
                    status: resp.exit_status,
                    exited_at: time_of(resp.exited_at.as_ref()),
                    oom_killed: false,
                },
            )
        } else {
            // The shim died before Create: there is no container to delete.
            (
                recorded_pid,
                ExitInfo {
                    status: 137,
                    exited_at: None,
                    oom_killed: false,
                },
            )
        };
        if let Some(p) = socket_path(address) {
            remove_file_quiet(p);
        }
        Ok(result)
    }

    /// Tears down what an earlier run left for a task that is not attached (restore could not
    /// adopt it, or nobody tracks it any more): through its shim if one answers at the bundle's
    /// `address` (SIGKILL to every process, delete, shutdown, wait for the shim to be gone),
    /// then the shim's `delete` subcommand (`runc delete --force`: the container if the shim
    /// was dead, runc state, cgroup, rootfs mounts), the shim socket and the task directory.
    /// The shim at the bundle's address runs only containers of that bundle, so whatever it
    /// reports is ours to kill. Idempotent: `Ok` once nothing of the task is left.
    pub(super) async fn destroy(&self, id: &str, bundle: &Path) -> Result<()> {
        check_id(id)?;
        if lock(&self.tasks).contains_key(id) || lock(&self.starting).contains(id) {
            return Err(ExecutorError::AlreadyExists { id: id.to_owned() });
        }
        let address = fs::read_to_string(bundle.join("address"))
            .ok()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty());
        let record: Option<TaskRecord> = fs::read(self.config.task_dir(id).join("task.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let group = self.recorded_group(id);
        let mut shim_answered = false;
        if let Some(address) = &address {
            if let Ok((client, shim_pid, _)) =
                self.attach(id, address, self.config.dial_timeout).await
            {
                let shim = ProcessIdentity::of(shim_pid).ok();
                // With a group, this leaves it (the last member out shuts the shim down).
                self.abort_start(id, Some(&client), Some(address), shim, group.as_ref())
                    .await;
                shim_answered = true;
            }
        }
        if !shim_answered {
            if let Some(g) = &group {
                self.group_died(g);
            }
            self.kill_unresponsive_shim(id, record.as_ref()).await;
        }
        if bundle.is_dir() {
            // A group's socket is the group's to remove (when its last member leaves).
            let socket = match (&group, &address) {
                (None, Some(a)) => a.as_str(),
                _ => "",
            };
            self.delete_dead_shim(id, bundle, socket, None).await?;
        }
        if let (Some(g), false) = (&group, shim_answered) {
            self.leave_group(g, id).await;
        }
        // A `runc create` cut short (its shim stopped mid-create) leaves cgroups that no runc
        // state names any more. Plugin specs set no `cgroupsPath`, so runc's default applies:
        // `/<id>` in every hierarchy.
        let cgroup = PathBuf::from(format!("/{id}"));
        match tokio::task::spawn_blocking(move || plugind_sys::cgroup::remove(&cgroup)).await {
            Ok(Ok(removed)) if !removed.is_empty() => {
                tracing::info!(task = %id, cgroups = removed.len(), "removed leftover cgroups");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(ExecutorError::Sys(e)),
            Err(e) => tracing::warn!(task = %id, error = %e, "cgroup clean-up panicked"),
        }
        let dir = self.config.task_dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ExecutorError::io("remove", &dir, e)),
        }
        tracing::info!(task = %id, "leftover task destroyed");
        Ok(())
    }

    /// A shim that lives but does not answer (stopped, hung, or too slow under load) would
    /// outlive everything once its task is deleted behind its back: SIGKILL it if it is still
    /// the process recorded at start (pid and start time).
    pub(super) async fn kill_unresponsive_shim(&self, id: &str, record: Option<&TaskRecord>) {
        let Some(r) = record.filter(|r| r.shim_start_time != 0) else {
            return;
        };
        let shim = ProcessIdentity {
            pid: r.shim_pid,
            start_time: r.shim_start_time,
        };
        if shim.is_alive() && !plugind_sys::process::is_zombie(r.shim_pid) {
            tracing::warn!(task = %id, pid = r.shim_pid, "killing a shim that does not answer");
            let _ = plugind_sys::process::send_signal(r.shim_pid, SIGKILL as i32);
            self.wait_gone(shim).await;
        }
    }

    /// Ids that have a task directory on disk but no attached or starting task.
    pub(super) fn leftovers(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.config.exec_root.join("tasks")) else {
            return Vec::new();
        };
        let tasks = lock(&self.tasks);
        let starting = lock(&self.starting);
        entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|id| !tasks.contains_key(id) && !starting.contains(id))
            .collect()
    }
}
