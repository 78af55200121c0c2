//! Fuzz target: An API request's query string and the parameter parsers.
//! The logic lives in `plugind_api::fuzzing::query_string` so that the seed corpus also runs on stable
//! (`tests/tests/fuzz_corpora.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    plugind_api::fuzzing::query_string(data);
});
