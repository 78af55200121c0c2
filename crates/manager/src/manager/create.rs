//! `create`: the upload streamed into a layer blob without holding the sweep lock while the
//! rootfs is unpacked from the same bytes (one pass, `layer::import_create_tar_unpacking`), the
//! rootfs synced and published by rename, the record written last; and the blob sweeps that must
//! never race it.

use super::*;

/// Blobs a create committed and has not recorded yet; dropping it (record written, or the
/// create failed) makes them ordinary blobs again, live only if a record refers to them.
pub(super) struct PendingBlobs<'m> {
    manager: &'m Manager,
    digests: Vec<plugind_types::Digest>,
}

impl<'m> PendingBlobs<'m> {
    pub(super) fn new(manager: &'m Manager) -> Self {
        PendingBlobs {
            manager,
            digests: Vec::new(),
        }
    }

    pub(super) fn add(&mut self, digest: &plugind_types::Digest) {
        *lock(&self.manager.inner.pending_blobs)
            .entry(digest.clone())
            .or_default() += 1;
        self.digests.push(digest.clone());
    }
}

impl Drop for PendingBlobs<'_> {
    fn drop(&mut self) {
        let mut pending = lock(&self.manager.inner.pending_blobs);
        for d in self.digests.drain(..) {
            if let Some(n) = pending.get_mut(&d) {
                *n -= 1;
                if *n == 0 {
                    pending.remove(&d);
                }
            }
        }
    }
}

impl Manager {
    /// Creates a plugin from a `docker plugin create` tar (read from a blocking context).
    /// Returns the new plugin's id. A failure at any step leaves nothing behind.
    pub async fn create(
        &self,
        name: &str,
        mut tar: Box<dyn std::io::Read + Send>,
    ) -> Result<PluginId> {
        let checked = Reference::parse_normalized(name)
            .map_err(|source| ManagerError::InvalidName {
                name: name.to_owned(),
                source,
            })
            .and_then(|reference| {
                if reference.digest().is_some() {
                    return Err(ManagerError::CanonicalName);
                }
                let stored_name = reference.with_default_tag().familiar_string();
                // Fail fast on a taken name; `Store::add` checks again under its lock.
                if self
                    .inner
                    .store
                    .list()
                    .iter()
                    .any(|r| r.name() == stored_name)
                {
                    return Err(plugind_store::StoreError::NameExists { name: stored_name }.into());
                }
                Ok(stored_name)
            });
        let this = self.clone();
        let record = tokio::task::spawn_blocking(move || {
            let result =
                checked.and_then(|stored_name| this.create_blocking(stored_name, &mut tar));
            if result.is_err() {
                // Read the rest of the upload so the client gets the answer, not a broken pipe.
                let _ = std::io::copy(&mut tar, &mut std::io::sink());
            }
            result
        })
        .await??;
        self.publish("create", &record);
        Ok(record.id().clone())
    }

    pub(super) fn create_blocking(
        &self,
        name: String,
        tar: &mut dyn std::io::Read,
    ) -> Result<PluginRecord> {
        let inner = &self.inner;
        let id = PluginId::from_bytes(rand::random());
        // The upload streams into an ingest with no lock held (a sweep never removes an ingest
        // its writer holds): one slow client blocks no other create and no `rm`. Only the
        // commit, which makes a blob a sweep could see, holds `gc` shared; from then until the
        // record refers to it, the blob is pending, which sweeps treat as live.
        let mut pending = PendingBlobs {
            manager: self,
            digests: Vec::new(),
        };
        // The rootfs is unpacked from the layer as the layer is made (one pass over the upload).
        let started = std::time::Instant::now();
        let staging = inner.config.root.join("tmp").join(format!("rootfs-{id}"));
        fs::create_dir(&staging).map_err(|e| io_err("create directory", &staging, e))?;
        let imported = layer::import_create_tar_unpacking(
            &inner.blobs,
            &format!("create-{id}"),
            tar,
            &staging,
            &inner.config.layer_limits,
            || self.gc_shared(),
        );
        let (imported, gc) = match imported {
            Ok(imported) => imported,
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                return Err(e.into());
            }
        };
        pending.add(&imported.layer);
        drop(gc);
        let imported_at = started.elapsed();
        let result = (|| {
            let mut config = PluginConfig::from_json(&imported.config)
                .map_err(|e| ManagerError::Config { detail: e.detail() })?;
            check_config(&config, &inner.config.exec_root, &id)?;
            config.docker_version = inner.config.docker_version.clone();
            config.rootfs = Some(PluginRootfs {
                diff_ids: vec![imported.layer.clone()],
                r#type: "layers".into(),
            });
            // Docker's config blob (Go's encoding plus "\n"), so a push sends the bytes Docker
            // would and the stored blob is the one pushed.
            let config_json = plugind_distribution::plugin_config_blob(&config);
            let gc = self.gc_shared();
            let config_blob =
                match inner
                    .blobs
                    .ingest(&format!("config-{id}"), &config_json[..], None)
                {
                    Ok(info) => info.digest,
                    Err(plugind_blobstore::BlobError::AlreadyExists { digest, .. }) => digest,
                    Err(e) => return Err(e.into()),
                };
            pending.add(&config_blob);
            drop(gc);
            // The rootfs must be on disk before the rename and the record make it a plugin's:
            // after a power loss, a record must never point at empty or truncated files.
            let synced_from = started.elapsed();
            plugind_sys::fs::sync_filesystem(&staging)?;
            let synced_at = started.elapsed();
            let dir = inner.store.plugin_dir(&id);
            fs::create_dir(&dir).map_err(|e| io_err("create directory", &dir, e))?;
            let rootfs = inner.store.rootfs_dir(&id);
            if let Err(e) = plugind_sys::fs::durable_rename(&staging, &rootfs) {
                let _ = fs::remove_dir_all(&staging);
                let _ = fs::remove_dir_all(&dir);
                return Err(e.into());
            }
            let mut record = PluginRecord::new(
                id.clone(),
                name.clone(),
                config,
                name.clone(),
                SystemTime::now(),
            );
            record.state.blobs.config = Some(config_blob);
            record.state.blobs.layers = vec![imported.layer.clone()];
            // A crash here leaves a plugin directory without a record: the next start deletes
            // it (the record is written last, so the plugin never existed).
            plugind_sys::failpoint::hit("create-after-rename");
            if let Err(e) = inner.store.add(record.clone()) {
                let _ = fs::remove_dir_all(&dir);
                return Err(e.into());
            }
            tracing::debug!(
                plugin = %id,
                import_and_unpack = ?imported_at,
                config = ?synced_from - imported_at,
                sync_rootfs = ?synced_at - synced_from,
                publish = ?started.elapsed() - synced_at,
                "created"
            );
            Ok(record)
        })();
        drop(pending);
        if result.is_err() {
            // Gone already once renamed into the plugin directory.
            let _ = fs::remove_dir_all(&staging);
            self.sweep_blobs();
        }
        result
    }

    /// `gc` held shared: no sweep runs while a create commits a blob and marks it pending.
    pub(super) fn gc_shared(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        plugind_sys::sync::read(&self.inner.gc)
    }

    /// Deletes every blob no plugin refers to (and abandoned ingests older than an hour).
    pub(super) fn sweep_blobs(&self) {
        self.sweep_blobs_with(Duration::from_secs(3600));
    }

    /// Deletes every blob neither a record nor a create in progress refers to, and every
    /// ingest no writer holds that is older than `ingest_grace`.
    pub(super) fn sweep_blobs_with(&self, ingest_grace: Duration) {
        let _gc = plugind_sys::sync::write(&self.inner.gc);
        let mut live: HashSet<_> = self
            .inner
            .store
            .list()
            .into_iter()
            .flat_map(|r| {
                let b = r.state.blobs;
                b.layers.into_iter().chain(b.config).chain(b.manifest)
            })
            .collect();
        live.extend(lock(&self.inner.pending_blobs).keys().cloned());
        match self.inner.blobs.sweep(&live, ingest_grace) {
            Ok(report) => tracing::debug!(?report, "swept blobs"),
            Err(e) => tracing::warn!(error = %e, "blob sweep failed"),
        }
    }

    // ----- enable ------------------------------------------------------------------------
}
