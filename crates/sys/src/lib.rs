//! plugind-sys: the only home of `nix`/`libc` in plugind.
//!
//! Every syscall the daemon makes goes through a safe, typed function here, so the rest of the
//! workspace stays portable-looking, testable and free of `unsafe`.
//!
//! Modules:
//! - [`fs`]: crash-safe file updates (write temp, fsync, rename, fsync dir) and dir fsync;
//! - [`limits`]: the descriptor limit (`RLIMIT_NOFILE`), raised to the hard limit at start;
//! - [`lock`]: exclusive advisory locks (`flock`) on files: the state-root lock that keeps two
//!   daemons off one root, and per-ingest writer locks in the blob store;
//! - [`cgroup`]: removal of a task's cgroups that its runtime left behind;
//! - [`mount`]: mount, unmount and `/proc/self/mountinfo` parsing;
//! - [`probe`]: kernel feature probes answered once per process;
//! - [`process`]: signals and process identity (pid + start time);
//! - [`records`]: the chores of loading a directory of records (listing, temporaries of
//!   interrupted writes, a bounded quarantine for unusable records);
//! - [`tree`]: iterative, descriptor-relative removal of directory trees of any depth.
//! - [`socket`]: unix sockets bound with their final owner and mode; dockerd's socket group;
//! - [`failpoint`]: crash points for tests (inert unless built with the `failpoints` feature).
//!
//! All functions return [`SysError`], which names the operation and the path involved.

#![warn(missing_docs)]

pub mod cgroup;
mod error;
pub mod failpoint;
pub mod fs;
pub mod limits;
pub mod lock;
pub mod mount;
pub mod probe;
pub mod process;
pub mod records;
pub mod socket;
pub mod sync;
pub mod tree;

pub use error::{Result, SysError};
