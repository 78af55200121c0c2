//! Fuzz target: API JSON request bodies and their Content-Type rules.
//! The logic lives in `plugind_api::fuzzing::json_body` so that the seed corpus also runs on stable
//! (`tests/tests/fuzz_corpora.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    plugind_api::fuzzing::json_body(data);
});
