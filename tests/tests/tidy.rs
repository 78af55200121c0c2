//! Tidy checks over the whole workspace, run by plain `cargo test`: the dependency rules of
//! design.md (read from `cargo metadata`), `nix`/`libc` only in `sys`, `anyhow` only at the
//! edges, `unsafe` only in `sys`, and a `//!` header on every Rust file.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use cargo_metadata::{DependencyKind, MetadataCommand, Package};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// design.md's "may depend on" column, for workspace crates.
fn allowed_edges() -> BTreeMap<&'static str, &'static [&'static str]> {
    BTreeMap::from([
        ("plugind-types", &[][..]),
        ("plugind-sys", &[][..]),
        ("plugind-queue", &[][..]),
        ("plugind-blobstore", &["plugind-types", "plugind-sys"][..]),
        ("plugind-store", &["plugind-types", "plugind-sys"][..]),
        ("plugind-spec", &["plugind-types"][..]),
        ("plugind-bundle", &["plugind-types", "plugind-sys"][..]),
        (
            "plugind-executor",
            &["plugind-types", "plugind-sys", "plugind-queue"][..],
        ),
        (
            "plugind-distribution",
            &["plugind-types", "plugind-blobstore"][..],
        ),
        (
            "plugind-manager",
            &[
                "plugind-types",
                "plugind-sys",
                "plugind-blobstore",
                "plugind-queue",
                "plugind-store",
                "plugind-spec",
                "plugind-bundle",
                "plugind-executor",
                "plugind-distribution",
            ][..],
        ),
        (
            "plugind-volumes",
            &["plugind-types", "plugind-sys", "plugind-manager"][..],
        ),
        (
            "plugind-api",
            &["plugind-manager", "plugind-volumes", "plugind-types"][..],
        ),
        (
            "plugind",
            &[
                "plugind-api",
                "plugind-manager",
                "plugind-volumes",
                "plugind-types",
            ][..],
        ),
        ("plugind-test-support", &[][..]),
        ("plugind-tests", &["plugind-test-support"][..]),
        ("xtask", &["plugind-test-support"][..]),
        ("volume-plugin", &[][..]),
    ])
}

/// Layers, lowest first: a dev-dependency may point at the same or a lower layer only
/// (tests may use a sibling to build fixtures, never a crate above them).
fn layer(name: &str) -> usize {
    match name {
        "plugind-types" | "plugind-sys" | "plugind-queue" => 0,
        "plugind-blobstore"
        | "plugind-store"
        | "plugind-spec"
        | "plugind-bundle"
        | "plugind-executor"
        | "plugind-distribution" => 1,
        "plugind-manager" => 2,
        "plugind-volumes" => 3,
        "plugind-api" => 4,
        _ => 5,
    }
}

fn members() -> Vec<Package> {
    let meta = MetadataCommand::new()
        .manifest_path(workspace_root().join("Cargo.toml"))
        .no_deps()
        .exec()
        .expect("cargo metadata");
    meta.workspace_packages().into_iter().cloned().collect()
}

#[test]
fn workspace_dependency_graph_follows_design() {
    let allowed = allowed_edges();
    let names: BTreeSet<String> = members().iter().map(|p| p.name.to_string()).collect();
    let mut violations = Vec::new();
    for pkg in members() {
        let name = pkg.name.to_string();
        let Some(ok) = allowed.get(name.as_str()) else {
            violations.push(format!("{name} is not in design.md's crate table"));
            continue;
        };
        for dep in pkg.dependencies.iter().filter(|d| names.contains(&d.name)) {
            let bad = match dep.kind {
                DependencyKind::Development => layer(&dep.name) > layer(&name),
                _ => !ok.contains(&dep.name.as_str()),
            };
            if bad {
                violations.push(format!("{name} -> {} ({:?})", dep.name, dep.kind));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "forbidden workspace edges: {violations:#?}"
    );
}

#[test]
fn nix_and_libc_only_in_sys_and_anyhow_only_at_edges() {
    let mut violations = Vec::new();
    for pkg in members() {
        let name = pkg.name.to_string();
        let is_library = pkg.targets.iter().any(|t| t.is_lib());
        let edge = matches!(
            name.as_str(),
            "plugind" | "xtask" | "plugind-tests" | "volume-plugin" | "plugind-test-support"
        );
        for dep in &pkg.dependencies {
            let normal = dep.kind == DependencyKind::Normal;
            if matches!(dep.name.as_str(), "nix" | "libc") && name != "plugind-sys" && normal {
                violations.push(format!("{name} uses {} (only plugind-sys may)", dep.name));
            }
            if dep.name == "anyhow" && normal && is_library && !edge {
                violations.push(format!("library {name} uses anyhow (typed errors only)"));
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn members_inherit_workspace_lints() {
    for pkg in members() {
        let manifest = fs::read_to_string(&pkg.manifest_path).unwrap();
        assert!(
            manifest.contains("[lints]\nworkspace = true"),
            "{} must set `[lints] workspace = true`",
            pkg.manifest_path
        );
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn all_rust_files() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in ["crates", "xtask", "tests", "examples"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 10, "found too few Rust files: {files:?}");
    files
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let missing: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|f| {
            !fs::read_to_string(f)
                .unwrap()
                .trim_start()
                .starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading `//!` doc: {missing:#?}"
    );
}

#[test]
fn unsafe_only_in_sys() {
    let root = workspace_root();
    let offenders: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|f| !f.starts_with(root.join("crates/sys")))
        .filter(|f| {
            let text = fs::read_to_string(f).unwrap();
            // Spelled in pieces so that this file does not match itself.
            let (allow, block) = (concat!("allow(", "unsafe_code)"), concat!("unsafe", " {"));
            text.contains(allow) || text.contains(block)
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "unsafe outside crates/sys: {offenders:#?}"
    );
}

#[test]
fn architecture_mentions_every_crate() {
    let arch = fs::read_to_string(workspace_root().join("ARCHITECTURE.md")).unwrap();
    for pkg in members() {
        let dir = Path::new(pkg.manifest_path.as_str()).parent().unwrap();
        let rel = dir
            .strip_prefix(workspace_root())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            arch.contains(&format!("`{rel}`")),
            "ARCHITECTURE.md does not mention `{rel}`"
        );
    }
}
