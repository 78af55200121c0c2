//! `plugind fsck`: the command line of the state-root check (the checks themselves are
//! `plugind_manager::fsck`). Prints one line per finding (or JSON with `--format json`) and a
//! summary; exits 0 when no problem remains, 1 when some do, 2 when it could not run.

use std::{ffi::OsString, process::ExitCode};

use clap::{Parser, ValueEnum};
use plugind_manager::fsck::{self, Depth, FsckOptions, FsckReport, Repair, Severity};

/// Check (and with --repair, fix) plugind's state root. Refuses --repair while a plugind
/// serves the root; a report without it runs at any time.
#[derive(Debug, Parser)]
#[command(name = "plugind fsck")]
pub struct FsckCli {
    /// `--root` (the state directory checked) and `--exec-root` (for bundles no record claims).
    #[command(flatten)]
    pub roots: crate::config::Roots,
    /// Fix what can be fixed from the blobs: unpack damaged root filesystems again, delete
    /// leftovers, move corrupt blobs to the quarantine. Records that cannot be rebuilt are kept.
    #[arg(long)]
    pub repair: bool,
    /// Compare the content of every root filesystem file with its layer (default: a sample).
    #[arg(long)]
    pub full: bool,
    /// Output: one line per finding, or one JSON document.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// `--format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object: findings, counts, summary.
    Json,
}

/// Runs `plugind fsck ARGS` (`args[0]` is the program, `args[1]` the word `fsck`).
pub fn main(args: &[OsString]) -> ExitCode {
    let argv = std::iter::once(OsString::from("plugind fsck")).chain(args.iter().skip(2).cloned());
    let cli = FsckCli::try_parse_from(argv).unwrap_or_else(|e| e.exit());
    let options = FsckOptions {
        root: cli.roots.root.clone(),
        exec_root: Some(cli.roots.exec_root.clone()),
        depth: Depth::Full,
        full_rootfs: cli.full,
        repair: cli.repair,
    };
    let report = match fsck::run(&options) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("plugind fsck: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.format {
        Format::Text => print!("{}", render_text(&report)),
        Format::Json => println!("{}", render_json(&report)),
    }
    if report.remaining() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One line per finding (`problem KIND PATH (SIZE): DETAIL`, then the repair's outcome
/// indented), then a summary line.
pub fn render_text(report: &FsckReport) -> String {
    let mut out = String::new();
    for f in &report.findings {
        let severity = match f.severity {
            Severity::Problem => "problem",
            Severity::Notice => "notice",
        };
        let size = f.size.map(|s| format!(" ({s} bytes)")).unwrap_or_default();
        out.push_str(&format!(
            "{severity} {} {}{size}: {}\n",
            f.kind,
            f.path.display(),
            f.detail
        ));
        match &f.repair {
            Some(Repair::Repaired(how)) => out.push_str(&format!("  repaired: {how}\n")),
            Some(Repair::NotRepaired(why)) => out.push_str(&format!("  not repaired: {why}\n")),
            None => {}
        }
    }
    let c = &report.checked;
    out.push_str(&format!(
        "fsck: {} records, {} blobs, {} rootfs entries ({} contents) checked; {} repaired, {} problems remain\n",
        c.records,
        c.blobs,
        c.rootfs_entries,
        c.rootfs_contents,
        report.repaired(),
        report.remaining()
    ));
    out
}

/// The report as one JSON object, with `repaired` and `remaining` counts.
pub fn render_json(report: &FsckReport) -> String {
    let mut value = serde_json::to_value(report).unwrap_or_default();
    if let Some(obj) = value.as_object_mut() {
        obj.insert("repaired".to_owned(), report.repaired().into());
        obj.insert("remaining".to_owned(), report.remaining().into());
    }
    value.to_string()
}

/// The cheap checks at daemon start, as log lines (nothing is repaired: start repairs what it
/// owns itself).
pub fn log_cheap_checks(root: &std::path::Path) {
    let options = FsckOptions {
        root: root.to_path_buf(),
        exec_root: None,
        depth: Depth::Cheap,
        full_rootfs: false,
        repair: false,
    };
    match fsck::run(&options) {
        Ok(report) => {
            for f in report.findings.iter().filter(|f| f.kind != "root-in-use") {
                match f.severity {
                    Severity::Problem => {
                        tracing::warn!(kind = f.kind, path = %f.path.display(), size = f.size, "fsck: {}", f.detail)
                    }
                    Severity::Notice => {
                        tracing::info!(kind = f.kind, path = %f.path.display(), size = f.size, "fsck: {}", f.detail)
                    }
                }
            }
            tracing::info!(
                records = report.checked.records,
                blobs = report.checked.blobs,
                problems = report.remaining(),
                "state root checked (cheap checks; `plugind fsck` checks contents)"
            );
        }
        Err(e) => tracing::warn!(error = %e, "state root check failed"),
    }
}
