//! [`PluginManifest`] and [`Descriptor`]: the schema-2 manifest of a plugin, built byte for byte
//! as Docker writes it and parsed (hostile input) with its media types checked.

use plugind_types::{config::PluginConfig, Digest};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{DistributionError, Result};

/// Docker's schema-2 manifest media type: what plugind pushes and asks for first.
pub const MEDIA_TYPE_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker's manifest list media type (never a plugin; refused).
pub const MEDIA_TYPE_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// The OCI image manifest media type (accepted on pull, as Docker does).
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The OCI image index media type (never a plugin; refused).
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// The plugin config blob's media type.
pub const MEDIA_TYPE_PLUGIN_CONFIG: &str = "application/vnd.docker.plugin.v1+json";
/// The gzip layer media type every plugin push uses.
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Uncompressed Docker layer (accepted on pull).
pub const MEDIA_TYPE_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// OCI gzip layer (accepted on pull).
pub const MEDIA_TYPE_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI uncompressed layer (accepted on pull).
pub const MEDIA_TYPE_OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// The largest manifest read from a registry.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// The largest plugin config blob read from a registry.
pub const MAX_CONFIG_SIZE: u64 = 1 << 20;

/// A content descriptor: media type, digest and size of a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The blob's media type as the manifest names it.
    pub media_type: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
}

impl Descriptor {
    /// True for a gzip-compressed layer (Docker's or OCI's type); false for a plain tar.
    pub fn is_gzip_layer(&self) -> bool {
        matches!(
            self.media_type.as_str(),
            MEDIA_TYPE_LAYER_GZIP | MEDIA_TYPE_OCI_LAYER_GZIP
        )
    }
}

/// A plugin's manifest: its exact bytes, their digest, and the descriptors they name.
///
/// A plugin has exactly one layer: `docker plugin push` always writes one, and one layer keeps
/// install a single stream-and-unpack step (docs/compat.d/D.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginManifest {
    /// The manifest as stored in the registry (the digest is over these bytes).
    pub bytes: Vec<u8>,
    /// `sha256` of `bytes`.
    pub digest: Digest,
    /// The plugin config blob.
    pub config: Descriptor,
    /// The layers (exactly one for a manifest that `parse` accepted).
    pub layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireManifest {
    schema_version: i64,
    #[serde(default)]
    media_type: Option<String>,
    config: WireDescriptor,
    #[serde(default)]
    layers: Vec<WireDescriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireDescriptor {
    media_type: String,
    digest: String,
    size: i64,
}

impl PluginManifest {
    /// The manifest of a plugin as Docker pushes one: its config blob and its one gzip layer,
    /// each given as (digest, size).
    pub fn for_plugin(config: (Digest, u64), layer: (Digest, u64)) -> PluginManifest {
        PluginManifest::build(
            Descriptor {
                media_type: MEDIA_TYPE_PLUGIN_CONFIG.to_owned(),
                digest: config.0,
                size: config.1,
            },
            vec![Descriptor {
                media_type: MEDIA_TYPE_LAYER_GZIP.to_owned(),
                digest: layer.0,
                size: layer.1,
            }],
        )
    }

    /// Docker's byte-exact schema-2 plugin manifest: compact JSON, keys `schemaVersion`,
    /// `config`, `layers`, `mediaType` in that order, no trailing newline.
    pub fn build(config: Descriptor, layers: Vec<Descriptor>) -> PluginManifest {
        let mut out = String::with_capacity(420);
        out.push_str(r#"{"schemaVersion":2,"config":"#);
        push_descriptor(&mut out, &config);
        out.push_str(r#","layers":["#);
        for (i, layer) in layers.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_descriptor(&mut out, layer);
        }
        out.push_str(r#"],"mediaType":"#);
        push_go_string(&mut out, MEDIA_TYPE_MANIFEST_V2);
        out.push('}');
        let bytes = out.into_bytes();
        PluginManifest {
            digest: sha256_digest(&bytes),
            bytes,
            config,
            layers,
        }
    }

    /// Parses manifest bytes from a registry and checks them: a schema-2 (or OCI) image
    /// manifest whose config is a plugin config and which has exactly one layer of a tar or
    /// gzip-tar type. Lists and indexes, images and foreign layers are refused.
    pub fn parse(bytes: Vec<u8>) -> Result<PluginManifest> {
        if bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(DistributionError::TooLarge {
                what: "manifest",
                limit: MAX_MANIFEST_SIZE,
            });
        }
        let probe: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| DistributionError::InvalidManifest {
                reason: e.to_string(),
            })?;
        if let Some(mt) = probe.get("mediaType").and_then(|v| v.as_str()) {
            if mt != MEDIA_TYPE_MANIFEST_V2 && mt != MEDIA_TYPE_OCI_MANIFEST {
                return Err(DistributionError::UnsupportedMediaType {
                    what: "manifest",
                    media_type: mt.to_owned(),
                });
            }
        }
        let wire: WireManifest =
            serde_json::from_value(probe).map_err(|e| DistributionError::InvalidManifest {
                reason: e.to_string(),
            })?;
        if wire.schema_version != 2 {
            return Err(DistributionError::InvalidManifest {
                reason: format!(
                    "schemaVersion {} (only 2 is supported)",
                    wire.schema_version
                ),
            });
        }
        let _ = wire.media_type;
        let config = descriptor("config", wire.config)?;
        if config.media_type != MEDIA_TYPE_PLUGIN_CONFIG {
            return Err(DistributionError::NotAPlugin {
                reference: String::new(),
            });
        }
        if config.size > MAX_CONFIG_SIZE {
            return Err(DistributionError::TooLarge {
                what: "plugin config",
                limit: MAX_CONFIG_SIZE,
            });
        }
        if wire.layers.len() != 1 {
            return Err(DistributionError::InvalidManifest {
                reason: format!(
                    "a plugin has exactly one layer, this manifest has {}",
                    wire.layers.len()
                ),
            });
        }
        let layers = wire
            .layers
            .into_iter()
            .map(|l| descriptor("layer", l))
            .collect::<Result<Vec<_>>>()?;
        for layer in &layers {
            if !matches!(
                layer.media_type.as_str(),
                MEDIA_TYPE_LAYER_GZIP
                    | MEDIA_TYPE_LAYER_TAR
                    | MEDIA_TYPE_OCI_LAYER_GZIP
                    | MEDIA_TYPE_OCI_LAYER_TAR
            ) {
                return Err(DistributionError::UnsupportedMediaType {
                    what: "layer",
                    media_type: layer.media_type.clone(),
                });
            }
        }
        Ok(PluginManifest {
            digest: sha256_digest(&bytes),
            bytes,
            config,
            layers,
        })
    }
}

fn descriptor(what: &'static str, wire: WireDescriptor) -> Result<Descriptor> {
    let digest = Digest::parse(&wire.digest).map_err(|e| DistributionError::InvalidManifest {
        reason: format!("{what} digest: {e}"),
    })?;
    let size = u64::try_from(wire.size).map_err(|_| DistributionError::InvalidManifest {
        reason: format!("{what} size {} is negative", wire.size),
    })?;
    Ok(Descriptor {
        media_type: wire.media_type,
        digest,
        size,
    })
}

fn push_descriptor(out: &mut String, d: &Descriptor) {
    out.push_str(r#"{"mediaType":"#);
    push_go_string(out, &d.media_type);
    out.push_str(r#","digest":""#);
    out.push_str(&d.digest.to_string());
    out.push_str(r#"","size":"#);
    out.push_str(&d.size.to_string());
    out.push('}');
}

/// Docker's config blob of a plugin: its `Config` object as Go's `encoding/json` writes it
/// (keys in the model's order, `<`, `>`, `&`, U+2028, U+2029 and control characters escaped
/// as Go does), followed by one `\n` (distribution.md §1).
pub fn plugin_config_blob(config: &PluginConfig) -> Vec<u8> {
    let mut out = go_json(config);
    out.push(b'\n');
    out
}

/// `value` encoded as Go's `json.Marshal` would encode the same document.
pub fn go_json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    // Serialising the crate's models and JSON values to memory cannot fail.
    value
        .serialize(&mut ser)
        .expect("serialising to memory does not fail");
    out
}

/// serde_json's compact formatter with Go's string escaping.
struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escaped = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escaped.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        char_escape: serde_json::ser::CharEscape,
    ) -> std::io::Result<()> {
        use serde_json::ser::CharEscape;
        let text = match char_escape {
            CharEscape::Quote => "\\\"".to_owned(),
            CharEscape::ReverseSolidus => "\\\\".to_owned(),
            CharEscape::Solidus => "\\/".to_owned(),
            CharEscape::LineFeed => "\\n".to_owned(),
            CharEscape::CarriageReturn => "\\r".to_owned(),
            CharEscape::Tab => "\\t".to_owned(),
            // Go has no short forms for these: \u0008, \u000c, \u00XX in lowercase hex.
            CharEscape::Backspace => "\\u0008".to_owned(),
            CharEscape::FormFeed => "\\u000c".to_owned(),
            CharEscape::AsciiControl(b) => format!("\\u{b:04x}"),
        };
        writer.write_all(text.as_bytes())
    }
}

/// A JSON string as Go's encoding/json writes it (`<`, `>`, `&` escaped as `\u003c`...).
fn push_go_string(out: &mut String, s: &str) {
    out.push_str(&String::from_utf8_lossy(&go_json(&s)));
}

/// The sha256 digest of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> Digest {
    Digest::from_sha256_bytes(Sha256::digest(bytes).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.docker.plugin.v1+json","digest":"sha256:da12c96a2c31c648951e1dc8a4f8bc6cc76154716c2a56e895437c6f070d59e3","size":804},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"sha256:cec2e3189279134d83a5bff0a10f82ca2a75853be6a9ee7a6e747af1845b8f01","size":1669322}],"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#;

    fn sample_parts() -> (Descriptor, Vec<Descriptor>) {
        (
            Descriptor {
                media_type: MEDIA_TYPE_PLUGIN_CONFIG.into(),
                digest: Digest::parse(
                    "sha256:da12c96a2c31c648951e1dc8a4f8bc6cc76154716c2a56e895437c6f070d59e3",
                )
                .unwrap(),
                size: 804,
            },
            vec![Descriptor {
                media_type: MEDIA_TYPE_LAYER_GZIP.into(),
                digest: Digest::parse(
                    "sha256:cec2e3189279134d83a5bff0a10f82ca2a75853be6a9ee7a6e747af1845b8f01",
                )
                .unwrap(),
                size: 1669322,
            }],
        )
    }

    #[test]
    fn build_reproduces_dockers_sample_manifest_bytes_and_digest() {
        let (config, layers) = sample_parts();
        let m = PluginManifest::build(config, layers);
        assert_eq!(std::str::from_utf8(&m.bytes).unwrap(), SAMPLE);
        assert_eq!(m.bytes.len(), 418);
        assert_eq!(
            m.digest.to_string(),
            "sha256:ff328ed19112ef9fb0849c2aa8b51a63cecb6dc7a1fb73b7f9f03873d8382858"
        );
    }

    #[test]
    fn go_json_escapes_as_go_does() {
        let text = String::from_utf8(go_json(&"<a&b>\u{8}\u{c}\u{1}\n\t\"\\/\u{2028}é")).unwrap();
        assert_eq!(
            text,
            r#""\u003ca\u0026b\u003e\u0008\u000c\u0001\n\t\"\\/\u2028é""#
        );
    }

    #[test]
    fn config_blob_is_dockers_key_order_and_a_newline() {
        let config = PluginConfig::from_json(
            br#"{"description":"x<y","interface":{"socket":"a.sock","types":["docker.volumedriver/1.0"]},"entrypoint":["/p"]}"#,
        )
        .unwrap();
        let blob = String::from_utf8(plugin_config_blob(&config)).unwrap();
        assert_eq!(
            blob,
            "{\"Args\":{\"Description\":\"\",\"Name\":\"\",\"Settable\":null,\"Value\":null},\"Description\":\"x\\u003cy\",\"Documentation\":\"\",\"Entrypoint\":[\"/p\"],\"Env\":null,\"Interface\":{\"Socket\":\"a.sock\",\"Types\":[\"docker.volumedriver/1.0\"]},\"IpcHost\":false,\"Linux\":{\"AllowAllDevices\":false,\"Capabilities\":null,\"Devices\":null},\"Mounts\":null,\"Network\":{\"Type\":\"\"},\"PidHost\":false,\"PropagatedMount\":\"\",\"User\":{},\"WorkDir\":\"\"}\n"
        );
    }

    #[test]
    fn parse_accepts_the_sample_and_keeps_its_bytes() {
        let m = PluginManifest::parse(SAMPLE.as_bytes().to_vec()).unwrap();
        let (config, layers) = sample_parts();
        assert_eq!(m, PluginManifest::build(config, layers));
    }

    #[test]
    fn parse_refuses_images_lists_and_foreign_layers() {
        let image = SAMPLE.replace(
            MEDIA_TYPE_PLUGIN_CONFIG,
            "application/vnd.docker.container.image.v1+json",
        );
        assert!(matches!(
            PluginManifest::parse(image.into_bytes()),
            Err(DistributionError::NotAPlugin { .. })
        ));
        let list = SAMPLE.replace(
            r#""mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#,
            &format!(r#""mediaType":"{MEDIA_TYPE_MANIFEST_LIST}"}}"#),
        );
        assert!(matches!(
            PluginManifest::parse(list.into_bytes()),
            Err(DistributionError::UnsupportedMediaType {
                what: "manifest",
                ..
            })
        ));
        let foreign = SAMPLE.replace(
            MEDIA_TYPE_LAYER_GZIP,
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        );
        assert!(matches!(
            PluginManifest::parse(foreign.into_bytes()),
            Err(DistributionError::UnsupportedMediaType { what: "layer", .. })
        ));
    }

    #[test]
    fn parse_refuses_malformed_manifests() {
        let cases = [
            "not json".to_owned(),
            SAMPLE.replace(r#""schemaVersion":2"#, r#""schemaVersion":1"#),
            SAMPLE.replace("\"size\":804", "\"size\":-1"),
            SAMPLE.replace("sha256:da12", "md5:da12"),
            SAMPLE.replace(r#""layers":[{"#, r#""layers":[],"x":[{"#),
            SAMPLE.replace(
                r#""layers":[{"#,
                r#""layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"sha256:cec2e3189279134d83a5bff0a10f82ca2a75853be6a9ee7a6e747af1845b8f01","size":1},{"#,
            ),
        ];
        for case in cases {
            assert!(
                PluginManifest::parse(case.clone().into_bytes()).is_err(),
                "accepted {case}"
            );
        }
        let huge_config = SAMPLE.replace("\"size\":804", "\"size\":99999999");
        assert!(matches!(
            PluginManifest::parse(huge_config.into_bytes()),
            Err(DistributionError::TooLarge { .. })
        ));
        let mut huge = SAMPLE.as_bytes().to_vec();
        huge.resize(MAX_MANIFEST_SIZE as usize + 1, b' ');
        assert!(matches!(
            PluginManifest::parse(huge),
            Err(DistributionError::TooLarge { .. })
        ));
    }
}
