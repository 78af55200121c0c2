//! Starting a task: shim launch, Create and Start, the task record, and undoing a start that
//! failed half-way.

use super::*;

impl Inner {
    pub(super) async fn create(&self, req: CreateTask) -> Result<TaskState> {
        let id = req.id.as_str();
        check_id(id)?;
        let bundle = &req.bundle;
        let invalid = |reason| ExecutorError::InvalidBundle {
            id: id.to_owned(),
            bundle: bundle.clone(),
            reason,
        };
        if !bundle.is_absolute() {
            return Err(invalid("not an absolute path"));
        }
        if bundle.file_name().and_then(|n| n.to_str()) != Some(id) {
            return Err(invalid("directory name differs from the task id"));
        }
        if !bundle.join("config.json").is_file() {
            return Err(invalid("no config.json"));
        }
        let (runtime, binary) =
            plugind_sys::sync::read(&self.runtimes).binary(req.runtime.as_deref())?;
        if lock(&self.tasks).contains_key(id) || !lock(&self.starting).insert(id.to_owned()) {
            return Err(ExecutorError::AlreadyExists { id: id.to_owned() });
        }
        let generation = lock(&self.book).begin(id);
        let result = self.create_started(id, bundle, &runtime, &binary).await;
        if result.is_err() {
            lock(&self.book).end(id, Some(generation));
        }
        lock(&self.starting).remove(id);
        result
    }

    pub(super) async fn create_started(
        &self,
        id: &str,
        bundle: &Path,
        runtime: &str,
        binary: &Path,
    ) -> Result<TaskState> {
        let group = self.join_group(id);
        let shim_tail = group.as_ref().map(|g| g.tail.clone()).unwrap_or_default();
        let err_tail = Tail::default();
        let mut drains = match self.open_io(id, bundle, &shim_tail, &err_tail, group.is_none()) {
            Ok(d) => d,
            Err(e) => {
                self.abort_start(id, None, None, None, group.as_ref()).await;
                return Err(e);
            }
        };
        if let Some(g) = &group {
            // On disk before anything can run in the group's shim: after a crash from here on,
            // the group is known to have this member (restore or destroy make it leave).
            if let Err(e) = self.write_membership(id, g) {
                drains.stop().await;
                self.abort_start(id, None, None, None, group.as_ref()).await;
                return Err(e);
            }
        }
        let phase = tokio::time::Instant::now();
        let launched = match &group {
            Some(g) => self.group_address(g, bundle).await,
            None => self.launch_shim(id, bundle, &shim_tail).await,
        };
        let address = match launched {
            Ok(a) => a,
            Err(e) => {
                drains.stop().await;
                self.abort_start(id, None, None, None, group.as_ref()).await;
                return Err(e);
            }
        };
        tracing::debug!(task = %id, group = group.as_ref().map(|g| g.name.as_str()), elapsed_ms = ms(phase), "shim start");
        let phase = tokio::time::Instant::now();
        let attached = match &group {
            Some(g) => {
                self.attach_member(g, id, &address, self.config.rpc_timeout)
                    .await
            }
            None => self.attach(id, &address, self.config.rpc_timeout).await,
        };
        tracing::debug!(task = %id, elapsed_ms = ms(phase), "shim connect");
        let (client, shim_pid, _) = match attached {
            Ok(c) => c,
            Err(e) => {
                drains.stop().await;
                self.abort_start(id, None, Some(&address), None, group.as_ref())
                    .await;
                return Err(ExecutorError::ShimStart {
                    id: id.to_owned(),
                    status: None,
                    detail: format!("shim does not answer: {e}"),
                    shim_log: logs::tail_lines(&shim_tail),
                });
            }
        };
        let shim = ProcessIdentity::of(shim_pid).ok();
        match self.create_and_start(id, bundle, binary, &client).await {
            Ok(pid) => {
                lock(&self.book).set_init_pid(id, pid);
                let record = TaskRecord {
                    pid,
                    start_time: ProcessIdentity::of(pid).map(|p| p.start_time).unwrap_or(0),
                    shim_pid,
                    shim_start_time: shim.map_or(0, |p| p.start_time),
                    runtime: runtime.to_owned(),
                    group: group.as_ref().map(|g| g.name.clone()),
                };
                // A crash here leaves a running task that restore cannot adopt (no record of
                // its identity): only `destroy` can reclaim it (tests).
                plugind_sys::failpoint::hit("executor-task-started-unrecorded");
                if let Err(e) = self.write_task_record(id, &record) {
                    // The task runs but could not be recorded (EMFILE, a full tmpfs): stop it
                    // and its shim now, or it outlives this failure unseen and the next create
                    // of this id finds it ("task ... already exists").
                    drains.stop().await;
                    self.abort_start(id, Some(&client), Some(&address), shim, group.as_ref())
                        .await;
                    return Err(e);
                }
                self.register(Task {
                    id: id.to_owned(),
                    bundle: bundle.to_owned(),
                    client: Some(client.clone()),
                    shim,
                    group: group.clone(),
                    exit: None,
                    drains: tokio::sync::Mutex::new(drains),
                    watcher: Mutex::new(None),
                });
                // Events are hints: an exit between Start and registration was ignored, so ask.
                let st = self.state_of(&client, id).await?;
                let status = status_of(&st);
                let exit = if status == TaskStatus::Stopped {
                    Some(self.report_stopped(id, &st).await)
                } else {
                    None
                };
                tracing::info!(task = %id, pid, runtime, "task started");
                Ok(TaskState {
                    id: id.to_owned(),
                    pid,
                    status,
                    exit,
                })
            }
            Err(e) => {
                // Let the drains take the last output before the tails are read.
                let state = self.state_of(&client, id).await.ok();
                drains.stop().await;
                self.abort_start(id, Some(&client), Some(&address), shim, group.as_ref())
                    .await;
                match state {
                    Some(st) if status_of(&st) == TaskStatus::Stopped => {
                        Err(ExecutorError::TaskExited {
                            id: id.to_owned(),
                            exit_status: st.exit_status,
                            stderr: logs::tail_lines(&err_tail),
                            shim_log: logs::tail_lines(&shim_tail),
                        })
                    }
                    _ => Err(e),
                }
            }
        }
    }

    /// Writes `tasks/<id>/task.json`, replaced atomically but not fsynced: the exec root is a
    /// tmpfs in production and the record matters only as long as the task does, which a
    /// reboot ends anyway.
    pub(super) fn write_task_record(&self, id: &str, record: &TaskRecord) -> Result<()> {
        let path = self.config.task_dir(id).join("task.json");
        let json = serde_json::to_vec(record).expect("a TaskRecord always serialises");
        // Replaced atomically but not fsynced: the exec root is a tmpfs in production and
        // the record matters only as long as the task does, which a reboot ends anyway.
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, &json).map_err(|e| ExecutorError::io("write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| ExecutorError::io("rename", &path, e))
    }

    /// Create + Start; a task that is already stopped when Start returns is an error.
    pub(super) async fn create_and_start(
        &self,
        id: &str,
        bundle: &Path,
        binary: &Path,
        client: &TaskClient,
    ) -> Result<u32> {
        let t = Some(self.config.rpc_timeout);
        let dir = self.config.task_dir(id);
        let options = Options {
            binary_name: binary.to_string_lossy().into_owned(),
            root: self.config.runc_root.to_string_lossy().into_owned(),
            ..Default::default()
        };
        let any = Any {
            type_url: OPTIONS_URL.to_owned(),
            value: options
                .write_to_bytes()
                .expect("encoding a protobuf message into a Vec cannot fail"),
            ..Default::default()
        };
        let create = CreateTaskRequest {
            id: id.to_owned(),
            bundle: bundle.to_string_lossy().into_owned(),
            stdout: dir.join("stdout").to_string_lossy().into_owned(),
            stderr: dir.join("stderr").to_string_lossy().into_owned(),
            options: Some(any).into(),
            ..Default::default()
        };
        let phase = tokio::time::Instant::now();
        client.create(create, t).await?;
        tracing::debug!(task = %id, elapsed_ms = ms(phase), "task Create");
        let phase = tokio::time::Instant::now();
        let pid = client
            .start(
                StartRequest {
                    id: id.to_owned(),
                    ..Default::default()
                },
                t,
            )
            .await?
            .pid;
        tracing::debug!(task = %id, elapsed_ms = ms(phase), "task Start");
        let st = self.state_of(client, id).await?;
        if status_of(&st) == TaskStatus::Stopped {
            return Err(ExecutorError::TaskExited {
                id: id.to_owned(),
                exit_status: st.exit_status,
                stderr: Vec::new(),
                shim_log: Vec::new(),
            });
        }
        Ok(pid)
    }
}

impl Inner {
    /// The address of the group's shim (started now if it is not running yet), also written
    /// to `<bundle>/address` where restore and destroy look for a task's shim.
    pub(super) async fn group_address(&self, group: &Group, bundle: &Path) -> Result<String> {
        let shim = self.group_shim(group).await?;
        let path = bundle.join("address");
        // Not fsynced: the exec root is a tmpfs; the file matters only while the shim lives.
        fs::write(&path, &shim.address).map_err(|e| ExecutorError::io("write", &path, e))?;
        Ok(shim.address)
    }

    /// mkfifos the task's stdio FIFOs and, when the task gets a shim of its own
    /// (`shim_log`), the shim's log FIFO, and starts draining them.
    pub(super) fn open_io(
        &self,
        id: &str,
        bundle: &Path,
        shim_tail: &Tail,
        err_tail: &Tail,
        shim_log: bool,
    ) -> Result<Drains> {
        let dir = self.config.task_dir(id);
        fs::create_dir_all(&dir).map_err(|e| ExecutorError::io("create dir", &dir, e))?;
        let logs_dir = self.config.exec_root.join("logs");
        fs::create_dir_all(&logs_dir).map_err(|e| ExecutorError::io("create dir", &logs_dir, e))?;
        let log = Arc::new(Mutex::new(LogFile::open(
            &self.log_path(id),
            self.config.log_limit,
        )?));
        let mut drains = Drains::default();
        if shim_log {
            let shim_log = bundle.join("log");
            mkfifo(&shim_log, 0o700)?;
            drains.add(&shim_log, Stream::Shim, id, None, shim_tail.clone())?;
        }
        for (name, stream, tail) in [
            ("stdout", Stream::Stdout, Tail::default()),
            ("stderr", Stream::Stderr, err_tail.clone()),
        ] {
            let fifo = dir.join(name);
            mkfifo(&fifo, 0o600)?;
            drains.add(&fifo, stream, id, Some(log.clone()), tail)?;
        }
        Ok(drains)
    }

    pub(super) fn shim_command(
        &self,
        id: &str,
        bundle: &Path,
        sub: &str,
    ) -> tokio::process::Command {
        let events = self.config.events_socket();
        let mut cmd = tokio::process::Command::new(&self.config.shim_binary);
        cmd.arg("-namespace")
            .arg(&self.config.namespace)
            .arg("-address")
            .arg(&events)
            .arg("-publish-binary")
            .arg(&self.config.shim_binary)
            .arg("-id")
            .arg(id);
        if sub == "delete" {
            cmd.arg("-bundle").arg(bundle);
        }
        cmd.arg(sub)
            .current_dir(bundle)
            .env_clear()
            .env("PATH", SHIM_PATH)
            .env("TTRPC_ADDRESS", &events)
            // `start` reads stdin to EOF (gotcha 3).
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs the shim's `start`, returns the address it serves on.
    pub(super) async fn launch_shim(
        &self,
        id: &str,
        bundle: &Path,
        shim_tail: &Tail,
    ) -> Result<String> {
        let fail = |status, detail: String| ExecutorError::ShimStart {
            id: id.to_owned(),
            status,
            detail,
            shim_log: logs::tail_lines(shim_tail),
        };
        let out = tokio::time::timeout(
            self.config.rpc_timeout,
            self.shim_command(id, bundle, "start").output(),
        )
        .await
        .map_err(|_| fail(None, "start timed out".to_owned()))?
        .map_err(|e| {
            fail(
                None,
                format!("cannot run {}: {e}", self.config.shim_binary.display()),
            )
        })?;
        if !out.status.success() {
            return Err(fail(
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ));
        }
        parse_address(&out.stdout)
            .ok_or_else(|| fail(Some(0), "start printed no address".to_owned()))
    }

    /// Best-effort teardown of a task whose start failed: kill, delete, shut the shim down
    /// (a group's shim only when the task was its last member).
    pub(super) async fn abort_start(
        &self,
        id: &str,
        client: Option<&TaskClient>,
        address: Option<&str>,
        shim: Option<ProcessIdentity>,
        group: Option<&Arc<Group>>,
    ) {
        let t = Some(self.config.rpc_timeout);
        if let Some(c) = client {
            let kill = KillRequest {
                id: id.to_owned(),
                signal: SIGKILL,
                all: true,
                ..Default::default()
            };
            if c.kill(kill, t).await.is_ok() {
                let _ = c
                    .wait(
                        WaitRequest {
                            id: id.to_owned(),
                            ..Default::default()
                        },
                        t,
                    )
                    .await;
            }
            if let Err(e) = c
                .delete(
                    DeleteRequest {
                        id: id.to_owned(),
                        ..Default::default()
                    },
                    t,
                )
                .await
            {
                tracing::debug!(task = %id, error = %e, "delete after failed start");
            }
        }
        if let Some(g) = group {
            self.leave_group(g, id).await;
            let dir = self.config.task_dir(id);
            if let Err(e) = fs::remove_dir_all(&dir) {
                tracing::debug!(task = %id, error = %e, "remove task dir");
            }
            return;
        }
        if let Some(c) = client {
            let _ = c
                .shutdown(
                    ShutdownRequest {
                        id: id.to_owned(),
                        ..Default::default()
                    },
                    t,
                )
                .await;
        }
        if let Some(shim) = shim {
            self.wait_gone(shim).await;
        }
        if let Some(p) = address.and_then(socket_path) {
            // Present only if the shim died without cleaning up.
            if client.is_none() {
                remove_file_quiet(p);
            }
        }
        let dir = self.config.task_dir(id);
        if let Err(e) = fs::remove_dir_all(&dir) {
            tracing::debug!(task = %id, error = %e, "remove task dir");
        }
    }
}

/// Milliseconds since `since`, for the phase timings.
pub(super) fn ms(since: tokio::time::Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// The shim prints its address as plain text (1.6), or as JSON (2.x); accept both.
pub(super) fn parse_address(stdout: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stdout).trim().to_owned();
    if text.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        return v.get("address")?.as_str().map(str::to_owned);
    }
    (!text.is_empty()).then_some(text)
}
