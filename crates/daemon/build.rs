//! Embeds the git commit plugind is built from (`PLUGIND_GIT_COMMIT`) for `plugind --version`:
//! `git rev-parse --short HEAD` when the source is a git checkout and git is installed, else
//! "unknown" (a source tarball or `cargo install` from a registry has no history to ask).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn main() {
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=PLUGIND_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves (a new commit or a checkout), not on every build.
    for file in ["HEAD", "logs/HEAD"] {
        if let Some(path) = git(&["rev-parse", "--git-path", file]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
