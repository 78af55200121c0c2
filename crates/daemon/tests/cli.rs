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

#[test]
#[ignore = "needs root (writes a probe file in /run), runc, containerd-shim-runc-v2 and cgroups"]
fn check_says_configuration_ok_on_a_good_host() {
    let dir = tempfile::tempdir().unwrap();
    // A short exec root (a temp dir's is too long for the plugin sockets); never created.
    let exec_root = format!("/run/pck{}", std::process::id());
    for first in ["check", "--validate"] {
        let out = plugind()
            .args([
                first,
                "--root",
                dir.path().join("root").to_str().unwrap(),
                "--exec-root",
                &exec_root,
                "-H",
                &format!("unix://{}", dir.path().join("p.sock").display()),
            ])
            .output()
            .unwrap();
        // This host (the test machine) has runc, the shim and cgroups.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("not found"),
            "prerequisites missing on this host: {stderr}"
        );
        assert!(out.status.success(), "{first}: {out:?}");
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "configuration OK\n");
        assert!(
            !dir.path().join("root").exists(),
            "check must create nothing"
        );
        assert!(!std::path::Path::new(&exec_root).exists());
    }
}

#[test]
fn check_reports_a_bad_config_file_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plugind.toml");
    std::fs::write(&file, "no-such-setting = 1\n").unwrap();
    let out = plugind()
        .args(["check", "--config-file", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("no-such-setting"), "{stderr}");
}

#[test]
fn check_reports_each_host_problem_on_its_own_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plugind.toml");
    let long_exec_root = dir.path().join("x".repeat(100));
    std::fs::write(
        &file,
        format!(
            "exec-root = {:?}\n[runtimes.ghost]\npath = \"/nonexistent/ghost-runtime\"\n",
            long_exec_root.to_str().unwrap()
        ),
    )
    .unwrap();
    let out = plugind()
        .args([
            "check",
            "--config-file",
            file.to_str().unwrap(),
            "--root",
            dir.path().join("root").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("plugind: runtime ghost: /nonexistent/ghost-runtime not found")),
        "{stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("plugind: socket paths: ")),
        "{stderr}"
    );
    // Other lines only for what this host lacks (e.g. runc), each a problem of its own.
    assert!(lines.iter().all(|l| l.starts_with("plugind: ")), "{stderr}");
}
