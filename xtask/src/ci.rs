//! `cargo xtask ci` and `cargo xtask bench`.

use std::process::Command;

use anyhow::{bail, Context};

use crate::{
    plugin, setup,
    util::{cargo, find_program, in_ci, is_root, run as run_cmd},
};

/// Programs the root end-to-end tests drive.
const TEST_PROGRAMS: &[&str] = &["runc", "crun", "containerd-shim-runc-v2", "busybox"];

/// Runs every check CI runs, in order, stopping at the first failure.
pub(crate) fn run(advisories: bool) -> anyhow::Result<()> {
    check_prerequisites()?;
    step("fmt", || {
        run_cmd(cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    step("clippy", || {
        run_cmd(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    step("sample plugin", || plugin::build().map(|_| ()))?;
    // The end-to-end tests run these binaries as processes: build them explicitly, since
    // `cargo test` alone builds bins only in their test-harness form.
    step("binaries", || {
        run_cmd(cargo().args(["build", "--locked", "-p", "plugind", "-p", "volume-plugin"]))
    })?;
    // Root and real-runtime tests are `#[ignore]`d for plain `cargo test`; CI runs them too.
    step("test", || {
        run_cmd(
            cargo()
                .args([
                    "test",
                    "--workspace",
                    "--locked",
                    "--no-fail-fast",
                    "--",
                    "--include-ignored",
                ])
                .env(
                    "PLUGIND_BIN",
                    crate::util::workspace_root().join("target/debug/plugind"),
                ),
        )
    })?;
    // Crash consistency: plugind SIGKILLed in the middle of random operations, invariants
    // checked after each restart. A fixed seed keeps CI reproducible; the full run is
    // `cargo xtask torture --iterations 1000`.
    step("torture (40 iterations, seed 10)", || {
        crate::torture::run(&crate::torture::Options {
            iterations: 40,
            seed: Some(10),
            keep_going: false,
            settle: std::time::Duration::from_secs(20),
            idle_kills: false,
        })
    })?;
    step("doc", || {
        run_cmd(
            cargo()
                .args(["doc", "--workspace", "--no-deps", "--locked"])
                .env("RUSTDOCFLAGS", "-D warnings"),
        )
    })?;
    // The .deb (release build, man page, contents checked), then README's commands, whose
    // `cargo install` reuses that release build. CI checks what the package holds and that
    // README's commands work, not how fast the code is: the release profile is made cheap for
    // these two steps (no LTO, parallel codegen, no optimisation), which saves about five minutes of
    // the 2-core budget; `cargo xtask package` run by hand keeps the shipped fat-LTO profile.
    for (key, value) in [
        ("CARGO_PROFILE_RELEASE_LTO", "off"),
        ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16"),
        ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0"),
    ] {
        std::env::set_var(key, value);
    }
    step("package", || crate::package::run(false).map(|_| ()))?;
    step("readme", crate::readme::run)?;
    step("deny", || deny(advisories))?;
    println!("xtask ci: all steps passed");
    Ok(())
}

/// With `CI=true` a missing prerequisite fails the run; elsewhere it is reported, and the
/// root tests then fail loudly on their own.
fn check_prerequisites() -> anyhow::Result<()> {
    let mut missing: Vec<String> = TEST_PROGRAMS
        .iter()
        .filter(|p| find_program(p).is_none())
        .map(|p| p.to_string())
        .collect();
    if setup::cargo_deny().is_none() {
        missing.push("cargo-deny".into());
    }
    if !is_root() {
        missing.push("root privileges (the end-to-end tests run containers)".into());
    }
    if missing.is_empty() {
        return Ok(());
    }
    let msg = format!(
        "missing prerequisites: {} (run `cargo xtask setup` as root)",
        missing.join(", ")
    );
    if in_ci() {
        bail!(msg);
    }
    eprintln!("warning: {msg}");
    Ok(())
}

fn deny(advisories: bool) -> anyhow::Result<()> {
    let Some(bin) = setup::cargo_deny() else {
        bail!("cargo-deny is missing: run `cargo xtask setup`");
    };
    let mut cmd = Command::new(bin);
    cmd.args(["deny", "--locked", "check", "bans", "licenses", "sources"]);
    if advisories {
        cmd.arg("advisories");
    }
    run_cmd(&mut cmd)
}

fn step(name: &str, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    println!("==> xtask ci: {name}");
    f().with_context(|| format!("ci step `{name}` failed"))
}

/// Runs the benchmarks; each prints its own ratio against a same-run baseline.
pub(crate) fn bench(
    which: Option<&str>,
    fleet_plugins: usize,
    parts: &[String],
) -> anyhow::Result<()> {
    const GROUPS: &[(&str, &str)] = &[
        ("blobstore", "plugind-blobstore"),
        ("queue", "plugind-queue"),
        ("executor", "plugind-executor"),
        ("daemon", ""),
        ("registry", ""),
    ];
    let selected: Vec<_> = GROUPS
        .iter()
        .filter(|(name, _)| which.is_none_or(|w| w == *name))
        .collect();
    if selected.is_empty() {
        bail!(
            "unknown benchmark {:?}; known: blobstore, queue, executor, daemon, registry",
            which.unwrap_or("")
        );
    }
    for (name, package) in selected {
        println!("==> bench {name}");
        if *name == "registry" {
            crate::bench::run_registry_bench()?;
        } else if package.is_empty() {
            crate::bench::run_daemon_bench(fleet_plugins, parts)?;
        } else {
            run_cmd(cargo().args(["bench", "--locked", "-p", package]))?;
        }
    }
    Ok(())
}
