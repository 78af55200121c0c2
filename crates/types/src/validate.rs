//! Path rules for the values of a plugin `config.json` (and the settings `set` writes), which
//! come from strangers: [`PluginConfig::validate`] and the component checks it is built from.
//!
//! moby checks none of these (its code carries `TODO: sanitize PropagatedMount and prevent
//! breakout`); plugind applies the rules Docker applies to *container* configs, plus what
//! keeps every host path plugind builds inside its own directories:
//! - `Interface.Socket` is a plain file name (plugind joins it to the plugin's runtime
//!   directory and removes and dials the result as root): no `/`, not `.` or `..`, no NUL;
//!   empty means [`DEFAULT_SOCKET_NAME`];
//! - paths inside the plugin (mount destinations, `PropagatedMount`, `WorkDir`) are absolute
//!   with no `..` component, and a mount destination is not `/` (Docker: "destination can't
//!   be '/'"; "the working directory ... needs to be an absolute path");
//! - host paths (bind mount sources, device paths) are absolute with no `..` component;
//! - no value handed to the runtime contains a NUL byte.
//!
//! Checks are component-wise on the string as given, never on a joined or cleaned path.

use crate::config::{PluginConfig, PluginDevice, PluginMount, PluginSettings};

/// The socket name used when `Interface.Socket` is empty.
pub const DEFAULT_SOCKET_NAME: &str = "plugin.sock";

/// Longest socket name accepted by [`check_file_name`] for a socket: the 107 usable bytes of
/// `sun_path`. The full `<exec-root>/plugins/<id>/<name>` path is checked again where the
/// exec root is known.
pub const MAX_SOCKET_NAME: usize = 107;

/// Why a path value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathRule {
    /// The value is empty where a path is required.
    #[error("must not be empty")]
    Empty,
    /// The value contains a NUL byte.
    #[error("must not contain a NUL byte")]
    ContainsNul,
    /// A file name contains `/`.
    #[error("must be a plain file name (no '/')")]
    ContainsSlash,
    /// A file name is `.` or `..`.
    #[error("must be a file name, not '.' or '..'")]
    DotName,
    /// A path is relative.
    #[error("must be an absolute path")]
    NotAbsolute,
    /// A path has a `..` component.
    #[error("must not contain '..' components")]
    DotDot,
    /// A mount destination is `/`.
    #[error("destination can't be '/'")]
    Root,
    /// The value is longer than allowed.
    #[error("is {len} bytes, more than the {max} allowed")]
    TooLong {
        /// Length in bytes (of the full path where one was built).
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// A config (or setting) value that breaks a path rule. The message names the field as it
/// appears in `config.json`, the value and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid plugin config: {field} {value:?} {rule}")]
pub struct InvalidConfig {
    /// Where the value is, e.g. `Interface.Socket` or `Mounts[0].Destination`.
    pub field: String,
    /// The value as given.
    pub value: String,
    /// The rule it breaks.
    pub rule: PathRule,
}

impl InvalidConfig {
    /// An error for `field` = `value` breaking `rule`.
    pub fn new(field: impl Into<String>, value: &str, rule: PathRule) -> Self {
        InvalidConfig {
            field: field.into(),
            value: value.to_owned(),
            rule,
        }
    }
}

fn check_nul(value: &str) -> Result<(), PathRule> {
    if value.as_bytes().contains(&0) {
        return Err(PathRule::ContainsNul);
    }
    Ok(())
}

/// A single path component that may be joined to a directory: non-empty, no `/`, not `.` or
/// `..`, no NUL, at most `max` bytes.
pub fn check_file_name(name: &str, max: usize) -> Result<(), PathRule> {
    if name.is_empty() {
        return Err(PathRule::Empty);
    }
    check_nul(name)?;
    if name.contains('/') {
        return Err(PathRule::ContainsSlash);
    }
    if name == "." || name == ".." {
        return Err(PathRule::DotName);
    }
    if name.len() > max {
        return Err(PathRule::TooLong {
            len: name.len(),
            max,
        });
    }
    Ok(())
}

/// An absolute path with no `..` component and no NUL (`.` and repeated `/` are harmless
/// and allowed, as in Docker's configs).
pub fn check_absolute_path(path: &str) -> Result<(), PathRule> {
    if path.is_empty() {
        return Err(PathRule::Empty);
    }
    check_nul(path)?;
    if !path.starts_with('/') {
        return Err(PathRule::NotAbsolute);
    }
    if path.split('/').any(|c| c == "..") {
        return Err(PathRule::DotDot);
    }
    Ok(())
}

/// A mount destination inside the plugin: [`check_absolute_path`] and not the root itself.
pub fn check_mount_destination(path: &str) -> Result<(), PathRule> {
    check_absolute_path(path)?;
    if path.split('/').all(|c| c.is_empty() || c == ".") {
        return Err(PathRule::Root);
    }
    Ok(())
}

/// True when the mount binds a host path (type `bind`, or a `bind`/`rbind` option).
fn is_bind(m: &PluginMount) -> bool {
    m.r#type == "bind"
        || m.options
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

fn field<T>(
    name: impl FnOnce() -> String,
    value: &str,
    r: Result<T, PathRule>,
) -> Result<T, InvalidConfig> {
    r.map_err(|rule| InvalidConfig::new(name(), value, rule))
}

fn check_strings<'a>(
    what: &str,
    values: impl IntoIterator<Item = &'a String>,
) -> Result<(), InvalidConfig> {
    for (i, v) in values.into_iter().enumerate() {
        field(|| format!("{what}[{i}]"), v, check_nul(v))?;
    }
    Ok(())
}

fn check_mounts(what: &str, mounts: &[PluginMount]) -> Result<(), InvalidConfig> {
    for (i, m) in mounts.iter().enumerate() {
        field(
            || format!("{what}[{i}].Destination"),
            &m.destination,
            check_mount_destination(&m.destination),
        )?;
        if let Some(source) = &m.source {
            let rule = if is_bind(m) {
                check_absolute_path(source)
            } else {
                check_nul(source)
            };
            field(|| format!("{what}[{i}].Source"), source, rule)?;
        }
        field(
            || format!("{what}[{i}].Type"),
            &m.r#type,
            check_nul(&m.r#type),
        )?;
        check_strings(&format!("{what}[{i}].Options"), m.options.iter().flatten())?;
    }
    Ok(())
}

fn check_devices(what: &str, devices: &[PluginDevice]) -> Result<(), InvalidConfig> {
    for (i, d) in devices.iter().enumerate() {
        if let Some(path) = &d.path {
            field(
                || format!("{what}[{i}].Path"),
                path,
                check_absolute_path(path),
            )?;
        }
    }
    Ok(())
}

impl PluginConfig {
    /// Checks every value that becomes a path or reaches the runtime (see the module docs).
    /// Pure; called before anything of a new plugin is written.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let socket = &self.interface.socket;
        if !socket.is_empty() {
            field(
                || "Interface.Socket".to_owned(),
                socket,
                check_file_name(socket, MAX_SOCKET_NAME),
            )?;
        }
        if !self.propagated_mount.is_empty() {
            field(
                || "PropagatedMount".to_owned(),
                &self.propagated_mount,
                check_mount_destination(&self.propagated_mount),
            )?;
        }
        if !self.work_dir.is_empty() {
            field(
                || "WorkDir".to_owned(),
                &self.work_dir,
                check_absolute_path(&self.work_dir),
            )?;
        }
        if let Some(entrypoint) = &self.entrypoint {
            if let Some(first) = entrypoint.first() {
                // Resolved by the runtime inside the plugin's rootfs (PATH lookup allowed).
                field(
                    || "Entrypoint[0]".to_owned(),
                    first,
                    if first.is_empty() {
                        Err(PathRule::Empty)
                    } else {
                        Ok(())
                    },
                )?;
            }
            check_strings("Entrypoint", entrypoint)?;
        }
        check_strings("Args.Value", self.args.value.iter().flatten())?;
        for (i, e) in self.env.iter().flatten().enumerate() {
            field(|| format!("Env[{i}].Name"), &e.name, check_nul(&e.name))?;
            if let Some(v) = &e.value {
                field(|| format!("Env[{i}].Value"), v, check_nul(v))?;
            }
        }
        check_strings(
            "Linux.Capabilities",
            self.linux.capabilities.iter().flatten(),
        )?;
        check_mounts("Mounts", self.mounts.as_deref().unwrap_or_default())?;
        check_devices(
            "Linux.Devices",
            self.linux.devices.as_deref().unwrap_or_default(),
        )?;
        Ok(())
    }
}

impl PluginSettings {
    /// Checks the settings' values by the same rules as [`PluginConfig::validate`].
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        check_strings("Settings.Args", &self.args)?;
        check_strings("Settings.Env", &self.env)?;
        check_mounts("Settings.Mounts", &self.mounts)?;
        check_devices("Settings.Devices", &self.devices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> PluginConfig {
        PluginConfig::from_json(json.as_bytes()).unwrap()
    }

    fn rule(json: &str) -> PathRule {
        config(json).validate().unwrap_err().rule
    }

    #[test]
    fn socket_must_be_a_plain_file_name() {
        for ok in ["", "plugin.sock", "a", ".hidden", "x..y"] {
            let c = config(&format!(r#"{{"Interface":{{"Socket":{ok:?}}}}}"#));
            assert_eq!(c.validate(), Ok(()), "{ok:?}");
        }
        let err = config(r#"{"Interface":{"Socket":"/tmp/x/host-file"}}"#)
            .validate()
            .unwrap_err();
        assert_eq!(err.field, "Interface.Socket");
        assert_eq!(err.rule, PathRule::ContainsSlash);
        assert_eq!(
            err.to_string(),
            r#"invalid plugin config: Interface.Socket "/tmp/x/host-file" must be a plain file name (no '/')"#
        );
        assert_eq!(
            rule(r#"{"Interface":{"Socket":"../x"}}"#),
            PathRule::ContainsSlash
        );
        assert_eq!(rule(r#"{"Interface":{"Socket":".."}}"#), PathRule::DotName);
        assert_eq!(rule(r#"{"Interface":{"Socket":"."}}"#), PathRule::DotName);
        assert_eq!(
            rule(r#"{"Interface":{"Socket":"a\u0000b"}}"#),
            PathRule::ContainsNul
        );
        let long = "s".repeat(MAX_SOCKET_NAME + 1);
        assert_eq!(
            rule(&format!(r#"{{"Interface":{{"Socket":"{long}"}}}}"#)),
            PathRule::TooLong {
                len: MAX_SOCKET_NAME + 1,
                max: MAX_SOCKET_NAME
            }
        );
    }

    #[test]
    fn propagated_mount_and_workdir_are_absolute_without_dotdot() {
        assert_eq!(
            config(r#"{"PropagatedMount":"/data","WorkDir":"/srv/./x/"}"#).validate(),
            Ok(())
        );
        assert_eq!(
            rule(r#"{"PropagatedMount":"/data/../../etc"}"#),
            PathRule::DotDot
        );
        assert_eq!(rule(r#"{"PropagatedMount":"data"}"#), PathRule::NotAbsolute);
        assert_eq!(rule(r#"{"PropagatedMount":"//"}"#), PathRule::Root);
        assert_eq!(rule(r#"{"WorkDir":"/a/.."}"#), PathRule::DotDot);
        assert_eq!(rule(r#"{"WorkDir":"rel"}"#), PathRule::NotAbsolute);
    }

    #[test]
    fn mount_destinations_and_bind_sources() {
        assert_eq!(
            config(
                r#"{"Mounts":[{"Source":"/var/lib/x","Destination":"/x","Type":"bind"},
                              {"Source":"tmpfs","Destination":"/t","Type":"tmpfs"},
                              {"Destination":"/n","Type":"bind"}]}"#
            )
            .validate(),
            Ok(())
        );
        let err = config(r#"{"Mounts":[{"Destination":"/ok"},{"Destination":"/x/../.."}]}"#)
            .validate()
            .unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.rule),
            ("Mounts[1].Destination", PathRule::DotDot)
        );
        assert_eq!(rule(r#"{"Mounts":[{"Destination":"/"}]}"#), PathRule::Root);
        assert_eq!(rule(r#"{"Mounts":[{"Destination":""}]}"#), PathRule::Empty);
        assert_eq!(
            rule(r#"{"Mounts":[{"Destination":"x"}]}"#),
            PathRule::NotAbsolute
        );
        assert_eq!(
            rule(r#"{"Mounts":[{"Source":"rel","Destination":"/x","Type":"bind"}]}"#),
            PathRule::NotAbsolute
        );
        assert_eq!(
            rule(r#"{"Mounts":[{"Source":"/a/../b","Destination":"/x","Options":["rbind"]}]}"#),
            PathRule::DotDot
        );
        assert_eq!(
            rule(r#"{"Mounts":[{"Source":"x","Destination":"/x","Options":["r\u0000o"]}]}"#),
            PathRule::ContainsNul
        );
    }

    #[test]
    fn devices_entrypoint_env() {
        assert_eq!(
            config(r#"{"Linux":{"Devices":[{"Path":"/dev/fuse"},{"Name":"unset"}]},"Entrypoint":["sh","-c"]}"#)
                .validate(),
            Ok(())
        );
        assert_eq!(
            rule(r#"{"Linux":{"Devices":[{"Path":"/dev/../etc/shadow"}]}}"#),
            PathRule::DotDot
        );
        assert_eq!(
            rule(r#"{"Linux":{"Devices":[{"Path":"dev/fuse"}]}}"#),
            PathRule::NotAbsolute
        );
        assert_eq!(rule(r#"{"Entrypoint":["", "x"]}"#), PathRule::Empty);
        assert_eq!(
            rule(r#"{"Entrypoint":["/x", "a\u0000"]}"#),
            PathRule::ContainsNul
        );
        assert_eq!(
            rule(r#"{"Env":[{"Name":"A","Value":"\u0000"}]}"#),
            PathRule::ContainsNul
        );
    }

    #[test]
    fn settings_follow_the_same_rules() {
        let mut s = PluginSettings::initial(&config(
            r#"{"Mounts":[{"Name":"m","Source":"/s","Destination":"/d","Type":"bind"}]}"#,
        ));
        assert_eq!(s.validate(), Ok(()));
        s.mounts[0].source = Some("../../etc".into());
        assert_eq!(s.validate().unwrap_err().rule, PathRule::NotAbsolute);
    }

    #[test]
    fn component_checks() {
        assert_eq!(check_file_name("a/b", 10), Err(PathRule::ContainsSlash));
        assert_eq!(
            check_file_name("abc", 2),
            Err(PathRule::TooLong { len: 3, max: 2 })
        );
        assert_eq!(check_absolute_path("/a/b..c/.d"), Ok(()));
        assert_eq!(check_absolute_path("/.."), Err(PathRule::DotDot));
        assert_eq!(check_mount_destination("/./"), Err(PathRule::Root));
    }
}
