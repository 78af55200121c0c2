//! `plugind --version`: plugind's version and git commit, and the versions of the runtime and
//! shim it would use, asked at that moment (they are separate packages, upgraded on their own).

use std::{path::Path, process::Command};

use crate::wiring::find_program;

/// The git commit plugind was built from (`build.rs`), or "unknown".
pub const GIT_COMMIT: &str = env!("PLUGIND_GIT_COMMIT");

/// The full `--version` text, probing `runc` and `containerd-shim-runc-v2` on this host.
pub fn version_text() -> String {
    let runc = probe("runc", "--version", parse_runc_version);
    let shim = probe("containerd-shim-runc-v2", "-v", parse_shim_version);
    format_version(env!("CARGO_PKG_VERSION"), GIT_COMMIT, &runc, &shim)
}

/// What was found for one program: its version and path, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Found { version: String, path: String },
    NotFound,
    Failed { path: String, reason: String },
}

/// dockerd's first line ("Docker version X, build Y"), then one line per helper program.
pub fn format_version(version: &str, commit: &str, runc: &Probe, shim: &Probe) -> String {
    let line = |name: &str, probe: &Probe| match probe {
        Probe::Found { version, path } => format!("{name}: {version} ({path})"),
        Probe::NotFound => format!("{name}: not found"),
        Probe::Failed { path, reason } => format!("{name}: unknown version ({path}: {reason})"),
    };
    format!(
        "plugind version {version}, build {commit}\n{}\n{}\n",
        line("runc", runc),
        line("containerd-shim-runc-v2", shim)
    )
}

fn probe(name: &str, flag: &str, parse: fn(&str) -> Option<String>) -> Probe {
    let Some(path) = find_program(name) else {
        return Probe::NotFound;
    };
    probe_path(&path, flag, parse)
}

fn probe_path(path: &Path, flag: &str, parse: fn(&str) -> Option<String>) -> Probe {
    let shown = path.display().to_string();
    match Command::new(path).arg(flag).output() {
        Ok(out) => match parse(&String::from_utf8_lossy(&out.stdout)) {
            Some(version) => Probe::Found {
                version,
                path: shown,
            },
            None => Probe::Failed {
                path: shown,
                reason: format!("unexpected `{flag}` output ({})", out.status),
            },
        },
        Err(e) => Probe::Failed {
            path: shown,
            reason: e.to_string(),
        },
    }
}

/// `runc --version` starts with "runc version 1.1.5".
pub fn parse_runc_version(output: &str) -> Option<String> {
    let first = output.lines().next()?.trim();
    let version = first.strip_prefix("runc version ")?.trim();
    (!version.is_empty()).then(|| version.to_owned())
}

/// `containerd-shim-runc-v2 -v` prints a "Version:" line under the program name.
pub fn parse_shim_version(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let version = line.trim().strip_prefix("Version:")?.trim();
        (!version.is_empty()).then(|| version.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_runc_and_shim_outputs() {
        let runc = "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\n";
        assert_eq!(parse_runc_version(runc).as_deref(), Some("1.1.5+ds1"));
        let shim = "containerd-shim-runc-v2:\n  Version:  1.6.20~ds1\n  Revision: 1.6.20~ds1-1\n";
        assert_eq!(parse_shim_version(shim).as_deref(), Some("1.6.20~ds1"));
        assert_eq!(parse_runc_version("crun version 1.8"), None);
        assert_eq!(parse_shim_version(""), None);
    }

    #[test]
    fn formats_found_missing_and_failed_programs() {
        let runc = Probe::Found {
            version: "1.1.5".into(),
            path: "/usr/sbin/runc".into(),
        };
        let shim = Probe::NotFound;
        assert_eq!(
            format_version("0.1.0", "abc1234", &runc, &shim),
            "plugind version 0.1.0, build abc1234\nrunc: 1.1.5 (/usr/sbin/runc)\n\
             containerd-shim-runc-v2: not found\n"
        );
        let failed = Probe::Failed {
            path: "/x".into(),
            reason: "boom".into(),
        };
        assert!(format_version("0.1.0", "u", &failed, &runc)
            .contains("runc: unknown version (/x: boom)\n"));
    }

    #[test]
    fn a_program_that_prints_no_version_is_reported_not_invented() {
        // `true` exits 0 with no output: a found program whose version cannot be read.
        let probe = probe_path(Path::new("/bin/true"), "--version", parse_runc_version);
        assert!(matches!(probe, Probe::Failed { ref path, .. } if path == "/bin/true"));
    }

    #[test]
    fn the_commit_is_embedded() {
        assert!(!GIT_COMMIT.is_empty());
    }
}
