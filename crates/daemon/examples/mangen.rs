//! Writes plugind's man page, `plugind.8`, from its clap definition (the same `Cli` the daemon
//! parses, so the page cannot disagree with `plugind --help`). `cargo xtask package` runs it:
//! `cargo run -p plugind --example mangen -- OUT_DIR`.

// The daemon's configuration module, compiled here for its `Cli`; the rest of it is unused.
#[allow(dead_code, unused_imports)]
#[path = "../src/config.rs"]
mod config;
// `plugind fsck`'s own command line, listed as a subcommand.
#[allow(dead_code)]
#[path = "../src/fsck.rs"]
mod fsck;

use std::path::PathBuf;

use anyhow::Context;
use clap::CommandFactory;

fn main() -> anyhow::Result<()> {
    let out_dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: mangen OUT_DIR")?;
    let command = config::Cli::command()
        .version(env!("CARGO_PKG_VERSION"))
        .about("run Docker managed plugins and serve the Docker plugin API")
        .long_about(LONG_ABOUT)
        .subcommand(fsck::FsckCli::command().name("fsck"));
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .section("8")
        .manual("plugind")
        .render(&mut page)
        .context("rendering the man page")?;
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let path = out_dir.join("plugind.8");
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    println!("{}", path.display());
    Ok(())
}

/// The page's DESCRIPTION: what the flags' help cannot say.
const LONG_ABOUT: &str = "plugind installs, runs and supervises Docker managed plugins without \
Docker: each plugin becomes an OCI bundle started through containerd-shim-runc-v2, and plugind \
serves the Docker Engine API's plugin and volume endpoints on a unix socket, so the docker CLI \
(DOCKER_HOST=unix:///run/plugind/plugind.sock) and the Docker SDKs drive it unchanged. \
`plugind check [OPTIONS]` checks a configuration and the host and exits. \
`plugind fsck [--root DIR] [--exec-root DIR] [--repair] [--full] [--format text|json]` checks \
the state root (records against blobs, blob hashes, root filesystems against their layers, \
leftovers) and with --repair fixes what the blobs allow; it exits 0 when clean, 1 when \
problems remain, 2 when it cannot run. \
Settings come from the flags, over the TOML file given with --config-file \
(/etc/plugind/plugind.toml in the Debian package), over the defaults shown below. \
SIGHUP re-reads the configuration; SIGTERM or SIGINT stop plugind (with --live-restore \
plugins keep running and are re-attached at the next start). Under systemd (Type=notify) \
plugind reports READY=1 once its socket listens and its plugins are restored. \
State lives under --root (/var/lib/plugind), sockets, bundles and plugin logs under \
--exec-root (/run/plugind); plugind logs to standard error (the journal under systemd).";
