//! `cargo xtask package`: the Debian package of plugind, built with cargo-deb from
//! `[package.metadata.deb]` in `crates/daemon/Cargo.toml`: the binary, the systemd unit, the
//! default configuration (a conffile) and the man page generated from plugind's clap
//! definition. Every build is checked: the files it must hold (`dpkg-deb -c`), its
//! dependencies and conffiles, the man page's header, and the unit (`systemd-analyze verify`).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context};

use crate::util::{cargo, find_program, output, run as run_cmd, workspace_root};

/// cargo-deb version pinned for reproducible packages; `cargo xtask setup` installs it.
pub(crate) const CARGO_DEB_VERSION: &str = "3.8.0";

/// Paths (as `dpkg-deb -c` prints them) the package must hold.
const REQUIRED_FILES: &[&str] = &[
    "./usr/bin/plugind",
    "./lib/systemd/system/plugind.service",
    "./etc/plugind/plugind.toml",
    "./usr/share/man/man8/plugind.8.gz",
    "./usr/share/doc/plugind/README.md",
];

/// Whether the pinned cargo-deb answers `cargo deb --version`.
pub(crate) fn cargo_deb_present() -> bool {
    output(cargo().args(["deb", "--version"])).is_ok_and(|v| v.contains(CARGO_DEB_VERSION))
}

/// Builds cargo-deb from crates.io (pinned, with its own lock file).
pub(crate) fn install_cargo_deb() -> anyhow::Result<()> {
    println!("setup: building cargo-deb {CARGO_DEB_VERSION} from crates.io");
    run_cmd(cargo().args([
        "install",
        "--locked",
        "cargo-deb",
        "--version",
        CARGO_DEB_VERSION,
    ]))
}

/// Builds the release binary (unless `no_build`: then the one already in target/release),
/// the man page and the .deb, checks the package, and returns its path.
pub(crate) fn run(no_build: bool) -> anyhow::Result<PathBuf> {
    if !cargo_deb_present() {
        bail!("cargo-deb {CARGO_DEB_VERSION} is missing: run `cargo xtask setup`");
    }
    let root = workspace_root();
    let out_dir = root.join("target/package");
    if !no_build {
        run_cmd(cargo().args(["build", "--release", "--locked", "-p", "plugind"]))?;
    }
    let binary = root.join("target/release/plugind");
    if !binary.is_file() {
        bail!(
            "{} missing: build it (without --no-build)",
            binary.display()
        );
    }
    man_page(&out_dir)?;
    let listed = output(
        cargo()
            .args(["deb", "--locked", "-p", "plugind", "--no-build", "-o"])
            .arg(&out_dir),
    )?;
    let deb = listed
        .lines()
        .map(str::trim)
        .rfind(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .context("cargo deb did not print the package it wrote")?;
    check(&deb, &binary)?;
    println!("package: {} checked", deb.display());
    Ok(deb)
}

/// `target/package/plugind.8.gz`, rendered from plugind's clap definition.
fn man_page(out_dir: &Path) -> anyhow::Result<()> {
    run_cmd(
        cargo()
            .args([
                "run",
                "--locked",
                "-q",
                "-p",
                "plugind",
                "--example",
                "mangen",
                "--",
            ])
            .arg(out_dir),
    )?;
    // -n: no name or time stamp in the gzip header, so the same page gives the same bytes.
    run_cmd(
        Command::new("gzip")
            .args(["-9", "-n", "-f"])
            .arg(out_dir.join("plugind.8")),
    )
}

/// Checks what a built package holds and declares.
fn check(deb: &Path, binary: &Path) -> anyhow::Result<()> {
    let contents = output(Command::new("dpkg-deb").arg("-c").arg(deb))?;
    let paths: Vec<&str> = contents
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    for required in REQUIRED_FILES {
        if !paths.contains(required) {
            bail!("{} lacks {required}; it holds:\n{contents}", deb.display());
        }
    }
    let depends = output(Command::new("dpkg-deb").arg("-f").arg(deb).arg("Depends"))?;
    for needed in ["runc", "containerd"] {
        if !depends.split(',').any(|d| d.trim().starts_with(needed)) {
            bail!("{} does not depend on {needed}: {depends}", deb.display());
        }
    }
    let conffiles = output(Command::new("dpkg-deb").arg("-I").arg(deb).arg("conffiles"))?;
    if !conffiles
        .lines()
        .any(|l| l.trim() == "/etc/plugind/plugind.toml")
    {
        bail!("/etc/plugind/plugind.toml is not a conffile: {conffiles}");
    }
    let page = output(Command::new("sh").arg("-c").arg(format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -xOf - ./usr/share/man/man8/plugind.8.gz | gzip -dc",
        deb.display()
    )))?;
    if !page.lines().any(|l| l.starts_with(".TH plugind 8")) || !page.contains("live\\-restore") {
        bail!("the packaged man page is not plugind(8) with its options:\n{page}");
    }
    verify_unit(binary, &deb.with_file_name("unit-verify"))
}

/// `systemd-analyze verify` of contrib/plugind.service, with ExecStart pointed at `binary`
/// (verify insists the command exists) and man pages not looked up.
fn verify_unit(binary: &Path, dir: &Path) -> anyhow::Result<()> {
    let Some(analyze) = find_program("systemd-analyze") else {
        println!("package: systemd-analyze not found; unit not verified");
        return Ok(());
    };
    let unit = std::fs::read_to_string(workspace_root().join("contrib/plugind.service"))
        .context("reading contrib/plugind.service")?;
    if !unit.contains("ExecStart=/usr/bin/plugind ") {
        bail!("contrib/plugind.service must start /usr/bin/plugind, where the package puts it");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let copy = dir.join("plugind.service");
    std::fs::write(
        &copy,
        unit.replace(
            "ExecStart=/usr/bin/plugind ",
            &format!("ExecStart={} ", binary.display()),
        ),
    )?;
    run_cmd(
        Command::new(analyze)
            .args(["verify", "--man=no"])
            .arg(&copy),
    )
}
