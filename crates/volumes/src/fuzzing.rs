//! Entry point for the fuzz target in `fuzz/` and the seed-corpus test on stable
//! (`tests/tests/fuzz_corpora.rs`): a volume driver's answers, decoded as the volume service
//! decodes them. A panic or a hang is a bug; errors are expected.

use std::{collections::BTreeMap, time::Duration};

use plugind_manager::fuzzing::with_plugin_answer;

use crate::driver::{Driver, DriverHandle, VolumeConfig};

/// `data` as the answer (see `plugind_manager::fuzzing`) to every `VolumeDriver.*` call.
pub fn driver_answer(data: &[u8]) {
    with_plugin_answer(data, |client| async move {
        let handle = DriverHandle {
            name: "fuzz".to_owned(),
            id: String::new(),
            client,
        };
        let config = VolumeConfig::uniform(Duration::from_secs(5));
        let driver = Driver {
            handle: &handle,
            config: &config,
        };
        let _ = driver.scope().await;
        let _ = driver.get("v").await;
        let _ = driver.list().await;
        let _ = driver.mount("v", "id").await;
        let _ = driver.create("v", &BTreeMap::new()).await;
        let _ = driver.unmount("v", "id").await;
        let _ = driver.remove("v").await;
    });
}
