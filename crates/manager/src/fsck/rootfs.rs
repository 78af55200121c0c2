//! The root filesystem checks of `plugind fsck`: a plugin's rootfs compared with the layer it was
//! unpacked from (entries, types, sizes, and the content of every file or of a sample), and its
//! repair by unpacking the verified layer again.

use std::{
    collections::HashSet,
    fs,
    io::{self, Read},
    path::{Component, Path, PathBuf},
};

use flate2::read::GzDecoder;
use plugind_types::{Digest, PluginId};
use sha2::{Digest as _, Sha256};

use super::*;

impl Fsck<'_> {
    /// Reports a damaged or missing rootfs and, asked to, unpacks it again from its layer.
    pub(super) fn rootfs_damaged(
        &mut self,
        mut finding: Finding,
        id: &PluginId,
        record: &PluginRecord,
        layer: Option<&Digest>,
    ) {
        if self.options.repair {
            finding.repair = Some(match layer {
                None => Repair::NotRepaired(
                    "no intact layer blob to unpack it from; re-install the plugin".to_owned(),
                ),
                Some(_) if record_running(record) => Repair::NotRepaired(
                    "the plugin's task still runs (live restore); disable it first".to_owned(),
                ),
                Some(layer) => self.reunpack(id, layer),
            });
        }
        self.push(finding);
    }

    fn reunpack(&self, id: &PluginId, layer: &Digest) -> Repair {
        let root = &self.options.root;
        let tmp = root.join("tmp").join(format!("rootfs-fsck-{id}"));
        let result = (|| -> Result<(), String> {
            let blobs =
                plugind_blobstore::BlobStore::open(&self.storage).map_err(|e| e.to_string())?;
            plugind_sys::fs::create_dir_durable(&root.join("tmp"), 0o711)
                .map_err(|e| e.to_string())?;
            let _ = plugind_sys::tree::remove_tree_same_device(&tmp);
            fs::create_dir(&tmp).map_err(|e| format!("create {}: {e}", tmp.display()))?;
            crate::layer::unpack_layer(&blobs, layer, &tmp, &crate::layer::LayerLimits::DEFAULT)
                .map_err(|e| e.to_string())?;
            plugind_sys::fs::sync_filesystem(&tmp).map_err(|e| e.to_string())?;
            let rootfs = root.join(id.as_str()).join("rootfs");
            let damaged = root.join(id.as_str()).join(DAMAGED_ROOTFS);
            if rootfs.exists() {
                let _ = plugind_sys::tree::remove_tree_same_device(&damaged);
                plugind_sys::fs::durable_rename(&rootfs, &damaged).map_err(|e| e.to_string())?;
            }
            plugind_sys::fs::durable_rename(&tmp, &rootfs).map_err(|e| e.to_string())?;
            if damaged.exists() {
                plugind_sys::tree::remove_tree_same_device(&damaged).map_err(|e| e.to_string())?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => Repair::Repaired(format!("unpacked again from layer {layer}")),
            Err(e) => {
                let _ = plugind_sys::tree::remove_tree_same_device(&tmp);
                Repair::NotRepaired(format!("unpacking layer {layer} failed: {e}"))
            }
        }
    }

    /// Every difference between the layer's entries and `rootfs`, in words.
    pub(super) fn compare_rootfs(
        &mut self,
        rootfs: &Path,
        layer: &Digest,
        diff_id: Option<&Digest>,
    ) -> io::Result<Vec<String>> {
        let file = fs::File::open(self.blob_path(layer))?;
        let hashing = HashingReader {
            inner: GzDecoder::new(io::BufReader::new(file)),
            hasher: Sha256::new(),
        };
        let mut archive = tar::Archive::new(hashing);
        let mut differences = Vec::new();
        let skip: HashSet<&str> = plugind_bundle::init_layer::INIT_LAYER
            .iter()
            .map(|(p, _)| *p)
            .collect();
        let mut safe_dirs: HashSet<PathBuf> = HashSet::new();
        for entry in archive.entries()? {
            let mut entry = entry?;
            let raw = entry.path()?.into_owned();
            let Some(rel) = clean_relative(&raw) else {
                continue;
            };
            if rel.as_os_str().is_empty()
                || skip.contains(rel.to_string_lossy().as_ref())
                || rel
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".wh."))
            {
                continue;
            }
            self.report.checked.rootfs_entries += 1;
            if !parents_are_dirs(rootfs, &rel, &mut safe_dirs) {
                differences.push(format!(
                    "{}: a parent is missing or not a directory",
                    rel.display()
                ));
                continue;
            }
            let path = rootfs.join(&rel);
            let md = match fs::symlink_metadata(&path) {
                Ok(md) => md,
                Err(_) => {
                    differences.push(format!("{}: missing", rel.display()));
                    continue;
                }
            };
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                if !md.is_dir() {
                    differences.push(format!("{}: not a directory", rel.display()));
                }
            } else if kind.is_symlink() {
                let want = entry.link_name()?.map(|l| l.into_owned());
                let have = fs::read_link(&path).ok();
                if !md.file_type().is_symlink() || have != want {
                    differences.push(format!("{}: symlink target differs", rel.display()));
                }
            } else if kind.is_hard_link() {
                if !md.is_file() {
                    differences.push(format!("{}: not a file", rel.display()));
                }
            } else if kind.is_file() {
                let size = entry.size();
                if !md.is_file() {
                    differences.push(format!("{}: not a file", rel.display()));
                } else if md.len() != size {
                    differences.push(format!(
                        "{}: size {} instead of {size}",
                        rel.display(),
                        md.len()
                    ));
                } else if self.options.full_rootfs || sampled(&rel, size) {
                    self.report.checked.rootfs_contents += 1;
                    let want = hash_reader(&mut entry)?;
                    match hash_file(&path) {
                        Ok(have) if have == want => {}
                        Ok(_) => differences.push(format!("{}: content differs", rel.display())),
                        Err(e) => differences.push(format!("{}: unreadable ({e})", rel.display())),
                    }
                }
            }
        }
        // Drain what the tar reader left (padding) so the digest covers the whole stream.
        let mut inner = archive.into_inner();
        io::copy(&mut inner, &mut io::sink())?;
        let uncompressed = Digest::from_sha256_bytes(inner.hasher.finalize().into());
        // Docker records the gzip blob's digest in a plugin's diff_ids (not the uncompressed
        // one images use); a config naming the uncompressed digest is accepted too.
        if let Some(want) = diff_id {
            if want != layer && *want != uncompressed {
                differences.push(format!(
                    "the config's rootfs.diff_ids names {want}, neither layer {layer} nor its content {uncompressed}"
                ));
            }
        }
        Ok(differences)
    }
}

/// Whether sampled mode compares this file's content.
fn sampled(rel: &Path, size: u64) -> bool {
    if size <= SAMPLE_SMALL_BYTES {
        return true;
    }
    let h = Sha256::digest(rel.as_os_str().as_encoded_bytes());
    u64::from(h[0]) % SAMPLE_ONE_IN == 0
}

/// A tar entry's path as normal components only (`./` dropped); `None` when it has `..` or
/// is absolute (the unpacker refused those too).
fn clean_relative(raw: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// True when every parent of `rel` under `rootfs` is a real directory (not a symlink), so a
/// path read below never leaves the rootfs.
fn parents_are_dirs(rootfs: &Path, rel: &Path, known: &mut HashSet<PathBuf>) -> bool {
    let mut at = PathBuf::new();
    let parents: Vec<_> = rel
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    for c in parents {
        at.push(c);
        if known.contains(&at) {
            continue;
        }
        match fs::symlink_metadata(rootfs.join(&at)) {
            Ok(md) if md.is_dir() => {
                known.insert(at.clone());
            }
            _ => return false,
        }
    }
    true
}

/// Hashes what passes through (the layer's uncompressed bytes, for `diff_ids`).
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
