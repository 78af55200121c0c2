//! Plugin root filesystems as layers: the `docker plugin create` tar becomes one gzip layer blob
//! in the blob store (Docker records its digest in `rootfs.diff_ids`), and a layer blob is
//! unpacked into a plugin's rootfs without letting any entry escape it.
//!
//! Create and pull share one unpacker (`unpack_entries` behind the same tar guard and limits):
//! whatever the source, the rootfs is made from exactly the bytes of the layer. Create makes the
//! layer and the rootfs in one pass ([`import_create_tar_unpacking`]): the layer tar rewritten
//! from the upload goes, byte for byte, into the gzip encoder of the blob on the calling thread
//! and through a bounded channel (`tee`) to a `layer-unpack` thread, so the blob is never read
//! back and the two halves of the work run on two cores. Pull unpacks the download as it
//! streams, or the stored blob ([`unpack_layer`]). The encoder (`gzip`) stores the windows
//! deflate cannot shrink instead of compressing them; the unpacker starts the writeback of each
//! large file as soon as it is written, so the sync that makes the rootfs durable finds little
//! left to write.
//!
//! Every tar is hostile: each entry is checked against [`LayerLimits`] by its *declared* size
//! before any of its data is read or written (so a 10 KB tar declaring a 100 GB member costs
//! nothing), GNU sparse members are refused outright (expanding their holes is work the tar does
//! not pay for), and entry paths are bounded in length and depth (so no walker of the rootfs,
//! here or at removal, meets an unbounded tree).

use std::{
    fs,
    io::{self, Read},
    path::{Component, Path, PathBuf},
};

use flate2::read::GzDecoder;
use plugind_blobstore::{BlobError, BlobStore, Writer};
use plugind_sys::fs::{make_special_file, SpecialFile};
use plugind_types::Digest;

/// Limits that keep a hostile tar from exhausting the disk or memory.
#[derive(Debug, Clone, Copy)]
pub struct LayerLimits {
    /// Largest `config.json` accepted, in bytes.
    pub max_config_bytes: u64,
    /// Total bytes of file content a layer may unpack to.
    pub max_unpacked_bytes: u64,
    /// Number of entries a layer may hold.
    pub max_entries: u64,
    /// Longest entry path (or link target), in bytes.
    pub max_path_bytes: usize,
    /// Most components in an entry path: the deepest directory a rootfs may hold.
    pub max_path_depth: usize,
}

impl LayerLimits {
    fn check_entries(&self, entries: u64) -> Result<(), LayerError> {
        if entries > self.max_entries {
            return Err(LayerError::TooLarge {
                what: "entries",
                limit: self.max_entries,
            });
        }
        Ok(())
    }

    /// Adds `size` declared bytes to `total`, refusing past the limit: called before the
    /// entry's data is touched.
    fn check_bytes(&self, total: &mut u64, size: u64) -> Result<(), LayerError> {
        *total = total.saturating_add(size);
        if *total > self.max_unpacked_bytes {
            return Err(LayerError::TooLarge {
                what: "bytes",
                limit: self.max_unpacked_bytes,
            });
        }
        Ok(())
    }

    /// Generous limits for real plugins (8 GiB, one million entries, 1 MiB config, paths of
    /// `PATH_MAX` bytes and 128 levels). Docker has none. The depth bound matters for time as
    /// well as for walkers: unpacking an entry costs path checks that grow with the square of
    /// its depth (measured, debug build: 1,000 files at depth 20 in 0.7 s, at depth 128 in
    /// 5.9 s, at depth 256 in 14 s; a 1,000-deep chain alone in 59 s).
    pub const DEFAULT: LayerLimits = LayerLimits {
        max_config_bytes: 1 << 20,
        max_unpacked_bytes: 8 << 30,
        max_entries: 1_000_000,
        max_path_bytes: 4096,
        max_path_depth: 128,
    };
}

impl Default for LayerLimits {
    fn default() -> Self {
        LayerLimits::DEFAULT
    }
}

/// Why a tar or a layer was refused.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The tar stream could not be read (Docker's text, with the reader's reason).
    #[error("failed to read from tar: {0}")]
    Tar(#[source] io::Error),
    /// `config.json` is missing from the create tar (Docker's text).
    #[error("config not found")]
    ConfigNotFound,
    /// No `rootfs` entry in the create tar (Docker's text: moby wraps the reader's `io.EOF`).
    #[error("no rootfs found: EOF")]
    RootfsNotFound,
    /// A GNU sparse member: refused before its holes are expanded.
    #[error("tar entry {path:?} is a sparse file (declaring {size} bytes): sparse files are not supported")]
    Sparse {
        /// The entry's path as written in the tar.
        path: String,
        /// The size it declares once its holes are filled.
        size: u64,
    },
    /// An entry path longer or deeper than the limits.
    #[error("tar entry path {path:?} exceeds the limit of {limit} {what}")]
    PathTooLong {
        /// The entry's path as written in the tar (shortened).
        path: String,
        /// What was counted (`bytes`, `levels`).
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// An entry would land outside the rootfs.
    #[error("tar entry {path:?} escapes the plugin rootfs: {reason}")]
    Escape {
        /// The entry's path as written in the tar.
        path: String,
        /// What made it unsafe.
        reason: &'static str,
    },
    /// A size or count limit was exceeded.
    #[error("tar exceeds the limit of {limit} {what}")]
    TooLarge {
        /// What was counted (`bytes`, `entries`, `config bytes`).
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// The blob store refused the layer.
    #[error("cannot store layer")]
    Blob(#[from] BlobError),
    /// Writing the rootfs failed.
    #[error("cannot unpack {path}")]
    Unpack {
        /// The file being written.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Creating a device node failed.
    #[error("cannot create special file")]
    Special(#[from] plugind_sys::SysError),
}

/// The result of reading a `docker plugin create` tar.
#[derive(Debug)]
pub struct CreateTar {
    /// The raw `config.json` bytes.
    pub config: Vec<u8>,
    /// The digest of the gzip layer blob holding the rootfs.
    pub layer: Digest,
}

/// Splits a create tar into its `config.json` and a gzip layer of `rootfs/` (with the
/// `rootfs/` prefix stripped), streamed into the blob store under `ingest_ref`.
pub fn import_create_tar<R: Read>(
    blobs: &BlobStore,
    ingest_ref: &str,
    input: R,
    limits: &LayerLimits,
) -> Result<CreateTar, LayerError> {
    import_create_tar_with(blobs, ingest_ref, input, None, limits, || ()).map(|(tar, ())| tar)
}

/// [`import_create_tar`] that also unpacks the layer into `dest` (which must exist and be
/// empty) in the same pass, with every rule of [`unpack_layer`]: the layer tar the upload is
/// rewritten into is, byte for byte, both compressed into the blob (on the calling thread) and
/// unpacked (on a `layer-unpack` thread, fed through a bounded channel), so the rootfs is made
/// from exactly the layer's bytes without writing the blob and reading it back. The rootfs is not
/// synced: the caller makes it durable before publishing it.
///
/// `before_commit` is called once the whole upload is in the ingest and unpacked, right before
/// the commit that makes the blob visible; what it returns (a guard keeping sweeps away) is
/// handed back with the result, so that the caller holds it only for the commit, never for the
/// upload. A failure on either side stops both (the other side sees its stream cut off) and
/// reports the side that failed first; the ingest is discarded and `dest` is left for the caller
/// to remove. Errors come in Docker's order: the rootfs stream's (reading, rewriting,
/// unpacking), then a missing rootfs, then a missing config.
pub fn import_create_tar_unpacking<R: Read, G>(
    blobs: &BlobStore,
    ingest_ref: &str,
    input: R,
    dest: &Path,
    limits: &LayerLimits,
    before_commit: impl FnOnce() -> G,
) -> Result<(CreateTar, G), LayerError> {
    import_create_tar_with(blobs, ingest_ref, input, Some(dest), limits, before_commit)
}

fn import_create_tar_with<R: Read, G>(
    blobs: &BlobStore,
    ingest_ref: &str,
    input: R,
    dest: Option<&Path>,
    limits: &LayerLimits,
    before_commit: impl FnOnce() -> G,
) -> Result<(CreateTar, G), LayerError> {
    let mut writer = blobs.writer(ingest_ref)?;
    if writer.offset() > 0 {
        writer.reset()?;
    }
    let result = std::thread::scope(|s| {
        let (tee, unpacker) = match dest {
            Some(dest) => {
                let (tee, stream) = tee::LayerTee::with_unpacker();
                let unpacker = std::thread::Builder::new()
                    .name("layer-unpack".into())
                    .spawn_scoped(s, move || unpack_layer_stream(stream, dest, limits))
                    .map_err(|e| LayerError::Unpack {
                        path: dest.to_path_buf(),
                        source: e,
                    })?;
                (tee, Some(unpacker))
            }
            None => (tee::LayerTee::alone(), None),
        };
        let unpacker_gone = tee.unpacker_gone();
        let gz = gzip::LayerGzip::new(&mut writer);
        let mut layer = tar::Builder::new(tee.into_writer(gz));
        layer.mode(tar::HeaderMode::Complete);
        // The unpacker succeeds only after the end marker `finish` sends once the whole layer
        // went by; a failure here drops the tee without it, which the unpacker sees as a cut.
        let produced = rewrite_create_tar(input, &mut layer, limits).and_then(|found| {
            let gz = layer
                .into_inner()
                .and_then(tee::LayerTeeWriter::finish)
                .map_err(LayerError::Tar)?;
            gz.finish().map_err(LayerError::Tar)?;
            Ok(found)
        });
        let unpacked = unpacker.map(|u| {
            u.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        match (produced, unpacked) {
            // The unpacker stopped first: its reason, not the closed channel, is the cause.
            (Err(_), Some(Err(e))) if unpacker_gone.get() => Err(e),
            (Err(e), _) => Err(e),
            (Ok(_), Some(Err(e))) => Err(e),
            (Ok((config, found_rootfs)), _) => {
                // Docker's order: the rootfs stream fails before the config is looked at.
                if !found_rootfs {
                    return Err(LayerError::RootfsNotFound);
                }
                config.ok_or(LayerError::ConfigNotFound)
            }
        }
    });
    let config = match result {
        Ok(config) => config,
        Err(e) => {
            let _ = writer.abort();
            return Err(e);
        }
    };
    let size = writer.offset();
    let digest = writer.digest_so_far();
    let guard = before_commit();
    let layer = match writer.commit(size, &digest) {
        Ok(d) => d,
        // Same rootfs as an existing plugin: the blob is shared.
        Err(BlobError::AlreadyExists { .. }) => digest,
        Err(e) => return Err(e.into()),
    };
    Ok((CreateTar { config, layer }, guard))
}

/// The layer being built: a tar into the tee, into the gzip encoder, into the blob's ingest.
type LayerBuilder<'w> = tar::Builder<tee::LayerTeeWriter<gzip::LayerGzip<&'w mut Writer>>>;

fn rewrite_create_tar<R: Read>(
    input: R,
    layer: &mut LayerBuilder<'_>,
    limits: &LayerLimits,
) -> Result<(Option<Vec<u8>>, bool), LayerError> {
    let refused = RefusedBy::default();
    let mut archive = tar::Archive::new(TarGuard::new(input, refused.clone()));
    let result = rewrite_entries(&mut archive, layer, limits);
    refused.take().map_or(result, Err)
}

fn rewrite_entries<R: Read>(
    archive: &mut tar::Archive<R>,
    layer: &mut LayerBuilder<'_>,
    limits: &LayerLimits,
) -> Result<(Option<Vec<u8>>, bool), LayerError> {
    let mut config = None;
    let mut found_rootfs = false;
    let mut entries = 0u64;
    let mut total = 0u64;
    for entry in archive.entries().map_err(LayerError::Tar)? {
        let mut entry = entry.map_err(LayerError::Tar)?;
        entries += 1;
        limits.check_entries(entries)?;
        let raw = entry
            .path()
            .map_err(LayerError::Tar)?
            .to_string_lossy()
            .into_owned();
        check_entry(&entry, &raw, limits, &mut total)?;
        let clean = clean_path(&raw)?;
        if clean == Path::new("config.json") {
            if entry.size() > limits.max_config_bytes {
                return Err(LayerError::TooLarge {
                    what: "config bytes",
                    limit: limits.max_config_bytes,
                });
            }
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut bytes).map_err(LayerError::Tar)?;
            config = Some(bytes);
            continue;
        }
        let Ok(inner) = clean.strip_prefix("rootfs") else {
            continue;
        };
        found_rootfs = true;
        layer.get_mut().blob_mut().entry_starts();
        let inner = if inner.as_os_str().is_empty() {
            Path::new(".")
        } else {
            inner
        };
        let mut header = entry.header().clone();
        let xattrs: Vec<(String, Vec<u8>)> =
            match entry.pax_extensions().map_err(LayerError::Tar)? {
                Some(exts) => exts
                    .filter_map(Result::ok)
                    .filter_map(|e| {
                        let key = e.key().ok()?;
                        key.starts_with("SCHILY.xattr.")
                            .then(|| (key.to_owned(), e.value_bytes().to_vec()))
                    })
                    .collect(),
                None => Vec::new(),
            };
        if !xattrs.is_empty() {
            layer
                .append_pax_extensions(xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(LayerError::Tar)?;
        }
        let kind = header.entry_type();
        if kind.is_hard_link() || kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(LayerError::Tar)?
                .map(|t| t.into_owned())
                .unwrap_or_default();
            check_path_limits(&target.to_string_lossy(), limits)?;
            // Hard link targets are archive paths: they must lie inside rootfs/ and move with
            // the stripped prefix.
            let target = if kind.is_hard_link() {
                let t = clean_path(&target.to_string_lossy())?;
                match t.strip_prefix("rootfs") {
                    Ok(inside) if !target.is_absolute() => inside.to_path_buf(),
                    _ => {
                        return Err(LayerError::Escape {
                            path: raw,
                            reason: "hard link to a file outside rootfs/",
                        })
                    }
                }
            } else {
                target
            };
            layer
                .append_link(&mut header, inner, &target)
                .map_err(LayerError::Tar)?;
        } else {
            // The size the reader used (a PAX `size` overrides the header's): the layer's
            // header must say what follows it, or the layer parses differently from the input.
            header.set_size(entry.size());
            layer
                .append_data(&mut header, inner, &mut entry)
                .map_err(LayerError::Tar)?;
        }
    }
    Ok((config, found_rootfs))
}

mod guard;
mod gzip;
mod tee;

use guard::{RefusedBy, TarGuard};

/// Checks one entry before any of its data is read: not sparse, path within the limits, and its
/// declared size within what is left of the byte budget.
fn check_entry<R: Read>(
    entry: &tar::Entry<'_, R>,
    raw: &str,
    limits: &LayerLimits,
    total: &mut u64,
) -> Result<(), LayerError> {
    let header = entry.header();
    // tar-rs reports a sparse member's size as its expanded size: refuse it by that, first.
    if header.entry_type().is_gnu_sparse() {
        return Err(LayerError::Sparse {
            path: shorten(raw),
            size: entry.size(),
        });
    }
    check_path_limits(raw, limits)?;
    limits.check_bytes(total, entry.size())
}

/// Refuses paths (or link targets) longer or deeper than the limits.
fn check_path_limits(raw: &str, limits: &LayerLimits) -> Result<(), LayerError> {
    if raw.len() > limits.max_path_bytes {
        return Err(LayerError::PathTooLong {
            path: shorten(raw),
            what: "bytes",
            limit: limits.max_path_bytes,
        });
    }
    let depth = Path::new(raw)
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count();
    if depth > limits.max_path_depth {
        return Err(LayerError::PathTooLong {
            path: shorten(raw),
            what: "levels",
            limit: limits.max_path_depth,
        });
    }
    Ok(())
}

/// The first 200 characters of an outside value, marked when cut, for error messages.
fn shorten(raw: &str) -> String {
    match raw.char_indices().nth(200) {
        Some((at, _)) => format!("{}...(truncated)", &raw[..at]),
        None => raw.to_owned(),
    }
}

/// Cleans a tar path as Go's `filepath.Clean` + leading `/` removal does for create tars,
/// refusing `..` outright.
fn clean_path(raw: &str) -> Result<PathBuf, LayerError> {
    let mut out = PathBuf::new();
    for c in Path::new(raw).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                return Err(LayerError::Escape {
                    path: raw.to_owned(),
                    reason: "it contains `..`",
                })
            }
            Component::Prefix(_) => {
                return Err(LayerError::Escape {
                    path: raw.to_owned(),
                    reason: "bad prefix",
                })
            }
        }
    }
    Ok(out)
}

/// Unpacks the gzip layer `digest` into `dest` (which must exist and be empty), preserving
/// modes, ownership, symlinks, hard links, device nodes and xattrs, and refusing any entry that
/// would be written through a symlink or link to a file outside `dest`.
pub fn unpack_layer(
    blobs: &BlobStore,
    digest: &Digest,
    dest: &Path,
    limits: &LayerLimits,
) -> Result<(), LayerError> {
    unpack_layer_reporting(blobs, digest, dest, limits, &|_| true)
}

/// [`unpack_layer`] reporting the compressed bytes read so far to `progress` (Docker's
/// `Extracting` counts those); when `progress` returns false the unpack stops with an error
/// (the caller was cancelled) and `dest` is left for the caller to remove.
pub fn unpack_layer_reporting(
    blobs: &BlobStore,
    digest: &Digest,
    dest: &Path,
    limits: &LayerLimits,
    progress: &(dyn Fn(u64) -> bool + Send + Sync),
) -> Result<(), LayerError> {
    unpack_gzip_layer_from(blobs.reader(digest)?, dest, limits, progress)
}

/// [`unpack_layer_reporting`] from any reader of the gzip layer's bytes (a download as it
/// streams): the same escape rules, the same limits. Nothing checks the bytes' digest here: a
/// caller unpacking unverified bytes must throw `dest` away unless the digest checks out.
pub fn unpack_gzip_layer_from<R: Read>(
    compressed: R,
    dest: &Path,
    limits: &LayerLimits,
    progress: &(dyn Fn(u64) -> bool + Send + Sync),
) -> Result<(), LayerError> {
    let reader = CountingReader {
        inner: compressed,
        read: 0,
        progress,
    };
    unpack_tar_from(
        GzDecoder::new(io::BufReader::with_capacity(1 << 20, reader)),
        dest,
        limits,
    )
}

/// Unpacks the uncompressed layer tar `stream` carries (see [`tee`]) and reads it to its end,
/// so the producer never blocks on an unpacker that stopped at the end-of-archive blocks.
fn unpack_layer_stream(
    mut stream: tee::LayerStream,
    dest: &Path,
    limits: &LayerLimits,
) -> Result<(), LayerError> {
    unpack_tar_from(&mut stream, dest, limits)?;
    io::copy(&mut stream, &mut io::sink()).map_err(LayerError::Tar)?;
    Ok(())
}

/// Unpacks an uncompressed layer tar into `dest`: the rules of [`unpack_layer`].
fn unpack_tar_from<R: Read>(tar: R, dest: &Path, limits: &LayerLimits) -> Result<(), LayerError> {
    let refused = RefusedBy::default();
    let mut archive = tar::Archive::new(TarGuard::new(tar, refused.clone()));
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    let result = unpack_entries(&mut archive, dest, limits);
    refused.take().map_or(result, Err)
}

/// Counts bytes read and reports them; fails reads once the callback says stop.
struct CountingReader<'a, R> {
    inner: R,
    read: u64,
    progress: &'a (dyn Fn(u64) -> bool + Send + Sync),
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if !(self.progress)(self.read) {
            return Err(io::Error::other("unpack cancelled"));
        }
        Ok(n)
    }
}

fn unpack_entries<R: Read>(
    archive: &mut tar::Archive<R>,
    dest: &Path,
    limits: &LayerLimits,
) -> Result<(), LayerError> {
    let mut total = 0u64;
    let mut entries = 0u64;
    for entry in archive.entries().map_err(LayerError::Tar)? {
        let mut entry = entry.map_err(LayerError::Tar)?;
        entries += 1;
        limits.check_entries(entries)?;
        let raw = entry
            .path()
            .map_err(LayerError::Tar)?
            .to_string_lossy()
            .into_owned();
        check_entry(&entry, &raw, limits, &mut total)?;
        let rel = clean_path(&raw)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        ensure_no_symlink_in_parents(dest, &rel, &raw)?;
        let target = dest.join(&rel);
        let kind = entry.header().entry_type();
        if kind.is_hard_link() {
            let link = entry
                .link_name()
                .map_err(LayerError::Tar)?
                .unwrap_or_default();
            let link_raw = link.to_string_lossy().into_owned();
            check_path_limits(&link_raw, limits)?;
            if link.is_absolute() {
                return Err(LayerError::Escape {
                    path: raw,
                    reason: "hard link to an absolute path",
                });
            }
            let link_rel = clean_path(&link_raw)?;
            ensure_no_symlink_in_parents(dest, &link_rel, &raw)?;
            match fs::symlink_metadata(dest.join(&link_rel)) {
                Ok(m) if m.file_type().is_symlink() || m.is_dir() => {
                    return Err(LayerError::Escape {
                        path: raw,
                        reason: "hard link to a symlink or directory",
                    })
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(LayerError::Escape {
                        path: raw,
                        reason: "hard link to a file not in the layer",
                    })
                }
            }
        }
        // Never write through something an earlier entry left at this path.
        if let Ok(m) = fs::symlink_metadata(&target) {
            if !(m.is_dir() && kind.is_dir()) {
                let removed = if m.is_dir() {
                    plugind_sys::tree::remove_tree_same_device(&target).map_err(io::Error::other)
                } else {
                    fs::remove_file(&target)
                };
                removed.map_err(|source| LayerError::Unpack {
                    path: target.clone(),
                    source,
                })?;
            }
        }
        let header = entry.header();
        let special = if kind.is_character_special() || kind.is_block_special() {
            let major = u64::from(header.device_major().map_err(LayerError::Tar)?.unwrap_or(0));
            let minor = u64::from(header.device_minor().map_err(LayerError::Tar)?.unwrap_or(0));
            Some(if kind.is_character_special() {
                SpecialFile::Char { major, minor }
            } else {
                SpecialFile::Block { major, minor }
            })
        } else if kind.is_fifo() {
            Some(SpecialFile::Fifo)
        } else {
            None
        };
        if let Some(special) = special {
            let mode = header.mode().map_err(LayerError::Tar)?;
            let uid = header.uid().map_err(LayerError::Tar)? as u32;
            let gid = header.gid().map_err(LayerError::Tar)? as u32;
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(|source| LayerError::Unpack {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            make_special_file(&target, special, mode, uid, gid)?;
            continue;
        }
        let unpacked = entry.unpack_in(dest).map_err(|source| LayerError::Unpack {
            path: target.clone(),
            source,
        })?;
        if !unpacked {
            return Err(LayerError::Escape {
                path: raw,
                reason: "refused by the unpacker",
            });
        }
        if kind.is_file() && entry.size() >= WRITEBACK_FROM {
            start_writeback(&target);
        }
    }
    Ok(())
}

/// Files at least this large have their writeback started as soon as they are unpacked.
const WRITEBACK_FROM: u64 = 64 << 10;

/// Starts writing a just unpacked file to disk, so the sync that makes the rootfs durable finds
/// little left to write. Only an optimisation: a failure is logged, never the unpack's.
fn start_writeback(path: &Path) {
    if let Err(error) = plugind_sys::fs::start_writeback_at(path) {
        tracing::debug!(path = %path.display(), %error, "cannot start writeback");
    }
}

/// Checks that no existing component of `rel`'s parent below `root` is a symlink, so an entry
/// can never be written through a link planted by an earlier entry.
fn ensure_no_symlink_in_parents(root: &Path, rel: &Path, raw: &str) -> Result<(), LayerError> {
    let mut at = root.to_path_buf();
    let parent = rel.parent().unwrap_or(Path::new(""));
    for c in parent.components() {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(LayerError::Escape {
                    path: raw.to_owned(),
                    reason: "a parent directory is a symlink",
                })
            }
            Ok(m) if !m.is_dir() => {
                return Err(LayerError::Escape {
                    path: raw.to_owned(),
                    reason: "a parent is not a directory",
                })
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
