//! [`PluginGetter`] for the real plugin manager: volume drivers are managed plugins with the
//! `volumedriver` capability, and each volume's reference is a persisted manager reference.

use std::collections::BTreeMap;

use async_trait::async_trait;
use plugind_manager::{events::PluginEvent, Manager, ManagerError, PluginHandle};

use crate::{
    driver::{DriverHandle, PluginGetter, CAPABILITY},
    error::{Result, VolumeError},
};

fn lookup_error(driver: &str, e: &ManagerError) -> VolumeError {
    let reason = match e {
        // Docker's text (`plugin.ErrInadequateCapability`).
        ManagerError::NoCapability { capability, .. } => {
            format!("plugin does not provide {capability:?} capability")
        }
        other => other.to_string(),
    };
    VolumeError::DriverLookup {
        driver: driver.to_owned(),
        kind: e.kind(),
        reason,
    }
}

fn handle(h: PluginHandle) -> DriverHandle {
    DriverHandle {
        name: h.name,
        id: h.id.as_str().to_owned(),
        client: h.client,
    }
}

#[async_trait]
impl PluginGetter for Manager {
    async fn acquire(&self, driver: &str, holder: &str) -> Result<DriverHandle> {
        Manager::acquire(self, driver, CAPABILITY, holder)
            .await
            .map(handle)
            .map_err(|e| lookup_error(driver, &e))
    }

    async fn release(&self, driver: &str, holder: &str) -> Result<()> {
        Manager::release(self, driver, holder)
            .await
            .map_err(|e| VolumeError::Release {
                driver: driver.to_owned(),
                reason: e.to_string(),
            })
    }

    async fn get(&self, driver: &str) -> Result<DriverHandle> {
        Manager::get_enabled(self, driver, CAPABILITY)
            .map(handle)
            .map_err(|e| lookup_error(driver, &e))
    }

    async fn plugin_exists(&self, id: &str) -> bool {
        // A full id resolves to itself first; comparing guards against a name equal to it.
        self.inspect(id)
            .is_ok_and(|view| view.record.id().as_str() == id)
    }

    async fn reference_holder(&self, holder: &str) -> Option<String> {
        self.list()
            .into_iter()
            .find(|v| v.record.state.references.contains_key(holder))
            .map(|v| v.record.id().as_str().to_owned())
    }

    fn log_volume_event(&self, volume: &str, action: &str, attributes: BTreeMap<String, String>) {
        self.events()
            .publish(PluginEvent::volume(action, volume, attributes));
    }
}
