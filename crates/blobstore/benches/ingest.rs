//! Ingest throughput: `BlobStore::ingest` of a 256 MiB in-memory stream against hashing the same
//! bytes with `sha2` alone, the floor any verified ingest must pay.
//!
//! The store lives in a temporary directory under `$PLUGIND_BENCH_DIR` (default: the system temp
//! dir); the file system used is printed. After the criterion groups, both are timed again with
//! `Instant` and the ratio of throughputs is printed (budget: at least 0.90).

use std::{
    hint::black_box,
    io::Cursor,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use criterion::{Criterion, Throughput};
use plugind_blobstore::BlobStore;
use sha2::{Digest as _, Sha256};

const SIZE: usize = 256 << 20;
const RATIO_ROUNDS: usize = 7;

/// Incompressible-looking bytes (xorshift), so nothing in the path can shortcut them.
fn payload() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(SIZE);
    while out.len() < SIZE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// One full ingest (stream, hash, write, fsync, commit), timed; the blob is deleted afterwards,
/// outside the timing, so every round commits a new blob.
fn time_ingest(store: &BlobStore, data: &[u8]) -> Duration {
    let start = Instant::now();
    let info = store
        .ingest("bench", Cursor::new(data), None)
        .expect("ingest");
    let elapsed = start.elapsed();
    store.delete(&info.digest).expect("delete");
    elapsed
}

fn time_sha2(data: &[u8]) -> Duration {
    let start = Instant::now();
    black_box(Sha256::digest(black_box(data)));
    start.elapsed()
}

/// The file system type holding `path`, from the longest matching mount point.
fn fs_type(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mnt, ty) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mnt)
                .then(|| (mnt.len(), format!("{ty} at {mnt}")))
        })
        .max()
        .map_or_else(|| "unknown".to_owned(), |(_, s)| s)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let base = std::env::var_os("PLUGIND_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = tempfile::tempdir_in(&base).expect("temp dir");
    let store = BlobStore::open(&dir.path().join("storage")).expect("open store");
    println!(
        "blob store for the bench: {} ({})",
        dir.path().display(),
        fs_type(dir.path())
    );
    let data = payload();

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
        .configure_from_args();
    let mut group = c.benchmark_group("ingest_256MiB");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.bench_function("blobstore_ingest", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| time_ingest(&store, &data)).sum())
    });
    group.bench_function("sha2_only", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| time_sha2(&data)).sum())
    });
    group.finish();
    c.final_summary();

    // Interleaved rounds so both see the same machine state; medians resist one-off stalls.
    let (mut ingest, mut sha) = (Vec::new(), Vec::new());
    for _ in 0..RATIO_ROUNDS {
        ingest.push(time_ingest(&store, &data));
        sha.push(time_sha2(&data));
    }
    let (ingest, sha) = (median(ingest), median(sha));
    let mib = SIZE as f64 / f64::from(1 << 20);
    let ingest_tp = mib / ingest.as_secs_f64();
    let sha_tp = mib / sha.as_secs_f64();
    println!(
        "blob ingest: {ingest_tp:.0} MiB/s (median of {RATIO_ROUNDS}, {ingest:?} per 256 MiB)"
    );
    println!("sha2 alone:  {sha_tp:.0} MiB/s (median of {RATIO_ROUNDS}, {sha:?} per 256 MiB)");
    println!(
        "blob ingest / sha2 throughput ratio: {:.2}",
        ingest_tp / sha_tp
    );

    // design.md's baseline: `sha256sum` of the same bytes in a file (page-cache warm).
    let file = dir.path().join("payload");
    std::fs::write(&file, &data).expect("write payload");
    let mut runs = Vec::new();
    for _ in 0..RATIO_ROUNDS {
        let t = Instant::now();
        let ok = std::process::Command::new("sha256sum")
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            println!("sha256sum not available: no design.md baseline");
            return;
        }
        runs.push(t.elapsed());
    }
    let sum_tp = mib / median(runs).as_secs_f64();
    println!("sha256sum:   {sum_tp:.0} MiB/s (median of {RATIO_ROUNDS})");
    println!(
        "blob ingest / sha256sum throughput ratio: {:.2}",
        ingest_tp / sum_tp
    );
}
