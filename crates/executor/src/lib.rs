//! plugind-executor: runs OCI bundles as tasks through `containerd-shim-runc-v2`, without
//! containerd.
//!
//! Its job: start a task from a bundle (shim `start`, ttrpc Create + Start), stop it (SIGTERM,
//! then SIGKILL after a grace period), report its state, delete it, and re-attach to running
//! shims after a daemon restart. It serves the ttrpc events service shims publish to and delivers their
//! events, in order per task, to one [`EventHandler`] through the keyed queue. It drains every
//! task's stdout/stderr into `tracing` and a size-bounded log file. It knows the shim protocol
//! and nothing about plugins (the manager maps plugins onto tasks; a task id is a plugin id).
//!
//! Main types:
//! - [`Executor`]: the operations the plugin manager needs (a trait, so the manager can be
//!   tested with a fake);
//! - [`ShimExecutor`] and its [`ExecutorConfig`]: the implementation over the shim;
//! - [`Runtimes`] / [`RuntimeConfig`]: the OCI runtimes (runc by default; crun and runtimes with
//!   arguments through content-addressed wrapper scripts), replaceable at run time;
//! - [`TaskEvent`], [`TaskState`], [`ExitInfo`], [`RestoreOutcome`];
//! - [`ExecutorError`], with [`ExecutorError::kind`].
//!
//! Guarantees: every ttrpc call has a deadline; a task's exit is delivered at most once as
//! [`TaskEvent::Exited`], and whenever the executor attaches (create, restore, delete) it asks
//! the shim for the state, so an exit whose event was lost is still delivered; nothing is adopted
//! after a restart unless its pid and start time match what was recorded at start; a shim that
//! dies (it sends no event then) is noticed through a long-polling `Wait`, cleaned up with its
//! `delete` subcommand, and its task reported as exited. Exit de-duplication keeps one small
//! bounded record per attached task, dropped when the task is deleted: a later task with the
//! same id (even one whose init gets the same pid back) has its exit delivered.
//!
//! What it does not do: write or delete bundles (the caller passes the bundle path; its
//! directory name must equal the task id), restart policy, exec processes, pause, or anything
//! with terminals or stdin.

#![warn(missing_docs)]

mod client;
mod error;
mod events;
#[doc(hidden)]
pub mod fuzzing;
mod logs;

pub use logs::{
    read_log_tail, remove_log_files, rotated_path as rotated_log_path, sweep_log_files, LogEntry,
    LogTail,
};
mod runtime;
mod shim;
mod types;

use std::{path::PathBuf, time::Duration};

use async_trait::async_trait;

pub use error::{ExecutorError, Result};
pub use runtime::{RuntimeConfig, Runtimes};
pub use shim::{ExecutorConfig, InvalidShimGroup, ShimExecutor, ShimGroup};
pub use types::{CreateTask, ExitInfo, RestoreOutcome, TaskEvent, TaskState, TaskStatus};

/// Receives task events. Runs inside the event queue: calls for one task id never overlap and
/// come in order; a slow handler for one task does not delay the others.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Handles one event.
    async fn handle(&self, event: TaskEvent);
}

/// An unbounded channel is a handler: events are sent into it (and dropped if the receiver is
/// gone). For tests; the daemon uses a bounded channel.
#[async_trait]
impl EventHandler for tokio::sync::mpsc::UnboundedSender<TaskEvent> {
    async fn handle(&self, event: TaskEvent) {
        let _ = self.send(event);
    }
}

/// A bounded channel is a handler with backpressure: when it is full, `handle` waits for room,
/// which holds the task's queue job, then fills the event queue, then makes the events service
/// answer the shims late (they retry). No event is dropped while the receiver lives.
#[async_trait]
impl EventHandler for tokio::sync::mpsc::Sender<TaskEvent> {
    async fn handle(&self, event: TaskEvent) {
        if let Err(e) = self.send(event).await {
            // Only at shutdown: the manager stopped listening; restore asks the shims again.
            tracing::debug!(task = %e.0.id(), "task event dropped: its receiver is gone");
        }
    }
}

/// The task operations the plugin manager needs, and only those: start, stop (kill, delete),
/// state, restore and teardown of what an earlier run left, and the task's log. (Signals other
/// than kill's, pause/resume, exec, pids and stats had no caller and were dropped.)
#[async_trait]
pub trait Executor: Send + Sync {
    /// Starts a task from a bundle (create + start) with the named runtime (default if `None`).
    /// Fails with [`ExecutorError::ShimStart`] or [`ExecutorError::TaskExited`] (carrying exit
    /// status, stderr tail and shim log tail) when it does not come up running.
    async fn create(&self, req: CreateTask) -> Result<TaskState>;
    /// SIGTERM, then after `grace` SIGKILL to every process of the task; returns the exit.
    async fn kill(&self, id: &str, grace: Duration) -> Result<ExitInfo>;
    /// Deletes a stopped task from its shim, stops the shim and releases the executor's files
    /// (not the bundle, not the log). Fails with [`ExecutorError::StillRunning`] if it runs.
    async fn delete(&self, id: &str) -> Result<ExitInfo>;
    /// Tears down everything an earlier run left for task `id` (bundle path `bundle`) that is
    /// not attached: the task and its shim if they still run, runc state, cgroup, mounts and the
    /// executor's files (not the bundle, not the log). For tasks `restore` could not adopt and
    /// bundles nobody tracks. Idempotent. [`ExecutorError::AlreadyExists`] if it is attached.
    async fn destroy(&self, id: &str, bundle: &std::path::Path) -> Result<()>;
    /// Ids with executor files on disk (from an earlier run) and no attached task; the caller
    /// decides whether to [`Executor::destroy`] them.
    fn leftovers(&self) -> Vec<String>;
    /// The task's current state, as its shim reports it.
    async fn state(&self, id: &str) -> Result<TaskState>;
    /// Re-attaches to the tasks of an earlier run, in parallel: `(id, bundle path)` pairs.
    async fn restore(&self, tasks: Vec<(String, PathBuf)>) -> Vec<RestoreOutcome>;
    /// The last `n` lines of the task's output log (stdout and stderr, across rotation), for
    /// error messages such as "exited with status 1; last output: ...".
    fn log_tail(&self, id: &str, n: usize) -> Result<Vec<String>>;
    /// The task's current log file; its previous generation has `.1` appended.
    fn log_path(&self, id: &str) -> PathBuf;
}
