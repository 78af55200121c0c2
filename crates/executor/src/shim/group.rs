//! Shim groups: several tasks served by one `containerd-shim-runc-v2` process.
//!
//! The 1.6 runc shim computes its socket from the `io.containerd.runc.v2.group` annotation of
//! the `config.json` in its working directory, so every `start` with the same group value
//! returns the address of the live shim of that group (shim-protocol.md §2.1 "Grouping"). A
//! group here has its own directory, `<exec-root>/groups/group-<n>/`, holding a `config.json`
//! with only that annotation, the shim's `log` FIFO and the `address` the shim writes: the
//! group shim's working directory then belongs to no task, so deleting the task (and bundle)
//! that happened to start it changes nothing for the others, and the group's log FIFO is drained
//! for as long as the group lives.
//!
//! Bookkeeping: a group has members (ids placed in it: starting, running, stopped, or left by
//! an earlier run and not yet adopted or destroyed). A task leaves its group when it is
//! deleted, destroyed, or its start failed; the member that leaves last shuts the shim down
//! (Shutdown only then: the shim ignores it while it still has containers) and removes the
//! group directory. A group whose shim died is closed: it takes no new member, and a task
//! started again after the death goes to another group, so no new shim can ever listen where
//! the dead one's clean-ups remove the socket. Group numbers only grow (past those on disk), so
//! a name is never reused within an exec root.

use super::*;

/// Annotation the 1.6 runc shim groups containers by.
const GROUP_ANNOTATION: &str = "io.containerd.runc.v2.group";

/// How tasks are spread over shims (`--shim-group`).
///
/// Measured on a 2-vCPU VM with 100 enabled sample plugins (release build; plugind RSS + every
/// shim's PSS, per plugin): `none` 2.67 MiB, `8` 0.80, `16` 0.57, `32` 0.44, `all` 0.34 MiB;
/// enable of a later plugin of a group skips the shim's own start (6-8 ms). The default,
/// groups of at most 16, keeps most of the memory saving (well inside the 1 MiB budget) while
/// a crash or `kill -9` of one shim takes down (and restarts) at most 16 plugins, not the
/// whole fleet. Table and method in ARCHITECTURE.md, "Shim groups".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShimGroup {
    /// One shim per task, as Docker does.
    None,
    /// One shim for every task.
    All,
    /// Groups of at most this many tasks (at least 2; `1` is [`ShimGroup::None`]).
    Max(usize),
}

impl ShimGroup {
    /// The default policy: groups of at most 16 tasks (see the type's documentation).
    pub const DEFAULT: ShimGroup = ShimGroup::Max(16);

    /// Tasks per group, `None` without grouping.
    fn capacity(self) -> Option<usize> {
        match self {
            ShimGroup::None => None,
            ShimGroup::All => Some(usize::MAX),
            ShimGroup::Max(n) => Some(n),
        }
    }
}

impl Default for ShimGroup {
    fn default() -> Self {
        ShimGroup::DEFAULT
    }
}

impl std::fmt::Display for ShimGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShimGroup::None => f.write_str("none"),
            ShimGroup::All => f.write_str("all"),
            ShimGroup::Max(n) => write!(f, "{n}"),
        }
    }
}

/// A `--shim-group` value that is not `none`, `all` or a positive number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid shim group {0:?}: expected none, all or a number of plugins per shim (1 or more)")]
pub struct InvalidShimGroup(String);

impl std::str::FromStr for ShimGroup {
    type Err = InvalidShimGroup;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "none" => Ok(ShimGroup::None),
            "all" => Ok(ShimGroup::All),
            n => match n.parse::<usize>() {
                Ok(1) => Ok(ShimGroup::None),
                Ok(n) if n >= 2 => Ok(ShimGroup::Max(n)),
                _ => Err(InvalidShimGroup(s.to_owned())),
            },
        }
    }
}

/// The started shim of a group.
#[derive(Debug, Clone)]
pub(super) struct GroupShim {
    pub(super) address: String,
    pub(super) identity: Option<ProcessIdentity>,
}

/// One group: its directory, its shim once started, the drain of the shim's log.
pub(crate) struct Group {
    pub(super) name: String,
    pub(super) dir: PathBuf,
    shim: tokio::sync::OnceCell<GroupShim>,
    drains: tokio::sync::Mutex<Drains>,
    pub(super) tail: Tail,
    /// The connection its members share (ttrpc multiplexes their calls): one per shim, not
    /// one per task. Made by the first member that attaches, replaced when it breaks.
    connection: tokio::sync::Mutex<Option<SharedConnection>>,
}

/// A group's shared connection to its shim.
enum SharedConnection {
    /// The connection and the shim's pid (as `Connect` answered on it).
    Open(TaskClient, u32),
    /// The last dial failed: members dial on their own.
    Failed,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("name", &self.name).finish()
    }
}

struct Entry {
    group: Arc<Group>,
    members: HashSet<String>,
    /// False once its shim died: it takes no new member.
    open: bool,
}

/// Every live group.
#[derive(Default)]
pub(crate) struct Groups {
    next: u64,
    live: HashMap<String, Entry>,
}

fn groups_dir(config: &ExecutorConfig) -> PathBuf {
    config.exec_root.join("groups")
}

impl Inner {
    fn new_group(&self, name: String) -> Arc<Group> {
        Arc::new(Group {
            dir: groups_dir(&self.config).join(&name),
            name,
            shim: tokio::sync::OnceCell::new(),
            drains: tokio::sync::Mutex::new(Drains::default()),
            tail: Tail::default(),
            connection: tokio::sync::Mutex::new(None),
        })
    }

    /// [`Inner::attach`] for a member of `group` over the group's shared connection: made by
    /// the first member (the others wait for that dial rather than each dialling), re-used by
    /// the next. A member whose call on it fails attaches on a connection of its own (only
    /// that decides that the shim is gone), which the next members share. If the first dial
    /// fails, the others dial on their own at once, so a shim that hangs costs each member one
    /// deadline at the same time, not one after the other.
    pub(super) async fn attach_member(
        &self,
        group: &Group,
        id: &str,
        address: &str,
        deadline: Duration,
    ) -> Result<(TaskClient, u32, u32)> {
        let shared = {
            let mut shared = group.connection.lock().await;
            match shared.as_ref() {
                Some(SharedConnection::Open(c, _)) if c.address() == address => {
                    Some(c.for_task(id))
                }
                Some(SharedConnection::Failed) => None,
                _ => {
                    // The first dial, under the lock.
                    let attached = self.attach(id, address, deadline).await;
                    *shared = Some(match &attached {
                        Ok((c, shim_pid, _)) => SharedConnection::Open(c.clone(), *shim_pid),
                        Err(_) => SharedConnection::Failed,
                    });
                    return attached;
                }
            }
        };
        if let Some(client) = shared {
            if let Ok(resp) = self.connect_rpc(&client, id, deadline).await {
                return Ok((client, resp.shim_pid, resp.task_pid));
            }
        }
        let attached = self.attach(id, address, deadline).await;
        if let Ok((c, shim_pid, _)) = &attached {
            *group.connection.lock().await = Some(SharedConnection::Open(c.clone(), *shim_pid));
        }
        attached
    }

    /// Re-attaches member `id` of `group` at restore: over the group's shared connection
    /// once another member made it, with only the `State` call restore needs anyway (the
    /// task's pid is in its answer; the shim answered `Connect` on this connection already);
    /// otherwise (or if that call fails) as [`Inner::attach_member`] does, leaving `State` to
    /// the caller (`None`): its failure then is not the shim's.
    pub(super) async fn reattach_member(
        &self,
        group: &Group,
        id: &str,
        address: &str,
    ) -> Result<(TaskClient, u32, u32, Option<StateResponse>)> {
        let shared = match group.connection.lock().await.as_ref() {
            Some(SharedConnection::Open(c, shim_pid)) if c.address() == address => {
                Some((c.for_task(id), *shim_pid))
            }
            _ => None,
        };
        if let Some((client, shim_pid)) = shared {
            if let Ok(st) = self.state_of(&client, id).await {
                let pid = st.pid;
                return Ok((client, shim_pid, pid, Some(st)));
            }
        }
        let (client, shim_pid, task_pid) = self
            .attach_member(group, id, address, self.config.dial_timeout)
            .await?;
        Ok((client, shim_pid, task_pid, None))
    }

    /// Places task `id` in an open group with room, or in a new one; `None` without grouping.
    pub(super) fn join_group(&self, id: &str) -> Option<Arc<Group>> {
        let cap = self.config.shim_group.capacity()?;
        let mut groups = lock(&self.groups);
        // The fullest group with room: groups fill up before new shims start.
        let found = groups
            .live
            .values_mut()
            .filter(|e| e.open && e.members.len() < cap)
            .max_by_key(|e| (e.members.len(), std::cmp::Reverse(e.group.name.clone())));
        if let Some(e) = found {
            e.members.insert(id.to_owned());
            return Some(e.group.clone());
        }
        groups.next += 1;
        let group = self.new_group(format!("group-{}", groups.next));
        groups.live.insert(
            group.name.clone(),
            Entry {
                group: group.clone(),
                members: HashSet::from([id.to_owned()]),
                open: true,
            },
        );
        Some(group)
    }

    /// Writes `tasks/<id>/group` (the group's name): membership survives a crash, even one
    /// before the task record is written. Not fsynced: the exec root is a tmpfs.
    pub(super) fn write_membership(&self, id: &str, group: &Group) -> Result<()> {
        let path = self.config.task_dir(id).join("group");
        fs::write(&path, &group.name).map_err(|e| ExecutorError::io("write", &path, e))
    }

    /// The group task `id` joined, as written on disk (`None`: a shim of its own).
    pub(super) fn recorded_group(&self, id: &str) -> Option<Arc<Group>> {
        let name = fs::read_to_string(self.config.task_dir(id).join("group")).ok()?;
        self.group_named(name.trim())
    }

    /// The group `name` of an earlier run (from a task record), if it is known.
    pub(super) fn group_named(&self, name: &str) -> Option<Arc<Group>> {
        lock(&self.groups).live.get(name).map(|e| e.group.clone())
    }

    /// The group's shim: started by the first caller (the others wait for it), then re-used.
    /// A failed start is not remembered: the next caller tries again.
    pub(super) async fn group_shim(&self, group: &Group) -> Result<GroupShim> {
        group
            .shim
            .get_or_try_init(|| async {
                let started = tokio::time::Instant::now();
                let shim = self.start_group_shim(group).await?;
                tracing::debug!(
                    group = %group.name,
                    elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                    "group shim started"
                );
                Ok(shim)
            })
            .await
            .cloned()
    }

    async fn start_group_shim(&self, group: &Group) -> Result<GroupShim> {
        let dir = &group.dir;
        fs::create_dir_all(dir).map_err(|e| ExecutorError::io("create dir", dir, e))?;
        let spec = serde_json::json!({ "annotations": { GROUP_ANNOTATION: format!("plugind:{}", group.name) } });
        let config = dir.join("config.json");
        // Not fsynced: the exec root is a tmpfs and a group lives no longer than its shim.
        fs::write(&config, spec.to_string()).map_err(|e| ExecutorError::io("write", &config, e))?;
        let log = dir.join("log");
        if !log.exists() {
            mkfifo(&log, 0o700)?;
        }
        {
            let mut drains = group.drains.lock().await;
            *drains = Drains::default();
            drains.add(&log, Stream::Shim, &group.name, None, group.tail.clone())?;
        }
        let address = self.launch_shim(&group.name, dir, &group.tail).await?;
        let (_, shim_pid, _) = self
            .attach(&group.name, &address, self.config.rpc_timeout)
            .await
            .map_err(|e| ExecutorError::ShimStart {
                id: group.name.clone(),
                status: None,
                detail: format!("group shim does not answer: {e}"),
                shim_log: logs::tail_lines(&group.tail),
            })?;
        Ok(GroupShim {
            address,
            identity: ProcessIdentity::of(shim_pid).ok(),
        })
    }

    /// Task `id` leaves its group; the last member out shuts the shim down and removes the
    /// group's directory.
    pub(super) async fn leave_group(&self, group: &Arc<Group>, id: &str) {
        let last = {
            let mut groups = lock(&self.groups);
            match groups.live.get_mut(&group.name) {
                Some(e) if Arc::ptr_eq(&e.group, group) => {
                    e.members.remove(id);
                    let last = e.members.is_empty();
                    if last {
                        groups.live.remove(&group.name);
                    }
                    last
                }
                _ => false,
            }
        };
        if last {
            self.close_group(group).await;
        }
    }

    /// The group's shim died: no new member may join it.
    pub(super) fn group_died(&self, group: &Arc<Group>) {
        if let Some(e) = lock(&self.groups).live.get_mut(&group.name) {
            if Arc::ptr_eq(&e.group, group) && e.open {
                tracing::warn!(group = %group.name, members = e.members.len(), "group shim died");
                e.open = false;
            }
        }
    }

    /// Shuts down the shim of a group without members (it exits only once it has no container
    /// left), waits for it to be gone, and removes the group's socket and directory.
    async fn close_group(&self, group: &Group) {
        let address = match group.shim.get() {
            Some(s) => Some(s.address.clone()),
            None => fs::read_to_string(group.dir.join("address"))
                .ok()
                .map(|a| a.trim().to_owned()),
        };
        if let Some(address) = &address {
            if let Ok((client, shim_pid, _)) = self
                .attach(&group.name, address, self.config.dial_timeout)
                .await
            {
                let identity = group
                    .shim
                    .get()
                    .and_then(|s| s.identity)
                    .or_else(|| ProcessIdentity::of(shim_pid).ok());
                let req = ShutdownRequest {
                    id: group.name.clone(),
                    ..Default::default()
                };
                if let Err(e) = client.shutdown(req, Some(self.config.rpc_timeout)).await {
                    // The shim may exit before answering.
                    tracing::debug!(group = %group.name, error = %e, "shutdown");
                }
                if let Some(shim) = identity {
                    self.wait_gone(shim).await;
                    // Still there: it holds a container no member accounts for (a crash
                    // mid-start of an earlier run). Nothing reaches it once its socket is
                    // gone, so it must not outlive the group.
                    if shim.is_alive() && !plugind_sys::process::is_zombie(shim.pid) {
                        tracing::warn!(group = %group.name, pid = shim.pid, "killing a group shim that does not shut down");
                        let _ = plugind_sys::process::send_signal(shim.pid, SIGKILL as i32);
                        self.wait_gone(shim).await;
                    }
                }
            }
            if let Some(p) = socket_path(address) {
                remove_file_quiet(p);
            }
        }
        group.drains.lock().await.stop().await;
        if let Err(e) = fs::remove_dir_all(&group.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(group = %group.name, error = %e, "cannot remove group directory");
            }
        }
        tracing::debug!(group = %group.name, "group shim shut down");
    }

    /// At start: the groups of an earlier run, from the membership files (`tasks/<id>/group`)
    /// naming them (their tasks are then restored, deleted or destroyed, and the last one out
    /// closes the group); group directories no task names are closed now (a crash between a task's delete and its
    /// group's shutdown), and the group counter moves past every number on disk.
    pub(super) async fn load_groups(&self) {
        let dir = groups_dir(&self.config);
        let mut members: HashMap<String, HashSet<String>> = HashMap::new();
        if let Ok(entries) = fs::read_dir(self.config.exec_root.join("tasks")) {
            for e in entries.flatten() {
                let Some(id) = e.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if let Ok(g) = fs::read_to_string(e.path().join("group")) {
                    members.entry(g.trim().to_owned()).or_default().insert(id);
                }
            }
        }
        let mut orphans = Vec::new();
        let mut max = 0;
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let Some(n) = name
                    .strip_prefix("group-")
                    .and_then(|n| n.parse::<u64>().ok())
                else {
                    continue;
                };
                max = max.max(n);
                let group = self.new_group(name.clone());
                let log = group.dir.join("log");
                if log.exists() {
                    let mut drains = group.drains.lock().await;
                    if let Err(e) = drains.add(&log, Stream::Shim, &name, None, group.tail.clone())
                    {
                        tracing::warn!(group = %name, error = %e, "cannot reopen group log");
                    }
                }
                match members.remove(&name) {
                    Some(m) => {
                        lock(&self.groups).live.insert(
                            name,
                            Entry {
                                group,
                                members: m,
                                open: true,
                            },
                        );
                    }
                    None => orphans.push(group),
                }
            }
        }
        // Members of a group whose directory is gone: keep the membership so that their
        // clean-up finds the group (closing it then only removes what is left).
        for (name, m) in members {
            if let Some(n) = name
                .strip_prefix("group-")
                .and_then(|n| n.parse::<u64>().ok())
            {
                max = max.max(n);
            }
            let group = self.new_group(name.clone());
            lock(&self.groups).live.insert(
                name,
                Entry {
                    group,
                    members: m,
                    open: false,
                },
            );
        }
        lock(&self.groups).next = max;
        for g in orphans {
            tracing::info!(group = %g.name, "closing a group no task names");
            self.close_group(&g).await;
        }
    }

    /// Stops the drains of every group's log (daemon shutdown with live restore).
    pub(super) async fn stop_group_drains(&self) {
        let groups: Vec<Arc<Group>> = lock(&self.groups)
            .live
            .drain()
            .map(|(_, e)| e.group)
            .collect();
        for g in groups {
            g.drains.lock().await.stop().await;
        }
    }

    /// (group name, members) of every live group, for tests.
    pub(super) fn group_members(&self) -> Vec<(String, Vec<String>)> {
        lock(&self.groups)
            .live
            .iter()
            .map(|(n, e)| {
                let mut m: Vec<String> = e.members.iter().cloned().collect();
                m.sort();
                (n.clone(), m)
            })
            .collect()
    }
}
