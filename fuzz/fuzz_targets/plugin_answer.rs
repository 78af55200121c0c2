//! Fuzz target: A plugin's HTTP answer as the manager's client decodes it.
//! The logic lives in `plugind_manager::fuzzing::plugin_answer` so that the seed corpus also runs on stable
//! (`tests/tests/fuzz_corpora.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    plugind_manager::fuzzing::plugin_answer(data);
});
