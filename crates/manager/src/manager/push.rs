//! `push`: a plugin's manifest, config and layer sent to the registry its name points at.
//!
//! A pulled plugin keeps the registry's manifest, which is pushed as stored (same digest).
//! A created plugin's manifest is rebuilt from the record: the config blob is the plugin's
//! `Config` as Docker encodes it plus `\n` (so the digest is the one Docker would give the
//! same config), the layer is the stored gzip layer, and the manifest is Docker's exact bytes.
//! The stream follows Docker's (distribution.md §2): the repository line, `Preparing` for
//! manifest, layer and config (twice, as containerd's pusher reports it), `Upload complete`
//! for each, then `aux` with tag, digest and size.

use plugind_distribution::{
    plugin_config_blob, sha256_digest, AuthConfig, PluginManifest, PushProgress,
};
use plugind_types::Digest;

use super::{create::PendingBlobs, *};
use crate::progress::{Progress, ProgressFn};

/// What a push stored in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    /// The tag pushed to.
    pub tag: String,
    /// The manifest's digest.
    pub digest: Digest,
    /// The manifest's size in bytes.
    pub size: u64,
}

impl Manager {
    /// Pushes the plugin `name` to the registry and repository its name points at (Docker:
    /// the plugin's name is the target; enabled plugins can be pushed). Reports Docker's
    /// progress objects through `progress`, ending with the `aux` object.
    pub async fn push(
        &self,
        name: &str,
        auth: &AuthConfig,
        progress: ProgressFn<'_>,
    ) -> Result<PushOutcome> {
        let record = self.inner.store.resolve(name)?;
        let target = Reference::parse_normalized(record.name())
            .map_err(|source| ManagerError::InvalidName {
                name: record.name().to_owned(),
                source,
            })?
            .with_default_tag();
        let tag = target.tag().unwrap_or("latest").to_owned();
        // Blobs this push reads stay live even if the plugin is removed meanwhile.
        let mut pending = PendingBlobs::new(self);
        let manifest = self.push_manifest(&record, &mut pending).await?;
        progress(Progress::Status(format!(
            "The push refers to repository [{}]",
            target.full_name()
        )));
        let ids = [
            &manifest.digest,
            &manifest.layers[0].digest,
            &manifest.config.digest,
        ];
        for _round in 0..2 {
            for d in ids {
                progress(Progress::step("Preparing", d.hex()));
            }
        }
        let report = |p: PushProgress| {
            if let PushProgress::Uploading {
                digest,
                current,
                total,
            } = p
            {
                progress(Progress::bytes("Pushing", digest.hex(), current, total));
            }
        };
        let registry = self.registry()?;
        let (digest, size) = registry
            .push(&target, auth, &manifest, &self.inner.blobs, &report)
            .await
            .map_err(|source| ManagerError::Push { source })?;
        drop(pending);
        for d in ids {
            progress(Progress::step("Upload complete", d.hex()));
        }
        progress(Progress::Aux(serde_json::json!({
            "Tag": tag,
            "Digest": digest.to_string(),
            "Size": size,
        })));
        Ok(PushOutcome { tag, digest, size })
    }

    /// The manifest to push: the stored one of a pulled plugin, else rebuilt from the record
    /// (its config blob stored first if the store lacks it). Every blob it names is marked
    /// pending in `pending`.
    async fn push_manifest(
        &self,
        record: &PluginRecord,
        pending: &mut PendingBlobs<'_>,
    ) -> Result<PluginManifest> {
        let blobs = record.state.blobs.clone();
        if let Some(stored) = &blobs.manifest {
            pending.add(stored);
            let digest = stored.clone();
            let bytes = self
                .blocking(move |m| std::fs::read(m.inner.blobs.blob_path(&digest)).ok())
                .await?;
            if let Some(manifest) = bytes.and_then(|b| PluginManifest::parse(b).ok()) {
                for d in manifest.layers.iter().chain([&manifest.config]) {
                    pending.add(&d.digest);
                }
                return Ok(manifest);
            }
            tracing::warn!(plugin = %record.id(), "stored manifest unreadable; rebuilding it from the record");
        }
        let Some(layer) = blobs
            .layers
            .first()
            .cloned()
            .filter(|_| blobs.layers.len() == 1)
        else {
            return Err(ManagerError::PushUnsupported {
                name: record.name().to_owned(),
                reason: "the plugin does not have exactly one layer",
            });
        };
        pending.add(&layer);
        let config_bytes = plugin_config_blob(&record.plugin.config);
        let config_digest = sha256_digest(&config_bytes);
        // Marked before it is stored: a sweep between the two would otherwise delete it.
        pending.add(&config_digest);
        let config_size = config_bytes.len() as u64;
        let expected = config_digest.clone();
        let layer_digest = layer.clone();
        let layer_size = self
            .blocking(move |m| -> Result<u64> {
                let _gc = m.gc_shared();
                match m.inner.blobs.ingest(
                    &format!("push-config-{}", expected.hex()),
                    &config_bytes[..],
                    Some((config_size, &expected)),
                ) {
                    Ok(_) | Err(plugind_blobstore::BlobError::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                Ok(m.inner.blobs.info(&layer_digest)?.size)
            })
            .await??;
        Ok(PluginManifest::for_plugin(
            (config_digest, config_size),
            (layer, layer_size),
        ))
    }
}
