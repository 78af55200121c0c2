//! [`Writer`]: one ingest in progress, hashed as it is written, committed atomically.
//!
//! An ingest lives in `ingest/<hex(sha256(ref))>/` with three files: `lock` (flock held by the
//! writer), `ref` (the caller's ref, for listings) and `data` (the bytes so far). The data file's
//! length is the resume offset; the sha256 state is rebuilt on resume by hashing the data once,
//! because sha2 cannot serialize its state.

use std::{
    ffi::OsString,
    fmt,
    fs::{self, File, OpenOptions},
    io::{self, Read, Seek, SeekFrom, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{mpsc, Arc},
    thread,
};

use plugind_sys::{fs as sysfs, lock::LockFile, SysError};
use plugind_types::Digest;
use sha2::{Digest as _, Sha256};

use crate::{BlobError, Result};

/// Buffer size for streaming copies and re-hashing: large buffers keep syscall and channel
/// overhead far below the cost of hashing.
pub(crate) const BUF_SIZE: usize = 1 << 20;

/// While streaming a whole reader, have a helper thread flush written data to disk every this
/// many bytes, so that disk IO overlaps hashing and the fsync before commit only has a tail left;
/// bytes written through [`Write`] start their writeback (without waiting) as often.
const SYNC_EVERY: u64 = 8 << 20;

/// Chunks queued towards each pipeline stage; with one buffer being filled and one in each
/// stage, this keeps every stage busy.
const PIPELINE_BUFFERS: usize = 2;

/// How often lock acquisition retries when a concurrent sweep or commit removed the ingest
/// directory under it; each retry follows real progress by someone else, so this is generous.
const LOCK_ATTEMPTS: usize = 32;

/// The ingest directory name for a ref: hex of its sha256, safe whatever the ref contains.
pub(crate) fn ingest_key(reference: &str) -> String {
    plugind_types::to_hex(&Sha256::digest(reference.as_bytes()))
}

/// Takes the exclusive lock of an ingest directory.
///
/// `flock` locks an inode, and a sweep or commit unlinks the lock file while holding it; a
/// writer that opened the old inode would otherwise "hold" a lock nobody else can see. So the
/// lock counts only if the path still names the inode we locked, checked through a second handle
/// opened before the lock (its inode number cannot be reused while that handle is open).
/// The lock file is created if missing; the directory only if `create_dir` is set, otherwise a
/// missing directory gives `Ok(None)`.
pub(crate) fn lock_ingest_dir(
    dir: &Path,
    reference: &str,
    create_dir: bool,
) -> Result<Option<LockFile>> {
    let lock_path = dir.join("lock");
    for _ in 0..LOCK_ATTEMPTS {
        if create_dir {
            match fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(BlobError::io("create directory", dir, e)),
            }
        }
        let probe = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if create_dir {
                    continue;
                }
                return Ok(None);
            }
            Err(e) => return Err(BlobError::io("open lock file", &lock_path, e)),
        };
        let probe_meta = probe
            .metadata()
            .map_err(|e| BlobError::io("stat lock file", &lock_path, e))?;
        let same_inode = || {
            fs::metadata(&lock_path)
                .is_ok_and(|m| m.ino() == probe_meta.ino() && m.dev() == probe_meta.dev())
        };
        match LockFile::try_exclusive(&lock_path) {
            Ok(lock) if same_inode() => return Ok(Some(lock)),
            Ok(_) => continue,
            // Held by someone who is about to delete it: try again on the fresh directory.
            Err(SysError::Locked { .. }) if !same_inode() => continue,
            Err(SysError::Locked { .. }) => {
                return Err(BlobError::Locked {
                    reference: reference.to_owned(),
                });
            }
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(BlobError::Locked {
        reference: reference.to_owned(),
    })
}

/// Deletes an ingest directory whose lock the caller holds: the data first (so a crash never
/// leaves data without its ref), then every other file (ref, temporaries a crash left), the lock
/// file last (so anyone who opened it notices the unlink), then the directory once the lock is
/// released.
pub(crate) fn remove_ingest_dir(dir: &Path, lock: LockFile) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| BlobError::io("read directory", dir, e))?;
    let mut names: Vec<OsString> = vec!["data".into()];
    names.extend(
        entries
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .filter(|n| n != "data" && n != "lock"),
    );
    names.push("lock".into());
    for name in names {
        let p = dir.join(name);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(BlobError::io("remove", p, e)),
        }
    }
    drop(lock);
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        // A new writer for the same ref already recreated its lock file: the directory is its.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(BlobError::io("remove directory", dir, e)),
    }
}

/// An open ingest: an exclusive, resumable writer for one ref.
///
/// Bytes written through [`Write`] are appended to `ingest/<key>/data` and hashed in the same
/// pass. [`Writer::commit`] verifies size and digest from that running hash and publishes the
/// blob atomically; [`Writer::close`] (or dropping the writer) keeps the data so that a later
/// [`BlobStore::writer`](crate::BlobStore::writer) for the same ref resumes at [`Writer::offset`];
/// [`Writer::abort`] discards it.
pub struct Writer {
    reference: String,
    dir: PathBuf,
    data_path: PathBuf,
    blobs_dir: PathBuf,
    file: File,
    hasher: Sha256,
    offset: u64,
    /// Bytes written through [`Write`] since writeback was last started.
    unstarted: u64,
    // Held for its Drop, which releases the ingest to the next writer.
    lock: LockFile,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("reference", &self.reference)
            .field("dir", &self.dir)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Opens (or resumes) the ingest for `reference` under `ingest_root`.
    pub(crate) fn open(ingest_root: &Path, blobs_dir: &Path, reference: &str) -> Result<Writer> {
        if reference.is_empty() {
            return Err(BlobError::InvalidRef {
                reference: reference.to_owned(),
                reason: "must not be empty",
            });
        }
        let dir = ingest_root.join(ingest_key(reference));
        let lock = lock_ingest_dir(&dir, reference, true)?
            .expect("lock_ingest_dir with create never reports a missing directory");
        let ref_path = dir.join("ref");
        if fs::read(&ref_path).map_or(true, |r| r != reference.as_bytes()) {
            // Renamed into place so a listing never sees half a ref; not fsynced, because the
            // ref is only informational (the directory name already identifies the ingest) and
            // two fsyncs would double the cost of committing a small blob.
            let tmp = dir.join("ref.tmp");
            fs::write(&tmp, reference.as_bytes()).map_err(|e| BlobError::io("write", &tmp, e))?;
            fs::rename(&tmp, &ref_path).map_err(|e| BlobError::io("rename", &ref_path, e))?;
        }
        let data_path = dir.join("data");
        let (file, hasher, offset) = open_data(&data_path)?;
        Ok(Writer {
            reference: reference.to_owned(),
            dir,
            data_path,
            blobs_dir: blobs_dir.to_path_buf(),
            file,
            hasher,
            offset,
            unstarted: 0,
            lock,
        })
    }

    /// The caller's ref this writer was opened with.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// Bytes written so far, including those of earlier sessions of this ingest.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The digest of everything written so far.
    pub fn digest_so_far(&self) -> Digest {
        Digest::from_sha256_bytes(self.hasher.clone().finalize().into())
    }

    /// Discards the data written so far and starts again at offset 0, keeping the lock.
    pub fn reset(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .map_err(|e| BlobError::io("truncate", &self.data_path, e))?;
        self.file
            .rewind()
            .map_err(|e| BlobError::io("seek", &self.data_path, e))?;
        self.hasher = Sha256::new();
        self.offset = 0;
        Ok(())
    }

    /// Verifies size and digest, then publishes the data as `blobs/sha256/<hex>`.
    ///
    /// Order: fsync the data, make it read-only, hard-link it into `blobs/sha256` (a link never
    /// replaces an existing name, so "already exists" is decided atomically), fsync that
    /// directory, then remove the ingest. A crash at any point leaves either no blob or the whole
    /// one. On a size or digest mismatch nothing is published and the ingest is discarded (its
    /// content is not what the caller wanted). When the content is already stored, the ingest is
    /// discarded and [`BlobError::AlreadyExists`] returned; the store keeps a single copy.
    pub fn commit(mut self, size: u64, expected: &Digest) -> Result<Digest> {
        if self.offset != size {
            let err = BlobError::SizeMismatch {
                reference: self.reference.clone(),
                expected: size,
                actual: self.offset,
            };
            self.discard_after_error();
            return Err(err);
        }
        let actual = self.digest_so_far();
        if actual != *expected {
            let err = BlobError::DigestMismatch {
                reference: self.reference.clone(),
                expected: expected.clone(),
                actual,
            };
            self.discard_after_error();
            return Err(err);
        }
        self.file
            .flush()
            .map_err(|e| BlobError::io("flush", &self.data_path, e))?;
        sysfs::fsync_file(&self.file, &self.data_path)?;
        self.file
            .set_permissions(fs::Permissions::from_mode(0o444))
            .map_err(|e| BlobError::io("chmod", &self.data_path, e))?;
        let target = self.blobs_dir.join(actual.hex());
        match fs::hard_link(&self.data_path, &target) {
            Ok(()) => {
                sysfs::fsync_dir(&self.blobs_dir)?;
                // A crash here leaves the blob published and its ingest behind (tests).
                plugind_sys::failpoint::hit("blob-commit-linked");
                tracing::debug!(digest = %actual, size, reference = %self.reference, "blob committed");
                let Writer { dir, lock, .. } = self;
                remove_ingest_dir(&dir, lock)?;
                Ok(actual)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let Writer { dir, lock, .. } = self;
                remove_ingest_dir(&dir, lock)?;
                Err(BlobError::AlreadyExists { digest: actual })
            }
            Err(e) => {
                // Keep the ingest resumable: it must be writable again.
                let _ = self.file.set_permissions(fs::Permissions::from_mode(0o600));
                Err(BlobError::io("link blob", target, e))
            }
        }
    }

    /// Releases the ingest but keeps its data: a later writer for the same ref resumes it.
    pub fn close(self) {
        drop(self);
    }

    /// Discards the ingest and its data.
    pub fn abort(self) -> Result<()> {
        let Writer {
            dir, lock, file, ..
        } = self;
        drop(file);
        remove_ingest_dir(&dir, lock)
    }

    fn discard_after_error(self) {
        let reference = self.reference.clone();
        if let Err(e) = self.abort() {
            tracing::warn!(%reference, error = %e, "cannot discard rejected ingest; sweep will");
        }
    }

    /// Streams `reader` to the end into this ingest, as a pipeline over shared buffers: the
    /// calling thread reads, one helper thread hashes, another writes, and a third flushes
    /// written data to disk every `SYNC_EVERY` bytes. Hashing (the bottleneck) thus gets a core
    /// to itself while copying, page-cache writes and disk IO happen beside it; every byte is
    /// still read from the source once and never read back from the file.
    ///
    /// On error the hash may cover bytes that were not written: the caller must abort.
    pub fn copy_from(&mut self, reader: &mut dyn Read) -> Result<u64> {
        type Chunk = (Arc<Vec<u8>>, usize);
        let (hash_tx, hash_rx) = mpsc::sync_channel::<Chunk>(PIPELINE_BUFFERS);
        let (write_tx, write_rx) = mpsc::sync_channel::<Chunk>(PIPELINE_BUFFERS);
        let (done_tx, done_rx) = mpsc::channel::<Arc<Vec<u8>>>();
        let (sync_tx, sync_rx) = mpsc::sync_channel::<()>(1);
        let sync_file = self
            .file
            .try_clone()
            .map_err(|e| BlobError::io("dup", &self.data_path, e))?;
        let file = &mut self.file;
        let data_path = &self.data_path;
        let hasher = &mut self.hasher;
        let (read_result, write_result, sync_result) = thread::scope(|s| {
            let hash_done = done_tx.clone();
            s.spawn(move || {
                for (buf, n) in hash_rx {
                    hasher.update(&buf[..n]);
                    let _ = hash_done.send(buf);
                }
            });
            let syncer = s.spawn(move || -> Result<()> {
                for () in sync_rx {
                    sync_file
                        .sync_data()
                        .map_err(|e| BlobError::io("fsync", data_path, e))?;
                }
                Ok(())
            });
            let writer = s.spawn(move || -> Result<u64> {
                let mut written = 0u64;
                let mut unsynced = 0u64;
                for (buf, n) in write_rx {
                    file.write_all(&buf[..n])
                        .map_err(|e| BlobError::io("write", data_path, e))?;
                    written += n as u64;
                    unsynced += n as u64;
                    if unsynced >= SYNC_EVERY {
                        // A sync already pending covers these bytes too: never wait for the disk.
                        let _ = sync_tx.try_send(());
                        unsynced = 0;
                    }
                    let _ = done_tx.send(buf);
                }
                Ok(written)
            });
            let read_result = (|| -> Result<()> {
                let mut free: Vec<Vec<u8>> = Vec::new();
                let mut allocated = 0;
                loop {
                    let mut buf = match free.pop() {
                        Some(b) => b,
                        None if allocated < PIPELINE_BUFFERS + 2 => {
                            allocated += 1;
                            vec![0; BUF_SIZE]
                        }
                        // A buffer is free again once both the hasher and the writer returned it.
                        None => loop {
                            let Ok(shared) = done_rx.recv() else {
                                return Ok(());
                            };
                            if let Ok(b) = Arc::try_unwrap(shared) {
                                break b;
                            }
                        },
                    };
                    let n = fill(reader, &mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    let shared = Arc::new(buf);
                    // A closed channel means the writer failed; its error is reported below.
                    if write_tx.send((Arc::clone(&shared), n)).is_err()
                        || hash_tx.send((shared, n)).is_err()
                    {
                        return Ok(());
                    }
                    while let Ok(shared) = done_rx.try_recv() {
                        if let Ok(b) = Arc::try_unwrap(shared) {
                            free.push(b);
                        }
                    }
                }
            })();
            drop((hash_tx, write_tx));
            let write_result = writer.join().expect("the writer thread does not panic");
            let sync_result = syncer.join().expect("the sync thread does not panic");
            (read_result, write_result, sync_result)
        });
        let written = write_result?;
        sync_result?;
        read_result?;
        self.offset += written;
        Ok(written)
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        // Only what reached the file is hashed, so the hash always matches the data file.
        self.hasher.update(&buf[..n]);
        self.offset += n as u64;
        self.unstarted += n as u64;
        if self.unstarted >= SYNC_EVERY {
            // Let the disk work while more is written: the commit's fsync then has a tail left.
            // Only an optimisation, so a failure is not the write's.
            self.unstarted = 0;
            if let Err(e) = sysfs::start_writeback(&self.file, &self.data_path) {
                tracing::debug!(error = %e, "cannot start writeback of an ingest");
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Reads until `buf` is full or the reader ends; returns the number of bytes read.
fn fill(reader: &mut dyn Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(BlobError::io("read from source", "<ingest reader>", e)),
        }
    }
    Ok(n)
}

/// Opens an ingest's data file for appending and rebuilds the hash of what it already holds.
fn open_data(path: &Path) -> Result<(File, Sha256, u64)> {
    match fs::symlink_metadata(path) {
        // A second link means a crash hit between publishing the blob and removing the ingest:
        // the inode *is* the committed blob, so it must never be written again. Start afresh.
        Ok(m) if m.nlink() > 1 => {
            fs::remove_file(path).map_err(|e| BlobError::io("remove", path, e))?;
        }
        // A crash between "make read-only" and "link": make it writable again.
        Ok(m) if m.mode() & 0o200 == 0 => {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))
                .map_err(|e| BlobError::io("chmod", path, e))?;
        }
        _ => {}
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| BlobError::io("open", path, e))?;
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    let mut buf = vec![0; BUF_SIZE];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(BlobError::io("read", path, e)),
        }
    }
    // Reading left the position at the end, where appending continues.
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| BlobError::io("seek", path, e))?;
    Ok((file, hasher, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_key_is_hex_of_sha256() {
        let key = ingest_key("../x");
        assert_eq!(key.len(), 64);
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
        // sha256("abc"), a published test vector.
        assert_eq!(
            ingest_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn lock_retries_on_a_fresh_directory_after_removal() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("k");
        assert!(
            lock_ingest_dir(&dir, "r", false).unwrap().is_none(),
            "no dir, no lock"
        );
        let first = lock_ingest_dir(&dir, "r", true).unwrap().unwrap();
        assert!(matches!(
            lock_ingest_dir(&dir, "r", true),
            Err(BlobError::Locked { .. })
        ));
        fs::write(dir.join("data"), b"x").unwrap();
        remove_ingest_dir(&dir, first).unwrap();
        assert!(!dir.exists());
        // The next writer gets a new directory and a lock that excludes others.
        let second = lock_ingest_dir(&dir, "r", true).unwrap().unwrap();
        assert!(matches!(
            lock_ingest_dir(&dir, "r", false),
            Err(BlobError::Locked { .. })
        ));
        drop(second);
        assert!(lock_ingest_dir(&dir, "r", false).unwrap().is_some());
    }

    #[test]
    fn a_lock_on_an_unlinked_file_does_not_count() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("k");
        let held = lock_ingest_dir(&dir, "r", true).unwrap().unwrap();
        // Someone replaced the lock file while we held the old one (as a remover does before
        // releasing): the old lock excludes nobody, and a new locker gets the new file.
        fs::rename(dir.join("lock"), root.path().join("old-lock")).unwrap();
        let fresh = lock_ingest_dir(&dir, "r", true).unwrap().unwrap();
        assert_eq!(fresh.path(), dir.join("lock"));
        drop(held);
    }
}
