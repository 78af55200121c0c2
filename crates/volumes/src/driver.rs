//! The volume service's view of driver plugins: [`PluginGetter`] (how to find a driver and hold
//! a reference on it), [`DriverHandle`], per-call deadlines ([`VolumeConfig`]), and the typed
//! `VolumeDriver.*` calls of plugin-protocol.md §4.1.

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use plugind_manager::client::{PluginCallError, PluginClient};
use serde::Deserialize;
use serde_json::json;

use crate::{error::Result, volume::normalize_scope};

/// The plugin capability volume drivers implement (`docker.volumedriver/1.0`).
pub const CAPABILITY: &str = "volumedriver";

/// A driver plugin found by a [`PluginGetter`].
#[derive(Debug, Clone)]
pub struct DriverHandle {
    /// The plugin's full name (`vol:latest`); recorded as the volume's `Driver`.
    pub name: String,
    /// The plugin's id; recorded with the volume, so that a later plugin of the same name
    /// (after `docker plugin rm -f` and a new create) is never taken for the volume's driver.
    /// Empty when the getter does not know ids.
    pub id: String,
    /// A client for the plugin's socket.
    pub client: PluginClient,
}

/// How the volume service finds driver plugins: Docker's plugin getter, reduced to what volumes
/// need. Implemented for [`plugind_manager::Manager`] in [`crate::getter`]; tests use fakes.
///
/// Errors are [`crate::VolumeError::DriverLookup`] (or [`crate::VolumeError::Release`]) with the
/// kind of the underlying failure: not found for a missing plugin or one that is not a volume
/// driver, failed precondition for one that is not enabled.
#[async_trait]
pub trait PluginGetter: Send + Sync + std::fmt::Debug {
    /// Takes one persisted reference on the enabled volume-driver plugin `driver` for `holder`
    /// (`volume:<name>`); references are counted per holder.
    async fn acquire(&self, driver: &str, holder: &str) -> Result<DriverHandle>;
    /// Drops one reference of `holder`; unknown plugins and holders are not errors.
    async fn release(&self, driver: &str, holder: &str) -> Result<()>;
    /// Finds the enabled volume-driver plugin `driver` without taking a reference.
    async fn get(&self, driver: &str) -> Result<DriverHandle>;
    /// True while the plugin with this full id exists (enabled or not). A volume recorded with
    /// the id of a plugin that is gone is an orphan: no driver is called for it, whatever
    /// plugin has the name now. The default (`true`) suits getters without ids.
    async fn plugin_exists(&self, _id: &str) -> bool {
        true
    }
    /// The id of the plugin on which `holder` holds a reference, if any; used once at open to
    /// record the driver's id in volume records of an older plugind. The default knows none.
    async fn reference_holder(&self, _holder: &str) -> Option<String> {
        None
    }
    /// Publishes a volume event (Docker's `LogVolumeEvent`: `Actor.ID` = the volume name) where
    /// the engine's events go. The default drops it.
    fn log_volume_event(
        &self,
        _volume: &str,
        _action: &str,
        _attributes: BTreeMap<String, String>,
    ) {
    }
}

/// Deadlines of the volume service's driver calls. Docker's are in [`VolumeConfig::DOCKER`];
/// tests use short ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeConfig {
    /// `VolumeDriver.Create` (Docker: 2 min).
    pub create_timeout: Duration,
    /// `VolumeDriver.Mount` (Docker: 2 min).
    pub mount_timeout: Duration,
    /// Every other call: `Remove`, `Unmount`, `Get`, `List`, `Capabilities`, `Path`
    /// (Docker: 1 min).
    pub call_timeout: Duration,
}

impl VolumeConfig {
    /// Docker's per-call timeouts (plugin-protocol.md §3.3).
    pub const DOCKER: VolumeConfig = VolumeConfig {
        create_timeout: Duration::from_secs(120),
        mount_timeout: Duration::from_secs(120),
        call_timeout: Duration::from_secs(60),
    };

    /// The same deadline for every call.
    pub fn uniform(timeout: Duration) -> VolumeConfig {
        VolumeConfig {
            create_timeout: timeout,
            mount_timeout: timeout,
            call_timeout: timeout,
        }
    }
}

/// A volume as a driver describes it (`VolumeDriver.Get` / `List`).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct DriverVolume {
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "Mountpoint", default)]
    pub mountpoint: String,
    #[serde(rename = "Status", default)]
    pub status: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Typed `VolumeDriver.*` calls on one driver, each with its deadline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Driver<'a> {
    pub handle: &'a DriverHandle,
    pub config: &'a VolumeConfig,
}

type CallResult<T> = std::result::Result<T, PluginCallError>;

fn protocol(method: &str, plugin: &str, detail: String) -> PluginCallError {
    PluginCallError::Protocol {
        plugin: plugin.to_owned(),
        method: method.to_owned(),
        detail,
    }
}

impl Driver<'_> {
    async fn call(
        &self,
        method: &str,
        body: serde_json::Value,
        timeout: Duration,
    ) -> CallResult<serde_json::Value> {
        let began = std::time::Instant::now();
        let answer = self.handle.client.call(method, Some(&body), timeout).await;
        plugind_manager::metrics::Metrics::global().record_driver_call(
            &self.handle.name,
            method,
            began.elapsed(),
            answer.is_ok(),
        );
        answer
    }

    /// `VolumeDriver.Capabilities` -> scope. Only unreachable or hung drivers are errors: any
    /// other failure (404 included) means `local`, as in Docker.
    pub async fn scope(&self) -> CallResult<String> {
        match self
            .call(
                "VolumeDriver.Capabilities",
                json!({}),
                self.config.call_timeout,
            )
            .await
        {
            Ok(v) => Ok(normalize_scope(
                v.pointer("/Capabilities/Scope")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("local"),
            )),
            Err(e @ (PluginCallError::Timeout { .. } | PluginCallError::Connect { .. })) => Err(e),
            Err(e) => {
                tracing::debug!(driver = %self.handle.name, error = %e, "no capabilities, scope local");
                Ok("local".to_owned())
            }
        }
    }

    /// `VolumeDriver.Get`; `Ok(None)` when the driver has no such volume (`"Volume": null`).
    pub async fn get(&self, name: &str) -> CallResult<Option<DriverVolume>> {
        let method = "VolumeDriver.Get";
        let v = self
            .call(method, json!({ "Name": name }), self.config.call_timeout)
            .await?;
        match v.get("Volume") {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(vol) => serde_json::from_value(vol.clone())
                .map(Some)
                .map_err(|e| protocol(method, &self.handle.name, format!("invalid Volume: {e}"))),
        }
    }

    /// `VolumeDriver.Create`.
    pub async fn create(&self, name: &str, opts: &BTreeMap<String, String>) -> CallResult<()> {
        self.call(
            "VolumeDriver.Create",
            json!({ "Name": name, "Opts": opts }),
            self.config.create_timeout,
        )
        .await
        .map(drop)
    }

    /// `VolumeDriver.Remove`.
    pub async fn remove(&self, name: &str) -> CallResult<()> {
        self.call(
            "VolumeDriver.Remove",
            json!({ "Name": name }),
            self.config.call_timeout,
        )
        .await
        .map(drop)
    }

    /// `VolumeDriver.Mount` -> the mountpoint.
    pub async fn mount(&self, name: &str, id: &str) -> CallResult<String> {
        let v = self
            .call(
                "VolumeDriver.Mount",
                json!({ "Name": name, "ID": id }),
                self.config.mount_timeout,
            )
            .await?;
        Ok(v.get("Mountpoint")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned())
    }

    /// `VolumeDriver.Unmount`.
    pub async fn unmount(&self, name: &str, id: &str) -> CallResult<()> {
        self.call(
            "VolumeDriver.Unmount",
            json!({ "Name": name, "ID": id }),
            self.config.call_timeout,
        )
        .await
        .map(drop)
    }

    /// `VolumeDriver.List` -> name -> mountpoint.
    pub async fn list(&self) -> CallResult<BTreeMap<String, String>> {
        let method = "VolumeDriver.List";
        let v = self
            .call(method, json!({}), self.config.call_timeout)
            .await?;
        let vols: Vec<DriverVolume> = match v.get("Volumes") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(list) => serde_json::from_value(list.clone()).map_err(|e| {
                protocol(method, &self.handle.name, format!("invalid Volumes: {e}"))
            })?,
        };
        Ok(vols.into_iter().map(|d| (d.name, d.mountpoint)).collect())
    }
}
