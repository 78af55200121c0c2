//! Fuzz target: Events a shim publishes (Forward envelopes and payloads).
//! The logic lives in `plugind_executor::fuzzing::event_payload` so that the seed corpus also runs on stable
//! (`tests/tests/fuzz_corpora.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    plugind_executor::fuzzing::event_payload(data);
});
