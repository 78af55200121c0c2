//! Entry points for the fuzz targets in `fuzz/` and for the seed-corpus test on stable
//! (`tests/tests/fuzz_corpora.rs`): each takes arbitrary bytes, runs a parser of untrusted
//! input and checks what must hold for every input. A panic is a bug.

use crate::{
    config::{PluginConfig, PluginSettings},
    Reference,
};

/// A plugin `config.json`: parse, validate, and re-read plugind's own serialisation to the
/// same value.
pub fn config_json(data: &[u8]) {
    let Ok(config) = PluginConfig::from_json(data) else {
        return;
    };
    let _ = config.validate();
    let _ = PluginSettings::initial(&config).validate();
    let _ = config.interface.socket_name();
    let out = serde_json::to_vec(&config).expect("a parsed config serialises");
    let again = PluginConfig::from_json(&out).expect("plugind re-reads its own config");
    assert_eq!(again, config, "config round trip");
}

/// A reference as given to create/install: parse, and re-parse every rendering to the same
/// reference.
pub fn reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(reference) = Reference::parse_normalized(text) else {
        return;
    };
    let full = reference.full_string();
    let again = Reference::parse_normalized(&full).expect("full string re-parses");
    assert_eq!(again.full_string(), full);
    let familiar = reference.familiar_string();
    // Docker's ambiguity, kept: `docker.io/foo.com/bar` is familiar `foo.com/bar`, which reads
    // back as registry `foo.com`, or not at all for `docker.io/a_b.c/d` (found by this target;
    // distribution/reference does the same).
    let first = reference.path().split('/').next().unwrap_or("");
    let looks_like_domain = first.contains(['.', ':']) || first == "localhost";
    // And `docker.io/<64 hex>` is familiar `<64 hex>`, which reads as an id, not a name.
    let hex_name = crate::is_lower_hex(&reference.familiar_name(), 64);
    if !(reference.domain() == "docker.io" && (looks_like_domain || hex_name)) {
        let again = Reference::parse_normalized(&familiar).expect("familiar string re-parses");
        assert_eq!(again.full_string(), full, "familiar string round trip");
    }
    let tagged = reference.with_default_tag();
    let _ = (
        tagged.familiar_name(),
        tagged.full_name(),
        tagged.domain(),
        tagged.path(),
    );
}
