//! `cargo xtask bench daemon`: the budgets of design.md measured end to end against the
//! release `plugind`, each printed with the baseline measured in the same run:
//! - enable -> ready through the API (median of 20) against `runc run -d` + socket-ready of
//!   the same bundle;
//! - create, disable and remove times (labelled with the sample's tar and rootfs sizes, measured
//!   in the run);
//! - memory idle with 100 enabled plugins: plugind's own RSS (the budget) and the RSS and PSS of
//!   every process plugind runs for its plugins (shims and plugin processes), from /proc;
//! - restore of 100 running plugins after kill -9 (live restore).
//!
//! Docker's figures quoted next to ours come from design.md (measured once, not in this run).

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::{
    daemon::{wait_for_socket, Plugind},
    plugin,
    util::{cargo, run, workspace_root},
};

const ROUNDS: usize = 20;
const MANY: usize = 100;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub(crate) fn run_daemon_bench() -> anyhow::Result<()> {
    run(cargo().args(["build", "--release", "--locked", "-p", "plugind"]))?;
    let out = plugin::build()?;
    let tar = fs::read(&out.tar).context("read plugin tar")?;
    let rootfs = tree_size(&out.dir.join("rootfs"))?;
    let binary = workspace_root().join("target/release/plugind");
    let mut d = Plugind::start(&binary, "bench", true)?;

    // create
    let mut creates = Vec::new();
    for i in 0..ROUNDS {
        let t = Instant::now();
        d.ok("POST", &format!("/plugins/create?name=bench/c{i}"), &tar)?;
        creates.push(t.elapsed());
    }
    let mut removes = Vec::new();
    for i in 0..ROUNDS {
        let t = Instant::now();
        d.ok("DELETE", &format!("/plugins/bench/c{i}"), &[])?;
        removes.push(t.elapsed());
    }

    // enable -> ready and disable, through the API
    d.ok("POST", "/plugins/create?name=bench/vol", &tar)?;
    let inspect = d.ok("GET", "/plugins/bench/vol/json", &[])?;
    let id = json_field(&inspect, "\"Id\":\"").context("plugin id")?;
    let mut enables = Vec::new();
    let mut disables = Vec::new();
    let mut bundle_config = None;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        d.ok("POST", "/plugins/bench/vol/enable?timeout=30", &[])?;
        enables.push(t.elapsed());
        if bundle_config.is_none() {
            bundle_config = Some(fs::read(
                d.dir.join(format!("run/bundles/{id}/config.json")),
            )?);
        }
        let t = Instant::now();
        d.ok("POST", "/plugins/bench/vol/disable", &[])?;
        disables.push(t.elapsed());
    }

    // baseline: runc run -d + socket-ready of the same bundle
    let baseline = runc_baseline(&d.dir, &id, &bundle_config.context("no bundle seen")?)?;

    let enable = median(enables);
    let runc = median(baseline);
    println!("enable -> ready (API, median of {ROUNDS}): {}", ms(enable));
    println!(
        "runc run -d -> socket ready (median of {ROUNDS}): {}",
        ms(runc)
    );
    println!(
        "ratio enable/runc: {:.2}x (budget <= 1.6x); vs design.md's Docker figure 583 ms: 1/{:.1} (budget <= 1/6)",
        enable.as_secs_f64() / runc.as_secs_f64(),
        0.583 / enable.as_secs_f64()
    );
    println!(
        "create ({} tar: rootfs of {} in {} files, median): {} (budget < 60 ms; design.md's Docker figure 316 ms)",
        mib(tar.len() as u64),
        mib(rootfs.bytes),
        rootfs.files,
        ms(median(creates))
    );
    println!("disable (median): {}", ms(median(disables)));
    println!("remove (median): {}", ms(median(removes)));

    // 100 enabled plugins: idle memory, then restore after kill -9
    for i in 0..MANY {
        d.ok("POST", &format!("/plugins/create?name=bench/m{i}"), &tar)?;
        d.ok(
            "POST",
            &format!("/plugins/bench/m{i}/enable?timeout=30"),
            &[],
        )?;
    }
    std::thread::sleep(Duration::from_secs(2));
    let daemon_pid = d.pid().context("plugind pid")?;
    let mem = plugin_memory(daemon_pid, &d.dir.join("run"))?;
    println!(
        "plugind RSS idle with {MANY} enabled plugins: {} (budget < 20 MiB); PSS {}",
        mib(mem.daemon.rss_kib * 1024),
        mib(mem.daemon.pss_kib * 1024)
    );
    println!(
        "  shims: {} processes, RSS {}, PSS {}",
        mem.shims.processes,
        mib(mem.shims.rss_kib * 1024),
        mib(mem.shims.pss_kib * 1024)
    );
    println!(
        "  plugin processes: {} processes, RSS {}, PSS {}",
        mem.plugins.processes,
        mib(mem.plugins.rss_kib * 1024),
        mib(mem.plugins.pss_kib * 1024)
    );
    let total = mem.total();
    println!(
        "  everything plugind runs ({} processes): RSS {} (shared pages counted in each), PSS {} ({}/plugin)",
        total.processes,
        mib(total.rss_kib * 1024),
        mib(total.pss_kib * 1024),
        mib(total.pss_kib * 1024 / MANY as u64)
    );
    if mem.shims.processes < MANY || mem.plugins.processes < MANY {
        bail!(
            "expected at least {MANY} shims and {MANY} plugin processes, found {} and {}",
            mem.shims.processes,
            mem.plugins.processes
        );
    }

    d.kill9()?;
    let t = Instant::now();
    d.spawn()?;
    let list = d.ok("GET", "/plugins", &[])?;
    let running = list.matches("\"State\":\"running\"").count();
    let restored = t.elapsed();
    if running < MANY {
        bail!("only {running} of {MANY} plugins running after restore");
    }
    // Usable: every plugin's socket accepts.
    for dir in fs::read_dir(d.dir.join("run/plugins"))?.flatten() {
        wait_for_socket(&dir.path().join("vol.sock"), Duration::from_secs(5))?;
    }
    let usable = t.elapsed();
    println!(
        "restore of {MANY} running plugins after kill -9: API up with all re-attached in {}, all sockets usable in {} (budget < 300 ms; design.md's Docker figure 797 ms for 10)",
        ms(restored),
        ms(usable)
    );
    // Live restore keeps plugins running across a stop: disable and remove them first.
    for i in 0..MANY {
        d.ok("POST", &format!("/plugins/bench/m{i}/disable"), &[])?;
        d.ok("DELETE", &format!("/plugins/bench/m{i}"), &[])?;
    }
    d.ok("DELETE", "/plugins/bench/vol", &[])?;
    d.stop()?;
    Ok(())
}

fn json_field(json: &str, key: &str) -> Option<String> {
    let start = json.find(key)? + key.len();
    Some(json[start..].split('"').next()?.to_owned())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Bytes and regular files under a directory (apparent sizes, symlinks not followed).
#[derive(Debug, Default)]
struct TreeSize {
    bytes: u64,
    files: u64,
}

fn tree_size(root: &Path) -> anyhow::Result<TreeSize> {
    let mut size = TreeSize::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                size.bytes += meta.len();
                size.files += 1;
            }
        }
    }
    Ok(size)
}

/// Memory of a set of processes.
#[derive(Debug, Default, Clone, Copy)]
struct Memory {
    processes: usize,
    rss_kib: u64,
    pss_kib: u64,
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
struct PluginMemory {
    daemon: Memory,
    shims: Memory,
    /// Every descendant of a shim: the plugins' processes (and a runc still running, if any).
    plugins: Memory,
}

impl PluginMemory {
    fn total(&self) -> Memory {
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
fn plugin_memory(daemon: u32, exec_root: &Path) -> anyhow::Result<PluginMemory> {
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

/// `runc run -d` of the plugin's own bundle (a copy, with its runtime directory moved so the
/// socket is distinct), timed until the socket accepts.
fn runc_baseline(dir: &Path, id: &str, config: &[u8]) -> anyhow::Result<Vec<Duration>> {
    let base = dir.join("rb");
    let bundle = base.join("bundle");
    let sockdir = base.join("sock");
    let state = base.join("state");
    for p in [&bundle, &sockdir, &state] {
        fs::create_dir_all(p)?;
    }
    let original = dir.join(format!("run/plugins/{id}"));
    let text = String::from_utf8_lossy(config).replace(
        &original.display().to_string(),
        &sockdir.display().to_string(),
    );
    fs::write(bundle.join("config.json"), text)?;
    let mut times = Vec::new();
    for i in 0..ROUNDS {
        let name = format!("runc-bench-{}-{i}", std::process::id());
        let _ = fs::remove_file(sockdir.join("vol.sock"));
        let t = Instant::now();
        let status = Command::new("runc")
            .arg("--root")
            .arg(&state)
            .args(["run", "-d", "--bundle"])
            .arg(&bundle)
            .arg(&name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("runc run -d failed: {status}");
        }
        wait_for_socket(&sockdir.join("vol.sock"), Duration::from_secs(10))?;
        times.push(t.elapsed());
        Command::new("runc")
            .arg("--root")
            .arg(&state)
            .args(["delete", "-f", &name])
            .status()?;
    }
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_size_counts_regular_files_at_every_depth() {
        let dir = std::env::temp_dir().join(format!("xtask-tree-size-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("a/b")).unwrap();
        fs::write(dir.join("top"), vec![0u8; 1000]).unwrap();
        fs::write(dir.join("a/b/deep"), vec![0u8; 24]).unwrap();
        std::os::unix::fs::symlink("top", dir.join("link")).unwrap();
        let size = tree_size(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!((size.bytes, size.files), (1024, 2));
    }

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
        let total = memory.total();
        assert_eq!(total.processes, 3);
        assert_eq!(
            total.pss_kib,
            memory.daemon.pss_kib + memory.shims.pss_kib + memory.plugins.pss_kib
        );
    }
}
