//! `plugind check` (alias `plugind --validate`, dockerd's spelling): checks the configuration
//! (flags and file, through [`Config::load`]) and the host plugind would run on, and prints
//! each problem on a line of its own. Nothing is started and no state is changed; the only
//! write is a probe file created and removed at once in the root and exec-root directories
//! (or their nearest existing parent), since permission bits do not tell root about read-only
//! mounts.

use std::{
    fs::{self, OpenOptions},
    os::unix::fs::PermissionsExt,
    path::Path,
};

use crate::{config::Config, wiring::find_program};

/// The line dockerd prints when `--validate` finds nothing wrong.
pub const OK_LINE: &str = "configuration OK";

/// Every problem with the configuration's host, one line each; empty when all is fine.
pub fn check_host(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, runtime) in &config.runtimes {
        problems.extend(check_program(&format!("runtime {name}"), &runtime.path));
    }
    problems.extend(check_program("shim", "containerd-shim-runc-v2"));
    match fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => problems.extend(check_cgroups(&text)),
        Err(e) => problems.push(format!("cgroups: cannot read /proc/self/mountinfo: {e}")),
    }
    problems.extend(check_sockets(config));
    if let Err(e) = plugind_sys::socket::socket_gid(&config.group) {
        problems.push(format!("--group: {e}"));
    }
    problems.extend(check_publish_dir(&config.publish_dir));
    for (what, dir) in [("--root", &config.root), ("--exec-root", &config.exec_root)] {
        problems.extend(check_writable(what, dir));
    }
    problems
}

/// A runtime or the shim: found (on PATH or at its absolute path), a file, executable.
fn check_program(what: &str, program: &str) -> Option<String> {
    let Some(path) = find_program(program) else {
        return Some(format!("{what}: {program} not found"));
    };
    check_executable(what, &path)
}

fn check_executable(what: &str, path: &Path) -> Option<String> {
    match fs::metadata(path) {
        Ok(m) if !m.is_file() => Some(format!("{what}: {} is not a file", path.display())),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => {
            Some(format!("{what}: {} is not executable", path.display()))
        }
        Ok(_) => None,
        Err(e) => Some(format!("{what}: {}: {e}", path.display())),
    }
}

/// runc needs a cgroup filesystem at /sys/fs/cgroup (cgroup v2, or v1 hierarchies below it).
fn check_cgroups(mountinfo: &str) -> Option<String> {
    let mounts = match plugind_sys::mount::parse_mountinfo(mountinfo) {
        Ok(mounts) => mounts,
        Err(e) => return Some(format!("cgroups: cannot parse /proc/self/mountinfo: {e}")),
    };
    let mounted = mounts.iter().any(|m| {
        (m.fs_type == "cgroup2" || m.fs_type == "cgroup")
            && m.mount_point.starts_with("/sys/fs/cgroup")
    });
    (!mounted).then(|| "cgroups: no cgroup filesystem mounted at /sys/fs/cgroup".to_owned())
}

/// The API socket, the events socket and plugin sockets under the exec root must fit in a
/// unix socket address; a longer path would fail only at `bind`, long after start-up.
fn check_sockets(config: &Config) -> Option<String> {
    plugind_manager::check_daemon_sockets(&config.exec_root, &config.socket)
        .err()
        .map(|e| format!("socket paths: {e}"))
}

/// The longest published socket (`<publish-dir>/<stem>.sock`, stems up to
/// `MAX_STEM_BYTES`) must fit in a unix socket address (107 bytes and the terminating NUL).
fn check_publish_dir(dir: &Path) -> Option<String> {
    use plugind_volumes::publish::scope::MAX_STEM_BYTES;
    let longest = dir.as_os_str().len() + 1 + MAX_STEM_BYTES + ".sock".len();
    (longest > 107).then(|| {
        format!(
            "--publish-dir {}: published sockets would be up to {longest} bytes long, more than \
             a unix socket address holds (107); use a shorter directory",
            dir.display()
        )
    })
}

/// `dir` (or, when it does not exist yet, the nearest existing parent plugind would create
/// it in) must be a directory plugind can create files in.
fn check_writable(what: &str, dir: &Path) -> Option<String> {
    let Some(existing) = dir.ancestors().find(|a| a.exists()) else {
        return Some(format!("{what}: no existing parent of {}", dir.display()));
    };
    if !existing.is_dir() {
        return Some(format!("{what}: {} is not a directory", existing.display()));
    }
    let probe = existing.join(format!(".plugind-check-{}", std::process::id()));
    match OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
            None
        }
        Err(e) => Some(format!(
            "{what}: cannot create files in {}: {e}",
            existing.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_must_exist_be_files_and_be_executable() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("runtime");
        fs::write(&exe, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o644)).unwrap();
        let exe_str = exe.to_str().unwrap();
        assert_eq!(
            check_program("runtime x", exe_str).unwrap(),
            format!("runtime x: {exe_str} is not executable")
        );
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check_program("runtime x", exe_str), None);
        let missing = dir.path().join("missing");
        assert!(check_program("runtime y", missing.to_str().unwrap())
            .unwrap()
            .ends_with("not found"));
        assert!(check_program("shim", "no-such-program-plugind-check")
            .unwrap()
            .starts_with("shim: no-such-program-plugind-check not found"));
        assert!(check_executable("d", dir.path())
            .unwrap()
            .ends_with("is not a file"));
    }

    #[test]
    fn cgroups_must_be_mounted_at_sys_fs_cgroup() {
        let v2 = "35 24 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(check_cgroups(v2), None);
        let v1 = "36 35 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(check_cgroups(v1), None);
        let none = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n";
        assert_eq!(
            check_cgroups(none).unwrap(),
            "cgroups: no cgroup filesystem mounted at /sys/fs/cgroup"
        );
        let elsewhere = "35 24 0:30 / /mnt/cg rw - cgroup2 cgroup2 rw\n";
        assert!(check_cgroups(elsewhere).is_some());
        assert!(check_cgroups("garbage\n").unwrap().contains("cannot parse"));
    }

    #[test]
    fn socket_paths_must_fit_in_a_unix_address() {
        let mut config = test_config();
        assert_eq!(check_sockets(&config), None);
        config.exec_root = Path::new("/run").join("x".repeat(100));
        assert!(check_sockets(&config)
            .unwrap()
            .starts_with("socket paths: "));
        let mut config = test_config();
        config.socket = Path::new("/run").join("s".repeat(120));
        assert!(check_sockets(&config)
            .unwrap()
            .starts_with("socket paths: "));
    }

    #[test]
    fn directories_must_be_writable_or_creatable() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check_writable("--root", dir.path()), None);
        // Not there yet: plugind creates it, so its parent is what must be writable.
        assert_eq!(check_writable("--root", &dir.path().join("a/b")), None);
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        assert_eq!(
            check_writable("--root", &file.join("sub")).unwrap(),
            format!("--root: {} is not a directory", file.display())
        );
        // The probe file is gone again.
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1);
        // /proc refuses new files even to root, as a read-only mount would.
        assert!(check_writable("--exec-root", Path::new("/proc/self/fdinfo")).is_some());
    }

    #[test]
    fn publish_dirs_too_long_for_socket_addresses_are_reported() {
        assert_eq!(check_publish_dir(Path::new("/run/plugind/publish")), None);
        let long = format!("/run/{}", "d".repeat(40));
        let problem = check_publish_dir(Path::new(&long)).unwrap();
        assert!(
            problem.contains("more than a unix socket address holds"),
            "{problem}"
        );
    }

    #[test]
    fn a_missing_socket_group_is_reported() {
        let mut config = test_config();
        config.group = "no-such-group-plugind".to_owned();
        let problems = check_host(&config);
        assert!(
            problems.contains(&"--group: group no-such-group-plugind not found".to_owned()),
            "{problems:?}"
        );
    }

    fn test_config() -> Config {
        let cli = crate::config::Cli::parse_from(
            ["plugind", "--root", "/var/lib/p", "--exec-root", "/run/p"].map(Into::into),
        )
        .unwrap();
        Config::load(&cli).unwrap()
    }
}
