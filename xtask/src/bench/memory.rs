//! The memory of everything plugind runs, by role, from /proc: plugind itself, the shims it
//! started (found by command line: they daemonise), and every descendant of those shims (the
//! plugins' own processes).

use std::{fs, path::Path};

/// Memory of a set of processes.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Memory {
    pub(super) processes: usize,
    pub(super) rss_kib: u64,
    pub(super) pss_kib: u64,
}

impl Memory {
    fn add(&mut self, other: Memory) {
        self.processes += other.processes;
        self.rss_kib += other.rss_kib;
        self.pss_kib += other.pss_kib;
    }
}

/// The memory of everything plugind runs, by role.
#[derive(Debug, Default)]
pub(super) struct PluginMemory {
    pub(super) daemon: Memory,
    pub(super) shims: Memory,
    /// Every descendant of a shim: the plugins' processes (and a runc still running, if any).
    pub(super) plugins: Memory,
}

impl PluginMemory {
    /// Issue 15's memory per enabled plugin, in KiB: (plugind's RSS + the sum of the shims'
    /// PSS) / plugins. The plugins' own processes are left out (reported apart): they are the
    /// plugins' cost, not plugind's.
    pub(super) fn per_plugin_kib(&self, plugins: usize) -> u64 {
        (self.daemon.rss_kib + self.shims.pss_kib) / plugins.max(1) as u64
    }

    pub(super) fn total(&self) -> Memory {
        let mut t = self.daemon;
        t.add(self.shims);
        t.add(self.plugins);
        t
    }
}

/// One process's `VmRSS` and `Pss` (smaps_rollup), in KiB; `None` once it is gone.
fn process_memory(pid: u32) -> Option<Memory> {
    let field = |text: &str, name: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    Some(Memory {
        processes: 1,
        // Kernel threads and zombies have no VmRSS.
        rss_kib: field(&status, "VmRSS:").unwrap_or(0),
        pss_kib: field(&rollup, "Pss:").unwrap_or(0),
    })
}

/// Every process: pid -> (parent pid, command line).
fn process_table() -> anyhow::Result<Vec<(u32, u32, String)>> {
    let mut table = Vec::new();
    for entry in fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
        else {
            continue;
        };
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        table.push((pid, ppid, cmdline));
    }
    Ok(table)
}

/// The memory of plugind (`daemon`), of the shims it started (they daemonise, so they are found
/// by their command line naming plugind's exec root, not by parentage) and of every descendant
/// of those shims (the plugins' processes), summed from /proc.
pub(super) fn plugin_memory(daemon: u32, exec_root: &Path) -> anyhow::Result<PluginMemory> {
    let table = process_table()?;
    let exec_root = exec_root.display().to_string();
    let shims: Vec<u32> = table
        .iter()
        .filter(|(pid, _, cmd)| {
            *pid != daemon && cmd.contains("containerd-shim") && cmd.contains(&exec_root)
        })
        .map(|(pid, _, _)| *pid)
        .collect();
    // Descendants of the daemon that are not shims count as the daemon's (none expected).
    let descendants = |roots: &[u32]| -> Vec<u32> {
        let mut found: Vec<u32> = Vec::new();
        let mut frontier: Vec<u32> = roots.to_vec();
        while let Some(parent) = frontier.pop() {
            for (pid, ppid, _) in &table {
                if *ppid == parent && !roots.contains(pid) && !found.contains(pid) {
                    found.push(*pid);
                    frontier.push(*pid);
                }
            }
        }
        found
    };
    let plugins: Vec<u32> = descendants(&shims)
        .into_iter()
        .filter(|p| !shims.contains(p))
        .collect();
    let mut memory = PluginMemory::default();
    let mut daemon_side = vec![daemon];
    daemon_side.extend(
        descendants(&[daemon])
            .into_iter()
            .filter(|p| !shims.contains(p) && !plugins.contains(p)),
    );
    for pid in daemon_side {
        memory.daemon.add(process_memory(pid).unwrap_or_default());
    }
    for &pid in &shims {
        memory.shims.add(process_memory(pid).unwrap_or_default());
    }
    for &pid in &plugins {
        memory.plugins.add(process_memory(pid).unwrap_or_default());
    }
    Ok(memory)
}

#[cfg(test)]
mod tests {
    use std::{
        process::{Command, Stdio},
        time::Duration,
    };

    use super::*;

    #[test]
    fn plugin_memory_counts_shims_by_command_line_and_their_descendants_as_plugins() {
        // A stand-in shim: its command line names "containerd-shim" and the exec root, and it
        // runs one child, as a real shim runs the plugin's process.
        let exec_root = std::env::temp_dir().join(format!("xtask-mem-run-{}", std::process::id()));
        let mut shim = Command::new("sh")
            .args(["-c", "sleep 60 & echo $!; wait", "containerd-shim-runc-v2"])
            .arg(&exec_root)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child_pid = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(shim.stdout.take().unwrap()),
            &mut child_pid,
        )
        .unwrap();
        let child_pid = child_pid.trim().to_owned();
        // Wait until the child is there (it is forked right away).
        let mut memory = PluginMemory::default();
        for _ in 0..500 {
            memory = plugin_memory(std::process::id(), &exec_root).unwrap();
            if memory.plugins.processes == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = Command::new("kill").arg(&child_pid).status();
        let _ = shim.kill();
        let _ = shim.wait();
        assert_eq!(memory.daemon.processes, 1, "{memory:?}");
        assert_eq!(memory.shims.processes, 1, "{memory:?}");
        assert_eq!(memory.plugins.processes, 1, "{memory:?}");
        for m in [memory.daemon, memory.shims, memory.plugins] {
            assert!(m.rss_kib > 0 && m.pss_kib > 0, "{memory:?}");
        }
        assert_eq!(
            memory.per_plugin_kib(2),
            (memory.daemon.rss_kib + memory.shims.pss_kib) / 2
        );
        let total = memory.total();
        assert_eq!(total.processes, 3);
        assert_eq!(
            total.pss_kib,
            memory.daemon.pss_kib + memory.shims.pss_kib + memory.plugins.pss_kib
        );
    }
}
