//! `cargo xtask readme-check`: runs the commands of README.md, so that they cannot rot.
//!
//! Every fenced ```` ```sh ```` block of the README must follow a marker comment
//! `<!-- readme-check: KIND -->`:
//! - `run` and `package`: run, in order, as one `bash -euo pipefail` script, literally (same
//!   paths as a user's), but isolated: in a private mount and pid namespace where `/usr` and
//!   `/var` are overlays on a tmpfs and `/etc/plugind`, `/run/plugind` and `/var/lib/plugind`
//!   are tmpfs, so `cargo install --root /usr/local`, `apt-get install ./plugind.deb`,
//!   `pidof plugind` and the daemon's state touch nothing of the machine's;
//! - `ci`: README's top commands, which `.ci/run` runs itself;
//! - `systemd`: commands for a systemd host; a service systemd starts would run outside the
//!   namespace, so they are only checked to name the unit of `contrib/` (the unit itself is
//!   verified by `cargo xtask package` and its readiness by `tests/tests/sd_notify.rs`);
//! - `example`: commands for hosts readme-check cannot be (a Kubernetes cluster), shown and
//!   neither run nor checked;
//! - `podman`: the Podman flow, which needs a container image and Podman's storage set up for
//!   this host; `tests/tests/podman.rs` runs it, and the check makes sure every command of the
//!   block (program and subcommand) is one that test runs.
//!
//! `cargo install` reuses the workspace's `target/` (`CARGO_TARGET_DIR`), so after
//! `cargo xtask package` it does not build plugind again.

use std::{fs, process::Command};

use anyhow::{bail, Context};

use crate::util::{run as run_cmd, workspace_root};

/// One marked block.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Block {
    /// The marker's kind.
    pub(crate) kind: String,
    /// The block's text.
    pub(crate) code: String,
    /// Line of the opening fence (1-based), for messages.
    pub(crate) line: usize,
}

const KINDS: &[&str] = &["run", "package", "ci", "systemd", "podman", "example"];

/// The sh blocks of a README with their markers; an unmarked block or unknown kind is an error.
pub(crate) fn marked_blocks(readme: &str) -> anyhow::Result<Vec<Block>> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let fence = lines[i].trim_start();
        if !fence.starts_with("```") {
            i += 1;
            continue;
        }
        let lang = fence.trim_start_matches('`').trim();
        let start = i;
        let end = (i + 1..lines.len())
            .find(|&j| lines[j].trim_start().starts_with("```"))
            .with_context(|| format!("README.md:{}: unclosed code block", start + 1))?;
        i = end + 1;
        if !matches!(lang, "sh" | "bash" | "shell" | "console") {
            continue;
        }
        let marker = lines[..start]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| l.trim().strip_prefix("<!-- readme-check:"))
            .and_then(|l| l.strip_suffix("-->"))
            .map(str::trim)
            .with_context(|| {
                format!(
                    "README.md:{}: a shell block without `<!-- readme-check: KIND -->` above it",
                    start + 1
                )
            })?;
        if !KINDS.contains(&marker) {
            bail!(
                "README.md:{}: unknown readme-check kind {marker:?} (one of {KINDS:?})",
                start + 1
            );
        }
        blocks.push(Block {
            kind: marker.to_owned(),
            code: lines[start + 1..end].join("\n"),
            line: start + 1,
        });
    }
    Ok(blocks)
}

/// Sets up the namespace's private file systems, then runs the README script.
const OUTER: &str = r#"set -eu
scratch=$(mktemp -d /tmp/readme-check.XXXXXX)
mount -t tmpfs tmpfs "$scratch"
for top in usr var; do
    mkdir "$scratch/$top-upper" "$scratch/$top-work"
    mount -t overlay overlay \
        -o "lowerdir=/$top,upperdir=$scratch/$top-upper,workdir=$scratch/$top-work" "/$top"
done
for dir in /etc/plugind /run/plugind /var/lib/plugind; do
    mkdir -p "$dir"
    mount -t tmpfs tmpfs "$dir"
done
mkdir "$scratch/docker"
export DOCKER_CONFIG="$scratch/docker"
exec bash "$1"
"#;

/// Runs before the README's commands: a failure leaves no plugin or daemon behind.
const PRELUDE: &str = r#"set -euo pipefail
cleanup() {
    status=$?
    set +e
    if pidof plugind >/dev/null && [ -S /run/plugind/plugind.sock ]; then
        for p in $(DOCKER_HOST=unix:///run/plugind/plugind.sock docker plugin ls -q); do
            DOCKER_HOST=unix:///run/plugind/plugind.sock docker plugin rm -f "$p"
        done
    fi
    pids=$(pidof plugind) && kill -TERM $pids
    wait
    exit $status
}
trap cleanup EXIT
set -x
"#;

/// Runs the README's commands (see the module comment).
pub(crate) fn run() -> anyhow::Result<()> {
    let root = workspace_root();
    let readme = fs::read_to_string(root.join("README.md")).context("reading README.md")?;
    let blocks = marked_blocks(&readme)?;
    let unit = fs::read_to_string(root.join("contrib/plugind.service"))
        .context("reading contrib/plugind.service")?;
    let podman_test = fs::read_to_string(root.join("tests/tests/podman.rs"))
        .context("reading tests/tests/podman.rs")?;
    let mut script = String::from(PRELUDE);
    for block in &blocks {
        match block.kind.as_str() {
            "run" | "package" => {
                script.push_str(&format!("# README.md:{}\n{}\n", block.line, block.code));
            }
            "ci" => println!(
                "readme-check: README.md:{}: run by .ci/run itself",
                block.line
            ),
            "example" => println!(
                "readme-check: README.md:{}: an example for other hosts, not run",
                block.line
            ),
            "podman" => {
                check_podman_block(block, &podman_test)?;
                println!(
                    "readme-check: README.md:{}: run by tests/tests/podman.rs",
                    block.line
                );
            }
            _ => {
                check_systemd_block(block, &unit)?;
                println!(
                    "readme-check: README.md:{}: systemd commands checked, not run",
                    block.line
                );
            }
        }
    }
    script.push_str("echo 'readme-check: every command ran'\n");
    let dir = root.join("target/readme-check");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (outer, inner) = (dir.join("outer.sh"), dir.join("readme.sh"));
    fs::write(&outer, OUTER).context("writing the namespace script")?;
    fs::write(&inner, script).context("writing the README script")?;
    // The namespace's tmpfs mounts need mount points on the host's /etc and /run (/var/lib
    // is in the /var overlay); those it had to create are removed again (when empty).
    let created: Vec<&str> = ["/etc/plugind", "/run/plugind"]
        .into_iter()
        .filter(|d| !std::path::Path::new(d).exists())
        .collect();
    let result = run_cmd(
        // A README command that never ends (a daemon that never listens) must not hang CI:
        // at the deadline unshare dies and `--kill-child` takes the whole namespace with it.
        Command::new("timeout")
            .args(["--kill-after=10", "1800", "unshare", "--kill-child"])
            .args(["--mount", "--pid", "--fork", "--mount-proc"])
            .args(["--propagation", "private", "bash"])
            .arg(&outer)
            .arg(&inner)
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", root.join("target"))
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT"),
    );
    for dir in created {
        let _ = fs::remove_dir(dir);
    }
    result
}

/// A systemd block may only drive the unit `contrib/plugind.service` defines.
fn check_systemd_block(block: &Block, unit: &str) -> anyhow::Result<()> {
    if !unit.contains("Type=notify") || !unit.contains("ExecReload=") {
        bail!("contrib/plugind.service must be Type=notify with an ExecReload");
    }
    for line in block.code.lines().filter(|l| !l.trim().is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let known = matches!(words[0], "systemctl" | "journalctl")
            && (words.contains(&"plugind") || words.contains(&"daemon-reload"));
        if !known {
            bail!(
                "README.md:{}: `{line}` is not a systemctl/journalctl command on plugind",
                block.line
            );
        }
    }
    Ok(())
}

/// Every command of a Podman block must be one `tests/tests/podman.rs` runs: its program is
/// docker, plugind or podman, and its subcommand words are arguments the test passes.
fn check_podman_block(block: &Block, test: &str) -> anyhow::Result<()> {
    for line in block.code.lines() {
        let command = line.split(" #").next().unwrap_or_default();
        let words: Vec<&str> = command.split_whitespace().collect();
        let Some(program) = words.first() else {
            continue;
        };
        let subcommand: &[&str] = match *program {
            "docker" | "podman" if words.get(1) == Some(&"run") => &words[1..2],
            "docker" | "podman" => &words[1..words.len().min(3)],
            "plugind" => &words[1..words.len().min(2)],
            _ => bail!(
                "README.md:{}: `{line}` is not a docker, plugind or podman command",
                block.line
            ),
        };
        for word in subcommand {
            if !test.contains(&format!("\"{word}\"")) {
                bail!(
                    "README.md:{}: `{line}`: tests/tests/podman.rs never runs `{word}`",
                    block.line
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_marked_blocks_and_refuses_unmarked_ones() {
        let readme = "# t\n\n<!-- readme-check: run -->\n```sh\necho a\necho b\n```\n\n```toml\nx = 1\n```\n<!-- readme-check: ci -->\n```sh\nmake\n```\n";
        let blocks = marked_blocks(readme).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].kind, "run");
        assert_eq!(blocks[0].code, "echo a\necho b");
        assert_eq!(blocks[0].line, 4);
        assert_eq!(blocks[1].kind, "ci");
        let unmarked = marked_blocks("text\n```sh\nrm -rf /\n```\n").unwrap_err();
        assert!(unmarked.to_string().contains("README.md:2"), "{unmarked}");
        let example = marked_blocks("<!-- readme-check: example -->\n```sh\nkubectl x\n```\n");
        assert_eq!(example.unwrap()[0].kind, "example");
        let unknown = marked_blocks("<!-- readme-check: maybe -->\n```sh\nx\n```\n").unwrap_err();
        assert!(unknown.to_string().contains("unknown"), "{unknown}");
        assert!(marked_blocks("```sh\nx\n").is_err());
    }

    #[test]
    fn the_readme_marks_every_shell_block() {
        let readme = fs::read_to_string(workspace_root().join("README.md")).unwrap();
        let blocks = marked_blocks(&readme).unwrap();
        let kinds: Vec<&str> = blocks.iter().map(|b| b.kind.as_str()).collect();
        for kind in ["run", "package", "ci"] {
            assert!(
                kinds.contains(&kind),
                "no {kind} block in README: {kinds:?}"
            );
        }
        let unit = fs::read_to_string(workspace_root().join("contrib/plugind.service")).unwrap();
        for block in blocks.iter().filter(|b| b.kind == "systemd") {
            check_systemd_block(block, &unit).unwrap();
        }
        let podman_test =
            fs::read_to_string(workspace_root().join("tests/tests/podman.rs")).unwrap();
        for block in blocks.iter().filter(|b| b.kind == "podman") {
            check_podman_block(block, &podman_test).unwrap();
        }
        let bad = Block {
            kind: "podman".into(),
            code: "podman system reset\n".into(),
            line: 1,
        };
        assert!(check_podman_block(&bad, &podman_test).is_err());
    }
}
