//! Task output: FIFO drains, the per-task rotated log file, and in-memory tails for errors.
//!
//! Every FIFO is opened read-write and non-blocking (as containerd does): the reader never sees
//! EOF when the writer goes away, never blocks on open, and a restarted executor can reopen the
//! same named FIFOs, which kept whatever was buffered. Each FIFO has a tokio task that reads it
//! continuously, so a plugin that writes a lot never blocks on a full pipe while plugind runs.
//!
//! A plugin's output is hostile too: the log file is private (0600) and size-bounded, its writes
//! run on the blocking pool (never on an async worker), the copy into plugind's own log is
//! rate-limited per stream (a line says how many were dropped), and tails are read from the end
//! of the file instead of reading it whole.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio::{net::unix::pipe, sync::watch, task::JoinHandle};

use crate::error::{ExecutorError, Result};

/// Lines kept in memory per stream for error messages.
const TAIL_LINES: usize = 20;
/// A line longer than this is cut and written in pieces, so memory stays bounded.
const MAX_LINE: usize = 16 * 1024;
/// Mode of task log files: plugin output may hold secrets.
const LOG_MODE: u32 = 0o600;
/// Lines of one stream copied into plugind's own log at once before the rate applies.
const TRACE_BURST: u32 = 200;
/// Lines per second of one stream copied into plugind's own log after the burst.
const TRACE_LINES_PER_SEC: u32 = 50;
/// Size of one read from a FIFO (reads loop until it is empty).
const READ_BUFFER: usize = 4 * 1024;
/// Block size of backward tail reads.
const TAIL_BLOCK: u64 = 64 * 1024;

/// Which stream a FIFO carries; decides the tracing level and the log-file tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
    /// The shim's own logrus output (`<bundle>/log`): debug level, not in the task log file.
    Shim,
}

impl Stream {
    fn tag(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Shim => "shim",
        }
    }
}

/// A size-bounded log file: `<path>` plus one rotated generation `<path>.1`.
#[derive(Debug)]
pub(crate) struct LogFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    limit: u64,
}

impl LogFile {
    /// Opens (appending) `path`; it rotates when it would grow past `limit` bytes.
    pub(crate) fn open(path: &Path, limit: u64) -> Result<LogFile> {
        let file = open_private_append(path).map_err(|e| ExecutorError::io("open log", path, e))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogFile {
            path: path.to_owned(),
            file: Some(file),
            size,
            limit,
        })
    }

    /// Appends one line; IO errors are logged, never returned: losing log lines must not stop the
    /// drain (that would block the plugin).
    pub(crate) fn write_line(&mut self, line: &str) {
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.limit {
            self.rotate();
        }
        if let Some(f) = self.file.as_mut() {
            if let Err(e) = f
                .write_all(line.as_bytes())
                .and_then(|()| f.write_all(b"\n"))
            {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot write task log");
            } else {
                self.size += len;
            }
        }
    }

    fn rotate(&mut self) {
        self.file = None;
        let old = rotated_path(&self.path);
        if let Err(e) = fs::rename(&self.path, &old) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot rotate task log");
        }
        match open_private_append(&self.path) {
            Ok(f) => {
                self.file = Some(f);
                self.size = 0;
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot reopen task log")
            }
        }
    }
}

/// Opens `path` for appending, creating it 0600; an existing file (from an older plugind) is
/// made 0600 too.
fn open_private_append(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(LOG_MODE)
        .open(path)?;
    if file.metadata()?.permissions().mode() & 0o777 != LOG_MODE {
        file.set_permissions(fs::Permissions::from_mode(LOG_MODE))?;
    }
    Ok(file)
}

/// Deletes a task's log file and its rotated generation (on plugin removal); missing files are
/// fine.
pub fn remove_log_files(path: &Path) -> std::io::Result<()> {
    for p in [path.to_owned(), rotated_path(path)] {
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Deletes the log files in `dir` (`<id>.log`, `<id>.log.1`) whose id `keep` refuses: the
/// output of plugins removed while plugind was down, or by a removal a crash cut short. Other
/// files are left alone. Returns what was deleted.
pub fn sweep_log_files(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(id) = name
            .strip_suffix(".log")
            .or_else(|| name.strip_suffix(".log.1"))
        else {
            continue;
        };
        if !keep(id) && fs::remove_file(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed
}

/// One line of a task log file: `<unix seconds>.<millis> <stdout|stderr> <text>`.
/// The executor writes this format; readers (the API's log route) parse it with
/// [`LogEntry::parse`] so that the format lives in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// When the line was read, unix nanoseconds (millisecond resolution).
    pub time_nano: i64,
    /// True for stderr, false for stdout.
    pub stderr: bool,
    /// The text without its newline.
    pub text: String,
}

impl LogEntry {
    /// Parses one log-file line; a line in another format becomes stdout text at time 0.
    pub fn parse(line: &str) -> LogEntry {
        let mut parts = line.splitn(3, ' ');
        let (stamp, stream, text) = (parts.next(), parts.next(), parts.next());
        let time_nano = stamp
            .and_then(|s| s.split_once('.'))
            .and_then(|(secs, millis)| {
                Some(
                    secs.parse::<i64>().ok()? * 1_000_000_000
                        + millis.parse::<i64>().ok()? * 1_000_000,
                )
            });
        match (time_nano, stream, text) {
            (Some(time_nano), Some(stream), Some(text)) => LogEntry {
                time_nano,
                stderr: stream == "stderr",
                text: text.to_owned(),
            },
            _ => LogEntry {
                time_nano: 0,
                stderr: false,
                text: line.to_owned(),
            },
        }
    }
}

/// `<path>.1`: the previous generation of a rotated log.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

/// The last `n` lines of a rotated log (`<path>.1` then `<path>`); missing files count as empty.
/// Reads backwards from the end in blocks: a tail of a few lines costs a few blocks, however
/// large the file.
pub(crate) fn read_tail(path: &Path, n: usize) -> Result<Vec<String>> {
    Ok(read_log_tail(path, Some(n))?.lines)
}

/// What [`read_log_tail`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogTail {
    /// The lines, oldest first, without their newlines.
    pub lines: Vec<String>,
    /// The size of the current generation when it was read: where following it continues.
    pub offset: u64,
}

/// The last `n` lines (all of them with `None`) of a rotated log, `<path>.1` then `<path>`,
/// read from the end of the files; missing files count as empty. Blocking: call it from the
/// blocking pool.
pub fn read_log_tail(path: &Path, n: Option<usize>) -> Result<LogTail> {
    let want = n.unwrap_or(usize::MAX);
    let (mut lines, offset) = tail_of_file(path, want)?;
    if lines.len() < want {
        let (mut older, _) = tail_of_file(&rotated_path(path), want - lines.len())?;
        older.append(&mut lines);
        lines = older;
    }
    Ok(LogTail { lines, offset })
}

/// The last `n` lines of one file and its size; a last line without its newline counts.
fn tail_of_file(path: &Path, n: usize) -> Result<(Vec<String>, u64)> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(ExecutorError::io("open log", path, e)),
    };
    let io = |e| ExecutorError::io("read log", path, e);
    let len = f.seek(SeekFrom::End(0)).map_err(io)?;
    if n == 0 {
        return Ok((Vec::new(), len));
    }
    // Read blocks backwards until the data holds `n` line ends before the last line's end.
    let mut start = len;
    let mut data: Vec<u8> = Vec::new();
    loop {
        let ends = data
            .iter()
            .take(data.len().saturating_sub(1))
            .filter(|&&b| b == b'\n')
            .count();
        if start == 0 || ends >= n {
            break;
        }
        let block = TAIL_BLOCK.min(start);
        start -= block;
        f.seek(SeekFrom::Start(start)).map_err(io)?;
        let mut chunk = vec![0u8; block as usize];
        f.read_exact(&mut chunk).map_err(io)?;
        chunk.append(&mut data);
        data = chunk;
    }
    let body = data.strip_suffix(b"\n").unwrap_or(&data);
    let mut lines: Vec<String> = body
        .rsplit(|&b| b == b'\n')
        .take(n)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    // The loop stopped at the file's start or with `n` whole lines after the first line end.
    lines.reverse();
    if data.is_empty() {
        lines.clear();
    }
    Ok((lines, len))
}

/// A task's log file, shared by the drains writing into it.
pub(crate) type SharedLog = Arc<Mutex<LogFile>>;

/// The last lines of one stream, kept for error messages.
pub(crate) type Tail = Arc<Mutex<VecDeque<String>>>;

/// Returns a copy of a tail's lines.
pub(crate) fn tail_lines(tail: &Tail) -> Vec<String> {
    tail.lock()
        .map(|t| t.iter().cloned().collect())
        .unwrap_or_default()
}

/// The drains of one task: stop them to flush what is buffered and end them.
#[derive(Debug)]
pub(crate) struct Drains {
    /// A watch rather than a `Notify`: a drain that has not run yet still sees the stop.
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

impl Default for Drains {
    fn default() -> Self {
        Drains {
            stop: watch::channel(false).0,
            handles: Vec::new(),
        }
    }
}

impl Drains {
    /// Opens `fifo` for reading and starts draining it into tracing and, unless it is the shim
    /// log, into `log`.
    pub(crate) fn add(
        &mut self,
        fifo: &Path,
        stream: Stream,
        task: &str,
        log: Option<SharedLog>,
        tail: Tail,
    ) -> Result<()> {
        // Read-write: never EOF, never blocks on open (shim-protocol.md gotcha 2).
        let rx = pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(fifo)
            .map_err(|e| ExecutorError::io("open fifo", fifo, e))?;
        let stop = self.stop.subscribe();
        let task = task.to_owned();
        self.handles
            .push(tokio::spawn(drain(rx, stream, task, log, tail, stop)));
        Ok(())
    }

    /// Reads what is still buffered in every FIFO, then ends the drains.
    pub(crate) async fn stop(&mut self) {
        self.stop.send_replace(true);
        for h in self.handles.drain(..) {
            let _ = h.await;
        }
    }
}

impl Drop for Drains {
    fn drop(&mut self) {
        for h in &self.handles {
            h.abort();
        }
    }
}

async fn drain(
    rx: pipe::Receiver,
    stream: Stream,
    task: String,
    log: Option<SharedLog>,
    tail: Tail,
    mut stop: watch::Receiver<bool>,
) {
    let mut sink = LineSink {
        stream,
        task,
        log,
        tail,
        partial: Vec::new(),
        pending: Vec::new(),
        trace_budget: TokenBucket::new(TRACE_BURST, TRACE_LINES_PER_SEC),
        traced: 0,
        last_report: None,
        reported_dropped: 0,
    };
    loop {
        if *stop.borrow_and_update() {
            // What is still buffered, then the end (an error here only ends it sooner).
            let _ = read_available(&rx, &mut sink).await;
            break;
        }
        tokio::select! {
            biased;
            // The buffer exists only while output is being read: a fleet's idle drains (two
            // per plugin) hold none.
            r = rx.readable() => match r {
                Ok(()) => match read_available(&rx, &mut sink).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        tracing::warn!(task = %sink.task, error = %e, "reading task output failed");
                        break;
                    }
                },
                Err(e) => {
                    tracing::warn!(task = %sink.task, error = %e, "reading task output failed");
                    break;
                }
            },
            // On stop (or a dropped sender), loop: the check above takes what is buffered.
            r = stop.changed() => if r.is_err() { break },
        }
    }
    sink.flush_partial();
    sink.report_dropped();
    sink.write_pending().await;
}

/// Reads what the FIFO holds now into `sink`, with a buffer that lives only for this call.
/// False at end of file (which a FIFO opened read-write never reaches).
async fn read_available(rx: &pipe::Receiver, sink: &mut LineSink) -> std::io::Result<bool> {
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        match rx.try_read(&mut buf) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                sink.push(&buf[..n]);
                sink.write_pending().await;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A token bucket over lines: `burst` at once, then `per_sec` a second.
#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    last: Option<Instant>,
    /// Lines refused since the last report.
    dropped: u64,
}

impl TokenBucket {
    fn new(burst: u32, per_sec: u32) -> Self {
        TokenBucket {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_sec: f64::from(per_sec),
            last: None,
            dropped: 0,
        }
    }

    /// Takes a token at `now`; counts the line as dropped when there is none.
    fn take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * self.per_sec;
            self.tokens = (self.tokens + refill).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// The count of dropped lines to report (and resets it).
    fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }
}

struct LineSink {
    stream: Stream,
    task: String,
    log: Option<SharedLog>,
    tail: Tail,
    partial: Vec<u8>,
    /// Log-file lines not yet written: written by [`LineSink::write_pending`] on the blocking
    /// pool, one batch per read.
    pending: Vec<String>,
    /// Limits the copy of this stream into plugind's own log.
    trace_budget: TokenBucket,
    /// Lines copied into plugind's own log (for tests).
    traced: u64,
    /// When dropped lines were last reported.
    last_report: Option<Instant>,
    /// Dropped lines reported so far (for tests).
    reported_dropped: u64,
}

impl LineSink {
    fn push(&mut self, mut data: &[u8]) {
        while let Some(pos) = data.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&data[..pos]);
            self.emit();
            data = &data[pos + 1..];
        }
        self.partial.extend_from_slice(data);
        if self.partial.len() >= MAX_LINE {
            self.emit();
        }
    }

    fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            self.emit();
        }
    }

    /// Writes the pending log-file lines on the blocking pool (the file write must not run on
    /// an async worker); waiting for it keeps the lines in order and pushes back on the plugin
    /// when the disk is slow.
    async fn write_pending(&mut self) {
        let Some(log) = &self.log else {
            return;
        };
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        let log = log.clone();
        let written = tokio::task::spawn_blocking(move || {
            if let Ok(mut f) = log.lock() {
                for line in &batch {
                    f.write_line(line);
                }
            }
        })
        .await;
        if let Err(e) = written {
            tracing::warn!(task = %self.task, error = %e, "writing task log failed");
        }
    }

    /// Says in plugind's log how many lines of this stream the rate limit kept out of it.
    fn report_dropped(&mut self) {
        let dropped = self.trace_budget.take_dropped();
        self.reported_dropped += dropped;
        if dropped > 0 {
            tracing::warn!(
                task = %self.task,
                stream = self.stream.tag(),
                dropped,
                "{dropped} lines of plugin output were not copied into plugind's log (rate limit); the plugin's log file has them"
            );
        }
    }

    fn emit(&mut self) {
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        let now = Instant::now();
        if self.trace_budget.take(now) {
            // A line gets through after drops: say how many went missing (at most once a
            // second, so the reports do not become the flood).
            if self.trace_budget.dropped > 0
                && self
                    .last_report
                    .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
            {
                self.last_report = Some(now);
                self.report_dropped();
            }
            self.traced += 1;
            match self.stream {
                Stream::Stdout => tracing::info!(task = %self.task, "{line}"),
                Stream::Stderr => tracing::error!(task = %self.task, "{line}"),
                Stream::Shim => tracing::debug!(task = %self.task, "shim: {line}"),
            }
        }
        if self.log.is_some() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let mut entry = format!(
                "{}.{:03} {}",
                now.as_secs(),
                now.subsec_millis(),
                self.stream.tag()
            );
            entry.push(' ');
            entry.push_str(&line);
            self.pending.push(entry);
        }
        if let Ok(mut t) = self.tail.lock() {
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line);
        }
    }
}

#[cfg(test)]
mod tests;
