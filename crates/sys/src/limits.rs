//! Process resource limits: the descriptor limit (`RLIMIT_NOFILE`) the API's connection cap is
//! derived from, raised at start from the soft to the hard limit as Go programs (dockerd,
//! containerd) do, and the count of descriptors open now.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::{Result, SysError};

/// The descriptor limit of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// What `open`/`accept` are held to (EMFILE past it).
    pub soft: u64,
    /// How far an unprivileged process may raise `soft`.
    pub hard: u64,
}

/// The current `RLIMIT_NOFILE`.
pub fn nofile_limit() -> Result<NofileLimit> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| SysError::errno("getrlimit", "RLIMIT_NOFILE", e))?;
    Ok(NofileLimit { soft, hard })
}

/// Raises the soft descriptor limit to the hard one (never lowers it) and returns the limit
/// in force afterwards. Children inherit it.
pub fn raise_nofile_limit() -> Result<NofileLimit> {
    let current = nofile_limit()?;
    if current.soft >= current.hard {
        return Ok(current);
    }
    setrlimit(Resource::RLIMIT_NOFILE, current.hard, current.hard)
        .map_err(|e| SysError::errno("setrlimit", "RLIMIT_NOFILE", e))?;
    nofile_limit()
}

/// How many descriptors this process has open (entries of `/proc/self/fd`, less the one the
/// listing itself uses).
pub fn open_descriptors() -> Result<usize> {
    let dir = "/proc/self/fd";
    let entries = std::fs::read_dir(dir).map_err(|e| SysError::io("read directory", dir, e))?;
    Ok(entries.count().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_reaches_the_hard_limit_and_never_lowers() {
        let before = nofile_limit().unwrap();
        assert!(before.soft <= before.hard);
        let after = raise_nofile_limit().unwrap();
        assert_eq!(after.soft, after.hard);
        assert_eq!(after.hard, before.hard);
        assert_eq!(raise_nofile_limit().unwrap(), after);
    }

    #[test]
    fn counts_open_descriptors() {
        let before = open_descriptors().unwrap();
        let file = std::fs::File::open("/proc/self/status").unwrap();
        // Other tests run in parallel threads, so only a lower bound is certain.
        assert!(open_descriptors().unwrap() >= 1);
        drop(file);
        assert!(before >= 3, "stdin, stdout, stderr at least: {before}");
    }
}
