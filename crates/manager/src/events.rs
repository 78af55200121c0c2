//! Plugin events: an in-process broadcast with a bounded history, so that a subscriber can ask
//! for the events since a time and then follow new ones without a gap or a duplicate.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use plugind_types::PluginId;
use tokio::sync::broadcast;

/// One plugin event, as Docker's `/events` reports it (type `plugin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginEvent {
    /// `create`, `enable`, `disable`, `remove`, `restart`, `failed`, ...
    pub action: String,
    /// The plugin's id.
    pub id: PluginId,
    /// Attributes; always holds `name`.
    pub attributes: BTreeMap<String, String>,
    /// Nanoseconds since the Unix epoch.
    pub time_nano: i128,
}

impl PluginEvent {
    /// An event stamped now.
    pub fn now(action: &str, id: &PluginId, name: &str) -> Self {
        let time_nano = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        PluginEvent {
            action: action.to_owned(),
            id: id.clone(),
            attributes: BTreeMap::from([("name".to_owned(), name.to_owned())]),
            time_nano,
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
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if history.len() == self.capacity {
            history.pop_front();
        }
        history.push_back(event.clone());
        // No receivers is fine: the event stays in the history.
        let _ = self.sender.send(event);
    }

    /// The kept events that pass `keep`, and a receiver for every event published after them.
    pub fn subscribe_where(&self, keep: impl Fn(&T) -> bool) -> (Vec<T>, broadcast::Receiver<T>) {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
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
            [id(2), id(3), id(4)]
        );
        hub.publish(PluginEvent::now("enable", &id(9), "p"));
        let live = rx.recv().await.unwrap();
        assert_eq!((live.action.as_str(), live.id), ("enable", id(9)));
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
}
