//! `cargo xtask bench daemon`: the budgets of design.md measured end to end against the
//! release `plugind`, each printed with the baseline measured in the same run:
//! - enable -> ready through the API (median of 20) against `runc run -d` + socket-ready of
//!   the same bundle;
//! - create, disable and remove times;
//! - plugind's resident memory idle with 100 enabled plugins;
//! - restore of 100 running plugins after kill -9 (live restore).

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
        "ratio enable/runc: {:.2}x (budget <= 1.6x); vs Docker's 583 ms: 1/{:.1} (budget <= 1/6)",
        enable.as_secs_f64() / runc.as_secs_f64(),
        0.583 / enable.as_secs_f64()
    );
    println!(
        "create (3 MB tar, median): {} (budget < 60 ms; Docker 316 ms)",
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
    let rss = rss_kib(d.pid().context("plugind pid")?)?;
    println!(
        "plugind RSS idle with {MANY} enabled plugins: {:.1} MiB (budget < 20 MiB)",
        rss as f64 / 1024.0
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
        "restore of {MANY} running plugins after kill -9: API up with all re-attached in {}, all sockets usable in {} (budget < 300 ms; Docker 797 ms for 10)",
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

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
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
