//! Entry points for the fuzz targets in `fuzz/` and the seed-corpus test on stable
//! (`tests/tests/fuzz_corpora.rs`): the decoding of what shims publish to plugind's events
//! service. A panic is a bug; undecodable payloads are expected and ignored.

use containerd_shim_protos::{
    protobuf::{well_known_types::any::Any, Message},
    shim::events::ForwardRequest,
};

/// Topics shims publish, indexed by the first byte of a payload input (the exec and pause
/// topics decode to nothing now; they stay so that the seed corpora keep their meaning).
const TOPICS: [&str; 10] = [
    "TaskCreate",
    "TaskStart",
    "TaskExit",
    "TaskOOM",
    "TaskExecAdded",
    "TaskExecStarted",
    "TaskPaused",
    "TaskResumed",
    "TaskDelete",
    "Unknown",
];

/// `data` both as a whole `Forward` request (envelope and event as the shim sends them) and
/// as one event payload whose topic is chosen by the first byte.
pub fn event_payload(data: &[u8]) {
    if let Ok(req) = ForwardRequest::parse_from_bytes(data) {
        if let Some(any) = req.envelope.as_ref().and_then(|e| e.event.as_ref()) {
            let _ = crate::events::decode(any);
        }
    }
    if let Some((first, rest)) = data.split_first() {
        let mut any = Any::new();
        any.type_url = format!(
            "containerd.events.{}",
            TOPICS[usize::from(*first) % TOPICS.len()]
        );
        any.value = rest.to_vec();
        let _ = crate::events::decode(&any);
    }
}
