//! [`VolumeFilters`]: Docker's volume filters for list and prune, parsed from the Engine API's
//! `filters` query parameter and matched against volume records.
//!
//! Rules (moby `volume/service/convert.go`, `api/types/filters`):
//! - list accepts `dangling`, `driver`, `label`, `name`; prune accepts `label`, `label!`, `all`;
//!   any other key is `invalid filter '<key>'`;
//! - several values of one key: `driver` and `name` match if any value matches; `label` needs
//!   every value to match (`key` = the label exists, `key=value` = it has that value); `label!`
//!   excludes a volume when every one of its values matches;
//! - `driver` matches the recorded driver exactly; plugind also accepts the name without the
//!   implicit `:latest` tag, because it records drivers by their full name;
//! - `name` matches exactly, else as an unanchored regular expression (moby `Args.Match`; a
//!   value that is not a valid expression matches only exactly). Rust's `regex` runs in linear
//!   time and its compiled size is bounded, so a client's pattern cannot stall the service;
//! - `dangling`: `true`/`1` = volumes nobody has mounted, `false`/`0` = mounted ones. plugind has
//!   no containers: a volume is in use exactly while a caller holds a mount made through
//!   [`crate::VolumeService::mount`];
//! - `all` (prune only): `true` prunes named volumes too; otherwise only volumes labelled
//!   [`crate::ANONYMOUS_LABEL`] (created without a name) are pruned, as Docker does for API 1.42
//!   and later. The API passes `all=true` for older API versions.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    error::{Result, VolumeError},
    volume::{VolumeRecord, ANONYMOUS_LABEL},
};

/// Which endpoint the filters are for: each accepts different keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterUse {
    /// `GET /volumes`.
    List,
    /// `POST /volumes/prune`.
    Prune,
}

/// Parsed volume filters. The empty value matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeFilters {
    /// `driver=<name>` values.
    pub driver: Vec<String>,
    /// `name=<part>` values.
    pub name: Vec<String>,
    /// `label=<key>` or `label=<key>=<value>` values.
    pub label: Vec<String>,
    /// `label!=...` values (prune only).
    pub label_not: Vec<String>,
    /// `dangling=true|false` (list only).
    pub dangling: Option<bool>,
    /// `all=true|false` (prune only).
    pub all: Option<bool>,
}

fn invalid(text: String) -> VolumeError {
    VolumeError::InvalidFilter { text }
}

/// Go's `fmt.Sprintf("%s", []string{...})`: `[a b]`.
fn go_list(values: &[String]) -> String {
    format!("[{}]", values.join(" "))
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

impl VolumeFilters {
    /// Parses the `filters` query value: JSON in the map form the Go CLI sends
    /// (`{"label":{"a=b":true}}`) or the list form docker-py sends (`{"label":["a=b"]}`); an
    /// empty string means no filters. Keys are checked for `usage`.
    pub fn parse(json: &str, usage: FilterUse) -> Result<VolumeFilters> {
        let args = parse_args(json)?;
        Self::from_args(&args, usage)
    }

    /// Builds filters from already decoded key -> values pairs, with Docker's validation.
    pub fn from_args(args: &BTreeMap<String, Vec<String>>, usage: FilterUse) -> Result<Self> {
        let accepted: &[&str] = match usage {
            FilterUse::List => &["dangling", "name", "driver", "label"],
            FilterUse::Prune => &["label", "label!", "all"],
        };
        if let Some(key) = args.keys().find(|k| !accepted.contains(&k.as_str())) {
            return Err(invalid(format!("invalid filter '{key}'")));
        }
        let get = |k: &str| args.get(k).cloned().unwrap_or_default();
        let mut f = VolumeFilters {
            driver: get("driver"),
            name: get("name"),
            label: get("label"),
            label_not: get("label!"),
            ..VolumeFilters::default()
        };
        if let Some(values) = args.get("dangling") {
            if values.is_empty() {
                return Err(invalid("invalid filter 'dangling'".to_owned()));
            }
            let has = |v: &str| values.iter().any(|x| x == v);
            let is_true = has("1") || has("true");
            let is_false = has("0") || has("false");
            if is_true == is_false {
                return Err(invalid(format!(
                    "invalid filter 'dangling={}'",
                    go_list(values)
                )));
            }
            f.dangling = Some(is_true);
        }
        if let Some(values) = args.get("all") {
            match values.as_slice() {
                [] => {}
                [one] => {
                    let b = parse_go_bool(one).ok_or_else(|| {
                        invalid(format!(
                            "invalid filter 'all': strconv.ParseBool: parsing \"{one}\": invalid syntax"
                        ))
                    })?;
                    f.all = Some(b);
                }
                many => {
                    return Err(invalid(format!(
                        "invalid filter 'all={}': only one value is expected",
                        go_list(many)
                    )))
                }
            }
        }
        Ok(f)
    }

    /// Checks that only the keys of `usage` are set (for filters built by hand).
    pub(crate) fn check(&self, usage: FilterUse) -> Result<()> {
        let bad = match usage {
            FilterUse::List => (!self.label_not.is_empty())
                .then_some("label!")
                .or(self.all.map(|_| "all")),
            FilterUse::Prune => (!self.driver.is_empty())
                .then_some("driver")
                .or((!self.name.is_empty()).then_some("name"))
                .or(self.dangling.map(|_| "dangling")),
        };
        match bad {
            Some(key) => Err(invalid(format!("invalid filter '{key}'"))),
            None => Ok(()),
        }
    }

    /// True when `record` passes every filter.
    pub fn matches(&self, record: &VolumeRecord) -> bool {
        self.compile().matches(record)
    }

    /// The filters with their `name` expressions compiled once, for matching many records.
    pub fn compile(&self) -> CompiledFilters<'_> {
        let names = self
            .name
            .iter()
            .filter_map(|n| {
                regex::RegexBuilder::new(n)
                    .size_limit(NAME_REGEX_SIZE_LIMIT)
                    .build()
                    .ok()
            })
            .collect();
        CompiledFilters {
            filters: self,
            names,
        }
    }
}

/// Bound on a compiled `name` expression (bytes); larger ones count as invalid.
const NAME_REGEX_SIZE_LIMIT: usize = 1 << 20;

/// [`VolumeFilters`] ready to match records ([`VolumeFilters::compile`]).
#[derive(Debug)]
pub struct CompiledFilters<'a> {
    filters: &'a VolumeFilters,
    names: Vec<regex::Regex>,
}

impl CompiledFilters<'_> {
    /// True when `record` passes every filter.
    pub fn matches(&self, record: &VolumeRecord) -> bool {
        let this = self.filters;
        if !this.driver.is_empty()
            && !this
                .driver
                .iter()
                .any(|d| driver_matches(d, &record.driver))
        {
            return false;
        }
        if !this.name.is_empty()
            && !this.name.contains(&record.name)
            && !self.names.iter().any(|re| re.is_match(&record.name))
        {
            return false;
        }
        if !match_kv_list(&this.label, &record.labels) {
            return false;
        }
        if !this.label_not.is_empty() && match_kv_list(&this.label_not, &record.labels) {
            return false;
        }
        if let Some(dangling) = this.dangling {
            if dangling != record.mounts.is_empty() {
                return false;
            }
        }
        true
    }
}

impl VolumeFilters {
    /// True when prune may remove `record` (its `all` rule; the other filters apply too).
    pub(crate) fn prune_selects(&self, record: &VolumeRecord) -> bool {
        (self.all == Some(true) || record.labels.contains_key(ANONYMOUS_LABEL))
            && record.mounts.is_empty()
            && self.matches(record)
    }
}

fn driver_matches(filter: &str, recorded: &str) -> bool {
    filter == recorded || recorded.strip_suffix(":latest") == Some(filter)
}

/// moby `Args.MatchKVList`: every filter value must match; no filter matches everything; a
/// volume without labels matches no filter.
fn match_kv_list(filters: &[String], labels: &BTreeMap<String, String>) -> bool {
    if filters.is_empty() {
        return true;
    }
    if labels.is_empty() {
        return false;
    }
    filters.iter().all(|f| match f.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(f.as_str()),
    })
}

/// Decodes Docker's `filters` JSON into key -> sorted, de-duplicated values.
pub fn parse_args(json: &str) -> Result<BTreeMap<String, Vec<String>>> {
    let bad = || invalid("invalid filter".to_owned());
    if json.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let value: serde_json::Value = serde_json::from_str(json).map_err(|_| bad())?;
    let obj = match value {
        serde_json::Value::Object(o) => o,
        // Go decodes `null` into an empty map.
        serde_json::Value::Null => return Ok(BTreeMap::new()),
        _ => return Err(bad()),
    };
    let mut out = BTreeMap::new();
    for (key, v) in obj {
        let values: BTreeSet<String> = match v {
            serde_json::Value::Object(m) => {
                if !m.values().all(serde_json::Value::is_boolean) {
                    return Err(bad());
                }
                m.into_iter().map(|(k, _)| k).collect()
            }
            serde_json::Value::Array(a) => a
                .into_iter()
                .map(|x| match x {
                    serde_json::Value::String(s) => Ok(s),
                    _ => Err(bad()),
                })
                .collect::<Result<_>>()?,
            serde_json::Value::Null => BTreeSet::new(),
            _ => return Err(bad()),
        };
        out.insert(key, values.into_iter().collect());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{RecordState, RECORD_FORMAT_VERSION};

    fn rec(name: &str, driver: &str, labels: &[(&str, &str)], mounted: bool) -> VolumeRecord {
        VolumeRecord {
            format_version: RECORD_FORMAT_VERSION,
            name: name.into(),
            driver: driver.into(),
            driver_id: None,
            options: BTreeMap::new(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            created_at: String::new(),
            scope: "local".into(),
            state: RecordState::Ready,
            mounts: if mounted {
                BTreeSet::from(["c1".to_owned()])
            } else {
                BTreeSet::new()
            },
        }
    }

    #[test]
    fn both_encodings_parse_the_same() {
        let map = VolumeFilters::parse(
            r#"{"label":{"a=1":true,"b":true},"dangling":{"true":true}}"#,
            FilterUse::List,
        )
        .unwrap();
        let list = VolumeFilters::parse(
            r#"{"label":["b","a=1"],"dangling":["true"]}"#,
            FilterUse::List,
        )
        .unwrap();
        assert_eq!(map, list);
        assert_eq!(map.label, vec!["a=1", "b"]);
        assert_eq!(map.dangling, Some(true));
        assert_eq!(
            VolumeFilters::parse("", FilterUse::List).unwrap(),
            VolumeFilters::default()
        );
    }

    #[test]
    fn invalid_filters_use_dockers_texts() {
        let err = |json: &str, usage| VolumeFilters::parse(json, usage).unwrap_err().to_string();
        assert_eq!(
            err(r#"{"foo":["x"]}"#, FilterUse::List),
            "invalid filter 'foo'"
        );
        assert_eq!(
            err(r#"{"dangling":["x"]}"#, FilterUse::Prune),
            "invalid filter 'dangling'"
        );
        assert_eq!(
            err(r#"{"all":["1"]}"#, FilterUse::List),
            "invalid filter 'all'"
        );
        assert_eq!(
            err(r#"{"dangling":["maybe"]}"#, FilterUse::List),
            "invalid filter 'dangling=[maybe]'"
        );
        assert_eq!(
            err(r#"{"dangling":["true","false"]}"#, FilterUse::List),
            "invalid filter 'dangling=[false true]'"
        );
        assert_eq!(
            err(r#"{"all":["yes"]}"#, FilterUse::Prune),
            "invalid filter 'all': strconv.ParseBool: parsing \"yes\": invalid syntax"
        );
        assert_eq!(
            err(r#"{"all":["0","1"]}"#, FilterUse::Prune),
            "invalid filter 'all=[0 1]': only one value is expected"
        );
        assert_eq!(err("not json", FilterUse::List), "invalid filter");
        let e = VolumeFilters::parse("[1]", FilterUse::List).unwrap_err();
        assert_eq!(e.kind(), plugind_types::ErrorKind::InvalidArgument);
    }

    #[test]
    fn matching_follows_dockers_rules() {
        let a = rec(
            "alpha-1",
            "vol:latest",
            &[("env", "prod"), ("team", "x")],
            false,
        );
        let b = rec("beta", "other:latest", &[], true);
        let f = |json: &str| VolumeFilters::parse(json, FilterUse::List).unwrap();

        assert!(f(r#"{"driver":["vol"]}"#).matches(&a));
        assert!(f(r#"{"driver":["vol:latest","nope"]}"#).matches(&a));
        assert!(!f(r#"{"driver":["vol"]}"#).matches(&b));
        assert!(!f(r#"{"driver":["vo"]}"#).matches(&a));

        assert!(f(r#"{"name":["pha"]}"#).matches(&a));
        assert!(!f(r#"{"name":["pha"]}"#).matches(&b));
        assert!(f(r#"{"name":["zzz","beta"]}"#).matches(&b));
        // Values are unanchored regular expressions (moby `Args.Match`); invalid ones match
        // only exactly.
        assert!(f(r#"{"name":["^al.*-1$"]}"#).matches(&a));
        assert!(!f(r#"{"name":["^lpha"]}"#).matches(&a));
        assert!(!f(r#"{"name":["a.x"]}"#).matches(&a));
        assert!(!f(r#"{"name":["("]}"#).matches(&a));

        assert!(f(r#"{"label":["env"]}"#).matches(&a));
        assert!(f(r#"{"label":["env=prod","team"]}"#).matches(&a));
        assert!(!f(r#"{"label":["env=dev"]}"#).matches(&a));
        assert!(!f(r#"{"label":["env","missing"]}"#).matches(&a));
        assert!(!f(r#"{"label":["env"]}"#).matches(&b));

        assert!(f(r#"{"dangling":["1"]}"#).matches(&a));
        assert!(!f(r#"{"dangling":["true"]}"#).matches(&b));
        assert!(f(r#"{"dangling":["false"]}"#).matches(&b));
    }

    #[test]
    fn prune_selects_anonymous_unless_all() {
        let named = rec("named", "vol:latest", &[("k", "v")], false);
        let anon = rec("anon", "vol:latest", &[(ANONYMOUS_LABEL, "")], false);
        let mounted = rec("m", "vol:latest", &[(ANONYMOUS_LABEL, "")], true);
        let p = |json: &str| VolumeFilters::parse(json, FilterUse::Prune).unwrap();

        assert!(!p("").prune_selects(&named));
        assert!(p("").prune_selects(&anon));
        assert!(!p("").prune_selects(&mounted));
        assert!(p(r#"{"all":["true"]}"#).prune_selects(&named));
        assert!(!p(r#"{"all":["false"]}"#).prune_selects(&named));
        assert!(!p(r#"{"all":["1"],"label!":["k=v"]}"#).prune_selects(&named));
        assert!(p(r#"{"all":["1"],"label!":["k=w"]}"#).prune_selects(&named));
        assert!(!p(r#"{"all":["1"],"label":["other"]}"#).prune_selects(&named));
    }

    #[test]
    fn hand_built_filters_are_checked_per_use() {
        let f = VolumeFilters {
            dangling: Some(true),
            ..VolumeFilters::default()
        };
        assert!(f.check(FilterUse::List).is_ok());
        assert_eq!(
            f.check(FilterUse::Prune).unwrap_err().to_string(),
            "invalid filter 'dangling'"
        );
    }
}
