//! End-to-end: the Docker compatibility details users see (issue 10, defect 10): event names
//! as the client typed them, volume events, `volume prune` by API version, volume-create keys
//! in any case, a stable `/info` ID across restarts, and volumes of a driver removed with
//! `plugin rm -f` when a plugin of the same name comes back.

use std::time::{SystemTime, UNIX_EPOCH};

use plugind_tests::{sample_plugin_dir, Daemon};

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn plugin_dir() -> String {
    sample_plugin_dir().to_string_lossy().into_owned()
}

/// The plugin and volume events since `since`, as `Type Action Actor.ID name=.. driver=..`
/// lines (plugind's own `daemon` start events are checked by tests/events.rs).
fn events_since(d: &Daemon, since: u64) -> Vec<String> {
    // `until` one second ahead: the stream sends the backlog and ends within a second.
    let path = format!("/events?since={since}&until={}", now_secs() + 1);
    let (status, body) = d.request("GET", &path, None).expect("events answer");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["Type"] != "daemon")
        .map(|v| {
            let attrs = v["Actor"]["Attributes"].as_object().unwrap();
            let attrs: Vec<String> = attrs
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
                .collect();
            format!(
                "{} {} {} {}",
                v["Type"].as_str().unwrap(),
                v["Action"].as_str().unwrap(),
                v["Actor"]["ID"].as_str().unwrap(),
                attrs.join(",")
            )
        })
        .collect()
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn events_name_plugins_as_typed_and_report_volumes() {
    let d = Daemon::start(false);
    let since = now_secs() - 1;
    d.docker_ok(&["plugin", "create", "compat/ev", &plugin_dir()]);
    let id = d
        .docker_ok(&["plugin", "inspect", "-f", "{{.Id}}", "compat/ev"])
        .trim()
        .to_owned();
    d.docker_ok(&["plugin", "enable", &id[..12]]);
    d.docker_ok(&["volume", "create", "-d", "compat/ev", "ev1"]);
    d.docker_ok(&["volume", "rm", "ev1"]);
    d.docker_ok(&["plugin", "disable", "compat/ev:latest"]);
    d.docker_ok(&["plugin", "rm", "compat/ev"]);
    assert_eq!(
        events_since(&d, since),
        [
            format!("plugin create {id} name=compat/ev:latest"),
            format!("plugin enable {id} name={}", &id[..12]),
            "volume create ev1 driver=compat/ev:latest".to_owned(),
            "volume destroy ev1 driver=compat/ev:latest".to_owned(),
            format!("plugin disable {id} name=compat/ev:latest"),
            format!("plugin remove {id} name=compat/ev"),
        ]
    );
    // The docker CLI renders them, and filters volume events by name.
    let out = d.docker_ok(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &(now_secs() + 1).to_string(),
        "--filter",
        "volume=ev1",
        "--format",
        "{{.Type}} {{.Action}} {{.Actor.ID}}",
    ]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["volume create ev1", "volume destroy ev1"]
    );
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn prune_follows_the_api_version_and_create_keys_ignore_case() {
    let d = Daemon::start(false);
    d.docker_ok(&["plugin", "create", "compat/pr", &plugin_dir()]);
    d.docker_ok(&["plugin", "enable", "compat/pr"]);
    // Lower-case keys, as Go's encoding/json accepts them.
    let (status, body) = d
        .request(
            "POST",
            "/v1.51/volumes/create",
            Some(r#"{"name":"named","DRIVER":"compat/pr","labels":{"k":"v"},"driveropts":{"o":"1"}}"#),
        )
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["Name"], "named");
    assert_eq!(v["Driver"], "compat/pr:latest");
    assert_eq!(v["Labels"]["k"], "v");
    assert_eq!(v["Options"]["o"], "1");
    let (status, body) = d
        .request("POST", "/volumes/create", Some(r#"{"Driver":"compat/pr"}"#))
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let anonymous: serde_json::Value = serde_json::from_str(&body).unwrap();
    let anonymous = anonymous["Name"].as_str().unwrap().to_owned();

    // API >= 1.42: only anonymous volumes.
    let (status, body) = d.request("POST", "/v1.42/volumes/prune", None).unwrap();
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["VolumesDeleted"], serde_json::json!([anonymous]));
    assert_eq!(d.docker_ok(&["volume", "ls", "-q"]).trim(), "named");
    // The CLI (API 1.50) keeps named volumes too.
    d.docker_ok(&["volume", "prune", "-f"]);
    assert_eq!(d.docker_ok(&["volume", "ls", "-q"]).trim(), "named");
    // API < 1.42: every unused volume.
    let (status, body) = d.request("POST", "/v1.41/volumes/prune", None).unwrap();
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["VolumesDeleted"], serde_json::json!(["named"]));
    assert_eq!(d.docker_ok(&["volume", "ls", "-q"]).trim(), "");
    d.docker_ok(&["plugin", "disable", "compat/pr"]);
    d.docker_ok(&["plugin", "rm", "compat/pr"]);
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn info_id_is_a_uuid_that_survives_restarts() {
    let mut d = Daemon::start(false);
    let id = d
        .docker_ok(&["info", "--format", "{{.ID}}"])
        .trim()
        .to_owned();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(id.matches('-').count(), 4, "{id}");
    assert_eq!(
        std::fs::read_to_string(d.dir.join("root/engine-id")).unwrap(),
        id
    );
    d.kill9();
    d.restart();
    assert_eq!(d.docker_ok(&["info", "--format", "{{.ID}}"]).trim(), id);
    d.stop();
    d.restart();
    assert_eq!(d.docker_ok(&["info", "--format", "{{.ID}}"]).trim(), id);
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn volumes_of_a_force_removed_driver_never_answer_500() {
    let d = Daemon::start(false);
    d.docker_ok(&["plugin", "create", "compat/drv", &plugin_dir()]);
    d.docker_ok(&["plugin", "enable", "compat/drv"]);
    d.docker_ok(&["volume", "create", "-d", "compat/drv", "old1"]);
    d.docker_ok(&["volume", "create", "-d", "compat/drv", "old2"]);
    d.docker_ok(&["plugin", "rm", "-f", "compat/drv"]);
    // A new plugin of the same name: not the old volumes' driver.
    d.docker_ok(&["plugin", "create", "compat/drv", &plugin_dir()]);
    d.docker_ok(&["plugin", "enable", "compat/drv"]);
    let status = d.docker_ok(&["volume", "inspect", "-f", "{{json .Status}}", "old1"]);
    assert!(status.contains("was removed"), "{status}");
    let ls = d.docker_ok(&["volume", "ls", "-q"]);
    assert_eq!(ls.lines().collect::<Vec<_>>(), ["old1", "old2"]);
    // The old volumes hold no reference on the new plugin...
    d.docker_ok(&["plugin", "disable", "compat/drv"]);
    // ...and go at once, enabled or not, without asking it.
    d.docker_ok(&["volume", "rm", "old1"]);
    d.docker_ok(&["plugin", "enable", "compat/drv"]);
    d.docker_ok(&["volume", "rm", "old2"]);
    // The name is free for a volume of the new plugin, which then holds it.
    d.docker_ok(&["volume", "create", "-d", "compat/drv", "old1"]);
    let err = d.docker_err(&["plugin", "disable", "compat/drv"]);
    assert!(err.contains("is in use"), "{err}");
    d.docker_ok(&["volume", "rm", "old1"]);
    d.docker_ok(&["plugin", "disable", "compat/drv"]);
    d.docker_ok(&["plugin", "rm", "compat/drv"]);
}
