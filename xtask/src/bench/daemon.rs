//! `cargo xtask bench daemon`: the run's order and its small figures, every one next to the
//! baseline of the same run and its budget (issue 15):
//! - create, disable and remove times (labelled with the sample's tar and rootfs sizes);
//! - enable -> ready through the API (median of 20) against `runc run -d` and `crun run -d`
//!   -> socket-ready of the same bundle, with the enable's phases from plugind's own log;
//! - the same with shim grouping (`--shim-group all`): a group's first plugin and later ones
//!   apart;
//! - memory at 100 enabled plugins, grouping off and on: (plugind RSS + shims' PSS) / plugins,
//!   the plugins' own processes apart;
//! - restore of 100 running plugins after kill -9 (live restore);
//! - then the fleet (`fleet`) and size scaling (`size`) figures.
//!
//! Docker's figures are a fixed reference from design.md (measured once, not in this run).

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use super::{
    baseline::{runtime_baseline, Runtime},
    fleet, json_field, median,
    memory::{plugin_memory, PluginMemory},
    mib, ms, size, tree_size, verdict, ROUNDS,
};
use crate::{
    daemon::{wait_for_socket, Plugind},
    plugin,
    util::{cargo, run, workspace_root},
};

/// Plugins of the memory and restore figures.
const MANY: usize = 100;
/// Plugins enabled one after the other in each round of the grouped figure (the first starts
/// the group's shim, the others join it).
const GROUP_ROUND: usize = 5;
/// `RUST_LOG` of the benchmarked daemons: info, plus the debug line with the start phases.
const PHASE_LOG: &str = "info,plugind_manager::manager::task=debug";
/// Docker's figures (design.md; measured once on the reference machine, not in this run).
const DOCKER_ENABLE: Duration = Duration::from_millis(583);
const DOCKER_CREATE: Duration = Duration::from_millis(316);
const DOCKER_RESTART_10: Duration = Duration::from_millis(797);

/// Runs the daemon benchmark's `parts` (`small`, `fleet`, `size`; all when empty).
pub(crate) fn run_daemon_bench(fleet_size: usize, parts: &[String]) -> anyhow::Result<()> {
    let part = |name: &str| parts.is_empty() || parts.iter().any(|p| p == name);
    run(cargo().args(["build", "--release", "--locked", "-p", "plugind"]))?;
    let out = plugin::build()?;
    let tar = fs::read(&out.tar).context("read plugin tar")?;
    let binary = workspace_root().join("target/release/plugind");
    if part("small") {
        small(&binary, &tar, &out.dir)?;
    }
    if part("fleet") {
        fleet::run(&binary, &tar, fleet_size)?;
    }
    if part("size") {
        size::run(&binary, &out.dir)?;
    }
    Ok(())
}

/// Create, enable -> ready against the runtime baselines, grouping, memory and restore of 100.
fn small(binary: &Path, tar: &[u8], plugin_dir: &Path) -> anyhow::Result<()> {
    let rootfs = tree_size(&plugin_dir.join("rootfs"))?;
    // The Docker-shaped daemon: one shim per plugin (the baseline of the grouped figures).
    let logged = ["--shim-group", "none", "--log-format", "json"];
    let env = [("RUST_LOG", PHASE_LOG)];
    println!(
        "Docker's figures, a fixed reference (design.md, measured once, NOT in this run): enable {}, create {}, restart of 10 plugins {}",
        ms(DOCKER_ENABLE),
        ms(DOCKER_CREATE),
        ms(DOCKER_RESTART_10)
    );
    println!("Figures are noisy on a shared 2-core machine; each ratio's two sides come from the same run.");
    let mut d = Plugind::start_with(binary, "bench", true, &logged, &env)?;

    // create
    let mut creates = Vec::new();
    for i in 0..ROUNDS {
        let t = Instant::now();
        d.ok("POST", &format!("/plugins/create?name=bench/c{i}"), tar)?;
        creates.push(t.elapsed());
    }
    let mut removes = Vec::new();
    for i in 0..ROUNDS {
        let t = Instant::now();
        d.ok("DELETE", &format!("/plugins/bench/c{i}"), &[])?;
        removes.push(t.elapsed());
    }

    // enable -> ready and disable, through the API
    d.ok("POST", "/plugins/create?name=bench/vol", tar)?;
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
    let phases = read_phases(&d.dir.join("plugind.log"))?;

    // baselines: runc run -d and crun run -d + socket-ready of the same bundle
    let bundle_config = bundle_config.context("no bundle seen")?;
    let runc = median(runtime_baseline(
        Runtime::Runc,
        &d.dir,
        &id,
        &bundle_config,
    )?);
    let crun = runtime_baseline(Runtime::CrunUnshared, &d.dir, &id, &bundle_config).map(median);

    let enable = median(enables);
    let ratio = enable.as_secs_f64() / runc.as_secs_f64();
    println!(
        "enable -> ready (API, shim per plugin, median of {ROUNDS}): {}",
        ms(enable)
    );
    println!(
        "runc run -d -> socket ready (median of {ROUNDS}): {}",
        ms(runc)
    );
    println!(
        "ratio enable/runc: {ratio:.2}x (budget <= 1.5x for a group's later plugins, <= 1.8x for its first; without grouping every plugin is a first: {}); vs Docker's 583 ms (reference): 1/{:.1}",
        verdict(ratio <= 1.8),
        DOCKER_ENABLE.as_secs_f64() / enable.as_secs_f64()
    );
    match &crun {
        Ok(crun) => println!(
            "crun run -d in a mount namespace without the cgroup2 mount -> socket ready (median of {ROUNDS}): {} -> ratio enable/crun: {:.2}x",
            ms(*crun),
            enable.as_secs_f64() / crun.as_secs_f64()
        ),
        Err(e) => println!("crun run -d baseline: skipped ({e:#})"),
    }
    print_phases("enable phases (median, shim per plugin)", &phases);
    println!(
        "create ({} tar: rootfs of {} in {} files, median): {} (budget < 60 ms: {}; Docker's 316 ms (reference): 1/{:.1})",
        mib(tar.len() as u64),
        mib(rootfs.bytes),
        rootfs.files,
        ms(median(creates.clone())),
        verdict(median(creates.clone()) < Duration::from_millis(60)),
        DOCKER_CREATE.as_secs_f64() / median(creates).as_secs_f64()
    );
    println!("disable (median): {}", ms(median(disables)));
    println!("remove (median): {}", ms(median(removes)));

    // shim grouping: a group's first plugin and later ones, and memory with every plugin in
    // one shim (`all`) and with the default groups of 16
    let mut g = Plugind::start_with(
        binary,
        "bgrp",
        false,
        &["--shim-group", "all", "--log-format", "json"],
        &env,
    )?;
    grouped_enables(&g, tar, runc)?;
    let all = enabled_memory(&g, tar, "shim grouping on (--shim-group all)")?;
    remove_many(&g)?;
    g.stop()?;
    drop(g);
    let mut g = Plugind::start_with(binary, "bg16", false, &[], &[])?;
    let default = enabled_memory(&g, tar, "shim groups of 16 (the default)")?;
    remove_many(&g)?;
    g.stop()?;
    drop(g);

    // 100 enabled plugins: idle memory, then restore after kill -9
    let memory = enabled_memory(&d, tar, "shim grouping off (a shim per plugin, as Docker)")?;
    if memory.shims.processes < MANY || memory.plugins.processes < MANY {
        bail!(
            "expected at least {MANY} shims and {MANY} plugin processes, found {} and {}",
            memory.shims.processes,
            memory.plugins.processes
        );
    }
    let per_plugin = memory.per_plugin_kib(MANY);
    println!(
        "memory per enabled plugin: {} with shim grouping (all; budget <= 1 MiB: {}), {} with the default groups of 16 ({}), {} without",
        mib(all.per_plugin_kib(MANY) * 1024),
        verdict(all.per_plugin_kib(MANY) <= 1024),
        mib(default.per_plugin_kib(MANY) * 1024),
        verdict(default.per_plugin_kib(MANY) <= 1024),
        mib(per_plugin * 1024)
    );

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
        "restore of {MANY} running plugins after kill -9: API up with all re-attached in {}, all sockets usable in {} (budget < 300 ms: {}; Docker's 797 ms for 10 (reference))",
        ms(restored),
        ms(usable),
        verdict(usable < Duration::from_millis(300))
    );
    // Live restore keeps plugins running across a stop: disable and remove them first.
    remove_many(&d)?;
    d.ok("DELETE", "/plugins/bench/vol", &[])?;
    d.stop()?;
    drop(d);
    Ok(())
}

/// Disables and removes the [`MANY`] plugins [`enabled_memory`] made.
fn remove_many(d: &Plugind) -> anyhow::Result<()> {
    for i in 0..MANY {
        d.ok("POST", &format!("/plugins/bench/m{i}/disable"), &[])?;
        d.ok("DELETE", &format!("/plugins/bench/m{i}"), &[])?;
    }
    Ok(())
}

/// Enable -> ready under `--shim-group all`: rounds of [`GROUP_ROUND`] plugins enabled one
/// after the other (the first starts the group's shim, the others join it), all disabled
/// between rounds so the group's shim goes; printed against the runc baseline.
fn grouped_enables(g: &Plugind, tar: &[u8], runc: Duration) -> anyhow::Result<()> {
    for i in 0..GROUP_ROUND {
        g.ok("POST", &format!("/plugins/create?name=bench/g{i}"), tar)?;
    }
    let mut firsts = Vec::new();
    let mut laters = Vec::new();
    for _ in 0..ROUNDS / GROUP_ROUND {
        for i in 0..GROUP_ROUND {
            let t = Instant::now();
            g.ok(
                "POST",
                &format!("/plugins/bench/g{i}/enable?timeout=30"),
                &[],
            )?;
            if i == 0 { &mut firsts } else { &mut laters }.push(t.elapsed());
        }
        for i in 0..GROUP_ROUND {
            g.ok("POST", &format!("/plugins/bench/g{i}/disable"), &[])?;
        }
    }
    let phases = read_phases(&g.dir.join("plugind.log"))?;
    let (first_phases, later_phases): (Vec<_>, Vec<_>) = phases
        .into_iter()
        .enumerate()
        .partition(|(n, _)| n % GROUP_ROUND == 0);
    let first = median(firsts.clone());
    let later = median(laters.clone());
    let first_ratio = first.as_secs_f64() / runc.as_secs_f64();
    let later_ratio = later.as_secs_f64() / runc.as_secs_f64();
    println!(
        "enable -> ready with shim grouping, a group's first plugin (median of {}): {} -> ratio {first_ratio:.2}x vs runc (budget <= 1.8x: {})",
        firsts.len(),
        ms(first),
        verdict(first_ratio <= 1.8)
    );
    println!(
        "enable -> ready with shim grouping, later plugins (median of {}): {} -> ratio {later_ratio:.2}x vs runc (budget <= 1.5x: {})",
        laters.len(),
        ms(later),
        verdict(later_ratio <= 1.5)
    );
    print_phases(
        "  phases, first plugin (median)",
        &first_phases.into_iter().map(|(_, p)| p).collect::<Vec<_>>(),
    );
    print_phases(
        "  phases, later plugins (median)",
        &later_phases.into_iter().map(|(_, p)| p).collect::<Vec<_>>(),
    );
    for i in 0..GROUP_ROUND {
        g.ok("DELETE", &format!("/plugins/bench/g{i}"), &[])?;
    }
    Ok(())
}

/// Creates and enables [`MANY`] plugins `bench/m<i>`, lets them settle and prints the memory
/// of everything plugind runs; the plugins stay enabled.
fn enabled_memory(d: &Plugind, tar: &[u8], label: &str) -> anyhow::Result<PluginMemory> {
    for i in 0..MANY {
        d.ok("POST", &format!("/plugins/create?name=bench/m{i}"), tar)?;
        d.ok(
            "POST",
            &format!("/plugins/bench/m{i}/enable?timeout=30"),
            &[],
        )?;
    }
    std::thread::sleep(Duration::from_secs(2));
    let daemon_pid = d.pid().context("plugind pid")?;
    let mem = plugin_memory(daemon_pid, &d.dir.join("run"))?;
    println!("memory with {MANY} enabled plugins, {label}:");
    println!(
        "  plugind RSS {} (budget < 20 MiB: {}), PSS {}",
        mib(mem.daemon.rss_kib * 1024),
        verdict(mem.daemon.rss_kib < 20 * 1024),
        mib(mem.daemon.pss_kib * 1024)
    );
    println!(
        "  shims: {} processes, RSS {}, PSS {}",
        mem.shims.processes,
        mib(mem.shims.rss_kib * 1024),
        mib(mem.shims.pss_kib * 1024)
    );
    println!(
        "  per enabled plugin: (plugind RSS + shims' PSS) / {MANY} = {}",
        mib(mem.per_plugin_kib(MANY) * 1024)
    );
    println!(
        "  plugins' own processes (apart, not plugind's cost): {} processes, RSS {}, PSS {}",
        mem.plugins.processes,
        mib(mem.plugins.rss_kib * 1024),
        mib(mem.plugins.pss_kib * 1024)
    );
    let total = mem.total();
    println!(
        "  everything plugind runs ({} processes): RSS {} (shared pages counted in each), PSS {}",
        total.processes,
        mib(total.rss_kib * 1024),
        mib(total.pss_kib * 1024)
    );
    Ok(mem)
}

/// One start's phases, from plugind's "plugin start phases" debug line (microseconds).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Phases {
    spec: u64,
    bundle: u64,
    task: u64,
    ready: u64,
    activate: u64,
    total: u64,
}

/// Every start's phases logged so far in a JSON-lines plugind log, in order.
pub(super) fn read_phases(log: &Path) -> anyhow::Result<Vec<Phases>> {
    let text = fs::read_to_string(log).with_context(|| format!("read {}", log.display()))?;
    Ok(parse_phases(&text))
}

fn parse_phases(log: &str) -> Vec<Phases> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["fields"]["message"] == "plugin start phases")
        .map(|v| {
            let f = |name: &str| v["fields"][name].as_u64().unwrap_or(0);
            Phases {
                spec: f("spec_us"),
                bundle: f("bundle_us"),
                task: f("task_us"),
                ready: f("ready_us"),
                activate: f("activate_us"),
                total: f("total_us"),
            }
        })
        .collect()
}

/// Prints the median of each phase (each phase's own median: they need not add up).
fn print_phases(label: &str, phases: &[Phases]) {
    if phases.is_empty() {
        println!("{label}: none logged");
        return;
    }
    let med = |f: fn(&Phases) -> u64| {
        median(phases.iter().map(|p| Duration::from_micros(f(p))).collect())
    };
    println!(
        "{label}, of {} starts: spec build {}, bundle write {}, executor create (shim + runtime create/start) {}, socket ready {}, Plugin.Activate {}; start total {}",
        phases.len(),
        ms(med(|p| p.spec)),
        ms(med(|p| p.bundle)),
        ms(med(|p| p.task)),
        ms(med(|p| p.ready)),
        ms(med(|p| p.activate)),
        ms(med(|p| p.total)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_read_from_the_json_log_and_other_lines_ignored() {
        let log = concat!(
            "{\"timestamp\":\"t\",\"level\":\"INFO\",\"fields\":{\"message\":\"listening\"},\"target\":\"plugind\"}\n",
            "not json at all\n",
            "{\"timestamp\":\"t\",\"level\":\"DEBUG\",\"fields\":{\"message\":\"plugin start phases\",\"plugin\":\"ab\",\"spec_us\":120,\"bundle_us\":300,\"task_us\":30000,\"ready_us\":2000,\"activate_us\":400,\"total_us\":32820},\"target\":\"plugind_manager::manager::task\"}\n",
        );
        assert_eq!(
            parse_phases(log),
            [Phases {
                spec: 120,
                bundle: 300,
                task: 30000,
                ready: 2000,
                activate: 400,
                total: 32820
            }]
        );
    }
}
