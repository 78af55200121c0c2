//! [`Registry`]: the registry client (resolve, fetch, push) with its options.

use std::time::Duration;

use plugind_blobstore::BlobStore;
use plugind_types::{Digest, Reference};

use crate::{AuthConfig, Descriptor, DistributionError, PluginManifest, Result};

/// How the client reaches registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Registries reached over plain HTTP besides loopback: `host[:port]` or a CIDR
    /// (`10.0.0.0/8`), as dockerd's `--insecure-registry`.
    pub insecure_registries: Vec<String>,
    /// Deadline for connecting and receiving a response's headers, and for each read of a body.
    pub request_timeout: Duration,
    /// Retries after a transient failure (connect error, 5xx, 429), with backoff.
    pub retries: u32,
    /// The `User-Agent` sent.
    pub user_agent: String,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure_registries: Vec::new(),
            request_timeout: Duration::from_secs(30),
            retries: 3,
            user_agent: concat!("plugind/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Whether a blob was already in the blobstore or had to be downloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The blob was already stored: nothing was downloaded.
    AlreadyExists,
    /// The blob was downloaded (by this call or a concurrent one) and committed.
    Downloaded,
}

/// Progress of a push, per blob (layers, then config) and manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushProgress {
    /// The object is about to be checked.
    Preparing(Digest),
    /// Bytes of a blob sent so far.
    Uploading {
        /// The blob.
        digest: Digest,
        /// Bytes sent.
        current: u64,
        /// The blob's size.
        total: u64,
    },
    /// The object is in the registry: uploaded, or already there (HEAD answered 200).
    UploadComplete(Digest),
    /// The blob was mounted from another repository of the same registry.
    MountedFrom {
        /// The blob.
        digest: Digest,
        /// The repository it was mounted from.
        repository: String,
    },
}

/// A registry client: HTTP(S) connections, and bearer tokens cached per registry and scope.
///
/// Cheap to clone; clones share connections and tokens.
#[derive(Clone, Debug)]
pub struct Registry {
    opts: std::sync::Arc<RegistryOptions>,
}

impl Registry {
    /// Builds a client (loads the system's TLS roots).
    pub fn new(opts: RegistryOptions) -> Result<Registry> {
        Ok(Registry {
            opts: std::sync::Arc::new(opts),
        })
    }

    /// Resolves a reference (tag or digest) to its manifest: size capped, digest checked
    /// against a digest in the reference and the registry's `Docker-Content-Digest`, media
    /// types checked.
    pub async fn resolve(&self, r: &Reference, auth: &AuthConfig) -> Result<PluginManifest> {
        let _ = (r, auth, &self.opts);
        Err(DistributionError::Client("not implemented yet".into()))
    }

    /// Fetches a small blob (the config), verifies size and digest, stores it in the blobstore
    /// (or reads it from there when present) and returns its bytes.
    pub async fn fetch_config(
        &self,
        r: &Reference,
        auth: &AuthConfig,
        d: &Descriptor,
        store: &BlobStore,
    ) -> Result<Vec<u8>> {
        let _ = (r, auth, d, store);
        Err(DistributionError::Client("not implemented yet".into()))
    }

    /// Streams a blob into the blobstore, size and digest verified while it arrives.
    ///
    /// `progress(bytes_so_far)` is called as data arrives. Two concurrent calls for one digest
    /// download it once (the blobstore's per-ref writer lock); a dropped future leaves only a
    /// resumable ingest, which the next call continues with a range request.
    pub async fn fetch_blob(
        &self,
        r: &Reference,
        auth: &AuthConfig,
        d: &Descriptor,
        store: &BlobStore,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<FetchOutcome> {
        let _ = (r, auth, d, store, progress);
        Err(DistributionError::Client("not implemented yet".into()))
    }

    /// Pushes the manifest's blobs (HEAD first, cross-repository mount when the blob is known
    /// in another repository of the registry, upload otherwise), then the manifest under the
    /// target's tag. Returns the manifest digest and size as stored.
    pub async fn push(
        &self,
        target: &Reference,
        auth: &AuthConfig,
        manifest: &PluginManifest,
        store: &BlobStore,
        progress: &(dyn Fn(PushProgress) + Send + Sync),
    ) -> Result<(Digest, u64)> {
        let _ = (target, auth, manifest, store, progress);
        Err(DistributionError::Client("not implemented yet".into()))
    }
}
