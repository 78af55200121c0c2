//! Plugins from a registry: `privileges`, `pull` (install) and `upgrade` (distribution.md §2,
//! §3). Blobs stream into the blob store through `plugind_distribution`; layers are unpacked
//! with the same escape rules as create (`layer::unpack_gzip_layer_from`) into a staging
//! directory under `<root>/tmp`; the record is written last. A plugin's single layer is
//! unpacked WHILE it downloads: the download tees its bytes to the unpacker
//! (`Registry::fetch_blob_teed`), and the staging directory is kept only if the unpacker saw
//! the whole blob from offset 0 and the store then verified its digest and size; otherwise
//! (failure, resumed download, blob fetched by a concurrent pull) it is thrown away and the
//! layer is unpacked from the store as before (the tee and its unpacker: `remote/streaming.rs`).
//!
//! Crash safety: until the record is written a pull leaves only a staging directory (removed
//! at the next start), a plugin directory without record (removed by the store's reload) and
//! blobs or ingests no record refers to (swept at the next start). An upgrade moves the old
//! rootfs aside as `rootfs-previous-<old config hex>` before the new one takes its place;
//! [`repair_upgrades`] finishes or rolls back an upgrade a crash cut, by comparing that name
//! with the record's config digest.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use plugind_distribution::{
    AuthConfig, BlobTee, DistributionError, FetchOutcome, PluginManifest, Registry,
};
use plugind_store::{privileges_match, PluginPrivilege};
use plugind_types::{config::PluginSettings, Digest};

use super::*;
mod streaming;

use crate::progress::{Progress, ProgressFn, SharedProgress};
use streaming::StagingGuard;

/// Prefix of the directory an upgrade moves the previous rootfs to, inside the plugin's dir.
const PREVIOUS_ROOTFS: &str = "rootfs-previous-";

/// The names of a pull, checked before anything is fetched (moby's `parseRemoteRef` and
/// `getName`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullNames {
    /// The remote, normalised (tag or digest as given; none added).
    pub remote: Reference,
    /// The local name: `name` normalised with `:latest`, or the remote's familiar form with its
    /// tag (`latest` when it has none; a digest is dropped).
    pub local: String,
}

impl PullNames {
    /// Checks `remote` and `name` with Docker's texts: no remote is `invalid reference
    /// format`, upper case `… repository name must be lowercase`, a digest in the name
    /// `cannot use digest in plugin tag`.
    pub fn parse(remote: &str, name: &str) -> Result<PullNames> {
        let remote = Reference::parse_normalized(remote).map_err(ManagerError::RemoteReference)?;
        let local = if name.is_empty() {
            without_digest(&remote).with_default_tag().familiar_string()
        } else {
            let named = Reference::parse_normalized(name).map_err(ManagerError::RemoteReference)?;
            if named.digest().is_some() {
                return Err(ManagerError::DigestInPluginTag);
            }
            named.with_default_tag().familiar_string()
        };
        Ok(PullNames { remote, local })
    }

    /// `PluginReference` of the installed plugin: the remote in full form with its tag
    /// (`latest` added), or `<repo>@sha256:…` for a digest reference.
    pub fn plugin_reference(&self) -> String {
        if self.remote.digest().is_some() {
            let mut r = self.remote.full_name();
            if let Some(d) = self.remote.digest() {
                r.push('@');
                r.push_str(&d.to_string());
            }
            r
        } else {
            self.remote.clone().with_default_tag().full_string()
        }
    }
}

/// The reference without its digest (tag kept).
fn without_digest(r: &Reference) -> Reference {
    let mut s = r.full_name();
    if let Some(tag) = r.tag() {
        s.push(':');
        s.push_str(tag);
    }
    // A reference built from a valid reference's parts parses.
    Reference::parse_normalized(&s).unwrap_or_else(|_| r.clone())
}

/// What a pull or upgrade was given besides the names.
#[derive(Debug, Clone, Copy)]
pub struct RemoteRequest<'a> {
    /// Credentials from `X-Registry-Auth`.
    pub auth: &'a AuthConfig,
    /// The privileges the user accepted (the request body).
    pub privileges: &'a [PluginPrivilege],
}

/// Set on drop: tells blocking work of a pull whose future was dropped (client gone) to stop
/// and leave nothing.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A manifest resolved and its config fetched and checked.
struct Fetched {
    manifest: PluginManifest,
    config: PluginConfig,
    /// Set when the layer was unpacked into the staging directory while it downloaded (and
    /// its digest then checked): the staging directory is complete and synced.
    staged: Option<StagingGuard>,
}

impl Manager {
    pub(super) fn registry(&self) -> Result<&Registry> {
        self.inner
            .registry
            .as_ref()
            .map_err(|e| ManagerError::RegistryClient(e.clone()))
    }

    /// The privileges the plugin at `remote` asks for, in Docker's order (its manifest and
    /// config land in the blob store, as in Docker).
    pub async fn remote_privileges(
        &self,
        remote: &str,
        auth: &AuthConfig,
    ) -> Result<Vec<PluginPrivilege>> {
        let remote = Reference::parse_normalized(remote).map_err(ManagerError::RemoteReference)?;
        let manifest = self.resolve(&remote, auth).await?;
        self.store_manifest(&manifest).await?;
        let config = self.fetch_config(&remote, auth, &manifest).await?;
        Ok(plugind_store::privileges(&config))
    }

    async fn resolve(&self, remote: &Reference, auth: &AuthConfig) -> Result<PluginManifest> {
        self.registry()?
            .resolve(remote, auth)
            .await
            .map_err(resolve_error)
    }

    async fn fetch_config(
        &self,
        remote: &Reference,
        auth: &AuthConfig,
        manifest: &PluginManifest,
    ) -> Result<PluginConfig> {
        let bytes = self
            .registry()?
            .fetch_config(remote, auth, &manifest.config, &self.inner.blobs)
            .await
            .map_err(resolve_error)?;
        PluginConfig::from_json(&bytes).map_err(|e| ManagerError::Config { detail: e.detail() })
    }

    /// Installs the plugin at `names.remote` as `names.local`, disabled (`POST /plugins/pull`).
    ///
    /// Errors before the first progress message are the request's errors (name taken,
    /// resolve failures); later ones end the stream. The record is written last: a failure,
    /// a dropped future or a crash leaves no plugin.
    pub async fn pull(
        &self,
        names: &PullNames,
        request: RemoteRequest<'_>,
        progress: SharedProgress,
    ) -> Result<PluginId> {
        self.check_name_free(&names.local)?;
        let began = std::time::Instant::now();
        let manifest = self.resolve(&names.remote, request.auth).await?;
        let id = PluginId::from_bytes(rand::random());
        let mut pending = create::PendingBlobs::new(self);
        let staging = self
            .inner
            .config
            .root
            .join("tmp")
            .join(format!("rootfs-{id}"));
        let fetched = self
            .fetch_all(
                &names.remote,
                &manifest,
                request,
                &mut pending,
                (&staging, &id, &progress),
            )
            .await?;
        let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
        let cancelled = Arc::clone(&cancel.0);
        let reference = names.plugin_reference();
        let name = names.local.clone();
        let layers = fetched.manifest.layers.clone();
        let manifest_digest = fetched.manifest.digest.clone();
        let config_digest = fetched.manifest.config.digest.clone();
        let config = fetched.config;
        let staged = fetched.staged;
        let report = Arc::clone(&progress);
        let this = self.clone();
        let record = tokio::task::spawn_blocking(move || {
            let inner = &this.inner;
            if let Some(guard) = staged {
                guard.disarm();
            } else {
                check_config(&config, &inner.config.exec_root, &id)?;
                this.unpack_staging(&layers, &staging, &cancelled, &*report)?;
            }
            let dir = inner.store.plugin_dir(&id);
            let placed = (|| {
                if cancelled.load(Ordering::SeqCst) {
                    return Err(ManagerError::Cancelled);
                }
                fs::create_dir(&dir).map_err(|e| io_err("create directory", &dir, e))?;
                plugind_sys::fs::durable_rename(&staging, &inner.store.rootfs_dir(&id))?;
                Ok(())
            })();
            if let Err(e) = placed {
                let _ = fs::remove_dir_all(&staging);
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
            let mut record =
                PluginRecord::new(id.clone(), name, config, reference, SystemTime::now());
            record.state.blobs.manifest = Some(manifest_digest);
            record.state.blobs.config = Some(config_digest);
            record.state.blobs.layers = layers.iter().map(|l| l.digest.clone()).collect();
            plugind_sys::failpoint::hit("pull-before-record");
            if let Err(e) = inner.store.add(record.clone()) {
                let _ = fs::remove_dir_all(&dir);
                return Err(ManagerError::from(e));
            }
            Ok(record)
        })
        .await?;
        drop(pending);
        drop(cancel);
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                self.sweep_in_background();
                return Err(e);
            }
        };
        crate::metrics::Metrics::global()
            .install_seconds
            .observe(began.elapsed().as_secs_f64());
        self.publish_pull(names, &record);
        Ok(record.id().clone())
    }

    /// Upgrades the disabled plugin `name` (already normalised, `x:latest`) to `remote`
    /// (`POST /plugins/{name}/upgrade`): same id, name and settings (where the new config still
    /// declares them), new config, rootfs and reference; a failure at any step leaves the
    /// plugin as it was.
    pub async fn upgrade(
        &self,
        name: &str,
        remote: &Reference,
        request: RemoteRequest<'_>,
        progress: SharedProgress,
    ) -> Result<()> {
        let (_held, record) = self.lock_plugin(name).await?;
        if record.desired_enabled() || self.is_running(record.id()) {
            return Err(ManagerError::UpgradeEnabled {
                name: record.name().to_owned(),
            });
        }
        let manifest = self.resolve(remote, request.auth).await?;
        let mut pending = create::PendingBlobs::new(self);
        let id = record.id().clone();
        let staging = self
            .inner
            .config
            .root
            .join("tmp")
            .join(format!("rootfs-{id}-upgrade"));
        let fetched = self
            .fetch_all(
                remote,
                &manifest,
                request,
                &mut pending,
                (&staging, &id, &progress),
            )
            .await?;
        let names = PullNames {
            remote: remote.clone(),
            local: record.name().to_owned(),
        };
        let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
        let cancelled = Arc::clone(&cancel.0);
        let report = Arc::clone(&progress);
        let this = self.clone();
        let reference = names.plugin_reference();
        let result = tokio::task::spawn_blocking(move || {
            this.upgrade_blocking(record, fetched, reference, &cancelled, &*report)
        })
        .await?;
        drop(pending);
        drop(cancel);
        self.sweep_in_background();
        let record = result?;
        self.publish_pull(&names, &record);
        Ok(())
    }

    fn upgrade_blocking(
        &self,
        old: PluginRecord,
        fetched: Fetched,
        reference: String,
        cancelled: &AtomicBool,
        report: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<PluginRecord> {
        let inner = &self.inner;
        let id = old.id().clone();
        let staging = inner
            .config
            .root
            .join("tmp")
            .join(format!("rootfs-{id}-upgrade"));
        if let Some(guard) = fetched.staged {
            guard.disarm();
        } else {
            check_config(&fetched.config, &inner.config.exec_root, &id)?;
            self.unpack_staging(&fetched.manifest.layers, &staging, cancelled, report)?;
        }
        if cancelled.load(Ordering::SeqCst) {
            let _ = fs::remove_dir_all(&staging);
            return Err(ManagerError::Cancelled);
        }
        let rootfs = inner.store.rootfs_dir(&id);
        let old_hex = old
            .state
            .blobs
            .config
            .as_ref()
            .map_or_else(|| "none".to_owned(), |d| d.hex().to_owned());
        let previous = inner
            .store
            .plugin_dir(&id)
            .join(format!("{PREVIOUS_ROOTFS}{old_hex}"));
        // Step 1: the old rootfs moves aside (a crash from here on is repaired at start).
        if let Err(e) = plugind_sys::fs::durable_rename(&rootfs, &previous) {
            let _ = fs::remove_dir_all(&staging);
            return Err(e.into());
        }
        plugind_sys::failpoint::hit("upgrade-after-move-aside");
        let rollback = |staging_back: bool| {
            if staging_back {
                let _ = plugind_sys::fs::durable_rename(&rootfs, &staging);
            }
            let _ = plugind_sys::fs::durable_rename(&previous, &rootfs);
            let _ = fs::remove_dir_all(&staging);
        };
        // Step 2: the new rootfs takes its place.
        if let Err(e) = plugind_sys::fs::durable_rename(&staging, &rootfs) {
            rollback(false);
            return Err(e.into());
        }
        plugind_sys::failpoint::hit("upgrade-before-record");
        // Step 3: the record (the commit point).
        let new_config = fetched.config;
        let settings = carry_settings(&old.plugin.settings, &new_config);
        let manifest = fetched.manifest;
        let updated = inner.store.update(&id, move |r| {
            r.plugin.config = new_config;
            r.plugin.settings = settings;
            r.plugin.plugin_reference = reference;
            r.state.blobs.manifest = Some(manifest.digest.clone());
            r.state.blobs.config = Some(manifest.config.digest.clone());
            r.state.blobs.layers = manifest.layers.iter().map(|l| l.digest.clone()).collect();
        });
        match updated {
            Ok(record) => {
                // Step 4: the old rootfs goes; a crash before leaves it for the repair.
                if let Err(e) = fs::remove_dir_all(&previous) {
                    tracing::warn!(path = %previous.display(), error = %e, "cannot remove the previous rootfs");
                }
                Ok(record)
            }
            Err(e) => {
                rollback(true);
                Err(e.into())
            }
        }
    }

    /// Fails fast on a taken local name (`Store::add` checks again under its lock).
    fn check_name_free(&self, local: &str) -> Result<()> {
        if self.inner.store.list().iter().any(|r| r.name() == local) {
            return Err(plugind_store::StoreError::NameExists {
                name: local.to_owned(),
            }
            .into());
        }
        Ok(())
    }

    /// Reports the start, fetches config and layers into the blob store (each digest pending
    /// from before its download until `pending` is dropped) and checks the privileges and the
    /// config. A single layer that is downloaded is unpacked into `staging` while it streams
    /// (`Fetched::staged`); otherwise the caller unpacks from the store.
    async fn fetch_all(
        &self,
        remote: &Reference,
        manifest: &PluginManifest,
        request: RemoteRequest<'_>,
        pending: &mut create::PendingBlobs<'_>,
        (staging, id, shared): (&Path, &PluginId, &SharedProgress),
    ) -> Result<Fetched> {
        let progress: ProgressFn<'_> = &**shared;
        let tag_or_digest = remote
            .digest()
            .map(ToString::to_string)
            .or_else(|| remote.tag().map(str::to_owned))
            .unwrap_or_else(|| "latest".to_owned());
        progress(Progress::Named {
            status: format!("Pulling from {}", remote.familiar_name()),
            id: tag_or_digest,
        });
        progress(Progress::Status(format!("Digest: {}", manifest.digest)));
        pending.add(&manifest.digest);
        pending.add(&manifest.config.digest);
        for layer in &manifest.layers {
            pending.add(&layer.digest);
        }
        self.store_manifest(manifest).await?;
        let config = self.fetch_config(remote, request.auth, manifest).await?;
        // Checked before the layers are downloaded (Docker checks after extracting them):
        // refused privileges cost no download.
        let wanted = plugind_store::privileges(&config);
        if !privileges_match(&wanted, request.privileges) {
            return Err(ManagerError::IncorrectPrivileges);
        }
        // Before any layer is unpacked: a config that cannot run costs no download.
        check_config(&config, &self.inner.config.exec_root, id)?;
        let registry = self.registry()?;
        let mut staged = None;
        for layer in &manifest.layers {
            if !layer.is_gzip_layer() {
                return Err(ManagerError::Distribution(
                    DistributionError::UnsupportedMediaType {
                        what: "layer",
                        media_type: layer.media_type.clone(),
                    },
                ));
            }
            let hex = layer.digest.hex().to_owned();
            if self.inner.blobs.contains(&layer.digest) {
                progress(Progress::step("Already exists", &hex));
                continue;
            }
            progress(Progress::step("Waiting", &hex));
            let total = layer.size;
            let step = (total / 50).max(64 << 10);
            let last = std::sync::atomic::AtomicU64::new(0);
            let on_bytes = |n: u64| {
                let before = last.load(Ordering::Relaxed);
                if n >= total || n.saturating_sub(before) >= step {
                    last.store(n, Ordering::Relaxed);
                    progress(Progress::bytes("Downloading", &hex, n, total));
                }
            };
            if manifest.layers.len() != 1 {
                registry
                    .fetch_blob(remote, request.auth, layer, &self.inner.blobs, &on_bytes)
                    .await?;
                progress(Progress::step("Download complete", &hex));
                continue;
            }
            let streaming = self.start_streaming_unpack(staging, layer, shared);
            let tee: BlobTee = {
                let sink = Arc::clone(&streaming.sink);
                Arc::new(move |at, bytes| sink.feed(at, bytes))
            };
            let fetched = registry
                .fetch_blob_teed(
                    remote,
                    request.auth,
                    layer,
                    &self.inner.blobs,
                    &on_bytes,
                    Some(tee),
                )
                .await;
            let intact = streaming.sink.finish(layer.size);
            let unpacked = match streaming.task.await {
                Ok(r) => r,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            if fetched.is_ok() && intact {
                progress(Progress::step("Download complete", &hex));
                // The unpacker saw exactly the bytes whose digest the store just checked.
                unpacked?;
                progress(Progress::step("Complete", &hex));
                staged = Some(streaming.guard);
                continue;
            }
            // A failed download, or one the unpacker did not see whole (resumed, or another
            // pull fetched the blob): what it unpacked goes; the caller unpacks from the store.
            streaming.guard.disarm();
            let dest = staging.to_owned();
            tokio::task::spawn_blocking(move || {
                if dest.exists() {
                    let _ = fs::remove_dir_all(&dest);
                }
            })
            .await?;
            match fetched? {
                FetchOutcome::AlreadyExists | FetchOutcome::Downloaded => {
                    progress(Progress::step("Download complete", &hex));
                }
            }
        }
        Ok(Fetched {
            manifest: manifest.clone(),
            config,
            staged,
        })
    }

    /// The manifest's bytes in the blob store (push rebuilds from stored blobs; the record
    /// names it).
    async fn store_manifest(&self, manifest: &PluginManifest) -> Result<()> {
        if self.inner.blobs.contains(&manifest.digest) {
            return Ok(());
        }
        let bytes = manifest.bytes.clone();
        let digest = manifest.digest.clone();
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let size = bytes.len() as u64;
            match this.inner.blobs.ingest(
                // A ref of its own: concurrent pulls of one manifest must not meet on one
                // writer lock (the commit of the same bytes is `AlreadyExists`, which is fine).
                &format!("manifest-{}-{:016x}", digest.hex(), rand::random::<u64>()),
                &bytes[..],
                Some((size, &digest)),
            ) {
                Ok(_) | Err(plugind_blobstore::BlobError::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(ManagerError::from(e)),
            }
        })
        .await?
    }

    /// Unpacks `layers` in order into a new `staging` directory and syncs it; on failure or
    /// cancellation the directory is removed.
    fn unpack_staging(
        &self,
        layers: &[plugind_distribution::Descriptor],
        staging: &Path,
        cancelled: &AtomicBool,
        report: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<()> {
        let inner = &self.inner;
        if staging.exists() {
            let _ = fs::remove_dir_all(staging);
        }
        fs::create_dir(staging).map_err(|e| io_err("create directory", staging, e))?;
        let result = (|| {
            for layer in layers {
                let hex = layer.digest.hex().to_owned();
                let total = layer.size;
                let step = (total / 50).max(32 << 10);
                let last = std::sync::atomic::AtomicU64::new(0);
                layer::unpack_layer_reporting(
                    &inner.blobs,
                    &layer.digest,
                    staging,
                    &inner.config.layer_limits,
                    &|n| {
                        let before = last.load(Ordering::Relaxed);
                        if n >= total || n.saturating_sub(before) >= step || before == 0 {
                            last.store(n.max(1), Ordering::Relaxed);
                            report(Progress::bytes("Extracting", &hex, n, total));
                        }
                        !cancelled.load(Ordering::SeqCst)
                    },
                )?;
                report(Progress::step("Complete", &hex));
            }
            plugind_sys::fs::sync_filesystem(staging)?;
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(staging);
        }
        if cancelled.load(Ordering::SeqCst) {
            let _ = fs::remove_dir_all(staging);
            return Err(ManagerError::Cancelled);
        }
        result
    }

    /// The `pull` event: `Actor.ID` is the remote, `name` the local name (as Docker).
    fn publish_pull(&self, names: &PullNames, record: &PluginRecord) {
        let mut event = PluginEvent::now("pull", record.id(), record.name());
        event.id = names.plugin_reference_for_event();
        self.inner.events.publish(event);
    }

    fn sweep_in_background(&self) {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.sweep_blobs());
    }
}

impl PullNames {
    /// `Actor.ID` of the `pull` event: the remote with its tag (distribution.md §3.2).
    fn plugin_reference_for_event(&self) -> String {
        if self.remote.digest().is_some() {
            self.remote.familiar_string()
        } else {
            self.remote.clone().with_default_tag().familiar_string()
        }
    }
}

/// Settings after an upgrade: the new config's initial settings, with the old values kept for
/// every env variable, mount and device the new config still declares, and the old args when
/// the new config still has settable args.
fn carry_settings(old: &PluginSettings, new: &PluginConfig) -> PluginSettings {
    let mut settings = PluginSettings::initial(new);
    for entry in &mut settings.env {
        let name = entry
            .split_once('=')
            .map_or(entry.as_str(), |(n, _)| n)
            .to_owned();
        if let Some(kept) = old
            .env
            .iter()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) == name)
        {
            entry.clone_from(kept);
        }
    }
    for m in &mut settings.mounts {
        if let Some(kept) = old
            .mounts
            .iter()
            .find(|o| o.name == m.name && !m.name.is_empty())
        {
            m.source.clone_from(&kept.source);
        }
    }
    for d in &mut settings.devices {
        if let Some(kept) = old
            .devices
            .iter()
            .find(|o| o.name == d.name && !d.name.is_empty())
        {
            d.path.clone_from(&kept.path);
        }
    }
    if new.args.settable.as_ref().is_some_and(|s| !s.is_empty()) && !new.args.name.is_empty() {
        settings.args.clone_from(&old.args);
    }
    settings
}

/// Registry failures while resolving: Docker's prefix, except the not-a-plugin text, which
/// Docker gives bare.
fn resolve_error(e: DistributionError) -> ManagerError {
    match e {
        DistributionError::NotAPlugin { .. } => ManagerError::Distribution(e),
        e => ManagerError::Resolve(e),
    }
}

/// Finishes or rolls back upgrades a crash cut (called at start, before plugins are
/// restored): a `rootfs-previous-<hex>` next to the record means the switch was in progress.
/// If the record still names config `<hex>`, the upgrade did not commit: the previous rootfs
/// goes back. Otherwise the record is the new version and the previous rootfs is deleted.
pub(super) fn repair_upgrades(store: &Store) {
    for record in store.list() {
        let dir = store.plugin_dir(record.id());
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(hex) = file_name
                .to_str()
                .and_then(|n| n.strip_prefix(PREVIOUS_ROOTFS))
            else {
                continue;
            };
            let recorded = record
                .state
                .blobs
                .config
                .as_ref()
                .map_or("none", Digest::hex);
            let previous = entry.path();
            let rootfs = store.rootfs_dir(record.id());
            if recorded == hex {
                tracing::warn!(plugin = %record.id(), "rolling back an upgrade cut by a crash");
                if rootfs.exists() {
                    if let Err(e) = plugind_sys::tree::remove_tree_same_device(&rootfs) {
                        tracing::warn!(error = %e, "cannot remove the new rootfs of a cut upgrade");
                        continue;
                    }
                }
                if let Err(e) = plugind_sys::fs::durable_rename(&previous, &rootfs) {
                    tracing::warn!(error = %e, "cannot restore the rootfs of a cut upgrade");
                }
            } else {
                tracing::info!(plugin = %record.id(), "finishing an upgrade cut by a crash");
                let _ = fs::remove_dir_all(&previous);
            }
        }
    }
}

#[cfg(test)]
mod tests;
