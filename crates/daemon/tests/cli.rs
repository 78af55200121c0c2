//! Runs the built `plugind` binary for its one-shot commands: `--version` and `check`.

use std::process::Command;

fn plugind() -> Command {
    Command::new(env!("CARGO_BIN_EXE_plugind"))
}

#[test]
fn version_prints_plugind_commit_and_helper_programs() {
    for flag in ["--version", "-v", "-V"] {
        let out = plugind().arg(flag).output().unwrap();
        assert!(out.status.success(), "{flag}: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        let first = lines.next().unwrap();
        assert!(
            first.starts_with(&format!(
                "plugind version {}, build ",
                env!("CARGO_PKG_VERSION")
            )),
            "{first}"
        );
        assert!(!first.ends_with("build "), "{first}");
        assert!(lines.next().unwrap().starts_with("runc: "), "{text}");
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("containerd-shim-runc-v2: "),
            "{text}"
        );
    }
}
