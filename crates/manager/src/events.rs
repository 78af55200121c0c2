//! Engine events: an in-process broadcast with a bounded history, so that a subscriber can ask
//! for the events since a time and then follow new ones without a gap or a duplicate.
//!
//! The hub carries the events of plugins (published by the manager) and of volumes (published
//! by the volume service through the same hub), so `/events` shows both in one order.
//!
//! Docker's rules for a plugin event's `Actor` (moby `plugin/backend_linux.go`,
//! `LogPluginEvent(id, name, action)`), which publishers follow:
//! - `create`: the plugin id, `name` = the stored reference with its tag (`vol:latest`);
//! - `enable`, `disable`, `remove`: the plugin id, `name` = the reference exactly as the client
//!   gave it (`vol`, `vol:latest`, an id prefix);
//! - `pull`: `Actor.ID` = the remote reference in familiar form; `name` = the local name with
//!   its tag for an install (`POST /plugins/pull`), the name as given in the URL for an upgrade;
//!   `docker plugin install` is that `pull` followed by the client's own `enable`;
//! - `set`, `push`, restore at start: no event.
//!
//! plugind adds `restart` and `failed` (supervision), named with the stored reference, and
//! `daemon` events of its own (`start`, `restore`, `reload`).
//!
//! With a [`journal::Journal`] attached ([`EventHub::with_journal`]) every event is also
//! written to the durable history under the root, and [`EventHub::subscribe_durable`] answers
//! from it across restarts.

pub mod journal;

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use plugind_types::PluginId;
use tokio::sync::broadcast;

/// What an event is about (Docker's `events.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// A plugin (`Actor.ID` is its id, or the remote reference for `pull`).
    Plugin,
    /// A volume (`Actor.ID` is its name).
    Volume,
    /// The daemon itself (`Actor.ID` is the engine id, `Attributes.name` the host name).
    Daemon,
}

impl EventType {
    /// Docker's spelling: `plugin`, `volume`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Plugin => "plugin",
            EventType::Volume => "volume",
            EventType::Daemon => "daemon",
        }
    }

    /// The type spelled `s` ([`EventType::as_str`]), if known.
    pub fn parse(s: &str) -> Option<EventType> {
        match s {
            "plugin" => Some(EventType::Plugin),
            "volume" => Some(EventType::Volume),
            "daemon" => Some(EventType::Daemon),
            _ => None,
        }
    }
}

/// One event, as Docker's `/events` reports it: a plugin event (`create`, `enable`, `disable`,
/// `remove`, and plugind's own `restart` and `failed`) or a volume event (`create`, `mount`,
/// `unmount`, `destroy`, `prune`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginEvent {
    /// `plugin` or `volume`.
    pub r#type: EventType,
    /// `create`, `enable`, `disable`, `remove`, `restart`, `failed`, `mount`, ...
    pub action: String,
    /// `Actor.ID`: the plugin's id, or the volume's name.
    pub id: String,
    /// `Actor.Attributes`; a plugin event always holds `name`, a volume event `driver`.
    pub attributes: BTreeMap<String, String>,
    /// Nanoseconds since the Unix epoch.
    pub time_nano: i128,
}

/// Another name for [`PluginEvent`], for code that handles both kinds.
pub type Event = PluginEvent;

pub(crate) fn now_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

impl PluginEvent {
    /// A plugin event stamped now; `name` becomes `Attributes.name` (moby's `LogPluginEvent`).
    pub fn now(action: &str, id: &PluginId, name: &str) -> Self {
        PluginEvent {
            r#type: EventType::Plugin,
            action: action.to_owned(),
            id: id.as_str().to_owned(),
            attributes: BTreeMap::from([("name".to_owned(), name.to_owned())]),
            time_nano: now_nanos(),
        }
    }

    /// A volume event stamped now (moby's `LogVolumeEvent`): `Actor.ID` is the volume's name.
    pub fn volume(action: &str, name: &str, attributes: BTreeMap<String, String>) -> Self {
        PluginEvent {
            r#type: EventType::Volume,
            action: action.to_owned(),
            id: name.to_owned(),
            attributes,
            time_nano: now_nanos(),
        }
    }

    /// A `daemon` event stamped now (dockerd's `LogDaemonEventWithAttributes`): `Actor.ID` is
    /// the engine id; the caller puts `name` (the host name) in `attributes`.
    pub fn daemon(action: &str, engine_id: &str, attributes: BTreeMap<String, String>) -> Self {
        PluginEvent {
            r#type: EventType::Daemon,
            action: action.to_owned(),
            id: engine_id.to_owned(),
            attributes,
            time_nano: now_nanos(),
        }
    }

    /// Whole seconds since the Unix epoch.
    pub fn time_secs(&self) -> i64 {
        (self.time_nano / 1_000_000_000) as i64
    }
}

/// Publishes events to live subscribers and keeps the last `capacity` for late ones; with a
/// journal, also every event to the durable history.
#[derive(Debug)]
pub struct EventHub {
    // One std mutex guards history *and* publication, so a subscriber's snapshot and its
    // receiver meet exactly: nothing published in between is lost or seen twice.
    history: Mutex<History>,
    sender: broadcast::Sender<PluginEvent>,
    capacity: usize,
    journal: Option<journal::Journal>,
}

/// The in-memory history: events with their sequence numbers, oldest first.
#[derive(Debug)]
struct History {
    events: VecDeque<(u64, PluginEvent)>,
    next_seq: u64,
}

impl EventHub {
    /// A hub keeping `capacity` past events in memory (and buffering as many for slow
    /// subscribers), with no durable history.
    pub fn new(capacity: usize) -> Self {
        Self::build(capacity, None)
    }

    /// A hub that also writes every event to `journal` and answers
    /// [`EventHub::subscribe_durable`] from it.
    pub fn with_journal(capacity: usize, journal: journal::Journal) -> Self {
        Self::build(capacity, Some(journal))
    }

    fn build(capacity: usize, journal: Option<journal::Journal>) -> Self {
        let capacity = capacity.max(1);
        let (sender, _) = broadcast::channel(capacity);
        EventHub {
            history: Mutex::new(History {
                events: VecDeque::with_capacity(capacity),
                next_seq: journal.as_ref().map_or(0, journal::Journal::next_seq),
            }),
            sender,
            capacity,
            journal,
        }
    }

    /// Records and broadcasts an event.
    pub fn publish(&self, event: PluginEvent) {
        let mut history = plugind_sys::sync::lock(&self.history);
        if history.events.len() == self.capacity {
            history.events.pop_front();
        }
        let seq = history.next_seq;
        history.next_seq += 1;
        history.events.push_back((seq, event.clone()));
        if let Some(journal) = &self.journal {
            // Under the lock, so the journal receives events in sequence order.
            journal.append(seq, event.clone());
        }
        // No receivers is fine: the event stays in the history.
        let _ = self.sender.send(event);
    }

    /// The kept (in-memory) events that pass `keep`, and a receiver for every event published
    /// after them.
    pub fn subscribe_where(
        &self,
        keep: impl Fn(&PluginEvent) -> bool,
    ) -> (Vec<PluginEvent>, broadcast::Receiver<PluginEvent>) {
        let history = plugind_sys::sync::lock(&self.history);
        let past = history
            .events
            .iter()
            .map(|(_, e)| e)
            .filter(|e| keep(e))
            .cloned()
            .collect();
        (past, self.sender.subscribe())
    }

    /// The kept (in-memory) events at or after `since_nano` (all kept events when `None`),
    /// and a receiver for every event published after them.
    pub fn subscribe(
        &self,
        since_nano: Option<i128>,
    ) -> (Vec<PluginEvent>, broadcast::Receiver<PluginEvent>) {
        self.subscribe_where(|e| since_nano.is_none_or(|s| e.time_nano >= s))
    }

    /// Like [`EventHub::subscribe`], with the durable history before the in-memory one: every
    /// stored event at or after `since_nano`, oldest first, then a receiver for every event
    /// published after them, without a gap or a duplicate. Blocking (reads the journal): call
    /// it on a blocking thread.
    pub fn subscribe_durable(
        &self,
        since_nano: Option<i128>,
    ) -> (Vec<PluginEvent>, broadcast::Receiver<PluginEvent>) {
        let (memory, first_seq, rx) = {
            let history = plugind_sys::sync::lock(&self.history);
            let memory: Vec<PluginEvent> = history
                .events
                .iter()
                .map(|(_, e)| e)
                .filter(|e| since_nano.is_none_or(|s| e.time_nano >= s))
                // The age bound holds for the in-memory part too.
                .filter(|e| {
                    self.journal
                        .as_ref()
                        .is_none_or(|j| e.time_nano >= j.oldest_kept())
                })
                .cloned()
                .collect();
            let first_seq = history
                .events
                .front()
                .map_or(history.next_seq, |(seq, _)| *seq);
            // The oldest in-memory event's time: when it is already after `since`, nothing
            // older can qualify (times grow with sequence numbers but for clock steps).
            let first_time = history.events.front().map(|(_, e)| e.time_nano);
            let need_disk = self.journal.is_some()
                && first_seq > 0
                && first_time.is_none_or(|t| since_nano.is_none_or(|s| t >= s));
            (
                memory,
                need_disk.then_some(first_seq),
                self.sender.subscribe(),
            )
        };
        let mut past = match (first_seq, &self.journal) {
            (Some(before), Some(journal)) => journal.read(since_nano, before),
            _ => Vec::new(),
        };
        past.extend(memory);
        (past, rx)
    }

    /// Waits until every event published so far is written to the journal and synced (at
    /// shutdown); returns at once without a journal.
    pub fn sync(&self) {
        if let Some(journal) = &self.journal {
            journal.sync();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> PluginId {
        PluginId::from_bytes([n; 32])
    }

    #[tokio::test]
    async fn history_then_live_without_gap_or_duplicate() {
        let hub = EventHub::new(3);
        for n in 0..5 {
            hub.publish(PluginEvent::now("create", &id(n), "p"));
        }
        let (past, mut rx) = hub.subscribe(None);
        assert_eq!(
            past.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
            [id(2), id(3), id(4)].map(|i| i.as_str().to_owned())
        );
        hub.publish(PluginEvent::now("enable", &id(9), "p"));
        let live = rx.recv().await.unwrap();
        assert_eq!(
            (live.action.as_str(), live.id.as_str()),
            ("enable", id(9).as_str())
        );
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn since_filters_by_time() {
        let hub = EventHub::new(10);
        let mut early = PluginEvent::now("create", &id(1), "a");
        early.time_nano = 1_000;
        hub.publish(early);
        hub.publish(PluginEvent::now("create", &id(2), "b"));
        let (past, _) = hub.subscribe(Some(2_000));
        assert_eq!(past.len(), 1);
        assert_eq!(past[0].attributes["name"], "b");
        assert!(past[0].time_secs() > 1_600_000_000);
    }

    #[tokio::test]
    async fn durable_history_spans_hubs_without_gap_or_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let open = || journal::Journal::open(dir.path(), journal::JournalConfig::DEFAULT).unwrap();
        // A first run: more events than the in-memory history keeps.
        let hub = EventHub::with_journal(2, open());
        for n in 0..4 {
            hub.publish(PluginEvent::now("create", &id(n), "p"));
        }
        hub.sync();
        drop(hub);
        // The next run: its own events in memory, the first run's on disk.
        let hub = EventHub::with_journal(2, open());
        for n in 4..7 {
            hub.publish(PluginEvent::now("enable", &id(n), "p"));
        }
        let (past, mut rx) = hub.subscribe_durable(None);
        assert_eq!(
            past.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
            (0..7)
                .map(|n| id(n).as_str().to_owned())
                .collect::<Vec<_>>()
        );
        hub.publish(PluginEvent::daemon("reload", "engine", BTreeMap::new()));
        assert_eq!(rx.recv().await.unwrap().r#type, EventType::Daemon);
        assert!(rx.try_recv().is_err());
        // `since` after the first run's events: only the second run's.
        let since = past[4].time_nano;
        let (past, _) = hub.subscribe_durable(Some(since));
        assert_eq!(past.len(), 4);
        assert_eq!(past[0].id, id(4).as_str());
    }

    #[test]
    fn the_age_bound_holds_for_events_still_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let bounds = journal::JournalConfig {
            max_bytes: 1 << 20,
            max_age: std::time::Duration::from_secs(3600),
        };
        let hub = EventHub::with_journal(8, journal::Journal::open(dir.path(), bounds).unwrap());
        let mut old = PluginEvent::now("create", &id(1), "old");
        old.time_nano -= 2 * 3600 * 1_000_000_000;
        hub.publish(old);
        hub.publish(PluginEvent::now("create", &id(2), "new"));
        let (past, _) = hub.subscribe_durable(None);
        assert_eq!(
            past.iter()
                .map(|e| e.attributes["name"].as_str())
                .collect::<Vec<_>>(),
            ["new"]
        );
    }

    #[test]
    fn volume_events_name_the_volume() {
        let e = PluginEvent::volume(
            "create",
            "v1",
            BTreeMap::from([("driver".to_owned(), "vol:latest".to_owned())]),
        );
        assert_eq!(e.r#type.as_str(), "volume");
        assert_eq!(
            (e.id.as_str(), e.attributes["driver"].as_str()),
            ("v1", "vol:latest")
        );
        assert_eq!(
            PluginEvent::now("enable", &id(1), "p").r#type,
            EventType::Plugin
        );
    }
}
