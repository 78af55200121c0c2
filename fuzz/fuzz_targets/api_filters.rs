//! Fuzz target: The API's `filters` parameter (plugins, events, volumes).
//! The logic lives in `plugind_api::fuzzing::filters_json` so that the seed corpus also runs on stable
//! (`tests/tests/fuzz_corpora.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    plugind_api::fuzzing::filters_json(data);
});
