//! Serde types for the Engine API's volume request and response bodies, so the API crate can
//! wire the routes without modelling them again:
//!
//! | route | request | response |
//! | --- | --- | --- |
//! | `GET /volumes?filters=` | `VolumeFilters::parse` with `FilterUse::List` | 200 [`VolumeListResponse`] |
//! | `POST /volumes/create` | [`VolumeCreateRequest`] | 201 `Volume` |
//! | `GET /volumes/{name}` | — | 200 `Volume` (with `Status`) |
//! | `DELETE /volumes/{name}?force=` | — | 204, empty body |
//! | `POST /volumes/prune?filters=` | `VolumeFilters::parse` with `FilterUse::Prune` | 200 [`VolumePruneResponse`] |
//!
//! Shapes follow moby's `api/types/volume`: `Warnings` is `null` when there are none (Go's nil
//! slice), `VolumesDeleted` is `[]` when nothing was pruned (moby allocates it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use plugind_volumes::{PruneReport, Volume};

/// Body of `POST /volumes/create` (moby `volume.CreateOptions`). Every field is optional; Go
/// decodes `null` like a missing field, and unknown fields (`ClusterVolumeSpec`) are ignored.
/// Read with [`VolumeCreateRequest::parse`], which matches keys as Go's `encoding/json` does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct VolumeCreateRequest {
    /// Volume name; empty or missing = a generated 64-hex name.
    #[serde(rename = "Name")]
    pub name: Option<String>,
    /// Driver plugin name; empty or missing = `local`.
    #[serde(rename = "Driver")]
    pub driver: Option<String>,
    /// Options passed to `VolumeDriver.Create`.
    #[serde(rename = "DriverOpts")]
    pub driver_opts: Option<BTreeMap<String, String>>,
    /// User labels.
    #[serde(rename = "Labels")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// The fields of moby's `CreateOptions`, as Go's decoder finds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CreateField {
    Name,
    Driver,
    DriverOpts,
    Labels,
    /// Known to Go but not used by plugind (swarm cluster volumes).
    ClusterVolumeSpec,
}

impl CreateField {
    const ALL: [(&'static str, CreateField); 5] = [
        ("Name", CreateField::Name),
        ("Driver", CreateField::Driver),
        ("DriverOpts", CreateField::DriverOpts),
        ("Labels", CreateField::Labels),
        ("ClusterVolumeSpec", CreateField::ClusterVolumeSpec),
    ];

    /// Go's rule: the exact tag name first, else a case-insensitive match (Unicode simple
    /// folding: `ſ` is an `s`, `K` (Kelvin) a `k`).
    fn find(key: &str) -> Option<CreateField> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == key)
            .or_else(|| {
                let folded = go_fold(key);
                Self::ALL.iter().find(|(n, _)| go_fold(n) == folded)
            })
            .map(|(_, f)| *f)
    }

    fn go_type(self) -> &'static str {
        match self {
            CreateField::Name | CreateField::Driver => "string",
            _ => "map[string]string",
        }
    }

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("", |(n, _)| n)
    }
}

/// Go's `encoding/json` `foldName`: ASCII letters upper-cased, every other rune replaced by the
/// smallest rune of its simple-fold orbit (only `ſ` and `K` reach ASCII letters).
fn go_fold(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' => c.to_ascii_uppercase(),
            '\u{17F}' => 'S',
            '\u{212A}' => 'K',
            other => other,
        })
        .collect()
}

/// Go's name of a JSON value's kind in `cannot unmarshal <kind> into ...`.
fn go_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Object(_) => "object",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Null => "null",
    }
}

/// What the ordered walk of the body produced: the request, and the first type error (Go
/// finishes decoding and then reports the first one).
#[derive(Default)]
struct Decoded {
    request: VolumeCreateRequest,
    type_error: Option<String>,
}

impl Decoded {
    fn type_error(&mut self, field: CreateField, v: &serde_json::Value, go_type: &str) {
        self.type_error.get_or_insert_with(|| {
            format!(
                "json: cannot unmarshal {} into Go struct field CreateOptions.{} of type {go_type}",
                go_kind(v),
                field.name()
            )
        });
    }

    /// Go's assignment of one key's value: a `null` leaves a string alone and sets a map to
    /// nil; an object is merged into the map already decoded (Go reuses a non-nil map), and a
    /// `null` map value is the empty string.
    fn set(&mut self, field: CreateField, v: serde_json::Value) {
        use serde_json::Value;
        let r = &mut self.request;
        match (field, v) {
            (CreateField::ClusterVolumeSpec, _) => {}
            (CreateField::Name | CreateField::Driver, Value::Null) => {}
            (CreateField::Name, Value::String(s)) => r.name = Some(s),
            (CreateField::Driver, Value::String(s)) => r.driver = Some(s),
            (CreateField::DriverOpts, Value::Null) => r.driver_opts = None,
            (CreateField::Labels, Value::Null) => r.labels = None,
            (f @ (CreateField::DriverOpts | CreateField::Labels), Value::Object(entries)) => {
                let mut bad = None;
                let map = match f {
                    CreateField::DriverOpts => r.driver_opts.get_or_insert_with(BTreeMap::new),
                    _ => r.labels.get_or_insert_with(BTreeMap::new),
                };
                for (k, v) in entries {
                    match v {
                        Value::String(s) => {
                            map.insert(k, s);
                        }
                        Value::Null => {
                            map.entry(k).or_default();
                        }
                        other => {
                            bad.get_or_insert(other);
                        }
                    }
                }
                if let Some(other) = bad {
                    self.type_error(f, &other, "string");
                }
            }
            (f, other) => self.type_error(f, &other, f.go_type()),
        }
    }
}

impl<'de> Deserialize<'de> for Decoded {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Walk;
        impl<'de> serde::de::Visitor<'de> for Walk {
            type Value = Decoded;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }

            // Keys in document order, so duplicates and case variants resolve as in Go.
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Decoded, A::Error> {
                let mut out = Decoded::default();
                while let Some(key) = map.next_key::<String>()? {
                    match CreateField::find(&key) {
                        Some(field) => {
                            let v: serde_json::Value = map.next_value()?;
                            out.set(field, v);
                        }
                        None => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }

            fn visit_unit<E>(self) -> Result<Decoded, E> {
                Ok(Decoded::default())
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Decoded, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Decoded::top_level_error("array"))
            }

            fn visit_bool<E>(self, _: bool) -> Result<Decoded, E> {
                Ok(Decoded::top_level_error("bool"))
            }

            fn visit_i64<E>(self, _: i64) -> Result<Decoded, E> {
                Ok(Decoded::top_level_error("number"))
            }

            fn visit_u64<E>(self, _: u64) -> Result<Decoded, E> {
                Ok(Decoded::top_level_error("number"))
            }

            fn visit_f64<E>(self, _: f64) -> Result<Decoded, E> {
                Ok(Decoded::top_level_error("number"))
            }

            fn visit_str<E>(self, _: &str) -> Result<Decoded, E> {
                Ok(Decoded::top_level_error("string"))
            }
        }
        d.deserialize_any(Walk)
    }
}

impl Decoded {
    fn top_level_error(kind: &str) -> Decoded {
        Decoded {
            request: VolumeCreateRequest::default(),
            type_error: Some(format!(
                "json: cannot unmarshal {kind} into Go value of type volume.CreateOptions"
            )),
        }
    }
}

impl VolumeCreateRequest {
    /// Reads a create body as moby does (Go's `encoding/json` into `CreateOptions`): keys match
    /// their field exactly or case-insensitively (`name`, `DRIVER`, `driveropts`), later keys
    /// win, unknown keys are ignored. The error is the text after `invalid JSON: `.
    pub(crate) fn parse(body: &[u8]) -> Result<VolumeCreateRequest, String> {
        let decoded: Decoded = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        match decoded.type_error {
            Some(e) => Err(e),
            None => Ok(decoded.request),
        }
    }
}

impl VolumeCreateRequest {
    /// Creates the volume this body asks for.
    pub(crate) async fn execute(
        self,
        service: &dyn crate::volume_backend::VolumeBackend,
    ) -> Result<Volume, crate::backend::BackendError> {
        service
            .create(
                self.name.as_deref(),
                self.driver.as_deref().unwrap_or_default(),
                self.driver_opts.unwrap_or_default(),
                self.labels.unwrap_or_default(),
            )
            .await
    }
}

/// Body of `GET /volumes` (moby `volume.ListResponse`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct VolumeListResponse {
    /// The volumes.
    #[serde(rename = "Volumes")]
    pub volumes: Vec<Volume>,
    /// Driver failures; `null` when there are none.
    #[serde(rename = "Warnings")]
    pub warnings: Option<Vec<String>>,
}

impl VolumeListResponse {
    /// From [`crate::VolumeBackend::list`]'s result.
    pub(crate) fn new(volumes: Vec<Volume>, warnings: Vec<String>) -> Self {
        VolumeListResponse {
            volumes,
            warnings: (!warnings.is_empty()).then_some(warnings),
        }
    }
}

/// Body of `POST /volumes/prune` (moby `volume.PruneReport`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VolumePruneResponse {
    /// Names of the removed volumes.
    #[serde(rename = "VolumesDeleted")]
    pub volumes_deleted: Vec<String>,
    /// Bytes freed (always 0 for plugin volumes).
    #[serde(rename = "SpaceReclaimed")]
    pub space_reclaimed: u64,
}

impl From<PruneReport> for VolumePruneResponse {
    fn from(r: PruneReport) -> Self {
        VolumePruneResponse {
            volumes_deleted: r.volumes_deleted,
            space_reclaimed: r.space_reclaimed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_accepts_what_clients_send() {
        // docker CLI 28.
        let cli = VolumeCreateRequest::parse(
            br#"{"Driver":"vol","DriverOpts":{},"Labels":{"a":"b"},"Name":"v1"}"#,
        )
        .unwrap();
        assert_eq!(cli.name.as_deref(), Some("v1"));
        assert_eq!(cli.labels.unwrap()["a"], "b");
        // docker-py sends nulls for what it was not given; unknown fields are ignored.
        let py = VolumeCreateRequest::parse(
            br#"{"Name":null,"Driver":"vol","DriverOpts":null,"Labels":null,"ClusterVolumeSpec":null}"#,
        )
        .unwrap();
        assert_eq!(py.name, None);
        assert_eq!(py.driver.as_deref(), Some("vol"));
        let empty = VolumeCreateRequest::parse(b"{}").unwrap();
        assert_eq!(empty, VolumeCreateRequest::default());
    }

    #[test]
    fn create_keys_match_case_insensitively_as_in_go() {
        let r = VolumeCreateRequest::parse(
            br#"{"name":"v1","DRIVER":"vol","driveropts":{"o":"1"},"lAbElS":{"k":"v"}}"#,
        )
        .unwrap();
        assert_eq!(r.name.as_deref(), Some("v1"));
        assert_eq!(r.driver.as_deref(), Some("vol"));
        assert_eq!(r.driver_opts.unwrap()["o"], "1");
        assert_eq!(r.labels.unwrap()["k"], "v");
        // Unicode simple folding: `ſ` (U+017F) is an `s`; `Labelſ` is `Labels`.
        let r = VolumeCreateRequest::parse("{\"Labelſ\":{\"a\":\"b\"}}".as_bytes()).unwrap();
        assert_eq!(r.labels.unwrap()["a"], "b");
        // Keys apply in document order: the last string wins, maps merge, null keeps a
        // string and clears a map.
        let r = VolumeCreateRequest::parse(
            br#"{"Name":"a","name":"b","NAME":null,"Labels":{"x":"1"},"labels":{"y":null},
                "DriverOpts":{"o":"1"},"driverOpts":null}"#,
        )
        .unwrap();
        assert_eq!(r.name.as_deref(), Some("b"));
        assert_eq!(
            r.labels.unwrap(),
            BTreeMap::from([("x".into(), "1".into()), ("y".into(), String::new())])
        );
        assert_eq!(r.driver_opts, None);
        // Close but not equal names are unknown keys, ignored.
        let r = VolumeCreateRequest::parse(br#"{"Names":"x","driver_opts":{"o":"1"}}"#).unwrap();
        assert_eq!(r, VolumeCreateRequest::default());
    }

    #[test]
    fn create_type_errors_have_gos_texts() {
        assert_eq!(
            VolumeCreateRequest::parse(br#"{"name":1}"#).unwrap_err(),
            "json: cannot unmarshal number into Go struct field CreateOptions.Name of type string"
        );
        assert_eq!(
            VolumeCreateRequest::parse(br#"{"labels":["a"]}"#).unwrap_err(),
            "json: cannot unmarshal array into Go struct field CreateOptions.Labels of type map[string]string"
        );
        assert_eq!(
            VolumeCreateRequest::parse(br#"[1]"#).unwrap_err(),
            "json: cannot unmarshal array into Go value of type volume.CreateOptions"
        );
        // A syntax error anywhere wins over a type error before it, as Go scans first.
        let e = VolumeCreateRequest::parse(br#"{"name":1,"#).unwrap_err();
        assert!(e.contains("EOF"), "{e}");
        assert_eq!(
            VolumeCreateRequest::parse(b"null").unwrap(),
            VolumeCreateRequest::default()
        );
    }

    #[test]
    fn responses_have_mobys_shapes() {
        let list = VolumeListResponse::new(Vec::new(), Vec::new());
        assert_eq!(
            serde_json::to_string(&list).unwrap(),
            r#"{"Volumes":[],"Warnings":null}"#
        );
        let list = VolumeListResponse::new(Vec::new(), vec!["list x: boom".into()]);
        assert_eq!(
            serde_json::to_string(&list).unwrap(),
            r#"{"Volumes":[],"Warnings":["list x: boom"]}"#
        );
        let prune = VolumePruneResponse::from(PruneReport::default());
        assert_eq!(
            serde_json::to_string(&prune).unwrap(),
            r#"{"VolumesDeleted":[],"SpaceReclaimed":0}"#
        );
    }
}
