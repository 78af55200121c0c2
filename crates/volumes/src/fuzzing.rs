//! Entry point for the fuzz target in `fuzz/` and the seed-corpus test on stable
//! (`tests/tests/fuzz_corpora.rs`): a volume driver's answers, decoded as the volume service
//! decodes them, and the paths and names the published sockets derive from plugins. A panic
//! or a hang is a bug; errors are expected.

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

/// `data` as `<PropagatedMount>\n<answer JSON>`, taken apart as the published sockets do: the
/// first line as a plugin name gives a published file stem, and every string of the answer
/// (and the first line itself) is scoped as an answered mountpoint. Asserts the invariants: a
/// stem never leaves its directory, a host path never leaves its base directory.
pub fn published_paths(data: &[u8]) {
    use std::path::{Component, PathBuf};

    use crate::publish::scope::{published_stem, scoped_path, PluginDirs};

    let text = String::from_utf8_lossy(data);
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    if let Some(stem) = published_stem(first) {
        assert!(!stem.contains('/') && !stem.starts_with('.') && !stem.is_empty());
    }
    let dirs = PluginDirs {
        rootfs: PathBuf::from("/r/id/rootfs"),
        propagated_mount: PathBuf::from("/r/id/propagated-mount"),
        propagated_in_plugin: first.to_owned(),
    };
    let mut paths = vec![first.to_owned()];
    if let Ok(answer) = serde_json::from_str::<serde_json::Value>(rest) {
        // Iteratively: answers nest as deep as serde_json allows.
        let mut stack = vec![&answer];
        while let Some(v) = stack.pop() {
            match v {
                serde_json::Value::String(s) => paths.push(s.clone()),
                serde_json::Value::Array(items) => stack.extend(items),
                serde_json::Value::Object(map) => stack.extend(map.values()),
                _ => {}
            }
        }
    }
    for path in paths {
        if let Ok((base, host)) = scoped_path(&dirs, &path) {
            assert!(base == dirs.rootfs || base == dirs.propagated_mount);
            let below = host.strip_prefix(&base).expect("host path below its base");
            assert!(below
                .components()
                .all(|c| matches!(c, Component::Normal(_))));
        }
    }
}
