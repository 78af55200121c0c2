//! plugind-distribution: the registry client for `docker plugin install`, `push` and `upgrade`.
//!
//! [`Registry`] speaks the Docker registry HTTP API v2 for plugins: resolve a reference to its
//! schema-2 manifest, stream the config and layer blobs into the blobstore with size and digest
//! verified while they arrive, and push blobs (HEAD first, cross-repository mount, upload) and
//! the manifest. [`PluginManifest::build`] writes Docker's exact manifest bytes, so a push from
//! plugind yields the digests Docker would. [`AuthConfig`] decodes `X-Registry-Auth`.
//!
//! Everything a registry sends is hostile: sizes are capped, digests are checked against what
//! was asked for, media types are checked, error bodies are read only up to a cap.
//!
//! Why not `oci-client` (evaluated, 0.18): it asks token servers for `repository:<repo>:pull`
//! with no way to use the `repository(plugin):` class Docker's token servers expect for
//! plugins; it has no OAuth refresh-token flow for `identitytoken` credentials; it reads
//! manifests and error bodies without a cap; pushing a blob needs the whole blob in memory (or
//! its own chunking) instead of a stream from the blobstore; and it brings reqwest, a second
//! HTTP stack next to the hyper the daemon already has. The protocol needed here is small
//! (about ten request kinds), so it is written on hyper + hyper-util with rustls (ring
//! provider, the system's roots; no OpenSSL, no C build of aws-lc).
//!
//! Modules: `registry` (the operations), `transport` (deadlines, retries, auth round,
//! redirects, capped reads), `endpoint` (which URL a registry is reached at), `challenge`
//! (`WWW-Authenticate`), `manifest` (Docker's bytes, parsing, Go's JSON encoding), `auth`
//! (`X-Registry-Auth`).
#![warn(missing_docs)]

mod auth;
mod challenge;
mod endpoint;
mod error;
mod manifest;
mod registry;
mod transport;

pub use auth::AuthConfig;
pub use error::{DistributionError, Result};
pub use manifest::{
    go_json, plugin_config_blob, sha256_digest, Descriptor, PluginManifest, MAX_CONFIG_SIZE,
    MAX_MANIFEST_SIZE, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR, MEDIA_TYPE_MANIFEST_LIST,
    MEDIA_TYPE_MANIFEST_V2, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_TAR, MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_PLUGIN_CONFIG,
};
pub use registry::{BlobTee, FetchOutcome, PushProgress, Registry, RegistryOptions};
