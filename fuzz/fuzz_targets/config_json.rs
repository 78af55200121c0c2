//! Fuzz target: A plugin `config.json` (parse, validate, round trip).
//! The logic lives in `plugind_types::fuzzing::config_json` so that the seed corpus also runs on stable
//! (`tests/tests/fuzz_corpora.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    plugind_types::fuzzing::config_json(data);
});
