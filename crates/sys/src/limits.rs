//! Process resource limits: the descriptor limit (`RLIMIT_NOFILE`) the API's connection cap is
//! derived from, raised at start from the soft to the hard limit as Go programs (dockerd,
//! containerd) do, the count of descriptors open now, and giving freed heap back to the system
//! after a burst.

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

/// Returns free heap memory to the system (glibc's `malloc_trim(0)`), so a burst of work (a
/// thousand connections) does not stay in the resident set once it is over. True when memory
/// was released. A no-op on other C libraries.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointers and only walks glibc's own heap under its
        // arena locks; it is safe to call from any thread at any time.
        #[allow(unsafe_code)]
        let released = unsafe { libc::malloc_trim(0) };
        released == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Caps glibc's malloc arenas (`mallopt(M_ARENA_MAX, arenas)`). glibc gives threads up to
/// 8 arenas per core, each keeping its own partly used pages: plugind's tokio workers and
/// blocking threads spread a fleet's allocations over a dozen arenas, and 100 plugins enabled 8
/// at a time left 38 MiB resident (35 MiB after malloc_trim, which frees only whole pages)
/// against 20 MiB with two arenas. Call before threads start. True when the cap was set; a
/// no-op (false) on other C libraries.
pub fn limit_malloc_arenas(arenas: u16) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt takes two integers and only changes glibc's allocator tunables under
        // its own lock; it is safe to call at any time.
        #[allow(unsafe_code)]
        let set = unsafe { libc::mallopt(libc::M_ARENA_MAX, libc::c_int::from(arenas)) };
        set == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = arenas;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn malloc_arenas_can_be_capped() {
        assert!(limit_malloc_arenas(2));
    }

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
    fn releasing_free_memory_is_harmless() {
        let big: Vec<Vec<u8>> = (0..64).map(|_| vec![1u8; 256 * 1024]).collect();
        drop(big);
        release_free_memory();
        release_free_memory();
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
