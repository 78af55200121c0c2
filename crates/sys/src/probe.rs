//! Kernel feature probes, each answered once per process.
//!
//! - [`recursive_readonly_supported`]: whether `mount_setattr(2)` with `AT_RECURSIVE` can make a
//!   mount tree read-only (Linux 5.12+), which runtimes need for the `rro` mount option;
//! - [`in_user_namespace`]: whether this process runs in a user namespace other than the initial
//!   one (rootless), where bind mounts must keep their source's locked flags.
//!
//! The recursive read-only probe works on a *detached* tmpfs made with the new mount API
//! (`fsopen`, `fsconfig`, `fsmount`): it is never attached to the filesystem tree, so the probe
//! creates no directory and leaves no mount behind; closing the fd frees it.

use std::{
    fs,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::OnceLock,
};

/// True when the kernel supports recursive read-only bind mounts (`mount_setattr` with
/// `AT_RECURSIVE` and `MOUNT_ATTR_RDONLY`). Probed once per process; any failure (old kernel,
/// missing privilege, seccomp) answers `false`.
pub fn recursive_readonly_supported() -> bool {
    static ANSWER: OnceLock<bool> = OnceLock::new();
    *ANSWER.get_or_init(|| {
        let answer = probe_recursive_readonly();
        tracing::debug!(supported = answer, "probed recursive read-only mounts");
        answer
    })
}

/// Converts a syscall return value into an owned fd, or `None` on failure.
fn owned_fd(ret: libc::c_long) -> Option<OwnedFd> {
    let fd = libc::c_int::try_from(ret).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: `fd` was just returned by a successful fsopen/fsmount call, so it is an open file
    // descriptor that nothing else owns; OwnedFd takes sole ownership and closes it once.
    #[allow(unsafe_code)]
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[allow(unsafe_code)]
fn probe_recursive_readonly() -> bool {
    // SAFETY: fsopen takes a NUL-terminated string pointer (a static C string literal) and a
    // flags integer; it allocates nothing we must free besides the returned fd.
    let fs_fd = owned_fd(unsafe {
        libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), libc::FSOPEN_CLOEXEC)
    });
    let Some(fs_fd) = fs_fd else { return false };
    // SAFETY: fsconfig with FSCONFIG_CMD_CREATE takes no key/value (null pointers, aux 0) and the
    // fs context fd we own for the duration of the call.
    let created = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs_fd.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if created != 0 {
        return false;
    }
    // SAFETY: fsmount takes the fs context fd we own and two flag integers; it returns a new fd
    // for a detached mount which `owned_fd` takes ownership of.
    let mnt_fd = owned_fd(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs_fd.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            0,
        )
    });
    let Some(mnt_fd) = mnt_fd else { return false };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `size_of::<mount_attr>()` bytes from `&attr`, which points to
    // a live, initialised mount_attr; the path is an empty C string used with AT_EMPTY_PATH on
    // the detached-mount fd we own.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mnt_fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    ret == 0
}

/// True when this process runs in a user namespace other than the initial one (rootless).
///
/// The initial namespace's `/proc/self/uid_map` is the single identity line
/// `0 0 4294967295`; anything else (or an unreadable file) means a user namespace. Probed once.
pub fn in_user_namespace() -> bool {
    static ANSWER: OnceLock<bool> = OnceLock::new();
    *ANSWER.get_or_init(|| match fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => !is_initial_uid_map(&map),
        Err(_) => true,
    })
}

fn is_initial_uid_map(map: &str) -> bool {
    let lines: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    matches!(lines.as_slice(), [l] if l.as_slice() == ["0", "0", "4294967295"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_map_recognition() {
        assert!(is_initial_uid_map("         0          0 4294967295\n"));
        assert!(!is_initial_uid_map("0 1000 1\n"));
        assert!(!is_initial_uid_map("0 0 4294967295\n1 2 3\n"));
        assert!(!is_initial_uid_map(""));
    }

    #[test]
    fn probes_answer_consistently() {
        // The answers depend on the host; they must at least be stable within a process.
        assert_eq!(
            recursive_readonly_supported(),
            recursive_readonly_supported()
        );
        assert_eq!(in_user_namespace(), in_user_namespace());
    }

    #[test]
    #[ignore = "needs root and Linux 5.12+"]
    fn recursive_readonly_is_supported_here_as_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test must run as root"
        );
        assert!(
            probe_recursive_readonly(),
            "mount_setattr(AT_RECURSIVE) probe failed"
        );
        assert!(recursive_readonly_supported());
    }
}
