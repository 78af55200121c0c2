//! The fleet figures of issue 15: N plugins (default 1,000) created and enabled by 8 clients at
//! once (wall time, plugins/s), plugind's idle RSS with all of them running, restore after
//! kill -9 with live restore (until the API is up with all re-attached, and until every socket
//! accepts), and disable of all by 8 clients.

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use super::{memory::plugin_memory, mib, ms, parallel, verdict};
use crate::daemon::{wait_for_socket, Plugind};

/// Clients at once, as issue 15 asks.
const CONCURRENCY: usize = 8;

pub(super) fn run(binary: &Path, tar: &[u8], count: usize) -> anyhow::Result<()> {
    if count == 0 {
        println!("fleet: skipped (--plugins 0)");
        return Ok(());
    }
    // The default shim groups (16 plugins a shim): what a fleet host runs.
    let (args, label): (&[&str], _) = (&[], "the default shim groups of 16");
    let mut d = Plugind::start_with(binary, "fleet", true, args, &[])?;
    let t = Instant::now();
    parallel(count, CONCURRENCY, |i| {
        d.ok("POST", &format!("/plugins/create?name=fleet/p{i}"), tar)?;
        d.ok(
            "POST",
            &format!("/plugins/fleet/p{i}/enable?timeout=30"),
            &[],
        )?;
        Ok(())
    })?;
    let wall = t.elapsed();
    println!(
        "fleet of {count} plugins, {label}: create + enable all, {CONCURRENCY} clients at once: {} = {:.1} plugins/s",
        ms(wall),
        count as f64 / wall.as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(2));
    let mem = plugin_memory(d.pid().context("plugind pid")?, &d.dir.join("run"))?;
    println!(
        "  idle with {count} enabled: plugind RSS {} (budget < 40 MiB: {}); shims: {} processes, PSS {}; per enabled plugin (plugind RSS + shims' PSS) {}; plugins' own processes (apart): {}, PSS {}",
        mib(mem.daemon.rss_kib * 1024),
        verdict(mem.daemon.rss_kib < 40 * 1024),
        mem.shims.processes,
        mib(mem.shims.pss_kib * 1024),
        mib(mem.per_plugin_kib(count) * 1024),
        mem.plugins.processes,
        mib(mem.plugins.pss_kib * 1024)
    );

    d.kill9()?;
    let t = Instant::now();
    d.spawn()?;
    let list = d.ok("GET", "/plugins", &[])?;
    let api_up = t.elapsed();
    let running = list.matches("\"State\":\"running\"").count();
    if running < count {
        bail!("only {running} of {count} plugins running after restore");
    }
    for dir in fs::read_dir(d.dir.join("run/plugins"))?.flatten() {
        wait_for_socket(&dir.path().join("vol.sock"), Duration::from_secs(30))?;
    }
    let usable = t.elapsed();
    let after = plugin_memory(d.pid().context("plugind pid")?, &d.dir.join("run"))?;
    println!(
        "  restore of {count} after kill -9 (live restore): API up with all re-attached in {}, all sockets usable in {} (budget < 1 s: {}); plugind RSS after restore {}",
        ms(api_up),
        ms(usable),
        verdict(usable < Duration::from_secs(1)),
        mib(after.daemon.rss_kib * 1024)
    );

    let t = Instant::now();
    parallel(count, CONCURRENCY, |i| {
        d.ok("POST", &format!("/plugins/fleet/p{i}/disable"), &[])?;
        Ok(())
    })?;
    let disabled = t.elapsed();
    println!(
        "  disable all, {CONCURRENCY} clients at once: {} = {:.1} plugins/s",
        ms(disabled),
        count as f64 / disabled.as_secs_f64()
    );
    parallel(count, CONCURRENCY, |i| {
        d.ok("DELETE", &format!("/plugins/fleet/p{i}"), &[])?;
        Ok(())
    })?;
    d.stop()?;
    Ok(())
}
