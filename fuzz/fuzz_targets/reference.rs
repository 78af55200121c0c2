//! Fuzz target: A plugin reference as given to create/install.
//! The logic lives in `plugind_types::fuzzing::reference` so that the seed corpus also runs on stable
//! (`tests/tests/fuzz_corpora.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    plugind_types::fuzzing::reference(data);
});
