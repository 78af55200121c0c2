//! Privileges a plugin asks for (docker-plugin-api.md §8), computed from its config, and the
//! comparison with what the user granted on pull/upgrade.

use serde::{Deserialize, Deserializer, Serialize};

use plugind_types::config::PluginConfig;

/// Docker's `PluginPrivilege`; JSON keys in Docker's order (`Name` before `Description`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginPrivilege {
    /// `network`, `mount`, `capabilities`, ...
    #[serde(rename = "Name", default)]
    pub name: String,
    /// Human text shown by the CLI.
    #[serde(rename = "Description", default)]
    pub description: String,
    /// The values (host paths, capabilities, `true`, ...); `null` reads as empty.
    #[serde(rename = "Value", default, deserialize_with = "null_as_empty")]
    pub value: Vec<String>,
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

impl PluginPrivilege {
    fn new(name: &str, description: &str, value: Vec<String>) -> Self {
        PluginPrivilege {
            name: name.to_owned(),
            description: description.to_owned(),
            value,
        }
    }
}

/// The privileges `config` requires, in moby's order (`computePrivileges`): network, host ipc,
/// host pid, one `mount` per config mount with a source, one `device` per device with a path,
/// allow-all-devices, capabilities. An empty list means none are needed.
pub fn privileges(config: &PluginConfig) -> Vec<PluginPrivilege> {
    let mut out = Vec::new();
    let net = config.network.r#type.as_str();
    // moby compares with the literal string "null", not "none".
    if !matches!(net, "" | "null" | "bridge") {
        out.push(PluginPrivilege::new(
            "network",
            "permissions to access a network",
            vec![net.to_owned()],
        ));
    }
    if config.ipc_host {
        out.push(PluginPrivilege::new(
            "host ipc namespace",
            "allow access to host ipc namespace",
            vec!["true".into()],
        ));
    }
    if config.pid_host {
        out.push(PluginPrivilege::new(
            "host pid namespace",
            "allow access to host pid namespace",
            vec!["true".into()],
        ));
    }
    for source in config
        .mounts
        .iter()
        .flatten()
        .filter_map(|m| m.source.as_ref())
    {
        out.push(PluginPrivilege::new(
            "mount",
            "host path to mount",
            vec![source.clone()],
        ));
    }
    for path in config
        .linux
        .devices
        .iter()
        .flatten()
        .filter_map(|d| d.path.as_ref())
    {
        out.push(PluginPrivilege::new(
            "device",
            "host device to access",
            vec![path.clone()],
        ));
    }
    if config.linux.allow_all_devices {
        out.push(PluginPrivilege::new(
            "allow-all-devices",
            "allow 'rwm' access to all devices",
            vec!["true".into()],
        ));
    }
    if let Some(caps) = config.linux.capabilities.as_ref().filter(|c| !c.is_empty()) {
        out.push(PluginPrivilege::new(
            "capabilities",
            "list of additional capabilities required",
            caps.clone(),
        ));
    }
    out
}

/// True when `a` and `b` grant the same privileges: the same entries by `Name` and `Value`,
/// regardless of the order of entries and of values inside an entry; `Description` is ignored
/// (as in moby). Entries are compared as a multiset, so lists of different lengths never match
/// (moby checks the length first). Unlike moby, every entry is compared: moby's loop skips the
/// first entry after sorting.
pub fn privileges_match(a: &[PluginPrivilege], b: &[PluginPrivilege]) -> bool {
    fn normal(list: &[PluginPrivilege]) -> Vec<(&str, Vec<&str>)> {
        let mut out: Vec<(&str, Vec<&str>)> = list
            .iter()
            .map(|p| {
                let mut v: Vec<&str> = p.value.iter().map(String::as_str).collect();
                v.sort_unstable();
                (p.name.as_str(), v)
            })
            .collect();
        out.sort_unstable();
        out
    }
    a.len() == b.len() && normal(a) == normal(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> PluginConfig {
        PluginConfig::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn every_privilege_in_dockers_order_with_exact_texts() {
        let c = config(
            r#"{"Network":{"Type":"host"},"IpcHost":true,"PidHost":true,
            "Mounts":[{"Name":"a","Source":"/src/a"},{"Name":"nosrc"},{"Name":"b","Source":"/src/b"}],
            "Linux":{"AllowAllDevices":true,"Capabilities":["CAP_SYS_ADMIN","CAP_NET_ADMIN"],
                     "Devices":[{"Name":"d","Path":"/dev/fuse"},{"Name":"nopath"}]}}"#,
        );
        let json = serde_json::to_string(&privileges(&c)).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"[{"Name":"network","Description":"permissions to access a network","Value":["host"]},"#,
                r#"{"Name":"host ipc namespace","Description":"allow access to host ipc namespace","Value":["true"]},"#,
                r#"{"Name":"host pid namespace","Description":"allow access to host pid namespace","Value":["true"]},"#,
                r#"{"Name":"mount","Description":"host path to mount","Value":["/src/a"]},"#,
                r#"{"Name":"mount","Description":"host path to mount","Value":["/src/b"]},"#,
                r#"{"Name":"device","Description":"host device to access","Value":["/dev/fuse"]},"#,
                r#"{"Name":"allow-all-devices","Description":"allow 'rwm' access to all devices","Value":["true"]},"#,
                r#"{"Name":"capabilities","Description":"list of additional capabilities required","Value":["CAP_SYS_ADMIN","CAP_NET_ADMIN"]}]"#
            )
        );
    }

    #[test]
    fn nothing_needed_for_a_plain_plugin() {
        for net in ["", "null", "bridge"] {
            let c = config(&format!(
                r#"{{"Network":{{"Type":"{net}"}},"Linux":{{"Capabilities":[]}}}}"#
            ));
            assert!(privileges(&c).is_empty(), "network {net:?}");
        }
        let none = privileges(&config(r#"{"Network":{"Type":"none"}}"#));
        assert_eq!(
            none[0].value,
            ["none"],
            "moby only exempts the literal \"null\""
        );
    }

    #[test]
    fn matching_ignores_order_and_description_but_not_content() {
        let p = |name: &str, desc: &str, vals: &[&str]| {
            PluginPrivilege::new(name, desc, vals.iter().map(|v| (*v).to_owned()).collect())
        };
        let a = vec![
            p("mount", "host path to mount", &["/a"]),
            p("capabilities", "x", &["CAP_A", "CAP_B"]),
        ];
        let b = vec![
            p("capabilities", "other text", &["CAP_B", "CAP_A"]),
            p("mount", "", &["/a"]),
        ];
        assert!(privileges_match(&a, &b));
        assert!(privileges_match(&[], &[]));
        // moby would accept this pair: after sorting, only the first entry differs, and it skips it.
        let c = vec![
            p("capabilities", "", &["CAP_A", "CAP_EVIL"]),
            p("mount", "", &["/a"]),
        ];
        assert!(!privileges_match(&a, &c));
        assert!(!privileges_match(&a, &a[..1]));
        let twice = vec![p("mount", "", &["/a"]), p("mount", "", &["/a"])];
        let other = vec![p("mount", "", &["/a"]), p("mount", "", &["/b"])];
        assert!(!privileges_match(&twice, &other));
        let granted: Vec<PluginPrivilege> =
            serde_json::from_str(r#"[{"Name":"mount","Description":"","Value":null}]"#).unwrap();
        assert!(granted[0].value.is_empty());
    }
}
