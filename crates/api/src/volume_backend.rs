//! The seam between the HTTP API and the volume service: [`VolumeBackend`], what the volume
//! routes call, and its implementation for [`plugind_volumes::VolumeService`].
//!
//! As with [`crate::PluginBackend`], the API owns everything about HTTP (routes, the `filters`
//! parameter's versions, status codes, JSON shapes) and the backend owns volume semantics and
//! the messages of its errors, which are sent to clients verbatim, so they must be Docker's texts
//! (`get v: no such volume`, `remove v: volume is in use - [id]`, ...).

use std::collections::BTreeMap;

use async_trait::async_trait;
use plugind_volumes::{PruneReport, Volume, VolumeError, VolumeFilters, VolumeService};

use crate::backend::BackendError;

/// What the API needs from the volume service. Every method is called concurrently from many
/// connections; filters arrive parsed and checked for their use (list or prune). `Debug` so
/// that [`crate::ServerOptions`], which holds it, stays printable.
#[async_trait]
pub trait VolumeBackend: std::fmt::Debug + Send + Sync + 'static {
    /// The volumes matching `filters`, and warnings (drivers that failed to answer).
    async fn list(
        &self,
        filters: &VolumeFilters,
    ) -> Result<(Vec<Volume>, Vec<String>), BackendError>;

    /// Creates a volume, or returns the existing one of that name (Docker's `POST
    /// /volumes/create` rules: `name` `None` or empty is an anonymous volume, `driver` empty the
    /// default driver). A name taken by another driver is `AlreadyExists` (409).
    async fn create(
        &self,
        name: Option<&str>,
        driver: &str,
        driver_opts: BTreeMap<String, String>,
        labels: BTreeMap<String, String>,
    ) -> Result<Volume, BackendError>;

    /// One volume; a missing one is `NotFound` (`get <name>: no such volume`).
    async fn inspect(&self, name: &str) -> Result<Volume, BackendError>;

    /// Removes a volume; in use (without `force`) is `FailedPrecondition` (409).
    async fn remove(&self, name: &str, force: bool) -> Result<(), BackendError>;

    /// Removes the unused volumes matching `filters`.
    async fn prune(&self, filters: &VolumeFilters) -> Result<PruneReport, BackendError>;
}

/// The API's view of a volume error: its kind for the status, its text verbatim.
pub(crate) fn volume_error(e: VolumeError) -> BackendError {
    BackendError::new(e.kind(), e.to_string())
}

#[async_trait]
impl VolumeBackend for VolumeService {
    async fn list(
        &self,
        filters: &VolumeFilters,
    ) -> Result<(Vec<Volume>, Vec<String>), BackendError> {
        VolumeService::list(self, filters)
            .await
            .map_err(volume_error)
    }

    async fn create(
        &self,
        name: Option<&str>,
        driver: &str,
        driver_opts: BTreeMap<String, String>,
        labels: BTreeMap<String, String>,
    ) -> Result<Volume, BackendError> {
        VolumeService::create(self, name, driver, driver_opts, labels)
            .await
            .map_err(volume_error)
    }

    async fn inspect(&self, name: &str) -> Result<Volume, BackendError> {
        self.get(name).await.map_err(volume_error)
    }

    async fn remove(&self, name: &str, force: bool) -> Result<(), BackendError> {
        VolumeService::remove(self, name, force)
            .await
            .map_err(volume_error)
    }

    async fn prune(&self, filters: &VolumeFilters) -> Result<PruneReport, BackendError> {
        VolumeService::prune(self, filters)
            .await
            .map_err(volume_error)
    }
}
