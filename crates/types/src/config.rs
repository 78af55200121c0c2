//! The plugin `config.json` model and the user's `Settings`, as Docker's JSON.
//!
//! Field order and key spelling follow moby's output (docker-plugin-api.md §4) so that
//! `docker plugin inspect` prints byte-identical JSON. Authors' files are read
//! case-insensitively, unknown keys ignored and missing keys defaulted, as Go's
//! `encoding/json` does: see [`PluginConfig::from_json`].

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Digest;

/// A plugin's `config.json` (Docker's `PluginConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginConfig {
    /// Settable command-line arguments appended to the entrypoint.
    #[serde(rename = "Args")]
    pub args: PluginArgs,
    /// Free text.
    #[serde(rename = "Description")]
    pub description: String,
    /// Engine version at create time; omitted when empty.
    #[serde(rename = "DockerVersion", skip_serializing_if = "String::is_empty")]
    pub docker_version: String,
    /// Link to documentation.
    #[serde(rename = "Documentation")]
    pub documentation: String,
    /// The command that starts the plugin.
    #[serde(rename = "Entrypoint")]
    pub entrypoint: Option<Vec<String>>,
    /// Environment variables, possibly settable.
    #[serde(rename = "Env")]
    pub env: Option<Vec<PluginEnv>>,
    /// What the plugin implements and where its socket is.
    #[serde(rename = "Interface")]
    pub interface: PluginInterface,
    /// Share the host's IPC namespace.
    #[serde(rename = "IpcHost")]
    pub ipc_host: bool,
    /// Linux-specific privileges.
    #[serde(rename = "Linux")]
    pub linux: PluginLinux,
    /// Mounts into the plugin's rootfs.
    #[serde(rename = "Mounts")]
    pub mounts: Option<Vec<PluginMount>>,
    /// Network mode.
    #[serde(rename = "Network")]
    pub network: PluginNetwork,
    /// Share the host's PID namespace.
    #[serde(rename = "PidHost")]
    pub pid_host: bool,
    /// A path inside the plugin propagated back to the host (`rshared`); empty for none.
    #[serde(rename = "PropagatedMount")]
    pub propagated_mount: String,
    /// The user the plugin runs as.
    #[serde(rename = "User")]
    pub user: PluginUser,
    /// Working directory; empty means `/`.
    #[serde(rename = "WorkDir")]
    pub work_dir: String,
    /// Layer digests of the rootfs, set by the engine at create/pull.
    #[serde(rename = "rootfs", skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<PluginRootfs>,
}

/// `Config.Args`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginArgs {
    /// Free text.
    #[serde(rename = "Description")]
    pub description: String,
    /// The name used by `set` (`<name>=...`).
    #[serde(rename = "Name")]
    pub name: String,
    /// Which fields may be set (`value`).
    #[serde(rename = "Settable")]
    pub settable: Option<Vec<String>>,
    /// Default arguments.
    #[serde(rename = "Value")]
    pub value: Option<Vec<String>>,
}

/// One `Config.Env` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginEnv {
    /// Free text.
    #[serde(rename = "Description")]
    pub description: String,
    /// Variable name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Which fields may be set (`value`).
    #[serde(rename = "Settable")]
    pub settable: Option<Vec<String>>,
    /// Default value; `null` means unset.
    #[serde(rename = "Value")]
    pub value: Option<String>,
}

/// `Config.Interface`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginInterface {
    /// `""` or `moby.plugins.http/v1`; omitted when empty.
    #[serde(rename = "ProtocolScheme", skip_serializing_if = "String::is_empty")]
    pub protocol_scheme: String,
    /// Socket file name under `/run/docker/plugins` inside the plugin.
    #[serde(rename = "Socket")]
    pub socket: String,
    /// Capabilities implemented, e.g. `docker.volumedriver/1.0`.
    #[serde(rename = "Types")]
    pub types: Option<Vec<PluginType>>,
}

impl PluginInterface {
    /// The socket's file name in the plugin's runtime directory: `Socket`, or
    /// [`DEFAULT_SOCKET_NAME`](crate::validate::DEFAULT_SOCKET_NAME) when empty. Every place
    /// that needs the plugin's socket uses this, so enable and later calls agree.
    pub fn socket_name(&self) -> &str {
        if self.socket.is_empty() {
            crate::validate::DEFAULT_SOCKET_NAME
        } else {
            &self.socket
        }
    }
}

/// `Config.Linux`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginLinux {
    /// Grant `rwm` on every device.
    #[serde(rename = "AllowAllDevices")]
    pub allow_all_devices: bool,
    /// Extra capabilities (`CAP_SYS_ADMIN`, ...).
    #[serde(rename = "Capabilities")]
    pub capabilities: Option<Vec<String>>,
    /// Host devices exposed to the plugin.
    #[serde(rename = "Devices")]
    pub devices: Option<Vec<PluginDevice>>,
}

/// A mount of the config or settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginMount {
    /// Free text.
    #[serde(rename = "Description")]
    pub description: String,
    /// Path inside the plugin.
    #[serde(rename = "Destination")]
    pub destination: String,
    /// Name used by `set`.
    #[serde(rename = "Name")]
    pub name: String,
    /// Mount options (`rbind`, `ro`, ...).
    #[serde(rename = "Options")]
    pub options: Option<Vec<String>>,
    /// Which fields may be set (`source`).
    #[serde(rename = "Settable")]
    pub settable: Option<Vec<String>>,
    /// Host source; `null` when not given.
    #[serde(rename = "Source")]
    pub source: Option<String>,
    /// Mount type (`bind`, `tmpfs`, ...).
    #[serde(rename = "Type")]
    pub r#type: String,
}

/// A device of the config or settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginDevice {
    /// Free text.
    #[serde(rename = "Description")]
    pub description: String,
    /// Name used by `set`.
    #[serde(rename = "Name")]
    pub name: String,
    /// Host device path; `null` when not given.
    #[serde(rename = "Path")]
    pub path: Option<String>,
    /// Which fields may be set (`path`).
    #[serde(rename = "Settable")]
    pub settable: Option<Vec<String>>,
}

/// `Config.Network`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginNetwork {
    /// `""`, `none`, `bridge` or `host`.
    #[serde(rename = "Type")]
    pub r#type: String,
}

/// `Config.User`; both fields omitted when zero.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginUser {
    /// Group id.
    #[serde(rename = "GID", skip_serializing_if = "is_zero")]
    pub gid: u32,
    /// User id.
    #[serde(rename = "UID", skip_serializing_if = "is_zero")]
    pub uid: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// `Config.rootfs` (lower-case keys, as Docker writes them).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginRootfs {
    /// Layer digests; Docker records the digest of the gzip layer blob here.
    #[serde(deserialize_with = "null_as_default")]
    pub diff_ids: Vec<Digest>,
    /// Always `layers` when set.
    #[serde(
        rename = "type",
        alias = "Type",
        skip_serializing_if = "String::is_empty"
    )]
    pub r#type: String,
}

/// The user's settings (Docker's `PluginSettings`); every list is `[]` rather than `null`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginSettings {
    /// Arguments appended to the entrypoint.
    #[serde(rename = "Args", deserialize_with = "null_as_default")]
    pub args: Vec<String>,
    /// Devices, with the set paths.
    #[serde(rename = "Devices", deserialize_with = "null_as_default")]
    pub devices: Vec<PluginDevice>,
    /// `NAME=value` entries.
    #[serde(rename = "Env", deserialize_with = "null_as_default")]
    pub env: Vec<String>,
    /// Mounts, with the set sources.
    #[serde(rename = "Mounts", deserialize_with = "null_as_default")]
    pub mounts: Vec<PluginMount>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl PluginSettings {
    /// The initial settings of a freshly created or pulled plugin (docker-plugin-api.md §4.1).
    pub fn initial(config: &PluginConfig) -> Self {
        PluginSettings {
            args: config.args.value.clone().unwrap_or_default(),
            devices: config.linux.devices.clone().unwrap_or_default(),
            env: config
                .env
                .iter()
                .flatten()
                .filter_map(|e| e.value.as_ref().map(|v| format!("{}={v}", e.name)))
                .collect(),
            mounts: config.mounts.clone().unwrap_or_default(),
        }
    }
}

/// A plugin capability string `<prefix>.<capability>/<version>`, e.g. `docker.volumedriver/1.0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PluginType {
    /// `docker`.
    pub prefix: String,
    /// `volumedriver`, `authz`, `networkdriver`, `ipamdriver`, `logdriver`, ...
    pub capability: String,
    /// `1.0`.
    pub version: String,
}

impl PluginType {
    /// Parses the wire string. Unlike moby 28, a capability without a `.` keeps its first
    /// character (moby master's behaviour).
    pub fn parse(s: &str) -> Self {
        let (head, version) = s.split_once('/').unwrap_or((s, ""));
        let (prefix, capability) = match head.rfind('.') {
            Some(i) => (&head[..i], &head[i + 1..]),
            None => ("", head),
        };
        PluginType {
            prefix: prefix.to_owned(),
            capability: capability.to_owned(),
            version: version.to_owned(),
        }
    }
}

impl fmt::Display for PluginType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "{}/{}", self.capability, self.version)
        } else {
            write!(f, "{}.{}/{}", self.prefix, self.capability, self.version)
        }
    }
}

impl Serialize for PluginType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PluginType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(PluginType::parse(&s))
    }
}

/// A plugin `config.json` that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid plugin config")]
pub struct ConfigError {
    #[source]
    source: serde_json::Error,
}

impl ConfigError {
    /// The decoder's message, e.g. to show to a user in a 400 response.
    pub fn detail(&self) -> String {
        self.source.to_string()
    }
}

impl PluginConfig {
    /// Reads a config as Docker does: keys matched case-insensitively, unknown keys ignored,
    /// missing keys and `null` arrays defaulted.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let mut value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|source| ConfigError { source })?;
        canonicalise_keys(&mut value);
        serde_json::from_value(value).map_err(|source| ConfigError { source })
    }

    /// The capabilities this plugin implements (`volumedriver`, ...).
    pub fn capabilities(&self) -> impl Iterator<Item = &str> {
        self.interface
            .types
            .iter()
            .flatten()
            .map(|t| t.capability.as_str())
    }
}

/// Every key of the model, in its canonical spelling. The model's keys are unique across
/// structs (case-insensitively), so one table serves all nesting levels.
const CANONICAL_KEYS: &[&str] = &[
    "Args",
    "Description",
    "DockerVersion",
    "Documentation",
    "Entrypoint",
    "Env",
    "Interface",
    "IpcHost",
    "Linux",
    "Mounts",
    "Network",
    "PidHost",
    "PropagatedMount",
    "User",
    "WorkDir",
    "rootfs",
    "Name",
    "Settable",
    "Value",
    "ProtocolScheme",
    "Socket",
    "Types",
    "AllowAllDevices",
    "Capabilities",
    "Devices",
    "Destination",
    "Options",
    "Source",
    "Type",
    "Path",
    "GID",
    "UID",
    "diff_ids",
];

fn canonicalise_keys(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            let old = std::mem::take(map);
            for (key, mut v) in old {
                canonicalise_keys(&mut v);
                let key = CANONICAL_KEYS
                    .iter()
                    .find(|k| k.eq_ignore_ascii_case(&key))
                    .map_or(key, |k| (*k).to_owned());
                map.insert(key, v);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(canonicalise_keys),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_serialises_like_docker() {
        let c = PluginConfig::from_json(
            br#"{"description":"lower","entrypoint":["/x"],
            "interface":{"types":["docker.authz/1.0"],"socket":"a.sock"}, "unknown": 1}"#,
        )
        .unwrap();
        let out = serde_json::to_string(&c).unwrap();
        assert_eq!(
            out,
            r#"{"Args":{"Description":"","Name":"","Settable":null,"Value":null},"Description":"lower","Documentation":"","Entrypoint":["/x"],"Env":null,"Interface":{"Socket":"a.sock","Types":["docker.authz/1.0"]},"IpcHost":false,"Linux":{"AllowAllDevices":false,"Capabilities":null,"Devices":null},"Mounts":null,"Network":{"Type":""},"PidHost":false,"PropagatedMount":"","User":{},"WorkDir":""}"#
        );
    }

    #[test]
    fn types_parse_and_capabilities() {
        let t = PluginType::parse("docker.volumedriver/1.0");
        assert_eq!(
            (t.prefix.as_str(), t.capability.as_str(), t.version.as_str()),
            ("docker", "volumedriver", "1.0")
        );
        assert_eq!(t.to_string(), "docker.volumedriver/1.0");
        let odd = PluginType::parse("volumedriver/1.0");
        assert_eq!(odd.capability, "volumedriver");
        let c = PluginConfig::from_json(
            br#"{"Interface":{"Types":["docker.volumedriver/1.0","docker.authz/1.0"]}}"#,
        )
        .unwrap();
        assert_eq!(
            c.capabilities().collect::<Vec<_>>(),
            ["volumedriver", "authz"]
        );
        assert!(PluginConfig::from_json(br#"{"Interface":{"Types":[1]}}"#).is_err());
    }

    #[test]
    fn initial_settings_follow_docker() {
        let c = PluginConfig::from_json(
            br#"{"Env":[{"Name":"A","Value":"1"},{"Name":"B","Value":null},{"Name":"FIXED","Value":"x"}],
                "Args":{"Name":"args","Value":["-v"]},
                "Mounts":[{"Name":"m","Source":"/s","Destination":"/d","Type":"bind"}],
                "Linux":{"Devices":[{"Name":"d","Path":"/dev/null"}]}}"#,
        )
        .unwrap();
        let s = PluginSettings::initial(&c);
        assert_eq!(s.env, ["A=1", "FIXED=x"]);
        assert_eq!(s.args, ["-v"]);
        assert_eq!(s.mounts.len(), 1);
        assert_eq!(s.devices[0].path.as_deref(), Some("/dev/null"));
        let empty = PluginSettings::initial(&PluginConfig::default());
        assert_eq!(
            serde_json::to_string(&empty).unwrap(),
            r#"{"Args":[],"Devices":[],"Env":[],"Mounts":[]}"#
        );
    }

    #[test]
    fn rootfs_and_user_keys() {
        let c = PluginConfig::from_json(
            format!(
                r#"{{"ROOTFS":{{"DIFF_IDS":["sha256:{}"],"Type":"layers"}},"user":{{"uid":5}}}}"#,
                "a".repeat(64)
            )
            .as_bytes(),
        )
        .unwrap();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["rootfs"]["type"], "layers");
        assert_eq!(v["User"], serde_json::json!({"UID": 5}));
        assert!(PluginConfig::from_json(b"{").is_err());
    }
}
