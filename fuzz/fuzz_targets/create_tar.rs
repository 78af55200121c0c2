//! Fuzz target: A `docker plugin create` tar: import, config check, unpack.
//! The logic lives in `plugind_manager::fuzzing::create_tar` so that the seed corpus also runs on stable
//! (`tests/tests/fuzz_corpora.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    plugind_manager::fuzzing::create_tar(data);
});
