//! Entry points for the fuzz targets in `fuzz/` and the seed-corpus test on stable
//! (`tests/tests/fuzz_corpora.rs`): the API's parsers of client input, fed arbitrary bytes.
//! A panic (or a stack overflow) is a bug; errors are expected.

use hyper::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};

use crate::{
    backend::{EventMessage, PluginJson},
    body,
    filters::Filters,
    gojson, query,
    volume_json::VolumeCreateRequest,
};

/// A request's query string: `url.ParseQuery`, then every value through the parsers the
/// handlers apply to parameters (bools, integers, event times, filters).
pub fn query_string(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let _ = query::unescape(&raw, false);
    let Ok(q) = query::Query::parse(Some(&raw)) else {
        return;
    };
    for key in [
        "force", "all", "tail", "since", "until", "timeout", "filters", "follow",
    ] {
        let value = q.get(key);
        let _ = q.bool_value(key);
        let _ = query::atoi(value);
        if let Ok(Some(nanos)) = query::event_time(value) {
            let _ = query::rfc3339_nano(nanos);
        }
    }
    filters_json(q.get("filters").as_bytes());
}

fn sample_plugins() -> Vec<PluginJson> {
    let plugin = |enabled: bool, types: &str| {
        serde_json::from_str::<PluginJson>(&format!(
            r#"{{"Config":{{"Interface":{{"Types":{types}}}}},"Enabled":{enabled},"Name":"p:latest","Settings":{{}}}}"#
        ))
        .ok()
    };
    [
        plugin(true, r#"["docker.volumedriver/1.0"]"#),
        plugin(false, r#"["docker.authz/1.0","docker.logdriver/1.0"]"#),
        plugin(true, "null"),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The `filters` parameter: both encodings, then the plugin-list and event filters (regular
/// expressions from the client included) and the volume filters.
pub fn filters_json(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    if let Ok(filters) = Filters::from_json(&raw) {
        let _ = crate::filters::filter_plugins(&filters, sample_plugins());
        let mut ev = EventMessage::plugin("enable", "0123abcd", "p:latest", 1);
        ev.actor
            .attributes
            .insert("driver".to_owned(), "local".to_owned());
        let _ = crate::filters::event_included(&filters, &ev);
    }
    for usage in [
        plugind_volumes::FilterUse::List,
        plugind_volumes::FilterUse::Prune,
    ] {
        let _ = plugind_volumes::VolumeFilters::parse(&raw, usage);
    }
}

/// JSON request bodies: `POST /plugins/{name}/set` (Go's `[]string` with Go's errors),
/// `POST /volumes/create`, and the `Content-Type`/length headers that decide how a body is
/// read. The first line of `data` is used as the `Content-Type` header, the rest as the body.
pub fn json_body(data: &[u8]) {
    let (header, body_bytes) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(header) {
        headers.insert(CONTENT_TYPE, v.clone());
        headers.insert(CONTENT_LENGTH, v.clone());
        headers.insert(TRANSFER_ENCODING, v);
    }
    let empty = body::declared_empty(&headers);
    let _ = body::content_length(&headers);
    let _ = body::check_json_content_type(&headers, empty);
    let _ = gojson::decode_string_list(body_bytes);
    let _ = VolumeCreateRequest::parse(body_bytes);
}
