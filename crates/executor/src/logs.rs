//! Task output: FIFO drains, the per-task rotated log file, and in-memory tails for errors.
//!
//! Every FIFO is opened read-write and non-blocking (as containerd does): the reader never sees
//! EOF when the writer goes away, never blocks on open, and a restarted executor can reopen the
//! same named FIFOs, which kept whatever was buffered. Each FIFO has a tokio task that reads it
//! continuously, so a plugin that writes a lot never blocks on a full pipe while plugind runs.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::{io::AsyncReadExt, net::unix::pipe, sync::watch, task::JoinHandle};

use crate::error::{ExecutorError, Result};

/// Lines kept in memory per stream for error messages.
const TAIL_LINES: usize = 20;
/// A line longer than this is cut and written in pieces, so memory stays bounded.
const MAX_LINE: usize = 16 * 1024;

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
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| ExecutorError::io("open log", path, e))?;
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
        match OpenOptions::new()
            .create(true)
            .append(true)
            .truncate(false)
            .open(&self.path)
        {
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

/// One line of a task log file: `<unix seconds>.<millis> <stdout|stderr>[/<exec id>] <text>`.
/// The executor writes this format; readers (the API's log route) parse it with
/// [`LogEntry::parse`] so that the format lives in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// When the line was read, unix nanoseconds (millisecond resolution).
    pub time_nano: i64,
    /// True for stderr, false for stdout.
    pub stderr: bool,
    /// The exec process that wrote it; `None` for the task itself.
    pub exec_id: Option<String>,
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
            (Some(time_nano), Some(stream), Some(text)) => {
                let (tag, exec_id) = match stream.split_once('/') {
                    Some((tag, exec)) => (tag, Some(exec.to_owned())),
                    None => (stream, None),
                };
                LogEntry {
                    time_nano,
                    stderr: tag == "stderr",
                    exec_id,
                    text: text.to_owned(),
                }
            }
            _ => LogEntry {
                time_nano: 0,
                stderr: false,
                exec_id: None,
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
pub(crate) fn read_tail(path: &Path, n: usize) -> Result<Vec<String>> {
    let mut tail = VecDeque::with_capacity(n.min(4096));
    for p in [rotated_path(path), path.to_owned()] {
        let f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ExecutorError::io("open log", &p, e)),
        };
        for line in BufReader::new(f).lines() {
            let line = line.map_err(|e| ExecutorError::io("read log", &p, e))?;
            if n == 0 {
                continue;
            }
            if tail.len() == n {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
    Ok(tail.into())
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

/// The drains of one task (or exec process): stop them to flush what is buffered and end them.
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
        exec_id: Option<&str>,
        log: Option<Arc<Mutex<LogFile>>>,
        tail: Tail,
    ) -> Result<()> {
        // Read-write: never EOF, never blocks on open (shim-protocol.md gotcha 2).
        let rx = pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(fifo)
            .map_err(|e| ExecutorError::io("open fifo", fifo, e))?;
        let stop = self.stop.subscribe();
        let task = task.to_owned();
        let exec_id = exec_id.map(str::to_owned);
        self.handles.push(tokio::spawn(drain(
            rx, stream, task, exec_id, log, tail, stop,
        )));
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
    mut rx: pipe::Receiver,
    stream: Stream,
    task: String,
    exec_id: Option<String>,
    log: Option<Arc<Mutex<LogFile>>>,
    tail: Tail,
    mut stop: watch::Receiver<bool>,
) {
    let mut sink = LineSink {
        stream,
        task,
        exec_id,
        log,
        tail,
        partial: Vec::new(),
    };
    // Small: one buffer per stream per task stays resident, and reads loop until empty.
    let mut buf = vec![0u8; 4 * 1024];
    loop {
        if *stop.borrow_and_update() {
            while let Ok(n) = rx.try_read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.push(&buf[..n]);
            }
            break;
        }
        tokio::select! {
            biased;
            r = rx.read(&mut buf) => match r {
                Ok(0) => break,
                Ok(n) => sink.push(&buf[..n]),
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
}

struct LineSink {
    stream: Stream,
    task: String,
    exec_id: Option<String>,
    log: Option<Arc<Mutex<LogFile>>>,
    tail: Tail,
    partial: Vec<u8>,
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

    fn emit(&mut self) {
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        let exec = self.exec_id.as_deref().unwrap_or("");
        match self.stream {
            Stream::Stdout => tracing::info!(task = %self.task, exec = exec, "{line}"),
            Stream::Stderr => tracing::error!(task = %self.task, exec = exec, "{line}"),
            Stream::Shim => tracing::debug!(task = %self.task, "shim: {line}"),
        }
        if let Some(log) = &self.log {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let mut entry = format!(
                "{}.{:03} {}",
                now.as_secs(),
                now.subsec_millis(),
                self.stream.tag()
            );
            if let Some(e) = &self.exec_id {
                entry.push('/');
                entry.push_str(e);
            }
            entry.push(' ');
            entry.push_str(&line);
            if let Ok(mut f) = log.lock() {
                f.write_line(&entry);
            }
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
mod tests {
    use super::*;

    #[test]
    fn log_entries_parse_what_emit_writes() {
        let e = LogEntry::parse("1700000000.250 stderr boom here");
        assert_eq!(
            (e.time_nano, e.stderr, e.text.as_str()),
            (1_700_000_000_250_000_000, true, "boom here")
        );
        let x = LogEntry::parse("1.001 stdout/exec1 x");
        assert_eq!(
            (x.stderr, x.exec_id.as_deref(), x.text.as_str()),
            (false, Some("exec1"), "x")
        );
        assert_eq!(LogEntry::parse("garbage").text, "garbage");
    }

    #[test]
    fn log_rotates_at_limit_and_tail_spans_generations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("t.log");
        let mut log = LogFile::open(&p, 30).expect("open");
        for i in 0..10 {
            log.write_line(&format!("line number {i}"));
        }
        let cur = fs::metadata(&p).expect("stat").len();
        assert!(cur <= 30, "current generation is {cur} bytes");
        assert!(rotated_path(&p).exists());
        let tail = read_tail(&p, 3).expect("tail");
        assert_eq!(
            tail,
            vec!["line number 7", "line number 8", "line number 9"]
        );
        assert!(read_tail(&dir.path().join("missing.log"), 5)
            .expect("empty")
            .is_empty());
    }

    #[tokio::test]
    async fn drain_writes_lines_and_keeps_a_tail_and_never_blocks_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("out");
        plugind_sys::process::mkfifo(&fifo, 0o600).expect("mkfifo");
        let logp = dir.path().join("t.log");
        let log = Arc::new(Mutex::new(LogFile::open(&logp, 1 << 20).expect("open")));
        let tail: Tail = Arc::default();
        let mut drains = Drains::default();
        drains
            .add(&fifo, Stream::Stdout, "t", None, Some(log), tail.clone())
            .expect("add");
        // Far more than a pipe buffer: the writer would block forever without the drain.
        let writer = fifo.clone();
        tokio::task::spawn_blocking(move || {
            let mut f = OpenOptions::new()
                .write(true)
                .open(&writer)
                .expect("open writer");
            for i in 0..20_000 {
                writeln!(f, "hello {i}").expect("write");
            }
            write!(f, "no newline").expect("write");
        })
        .await
        .expect("writer");
        drains.stop().await;
        let lines = read_tail(&logp, 2).expect("tail");
        assert!(lines[0].ends_with("stdout hello 19999"), "{lines:?}");
        assert!(lines[1].ends_with("stdout no newline"), "{lines:?}");
        assert_eq!(
            tail_lines(&tail).last().map(String::as_str),
            Some("no newline")
        );
    }
}
