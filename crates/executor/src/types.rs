//! The executor's vocabulary: task requests, states, exits and events.

use std::{path::PathBuf, time::SystemTime};

/// What `create` needs to start a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTask {
    /// Task id; the bundle directory's name must be exactly this (the shim relies on it).
    pub id: String,
    /// Absolute path of the OCI bundle (`config.json` + `rootfs`).
    pub bundle: PathBuf,
    /// Runtime name from the executor's [`Runtimes`](crate::Runtimes); `None` picks the default.
    pub runtime: Option<String>,
}

/// Lifecycle status of a task or exec process, as the shim reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    /// Created but not started.
    Created,
    /// Running.
    Running,
    /// Exited; see [`TaskState::exit`].
    Stopped,
    /// Frozen by `pause`.
    Paused,
    /// Being frozen.
    Pausing,
    /// The shim does not know.
    Unknown,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code, or 128 + signal number when killed by a signal.
    pub status: u32,
    /// When it exited, when the shim knows.
    pub exited_at: Option<SystemTime>,
    /// The kernel's OOM killer acted in the task's cgroup before it exited (moby's `OOMKilled`).
    pub oom_killed: bool,
}

/// A snapshot of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    /// Task id.
    pub id: String,
    /// Pid of the task's init process (in the host pid namespace).
    pub pid: u32,
    /// Current status.
    pub status: TaskStatus,
    /// The exit, once stopped.
    pub exit: Option<ExitInfo>,
}

/// What `restore` found for one task.
#[derive(Debug)]
pub enum RestoreOutcome {
    /// The shim answered and the task is running (or paused): it is attached again.
    Running {
        /// Task id.
        id: String,
        /// Pid of its init process.
        pid: u32,
    },
    /// The task has exited (while plugind was down, or its shim died and was cleaned up).
    ///
    /// The exit is also delivered once as [`TaskEvent::Exited`]; this value is informational.
    /// The task is still known to the executor: call `delete` to release it.
    Exited {
        /// Task id.
        id: String,
        /// The exit.
        exit: ExitInfo,
    },
    /// The task could not be restored; nothing was adopted or killed.
    Failed {
        /// Task id.
        id: String,
        /// Why.
        error: crate::ExecutorError,
    },
}

impl RestoreOutcome {
    /// The task id this outcome is about.
    pub fn id(&self) -> &str {
        match self {
            RestoreOutcome::Running { id, .. }
            | RestoreOutcome::Exited { id, .. }
            | RestoreOutcome::Failed { id, .. } => id,
        }
    }
}

/// A task event from a shim, delivered in order per task id through the event handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    /// The task was created (`/tasks/create`).
    Created {
        /// Task id.
        id: String,
        /// Init pid.
        pid: u32,
    },
    /// The task started (`/tasks/start`).
    Started {
        /// Task id.
        id: String,
        /// Init pid.
        pid: u32,
    },
    /// The init process (`exec_id == None`) or an exec process exited (`/tasks/exit`, or found
    /// stopped on attach). Delivered at most once per process.
    Exited {
        /// Task id.
        id: String,
        /// The exec id for an exec process, `None` for the task itself.
        exec_id: Option<String>,
        /// Pid of the process that exited.
        pid: u32,
        /// How it exited.
        exit: ExitInfo,
    },
    /// The OOM killer acted in the task's cgroup (`/tasks/oom`).
    Oom {
        /// Task id.
        id: String,
    },
    /// An exec process was deleted from its shim (`/tasks/delete`). The task's own delete event
    /// usually arrives after `delete` has detached the task and is then not delivered: `delete`'s
    /// return value reports it.
    Deleted {
        /// Task id.
        id: String,
        /// Exec id, `None` for the task itself.
        exec_id: Option<String>,
        /// Its pid.
        pid: u32,
        /// Its exit status.
        exit_status: u32,
    },
}

impl TaskEvent {
    /// The task id the event is about (the queue key).
    pub fn id(&self) -> &str {
        match self {
            TaskEvent::Created { id, .. }
            | TaskEvent::Started { id, .. }
            | TaskEvent::Exited { id, .. }
            | TaskEvent::Oom { id }
            | TaskEvent::Deleted { id, .. } => id,
        }
    }
}
