//! The fuzz targets' seed corpora (`fuzz/corpus/<target>/`) as ordinary tests on stable: every
//! file is fed to the same function the libFuzzer target calls (`fuzz/fuzz_targets/`), which
//! must not panic. `cargo xtask fuzz TARGET` explores further on nightly; a crash it finds
//! becomes a seed here, so the proof stays in the repo.

use std::{
    fs,
    path::{Path, PathBuf},
};

/// What a fuzz target calls with each input.
type Entry = fn(&[u8]);

/// Every fuzz target and the function it calls.
const TARGETS: &[(&str, Entry)] = &[
    ("config_json", plugind_types::fuzzing::config_json),
    ("reference", plugind_types::fuzzing::reference),
    ("create_tar", plugind_manager::fuzzing::create_tar),
    ("api_query", plugind_api::fuzzing::query_string),
    ("api_filters", plugind_api::fuzzing::filters_json),
    ("api_json_body", plugind_api::fuzzing::json_body),
    ("plugin_answer", plugind_manager::fuzzing::plugin_answer),
    ("driver_answer", plugind_volumes::fuzzing::driver_answer),
    ("published_paths", plugind_volumes::fuzzing::published_paths),
    ("shim_event", plugind_executor::fuzzing::event_payload),
];

/// The stack of a tokio worker (2 MiB), where the daemon runs these parsers: a seed that
/// needs more is a stack overflow waiting for a client.
const WORKER_STACK: usize = 2 << 20;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn seeds(target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn run_corpus(target: &str) {
    let run = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no target {target}"))
        .1;
    let files = seeds(target);
    assert!(!files.is_empty(), "fuzz/corpus/{target} has no seeds");
    for file in files {
        let data = fs::read(&file).unwrap();
        let shown = file.display().to_string();
        std::thread::Builder::new()
            .name(format!("seed {shown}"))
            .stack_size(WORKER_STACK)
            .spawn(move || run(&data))
            .unwrap()
            .join()
            .unwrap_or_else(|_| panic!("{target} panicked on seed {shown}"));
    }
}

#[test]
fn every_fuzz_target_is_listed_and_has_seeds() {
    let mut on_disk: Vec<String> = fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "fuzz_targets/ and TARGETS differ");
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for name in &listed {
        assert!(
            manifest.contains(&format!("path = \"fuzz_targets/{name}.rs\"")),
            "{name} is not a [[bin]] of fuzz/Cargo.toml"
        );
        assert!(!seeds(name).is_empty(), "{name} has no seeds");
    }
}

#[test]
fn published_paths_corpus() {
    run_corpus("published_paths");
}

#[test]
fn config_json_corpus() {
    run_corpus("config_json");
}

#[test]
fn reference_corpus() {
    run_corpus("reference");
}

#[test]
fn create_tar_corpus() {
    run_corpus("create_tar");
}

#[test]
fn api_query_corpus() {
    run_corpus("api_query");
}

#[test]
fn api_filters_corpus() {
    run_corpus("api_filters");
}

#[test]
fn api_json_body_corpus() {
    run_corpus("api_json_body");
}

#[test]
fn plugin_answer_corpus() {
    run_corpus("plugin_answer");
}

#[test]
fn driver_answer_corpus() {
    run_corpus("driver_answer");
}

#[test]
fn shim_event_corpus() {
    run_corpus("shim_event");
}
