//! Unit tests of task output: log files and their rotation, tails, log entries, the drains and
//! their rate limit.

use super::*;

#[test]
fn log_files_are_private_and_removed_with_their_generation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("t.log");
    let mut log = LogFile::open(&p, 30).expect("open");
    for i in 0..10 {
        log.write_line(&format!("line number {i}"));
    }
    for f in [&p, &rotated_path(&p)] {
        let mode = fs::metadata(f).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    // A world-readable file left by an older plugind is made private when reopened.
    let old = dir.path().join("old.log");
    fs::write(&old, b"x\n").expect("write");
    fs::set_permissions(&old, fs::Permissions::from_mode(0o644)).expect("chmod");
    drop(LogFile::open(&old, 1 << 20).expect("open"));
    assert_eq!(
        fs::metadata(&old).expect("stat").permissions().mode() & 0o777,
        0o600
    );
    remove_log_files(&p).expect("remove");
    assert!(!p.exists() && !rotated_path(&p).exists());
    remove_log_files(&p).expect("missing files are fine");
}

#[test]
fn sweep_deletes_only_logs_of_unknown_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in [
        "live.log",
        "live.log.1",
        "gone.log",
        "gone.log.1",
        "other.txt",
    ] {
        fs::write(dir.path().join(name), b"x").expect("write");
    }
    let mut removed = sweep_log_files(dir.path(), |id| id == "live");
    removed.sort();
    assert_eq!(
        removed,
        vec![dir.path().join("gone.log"), dir.path().join("gone.log.1")]
    );
    for kept in ["live.log", "live.log.1", "other.txt"] {
        assert!(dir.path().join(kept).exists(), "{kept}");
    }
    assert!(sweep_log_files(&dir.path().join("missing"), |_| false).is_empty());
}

/// `tail=N` reads from the end: a file whose first 64 GiB are a hole (reading it whole
/// would take minutes and its one "line" would not fit in memory) answers at once.
#[test]
fn tail_reads_from_the_end_of_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("t.log");
    let f = File::create(&p).expect("create");
    f.set_len(64 << 30).expect("sparse file");
    drop(f);
    let mut f = OpenOptions::new().append(true).open(&p).expect("open");
    f.write_all(b"\n").expect("write");
    for i in 0..100_000 {
        writeln!(f, "line {i}").expect("write");
    }
    write!(f, "unterminated").expect("write");
    drop(f);
    let t = read_log_tail(&p, Some(3)).expect("tail");
    assert_eq!(t.lines, vec!["line 99998", "line 99999", "unterminated"]);
    assert_eq!(t.offset, fs::metadata(&p).expect("stat").len());
    assert!(read_log_tail(&p, Some(0)).expect("tail").lines.is_empty());
    // Spanning generations, and whole small files.
    let q = dir.path().join("q.log");
    fs::write(rotated_path(&q), b"a\nb\n").expect("write");
    fs::write(&q, b"c\n").expect("write");
    assert_eq!(read_tail(&q, 2).expect("tail"), vec!["b", "c"]);
    assert_eq!(read_tail(&q, 10).expect("tail"), vec!["a", "b", "c"]);
    assert_eq!(
        read_log_tail(&q, None).expect("all").lines,
        vec!["a", "b", "c"]
    );
    // A tail longer than one read block.
    let r = dir.path().join("r.log");
    let long = "y".repeat(100_000);
    fs::write(&r, format!("first\n{long}\nlast\n")).expect("write");
    assert_eq!(
        read_tail(&r, 2).expect("tail"),
        vec![long.clone(), "last".into()]
    );
    assert_eq!(read_tail(&r, 3).expect("tail")[0], "first");
}

#[test]
fn token_bucket_allows_a_burst_then_the_rate() {
    let mut b = TokenBucket::new(3, 2);
    let t0 = Instant::now();
    assert!((0..3).all(|_| b.take(t0)));
    assert!(!b.take(t0) && !b.take(t0));
    assert_eq!(b.take_dropped(), 2);
    assert_eq!(b.take_dropped(), 0);
    // Half a second at 2 lines/s: one more line.
    let t1 = t0 + Duration::from_millis(500);
    assert!(b.take(t1));
    assert!(!b.take(t1));
    // A long pause refills only up to the burst.
    let t2 = t1 + Duration::from_secs(3600);
    assert!((0..3).all(|_| b.take(t2)));
    assert!(!b.take(t2));
}

/// A flood of plugin output reaches the log file whole, but plugind's own log only at
/// the rate, with the dropped lines counted and reported.
#[test]
fn a_flood_is_rate_limited_in_the_daemon_log_but_kept_in_the_file() {
    let log = Arc::new(Mutex::new(
        LogFile::open(&tempfile::tempdir().expect("tmp").path().join("l"), 1 << 30).expect("open"),
    ));
    let mut sink = LineSink {
        stream: Stream::Stderr,
        task: "t".into(),
        log: Some(log),
        tail: Tail::default(),
        partial: Vec::new(),
        pending: Vec::new(),
        trace_budget: TokenBucket::new(TRACE_BURST, TRACE_LINES_PER_SEC),
        traced: 0,
        last_report: None,
        reported_dropped: 0,
    };
    let lines = 20_000u64;
    for i in 0..lines {
        sink.push(format!("spam {i}\n").as_bytes());
    }
    sink.report_dropped();
    assert_eq!(sink.pending.len() as u64, lines, "the file gets every line");
    assert!(sink.traced >= u64::from(TRACE_BURST));
    assert!(sink.traced < lines / 2, "traced {}", sink.traced);
    assert_eq!(sink.traced + sink.reported_dropped, lines);
}

#[test]
fn log_entries_parse_what_emit_writes() {
    let e = LogEntry::parse("1700000000.250 stderr boom here");
    assert_eq!(
        (e.time_nano, e.stderr, e.text.as_str()),
        (1_700_000_000_250_000_000, true, "boom here")
    );
    let x = LogEntry::parse("1.001 stdout x");
    assert_eq!((x.stderr, x.text.as_str()), (false, "x"));
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
        .add(&fifo, Stream::Stdout, "t", Some(log), tail.clone())
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
