//! `cargo xtask fuzz TARGET --time S`: runs a cargo-fuzz target (libFuzzer, nightly) from
//! `fuzz/` against its seed corpus, and prints the executions and crashes it found.
//!
//! The seeds in `fuzz/corpus/<target>/` also run on stable as ordinary tests
//! (`tests/tests/fuzz_corpora.rs`); new corpus entries libFuzzer writes there (40-hex names)
//! are git-ignored, crashes land in `fuzz/artifacts/<target>/`. A crash worth keeping is
//! copied into the corpus under a descriptive name once fixed.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context};

use crate::util::{find_program, output, run as run_cmd};

/// True when rustup has a nightly toolchain (libFuzzer needs `-Zsanitizer`).
pub(crate) fn nightly_present() -> bool {
    output(Command::new("rustup").args(["toolchain", "list"]))
        .is_ok_and(|list| list.lines().any(|l| l.starts_with("nightly")))
}

/// Installs cargo-fuzz when a nightly toolchain exists and it is missing (`cargo xtask setup`).
pub(crate) fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    if !nightly_present() {
        println!("setup: no nightly toolchain, cargo-fuzz not needed (fuzz seeds run on stable)");
        return Ok(());
    }
    if find_program("cargo-fuzz").is_some() {
        println!("setup: cargo-fuzz present");
        return Ok(());
    }
    println!("setup: installing cargo-fuzz {CARGO_FUZZ_VERSION} (nightly toolchain found)");
    // Only `cargo xtask fuzz` needs it (CI runs the seed corpora on stable): a failed install
    // is reported, not fatal.
    if let Err(e) = run_cmd(Command::new("cargo").args([
        "install",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
        "cargo-fuzz",
    ])) {
        eprintln!("setup: cargo-fuzz could not be installed ({e:#}); `cargo xtask fuzz` needs it");
    }
    Ok(())
}

/// The cargo-fuzz release `cargo xtask setup` installs (the one the fuzz figures were taken with).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The targets: the file stems of `fuzz/fuzz_targets/*.rs`, sorted.
fn targets() -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir("fuzz/fuzz_targets")
        .context("read fuzz/fuzz_targets")?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path();
            if path.extension()? != "rs" {
                return None;
            }
            Some(path.file_stem()?.to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    Ok(names)
}

/// What one run found.
#[derive(Debug)]
struct Outcome {
    target: String,
    execs: Option<u64>,
    seconds: Option<u64>,
    crashes: Vec<String>,
    exit_ok: bool,
}

/// Runs `target` (or every target for `all`) for `seconds` each, with `jobs` workers.
pub(crate) fn run(target: &str, seconds: u64, jobs: u32) -> anyhow::Result<()> {
    if !nightly_present() {
        bail!("fuzzing needs a nightly toolchain (`rustup toolchain install nightly`); the seed corpora run on stable with `cargo test -p plugind-tests --test fuzz_corpora`");
    }
    if find_program("cargo-fuzz").is_none() {
        bail!("cargo-fuzz is missing: run `cargo xtask setup` (or `cargo install cargo-fuzz`)");
    }
    let all = targets()?;
    let chosen: Vec<String> = if target == "all" {
        all.clone()
    } else if all.iter().any(|t| t == target) {
        vec![target.to_owned()]
    } else {
        bail!(
            "no fuzz target {target:?}; targets: all, {}",
            all.join(", ")
        );
    };
    let mut outcomes = Vec::new();
    for t in &chosen {
        outcomes.push(run_one(t, seconds, jobs)?);
    }
    println!(
        "\n{:<16} {:>12} {:>8} {:>9}  crashes",
        "target", "execs", "seconds", "execs/s"
    );
    let mut failed = false;
    for o in &outcomes {
        let rate = match (o.execs, o.seconds) {
            (Some(e), Some(s)) if s > 0 => (e / s).to_string(),
            _ => "-".to_owned(),
        };
        println!(
            "{:<16} {:>12} {:>8} {:>9}  {}",
            o.target,
            o.execs.map_or("-".to_owned(), |e| e.to_string()),
            o.seconds.map_or("-".to_owned(), |s| s.to_string()),
            rate,
            if o.crashes.is_empty() {
                "0".to_owned()
            } else {
                format!("{}: {}", o.crashes.len(), o.crashes.join(" "))
            }
        );
        failed |= !o.crashes.is_empty() || !o.exit_ok;
    }
    if failed {
        bail!("fuzzing found crashes (see fuzz/artifacts/)");
    }
    Ok(())
}

fn artifacts(target: &str) -> Vec<String> {
    let dir = Path::new("fuzz/artifacts").join(target);
    let mut found: Vec<String> = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path().display().to_string())
        .filter(|p| {
            ["crash-", "timeout-", "oom-", "leak-", "slow-unit-"]
                .iter()
                .any(|k| p.contains(k))
        })
        .collect();
    found.sort();
    found
}

fn run_one(target: &str, seconds: u64, jobs: u32) -> anyhow::Result<Outcome> {
    let before = artifacts(target);
    let mut cmd = Command::new("cargo");
    cmd.current_dir("fuzz")
        // The rustup proxy picks the toolchain from `+nightly`; drop the stable one xtask runs on.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .args(["+nightly", "fuzz", "run", "-O", target])
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .args(["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"])
        .stderr(Stdio::piped());
    if jobs > 1 {
        cmd.arg(format!("-fork={jobs}"));
    }
    eprintln!(
        "$ (cd fuzz && cargo +nightly fuzz run -O {target} -- -max_total_time={seconds} ...)"
    );
    let mut child = cmd.spawn().context("start cargo +nightly fuzz")?;
    let stderr = child.stderr.take().expect("piped stderr");
    let mut execs = None;
    let mut secs = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap_or_default();
        // libFuzzer: "Done 123456 runs in 61 second(s)" and "stat::number_of_executed_units: N".
        if let Some(rest) = line.strip_prefix("Done ") {
            let mut words = rest.split_whitespace();
            execs = words.next().and_then(|w| w.parse().ok());
            secs = words.nth(2).and_then(|w| w.parse().ok());
        } else if let Some(n) = line.strip_prefix("stat::number_of_executed_units: ") {
            execs = execs.or_else(|| n.trim().parse().ok());
        }
        let interesting = line.starts_with("Done ")
            || line.contains("ERROR")
            || line.contains("SUMMARY")
            || line.contains("panicked")
            || line.contains("artifact")
            || line.starts_with("stat::")
            || line.starts_with("error");
        if interesting {
            eprintln!("{target}: {line}");
        }
    }
    let status = child.wait().context("wait for cargo fuzz")?;
    let crashes: Vec<String> = artifacts(target)
        .into_iter()
        .filter(|a| !before.contains(a))
        .collect();
    Ok(Outcome {
        target: target.to_owned(),
        execs,
        seconds: secs.or(Some(seconds)),
        crashes,
        exit_ok: status.success(),
    })
}
