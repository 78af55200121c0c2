//! Public-API tests of `KeyedQueue`: per-key order and exclusion, cross-key concurrency, panic
//! isolation, backpressure, idle-key freeing and both shutdown modes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use plugind_queue::{KeyedQueue, QueueError, ShutdownMode};
use tokio::sync::{oneshot, Barrier, Notify};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_key_order_holds_under_many_producers_and_keys() {
    const KEYS: u32 = 2_000;
    const JOBS_PER_KEY: u32 = 20;
    const PRODUCERS: u32 = 8;

    // Small capacity on purpose: producers spend most of the test blocked on backpressure.
    let q = KeyedQueue::<u32>::new(512);
    let log: Arc<Mutex<Vec<(u32, u32, u32)>>> = Arc::default();

    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let q = q.clone();
        let log = Arc::clone(&log);
        producers.push(tokio::spawn(async move {
            // Every producer appends to every key (starting at a different key), interleaving
            // with the others; its own sequence for a key must come out in append order.
            for seq in 0..JOBS_PER_KEY {
                for k in 0..KEYS {
                    let key = (k + p * 7) % KEYS;
                    let log = Arc::clone(&log);
                    q.append(key, async move {
                        log.lock().unwrap().push((key, p, seq));
                    })
                    .await
                    .unwrap();
                }
            }
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    q.shutdown(ShutdownMode::Drain).await;

    let log = log.lock().unwrap();
    assert_eq!(
        log.len(),
        (KEYS * JOBS_PER_KEY * PRODUCERS) as usize,
        "jobs lost"
    );
    let mut last: HashMap<(u32, u32), u32> = HashMap::new();
    for &(key, p, seq) in log.iter() {
        if let Some(prev) = last.insert((key, p), seq) {
            assert!(
                seq > prev,
                "key {key} producer {p}: seq {seq} ran after {prev}"
            );
        } else {
            assert_eq!(seq, 0, "key {key} producer {p}: first job was seq {seq}");
        }
    }
    assert_eq!(last.len(), (KEYS * PRODUCERS) as usize);
    assert!(last.values().all(|&s| s == JOBS_PER_KEY - 1));
    assert_eq!(q.active_keys(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_keys_run_concurrently() {
    let q = KeyedQueue::<&'static str>::new(8);
    // Each job waits for the other: this completes only if both run at the same time.
    let barrier = Arc::new(Barrier::new(2));
    let (tx_a, rx_a) = oneshot::channel();
    let (tx_b, rx_b) = oneshot::channel();
    let b = Arc::clone(&barrier);
    q.append("a", async move {
        b.wait().await;
        tx_a.send(()).unwrap();
    })
    .await
    .unwrap();
    let b = Arc::clone(&barrier);
    q.append("b", async move {
        b.wait().await;
        tx_b.send(()).unwrap();
    })
    .await
    .unwrap();
    rx_a.await.unwrap();
    rx_b.await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn different_keys_run_concurrently_on_one_thread() {
    let q = KeyedQueue::<u8>::new(8);
    let barrier = Arc::new(Barrier::new(3));
    for k in 0..2 {
        let b = Arc::clone(&barrier);
        q.append(k, async move {
            b.wait().await;
        })
        .await
        .unwrap();
    }
    barrier.wait().await;
    q.shutdown(ShutdownMode::Drain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_key_jobs_never_overlap() {
    const KEYS: usize = 16;
    let q = KeyedQueue::<usize>::new(64);
    let in_flight: Arc<Vec<AtomicUsize>> =
        Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect());
    let max_seen: Arc<Vec<AtomicUsize>> =
        Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect());
    let ran = Arc::new(AtomicUsize::new(0));

    let mut producers = Vec::new();
    for _ in 0..4 {
        let (q, in_flight, max_seen, ran) = (
            q.clone(),
            Arc::clone(&in_flight),
            Arc::clone(&max_seen),
            Arc::clone(&ran),
        );
        producers.push(tokio::spawn(async move {
            for i in 0..500 {
                let key = i % KEYS;
                let (in_flight, max_seen, ran) = (
                    Arc::clone(&in_flight),
                    Arc::clone(&max_seen),
                    Arc::clone(&ran),
                );
                q.append(key, async move {
                    let now = in_flight[key].fetch_add(1, Ordering::SeqCst) + 1;
                    max_seen[key].fetch_max(now, Ordering::SeqCst);
                    // Yield so an overlapping job of the same key would get a chance to run.
                    tokio::task::yield_now().await;
                    tokio::task::yield_now().await;
                    in_flight[key].fetch_sub(1, Ordering::SeqCst);
                    ran.fetch_add(1, Ordering::SeqCst);
                })
                .await
                .unwrap();
            }
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    q.shutdown(ShutdownMode::Drain).await;
    assert_eq!(ran.load(Ordering::SeqCst), 2_000);
    for (k, m) in max_seen.iter().enumerate() {
        assert_eq!(m.load(Ordering::SeqCst), 1, "key {k} had overlapping jobs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_job_does_not_stop_its_key() {
    let q = KeyedQueue::<&'static str>::new(4);
    let (tx, rx) = oneshot::channel();
    q.append("k", async {
        panic!("job panics on purpose");
    })
    .await
    .unwrap();
    q.append("k", async move {
        tx.send(42).unwrap();
    })
    .await
    .unwrap();
    assert_eq!(rx.await.unwrap(), 42);
    q.shutdown(ShutdownMode::Drain).await;
    assert_eq!(q.active_keys(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_makes_producers_wait() {
    let q = KeyedQueue::<u8>::new(2);
    let gate = Arc::new(Notify::new());
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    for k in 0..2 {
        let (gate, started_tx) = (Arc::clone(&gate), started_tx.clone());
        q.append(k, async move {
            started_tx.send(k).unwrap();
            gate.notified().await;
        })
        .await
        .unwrap();
    }
    // Both jobs are running and hold the two slots.
    started_rx.recv().await.unwrap();
    started_rx.recv().await.unwrap();
    assert_eq!(q.try_append(9, async {}), Err(QueueError::Full));

    let (third_tx, third_rx) = oneshot::channel();
    let q2 = q.clone();
    let mut third = tokio::spawn(async move {
        q2.append(2, async move {
            third_tx.send(()).unwrap();
        })
        .await
    });
    // Give the producer every chance to get past `append`; it must still be waiting.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert!(
        futures_poll_once(&mut third).await.is_none(),
        "append completed while the queue was full"
    );

    // Finishing one job frees a slot: the third append goes through and its job runs.
    gate.notify_one();
    third.await.unwrap().unwrap();
    third_rx.await.unwrap();
    gate.notify_one();
    q.shutdown(ShutdownMode::Drain).await;
    assert_eq!(q.active_keys(), 0);
}

/// Polls a join handle once without blocking: `Some` if it has finished.
async fn futures_poll_once<T>(h: &mut tokio::task::JoinHandle<T>) -> Option<T> {
    use std::future::Future;
    use std::task::Poll;
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut *h).poll(cx) {
        Poll::Ready(r) => Poll::Ready(Some(r.unwrap())),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keys_are_freed() {
    let q = KeyedQueue::<u32>::new(1_000);
    let gate = Arc::new(Notify::new());
    let done = Arc::new(AtomicUsize::new(0));
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    for k in 0..100 {
        for _ in 0..3 {
            let (gate, done, started_tx) =
                (Arc::clone(&gate), Arc::clone(&done), started_tx.clone());
            q.append(k, async move {
                let _ = started_tx.send(());
                gate.notified().await;
                done.fetch_add(1, Ordering::SeqCst);
            })
            .await
            .unwrap();
        }
    }
    // One job per key is running, the rest are queued: every key is active.
    for _ in 0..100 {
        started_rx.recv().await.unwrap();
    }
    assert_eq!(q.active_keys(), 100);
    // Release jobs one at a time until all 300 have run.
    while done.load(Ordering::SeqCst) < 300 {
        gate.notify_waiters();
        tokio::task::yield_now().await;
    }
    q.shutdown(ShutdownMode::Drain).await;
    assert_eq!(q.active_keys(), 0);
    assert!(format!("{q:?}").contains("active_keys: 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_keys_drops_to_zero_without_shutdown() {
    let q = KeyedQueue::<u32>::new(64);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for k in 0..32 {
        let tx = tx.clone();
        q.append(k, async move {
            tx.send(()).unwrap();
        })
        .await
        .unwrap();
    }
    for _ in 0..32 {
        rx.recv().await.unwrap();
    }
    // Workers remove their key right after the job's task ends; wait for that without sleeping.
    while q.active_keys() != 0 {
        tokio::task::yield_now().await;
    }
    // The queue is still open and usable after going idle.
    let (tx, rx) = oneshot::channel();
    q.append(1, async move { tx.send(()).unwrap() })
        .await
        .unwrap();
    rx.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drain_runs_everything_queued() {
    let q = KeyedQueue::<u32>::new(10_000);
    let ran = Arc::new(AtomicUsize::new(0));
    for k in 0..50 {
        for _ in 0..40 {
            let ran = Arc::clone(&ran);
            q.append(k, async move {
                tokio::task::yield_now().await;
                ran.fetch_add(1, Ordering::SeqCst);
            })
            .await
            .unwrap();
        }
    }
    q.shutdown(ShutdownMode::Drain).await;
    assert_eq!(ran.load(Ordering::SeqCst), 2_000);
    assert_eq!(q.active_keys(), 0);
    assert_eq!(q.append(1, async {}).await, Err(QueueError::Closed));
    assert_eq!(q.try_append(1, async {}), Err(QueueError::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancel_drops_pending_and_aborts_running() {
    let q = KeyedQueue::<u32>::new(100);
    let ran_after_first = Arc::new(AtomicUsize::new(0));
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    // Dropped when the running job is aborted: proves the running future was dropped.
    let (dropped_tx, dropped_rx) = oneshot::channel::<()>();
    let guards = Arc::new(Mutex::new(Some(dropped_tx)));
    for k in 0..5 {
        let (started_tx, guards) = (started_tx.clone(), Arc::clone(&guards));
        q.append(k, async move {
            let _guard = if k == 0 {
                guards.lock().unwrap().take()
            } else {
                None
            };
            started_tx.send(()).unwrap();
            std::future::pending::<()>().await;
        })
        .await
        .unwrap();
        for _ in 0..10 {
            let ran = Arc::clone(&ran_after_first);
            q.append(k, async move {
                ran.fetch_add(1, Ordering::SeqCst);
            })
            .await
            .unwrap();
        }
    }
    for _ in 0..5 {
        started_rx.recv().await.unwrap();
    }
    q.shutdown(ShutdownMode::Cancel).await;
    assert!(dropped_rx.await.is_err(), "running job was not aborted");
    assert_eq!(
        ran_after_first.load(Ordering::SeqCst),
        0,
        "queued jobs ran after cancel"
    );
    assert_eq!(q.active_keys(), 0);
    assert_eq!(q.append(7, async {}).await, Err(QueueError::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_wakes_producers_blocked_on_a_full_queue() {
    let q = KeyedQueue::<u8>::new(1);
    let (started_tx, started_rx) = oneshot::channel();
    q.append(0, async move {
        started_tx.send(()).unwrap();
        std::future::pending::<()>().await;
    })
    .await
    .unwrap();
    started_rx.await.unwrap();
    let q2 = q.clone();
    let blocked = tokio::spawn(async move { q2.append(1, async {}).await });
    q.shutdown(ShutdownMode::Cancel).await;
    assert_eq!(blocked.await.unwrap(), Err(QueueError::Closed));
}
