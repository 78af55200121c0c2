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
//! plugind adds `restart` and `failed` (supervision), named with the stored reference.

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
}

impl EventType {
    /// Docker's spelling: `plugin`, `volume`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Plugin => "plugin",
            EventType::Volume => "volume",
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

fn now_nanos() -> i128 {
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

    /// Whole seconds since the Unix epoch.
    pub fn time_secs(&self) -> i64 {
        (self.time_nano / 1_000_000_000) as i64
    }
}

/// Publishes events to live subscribers and keeps the last `capacity` for late ones.
/// Generic so that a consumer (the API) can keep its own converted copy the same way.
#[derive(Debug)]
pub struct EventHub<T = PluginEvent> {
    // One std mutex guards history *and* publication, so a subscriber's snapshot and its
    // receiver meet exactly: nothing published in between is lost or seen twice.
    history: Mutex<VecDeque<T>>,
    sender: broadcast::Sender<T>,
    capacity: usize,
}

impl<T: Clone> EventHub<T> {
    /// A hub keeping `capacity` past events (and buffering as many for slow subscribers).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let (sender, _) = broadcast::channel(capacity);
        EventHub {
            history: Mutex::new(VecDeque::with_capacity(capacity)),
            sender,
            capacity,
        }
    }

    /// Records and broadcasts an event.
    pub fn publish(&self, event: T) {
        let mut history = plugind_sys::sync::lock(&self.history);
        if history.len() == self.capacity {
            history.pop_front();
        }
        history.push_back(event.clone());
        // No receivers is fine: the event stays in the history.
        let _ = self.sender.send(event);
    }

    /// The kept events that pass `keep`, and a receiver for every event published after them.
    pub fn subscribe_where(&self, keep: impl Fn(&T) -> bool) -> (Vec<T>, broadcast::Receiver<T>) {
        let history = plugind_sys::sync::lock(&self.history);
        let past = history.iter().filter(|e| keep(e)).cloned().collect();
        (past, self.sender.subscribe())
    }
}

impl EventHub<PluginEvent> {
    /// The kept events at or after `since_nano` (all kept events when `None`), and a receiver
    /// for every event published after them.
    pub fn subscribe(
        &self,
        since_nano: Option<i128>,
    ) -> (Vec<PluginEvent>, broadcast::Receiver<PluginEvent>) {
        self.subscribe_where(|e| since_nano.is_none_or(|s| e.time_nano >= s))
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
