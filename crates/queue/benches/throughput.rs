//! Throughput of `KeyedQueue`: 100k trivial jobs over 1,000 keys from 4 producers.
//!
//! Prints `queue throughput: N jobs/s` (from a timed run after criterion's samples) so xtask and
//! humans can read one number.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use plugind_queue::{KeyedQueue, ShutdownMode};

const JOBS: usize = 100_000;
const KEYS: usize = 1_000;
const PRODUCERS: usize = 4;
const CAPACITY: usize = 10_000;

/// Appends `JOBS` trivial jobs and drains the queue; returns the elapsed time.
async fn run_once() -> Duration {
    let q = KeyedQueue::<usize>::new(CAPACITY);
    let ran = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut producers = Vec::with_capacity(PRODUCERS);
    for p in 0..PRODUCERS {
        let (q, ran) = (q.clone(), Arc::clone(&ran));
        producers.push(tokio::spawn(async move {
            for i in (p..JOBS).step_by(PRODUCERS) {
                let ran = Arc::clone(&ran);
                q.append(i % KEYS, async move {
                    ran.fetch_add(1, Ordering::Relaxed);
                })
                .await
                .expect("queue is open");
            }
        }));
    }
    for p in producers {
        p.await.expect("producer finished");
    }
    q.shutdown(ShutdownMode::Drain).await;
    let elapsed = start.elapsed();
    assert_eq!(ran.load(Ordering::Relaxed), JOBS);
    elapsed
}

fn throughput(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("queue");
    group.throughput(Throughput::Elements(JOBS as u64));
    group.sample_size(20);
    group.bench_function("100k_jobs_1k_keys", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += rt.block_on(run_once());
            }
            total
        })
    });
    group.finish();

    // One plain number for reports: best of five runs.
    let best = (0..5)
        .map(|_| rt.block_on(run_once()))
        .min()
        .expect("five runs");
    let rate = JOBS as f64 / best.as_secs_f64();
    println!("queue throughput: {rate:.0} jobs/s ({JOBS} jobs, {KEYS} keys, {PRODUCERS} producers, best of 5)");
}

criterion_group!(benches, throughput);
criterion_main!(benches);
