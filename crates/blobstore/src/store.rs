//! [`BlobStore`]: open, read, walk, delete, sweep and verify committed blobs.

use std::{
    collections::HashSet,
    fs::{self, File},
    io::{self, Read, Seek, SeekFrom},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use plugind_sys::fs as sysfs;
use plugind_types::Digest;
use sha2::{Digest as _, Sha256};

use crate::{
    writer::{lock_ingest_dir, remove_ingest_dir, BUF_SIZE},
    BlobError, Result, Writer,
};

/// A content-addressed sha256 blob store rooted at one directory.
///
/// Cheap to clone; every method works on the file system directly, so several handles (and
/// several processes) can share one root: per-ref ingest locks and atomic links keep them
/// consistent.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    blobs: PathBuf,
    ingest: PathBuf,
    quarantine: PathBuf,
}

/// A committed blob: its digest and size in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobInfo {
    /// The blob's content digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
}

/// An ingest in progress or abandoned, as listed by [`BlobStore::ingests`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestInfo {
    /// The caller's ref. `None` only when its writer died before recording it; such an ingest
    /// never holds data (the ref is written before the data file is created).
    pub reference: Option<String>,
    /// The ingest's directory name under `ingest/` (hex of the ref's sha256).
    pub key: String,
    /// Bytes written so far: the offset a resumed writer continues at.
    pub offset: u64,
    /// Last modification of the data (of the directory if there is no data yet).
    pub updated_at: SystemTime,
}

/// What [`BlobStore::sweep`] removed and what it left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Committed blobs removed because they were not in the live set.
    pub removed_blobs: Vec<BlobInfo>,
    /// Ingests removed because they were older than the grace period.
    pub removed_ingests: Vec<IngestInfo>,
    /// Old ingests kept because a writer holds them.
    pub skipped_locked_ingests: Vec<IngestInfo>,
    /// Bytes freed by removing blobs and ingests.
    pub freed_bytes: u64,
}

/// A reader over one committed blob; also [`Seek`].
#[derive(Debug)]
pub struct BlobReader {
    file: File,
    size: u64,
}

impl BlobReader {
    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Seek for BlobReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

/// Iterator over committed blobs, from [`BlobStore::walk`]; order is unspecified.
#[derive(Debug)]
pub struct Walk {
    dir: PathBuf,
    entries: fs::ReadDir,
}

impl Iterator for Walk {
    type Item = Result<BlobInfo>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let entry = match self.entries.next()? {
                Ok(e) => e,
                Err(e) => return Some(Err(BlobError::io("read directory", &self.dir, e))),
            };
            // Only names that are digests are blobs; nothing else is ever created here.
            let Some(digest) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            else {
                continue;
            };
            match entry.metadata() {
                Ok(m) if m.is_file() => {
                    return Some(Ok(BlobInfo {
                        digest,
                        size: m.len(),
                    }))
                }
                Ok(_) => continue,
                // Deleted while walking.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Some(Err(BlobError::io("stat", entry.path(), e))),
            }
        }
    }
}

impl BlobStore {
    /// Opens the store at `root`, creating `blobs/sha256`, `ingest` and `quarantine` (mode 0700)
    /// as needed.
    pub fn open(root: &Path) -> Result<BlobStore> {
        fs::create_dir_all(root).map_err(|e| BlobError::io("create directory", root, e))?;
        let store = BlobStore {
            root: root.to_path_buf(),
            blobs: root.join("blobs").join("sha256"),
            ingest: root.join("ingest"),
            quarantine: root.join("quarantine"),
        };
        for dir in [
            &root.join("blobs"),
            &store.blobs,
            &store.ingest,
            &store.quarantine,
        ] {
            sysfs::create_dir_durable(dir, 0o700)?;
        }
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of a committed blob (which may not exist).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// Opens the ingest for `reference`, resuming at its offset if data from an earlier writer
    /// is there. Only one writer per ref at a time, across processes: a second one gets
    /// [`BlobError::Locked`].
    pub fn writer(&self, reference: &str) -> Result<Writer> {
        Writer::open(&self.ingest, &self.blobs, reference)
    }

    /// Streams all of `reader` into a fresh ingest for `reference` and commits it.
    ///
    /// With `expected` the commit checks that size and digest; without, it commits under the
    /// digest it computed. Leftover data of an earlier writer for the same ref is discarded
    /// first, since the reader starts at byte 0. On any failure the ingest is discarded. Content
    /// that is already stored gives [`BlobError::AlreadyExists`], like [`Writer::commit`].
    pub fn ingest<R: Read>(
        &self,
        reference: &str,
        mut reader: R,
        expected: Option<(u64, &Digest)>,
    ) -> Result<BlobInfo> {
        let mut writer = self.writer(reference)?;
        let copied = (|| {
            if writer.offset() > 0 {
                writer.reset()?;
            }
            writer.copy_from(&mut reader)
        })();
        if let Err(e) = copied {
            if let Err(abort_err) = writer.abort() {
                tracing::warn!(reference, error = %abort_err, "cannot discard failed ingest");
            }
            return Err(e);
        }
        let (size, digest) = match expected {
            Some((size, digest)) => (size, digest.clone()),
            None => (writer.offset(), writer.digest_so_far()),
        };
        let digest = writer.commit(size, &digest)?;
        Ok(BlobInfo { digest, size })
    }

    /// Size and digest of a committed blob.
    pub fn info(&self, digest: &Digest) -> Result<BlobInfo> {
        let path = self.blob_path(digest);
        let meta =
            fs::metadata(&path).map_err(|e| self.not_found_or_io(digest, "stat", &path, e))?;
        Ok(BlobInfo {
            digest: digest.clone(),
            size: meta.len(),
        })
    }

    /// True when the blob is committed.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Opens a committed blob for streaming reads from its start.
    pub fn reader(&self, digest: &Digest) -> Result<BlobReader> {
        let path = self.blob_path(digest);
        let file = File::open(&path).map_err(|e| self.not_found_or_io(digest, "open", &path, e))?;
        let size = file
            .metadata()
            .map_err(|e| BlobError::io("stat", &path, e))?
            .len();
        Ok(BlobReader { file, size })
    }

    /// Opens a committed blob for streaming reads starting at `offset` (past the end reads
    /// nothing).
    pub fn reader_at(&self, digest: &Digest, offset: u64) -> Result<BlobReader> {
        let mut reader = self.reader(digest)?;
        reader
            .seek(SeekFrom::Start(offset))
            .map_err(|e| BlobError::io("seek", self.blob_path(digest), e))?;
        Ok(reader)
    }

    /// Reads into `buf` from `offset` of a committed blob; returns the bytes read, fewer than
    /// `buf.len()` only at the end of the blob.
    pub fn read_at(&self, digest: &Digest, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let path = self.blob_path(digest);
        let file = File::open(&path).map_err(|e| self.not_found_or_io(digest, "open", &path, e))?;
        let mut n = 0;
        while n < buf.len() {
            match file.read_at(&mut buf[n..], offset + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(BlobError::io("read", &path, e)),
            }
        }
        Ok(n)
    }

    /// Iterates over every committed blob.
    pub fn walk(&self) -> Result<Walk> {
        let entries = fs::read_dir(&self.blobs)
            .map_err(|e| BlobError::io("read directory", &self.blobs, e))?;
        Ok(Walk {
            dir: self.blobs.clone(),
            entries,
        })
    }

    /// Removes a committed blob.
    pub fn delete(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        fs::remove_file(&path).map_err(|e| self.not_found_or_io(digest, "remove", &path, e))?;
        sysfs::fsync_dir(&self.blobs)?;
        Ok(())
    }

    /// Lists the ingests present on disk, held by a writer or not.
    pub fn ingests(&self) -> Result<Vec<IngestInfo>> {
        let mut out = Vec::new();
        for entry in self.ingest_entries()? {
            let (dir, is_dir) = entry?;
            if let Some(info) = is_dir.then(|| ingest_info(&dir)).flatten() {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Garbage collection: removes every committed blob not in `live`, and every ingest whose
    /// data was last modified more than `ingest_grace` ago, except ingests a writer holds.
    ///
    /// The store never decides what is live: the caller passes the full live set and must keep
    /// a blob it is about to reference (committed but not yet recorded) from being swept, for
    /// example by not sweeping concurrently with its own ingests.
    pub fn sweep(&self, live: &HashSet<Digest>, ingest_grace: Duration) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        let mut removed_any_blob = false;
        for info in self.walk()? {
            let info = info?;
            if live.contains(&info.digest) {
                continue;
            }
            let path = self.blob_path(&info.digest);
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::debug!(digest = %info.digest, size = info.size, "swept unreferenced blob");
                    removed_any_blob = true;
                    report.freed_bytes += info.size;
                    report.removed_blobs.push(info);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(BlobError::io("remove", path, e)),
            }
        }
        if removed_any_blob {
            sysfs::fsync_dir(&self.blobs)?;
        }

        let now = SystemTime::now();
        let is_stale = |dir: &Path| {
            ingest_mtime(dir)
                .is_some_and(|t| now.duration_since(t).unwrap_or_default() >= ingest_grace)
        };
        for entry in self.ingest_entries()? {
            let (dir, is_dir) = entry?;
            if !is_stale(&dir) {
                continue;
            }
            if !is_dir {
                // Nothing but ingest directories is made here; a stray file is debris.
                remove_stray(&dir)?;
                continue;
            }
            let label = fs::read_to_string(dir.join("ref")).unwrap_or_default();
            let lock = match lock_ingest_dir(&dir, &label, false) {
                Ok(Some(lock)) => lock,
                Ok(None) => continue,
                Err(BlobError::Locked { .. }) => {
                    report.skipped_locked_ingests.extend(ingest_info(&dir));
                    continue;
                }
                Err(e) => return Err(e),
            };
            // A writer may have added data between the age check and taking the lock.
            if !is_stale(&dir) {
                continue;
            }
            let Some(info) = ingest_info(&dir) else {
                continue;
            };
            remove_ingest_dir(&dir, lock)?;
            tracing::debug!(reference = ?info.reference, size = info.offset, "swept stale ingest");
            report.freed_bytes += info.offset;
            report.removed_ingests.push(info);
        }
        Ok(report)
    }

    /// Re-hashes every committed blob; a blob whose content does not match its name is moved to
    /// `quarantine/` (out of sight of readers, kept for inspection) and logged as an error.
    /// Returns the quarantined digests.
    pub fn verify(&self) -> Result<Vec<Digest>> {
        let mut quarantined = Vec::new();
        let mut buf = vec![0; BUF_SIZE];
        for info in self.walk()? {
            let info = info?;
            let path = self.blob_path(&info.digest);
            let actual = match hash_file(&path, &mut buf) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(BlobError::io("read", path, e)),
            };
            if actual == info.digest {
                continue;
            }
            let target = self.quarantine_path(&info.digest);
            sysfs::durable_rename(&path, &target)?;
            tracing::error!(
                digest = %info.digest,
                actual = %actual,
                quarantined_to = %target.display(),
                "blob content does not match its digest: moved to quarantine"
            );
            quarantined.push(info.digest);
        }
        Ok(quarantined)
    }

    /// A free name in `quarantine/` for a blob: its hex, with a counter if that is taken.
    fn quarantine_path(&self, digest: &Digest) -> PathBuf {
        let first = self.quarantine.join(digest.hex());
        if !first.exists() {
            return first;
        }
        (1u32..)
            .map(|n| self.quarantine.join(format!("{}.{n}", digest.hex())))
            .find(|p| !p.exists())
            .expect("some counter is free")
    }

    /// Entries of `ingest/` as (path, is a directory).
    fn ingest_entries(&self) -> Result<impl Iterator<Item = Result<(PathBuf, bool)>> + '_> {
        let entries = fs::read_dir(&self.ingest)
            .map_err(|e| BlobError::io("read directory", &self.ingest, e))?;
        Ok(entries.map(move |entry| match entry {
            Ok(e) => {
                let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                Ok((e.path(), is_dir))
            }
            Err(e) => Err(BlobError::io("read directory", &self.ingest, e)),
        }))
    }

    fn not_found_or_io(
        &self,
        digest: &Digest,
        op: &'static str,
        path: &Path,
        e: io::Error,
    ) -> BlobError {
        if e.kind() == io::ErrorKind::NotFound {
            BlobError::NotFound {
                digest: digest.clone(),
            }
        } else {
            BlobError::io(op, path, e)
        }
    }
}

/// Describes the ingest in `dir`; `None` if it vanished meanwhile.
fn ingest_info(dir: &Path) -> Option<IngestInfo> {
    let updated_at = ingest_mtime(dir)?;
    let offset = fs::metadata(dir.join("data")).map_or(0, |m| m.len());
    let reference = fs::read_to_string(dir.join("ref")).ok();
    let key = dir.file_name()?.to_string_lossy().into_owned();
    Some(IngestInfo {
        reference,
        key,
        offset,
        updated_at,
    })
}

/// When an ingest last changed: its data's mtime, else its directory's (no data written yet).
fn ingest_mtime(dir: &Path) -> Option<SystemTime> {
    fs::metadata(dir.join("data"))
        .or_else(|_| fs::metadata(dir))
        .and_then(|m| m.modified())
        .ok()
}

fn remove_stray(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BlobError::io("remove", path, e)),
    }
}

fn hash_file(path: &Path, buf: &mut [u8]) -> io::Result<Digest> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    loop {
        match file.read(buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Digest::from_sha256_bytes(hasher.finalize().into()))
}
