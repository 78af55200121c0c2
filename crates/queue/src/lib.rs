//! plugind-queue: a bounded, per-key ordered job queue on tokio.
//!
//! This is the Rust form of moby's libcontainerd queue (`libcontainerd/queue/queue.go`): the
//! executor appends one job per task event, keyed by plugin id, so one plugin's events are handled
//! one at a time in arrival order while different plugins proceed concurrently.
//!
//! Main type: [`KeyedQueue`]. Guarantees:
//! - jobs with the same key run one at a time, in the order their `append` calls took a slot;
//!   jobs with different keys run concurrently on the tokio runtime;
//! - a job that panics (or is aborted) does not stop its key: each job runs as its own tokio task
//!   and the key's worker only awaits its `JoinHandle`;
//! - no per-key state outlives the key's backlog: the key's entry is removed as soon as its last
//!   job finishes, so a daemon that saw a million plugin ids holds nothing for idle ones;
//! - capacity bounds the pending (queued + running) jobs; [`KeyedQueue::append`] waits for room
//!   (backpressure, never drops) and [`KeyedQueue::try_append`] reports [`QueueError::Full`];
//! - [`KeyedQueue::shutdown`] either drains everything queued or cancels it, explicitly; after it
//!   begins, appends fail with [`QueueError::Closed`].
//!
//! What it deliberately does not do: it does not retry jobs, report their outcome (a job that
//! needs to report sends on its own channel) or log; it depends on no workspace crate.

#![warn(missing_docs)]

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::task::AbortHandle;

/// Errors of [`KeyedQueue`].
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// The queue has been shut down; the job was not queued.
    #[error("queue is closed")]
    Closed,
    /// `try_append` found no free slot (capacity reached); the job was not queued.
    #[error("queue is full")]
    Full,
}

/// Result alias for queue operations.
pub type Result<T> = std::result::Result<T, QueueError>;

/// How [`KeyedQueue::shutdown`] treats jobs that are already queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Run every queued job (per-key order kept), then return.
    Drain,
    /// Drop queued jobs that have not started and abort running ones, then return.
    Cancel,
}

/// A boxed job; the permit travels with it so the slot is freed however the job ends
/// (completion, panic, abort, or being dropped unstarted).
type Job = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

struct Pending {
    job: Job,
    permit: OwnedSemaphorePermit,
}

/// Per-key state; exists only while the key has queued or running jobs.
struct KeyState {
    backlog: VecDeque<Pending>,
    /// The job currently running for this key, so `Cancel` can abort it.
    running: Option<AbortHandle>,
}

struct State<K> {
    keys: HashMap<K, KeyState>,
    closed: bool,
}

struct Inner<K> {
    /// A std mutex: it is never held across an `.await`, only for short map updates.
    state: Mutex<State<K>>,
    /// One permit per pending (queued + running) job: this is the capacity bound.
    slots: Arc<Semaphore>,
    capacity: usize,
    /// Number of active keys, published so `shutdown` can wait for zero without polling.
    active: watch::Sender<usize>,
}

/// A bounded job queue that runs jobs with the same key one at a time, in arrival order.
///
/// Cloning is cheap (an `Arc`); all clones share one queue. Methods that start jobs must be called
/// from within a tokio runtime (they use `tokio::spawn`).
pub struct KeyedQueue<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for KeyedQueue<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K> fmt::Debug for KeyedQueue<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.inner.state);
        f.debug_struct("KeyedQueue")
            .field("capacity", &self.inner.capacity)
            .field("available", &self.inner.slots.available_permits())
            .field("active_keys", &state.keys.len())
            .field("closed", &state.closed)
            .finish()
    }
}

/// Locks the state; a poisoned lock is recovered because every critical section leaves the map
/// consistent (no user code runs under the lock).
fn lock<K>(m: &Mutex<State<K>>) -> MutexGuard<'_, State<K>> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<K> KeyedQueue<K>
where
    K: Eq + Hash + Clone + Send + Sync + fmt::Debug + 'static,
{
    /// Creates a queue holding at most `capacity` pending (queued + running) jobs.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0 or above [`Semaphore::MAX_PERMITS`]: such a queue could never accept a
    /// job, which is a programming error.
    pub fn new(capacity: usize) -> Self {
        assert!(
            (1..=Semaphore::MAX_PERMITS).contains(&capacity),
            "queue capacity must be between 1 and {}, got {capacity}",
            Semaphore::MAX_PERMITS
        );
        let (active, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    keys: HashMap::new(),
                    closed: false,
                }),
                slots: Arc::new(Semaphore::new(capacity)),
                capacity,
                active,
            }),
        }
    }

    /// Queues `job` behind the earlier jobs of `key`, waiting for a free slot when the queue is
    /// full. Returns once the job is queued, not when it has run.
    ///
    /// Fails with [`QueueError::Closed`] if the queue is (or while waiting becomes) shut down.
    /// Cancelling the returned future before it completes queues nothing.
    pub async fn append<F>(&self, key: K, job: F) -> Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let permit = Arc::clone(&self.inner.slots)
            .acquire_owned()
            .await
            .map_err(|_| QueueError::Closed)?;
        self.enqueue(key, Box::pin(job), permit)
    }

    /// Like [`append`](Self::append) but never waits: fails with [`QueueError::Full`] when no slot
    /// is free.
    pub fn try_append<F>(&self, key: K, job: F) -> Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let permit = Arc::clone(&self.inner.slots)
            .try_acquire_owned()
            .map_err(|e| match e {
                TryAcquireError::Closed => QueueError::Closed,
                TryAcquireError::NoPermits => QueueError::Full,
            })?;
        self.enqueue(key, Box::pin(job), permit)
    }

    /// Number of keys that currently have queued or running jobs (the size of the per-key map).
    pub fn active_keys(&self) -> usize {
        lock(&self.inner.state).keys.len()
    }

    /// Stops accepting jobs, then drains or cancels the backlog according to `mode` and waits
    /// until no job is queued or running. Safe to call more than once, and from several tasks.
    pub async fn shutdown(&self, mode: ShutdownMode) {
        {
            let mut state = lock(&self.inner.state);
            state.closed = true;
            // Producers blocked in `append` wake up with `Closed` instead of waiting forever.
            self.inner.slots.close();
            if mode == ShutdownMode::Cancel {
                for ks in state.keys.values_mut() {
                    // Dropping the queued jobs frees their slots; the worker of each key then
                    // finds an empty backlog and removes the key.
                    ks.backlog.clear();
                    if let Some(running) = &ks.running {
                        running.abort();
                    }
                }
            }
        }
        let mut rx = self.inner.active.subscribe();
        // The sender lives in `inner`, which `self` keeps alive, so this cannot fail.
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    fn enqueue(&self, key: K, job: Job, permit: OwnedSemaphorePermit) -> Result<()> {
        let mut state = lock(&self.inner.state);
        if state.closed {
            return Err(QueueError::Closed);
        }
        let pending = Pending { job, permit };
        if let Some(ks) = state.keys.get_mut(&key) {
            // A worker is active for this key and will pick the job up in order.
            ks.backlog.push_back(pending);
            return Ok(());
        }
        state.keys.insert(
            key.clone(),
            KeyState {
                backlog: VecDeque::from([pending]),
                running: None,
            },
        );
        self.inner.active.send_replace(state.keys.len());
        drop(state);
        tokio::spawn(worker(Arc::clone(&self.inner), key));
        Ok(())
    }
}

/// Runs the jobs of one key in order until its backlog is empty, then removes the key.
async fn worker<K>(inner: Arc<Inner<K>>, key: K)
where
    K: Eq + Hash + Clone + Send + Sync + fmt::Debug + 'static,
{
    loop {
        let handle = {
            let mut state = lock(&inner.state);
            let Some(ks) = state.keys.get_mut(&key) else {
                // Unreachable: only this worker removes its key.
                return;
            };
            let Some(Pending { job, permit }) = ks.backlog.pop_front() else {
                state.keys.remove(&key);
                shrink_if_sparse(&mut state.keys);
                inner.active.send_replace(state.keys.len());
                return;
            };
            // Spawned under the lock so `shutdown(Cancel)` always sees the abort handle.
            let handle = tokio::spawn(async move {
                let _slot = permit;
                job.await;
            });
            ks.running = Some(handle.abort_handle());
            handle
        };
        // A panic or abort of the job is contained in its task; the key moves on regardless.
        let _ = handle.await;
        if let Some(ks) = lock(&inner.state).keys.get_mut(&key) {
            ks.running = None;
        }
    }
}

/// Gives memory back after a burst of keys; the 4x hysteresis keeps rehashing amortised O(1).
fn shrink_if_sparse<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    const MIN_CAPACITY: usize = 64;
    if map.capacity() > MIN_CAPACITY && map.len() * 4 < map.capacity() {
        map.shrink_to((map.len() * 2).max(MIN_CAPACITY));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn map_memory_is_returned_after_a_burst_of_keys() {
        let q = KeyedQueue::<u32>::new(100_000);
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        for k in 0..10_000u32 {
            let tx = done_tx.clone();
            q.append(k, async move {
                let _ = tx.send(());
            })
            .await
            .unwrap();
        }
        for _ in 0..10_000 {
            done_rx.recv().await.unwrap();
        }
        // Jobs are done; workers may still be removing keys.
        q.shutdown(ShutdownMode::Drain).await;
        let state = lock(&q.inner.state);
        assert!(state.keys.is_empty());
        assert!(
            state.keys.capacity() <= 128,
            "map kept capacity {} after all keys went idle",
            state.keys.capacity()
        );
        assert_eq!(q.inner.slots.available_permits(), 100_000);
    }

    #[test]
    fn zero_capacity_is_rejected() {
        let r = std::panic::catch_unwind(|| KeyedQueue::<u8>::new(0));
        assert!(r.is_err());
    }

    #[test]
    fn errors_display_lowercase() {
        assert_eq!(QueueError::Closed.to_string(), "queue is closed");
        assert_eq!(QueueError::Full.to_string(), "queue is full");
    }
}
