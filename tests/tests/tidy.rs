//! Tidy checks over the whole workspace, run by plain `cargo test`: the dependency rules of
//! design.md (read from `cargo metadata`), `nix`/`libc` only in `sys`, `anyhow` only at the
//! edges, `unsafe` only in `sys`, a `//!` header on every Rust file, and no workspace crate
//! re-exported whole (a back door around the dependency rules).

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
            // sys: the server gives the heap back after connection bursts.
            "plugind-api",
            &[
                "plugind-manager",
                "plugind-volumes",
                "plugind-types",
                "plugind-sys",
            ][..],
        ),
        (
            // executor: wiring builds the `ShimExecutor` the manager drives and reloads its
            // runtimes; sys: `RLIMIT_NOFILE` at start, mountinfo in `plugind check`.
            "plugind",
            &[
                "plugind-api",
                "plugind-manager",
                "plugind-volumes",
                "plugind-types",
                "plugind-executor",
                "plugind-sys",
            ][..],
        ),
        ("plugind-test-support", &[][..]),
        ("plugind-tests", &["plugind-test-support"][..]),
        ("xtask", &["plugind-test-support"][..]),
        ("volume-plugin", &[][..]),
        ("authz-plugin", &[][..]),
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
            "plugind"
                | "xtask"
                | "plugind-tests"
                | "volume-plugin"
                | "authz-plugin"
                | "plugind-test-support"
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

/// Library names of the workspace's crates (`plugind-store` -> `plugind_store`).
fn workspace_crate_idents() -> BTreeSet<String> {
    members().iter().map(|p| p.name.replace('-', "_")).collect()
}

/// Rust source reduced to tokens that matter to `use` items: identifiers, `::`, and single
/// punctuation characters. Comments, string, raw string and char literals are dropped, so a doc
/// comment or a test's snippet never counts as code.
fn use_tokens(source: &str) -> Vec<String> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == 'r' && matches!(next, Some('"' | '#')) && {
            let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
            chars.get(i + 1 + hashes) == Some(&'"')
        } {
            let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
            let close: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            i += 2 + hashes;
            while i < chars.len() && !chars[i..].starts_with(&close) {
                i += 1;
            }
            i += close.len();
        } else if c == '\'' {
            // A char literal ('x', '\n', '"'), or a lifetime ('a), which has no closing quote.
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(chars[start..i].iter().collect());
        } else if c == ':' && next == Some(':') {
            tokens.push("::".to_owned());
            i += 2;
        } else {
            if !c.is_whitespace() {
                tokens.push(c.to_string());
            }
            i += 1;
        }
    }
    tokens
}

/// What one leaf of a `use` tree brings in.
#[derive(Debug, PartialEq)]
enum UseLeaf {
    /// A path (`a::b`, `a::b as c`, `a::{self}` is `a`).
    Path(Vec<String>),
    /// A glob (`a::b::*`): the path before `*`.
    Glob(Vec<String>),
}

/// Parses the use tree at `tokens[*at..]` under `prefix`, appending its leaves.
fn parse_use_tree(tokens: &[String], at: &mut usize, prefix: &[String], out: &mut Vec<UseLeaf>) {
    let mut path = prefix.to_vec();
    loop {
        match tokens.get(*at).map(String::as_str) {
            Some("::") => *at += 1,
            Some("*") => {
                *at += 1;
                out.push(UseLeaf::Glob(path));
                return;
            }
            Some("{") => {
                *at += 1;
                while !matches!(tokens.get(*at).map(String::as_str), Some("}") | None) {
                    parse_use_tree(tokens, at, &path, out);
                    if tokens.get(*at).map(String::as_str) == Some(",") {
                        *at += 1;
                    }
                }
                *at += 1;
                return;
            }
            Some("self") if !path.is_empty() => *at += 1,
            Some(word) if word.starts_with(|c: char| c.is_alphanumeric() || c == '_') => {
                if word == "as" {
                    *at += 2; // `as` and the new name: the path stays what it names
                } else {
                    path.push(word.to_owned());
                    *at += 1;
                }
            }
            _ => {
                out.push(UseLeaf::Path(path));
                return;
            }
        }
    }
}

/// Every `pub use` in `source` that re-exports a whole workspace crate (`pub use plugind_x;`,
/// `pub use plugind_x as y;`, `pub use {plugind_x as y, ...}`, `pub extern crate plugind_x`)
/// or a glob of one
/// (`pub use plugind_x::*`, `pub use plugind_x::m::*`), described for a failure message.
/// `pub(crate) use` is not an export and is not checked.
fn whole_crate_reexports(source: &str, crates: &BTreeSet<String>) -> Vec<String> {
    let tokens = use_tokens(source);
    let mut found = Vec::new();
    let mut i = 0;
    while i + 1 < tokens.len() {
        if tokens[i] == "pub"
            && tokens[i + 1] == "extern"
            && tokens.get(i + 3).is_some_and(|c| crates.contains(c))
        {
            found.push(format!(
                "`pub extern crate {}` re-exports the whole crate",
                tokens[i + 3]
            ));
        }
        if tokens[i] != "pub" || tokens[i + 1] != "use" {
            i += 1;
            continue;
        }
        let mut at = i + 2;
        let mut leaves = Vec::new();
        parse_use_tree(&tokens, &mut at, &[], &mut leaves);
        for leaf in leaves {
            match &leaf {
                UseLeaf::Path(p) if p.len() == 1 && crates.contains(&p[0]) => {
                    found.push(format!("`pub use {}` re-exports the whole crate", p[0]));
                }
                UseLeaf::Glob(p) if p.first().is_some_and(|c| crates.contains(c)) => {
                    found.push(format!("`pub use {}::*` re-exports a glob", p.join("::")));
                }
                _ => {}
            }
        }
        i = at.max(i + 2);
    }
    found
}

/// A crate's API re-exports items one by one; a whole workspace crate (or a glob of one)
/// re-exported is a back door around the dependency rules above.
#[test]
fn no_workspace_crate_reexported_whole() {
    let crates = workspace_crate_idents();
    assert!(crates.contains("plugind_store"), "{crates:?}");
    let mut offenders = Vec::new();
    for file in all_rust_files() {
        for what in whole_crate_reexports(&fs::read_to_string(&file).unwrap(), &crates) {
            offenders.push(format!("{}: {what}", file.display()));
        }
    }
    assert!(
        offenders.is_empty(),
        "workspace crates re-exported whole (re-export the items your API names one by one, \
         or give the consumer a dependency edge that ARCHITECTURE.md allows): {offenders:#?}"
    );
}

#[test]
fn whole_crate_reexport_checker_finds_back_doors() {
    let crates: BTreeSet<String> = ["plugind_store", "plugind_sys", "plugind_types"]
        .map(String::from)
        .into();
    let offending = r#"
        //! A crate.
        pub use plugind_store;
        pub use plugind_sys as sys;
        /// Re-exported for consumers.
        pub use {
            plugind_executor as executor, // not a workspace crate in this test
            plugind_types as types,
        };
        pub use plugind_store::*;
        pub use ::plugind_sys::fs::*;
        pub use plugind_types::{self as t, Digest};
        pub extern crate plugind_sys;
    "#;
    assert_eq!(
        whole_crate_reexports(offending, &crates),
        [
            "`pub use plugind_store` re-exports the whole crate",
            "`pub use plugind_sys` re-exports the whole crate",
            "`pub use plugind_types` re-exports the whole crate",
            "`pub use plugind_store::*` re-exports a glob",
            "`pub use plugind_sys::fs::*` re-exports a glob",
            "`pub use plugind_types` re-exports the whole crate",
            "`pub extern crate plugind_sys` re-exports the whole crate",
        ]
    );
    let fine = r#"
        //! pub use plugind_store; in a doc comment is not code.
        pub use plugind_store::{PluginRecord, RunState as State};
        pub(crate) use plugind_sys as sys;
        use plugind_types::*;
        pub use self::inner::*;
        pub use crate::error::{Error, Result};
        const TEXT: &str = "pub use plugind_store;";
        const RAW: &str = r"pub use plugind_sys::*;";
        fn f<'a>(x: &'a str) -> char { let _ = '"'; 'x' }
        pub mod inner { pub use super::plugind_types_like::Thing; }
    "#;
    assert_eq!(whole_crate_reexports(fine, &crates), Vec::<String>::new());
}
