//! The durable event history: an append-only log of events under `<root>/events/`, so that
//! `/events?since=` answers across restarts of plugind.
//!
//! Layout: segment files `<root>/events/<first seq, 16 hex digits>.log`, oldest first. A
//! segment is a sequence of records `[payload length: u32 LE][crc32 of payload: u32 LE]
//! [payload: one event as JSON]`. A segment is closed (synced) when the next record would
//! make it larger than an eighth of `max_bytes`; then the oldest segments are deleted while the
//! total is above `max_bytes` or their newest event is older than `max_age` (the active
//! segment is never deleted; reads also skip events older than `max_age`).
//!
//! Crash safety: records only ever go at the end of the active segment. A crash can leave a
//! torn or never-written tail; at open the active segment is truncated to its last whole
//! record whose checksum matches. A damaged record in an older segment ends the reading of
//! that segment (logged), nothing else. Opening reads only the active segment (older ones are
//! known by their names, sizes and modification times), so a start does not pay for the
//! whole history.
//!
//! fsync policy: events are history, not state (no decision of plugind depends on them), so
//! records are written to the file at once (a `kill -9` loses nothing: the page cache keeps
//! them) and `fdatasync`ed at most once a second, when a segment is closed and at shutdown.
//! A power cut can lose the last second of history, never corrupt what came before.
//!
//! Writes happen on a dedicated thread fed by a bounded channel, so publishing an event never
//! waits for the disk; when the channel is full (the disk stalls), the event stays in the
//! in-memory history only and a warning says so.

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::{mpsc, Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{EventType, PluginEvent};

/// Size and age bounds of the durable history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalConfig {
    /// The most bytes of history kept (all segments together, give or take one segment).
    pub max_bytes: u64,
    /// Events older than this are dropped.
    pub max_age: Duration,
}

impl JournalConfig {
    /// 32 MiB and 7 days: about 150,000 events, far more than Docker's 256, in little space.
    pub const DEFAULT: JournalConfig = JournalConfig {
        max_bytes: 32 << 20,
        max_age: Duration::from_secs(7 * 24 * 3600),
    };

    fn segment_bytes(&self) -> u64 {
        (self.max_bytes / 8).max(1)
    }
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Records larger than this are taken for damage (an event is a few hundred bytes).
const MAX_RECORD: u32 = 1 << 20;
/// Events waiting for the writer thread.
const CHANNEL_CAPACITY: usize = 16 * 1024;
/// The most a reader waits for the writer to catch up with what it published.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);
/// How often unsynced writes are flushed to disk.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// How often the age bound is applied while the log is idle.
const AGE_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// One event as stored on disk.
#[derive(Debug, Serialize, Deserialize)]
struct DiskEvent {
    seq: u64,
    #[serde(rename = "type")]
    r#type: String,
    action: String,
    id: String,
    attributes: BTreeMap<String, String>,
    #[serde(rename = "timeNano")]
    time_nano: i64,
}

impl DiskEvent {
    fn from_event(seq: u64, e: &PluginEvent) -> Self {
        DiskEvent {
            seq,
            r#type: e.r#type.as_str().to_owned(),
            action: e.action.clone(),
            id: e.id.clone(),
            attributes: e.attributes.clone(),
            time_nano: i64::try_from(e.time_nano).unwrap_or(i64::MAX),
        }
    }

    fn into_event(self) -> Option<(u64, PluginEvent)> {
        let r#type = EventType::parse(&self.r#type)?;
        Some((
            self.seq,
            PluginEvent {
                r#type,
                action: self.action,
                id: self.id,
                attributes: self.attributes,
                time_nano: i128::from(self.time_nano),
            },
        ))
    }
}

/// Frames one event as a record.
fn encode(seq: u64, e: &PluginEvent, out: &mut Vec<u8>) {
    let payload = serde_json::to_vec(&DiskEvent::from_event(seq, e)).unwrap_or_default();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// The whole records at the start of `bytes`: the events and the length they cover. Parsing
/// stops at the first torn or damaged record.
fn decode_all(bytes: &[u8]) -> (Vec<(u64, PluginEvent)>, usize) {
    let mut events = Vec::new();
    let mut at = 0usize;
    while bytes.len() - at >= 8 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap_or_default());
        if len > MAX_RECORD || bytes.len() - at - 8 < len as usize {
            break;
        }
        let payload = &bytes[at + 8..at + 8 + len as usize];
        if crc32fast::hash(payload) != crc {
            break;
        }
        match serde_json::from_slice::<DiskEvent>(payload) {
            Ok(d) => {
                // A type this version does not know is skipped, not taken for damage.
                if let Some(e) = d.into_event() {
                    events.push(e);
                }
            }
            Err(_) => break,
        }
        at += 8 + len as usize;
    }
    (events, at)
}

/// What is known of one segment file.
#[derive(Debug, Clone)]
struct Segment {
    path: PathBuf,
    first_seq: u64,
    bytes: u64,
    /// The newest event's time (0 when empty).
    last_time: i128,
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:016x}.log")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".log")?;
    (hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// Errors opening the log (writing errors are logged, not returned: history is best effort).
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file or directory of the log could not be read or written.
    #[error("event log {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The directory could not be created durably.
    #[error(transparent)]
    Sys(#[from] plugind_sys::SysError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// State shared by the writer thread and the readers.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    config: JournalConfig,
    /// Oldest first; the last one is the active segment.
    segments: Mutex<Vec<Segment>>,
    /// Every event with a sequence number below this one was handled by the writer (written,
    /// or failed and logged).
    handled: Mutex<u64>,
    handled_cv: Condvar,
}

/// What the writer thread is sent. The event is boxed: the channel's slots are allocated up
/// front and each becomes resident once used, so an inline event (~200 bytes) made its
/// 16,384 slots ~3 MiB of the daemon's idle memory; boxed, a slot is a pointer.
enum Msg {
    Event(u64, Box<PluginEvent>),
    Sync(mpsc::SyncSender<()>),
}

/// The durable event log: [`Journal::append`] from any thread, [`Journal::read`] on a
/// blocking thread.
#[derive(Debug)]
pub struct Journal {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::SyncSender<Msg>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    next_seq: u64,
    /// One past the newest sequence number appended: what a reader may wait for.
    appended: std::sync::atomic::AtomicU64,
}

impl Journal {
    /// Opens (creating) the log in `dir`: repairs a torn tail, applies the bounds, and starts
    /// the writer thread. Blocking.
    pub fn open(dir: &Path, config: JournalConfig) -> Result<Journal, JournalError> {
        plugind_sys::fs::create_dir_durable(dir, 0o700)?;
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            if let Some(seq) = name.to_str().and_then(parse_segment_name) {
                names.push((seq, entry.path()));
            }
        }
        names.sort();
        let mut segments = Vec::with_capacity(names.len());
        let mut next_seq = 0u64;
        let count = names.len();
        for (i, (first_seq, path)) in names.into_iter().enumerate() {
            if i + 1 < count {
                // A closed segment is never written again: its size and modification time
                // (never earlier than its newest event's time) are all the bounds and `since`
                // need, so a start does not read the whole history.
                let md = fs::metadata(&path).map_err(io_err(&path))?;
                let mtime = md
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(i128::MAX, |d| d.as_nanos() as i128);
                segments.push(Segment {
                    path,
                    first_seq,
                    bytes: md.len(),
                    last_time: mtime,
                });
                continue;
            }
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            let (events, good) = decode_all(&bytes);
            if good < bytes.len() {
                // The active segment: cut the torn tail so new records follow whole ones.
                tracing::warn!(path = %path.display(), kept = good, dropped = bytes.len() - good,
                    "event log: torn tail repaired");
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len(good as u64).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
            }
            if let Some((seq, _)) = events.last() {
                next_seq = next_seq.max(seq + 1);
            }
            next_seq = next_seq.max(first_seq);
            segments.push(Segment {
                path,
                first_seq,
                bytes: good as u64,
                last_time: events.iter().map(|(_, e)| e.time_nano).max().unwrap_or(0),
            });
        }
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            config,
            segments: Mutex::new(segments),
            handled: Mutex::new(next_seq),
            handled_cv: Condvar::new(),
        });
        let mut writer = Writer {
            shared: shared.clone(),
            file: None,
            dirty: false,
            last_sync: Instant::now(),
            failing: false,
        };
        writer.enforce_bounds(super::now_nanos());
        let (tx, rx) = mpsc::sync_channel(CHANNEL_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("event-log".to_owned())
            .spawn(move || writer.run(&rx))
            .map_err(io_err(dir))?;
        Ok(Journal {
            shared,
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            next_seq,
            appended: std::sync::atomic::AtomicU64::new(next_seq),
        })
    }

    /// The sequence number the next event must carry (one past the newest stored).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Hands an event to the writer thread; never waits. Sequence numbers must grow.
    pub fn append(&self, seq: u64, event: PluginEvent) {
        let tx = plugind_sys::sync::lock(&self.tx);
        let Some(tx) = tx.as_ref() else { return };
        self.appended
            .fetch_max(seq + 1, std::sync::atomic::Ordering::SeqCst);
        match tx.try_send(Msg::Event(seq, Box::new(event))) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(_)) => {
                tracing::warn!(seq, "event log: writer behind; event kept in memory only");
                // Readers must not wait for it.
                self.shared.mark_handled(seq + 1);
            }
            Err(mpsc::TrySendError::Disconnected(_)) => self.shared.mark_handled(seq + 1),
        }
    }

    /// Waits until everything appended so far is written and synced (shutdown, tests).
    pub fn sync(&self) {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        let sent = plugind_sys::sync::lock(&self.tx)
            .as_ref()
            .is_some_and(|tx| tx.send(Msg::Sync(ack_tx)).is_ok());
        if sent {
            let _ = ack_rx.recv_timeout(Duration::from_secs(10));
        }
    }

    /// The stored events with a sequence number below `before_seq` and a time at or after
    /// `since_nano`, oldest first, within the age bound. Waits (briefly) for the writer to
    /// have handled every event below `before_seq`. Blocking.
    pub fn read(&self, since_nano: Option<i128>, before_seq: u64) -> Vec<PluginEvent> {
        let appended = self.appended.load(std::sync::atomic::Ordering::SeqCst);
        self.shared.wait_handled(before_seq.min(appended));
        let since = since_nano.unwrap_or(i128::MIN).max(self.oldest_kept());
        let segments = plugind_sys::sync::lock(&self.shared.segments).clone();
        let mut out = Vec::new();
        for seg in segments {
            if seg.first_seq >= before_seq || seg.bytes == 0 || seg.last_time < since {
                continue;
            }
            let bytes = match read_prefix(&seg.path, seg.bytes) {
                Ok(b) => b,
                // Deleted by the bounds meanwhile: its events are gone.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::warn!(path = %seg.path.display(), error = %e, "event log: cannot read segment");
                    continue;
                }
            };
            let (events, good) = decode_all(&bytes);
            if good < bytes.len() {
                tracing::warn!(path = %seg.path.display(), at = good,
                    "event log: damaged record; the rest of this segment is skipped");
            }
            out.extend(
                events
                    .into_iter()
                    .filter(|(seq, e)| *seq < before_seq && e.time_nano >= since)
                    .map(|(_, e)| e),
            );
        }
        out
    }

    /// Stops the writer thread after it wrote and synced what it was given.
    pub fn close(&self) {
        plugind_sys::sync::lock(&self.tx).take();
        if let Some(t) = plugind_sys::sync::lock(&self.thread).take() {
            let _ = t.join();
        }
    }

    /// The time (ns since the epoch) before which events are out of the age bound.
    pub fn oldest_kept(&self) -> i128 {
        super::now_nanos() - self.shared.config.max_age.as_nanos() as i128
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

/// At most `len` bytes from the start of `path` (the writer may be appending after them).
fn read_prefix(path: &Path, len: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)?.take(len).read_to_end(&mut buf)?;
    Ok(buf)
}

impl Shared {
    fn mark_handled(&self, upto: u64) {
        let mut h = plugind_sys::sync::lock(&self.handled);
        if *h < upto {
            *h = upto;
            self.handled_cv.notify_all();
        }
    }

    fn wait_handled(&self, upto: u64) {
        let deadline = Instant::now() + CATCH_UP_WAIT;
        let mut h = plugind_sys::sync::lock(&self.handled);
        while *h < upto {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    waited_for = upto,
                    handled = *h,
                    "event log: writer behind; answering without the newest stored events"
                );
                return;
            }
            h = self
                .handled_cv
                .wait_timeout(h, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

/// The writer thread's state.
struct Writer {
    shared: Arc<Shared>,
    /// The active segment, opened for appending at the first write.
    file: Option<(File, PathBuf)>,
    dirty: bool,
    last_sync: Instant,
    /// Set after a write error, so a full disk logs once, not once per event.
    failing: bool,
}

impl Writer {
    fn run(&mut self, rx: &mpsc::Receiver<Msg>) {
        let mut last_age_check = Instant::now();
        loop {
            match rx.recv_timeout(SYNC_INTERVAL) {
                Ok(Msg::Event(seq, e)) => {
                    let mut batch = vec![(seq, *e)];
                    let mut syncs = Vec::new();
                    while batch.len() < 1024 {
                        match rx.try_recv() {
                            Ok(Msg::Event(seq, e)) => batch.push((seq, *e)),
                            Ok(Msg::Sync(ack)) => {
                                syncs.push(ack);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.write_batch(&batch);
                    if !syncs.is_empty() || self.last_sync.elapsed() >= SYNC_INTERVAL {
                        self.sync();
                    }
                    for ack in syncs {
                        let _ = ack.send(());
                    }
                }
                Ok(Msg::Sync(ack)) => {
                    self.sync();
                    let _ = ack.send(());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => self.sync(),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.sync();
                    return;
                }
            }
            if last_age_check.elapsed() >= AGE_CHECK_INTERVAL {
                last_age_check = Instant::now();
                self.enforce_bounds(super::now_nanos());
            }
        }
    }

    fn sync(&mut self) {
        if self.dirty {
            if let Some((f, path)) = &self.file {
                if let Err(e) = f.sync_data() {
                    tracing::warn!(path = %path.display(), error = %e, "event log: fdatasync failed");
                }
            }
            self.dirty = false;
        }
        self.last_sync = Instant::now();
    }

    fn write_batch(&mut self, batch: &[(u64, PluginEvent)]) {
        let segment_bytes = self.shared.config.segment_bytes();
        let mut buf = Vec::new();
        let mut buf_time = 0i128;
        for (seq, e) in batch {
            let before = buf.len();
            encode(*seq, e, &mut buf);
            let rec_len = (buf.len() - before) as u64;
            let active_bytes = plugind_sys::sync::lock(&self.shared.segments)
                .last()
                .map(|s| s.bytes);
            let full = match active_bytes {
                None => true,
                // A record larger than a segment still goes alone into an empty one.
                Some(b) => b + before as u64 > 0 && b + before as u64 + rec_len > segment_bytes,
            };
            if full {
                // Flush what precedes this record into the current segment, then rotate.
                let rest = buf.split_off(before);
                self.flush(&buf, buf_time);
                buf = rest;
                self.rotate(*seq);
                buf_time = 0;
            }
            buf_time = buf_time.max(e.time_nano);
        }
        self.flush(&buf, buf_time);
        if let Some((seq, _)) = batch.last() {
            self.shared.mark_handled(seq + 1);
        }
    }

    /// Appends `buf` to the active segment.
    fn flush(&mut self, buf: &[u8], last_time: i128) {
        if buf.is_empty() {
            return;
        }
        let result = self.active_file().and_then(|(f, _)| f.write_all(buf));
        match result {
            Ok(()) => {
                self.failing = false;
                self.dirty = true;
                let mut segments = plugind_sys::sync::lock(&self.shared.segments);
                if let Some(s) = segments.last_mut() {
                    s.bytes += buf.len() as u64;
                    s.last_time = s.last_time.max(last_time);
                }
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(dir = %self.shared.dir.display(), error = %e,
                        "event log: write failed; events are kept in memory only until it works again");
                }
                self.failing = true;
                // A partial write would leave a torn record before later ones: cut it off.
                self.truncate_to_known();
            }
        }
    }

    fn truncate_to_known(&mut self) {
        let known = plugind_sys::sync::lock(&self.shared.segments)
            .last()
            .map_or(0, |s| s.bytes);
        if let Some((f, _)) = &self.file {
            let _ = f.set_len(known);
        }
    }

    fn active_file(&mut self) -> std::io::Result<&mut (File, PathBuf)> {
        if self.file.is_none() {
            let path = plugind_sys::sync::lock(&self.shared.segments)
                .last()
                .map(|s| s.path.clone())
                .ok_or_else(|| std::io::Error::other("no active segment"))?;
            let f = OpenOptions::new().append(true).open(&path)?;
            self.file = Some((f, path));
        }
        Ok(self.file.as_mut().expect("just opened"))
    }

    /// Closes the active segment (synced) and starts one whose first record is `first_seq`.
    fn rotate(&mut self, first_seq: u64) {
        self.sync();
        self.file = None;
        let path = self.shared.dir.join(segment_name(first_seq));
        let created = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .and_then(|f| {
                plugind_sys::fs::fsync_dir(&self.shared.dir).map_err(std::io::Error::other)?;
                Ok(f)
            });
        match created {
            Ok(f) => {
                self.file = Some((f, path.clone()));
                plugind_sys::sync::lock(&self.shared.segments).push(Segment {
                    path,
                    first_seq,
                    bytes: 0,
                    last_time: 0,
                });
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(path = %path.display(), error = %e, "event log: cannot start a segment");
                }
                self.failing = true;
            }
        }
        self.enforce_bounds(super::now_nanos());
    }

    /// Deletes the oldest closed segments while the total is over `max_bytes` or their newest
    /// event is older than `max_age`.
    fn enforce_bounds(&mut self, now: i128) {
        let cutoff = now - self.shared.config.max_age.as_nanos() as i128;
        let mut removed = false;
        loop {
            let victim = {
                let mut segments = plugind_sys::sync::lock(&self.shared.segments);
                let total: u64 = segments.iter().map(|s| s.bytes).sum();
                match segments.first() {
                    Some(first)
                        if segments.len() > 1
                            && (total > self.shared.config.max_bytes
                                || first.last_time < cutoff) =>
                    {
                        Some(segments.remove(0))
                    }
                    _ => None,
                }
            };
            let Some(victim) = victim else { break };
            match fs::remove_file(&victim.path) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %victim.path.display(), error = %e, "event log: cannot delete an old segment")
                }
            }
        }
        if removed {
            let _ = plugind_sys::fs::fsync_dir(&self.shared.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugind_types::PluginId;

    fn event(n: u8, time_nano: i128) -> PluginEvent {
        let mut e = PluginEvent::now("create", &PluginId::from_bytes([n; 32]), "p");
        e.time_nano = time_nano;
        e
    }

    fn now() -> i128 {
        crate::events::now_nanos()
    }

    fn ids(events: &[PluginEvent]) -> Vec<String> {
        events.iter().map(|e| e.id[..2].to_owned()).collect()
    }

    #[test]
    fn events_survive_reopen_and_sequence_continues() {
        let dir = tempfile::tempdir().unwrap();
        let log = Journal::open(dir.path(), JournalConfig::DEFAULT).unwrap();
        assert_eq!(log.next_seq(), 0);
        for n in 0..3u8 {
            log.append(u64::from(n), event(n + 1, now()));
        }
        log.close();
        let log = Journal::open(dir.path(), JournalConfig::DEFAULT).unwrap();
        assert_eq!(log.next_seq(), 3);
        assert_eq!(ids(&log.read(None, 3)), ["01", "02", "03"]);
        // `before_seq` cuts what the in-memory history already holds.
        assert_eq!(ids(&log.read(None, 2)), ["01", "02"]);
    }

    #[test]
    fn torn_tail_is_truncated_to_the_last_whole_record() {
        let dir = tempfile::tempdir().unwrap();
        let log = Journal::open(dir.path(), JournalConfig::DEFAULT).unwrap();
        log.append(0, event(1, now()));
        log.append(1, event(2, now()));
        log.close();
        let seg = dir.path().join(segment_name(0));
        let whole = fs::read(&seg).unwrap();
        // A crash in the middle of the second record, and garbage after a torn length.
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(whole.len() as u64 - 5).unwrap();
        drop(f);
        let log = Journal::open(dir.path(), JournalConfig::DEFAULT).unwrap();
        assert_eq!(ids(&log.read(None, u64::MAX)), ["01"]);
        let first_len = fs::metadata(&seg).unwrap().len();
        assert!(first_len < whole.len() as u64 - 5, "tail cut at open");
        // New records follow the whole one and are readable after another reopen.
        log.append(log.next_seq(), event(3, now()));
        log.close();
        let log = Journal::open(dir.path(), JournalConfig::DEFAULT).unwrap();
        assert_eq!(ids(&log.read(None, u64::MAX)), ["01", "03"]);
    }

    #[test]
    fn a_flipped_byte_is_caught_by_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let log = Journal::open(dir.path(), JournalConfig::DEFAULT).unwrap();
        log.append(0, event(1, now()));
        log.append(1, event(2, now()));
        log.close();
        let seg = dir.path().join(segment_name(0));
        let mut bytes = fs::read(&seg).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x20;
        fs::write(&seg, &bytes).unwrap();
        let log = Journal::open(dir.path(), JournalConfig::DEFAULT).unwrap();
        assert_eq!(ids(&log.read(None, u64::MAX)), ["01"]);
    }

    #[test]
    fn rotation_keeps_the_total_under_the_size_bound() {
        let dir = tempfile::tempdir().unwrap();
        let config = JournalConfig {
            max_bytes: 4096,
            max_age: Duration::from_secs(3600),
        };
        let log = Journal::open(dir.path(), config).unwrap();
        for n in 0..200u64 {
            log.append(n, event((n % 250) as u8, now()));
        }
        log.sync();
        let files: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert!(files.len() > 2, "rotated into several segments: {files:?}");
        let total: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
        let segment = config.segment_bytes();
        assert!(
            total <= config.max_bytes + segment,
            "total {total} over the bound: {files:?}"
        );
        let kept = log.read(None, u64::MAX);
        // The newest events are kept, the oldest dropped, in order.
        assert!(kept.len() < 200 && !kept.is_empty());
        assert_eq!(kept.last().unwrap().id, event(199, 0).id);
        log.close();
        let log = Journal::open(dir.path(), config).unwrap();
        assert_eq!(log.next_seq(), 200);
    }

    #[test]
    fn events_older_than_the_age_bound_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let config = JournalConfig {
            max_bytes: 1024,
            max_age: Duration::from_secs(3600),
        };
        let log = Journal::open(dir.path(), config).unwrap();
        let old = now() - 2 * 3600 * 1_000_000_000;
        // Old events fill segments, then recent ones start new segments.
        for n in 0..20u64 {
            log.append(n, event(1, old));
        }
        for n in 20..22u64 {
            log.append(n, event(2, now()));
        }
        log.sync();
        // Reads never return the old ones, whether or not their segment is gone yet.
        let kept = log.read(None, u64::MAX);
        assert_eq!(ids(&kept), ["02", "02"]);
        log.close();
        // At open, segments whose newest event is too old are deleted.
        let log = Journal::open(dir.path(), config).unwrap();
        let segments = plugind_sys::sync::lock(&log.shared.segments).clone();
        assert!(segments.iter().all(|s| s.last_time > old), "{segments:?}");
        assert_eq!(log.next_seq(), 22);
    }

    #[test]
    fn since_selects_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let log = Journal::open(dir.path(), JournalConfig::DEFAULT).unwrap();
        let t = now();
        log.append(0, event(1, t - 10));
        log.append(1, event(2, t));
        assert_eq!(ids(&log.read(Some(t), 2)), ["02"]);
    }
}
