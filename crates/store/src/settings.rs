//! `docker plugin set`: parsing `<name>[.<field>][=<value>]` and the settable rules of moby's
//! `plugin/v2` (docker-plugin-api.md §7), with Docker's exact error texts.
//!
//! Unlike moby, [`apply_settings`] is all-or-nothing: it works on clones and writes them back
//! only when every argument applied, so a failed `set` never leaves half the arguments applied.

use plugind_types::{
    config::{PluginConfig, PluginSettings},
    ErrorKind,
};

/// Fields an env entry may expose.
const ALLOWED_ENV: &[&str] = &["value"];
/// Fields the args entry may expose.
const ALLOWED_ARGS: &[&str] = &["value"];
/// Fields a device may expose.
const ALLOWED_DEVICES: &[&str] = &["path"];
/// Fields a mount may expose.
const ALLOWED_MOUNTS: &[&str] = &["source"];

/// Why a `set` was refused. The messages are Docker's, byte for byte (some are capitalised
/// because Docker's are); Docker answers every one of them with HTTP 500, which the API layer
/// must reproduce for the `set` endpoint whatever [`SetError::kind`] says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// An argument starts with `=`.
    #[error("invalid format, must be <name>[.<field>][=<value>]")]
    InvalidFormat,
    /// No field was given and the entry declares several settable fields.
    #[error("multiple fields are settable, one must be specified")]
    MultipleFields,
    /// The entry exists but the (possibly defaulted) field is not settable.
    #[error("{name:?} is not settable")]
    NotSettable {
        /// `<name>` or `<name>.<field>`, as Docker prints it.
        name: String,
    },
    /// No env, mount, device or args entry has this name.
    #[error("setting {name:?} not found in the plugin configuration")]
    NotFound {
        /// The name part of the argument.
        name: String,
    },
    /// The config mount has a `null` source, so there is nothing to replace.
    #[error("Plugin config has no mount source")]
    NoMountSource,
    /// The config device has a `null` path.
    #[error("Plugin config has no device path")]
    NoDevicePath,
    /// The new value breaks a path rule (a relative or `..` mount source or device path).
    #[error(transparent)]
    InvalidValue(#[from] plugind_types::validate::InvalidConfig),
    /// The plugin is enabled; the manager checks this before calling [`apply_settings`].
    #[error("cannot set on an active plugin, disable plugin before setting")]
    ActivePlugin,
}

impl SetError {
    /// The natural kind of the failure (Docker nevertheless answers 500 for all of them).
    pub fn kind(&self) -> ErrorKind {
        match self {
            SetError::InvalidFormat
            | SetError::MultipleFields
            | SetError::NotSettable { .. }
            | SetError::NotFound { .. }
            | SetError::InvalidValue(_) => ErrorKind::InvalidArgument,
            SetError::NoMountSource | SetError::NoDevicePath | SetError::ActivePlugin => {
                ErrorKind::FailedPrecondition
            }
        }
    }
}

/// One parsed `set` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settable {
    name: String,
    field: String,
    value: String,
}

impl Settable {
    /// moby's `newSettable`: split at the first `=`, then the field after the last `.` of the
    /// name (a `.` at position 0 does not count).
    fn parse(arg: &str) -> Result<Self, SetError> {
        let (name, value) = match arg.find('=') {
            Some(0) => return Err(SetError::InvalidFormat),
            Some(i) => (&arg[..i], &arg[i + 1..]),
            None => (arg, ""),
        };
        let (name, field) = match name.rfind('.') {
            Some(i) if i > 0 => (&name[..i], &name[i + 1..]),
            _ => (name, ""),
        };
        Ok(Settable {
            name: name.to_owned(),
            field: field.to_owned(),
            value: value.to_owned(),
        })
    }

    /// `name` or `name.field`, after any defaulting of the field (as moby prints it).
    fn pretty_name(&self) -> String {
        if self.field.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{}", self.name, self.field)
        }
    }

    /// moby's `isSettable`: defaults the field when the entry declares exactly one, then
    /// requires the field in both `allowed` and the entry's `Settable`.
    fn check(&mut self, allowed: &[&str], settable: Option<&Vec<String>>) -> Result<(), SetError> {
        let settable = settable.map(Vec::as_slice).unwrap_or_default();
        if self.field.is_empty() {
            match settable {
                [only] => self.field = only.clone(),
                [] => {}
                _ => return Err(SetError::MultipleFields),
            }
        }
        let ok = allowed.contains(&self.field.as_str()) && settable.contains(&self.field);
        if ok {
            Ok(())
        } else {
            Err(SetError::NotSettable {
                name: self.pretty_name(),
            })
        }
    }
}

/// Applies `args` (`["DEBUG=1", "mnt.source=/x"]`) to a plugin's config and settings with
/// Docker's rules (docker-plugin-api.md §7):
/// - the name is looked up in `Config.Env`, `Config.Mounts`, `Config.Linux.Devices`, then
///   `Config.Args.Name`;
/// - env replaces or appends `NAME=value` in `Settings.Env`;
/// - a mount's or device's new source/path is written to the config entry **and** to the
///   settings entry of the same name (moby shares one pointer between both);
/// - args become `Settings.Args`, the value split on single spaces.
///
/// On error both inputs are left exactly as they were.
pub fn apply_settings(
    config: &mut PluginConfig,
    settings: &mut PluginSettings,
    args: &[String],
) -> Result<(), SetError> {
    // Like moby, every argument is parsed before any is applied.
    let sets = args
        .iter()
        .map(|a| Settable::parse(a))
        .collect::<Result<Vec<_>, _>>()?;
    let mut new_config = config.clone();
    let mut new_settings = settings.clone();
    for set in sets {
        apply_one(&mut new_config, &mut new_settings, set)?;
    }
    // plugind's own rule (Docker checks nothing): set values become host paths too.
    new_config.validate()?;
    new_settings.validate()?;
    *config = new_config;
    *settings = new_settings;
    Ok(())
}

fn apply_one(
    config: &mut PluginConfig,
    settings: &mut PluginSettings,
    mut set: Settable,
) -> Result<(), SetError> {
    if let Some(env) = config.env.iter().flatten().find(|e| e.name == set.name) {
        set.check(ALLOWED_ENV, env.settable.as_ref())?;
        let entry = format!("{}={}", set.name, set.value);
        match settings
            .env
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) == set.name)
        {
            Some(existing) => *existing = entry,
            None => settings.env.push(entry),
        }
        return Ok(());
    }
    if let Some(mount) = config
        .mounts
        .iter_mut()
        .flatten()
        .find(|m| m.name == set.name)
    {
        set.check(ALLOWED_MOUNTS, mount.settable.as_ref())?;
        let Some(source) = mount.source.as_mut() else {
            return Err(SetError::NoMountSource);
        };
        source.clone_from(&set.value);
        if let Some(m) = settings.mounts.iter_mut().find(|m| m.name == set.name) {
            m.source = Some(set.value);
        }
        return Ok(());
    }
    if let Some(device) = config
        .linux
        .devices
        .iter_mut()
        .flatten()
        .find(|d| d.name == set.name)
    {
        set.check(ALLOWED_DEVICES, device.settable.as_ref())?;
        let Some(path) = device.path.as_mut() else {
            return Err(SetError::NoDevicePath);
        };
        path.clone_from(&set.value);
        if let Some(d) = settings.devices.iter_mut().find(|d| d.name == set.name) {
            d.path = Some(set.value);
        }
        return Ok(());
    }
    if config.args.name == set.name {
        set.check(ALLOWED_ARGS, config.args.settable.as_ref())?;
        settings.args = set.value.split(' ').map(str::to_owned).collect();
        return Ok(());
    }
    Err(SetError::NotFound { name: set.name })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin() -> (PluginConfig, PluginSettings) {
        let c = PluginConfig::from_json(
            br#"{
            "Env":[{"Name":"DEBUG","Value":"0","Settable":["value"]},
                   {"Name":"FIXED","Value":"x"},
                   {"Name":"UNSET","Settable":["value"]},
                   {"Name":"MULTI","Value":"m","Settable":["value","other"]},
                   {"Name":"WRONG","Value":"w","Settable":["source"]}],
            "Mounts":[{"Name":"state","Source":"/var/lib/a","Destination":"/state","Type":"bind","Settable":["source"]},
                      {"Name":"nosrc","Destination":"/n","Type":"bind","Settable":["source"]},
                      {"Name":"valmount","Source":"/v","Destination":"/v","Type":"bind","Settable":["value"]}],
            "Linux":{"Devices":[{"Name":"dev","Path":"/dev/null","Settable":["path"]},
                                {"Name":"nodev","Settable":["path"]}]},
            "Args":{"Name":"args","Value":["-v"],"Settable":["value"]}}"#,
        )
        .unwrap();
        let s = PluginSettings::initial(&c);
        (c, s)
    }

    fn set(args: &[&str]) -> Result<(PluginConfig, PluginSettings), SetError> {
        let (mut c, mut s) = plugin();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        apply_settings(&mut c, &mut s, &args).map(|()| (c, s))
    }

    fn err(args: &[&str]) -> String {
        set(args).unwrap_err().to_string()
    }

    #[test]
    fn parses_name_field_value() {
        let p = |a: &str| Settable::parse(a).unwrap();
        assert_eq!(
            p("a.b.c=1"),
            Settable {
                name: "a.b".into(),
                field: "c".into(),
                value: "1".into()
            }
        );
        assert_eq!(
            p("DEBUG"),
            Settable {
                name: "DEBUG".into(),
                field: String::new(),
                value: String::new()
            }
        );
        assert_eq!(
            p("X=a=b"),
            Settable {
                name: "X".into(),
                field: String::new(),
                value: "a=b".into()
            }
        );
        assert_eq!(
            p(".hidden=1").name,
            ".hidden",
            "a leading dot is not a field separator"
        );
        assert_eq!(Settable::parse("=1"), Err(SetError::InvalidFormat));
        assert_eq!(Settable::parse("="), Err(SetError::InvalidFormat));
    }

    #[test]
    fn env_is_replaced_in_place_or_appended() {
        let (c, s) = set(&["DEBUG=1"]).unwrap();
        assert_eq!(s.env, ["DEBUG=1", "FIXED=x", "MULTI=m", "WRONG=w"]);
        assert_eq!(c, plugin().0, "config env is unchanged");
        let (_, s) = set(&["UNSET=u", "DEBUG.value=2"]).unwrap();
        assert_eq!(
            s.env,
            ["DEBUG=2", "FIXED=x", "MULTI=m", "WRONG=w", "UNSET=u"]
        );
        let (_, s) = set(&["DEBUG"]).unwrap();
        assert_eq!(s.env[0], "DEBUG=", "no '=' means the empty value");
        let (_, s) = set(&["MULTI.value=z"]).unwrap();
        assert_eq!(s.env[2], "MULTI=z");
    }

    #[test]
    fn mounts_and_devices_change_config_and_settings() {
        let (c, s) = set(&["state=/srv/x", "dev.path=/dev/zero"]).unwrap();
        let mounts = c.mounts.as_ref().unwrap();
        assert_eq!(mounts[0].source.as_deref(), Some("/srv/x"));
        assert_eq!(s.mounts[0].source.as_deref(), Some("/srv/x"));
        assert_eq!(mounts[1].source, None, "other mounts untouched");
        assert_eq!(
            c.linux.devices.as_ref().unwrap()[0].path.as_deref(),
            Some("/dev/zero")
        );
        assert_eq!(s.devices[0].path.as_deref(), Some("/dev/zero"));
    }

    #[test]
    fn set_paths_follow_the_config_rules() {
        for bad in [
            "state=relative",
            "state=/a/../../etc",
            "dev.path=/dev/../etc/shadow",
        ] {
            let e = err(&[bad]);
            assert!(e.starts_with("invalid plugin config:"), "{bad}: {e}");
        }
        let (c, s) = plugin();
        let (mut c2, mut s2) = (c.clone(), s.clone());
        let args = vec!["DEBUG=1".to_owned(), "state=rel".to_owned()];
        assert!(apply_settings(&mut c2, &mut s2, &args).is_err());
        assert_eq!((c2, s2), (c, s), "nothing applied");
    }

    #[test]
    fn args_split_on_single_spaces() {
        let (c, s) = set(&["args=-x  -y"]).unwrap();
        assert_eq!(s.args, ["-x", "", "-y"]);
        assert_eq!(
            c.args.value.as_deref(),
            Some(&["-v".to_owned()][..]),
            "config args unchanged"
        );
        let (_, s) = set(&["args="]).unwrap();
        assert_eq!(s.args, [""]);
    }

    #[test]
    fn error_texts_are_dockers() {
        assert_eq!(
            err(&["=1"]),
            "invalid format, must be <name>[.<field>][=<value>]"
        );
        assert_eq!(
            err(&["MULTI=1"]),
            "multiple fields are settable, one must be specified"
        );
        assert_eq!(err(&["FIXED=1"]), r#""FIXED" is not settable"#);
        assert_eq!(err(&["DEBUG.foo=1"]), r#""DEBUG.foo" is not settable"#);
        assert_eq!(
            err(&["MULTI.other=1"]),
            r#""MULTI.other" is not settable"#,
            "declared but not allowed for env"
        );
        assert_eq!(
            err(&["WRONG=1"]),
            r#""WRONG.source" is not settable"#,
            "the defaulted field is printed"
        );
        assert_eq!(err(&["valmount=/x"]), r#""valmount.value" is not settable"#);
        assert_eq!(err(&["state.path=/x"]), r#""state.path" is not settable"#);
        assert_eq!(
            err(&["nope=1"]),
            r#"setting "nope" not found in the plugin configuration"#
        );
        assert_eq!(err(&["nosrc=/x"]), "Plugin config has no mount source");
        assert_eq!(err(&["nodev=/dev/x"]), "Plugin config has no device path");
        assert_eq!(
            SetError::ActivePlugin.to_string(),
            "cannot set on an active plugin, disable plugin before setting"
        );
        assert_eq!(
            SetError::NotFound { name: "x".into() }.kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(SetError::ActivePlugin.kind(), ErrorKind::FailedPrecondition);
    }

    #[test]
    fn failure_leaves_inputs_unchanged() {
        let (mut c, mut s) = plugin();
        let args = vec![
            "DEBUG=1".to_owned(),
            "state=/elsewhere".to_owned(),
            "FIXED=2".to_owned(),
        ];
        let e = apply_settings(&mut c, &mut s, &args).unwrap_err();
        assert_eq!(
            e,
            SetError::NotSettable {
                name: "FIXED".into()
            }
        );
        assert_eq!((c, s), plugin(), "earlier arguments must not stick");
    }

    #[test]
    fn empty_args_name_matches_an_unnamed_args_entry_like_docker() {
        let mut c = PluginConfig::default();
        let mut s = PluginSettings::initial(&c);
        let e = apply_settings(&mut c, &mut s, &["".to_owned()]).unwrap_err();
        assert_eq!(e.to_string(), r#""" is not settable"#);
    }
}
