//! `cargo xtask plugin`: build the sample volume plugin as a static binary and assemble a
//! plugin directory (`config.json` + `rootfs/`) and a tar of it, as `docker plugin create`
//! expects them.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{bail, Context};

use crate::util::{cargo, output, run, workspace_root};

/// The Rust target the static binary is built for: an explicit `--target` keeps the static
/// flags away from build scripts and proc macros.
const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Where the packaged plugin ends up.
#[derive(Debug)]
pub(crate) struct PluginOutput {
    /// `target/plugin/volume-plugin`: `config.json` and `rootfs/`.
    pub(crate) dir: PathBuf,
    /// `target/plugin/volume-plugin.tar`: the same as a tar, for `POST /plugins/create`.
    pub(crate) tar: PathBuf,
}

/// Builds and packages the sample plugin.
pub(crate) fn build() -> anyhow::Result<PluginOutput> {
    let root = workspace_root();
    run(cargo()
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "volume-plugin",
            "--target",
            TARGET,
        ])
        .env("RUSTFLAGS", "-C target-feature=+crt-static"))?;
    let binary = root.join(format!("target/{TARGET}/release/volume-plugin"));
    let description = output(Command::new("file").arg(&binary)).unwrap_or_default();
    if description.contains("dynamically linked") {
        bail!(
            "{} is dynamically linked: the plugin rootfs has no libc",
            binary.display()
        );
    }

    let out = root.join("target/plugin");
    let dir = out.join("volume-plugin");
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    let rootfs = dir.join("rootfs");
    for sub in [
        "data",
        "run/docker/plugins",
        "tmp",
        "etc",
        "dev",
        "proc",
        "sys",
    ] {
        fs::create_dir_all(rootfs.join(sub)).with_context(|| format!("create rootfs/{sub}"))?;
    }
    fs::copy(&binary, rootfs.join("volume-plugin")).context("copy plugin binary into rootfs")?;
    fs::copy(
        root.join("examples/volume-plugin/config.json"),
        dir.join("config.json"),
    )
    .context("copy examples/volume-plugin/config.json")?;

    let tar = out.join("volume-plugin.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("--owner=0")
        .arg("--group=0")
        .arg("-cf")
        .arg(&tar)
        .args(["config.json", "rootfs"]))?;
    Ok(PluginOutput { dir, tar })
}
