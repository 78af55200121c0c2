//! Docker's `filters` query parameter (moby `api/types/filters.Args`): parsing both encodings,
//! the plugin-list filters (`enabled`, `capability`) and the event filters.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    backend::{EventMessage, PluginJson},
    error::HttpError,
};

/// Parsed filters: key -> set of values (Go's `map[string]map[string]bool`, sorted here).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Filters {
    fields: BTreeMap<String, BTreeSet<String>>,
}

impl Filters {
    /// `filters.FromJSON`: the map form `{"k":{"v":true}}` or the legacy list form `{"k":["v"]}`;
    /// anything else is 400 `invalid filter`.
    pub(crate) fn from_json(raw: &str) -> Result<Self, HttpError> {
        if raw.is_empty() {
            return Ok(Filters::default());
        }
        let invalid = || HttpError::bad_request("invalid filter");
        let value: serde_json::Value = serde_json::from_str(raw).map_err(|_| invalid())?;
        let map = match value {
            serde_json::Value::Null => return Ok(Filters::default()),
            serde_json::Value::Object(map) => map,
            _ => return Err(invalid()),
        };
        // Go tries the map form for the whole document, then the list form for the whole
        // document; a mix of both is invalid.
        let as_map = map.iter().try_fold(BTreeMap::new(), |mut acc, (k, v)| {
            let values = match v {
                serde_json::Value::Null => BTreeSet::new(),
                serde_json::Value::Object(m)
                    if m.values().all(|b| b.is_boolean() || b.is_null()) =>
                {
                    m.keys().cloned().collect()
                }
                _ => return None,
            };
            acc.insert(k.clone(), values);
            Some(acc)
        });
        if let Some(fields) = as_map {
            return Ok(Filters { fields });
        }
        let as_list = map.iter().try_fold(BTreeMap::new(), |mut acc, (k, v)| {
            let values = match v {
                serde_json::Value::Null => BTreeSet::new(),
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_owned))
                    .collect::<Option<BTreeSet<_>>>()?,
                _ => return None,
            };
            acc.insert(k.clone(), values);
            Some(acc)
        });
        as_list.map(|fields| Filters { fields }).ok_or_else(invalid)
    }

    fn contains(&self, key: &str) -> bool {
        self.fields.contains_key(key)
    }

    /// `Args.Validate`: every key must be accepted, else 400 `invalid filter '<key>'`.
    pub(crate) fn validate(&self, accepted: &[&str]) -> Result<(), HttpError> {
        match self.fields.keys().find(|k| !accepted.contains(&k.as_str())) {
            Some(k) => Err(HttpError::bad_request(format!("invalid filter '{k}'"))),
            None => Ok(()),
        }
    }

    /// `Args.ExactMatch`: true when the key is absent or has no values, or `source` is one.
    fn exact_match(&self, key: &str, source: &str) -> bool {
        match self.fields.get(key) {
            None => true,
            Some(values) => values.is_empty() || values.contains(source),
        }
    }

    /// `Args.FuzzyMatch`: true when the key is absent, or a value equals or prefixes `source`.
    fn fuzzy_match(&self, key: &str, source: &str) -> bool {
        match self.fields.get(key) {
            None => true,
            Some(values) => values.iter().any(|v| source.starts_with(v.as_str())),
        }
    }

    /// `Args.Match`: exact match, else any value used as an unanchored regular expression.
    fn regex_match(&self, key: &str, source: &str) -> bool {
        if self.exact_match(key, source) {
            return true;
        }
        self.fields.get(key).into_iter().flatten().any(|pattern| {
            regex::Regex::new(pattern)
                .map(|re| re.is_match(source))
                .unwrap_or(false)
        })
    }

    /// `Args.GetBoolOrDefault` as moby 28 has it.
    fn get_bool(&self, key: &str) -> Result<Option<bool>, HttpError> {
        let Some(values) = self.fields.get(key) else {
            return Ok(None);
        };
        if values.is_empty() {
            return Err(HttpError::bad_request(format!("invalid filter '{key}'")));
        }
        let is_false = values.contains("0") || values.contains("false");
        let is_true = values.contains("1") || values.contains("true");
        if is_false == is_true {
            let list = values.iter().cloned().collect::<Vec<_>>().join(" ");
            return Err(HttpError::bad_request(format!(
                "invalid filter '{key}=[{list}]'"
            )));
        }
        Ok(Some(is_true))
    }
}

/// `GET /plugins` filtering (moby `Manager.List`).
pub(crate) fn filter_plugins(
    filters: &Filters,
    plugins: Vec<PluginJson>,
) -> Result<Vec<PluginJson>, HttpError> {
    filters.validate(&["enabled", "capability"])?;
    let enabled = filters.get_bool("enabled")?;
    Ok(plugins
        .into_iter()
        .filter(|p| enabled.is_none_or(|e| p.enabled == e))
        .filter(|p| {
            // Quirk kept from moby: every type must match; a plugin without types always passes.
            !filters.contains("capability")
                || p.config
                    .capabilities()
                    .all(|cap| filters.regex_match("capability", cap))
        })
        .collect())
}

/// moby's `daemon/events.Filter.Include`, for the keys that can concern plugind's events.
pub(crate) fn event_included(filters: &Filters, ev: &EventMessage) -> bool {
    let name = ev.actor.attributes.get("name").map_or("", String::as_str);
    let fuzzy_name =
        |key: &str| filters.fuzzy_match(key, &ev.actor.id) || filters.fuzzy_match(key, name);
    let event_ok = if ["health_status", "exec_create", "exec_start"]
        .iter()
        .any(|k| filters.fields.get("event").is_some_and(|v| v.contains(*k)))
    {
        filters.fuzzy_match("event", &ev.action)
    } else {
        filters.exact_match("event", &ev.action)
    };
    event_ok
        && filters.exact_match("type", &ev.r#type)
        && (!filters.contains("scope") || filters.exact_match("scope", &ev.scope))
        && [
            "container",
            "plugin",
            "volume",
            "network",
            "image",
            "node",
            "service",
            "secret",
            "config",
            "daemon",
        ]
        .iter()
        .all(|k| fuzzy_name(k))
        && label_match(filters, &ev.actor.attributes)
}

/// `Args.MatchKVList("label", attributes)`: each `k` or `k=v` must be present.
fn label_match(filters: &Filters, attributes: &BTreeMap<String, String>) -> bool {
    let Some(labels) = filters.fields.get("label") else {
        return true;
    };
    labels.iter().all(|l| match l.split_once('=') {
        Some((k, v)) => attributes.get(k).is_some_and(|a| a == v),
        None => attributes.contains_key(l.as_str()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_encodings_and_errors() {
        let a =
            Filters::from_json(r#"{"enabled":{"true":true},"capability":{"volumedriver":true}}"#)
                .unwrap();
        let b =
            Filters::from_json(r#"{"enabled":["true"],"capability":["volumedriver"]}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            Filters::from_json("nope").unwrap_err().message,
            "invalid filter"
        );
        assert_eq!(
            Filters::from_json(r#"{"a":["x"],"b":{"y":true}}"#)
                .unwrap_err()
                .message,
            "invalid filter"
        );
        let bad = Filters::from_json(r#"{"enabled":["maybe"]}"#).unwrap();
        assert_eq!(
            bad.get_bool("enabled").unwrap_err().message,
            "invalid filter 'enabled=[maybe]'"
        );
        let both = Filters::from_json(r#"{"enabled":["1","false"]}"#).unwrap();
        assert_eq!(
            both.get_bool("enabled").unwrap_err().message,
            "invalid filter 'enabled=[1 false]'"
        );
        let empty = Filters::from_json(r#"{"enabled":{}}"#).unwrap();
        assert_eq!(
            empty.get_bool("enabled").unwrap_err().message,
            "invalid filter 'enabled'"
        );
        let unknown = Filters::from_json(r#"{"foo":["x"]}"#).unwrap();
        assert_eq!(
            unknown.validate(&["enabled"]).unwrap_err().message,
            "invalid filter 'foo'"
        );
    }

    #[test]
    fn event_filters() {
        let ev = EventMessage::plugin("enable", &"ab".repeat(32), "test/vol", 5);
        let f = |s: &str| Filters::from_json(s).unwrap();
        assert!(event_included(&f(r#"{"type":["plugin"]}"#), &ev));
        assert!(!event_included(&f(r#"{"type":["volume"]}"#), &ev));
        assert!(event_included(&f(r#"{"plugin":["test/v"]}"#), &ev));
        assert!(event_included(&f(r#"{"plugin":["abab"]}"#), &ev));
        assert!(!event_included(&f(r#"{"plugin":["other"]}"#), &ev));
        assert!(event_included(&f(r#"{"event":["enable","disable"]}"#), &ev));
        assert!(!event_included(&f(r#"{"event":["remove"]}"#), &ev));
        assert!(!event_included(&f(r#"{"container":["x"]}"#), &ev));
        assert!(event_included(
            &f(r#"{"scope":["local"],"unknown":["x"]}"#),
            &ev
        ));
        assert!(event_included(&f(r#"{"label":["name=test/vol"]}"#), &ev));
    }
}
