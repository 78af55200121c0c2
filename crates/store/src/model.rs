//! The plugin record: Docker's `Plugin` object plus the state plugind keeps beside it.
//!
//! On disk a record is one JSON object: the Docker fields at top level, in Docker's key order, so
//! `<root>/<id>/config.json` reads like moby's plugin object, and a `"plugind"` object with the
//! extra state (format version, creation time, observed state, references, runtime, blobs).
//! `Enabled` is the *desired* state: what the user last asked for. What actually happened lives
//! in [`ObservedState`], so a failed start never rewrites the user's intent.

use std::{collections::BTreeMap, time::SystemTime};

use serde::{Deserialize, Serialize};

use plugind_types::{
    config::{PluginConfig, PluginSettings},
    Digest, PluginId, Reference,
};

use crate::{privileges::PluginPrivilege, StoreError};

/// The record format this build writes; records with a higher version are left alone at reload.
pub const RECORD_FORMAT_VERSION: u32 = 1;

/// Docker's `Plugin` object; its JSON is exactly what `GET /plugins/{name}/json` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plugin {
    /// The plugin's `config.json` (after engine rewrites such as `rootfs`).
    #[serde(rename = "Config")]
    pub config: PluginConfig,
    /// The desired state: true when the user asked for the plugin to be enabled.
    #[serde(rename = "Enabled")]
    pub enabled: bool,
    /// The plugin id (random 64 hex).
    #[serde(rename = "Id")]
    pub id: PluginId,
    /// `<familiar repo>:<tag>`, unique in the store (see [`canonical_name`]).
    #[serde(rename = "Name")]
    pub name: String,
    /// Where the plugin came from: the full remote after pull, the name after create.
    #[serde(
        rename = "PluginReference",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub plugin_reference: String,
    /// The user's settings (env, args, mounts, devices).
    #[serde(rename = "Settings")]
    pub settings: PluginSettings,
}

/// What the plugin's task was last seen doing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum RunState {
    /// Not running (never started, disabled, or exited and not restarted).
    #[default]
    Stopped,
    /// Running and answering on its socket.
    Running {
        /// The plugin's init process as seen from the host.
        pid: u32,
    },
    /// The last start attempt failed; the desired state is left as the user set it.
    Failed {
        /// What went wrong, for `plugin ls`/`inspect` style reporting.
        reason: String,
    },
}

/// How the plugin's task last exited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit status as the shim reports it (128 + signal for a signalled process).
    pub status: u32,
    /// When the exit happened (RFC 3339 UTC on disk).
    #[serde(with = "crate::time::rfc3339")]
    pub at: SystemTime,
}

/// The observed state, kept apart from the desired `Enabled`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ObservedState {
    /// Running, stopped or failed.
    pub state: RunState,
    /// Restarts after unexpected exits since the user last enabled the plugin.
    pub restart_count: u32,
    /// The last exit, if the task ever exited.
    pub last_exit: Option<ExitRecord>,
}

/// Blobs the plugin was installed from, so blob GC knows which ones are live.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginBlobs {
    /// Manifest digest (pull/push); absent for plugins made by `create`.
    pub manifest: Option<Digest>,
    /// Config blob digest.
    pub config: Option<Digest>,
    /// Layer blobs (gzip), in order; moby's `Blobsums`.
    pub layers: Vec<Digest>,
}

/// plugind's own state about a plugin: the `"plugind"` object of the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginState {
    /// When the plugin was created or pulled (RFC 3339 UTC on disk).
    #[serde(with = "crate::time::rfc3339")]
    pub created: SystemTime,
    /// What the task was last seen doing.
    #[serde(default)]
    pub observed: ObservedState,
    /// References held on the plugin: holder name (e.g. `volume:<name>`) -> count. Persisted so
    /// that holders such as volumes can re-acquire consistently after a restart.
    #[serde(default)]
    pub references: BTreeMap<String, u32>,
    /// The OCI runtime chosen for this plugin (`runc`, `crun`, ...); `None` = daemon default.
    #[serde(default)]
    pub runtime: Option<String>,
    /// Blobs the plugin came from.
    #[serde(default)]
    pub blobs: PluginBlobs,
    /// plugind's own per-plugin options, set with `docker plugin set plugind.<key>=<value>`
    /// (e.g. `plugind.health.interval` -> `10s`); the manager validates keys and values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// One plugin as the store keeps it: Docker's object plus plugind's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginRecord {
    /// Docker's `Plugin` object (what the API returns).
    pub plugin: Plugin,
    /// plugind's extra state.
    pub state: PluginState,
}

impl PluginRecord {
    /// A freshly created or pulled plugin: disabled, stopped, settings initialised from the
    /// config as Docker does (docker-plugin-api.md §4.1).
    pub fn new(
        id: PluginId,
        name: String,
        config: PluginConfig,
        plugin_reference: String,
        created: SystemTime,
    ) -> Self {
        let settings = PluginSettings::initial(&config);
        PluginRecord {
            plugin: Plugin {
                config,
                enabled: false,
                id,
                name,
                plugin_reference,
                settings,
            },
            state: PluginState {
                created,
                observed: ObservedState::default(),
                references: BTreeMap::new(),
                runtime: None,
                blobs: PluginBlobs::default(),
                options: BTreeMap::new(),
            },
        }
    }

    /// The plugin id.
    pub fn id(&self) -> &PluginId {
        &self.plugin.id
    }

    /// The stored name (`foo:latest`).
    pub fn name(&self) -> &str {
        &self.plugin.name
    }

    /// The desired state (Docker's `Enabled`).
    pub fn desired_enabled(&self) -> bool {
        self.plugin.enabled
    }

    /// True when the task was last seen running.
    pub fn is_running(&self) -> bool {
        matches!(self.state.observed.state, RunState::Running { .. })
    }

    /// Total number of references held on the plugin, over all holders.
    pub fn ref_count(&self) -> u32 {
        self.state
            .references
            .values()
            .fold(0u32, |a, n| a.saturating_add(*n))
    }

    /// Adds one reference for `holder`.
    pub fn acquire(&mut self, holder: &str) {
        let n = self.state.references.entry(holder.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
    }

    /// Drops one reference of `holder`; false when `holder` held none.
    pub fn release(&mut self, holder: &str) -> bool {
        match self.state.references.get_mut(holder) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                self.state.references.remove(holder);
                true
            }
            None => false,
        }
    }

    /// The privileges this plugin's config asks for (docker-plugin-api.md §8).
    pub fn privileges(&self) -> Vec<PluginPrivilege> {
        crate::privileges::privileges(&self.plugin.config)
    }

    /// The record as written to `config.json` (compact JSON, Docker key order).
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&DiskRecordOut {
            plugin: &self.plugin,
            plugind: DiskStateOut {
                version: RECORD_FORMAT_VERSION,
                state: &self.state,
            },
        })
    }

    /// Parses a record written by [`PluginRecord::to_json`]; also returns its format version.
    pub fn from_json(bytes: &[u8]) -> Result<(Self, u32), serde_json::Error> {
        let disk: DiskRecordIn = serde_json::from_slice(bytes)?;
        Ok((
            PluginRecord {
                plugin: disk.plugin,
                state: disk.plugind.state,
            },
            disk.plugind.version,
        ))
    }
}

#[derive(Serialize)]
struct DiskRecordOut<'a> {
    #[serde(flatten)]
    plugin: &'a Plugin,
    plugind: DiskStateOut<'a>,
}

#[derive(Serialize)]
struct DiskStateOut<'a> {
    version: u32,
    #[serde(flatten)]
    state: &'a PluginState,
}

#[derive(Deserialize)]
struct DiskRecordIn {
    #[serde(flatten)]
    plugin: Plugin,
    plugind: DiskStateIn,
}

#[derive(Deserialize)]
struct DiskStateIn {
    version: u32,
    #[serde(flatten)]
    state: PluginState,
}

/// The name Docker stores for a reference: familiar form with the tag, `latest` by default
/// (`foo` -> `foo:latest`, `docker.io/library/foo:1` -> `foo:1`). Digest references are refused:
/// stored names never carry a digest (create says `canonical references are not permitted`,
/// pull `cannot use digest in plugin tag`; the caller picks the wording).
pub fn canonical_name(input: &str) -> Result<String, StoreError> {
    let reference =
        Reference::parse_normalized(input).map_err(|source| StoreError::InvalidName {
            name: input.to_owned(),
            source,
        })?;
    if reference.digest().is_some() {
        return Err(StoreError::DigestInName {
            name: input.to_owned(),
        });
    }
    Ok(reference.with_default_tag().familiar_string())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn id(c: char) -> PluginId {
        PluginId::parse(&c.to_string().repeat(64)).unwrap()
    }

    #[test]
    fn record_json_is_docker_object_then_plugind_state() {
        let config = PluginConfig::from_json(br#"{"Description":"d","Entrypoint":["/x"],"Interface":{"Socket":"a.sock","Types":["docker.volumedriver/1.0"]},"Env":[{"Name":"DEBUG","Value":"0","Settable":["value"]}]}"#).unwrap();
        let created = UNIX_EPOCH + Duration::new(1_764_162_630, 5);
        let mut rec = PluginRecord::new(
            id('a'),
            "test/vol:latest".into(),
            config,
            String::new(),
            created,
        );
        rec.state.observed.state = RunState::Failed {
            reason: "socket never appeared".into(),
        };
        rec.acquire("volume:v1");
        let json = String::from_utf8(rec.to_json().unwrap()).unwrap();
        let aaa = "a".repeat(64);
        assert_eq!(
            json,
            format!(
                r#"{{"Config":{{"Args":{{"Description":"","Name":"","Settable":null,"Value":null}},"Description":"d","Documentation":"","Entrypoint":["/x"],"Env":[{{"Description":"","Name":"DEBUG","Settable":["value"],"Value":"0"}}],"Interface":{{"Socket":"a.sock","Types":["docker.volumedriver/1.0"]}},"IpcHost":false,"Linux":{{"AllowAllDevices":false,"Capabilities":null,"Devices":null}},"Mounts":null,"Network":{{"Type":""}},"PidHost":false,"PropagatedMount":"","User":{{}},"WorkDir":""}},"Enabled":false,"Id":"{aaa}","Name":"test/vol:latest","Settings":{{"Args":[],"Devices":[],"Env":["DEBUG=0"],"Mounts":[]}},"plugind":{{"version":1,"created":"2025-11-26T13:10:30.000000005Z","observed":{{"state":{{"status":"failed","reason":"socket never appeared"}},"restart_count":0,"last_exit":null}},"references":{{"volume:v1":1}},"runtime":null,"blobs":{{"manifest":null,"config":null,"layers":[]}}}}}}"#
            )
        );
        let (back, version) = PluginRecord::from_json(json.as_bytes()).unwrap();
        assert_eq!(version, 1);
        assert_eq!(back, rec);
        // The Docker object alone is what the API shows: no plugind keys, PluginReference omitted when empty.
        let docker = serde_json::to_value(&rec.plugin).unwrap();
        assert_eq!(
            docker.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["Config", "Enabled", "Id", "Name", "Settings"]
        );
    }

    #[test]
    fn running_state_and_exit_round_trip() {
        let mut rec = PluginRecord::new(
            id('b'),
            "x:1".into(),
            PluginConfig::default(),
            "docker.io/library/x:1".into(),
            UNIX_EPOCH,
        );
        rec.plugin.enabled = true;
        rec.state.observed = ObservedState {
            state: RunState::Running { pid: 4242 },
            restart_count: 3,
            last_exit: Some(ExitRecord {
                status: 137,
                at: UNIX_EPOCH + Duration::from_secs(60),
            }),
        };
        rec.state.runtime = Some("crun".into());
        let v: serde_json::Value = serde_json::from_slice(&rec.to_json().unwrap()).unwrap();
        assert_eq!(v["PluginReference"], "docker.io/library/x:1");
        assert_eq!(
            v["plugind"]["observed"]["state"],
            serde_json::json!({"status": "running", "pid": 4242})
        );
        assert_eq!(
            v["plugind"]["observed"]["last_exit"]["at"],
            "1970-01-01T00:01:00.000000000Z"
        );
        let (back, _) = PluginRecord::from_json(&rec.to_json().unwrap()).unwrap();
        assert_eq!(back, rec);
        assert!(back.is_running() && back.desired_enabled());
    }

    #[test]
    fn records_missing_docker_fields_or_with_bad_ids_are_rejected() {
        let rec = PluginRecord::new(
            id('c'),
            "x:latest".into(),
            PluginConfig::default(),
            String::new(),
            UNIX_EPOCH,
        );
        let mut v: serde_json::Value = serde_json::from_slice(&rec.to_json().unwrap()).unwrap();
        v["Id"] = "nope".into();
        assert!(PluginRecord::from_json(v.to_string().as_bytes()).is_err());
        let mut v: serde_json::Value = serde_json::from_slice(&rec.to_json().unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("plugind");
        assert!(PluginRecord::from_json(v.to_string().as_bytes()).is_err());
        assert!(PluginRecord::from_json(b"{").is_err());
    }

    #[test]
    fn references_count_per_holder() {
        let mut rec = PluginRecord::new(
            id('d'),
            "x:latest".into(),
            PluginConfig::default(),
            String::new(),
            UNIX_EPOCH,
        );
        rec.acquire("volume:a");
        rec.acquire("volume:a");
        rec.acquire("volume:b");
        assert_eq!(rec.ref_count(), 3);
        assert!(rec.release("volume:a"));
        assert!(rec.release("volume:a"));
        assert!(!rec.release("volume:a"));
        assert_eq!(
            rec.state.references.keys().collect::<Vec<_>>(),
            ["volume:b"]
        );
        assert_eq!(rec.ref_count(), 1);
    }

    #[test]
    fn canonical_names_follow_docker_normalisation() {
        assert_eq!(canonical_name("foo").unwrap(), "foo:latest");
        assert_eq!(canonical_name("docker.io/library/foo:1").unwrap(), "foo:1");
        assert_eq!(
            canonical_name("docker.io/test/vol").unwrap(),
            "test/vol:latest"
        );
        assert_eq!(
            canonical_name("127.0.0.1:5000/plugin/basic").unwrap(),
            "127.0.0.1:5000/plugin/basic:latest"
        );
        let digest = format!("foo@sha256:{}", "a".repeat(64));
        assert!(matches!(
            canonical_name(&digest),
            Err(StoreError::DigestInName { .. })
        ));
        let err = canonical_name("TEST/vol").unwrap_err();
        assert_eq!(err.to_string(), "invalid plugin name \"TEST/vol\"");
        assert_eq!(err.kind(), plugind_types::ErrorKind::InvalidArgument);
    }
}
