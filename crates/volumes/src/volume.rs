//! The volume as the Engine API shows it ([`Volume`]), the record plugind keeps of it
//! ([`VolumeRecord`]), and Docker's rules for names, generated names and times.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

use crate::error::{Result, VolumeError};

/// Label Docker puts on volumes created without a name; `prune` without `all=true` removes
/// only volumes carrying it.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// Longest accepted name: the record file `<name>.json` and the atomic writer's temporary
/// `.<name>.json.tmp-<pid>-<n>` must fit in a 255-byte file name.
pub const MAX_NAME_LEN: usize = 200;

/// Docker's `Volume` object (Engine API), keys in Docker's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    /// When plugind created the volume, RFC 3339 in UTC with seconds (Go's `time.RFC3339`).
    #[serde(rename = "CreatedAt")]
    pub created_at: String,
    /// The driver plugin's full name (`vol:latest`), as Docker records it.
    #[serde(rename = "Driver")]
    pub driver: String,
    /// User labels.
    #[serde(rename = "Labels", default, deserialize_with = "null_as_empty")]
    pub labels: BTreeMap<String, String>,
    /// Where the driver says the volume lives (a path inside the plugin for managed plugins);
    /// empty when unknown.
    #[serde(rename = "Mountpoint")]
    pub mountpoint: String,
    /// The volume name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Driver options given at create.
    #[serde(rename = "Options", default, deserialize_with = "null_as_empty")]
    pub options: BTreeMap<String, String>,
    /// `local` or `global`, from `VolumeDriver.Capabilities`.
    #[serde(rename = "Scope")]
    pub scope: String,
    /// Driver-specific status from `VolumeDriver.Get`; only set by inspect.
    #[serde(rename = "Status", default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Docker writes `null` for volumes without labels or options.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<BTreeMap<String, String>, D::Error> {
    Ok(Option::<BTreeMap<String, String>>::deserialize(d)?.unwrap_or_default())
}

/// Where a volume is in its life; only `Ready` volumes are visible. The other two mark an
/// operation that was interrupted by a crash, finished by [`crate::VolumeService::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordState {
    /// Written before the plugin reference is taken and the driver is asked to create.
    Creating,
    /// Created, visible, holding one reference on its driver plugin.
    Ready,
    /// Written before the driver is asked to remove.
    Removing,
}

/// Current record format; a record with a higher version is left alone at open.
pub const RECORD_FORMAT_VERSION: u32 = 1;

/// What plugind stores per volume in `<root>/volumes/<name>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeRecord {
    /// Format version of this record.
    pub format_version: u32,
    /// The volume name (equals the file stem).
    pub name: String,
    /// The driver plugin's full name; also the plugin the reference `volume:<name>` is held on.
    pub driver: String,
    /// The driver plugin's id when the volume was created (absent in records of older
    /// plugind). A plugin of the same name with another id is not this volume's driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_id: Option<String>,
    /// Driver options.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// The driver's scope at create time.
    pub scope: String,
    /// Lifecycle state.
    pub state: RecordState,
    /// Caller ids that mounted the volume and have not unmounted it yet. Persisted so a
    /// restart of plugind does not forget that a volume is in use.
    #[serde(default)]
    pub mounts: BTreeSet<String>,
}

impl VolumeRecord {
    /// The API view without any driver facts.
    pub fn to_volume(&self) -> Volume {
        Volume {
            created_at: self.created_at.clone(),
            driver: self.driver.clone(),
            labels: self.labels.clone(),
            mountpoint: String::new(),
            name: self.name.clone(),
            options: self.options.clone(),
            scope: self.scope.clone(),
            status: None,
        }
    }

    /// The holder name of this volume's reference on its plugin.
    pub fn holder(&self) -> String {
        holder(&self.name)
    }
}

/// The holder name a volume uses for its plugin reference.
pub fn holder(name: &str) -> String {
    format!("volume:{name}")
}

/// Checks Docker's volume name rule `^[a-zA-Z0-9][a-zA-Z0-9_.-]+$` (so at least two bytes),
/// plus plugind's length limit.
pub fn validate_name(name: &str) -> Result<()> {
    let b = name.as_bytes();
    let ok = b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if !ok {
        return Err(VolumeError::InvalidName {
            name: name.to_owned(),
        });
    }
    if b.len() > MAX_NAME_LEN {
        return Err(VolumeError::NameTooLong {
            len: b.len(),
            max: MAX_NAME_LEN,
        });
    }
    Ok(())
}

/// A random 64-hex name, as Docker generates for volumes created without one (from the
/// operating system's random source through `rand`).
pub fn random_name() -> String {
    let bytes: [u8; 32] = rand::random();
    plugind_types::to_hex(&bytes)
}

/// Formats `t` like Go's `time.RFC3339` in UTC: `2026-11-26T13:19:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    plugind_types::time::format_system_time(t, plugind_types::time::Fraction::None)
}

/// Docker's scope rule: lower-cased; anything but `local` and `global` becomes `local`.
pub fn normalize_scope(scope: &str) -> String {
    let s = scope.to_ascii_lowercase();
    if s == "global" {
        s
    } else {
        "local".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn names_follow_dockers_rule() {
        for good in [
            "ab",
            "v1",
            "my-vol_1.2",
            "0.-_",
            "A".repeat(MAX_NAME_LEN).as_str(),
        ] {
            assert!(validate_name(good).is_ok(), "{good:?} rejected");
        }
        for bad in [
            "", "a", "-ab", ".ab", "_ab", "a/b", "a b", "a:b", "..", "/abs", "é1",
        ] {
            assert!(
                matches!(validate_name(bad), Err(VolumeError::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
        assert!(matches!(
            validate_name(&"a".repeat(MAX_NAME_LEN + 1)),
            Err(VolumeError::NameTooLong { .. })
        ));
    }

    #[test]
    fn random_names_are_64_hex_and_differ() {
        let a = random_name();
        let b = random_name();
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        assert!(validate_name(&a).is_ok());
    }

    #[test]
    fn rfc3339_known_dates() {
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(1_700_000_000)), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn scope_is_normalised() {
        assert_eq!(normalize_scope("GLOBAL"), "global");
        assert_eq!(normalize_scope("Local"), "local");
        assert_eq!(normalize_scope("cluster"), "local");
    }

    #[test]
    fn volume_json_has_dockers_keys_and_order() {
        let rec = VolumeRecord {
            format_version: RECORD_FORMAT_VERSION,
            name: "v1".into(),
            driver: "vol:latest".into(),
            driver_id: None,
            options: BTreeMap::from([("o".into(), "1".into())]),
            labels: BTreeMap::new(),
            created_at: "2026-11-26T13:19:00Z".into(),
            scope: "local".into(),
            state: RecordState::Ready,
            mounts: BTreeSet::new(),
        };
        let json = serde_json::to_string(&rec.to_volume()).unwrap();
        assert_eq!(
            json,
            r#"{"CreatedAt":"2026-11-26T13:19:00Z","Driver":"vol:latest","Labels":{},"Mountpoint":"","Name":"v1","Options":{"o":"1"},"Scope":"local"}"#
        );
        let mut v = rec.to_volume();
        v.status = Some(serde_json::Map::from_iter([(
            "mounts".to_owned(),
            1.into(),
        )]));
        let json = serde_json::to_string(&v).unwrap();
        assert!(
            json.ends_with(r#""Scope":"local","Status":{"mounts":1}}"#),
            "{json}"
        );
        // Docker's own output (null maps, no Status) reads back.
        let docker: Volume = serde_json::from_str(
            r#"{"CreatedAt":"x","Driver":"d","Labels":null,"Mountpoint":"/m","Name":"n","Options":null,"Scope":"local"}"#,
        )
        .unwrap();
        assert!(docker.labels.is_empty() && docker.options.is_empty() && docker.status.is_none());
    }
}
