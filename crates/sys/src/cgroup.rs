//! Removal of a task's cgroups when its runtime can no longer do it.
//!
//! `runc delete --force` removes a container's cgroups from its state. A `runc create` cut short
//! (its shim stopped mid-create because the daemon that asked for it was killed) leaves the
//! cgroups it had made but no state to find them by; nothing else would ever remove them. This
//! module finds the cgroup named by a relative path in every mounted hierarchy (v1 controllers
//! and cgroup2), kills what still runs in it and removes it, deepest first.

use std::{
    fs, io,
    path::{Component, Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{mount::read_mountinfo, process::send_signal, Result, SysError};

/// How long a cgroup may stay busy after its processes were killed (they must be reaped).
const EMPTY_DEADLINE: Duration = Duration::from_secs(5);

/// The directories of cgroup `relative` (e.g. `/<task id>`) in every mounted cgroup hierarchy
/// that has it. `relative` must be plain components (no `..`): it names a place under each
/// hierarchy's mount point, never outside it.
pub fn existing_dirs(relative: &Path) -> Result<Vec<PathBuf>> {
    let rel = plain_relative(relative)?;
    // runc resolves a relative cgroup path against the cgroup of the process that runs it (the
    // shim, which has plugind's): look under the hierarchy's root and under our own cgroups.
    let parents = own_cgroups();
    let mut dirs: Vec<PathBuf> = read_mountinfo()?
        .into_iter()
        .filter(|m| m.fs_type == "cgroup" || m.fs_type == "cgroup2")
        .flat_map(|m| {
            parents
                .iter()
                .map(|p| m.mount_point.join(p).join(&rel))
                .collect::<Vec<_>>()
        })
        .filter(|d| d.is_dir())
        .collect();
    // Several mounts may show one hierarchy (co-mounted controllers, bind mounts).
    dirs.sort();
    dirs.dedup();
    Ok(dirs)
}

/// Kills every process left in cgroup `relative` and removes its directory (and any child
/// cgroups) from every hierarchy. Missing cgroups are fine; returns the directories removed.
pub fn remove(relative: &Path) -> Result<Vec<PathBuf>> {
    let dirs = existing_dirs(relative)?;
    for dir in &dirs {
        kill_all(dir);
    }
    let deadline = Instant::now() + EMPTY_DEADLINE;
    for dir in &dirs {
        remove_tree(dir, deadline)?;
    }
    Ok(dirs)
}

/// The paths of this process's cgroups (`/proc/self/cgroup`), relative to their hierarchies'
/// roots, plus the root itself; only plain components are kept.
fn own_cgroups() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::new()];
    if let Ok(text) = fs::read_to_string("/proc/self/cgroup") {
        for line in text.lines() {
            let Some(path) = line.splitn(3, ':').nth(2) else {
                continue;
            };
            if let Ok(p) = plain_relative(Path::new(path)) {
                out.push(p);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `relative` without its leading `/`, refused when any component is not a plain name.
fn plain_relative(relative: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in relative.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => out.push(n),
            _ => {
                return Err(SysError::InvalidPath {
                    path: relative.to_path_buf(),
                    reason: "a cgroup path must be plain components",
                })
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(SysError::InvalidPath {
            path: relative.to_path_buf(),
            reason: "the root cgroup is never removed",
        });
    }
    Ok(out)
}

/// SIGKILLs the processes of `dir` and of its child cgroups.
fn kill_all(dir: &Path) {
    for d in subtree(dir) {
        let Ok(procs) = fs::read_to_string(d.join("cgroup.procs")) else {
            continue;
        };
        for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
            let _ = send_signal(pid, nix::sys::signal::Signal::SIGKILL as i32);
        }
    }
}

/// `dir` and every cgroup below it, parents before children (a cgroup tree is shallow, but
/// the walk is iterative all the same).
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = fs::read_dir(&out[i]) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

/// Removes `dir` and its child cgroups, deepest first, retrying while killed processes are
/// still being reaped (EBUSY) until `deadline`.
fn remove_tree(dir: &Path, deadline: Instant) -> Result<()> {
    for d in subtree(dir).iter().rev() {
        loop {
            match fs::remove_dir(d) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e)
                    if e.raw_os_error() == Some(nix::errno::Errno::EBUSY as i32)
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(SysError::io("remove cgroup", d, e)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_name_a_cgroup() {
        assert_eq!(
            plain_relative(Path::new("/abc")).unwrap(),
            PathBuf::from("abc")
        );
        assert_eq!(
            plain_relative(Path::new("a/b")).unwrap(),
            PathBuf::from("a/b")
        );
        for bad in ["/", "", "/a/../..", "../x", "./x"] {
            assert!(plain_relative(Path::new(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    #[ignore = "needs root and a cgroup v1 or v2 hierarchy"]
    fn a_cgroup_with_a_process_is_emptied_and_removed() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (CI runs as root)"
        );
        let name = format!("plugind-sys-test-{}", std::process::id());
        let rel = PathBuf::from(format!("/{name}"));
        let mounts: Vec<PathBuf> = read_mountinfo()
            .unwrap()
            .into_iter()
            .filter(|m| m.fs_type == "cgroup" || m.fs_type == "cgroup2")
            .filter(|m| m.mount_options.split(',').any(|o| o == "rw"))
            .map(|m| m.mount_point)
            .collect();
        let Some(mount) = mounts
            .iter()
            .find(|m| fs::create_dir(m.join(&name)).is_ok())
        else {
            panic!("no writable cgroup hierarchy among {mounts:?}");
        };
        let dir = mount.join(&name);
        fs::create_dir(dir.join("child")).unwrap();
        let mut sleeper = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        fs::write(dir.join("child/cgroup.procs"), sleeper.id().to_string()).unwrap();
        // Reaped as soon as it dies, as a runtime's processes are by their parent.
        let reaper = std::thread::spawn(move || sleeper.wait().unwrap());
        assert!(existing_dirs(&rel).unwrap().contains(&dir));
        let removed = remove(&rel).unwrap();
        assert!(removed.contains(&dir));
        assert!(!dir.exists(), "cgroup removed");
        let status = reaper.join().unwrap();
        assert!(!status.success(), "its process was killed");
        assert!(existing_dirs(&rel).unwrap().is_empty());
    }
}
