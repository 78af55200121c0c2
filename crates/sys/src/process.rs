//! Signals, FIFOs and process identity.
//!
//! A pid alone does not name a process across a daemon restart: pids are reused. The executor
//! therefore records a task's pid together with its start time (field 22 of `/proc/<pid>/stat`,
//! in clock ticks since boot) and adopts or signals a process after a restart only when both
//! still match ([`ProcessIdentity::is_alive`]).

use std::{
    fs,
    path::{Path, PathBuf},
};

use nix::{
    sys::{signal, stat::Mode},
    unistd::Pid,
};

use crate::{Result, SysError};

/// A process as it can be recognised again later: its pid and its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessIdentity {
    /// The process id.
    pub pid: u32,
    /// Start time in clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
}

impl ProcessIdentity {
    /// Reads the identity of the live process `pid`.
    pub fn of(pid: u32) -> Result<ProcessIdentity> {
        Ok(ProcessIdentity {
            pid,
            start_time: start_time(pid)?,
        })
    }

    /// True when a process with this pid exists and started at the recorded time, so it is the
    /// same process and not a later one that reused the pid.
    pub fn is_alive(&self) -> bool {
        start_time(self.pid).is_ok_and(|t| t == self.start_time)
    }
}

/// Start time of process `pid` in clock ticks after boot (field 22 of `/proc/<pid>/stat`).
///
/// Fails with a not-found error when the process does not exist (any more).
pub fn start_time(pid: u32) -> Result<u64> {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    let text = fs::read_to_string(&path).map_err(|e| SysError::io("read", &path, e))?;
    parse_start_time(&text).ok_or(SysError::InvalidPath {
        path,
        reason: "unparsable stat line",
    })
}

/// Parses field 22 of a `/proc/<pid>/stat` line.
fn parse_start_time(stat: &str) -> Option<u64> {
    // Field 2 (comm) is in parentheses and may contain spaces or ')', so split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts with field 3 (state): field 22 is the 20th whitespace-separated word.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// True when process `pid` has exited but is not reaped yet (state `Z`): it holds no resources
/// and runs no code any more.
pub fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 1..].trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Sends signal number `signal` to process `pid`.
///
/// Signal 0 only checks that the process exists. Fails with ESRCH (not found) when it does not.
pub fn send_signal(pid: u32, signal: i32) -> Result<()> {
    let path = PathBuf::from(format!("/proc/{pid}"));
    let raw = i32::try_from(pid).map_err(|_| SysError::InvalidPath {
        path: path.clone(),
        reason: "pid out of range",
    })?;
    let sig = if signal == 0 {
        None
    } else {
        Some(
            signal::Signal::try_from(signal)
                .map_err(|e| SysError::errno("decode signal", &path, e))?,
        )
    };
    signal::kill(Pid::from_raw(raw), sig).map_err(|e| SysError::errno("kill", &path, e))
}

/// Creates a named pipe at `path` with permission bits `mode`.
///
/// An existing FIFO at `path` is accepted (so a restarted daemon can reuse the ones it made);
/// any other existing file is an error.
pub fn mkfifo(path: &Path, mode: u32) -> Result<()> {
    match nix::unistd::mkfifo(path, Mode::from_bits_truncate(mode)) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EEXIST) if is_fifo(path) => Ok(()),
        Err(e) => Err(SysError::errno("mkfifo", path, e)),
    }
}

/// True when `path` exists and is a FIFO (symlinks are not followed).
pub fn is_fifo(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_field_22_even_with_parens_in_comm() {
        let line = "1234 (a) b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 \
                    1000 100 18446744073709551615";
        assert_eq!(parse_start_time(line), Some(987654));
        assert_eq!(parse_start_time("1 (x) S 1"), None);
    }

    #[test]
    fn own_identity_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessIdentity::of(std::process::id()).expect("own stat");
        assert!(me.start_time > 0);
        assert!(me.is_alive());
        let other = ProcessIdentity {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.is_alive());
    }

    #[test]
    fn start_time_of_missing_process_is_not_found() {
        // pid_max is at most 2^22, so this pid cannot exist.
        let err = start_time(4_194_400).expect_err("no such process");
        assert!(err.is_not_found(), "{err}");
    }

    #[test]
    fn a_running_process_is_not_a_zombie_and_a_reaped_one_neither() {
        assert!(!is_zombie(std::process::id()));
        let mut child = std::process::Command::new("/bin/true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        // Exited but not reaped: a zombie until wait().
        while !is_zombie(pid) {
            std::thread::yield_now();
        }
        child.wait().expect("reap");
        assert!(!is_zombie(pid));
    }

    #[test]
    fn signal_zero_checks_existence() {
        send_signal(std::process::id(), 0).expect("self exists");
        assert!(send_signal(4_194_400, 0).is_err());
    }

    #[test]
    fn mkfifo_creates_and_accepts_existing_fifo_but_not_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        mkfifo(&p, 0o600).expect("mkfifo");
        assert!(is_fifo(&p));
        mkfifo(&p, 0o600).expect("existing fifo is fine");
        let file = dir.path().join("plain");
        fs::write(&file, b"x").expect("write");
        assert!(mkfifo(&file, 0o600).is_err());
        assert!(!is_fifo(&file));
    }
}
