//! Fuzz target: the paths and names the published volume sockets derive from a plugin (its
//! `PropagatedMount`, its answers' mountpoints, its name).
//! The logic lives in `plugind_volumes::fuzzing::published_paths` so that the seed corpus also
//! runs on stable (`tests/tests/fuzz_corpora.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    plugind_volumes::fuzzing::published_paths(data);
});
