//! The ttrpc events service the shims publish to, and decoding of its envelopes.
//!
//! The handler only decodes and enqueues (the shim gives each Forward 5 s); the
//! [`EventHandler`](crate::EventHandler) runs later inside a queue job keyed by task id.

use std::{
    sync::Weak,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use containerd_shim_protos::{
    events::task::{TaskCreate, TaskDelete, TaskExit, TaskOOM, TaskStart},
    protobuf::{
        well_known_types::{any::Any, empty::Empty, timestamp::Timestamp},
        Message,
    },
    shim::events::ForwardRequest,
    shim_async::Events,
    ttrpc::{self, r#async::TtrpcContext},
};

use crate::{shim::Inner, types::TaskEvent, ExitInfo};

/// Converts a protobuf timestamp; Go's zero time (and anything before 1970) means "unset", and
/// so does a time the platform cannot represent (`SystemTime + Duration` would panic on it:
/// found by the `shim_event` fuzz target).
pub(crate) fn time_of(ts: Option<&Timestamp>) -> Option<SystemTime> {
    let ts = ts?;
    let secs = u64::try_from(ts.seconds).ok().filter(|s| *s > 0)?;
    let nanos = u32::try_from(ts.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .unwrap_or(0);
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

fn parse<M: Message>(any: &Any) -> Option<M> {
    M::parse_from_bytes(&any.value).ok()
}

/// Decodes one event payload (type URL `containerd.events.<Type>`) into a [`TaskEvent`].
///
/// Returns `None` for topics plugind does not use (exec and pause events: the executor starts
/// no exec process and pauses nothing) and for undecodable payloads.
pub(crate) fn decode(any: &Any) -> Option<TaskEvent> {
    let kind = any
        .type_url
        .rsplit('/')
        .next()?
        .strip_prefix("containerd.events.")?;
    let ev = match kind {
        "TaskCreate" => {
            let e: TaskCreate = parse(any)?;
            TaskEvent::Created {
                id: e.container_id,
                pid: e.pid,
            }
        }
        "TaskStart" => {
            let e: TaskStart = parse(any)?;
            TaskEvent::Started {
                id: e.container_id,
                pid: e.pid,
            }
        }
        "TaskExit" => {
            let e: TaskExit = parse(any)?;
            // For init the shim puts the container id in `id`; for an exec, the exec id.
            let exec_id = (!e.id.is_empty() && e.id != e.container_id).then_some(e.id);
            TaskEvent::Exited {
                id: e.container_id,
                exec_id,
                pid: e.pid,
                exit: ExitInfo {
                    status: e.exit_status,
                    exited_at: time_of(e.exited_at.as_ref()),
                    oom_killed: false,
                },
            }
        }
        "TaskOOM" => TaskEvent::Oom {
            id: parse::<TaskOOM>(any)?.container_id,
        },
        "TaskDelete" => {
            let e: TaskDelete = parse(any)?;
            let exec_id = (!e.id.is_empty() && e.id != e.container_id).then_some(e.id);
            TaskEvent::Deleted {
                id: e.container_id,
                exec_id,
                pid: e.pid,
                exit_status: e.exit_status,
            }
        }
        _ => return None,
    };
    Some(ev)
}

/// The `containerd.services.events.ttrpc.v1.Events` service.
pub(crate) struct EventsService {
    /// Weak: the executor owns the server that owns this service.
    pub(crate) inner: Weak<Inner>,
    pub(crate) namespace: String,
}

#[async_trait]
impl Events for EventsService {
    async fn forward(&self, _ctx: &TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
        let Some(env) = req.envelope.into_option() else {
            return Ok(Empty::new());
        };
        if env.namespace != self.namespace {
            tracing::debug!(namespace = %env.namespace, topic = %env.topic, "event of another namespace ignored");
            return Ok(Empty::new());
        }
        let Some(any) = env.event.as_ref() else {
            return Ok(Empty::new());
        };
        let Some(event) = decode(any) else {
            tracing::debug!(topic = %env.topic, type_url = %any.type_url, "event ignored");
            return Ok(Empty::new());
        };
        if let Some(inner) = self.inner.upgrade() {
            inner.publish(event).await;
        }
        Ok(Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_of<M: Message>(name: &str, m: &M) -> Any {
        let mut a = Any::new();
        a.type_url = format!("containerd.events.{name}");
        a.value = m.write_to_bytes().expect("encode");
        a
    }

    #[test]
    fn unrepresentable_times_are_unset_not_a_panic() {
        let ts = |seconds: i64, nanos: i32| {
            let mut t = Timestamp::new();
            t.seconds = seconds;
            t.nanos = nanos;
            t
        };
        let max = UNIX_EPOCH.checked_add(Duration::from_secs(i64::MAX.unsigned_abs()));
        assert_eq!(time_of(Some(&ts(i64::MAX, 1_999_999_999))), max);
        assert_eq!(
            time_of(Some(&ts(i64::MAX, 999_999_999))),
            max.and_then(|m| m.checked_add(Duration::from_nanos(999_999_999)))
        );
        assert_eq!(
            time_of(Some(&ts(5, 2_000_000_000))),
            Some(UNIX_EPOCH + Duration::from_secs(5)),
            "out-of-range nanos are dropped"
        );
        assert_eq!(
            time_of(Some(&ts(5, 7))),
            Some(UNIX_EPOCH + Duration::new(5, 7))
        );
    }

    #[test]
    fn decodes_exit_of_init_and_of_exec() {
        let mut e = TaskExit::new();
        e.container_id = "c1".into();
        e.id = "c1".into();
        e.pid = 42;
        e.exit_status = 137;
        let mut ts = Timestamp::new();
        ts.seconds = -62135596800;
        e.exited_at = Some(ts).into();
        let ev = decode(&any_of("TaskExit", &e)).expect("decoded");
        assert_eq!(
            ev,
            TaskEvent::Exited {
                id: "c1".into(),
                exec_id: None,
                pid: 42,
                exit: ExitInfo {
                    status: 137,
                    exited_at: None,
                    oom_killed: false
                }
            }
        );
        e.id = "x1".into();
        let Some(TaskEvent::Exited { exec_id, .. }) = decode(&any_of("TaskExit", &e)) else {
            panic!("not an exit")
        };
        assert_eq!(exec_id.as_deref(), Some("x1"));
    }

    #[test]
    fn decodes_other_topics_and_ignores_unknown() {
        let mut oom = TaskOOM::new();
        oom.container_id = "c2".into();
        assert_eq!(
            decode(&any_of("TaskOOM", &oom)),
            Some(TaskEvent::Oom { id: "c2".into() })
        );
        let mut st = containerd_shim_protos::events::task::TaskExecStarted::new();
        st.container_id = "c2".into();
        st.exec_id = "e".into();
        st.pid = 7;
        assert_eq!(decode(&any_of("TaskExecStarted", &st)), None);
        assert_eq!(decode(&any_of("TaskCheckpointed", &oom)), None);
        let mut bad = any_of("TaskStart", &oom);
        bad.value = vec![0xff, 0xff, 0xff];
        assert_eq!(decode(&bad), None);
        let mut ts = Timestamp::new();
        ts.seconds = 10;
        assert_eq!(
            time_of(Some(&ts)),
            Some(UNIX_EPOCH + Duration::from_secs(10))
        );
    }
}
