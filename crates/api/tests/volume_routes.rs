//! The volume routes over HTTP against a fake [`VolumeBackend`]: status codes, JSON shapes and
//! error texts of create, inspect, list, remove and prune, the `filters` parameter (parsed by the
//! API, applied by the backend) and prune's rule by API version. The fake keeps Docker's rules
//! and builds its errors from `plugind_volumes::VolumeError`, so the texts are the service's.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use common::Server;
use plugind_api::{BackendError, VolumeBackend};
use plugind_volumes::{
    volume::{validate_name, RecordState, RECORD_FORMAT_VERSION},
    PruneReport, Volume, VolumeError, VolumeFilters, VolumeRecord, ANONYMOUS_LABEL, DEFAULT_DRIVER,
};
use serde_json::json;

/// An in-memory volume service with Docker's rules for what the routes show.
#[derive(Debug, Default)]
struct FakeVolumes {
    records: Mutex<BTreeMap<String, VolumeRecord>>,
    /// Returned with every list (drivers that did not answer).
    warnings: Mutex<Vec<String>>,
    /// Filters every list and prune received, in order.
    seen_filters: Mutex<Vec<VolumeFilters>>,
    anonymous: Mutex<u32>,
}

fn op_error(op: &'static str, name: &str, err: VolumeError) -> BackendError {
    let e = VolumeError::Op {
        op,
        name: name.to_owned(),
        err: Box::new(err),
    };
    BackendError::new(e.kind(), e.to_string())
}

fn to_volume(r: &VolumeRecord) -> Volume {
    Volume {
        created_at: r.created_at.clone(),
        driver: r.driver.clone(),
        labels: r.labels.clone(),
        mountpoint: format!("/mnt/{}", r.name),
        name: r.name.clone(),
        options: r.options.clone(),
        scope: r.scope.clone(),
        status: None,
    }
}

impl FakeVolumes {
    fn mount(&self, name: &str, caller: &str) {
        let mut records = self.records.lock().unwrap();
        records
            .get_mut(name)
            .unwrap()
            .mounts
            .insert(caller.to_owned());
    }

    fn names(&self) -> Vec<String> {
        self.records.lock().unwrap().keys().cloned().collect()
    }
}

#[async_trait]
impl VolumeBackend for FakeVolumes {
    async fn list(
        &self,
        filters: &VolumeFilters,
    ) -> Result<(Vec<Volume>, Vec<String>), BackendError> {
        self.seen_filters.lock().unwrap().push(filters.clone());
        let volumes = self
            .records
            .lock()
            .unwrap()
            .values()
            .filter(|r| filters.matches(r))
            .map(to_volume)
            .collect();
        Ok((volumes, self.warnings.lock().unwrap().clone()))
    }

    async fn create(
        &self,
        name: Option<&str>,
        driver: &str,
        driver_opts: BTreeMap<String, String>,
        labels: BTreeMap<String, String>,
    ) -> Result<Volume, BackendError> {
        let mut labels = labels;
        let name = match name.filter(|n| !n.is_empty()) {
            Some(n) => n.to_owned(),
            None => {
                let mut n = self.anonymous.lock().unwrap();
                *n += 1;
                labels.insert(ANONYMOUS_LABEL.to_owned(), String::new());
                format!("{:064x}", *n)
            }
        };
        validate_name(&name).map_err(|e| op_error("create", &name, e))?;
        let mut records = self.records.lock().unwrap();
        if let Some(existing) = records.get(&name) {
            if !driver.is_empty() && driver != existing.driver {
                return Err(op_error(
                    "create",
                    &name,
                    VolumeError::NameConflict {
                        driver: existing.driver.clone(),
                        name: name.clone(),
                    },
                ));
            }
            return Ok(to_volume(existing));
        }
        let record = VolumeRecord {
            format_version: RECORD_FORMAT_VERSION,
            name: name.clone(),
            driver: if driver.is_empty() {
                DEFAULT_DRIVER.to_owned()
            } else {
                driver.to_owned()
            },
            driver_id: None,
            options: driver_opts,
            labels,
            created_at: "2026-11-30T02:00:00Z".to_owned(),
            scope: "local".to_owned(),
            state: RecordState::Ready,
            mounts: BTreeSet::new(),
        };
        let volume = to_volume(&record);
        records.insert(name, record);
        Ok(volume)
    }

    async fn inspect(&self, name: &str) -> Result<Volume, BackendError> {
        let records = self.records.lock().unwrap();
        let record = records
            .get(name)
            .ok_or_else(|| op_error("get", name, VolumeError::NoSuchVolume))?;
        Ok(to_volume(record))
    }

    async fn remove(&self, name: &str, force: bool) -> Result<(), BackendError> {
        let mut records = self.records.lock().unwrap();
        let Some(record) = records.get(name) else {
            return Err(op_error("remove", name, VolumeError::NoSuchVolume));
        };
        if !record.mounts.is_empty() && !force {
            let ids = record.mounts.iter().cloned().collect();
            return Err(op_error("remove", name, VolumeError::InUse { ids }));
        }
        records.remove(name);
        Ok(())
    }

    async fn prune(&self, filters: &VolumeFilters) -> Result<PruneReport, BackendError> {
        self.seen_filters.lock().unwrap().push(filters.clone());
        let mut records = self.records.lock().unwrap();
        let doomed: Vec<String> = records
            .values()
            .filter(|r| {
                (filters.all == Some(true) || r.labels.contains_key(ANONYMOUS_LABEL))
                    && r.mounts.is_empty()
                    && filters.matches(r)
            })
            .map(|r| r.name.clone())
            .collect();
        for name in &doomed {
            records.remove(name);
        }
        Ok(PruneReport {
            volumes_deleted: doomed,
            space_reclaimed: 0,
        })
    }
}

async fn server() -> (Server, Arc<FakeVolumes>) {
    let volumes = Arc::new(FakeVolumes::default());
    let backend: Arc<dyn VolumeBackend> = volumes.clone();
    let s = Server::start_with(move |o| o.volumes = Some(backend)).await;
    (s, volumes)
}

async fn create(s: &Server, body: serde_json::Value) -> common::Reply {
    s.call(
        "POST",
        "/volumes/create",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
}

#[tokio::test]
async fn create_answers_201_with_docker_s_volume_object() {
    let (s, fake) = server().await;
    let r = create(
        &s,
        json!({"Name": "v1", "Driver": "vol", "DriverOpts": {"size": "1"}, "Labels": {"a": "b"}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        json!({
            "CreatedAt": "2026-11-30T02:00:00Z",
            "Driver": "vol",
            "Labels": {"a": "b"},
            "Mountpoint": "/mnt/v1",
            "Name": "v1",
            "Options": {"size": "1"},
            "Scope": "local",
        })
    );
    // Same name, same (or no) driver: the existing volume, still 201, as Docker answers.
    let again = create(&s, json!({"Name": "v1"})).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.json()["Driver"], "vol");
    assert_eq!(fake.names(), ["v1"]);
}

#[tokio::test]
async fn create_with_an_empty_body_makes_an_anonymous_volume_of_the_default_driver() {
    let (s, fake) = server().await;
    let r = s.call("POST", "/volumes/create", &[], b"").await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(v["Driver"], DEFAULT_DRIVER);
    assert_eq!(v["Name"].as_str().unwrap().len(), 64);
    assert_eq!(v["Labels"], json!({ ANONYMOUS_LABEL: "" }));
    assert_eq!(fake.names().len(), 1);
}

#[tokio::test]
async fn create_errors_carry_docker_s_status_and_text_and_change_nothing() {
    let (s, fake) = server().await;
    assert_eq!(
        create(&s, json!({"Name": "v1", "Driver": "vol"}))
            .await
            .status,
        201
    );

    create(&s, json!({"Name": "v1", "Driver": "other"}))
        .await
        .assert_error(
            409,
            "create v1: driver 'vol' already has volume 'v1': volume name must be unique",
        );
    create(&s, json!({"Name": "bad/name"})).await.assert_error(
        400,
        "create bad/name: \"bad/name\" includes invalid characters for a local volume name, \
         only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host \
         directory, use absolute path",
    );
    let torn = s
        .call(
            "POST",
            "/volumes/create",
            &[("Content-Type", "application/json")],
            b"{\"Name\":",
        )
        .await;
    assert_eq!(torn.status, 400, "{}", torn.text());
    assert!(
        torn.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON: "),
        "{}",
        torn.text()
    );
    let typed = s
        .call(
            "POST",
            "/volumes/create",
            &[("Content-Type", "application/json")],
            b"[]",
        )
        .await;
    typed.assert_error(
        400,
        "invalid JSON: json: cannot unmarshal array into Go value of type volume.CreateOptions",
    );
    assert_eq!(fake.names(), ["v1"]);
}

#[tokio::test]
async fn inspect_answers_the_volume_or_404_with_docker_s_text() {
    let (s, _fake) = server().await;
    create(&s, json!({"Name": "v1", "Driver": "vol"})).await;
    let r = s.get("/volumes/v1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["Name"], "v1");
    assert_eq!(r.json()["Mountpoint"], "/mnt/v1");
    let versioned = s.get("/v1.41/volumes/v1").await;
    assert_eq!(versioned.json(), r.json());
    s.get("/volumes/nope")
        .await
        .assert_error(404, "get nope: no such volume");
}

#[tokio::test]
async fn list_answers_volumes_and_warnings_in_moby_s_list_response() {
    let (s, fake) = server().await;
    let empty = s.get("/volumes").await;
    assert_eq!(empty.status, 200);
    // moby's ListResponse: an empty list, and `null` warnings when there are none.
    assert_eq!(empty.text(), "{\"Volumes\":[],\"Warnings\":null}\n");

    for body in [
        json!({"Name": "va", "Driver": "vol", "Labels": {"k": "v"}}),
        json!({"Name": "vb", "Driver": "other"}),
    ] {
        assert_eq!(create(&s, body).await.status, 201);
    }
    fake.warnings
        .lock()
        .unwrap()
        .push("driver gone: no answer".to_owned());
    let all = s.get("/volumes").await.json();
    let names: Vec<&str> = all["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["va", "vb"]);
    assert_eq!(all["Warnings"], json!(["driver gone: no answer"]));

    // Both spellings of `filters` reach the backend parsed.
    for filter in [r#"{"driver":{"vol":true}}"#, r#"{"driver":["vol"]}"#] {
        let q = percent_encode(filter);
        let r = s.get(&format!("/volumes?filters={q}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["Volumes"][0]["Name"], "va");
        assert_eq!(r.json()["Volumes"].as_array().unwrap().len(), 1);
    }
    let seen = fake.seen_filters.lock().unwrap().last().unwrap().clone();
    assert_eq!(seen.driver, ["vol"]);
}

#[tokio::test]
async fn a_bad_filter_is_400_with_the_filter_text_and_reaches_no_backend() {
    let (s, fake) = server().await;
    for (route, use_) in [
        ("GET /volumes", plugind_volumes::FilterUse::List),
        ("POST /volumes/prune", plugind_volumes::FilterUse::Prune),
    ] {
        let (method, path) = route.split_once(' ').unwrap();
        let filter = r#"{"bogus":{"x":true}}"#;
        let expected = VolumeFilters::parse(filter, use_).unwrap_err().to_string();
        let r = s
            .call(
                method,
                &format!("{path}?filters={}", percent_encode(filter)),
                &[],
                b"",
            )
            .await;
        r.assert_error(400, &expected);
        let torn = s
            .call(method, &format!("{path}?filters=%7B"), &[], b"")
            .await;
        assert_eq!(torn.status, 400, "{route}: {}", torn.text());
    }
    // `dangling` is a list filter, not a prune filter.
    let r = s
        .call(
            "POST",
            &format!(
                "/volumes/prune?filters={}",
                percent_encode(r#"{"dangling":["true"]}"#)
            ),
            &[],
            b"",
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(fake.seen_filters.lock().unwrap().is_empty());
}

#[tokio::test]
async fn remove_is_204_or_docker_s_in_use_and_missing_errors() {
    let (s, fake) = server().await;
    create(&s, json!({"Name": "v1", "Driver": "vol"})).await;
    create(&s, json!({"Name": "v2", "Driver": "vol"})).await;
    fake.mount("v1", "c1");

    s.call("DELETE", "/volumes/v1", &[], b"")
        .await
        .assert_error(409, "remove v1: volume is in use - [c1]");
    s.call("DELETE", "/volumes/nope", &[], b"")
        .await
        .assert_error(404, "remove nope: no such volume");
    assert_eq!(fake.names(), ["v1", "v2"]);

    let r = s.call("DELETE", "/volumes/v2", &[], b"").await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    let forced = s.call("DELETE", "/volumes/v1?force=1", &[], b"").await;
    assert_eq!(forced.status, 204, "{}", forced.text());
    assert!(fake.names().is_empty());
}

#[tokio::test]
async fn prune_reports_what_went_and_follows_the_api_version_rule() {
    let (s, fake) = server().await;
    create(&s, json!({"Name": "named", "Driver": "vol"})).await;
    create(&s, json!({"Name": "used", "Driver": "vol"})).await;
    fake.mount("used", "c1");
    let anon = create(&s, json!({})).await.json()["Name"]
        .as_str()
        .unwrap()
        .to_owned();

    // API 1.42 and later (and unprefixed): anonymous volumes only, unless all=true.
    let r = s.call("POST", "/volumes/prune", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        json!({"VolumesDeleted": [anon], "SpaceReclaimed": 0})
    );
    assert_eq!(fake.seen_filters.lock().unwrap().last().unwrap().all, None);

    // Before 1.42 every unused volume: the API adds all=true to the filters.
    let r = s.call("POST", "/v1.41/volumes/prune", &[], b"").await;
    assert_eq!(
        r.json(),
        json!({"VolumesDeleted": ["named"], "SpaceReclaimed": 0})
    );
    assert_eq!(
        fake.seen_filters.lock().unwrap().last().unwrap().all,
        Some(true)
    );
    assert_eq!(fake.names(), ["used"]);

    // Nothing to prune: an empty list, not null.
    let r = s.call("POST", "/v1.41/volumes/prune", &[], b"").await;
    assert_eq!(r.text(), "{\"VolumesDeleted\":[],\"SpaceReclaimed\":0}\n");
}

#[tokio::test]
async fn without_a_volume_backend_the_volume_routes_answer_501() {
    let s = Server::start().await;
    for (method, path) in [
        ("GET", "/volumes"),
        ("POST", "/volumes/create"),
        ("GET", "/volumes/v1"),
        ("DELETE", "/volumes/v1"),
        ("POST", "/volumes/prune"),
    ] {
        let r = s.call(method, path, &[], b"").await;
        assert_eq!(r.status, 501, "{method} {path}: {}", r.text());
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
