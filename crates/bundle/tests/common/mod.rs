//! Helpers shared by this crate's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use plugind_types::PluginId;

/// Panics unless the test runs as root and every named binary is on PATH.
pub fn require_root_and(binaries: &[&str]) {
    assert!(
        nix_free_is_root(),
        "this test needs root: run it as root (cargo test -- --include-ignored)"
    );
    for b in binaries {
        assert!(find_binary(b).is_some(), "this test needs `{b}` on PATH");
    }
}

fn nix_free_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        .unwrap_or(false)
}

/// Finds a binary on the usual system directories.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    if name.starts_with('/') {
        return Path::new(name).exists().then(|| PathBuf::from(name));
    }
    [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]
    .iter()
    .map(|d| Path::new(d).join(name))
    .find(|p| p.exists())
}

/// A random plugin id.
pub fn random_id() -> PluginId {
    let mut bytes = [0u8; 32];
    let f = std::fs::read("/proc/sys/kernel/random/uuid").unwrap();
    let g = std::fs::read("/proc/sys/kernel/random/uuid").unwrap();
    for (i, b) in f
        .iter()
        .chain(g.iter())
        .filter(|b| b.is_ascii_hexdigit())
        .take(64)
        .enumerate()
    {
        let v = (*b as char).to_digit(16).unwrap() as u8;
        bytes[i / 2] |= if i % 2 == 0 { v << 4 } else { v };
    }
    PluginId::from_bytes(bytes)
}

/// A short temp dir under /tmp (socket paths stay short).
pub fn short_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pb")
        .tempdir_in("/tmp")
        .unwrap()
}

/// Mount points at or below `dir` (resolved), from /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    plugind_sys_free_mountinfo()
        .into_iter()
        .filter(|p| p.starts_with(&dir))
        .collect()
}

fn plugind_sys_free_mountinfo() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .collect()
}
