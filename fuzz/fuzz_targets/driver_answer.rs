//! Fuzz target: A volume driver's answers as the volume service decodes them.
//! The logic lives in `plugind_volumes::fuzzing::driver_answer` so that the seed corpus also runs on stable
//! (`tests/tests/fuzz_corpora.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    plugind_volumes::fuzzing::driver_answer(data);
});
