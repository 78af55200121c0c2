//! `cargo xtask plugin`: build the sample plugins (the volume plugin and the authorization
//! plugin) as static binaries and assemble for each a plugin directory (`config.json` +
//! `rootfs/`) and a tar of it, as `docker plugin create` expects them.

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

/// The sample plugins: package name = binary name = directory name under `target/plugin`.
const PLUGINS: [&str; 2] = ["volume-plugin", "authz-plugin"];

/// Builds and packages the sample plugins; returns where the volume plugin is (the authz
/// plugin is beside it: `target/plugin/authz-plugin{,.tar}`).
pub(crate) fn build() -> anyhow::Result<PluginOutput> {
    run(cargo()
        .args(["build", "--release", "--locked", "--target", TARGET])
        .args(PLUGINS.iter().flat_map(|p| ["-p", p]))
        .env("RUSTFLAGS", "-C target-feature=+crt-static"))?;
    let mut outputs = PLUGINS
        .iter()
        .map(|name| package(name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(outputs.swap_remove(0))
}

/// Assembles `target/plugin/<name>` and `target/plugin/<name>.tar` from the built binary and
/// `examples/<name>/config.json`.
fn package(name: &str) -> anyhow::Result<PluginOutput> {
    let root = workspace_root();
    let binary = root.join(format!("target/{TARGET}/release/{name}"));
    let description = output(Command::new("file").arg(&binary)).unwrap_or_default();
    if description.contains("dynamically linked") {
        bail!(
            "{} is dynamically linked: the plugin rootfs has no libc",
            binary.display()
        );
    }

    let out = root.join("target/plugin");
    let dir = out.join(name);
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
    fs::copy(&binary, rootfs.join(name)).context("copy plugin binary into rootfs")?;
    fs::copy(
        root.join(format!("examples/{name}/config.json")),
        dir.join("config.json"),
    )
    .with_context(|| format!("copy examples/{name}/config.json"))?;

    let tar = out.join(format!("{name}.tar"));
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
