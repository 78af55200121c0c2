//! Conformance suite for `BlobStore`, in the spirit of containerd's content test suite: writer
//! life cycle, resume, locking across threads and processes, verification failures, duplicate
//! commits, reads at offsets, walk, delete, sweep, verify/quarantine and crash safety.
//!
//! Crash and cross-process tests re-execute this test binary with `BLOBSTORE_TEST_CHILD` set,
//! which turns [`child_process_entry`] into the child's body; without it that test does nothing.

use std::{
    collections::{hash_map::RandomState, HashSet},
    fs,
    hash::BuildHasher,
    io::{BufRead, BufReader, Read, Seek, SeekFrom, Write},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Barrier,
    },
    time::{Duration, Instant},
};

use plugind_blobstore::{BlobError, BlobStore};
use plugind_types::{Digest, ErrorKind};
use sha2::{Digest as _, Sha256};

const CHILD_ENV: &str = "BLOBSTORE_TEST_CHILD";
const ROOT_ENV: &str = "BLOBSTORE_TEST_ROOT";
const ARG_ENV: &str = "BLOBSTORE_TEST_ARG";
const MIB: usize = 1 << 20;

fn new_store() -> (tempfile::TempDir, BlobStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&dir.path().join("storage")).unwrap();
    (dir, store)
}

fn digest_of(data: &[u8]) -> Digest {
    Digest::from_sha256_bytes(Sha256::digest(data).into())
}

/// Deterministic pseudo-random bytes (xorshift), different for each seed.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn read_blob(store: &BlobStore, d: &Digest) -> Vec<u8> {
    let mut out = Vec::new();
    store.reader(d).unwrap().read_to_end(&mut out).unwrap();
    out
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn walk_set(store: &BlobStore) -> HashSet<(Digest, u64)> {
    store
        .walk()
        .unwrap()
        .map(|i| i.map(|i| (i.digest, i.size)).unwrap())
        .collect()
}

/// Writes `data` through a writer in uneven chunks and commits it with its true size and digest.
fn write_and_commit(store: &BlobStore, reference: &str, data: &[u8]) -> Digest {
    let mut w = store.writer(reference).unwrap();
    for chunk in data.chunks(100_003) {
        w.write_all(chunk).unwrap();
    }
    assert_eq!(w.offset(), data.len() as u64);
    w.commit(data.len() as u64, &digest_of(data)).unwrap()
}

fn refs(ingests: &[plugind_blobstore::IngestInfo]) -> Vec<&str> {
    ingests
        .iter()
        .map(|i| i.reference.as_deref().unwrap())
        .collect()
}

fn assert_committed(store: &BlobStore, data: &[u8], d: &Digest) {
    assert_eq!(*d, digest_of(data));
    assert_eq!(store.info(d).unwrap().size, data.len() as u64);
    assert_eq!(read_blob(store, d), data);
    let mode = fs::metadata(store.blob_path(d))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o444, "committed blobs are read-only");
}

#[test]
fn open_creates_layout() {
    let (dir, _store) = new_store();
    let root = dir.path().join("storage");
    assert_eq!(names_in(&root), ["blobs", "ingest", "quarantine"]);
    assert!(root.join("blobs/sha256").is_dir());
    // Opening again over existing content is fine.
    BlobStore::open(&root).unwrap();
}

#[test]
fn small_and_large_blobs_round_trip() {
    let (_dir, store) = new_store();
    for (i, len) in [0usize, 1, 10 * MIB].into_iter().enumerate() {
        let data = bytes(len, i as u64 + 1);
        let d = write_and_commit(&store, &format!("writer-{len}"), &data);
        assert_committed(&store, &data, &d);
        // The convenience path, with and without expectations.
        let data2 = bytes(len + 7, i as u64 + 100);
        let info = store
            .ingest(&format!("ingest-{len}"), &data2[..], None)
            .unwrap();
        assert_eq!(
            (info.digest.clone(), info.size),
            (digest_of(&data2), data2.len() as u64)
        );
        assert_committed(&store, &data2, &info.digest);
        let data3 = bytes(len + 3, i as u64 + 200);
        let expected = digest_of(&data3);
        let info = store
            .ingest(
                &format!("checked-{len}"),
                &data3[..],
                Some((data3.len() as u64, &expected)),
            )
            .unwrap();
        assert_eq!(info.digest, expected);
    }
    assert_eq!(walk_set(&store).len(), 9);
    assert!(
        store.ingests().unwrap().is_empty(),
        "commit removes the ingest"
    );
    assert!(names_in(&store.root().join("ingest")).is_empty());
}

#[test]
fn empty_ref_is_invalid() {
    let (_dir, store) = new_store();
    let err = store.writer("").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn refs_with_any_characters_are_safe() {
    let (dir, store) = new_store();
    let reference = "../../etc/passwd\0 and / slashes";
    let d = write_and_commit(&store, reference, b"hello");
    assert_committed(&store, b"hello", &d);
    let mut w = store.writer(reference).unwrap();
    w.write_all(b"x").unwrap();
    let listed = store.ingests().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].reference.as_deref(), Some(reference));
    assert_eq!(listed[0].offset, 1);
    w.abort().unwrap();
    assert!(!dir.path().join("etc").exists());
}

#[test]
fn resume_after_close_continues_at_offset() {
    let (_dir, store) = new_store();
    let data = bytes(3 * MIB + 5, 7);
    let (first, second) = data.split_at(MIB + 3);

    let mut w = store.writer("resume").unwrap();
    w.write_all(first).unwrap();
    w.close();

    let mut w = store.writer("resume").unwrap();
    assert_eq!(w.offset(), first.len() as u64);
    assert_eq!(w.digest_so_far(), digest_of(first));
    let (a, b) = second.split_at(1000);
    w.write_all(a).unwrap();
    // Dropping without close keeps the data too.
    drop(w);

    let mut w = store.writer("resume").unwrap();
    assert_eq!(w.offset(), (first.len() + a.len()) as u64);
    w.write_all(b).unwrap();
    assert_eq!(w.digest_so_far(), digest_of(&data));
    let d = w.commit(data.len() as u64, &digest_of(&data)).unwrap();
    assert_committed(&store, &data, &d);
}

#[test]
fn abort_discards_and_reset_restarts() {
    let (_dir, store) = new_store();
    let mut w = store.writer("gone").unwrap();
    w.write_all(b"some data").unwrap();
    w.abort().unwrap();
    assert!(store.ingests().unwrap().is_empty());
    let mut w = store.writer("gone").unwrap();
    assert_eq!(w.offset(), 0);
    w.write_all(b"wrong").unwrap();
    w.reset().unwrap();
    w.write_all(b"right").unwrap();
    let d = w.commit(5, &digest_of(b"right")).unwrap();
    assert_committed(&store, b"right", &d);
}

#[test]
fn ingest_discards_leftover_partial_data() {
    let (_dir, store) = new_store();
    let mut w = store.writer("pull").unwrap();
    w.write_all(b"stale prefix").unwrap();
    w.close();
    let data = bytes(2 * MIB + 1, 3);
    let info = store
        .ingest(
            "pull",
            &data[..],
            Some((data.len() as u64, &digest_of(&data))),
        )
        .unwrap();
    assert_committed(&store, &data, &info.digest);
}

/// Yields at most `step` bytes per read, then fails after `fail_after` bytes if set.
struct Trickle<'a> {
    data: &'a [u8],
    pos: usize,
    step: usize,
    fail_after: Option<usize>,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.fail_after.is_some_and(|f| self.pos >= f) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "source broke",
            ));
        }
        let n = buf.len().min(self.step).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn ingest_handles_short_reads_and_source_errors() {
    let (_dir, store) = new_store();
    let data = bytes(5 * MIB + 333, 5);
    let reader = Trickle {
        data: &data,
        pos: 0,
        step: 65_537,
        fail_after: None,
    };
    let info = store.ingest("trickle", reader, None).unwrap();
    assert_committed(&store, &data, &info.digest);

    let other = bytes(5 * MIB, 6);
    let reader = Trickle {
        data: &other,
        pos: 0,
        step: 100_000,
        fail_after: Some(3 * MIB),
    };
    let err = store.ingest("broken", reader, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal);
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert_eq!(source, "source broke");
    assert_eq!(
        walk_set(&store).len(),
        1,
        "a failed ingest publishes nothing"
    );
    assert!(
        store.ingests().unwrap().is_empty(),
        "and leaves no ingest behind"
    );
}

#[test]
fn one_writer_per_ref_across_threads() {
    let (_dir, store) = new_store();
    let w = store.writer("busy").unwrap();
    let err = std::thread::scope(|s| {
        s.spawn(|| store.writer("busy").unwrap_err())
            .join()
            .unwrap()
    });
    assert!(matches!(err, BlobError::Locked { .. }));
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    // Another ref is independent.
    store.writer("other").unwrap().abort().unwrap();
    w.close();
    store.writer("busy").unwrap().abort().unwrap();

    // Many threads racing for one ref: never two holders at once, and every attempt either holds
    // the writer or is told it is locked.
    let holders = AtomicUsize::new(0);
    let max_seen = AtomicUsize::new(0);
    let wins = AtomicUsize::new(0);
    let barrier = Barrier::new(8);
    std::thread::scope(|s| {
        for t in 0..8u8 {
            let (store, holders, max_seen, wins, barrier) =
                (&store, &holders, &max_seen, &wins, &barrier);
            s.spawn(move || {
                barrier.wait();
                for _ in 0..50 {
                    match store.writer("race") {
                        Ok(mut w) => {
                            let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                            max_seen.fetch_max(now, Ordering::SeqCst);
                            w.write_all(&[t]).unwrap();
                            wins.fetch_add(1, Ordering::SeqCst);
                            holders.fetch_sub(1, Ordering::SeqCst);
                            w.close();
                        }
                        Err(e) => assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}"),
                    }
                }
            });
        }
    });
    assert_eq!(max_seen.load(Ordering::SeqCst), 1);
    let w = store.writer("race").unwrap();
    assert_eq!(
        w.offset(),
        wins.load(Ordering::SeqCst) as u64,
        "every winner appended one byte"
    );
}

#[test]
fn one_writer_per_ref_across_processes() {
    let (dir, store) = new_store();
    let mut child = spawn_child("hold", dir.path(), "shared-ref");
    let mut out = child_lines(&mut child);
    wait_for(&mut out, |l| l == "LOCKED");

    let err = store.writer("shared-ref").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    // A sweep must not take an ingest another process is writing, however old.
    let report = store.sweep(&HashSet::new(), Duration::ZERO).unwrap();
    assert_eq!(refs(&report.skipped_locked_ingests), ["shared-ref"]);
    assert!(report.removed_ingests.is_empty());

    // Closing the child's stdin makes it close its writer and exit.
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let w = store.writer("shared-ref").unwrap();
    assert_eq!(w.offset(), 4, "the child's bytes are there to resume");
    w.abort().unwrap();
}

#[test]
fn size_and_digest_mismatch_publish_nothing() {
    let (_dir, store) = new_store();
    let data = bytes(4096, 9);

    let mut w = store.writer("short").unwrap();
    w.write_all(&data).unwrap();
    let err = w
        .commit(data.len() as u64 + 1, &digest_of(&data))
        .unwrap_err();
    assert!(
        matches!(
            err,
            BlobError::SizeMismatch {
                expected: 4097,
                actual: 4096,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);

    let mut w = store.writer("wrong").unwrap();
    w.write_all(&data).unwrap();
    let other = digest_of(b"something else");
    let err = w.commit(data.len() as u64, &other).unwrap_err();
    match &err {
        BlobError::DigestMismatch {
            expected, actual, ..
        } => {
            assert_eq!((expected, actual), (&other, &digest_of(&data)));
        }
        e => panic!("unexpected {e}"),
    }
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);

    let err = store
        .ingest("wrong2", &data[..], Some((data.len() as u64, &other)))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);

    assert!(walk_set(&store).is_empty());
    assert!(!store.contains(&digest_of(&data)));
    assert!(!store.contains(&other));
    assert!(
        store.ingests().unwrap().is_empty(),
        "rejected ingests are discarded"
    );
}

#[test]
fn duplicate_commit_reports_already_exists_and_keeps_one_copy() {
    let (_dir, store) = new_store();
    let data = bytes(100_000, 11);
    let d = write_and_commit(&store, "first", &data);

    let mut w = store.writer("second").unwrap();
    w.write_all(&data).unwrap();
    let err = w.commit(data.len() as u64, &d).unwrap_err();
    assert!(
        matches!(&err, BlobError::AlreadyExists { digest } if *digest == d),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);

    let err = store.ingest("third", &data[..], None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);

    assert_eq!(
        walk_set(&store),
        HashSet::from([(d.clone(), data.len() as u64)])
    );
    assert!(store.ingests().unwrap().is_empty());
    assert_eq!(
        fs::metadata(store.blob_path(&d)).unwrap().nlink(),
        1,
        "no second link remains"
    );
    assert_committed(&store, &data, &d);
}

#[test]
fn read_at_offsets() {
    let (_dir, store) = new_store();
    let data = bytes(10 * MIB, 13);
    let d = store.ingest("big", &data[..], None).unwrap().digest;

    for offset in [0usize, 1, 4095, 4096, MIB + 17, data.len() - 10] {
        let mut buf = vec![0; 5000];
        let n = store.read_at(&d, offset as u64, &mut buf).unwrap();
        let want = &data[offset..(offset + 5000).min(data.len())];
        assert_eq!(&buf[..n], want, "read_at {offset}");

        let mut r = store.reader_at(&d, offset as u64).unwrap();
        assert_eq!(r.size(), data.len() as u64);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, &data[offset..]);
    }
    let mut buf = [0u8; 8];
    assert_eq!(
        store.read_at(&d, data.len() as u64 + 5, &mut buf).unwrap(),
        0
    );
    let mut r = store.reader(&d).unwrap();
    r.seek(SeekFrom::End(-3)).unwrap();
    let mut tail = Vec::new();
    r.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, &data[data.len() - 3..]);

    let missing = digest_of(b"missing");
    assert_eq!(
        store.read_at(&missing, 0, &mut buf).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        store.reader(&missing).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        store.info(&missing).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn walk_lists_committed_blobs_only() {
    let (_dir, store) = new_store();
    let mut want = HashSet::new();
    for i in 0..3u64 {
        let data = bytes(1000 * i as usize, 20 + i);
        let d = write_and_commit(&store, &format!("w{i}"), &data);
        want.insert((d, data.len() as u64));
    }
    let mut pending = store.writer("pending").unwrap();
    pending.write_all(b"not yet visible").unwrap();
    assert_eq!(walk_set(&store), want);
    assert!(!store.contains(&digest_of(b"not yet visible")));
    pending.abort().unwrap();
}

#[test]
fn delete_removes_and_missing_is_not_found() {
    let (_dir, store) = new_store();
    let d = write_and_commit(&store, "del", b"bye");
    store.delete(&d).unwrap();
    assert!(!store.contains(&d));
    assert!(walk_set(&store).is_empty());
    let err = store.delete(&d).unwrap_err();
    assert!(matches!(&err, BlobError::NotFound { digest } if *digest == d));
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // The same content can be committed again after deletion.
    let again = write_and_commit(&store, "del", b"bye");
    assert_eq!(again, d);
}

#[test]
fn sweep_keeps_live_set_and_removes_the_rest() {
    let (_dir, store) = new_store();
    let digests: Vec<_> = (0..4u64)
        .map(|i| write_and_commit(&store, &format!("s{i}"), &bytes(1000 + i as usize, 40 + i)))
        .collect();
    let live: HashSet<_> = [digests[0].clone(), digests[2].clone()].into();
    let report = store.sweep(&live, Duration::from_secs(3600)).unwrap();
    let removed: HashSet<_> = report
        .removed_blobs
        .iter()
        .map(|b| b.digest.clone())
        .collect();
    assert_eq!(removed, [digests[1].clone(), digests[3].clone()].into());
    assert_eq!(report.freed_bytes, 1001 + 1003);
    let left: HashSet<_> = walk_set(&store).into_iter().map(|(d, _)| d).collect();
    assert_eq!(left, live);
    // Nothing else to do the second time.
    assert_eq!(
        store.sweep(&live, Duration::from_secs(3600)).unwrap(),
        Default::default()
    );
}

#[test]
fn sweep_skips_locked_ingest_and_removes_stale_one() {
    let (_dir, store) = new_store();
    let mut active = store.writer("active").unwrap();
    active.write_all(b"in progress").unwrap();
    let mut stale = store.writer("stale").unwrap();
    stale.write_all(b"abandoned").unwrap();
    stale.close();

    // Within the grace period nothing is touched.
    let report = store
        .sweep(&HashSet::new(), Duration::from_secs(3600))
        .unwrap();
    assert!(report.removed_ingests.is_empty() && report.skipped_locked_ingests.is_empty());
    assert_eq!(store.ingests().unwrap().len(), 2);

    let report = store.sweep(&HashSet::new(), Duration::ZERO).unwrap();
    assert_eq!(refs(&report.removed_ingests), ["stale"]);
    assert_eq!(refs(&report.skipped_locked_ingests), ["active"]);
    assert_eq!(report.freed_bytes, 9);
    let left = store.ingests().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].reference.as_deref(), Some("active"));

    // The held ingest is intact and commits.
    active.write_all(b"!").unwrap();
    let d = active.commit(12, &digest_of(b"in progress!")).unwrap();
    assert_committed(&store, b"in progress!", &d);
    assert!(names_in(&store.root().join("ingest")).is_empty());
}

#[test]
fn verify_quarantines_corrupt_blob() {
    let (_dir, store) = new_store();
    let good = write_and_commit(&store, "good", &bytes(5000, 50));
    let data = bytes(5000, 51);
    let bad = write_and_commit(&store, "bad", &data);
    assert!(store.verify().unwrap().is_empty());

    let path = store.blob_path(&bad);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut corrupt = data.clone();
    corrupt[1234] ^= 0xff;
    fs::write(&path, &corrupt).unwrap();

    assert_eq!(store.verify().unwrap(), std::slice::from_ref(&bad));
    assert!(!store.contains(&bad));
    assert_eq!(store.info(&bad).unwrap_err().kind(), ErrorKind::NotFound);
    let quarantined = store.root().join("quarantine").join(bad.hex());
    assert_eq!(fs::read(&quarantined).unwrap(), corrupt);
    assert_eq!(
        walk_set(&store)
            .into_iter()
            .map(|(d, _)| d)
            .collect::<Vec<_>>(),
        std::slice::from_ref(&good)
    );
    assert!(store.verify().unwrap().is_empty());

    // The right content can be stored again; a second corruption gets a distinct name.
    let again = write_and_commit(&store, "bad", &data);
    fs::set_permissions(store.blob_path(&again), fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(store.blob_path(&again), b"x").unwrap();
    assert_eq!(store.verify().unwrap(), std::slice::from_ref(&bad));
    assert_eq!(
        names_in(&store.root().join("quarantine")),
        [bad.hex().to_owned(), format!("{}.1", bad.hex())]
    );
}

#[test]
fn resume_never_writes_into_a_published_blob() {
    // Simulates a crash between linking the blob into place and removing the ingest: the
    // ingest's data is then a second name of the committed, read-only blob.
    let (_dir, store) = new_store();
    let data = bytes(70_000, 60);
    let d = write_and_commit(&store, "linked", &data);
    let key = plugind_types::to_hex(&Sha256::digest(b"linked"));
    let ingest_dir = store.root().join("ingest").join(key);
    fs::create_dir(&ingest_dir).unwrap();
    fs::hard_link(store.blob_path(&d), ingest_dir.join("data")).unwrap();

    let mut w = store.writer("linked").unwrap();
    assert_eq!(w.offset(), 0, "published data is not resumed");
    w.write_all(b"new content").unwrap();
    w.abort().unwrap();
    assert_committed(&store, &data, &d);
    assert_eq!(fs::metadata(store.blob_path(&d)).unwrap().nlink(), 1);
}

// ---------------------------------------------------------------------------------------------
// Child processes: lock holder and crash victims.

/// Body of the child processes; a no-op unless started by [`spawn_child`].
#[test]
#[ignore = "child-process helper of the lock and crash tests, started by them with --include-ignored"]
fn child_process_entry() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        // Run directly (e.g. with --include-ignored) it has nothing to do: it is a helper the
        // parent test starts in a child process with BLOBSTORE_TEST_CHILD set, not a test of its own.
        return;
    };
    let root = PathBuf::from(std::env::var(ROOT_ENV).unwrap());
    let arg = std::env::var(ARG_ENV).unwrap();
    let store = BlobStore::open(&root.join("storage")).unwrap();
    match mode.as_str() {
        "hold" => {
            let mut w = store.writer(&arg).unwrap();
            w.write_all(b"held").unwrap();
            marker("LOCKED");
            // Hold the writer until the parent closes our stdin.
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            w.close();
        }
        "ingest" => {
            let mut w = store.writer("crash-ingest").unwrap();
            let data = bytes(256 * MIB, 70);
            for (i, chunk) in data.chunks(MIB).enumerate() {
                // Small writes so the kill can land between and inside them.
                for piece in chunk.chunks(4096 + i) {
                    w.write_all(piece).unwrap();
                }
                // Panics on a broken pipe if the parent is gone, ending this child.
                marker(&format!("PROGRESS {i}"));
            }
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        }
        "commit" => {
            let start: u64 = arg.parse().unwrap();
            for i in start.. {
                // Mostly small blobs, so that the commit itself (fsync, link, fsync directory,
                // clean-up) takes most of each iteration and the kill often lands inside it.
                let limit = if i % 10 == 0 { 3 * MIB } else { 64 << 10 } as u64;
                let data = bytes(((i * 7919) % limit) as usize, i);
                let d = digest_of(&data);
                let mut w = store.writer(&format!("blob-{i}")).unwrap();
                w.write_all(&data).unwrap();
                w.commit(data.len() as u64, &d).unwrap();
                marker(&format!("COMMITTED {}", d.hex()));
            }
        }
        other => panic!("unknown child mode {other}"),
    }
}

/// Writes a line straight to stdout: `println!` would be held back by libtest's output capture.
/// The leading newline ends libtest's unterminated "test child_process_entry ... " line.
fn marker(line: &str) {
    let mut out = std::io::stdout().lock();
    write!(out, "\n{line}\n").unwrap();
    out.flush().unwrap();
}

fn spawn_child(mode: &str, root: &Path, arg: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "child_process_entry",
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, mode)
        .env(ROOT_ENV, root)
        .env(ARG_ENV, arg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn child_lines(child: &mut Child) -> std::io::Lines<BufReader<ChildStdout>> {
    BufReader::new(child.stdout.take().unwrap()).lines()
}

/// Reads the child's output until a line satisfies `pred` (libtest's own lines are skipped).
fn wait_for(
    lines: &mut std::io::Lines<BufReader<ChildStdout>>,
    mut pred: impl FnMut(&str) -> bool,
) {
    for line in lines.by_ref() {
        if pred(&line.unwrap()) {
            return;
        }
    }
    panic!("child exited before the expected marker");
}

/// A random number below `n`, different on each call.
fn random_below(n: u64) -> u64 {
    RandomState::new().hash_one(Instant::now()) % n
}

/// Busy-waits a random 0..`max_us` microseconds, to move the kill to a random instruction.
fn random_delay(max_us: u64) {
    let until = Instant::now() + Duration::from_micros(random_below(max_us));
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// Every name under blobs/ is a digest whose file hashes to it and is read-only.
fn assert_blobs_whole(store: &BlobStore) -> HashSet<Digest> {
    let blobs_dir = store.root().join("blobs/sha256");
    let mut found = HashSet::new();
    for name in names_in(&blobs_dir) {
        let d =
            Digest::from_hex(&name).unwrap_or_else(|_| panic!("non-blob name {name:?} in blobs/"));
        let content = fs::read(blobs_dir.join(&name)).unwrap();
        assert_eq!(
            digest_of(&content),
            d,
            "blob {name} does not hash to its name"
        );
        let mode = fs::metadata(blobs_dir.join(&name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
        found.insert(d);
    }
    assert!(store.verify().unwrap().is_empty());
    assert_eq!(names_in(&store.root().join("blobs")), ["sha256"]);
    found
}

/// After a crash: every ingest left behind is resumable with a hash matching its data, and a
/// sweep with the committed blobs as live set removes all ingests and no blob.
fn assert_ingests_recoverable_and_sweepable(store: &BlobStore, live: &HashSet<Digest>) {
    for info in store.ingests().unwrap() {
        // Killed before it recorded its ref: it cannot have data yet.
        let Some(reference) = info.reference else {
            assert_eq!(info.offset, 0);
            continue;
        };
        let data_path = store.root().join("ingest").join(&info.key).join("data");
        assert_eq!(
            info.key,
            plugind_types::to_hex(&Sha256::digest(reference.as_bytes()))
        );
        let w = store.writer(&reference).unwrap();
        let on_disk = fs::read(&data_path).unwrap_or_default();
        assert_eq!(w.offset(), on_disk.len() as u64);
        assert_eq!(w.digest_so_far(), digest_of(&on_disk));
        w.close();
    }
    let report = store.sweep(live, Duration::ZERO).unwrap();
    assert!(report.removed_blobs.is_empty());
    assert!(report.skipped_locked_ingests.is_empty());
    assert!(
        names_in(&store.root().join("ingest")).is_empty(),
        "sweep cleans every ingest"
    );
    let after: HashSet<_> = walk_set(store).into_iter().map(|(d, _)| d).collect();
    assert_eq!(&after, live);
}

#[test]
fn crash_in_the_middle_of_ingest_leaves_no_blob_and_a_resumable_ingest() {
    let (dir, _) = new_store();
    let mut child = spawn_child("ingest", dir.path(), "");
    let mut out = child_lines(&mut child);
    let progress = 1 + random_below(8);
    wait_for(&mut out, |l| l == format!("PROGRESS {progress}"));
    random_delay(2000);
    child.kill().unwrap();
    child.wait().unwrap();

    let store = BlobStore::open(&dir.path().join("storage")).unwrap();
    assert!(
        assert_blobs_whole(&store).is_empty(),
        "an unfinished ingest publishes nothing"
    );
    let ingests = store.ingests().unwrap();
    assert_eq!(ingests.len(), 1);
    assert_eq!(ingests[0].reference.as_deref(), Some("crash-ingest"));
    assert!(ingests[0].offset > progress * MIB as u64);
    // What was written is exactly a prefix of what the child wrote.
    let w = store.writer("crash-ingest").unwrap();
    let expected = bytes(w.offset() as usize, 70);
    assert_eq!(w.digest_so_far(), digest_of(&expected));
    w.close();
    assert_ingests_recoverable_and_sweepable(&store, &HashSet::new());
}

#[test]
fn crash_in_the_middle_of_commit_leaves_whole_blobs_or_none() {
    let (dir, _) = new_store();
    let mut next = 0u64;
    for _round in 0..6 {
        let mut child = spawn_child("commit", dir.path(), &next.to_string());
        let mut out = child_lines(&mut child);
        let mut reported = HashSet::new();
        let target = 1 + random_below(6);
        wait_for(&mut out, |l| {
            if let Some(hex) = l.strip_prefix("COMMITTED ") {
                reported.insert(Digest::from_hex(hex).unwrap());
            }
            reported.len() as u64 >= target
        });
        random_delay(3000);
        child.kill().unwrap();
        child.wait().unwrap();
        next += 1000;

        let store = BlobStore::open(&dir.path().join("storage")).unwrap();
        let found = assert_blobs_whole(&store);
        assert!(
            found.is_superset(&reported),
            "every reported commit survives the kill"
        );
        assert_ingests_recoverable_and_sweepable(&store, &found);
    }
}
