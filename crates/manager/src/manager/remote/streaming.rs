//! A plugin's layer unpacked while it downloads: the download tees the bytes it writes to the
//! ingest to an unpacker thread (`TeeSink` -> channel -> `ChunkReader`), which unpacks into a
//! staging directory; the directory counts only if the unpacker saw the whole blob from offset 0
//! (`TeeSink::finish`), and is removed by whoever is last when the pull is abandoned.

use super::*;

/// A layer being unpacked while it downloads.
pub(super) struct StreamingUnpack {
    pub(super) sink: Arc<TeeSink>,
    pub(super) task: tokio::task::JoinHandle<Result<()>>,
    pub(super) guard: StagingGuard,
}

/// Compressed bytes unpacked between two early writeback kicks of a streaming unpack.
const WRITEBACK_EVERY: u64 = 16 << 20;

/// Chunks queued between a download and the unpacker reading it: a slow unpacker slows the
/// download instead of filling memory.
const TEE_CHUNKS: usize = 64;

/// The download side of a streaming unpack: hands the bytes written to the ingest to the
/// unpacker as long as they arrive in order from offset 0 (a resumed or restarted download
/// breaks the stream; the layer is then unpacked from the store).
pub(super) struct TeeSink {
    inner: std::sync::Mutex<TeeState>,
}

struct TeeState {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    seen: u64,
    broken: bool,
}

impl TeeSink {
    pub(super) fn feed(&self, at: u64, bytes: &[u8]) {
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if state.broken {
            return;
        }
        if at != state.seen {
            state.broken = true;
            state.tx = None;
            return;
        }
        state.seen += bytes.len() as u64;
        if let Some(tx) = &state.tx {
            if tx.send(bytes.to_vec()).is_err() {
                // The unpacker stopped (done or failed); its result tells which.
                state.tx = None;
            }
        }
    }

    /// Ends the stream; true when the unpacker was given exactly `size` bytes from offset 0.
    pub(super) fn finish(&self, size: u64) -> bool {
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        state.tx = None;
        !state.broken && state.seen == size
    }
}

/// The unpacker side: reads the chunks the tee queued; the end of the queue is the end of the
/// stream.
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Who removes a streaming unpack's staging directory when the pull is dropped (client gone):
/// the unpacker if it is still running (it sees `abandoned`), the guard if it has finished.
#[derive(Default)]
struct StagingState {
    finished: bool,
    abandoned: bool,
}

/// Removes the staging directory of a streaming unpack unless disarmed (the blocking stage of
/// the pull or upgrade then owns it).
pub(super) struct StagingGuard {
    path: PathBuf,
    state: Arc<std::sync::Mutex<StagingState>>,
    armed: bool,
}

impl StagingGuard {
    pub(super) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for StagingGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.abandoned = true;
        if state.finished {
            let path = self.path.clone();
            // Drop may run on an async worker: the removal gets a thread of its own.
            std::thread::spawn(move || {
                let _ = fs::remove_dir_all(path);
            });
        }
    }
}

impl Manager {
    /// Starts unpacking `layer` into a new `staging` directory from the bytes its download
    /// will feed to the returned sink; the unpacker removes the directory when it fails or the
    /// pull was abandoned.
    pub(super) fn start_streaming_unpack(
        &self,
        staging: &Path,
        layer: &plugind_distribution::Descriptor,
        report: &SharedProgress,
    ) -> StreamingUnpack {
        let (tx, rx) = std::sync::mpsc::sync_channel(TEE_CHUNKS);
        let sink = Arc::new(TeeSink {
            inner: std::sync::Mutex::new(TeeState {
                tx: Some(tx),
                seen: 0,
                broken: false,
            }),
        });
        let state = Arc::new(std::sync::Mutex::new(StagingState::default()));
        let guard = StagingGuard {
            path: staging.to_owned(),
            state: Arc::clone(&state),
            armed: true,
        };
        let this = self.clone();
        let report = Arc::clone(report);
        let (dest, hex, total) = (
            staging.to_owned(),
            layer.digest.hex().to_owned(),
            layer.size,
        );
        let task = tokio::task::spawn_blocking(move || {
            if dest.exists() {
                let _ = fs::remove_dir_all(&dest);
            }
            fs::create_dir(&dest).map_err(|e| io_err("create directory", &dest, e))?;
            let step = (total / 50).max(32 << 10);
            let last = std::sync::atomic::AtomicU64::new(0);
            let abandoned = || state.lock().unwrap_or_else(|p| p.into_inner()).abandoned;
            let reader = ChunkReader {
                rx,
                chunk: Vec::new(),
                at: 0,
            };
            // Writeback starts while the layer unpacks (a sync every WRITEBACK_EVERY bytes,
            // never waited for), so the final sync finds little left to write.
            let (sync_tx, sync_rx) = std::sync::mpsc::sync_channel::<()>(1);
            let synced = AtomicU64::new(0);
            let result = std::thread::scope(|scope| {
                let syncer = scope.spawn(|| {
                    for () in sync_rx {
                        let _ = plugind_sys::fs::sync_filesystem(&dest);
                    }
                });
                let unpacked = layer::unpack_gzip_layer_from(
                    reader,
                    &dest,
                    &this.inner.config.layer_limits,
                    &|n| {
                        let before = last.load(Ordering::Relaxed);
                        if n >= total || n.saturating_sub(before) >= step || before == 0 {
                            last.store(n.max(1), Ordering::Relaxed);
                            report(Progress::bytes("Extracting", &hex, n, total));
                        }
                        if n.saturating_sub(synced.load(Ordering::Relaxed)) >= WRITEBACK_EVERY {
                            synced.store(n, Ordering::Relaxed);
                            let _ = sync_tx.try_send(());
                        }
                        !abandoned()
                    },
                );
                drop(sync_tx);
                let _ = syncer.join();
                unpacked
            })
            .map_err(ManagerError::from)
            .and_then(|()| Ok(plugind_sys::fs::sync_filesystem(&dest)?));
            let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
            state.finished = true;
            if result.is_err() || state.abandoned {
                let _ = fs::remove_dir_all(&dest);
            }
            result
        });
        StreamingUnpack { sink, task, guard }
    }
}
