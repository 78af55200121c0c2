//! `cargo xtask`: the project's task runner (the cargo-xtask pattern: a workspace binary in
//! plain Rust instead of shell scripts, aliased in `.cargo/config.toml`).
//!
//! - `setup`: install missing system prerequisites (Debian packages, cargo-deny);
//! - `ci`: everything CI checks, in order: fmt, clippy, tests (including root end-to-end
//!   tests), rustdoc, cargo-deny;
//! - `bench`: the benchmarks of design.md's budgets, printed as ratios against baselines
//!   measured in the same run;
//! - `plugin`: build the sample volume plugin as a static binary and package it;
//! - `demo`: the main job, end to end;
//! - `package`: build and check the Debian package (cargo-deb; binary, unit, config, man page);
//! - `readme-check`: run README's commands in a private namespace (`readme`);
//! - `fuzz`: run a cargo-fuzz target (nightly) against its seed corpus.
//! - `torture`: random operations, plugind SIGKILLed in the middle, invariants checked after
//!   each restart.
//!
//! xtask depends on no workspace crate: it drives cargo and the system's tools.

mod bench;
mod ci;
mod daemon;
mod demo;
mod fuzz;
mod package;
mod plugin;
mod readme;
mod setup;
mod torture;
mod util;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "plugind's development tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install missing prerequisites (apt packages, cargo-deny); idempotent.
    Setup,
    /// Run every check CI runs: fmt, clippy, all tests (root ones included), doc, deny.
    Ci {
        /// Also check security advisories (needs a local RustSec database).
        #[arg(long)]
        advisories: bool,
    },
    /// Run the benchmarks and print ratios against same-run baselines.
    Bench {
        /// Only this benchmark group: blobstore, queue, executor, daemon, registry.
        which: Option<String>,
        /// Plugins of the daemon benchmark's fleet figures (create + enable, memory, restore,
        /// disable); 0 skips them.
        #[arg(long, default_value_t = 1000)]
        plugins: usize,
        /// Only these parts of the daemon benchmark (repeatable): `small` (create, enable with
        /// its baselines, grouping, memory and restore at 100), `fleet`, `size`. Default: all.
        #[arg(long = "part", value_parser = ["small", "fleet", "size"])]
        parts: Vec<String>,
    },
    /// Build the sample volume plugin (static) and package it under target/plugin/.
    Plugin,
    /// Build everything, start plugind, install and use the sample plugin, show the state.
    Demo,
    /// Build the Debian package under target/package/ (release binary, systemd unit, default
    /// config, man page) with cargo-deb and check its contents.
    Package {
        /// Package the release binary already built instead of building it.
        #[arg(long)]
        no_build: bool,
    },
    /// Run every command of README.md (marked blocks) in a private mount and pid namespace.
    ReadmeCheck,
    /// Fuzz a target of fuzz/ (libFuzzer; needs nightly and cargo-fuzz) and report execs and
    /// crashes.
    Fuzz {
        /// A file stem of fuzz/fuzz_targets/, or `all`.
        target: String,
        /// Seconds to run (each target, for `all`).
        #[arg(long, default_value_t = 60)]
        time: u64,
        /// Parallel fuzzing processes (libFuzzer `-fork`).
        #[arg(long, default_value_t = 1)]
        jobs: u32,
    },
    /// Kill plugind (SIGKILL) in the middle of random operations, restart it (live restore
    /// on and off in turn) and check the invariants after each restart.
    Torture {
        /// Number of kill-and-restart iterations.
        #[arg(long, default_value_t = 100)]
        iterations: u64,
        /// Seed of every random choice (default: from the clock; printed either way).
        #[arg(long)]
        seed: Option<u64>,
        /// Count violations and go on instead of stopping at the first.
        #[arg(long)]
        keep_going: bool,
        /// Seconds restarted plugins may take to settle before a difference is a violation.
        #[arg(long, default_value_t = 20)]
        settle: u64,
        /// Kill only after each operation answered (a control run: restarts alone).
        #[arg(long)]
        idle_kills: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    util::enter_workspace_root()?;
    match cli.task {
        Task::Setup => setup::run(),
        Task::Ci { advisories } => ci::run(advisories),
        Task::Bench {
            which,
            plugins,
            parts,
        } => ci::bench(which.as_deref(), plugins, &parts),
        Task::Plugin => plugin::build().map(|out| {
            println!("plugin directory: {}", out.dir.display());
            println!("plugin tar:       {}", out.tar.display());
        }),
        Task::Demo => demo::run(),
        Task::Package { no_build } => package::run(no_build).map(|_| ()),
        Task::ReadmeCheck => readme::run(),
        Task::Fuzz { target, time, jobs } => fuzz::run(&target, time, jobs),
        Task::Torture {
            iterations,
            seed,
            keep_going,
            settle,
            idle_kills,
        } => torture::run(&torture::Options {
            iterations,
            seed,
            keep_going,
            settle: std::time::Duration::from_secs(settle),
            idle_kills,
        }),
    }
}
