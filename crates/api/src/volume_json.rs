//! Serde types for the Engine API's volume request and response bodies, so the API crate can
//! wire the routes without modelling them again:
//!
//! | route | request | response |
//! | --- | --- | --- |
//! | `GET /volumes?filters=` | `VolumeFilters::parse` with `FilterUse::List` | 200 [`VolumeListResponse`] |
//! | `POST /volumes/create` | [`VolumeCreateRequest`] | 201 `Volume` |
//! | `GET /volumes/{name}` | — | 200 `Volume` (with `Status`) |
//! | `DELETE /volumes/{name}?force=` | — | 204, empty body |
//! | `POST /volumes/prune?filters=` | `VolumeFilters::parse` with `FilterUse::Prune` | 200 [`VolumePruneResponse`] |
//!
//! Shapes follow moby's `api/types/volume`: `Warnings` is `null` when there are none (Go's nil
//! slice), `VolumesDeleted` is `[]` when nothing was pruned (moby allocates it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use plugind_volumes::{PruneReport, Volume};

/// Body of `POST /volumes/create` (moby `volume.CreateOptions`). Every field is optional; Go
/// decodes `null` like a missing field, and unknown fields (`ClusterVolumeSpec`) are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VolumeCreateRequest {
    /// Volume name; empty or missing = a generated 64-hex name.
    #[serde(rename = "Name", default)]
    pub name: Option<String>,
    /// Driver plugin name; empty or missing = `local`.
    #[serde(rename = "Driver", default)]
    pub driver: Option<String>,
    /// Options passed to `VolumeDriver.Create`.
    #[serde(rename = "DriverOpts", default)]
    pub driver_opts: Option<BTreeMap<String, String>>,
    /// User labels.
    #[serde(rename = "Labels", default)]
    pub labels: Option<BTreeMap<String, String>>,
}

impl VolumeCreateRequest {
    /// Creates the volume this body asks for.
    pub(crate) async fn execute(
        self,
        service: &plugind_volumes::VolumeService,
    ) -> plugind_volumes::Result<Volume> {
        service
            .create(
                self.name.as_deref(),
                self.driver.as_deref().unwrap_or_default(),
                self.driver_opts.unwrap_or_default(),
                self.labels.unwrap_or_default(),
            )
            .await
    }
}

/// Body of `GET /volumes` (moby `volume.ListResponse`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct VolumeListResponse {
    /// The volumes.
    #[serde(rename = "Volumes")]
    pub volumes: Vec<Volume>,
    /// Driver failures; `null` when there are none.
    #[serde(rename = "Warnings")]
    pub warnings: Option<Vec<String>>,
}

impl VolumeListResponse {
    /// From [`plugind_volumes::VolumeService::list`]'s result.
    pub(crate) fn new(volumes: Vec<Volume>, warnings: Vec<String>) -> Self {
        VolumeListResponse {
            volumes,
            warnings: (!warnings.is_empty()).then_some(warnings),
        }
    }
}

/// Body of `POST /volumes/prune` (moby `volume.PruneReport`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VolumePruneResponse {
    /// Names of the removed volumes.
    #[serde(rename = "VolumesDeleted")]
    pub volumes_deleted: Vec<String>,
    /// Bytes freed (always 0 for plugin volumes).
    #[serde(rename = "SpaceReclaimed")]
    pub space_reclaimed: u64,
}

impl From<PruneReport> for VolumePruneResponse {
    fn from(r: PruneReport) -> Self {
        VolumePruneResponse {
            volumes_deleted: r.volumes_deleted,
            space_reclaimed: r.space_reclaimed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_accepts_what_clients_send() {
        // docker CLI 28.
        let cli: VolumeCreateRequest = serde_json::from_str(
            r#"{"Driver":"vol","DriverOpts":{},"Labels":{"a":"b"},"Name":"v1"}"#,
        )
        .unwrap();
        assert_eq!(cli.name.as_deref(), Some("v1"));
        assert_eq!(cli.labels.unwrap()["a"], "b");
        // docker-py sends nulls for what it was not given; unknown fields are ignored.
        let py: VolumeCreateRequest = serde_json::from_str(
            r#"{"Name":null,"Driver":"vol","DriverOpts":null,"Labels":null,"ClusterVolumeSpec":null}"#,
        )
        .unwrap();
        assert_eq!(py.name, None);
        assert_eq!(py.driver.as_deref(), Some("vol"));
        let empty: VolumeCreateRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, VolumeCreateRequest::default());
    }

    #[test]
    fn responses_have_mobys_shapes() {
        let list = VolumeListResponse::new(Vec::new(), Vec::new());
        assert_eq!(
            serde_json::to_string(&list).unwrap(),
            r#"{"Volumes":[],"Warnings":null}"#
        );
        let list = VolumeListResponse::new(Vec::new(), vec!["list x: boom".into()]);
        assert_eq!(
            serde_json::to_string(&list).unwrap(),
            r#"{"Volumes":[],"Warnings":["list x: boom"]}"#
        );
        let prune = VolumePruneResponse::from(PruneReport::default());
        assert_eq!(
            serde_json::to_string(&prune).unwrap(),
            r#"{"VolumesDeleted":[],"SpaceReclaimed":0}"#
        );
    }
}
