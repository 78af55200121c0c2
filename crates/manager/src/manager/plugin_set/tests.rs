//! Unit tests of the declarative plugin set: planning, retries and reporting against a fake backend.

use super::*;

fn entry(reference: &str, alias: Option<&str>) -> Result<PluginSetEntry> {
    PluginSetEntry::parse(
        "plugin 1",
        reference,
        alias,
        vec!["DEBUG=1".into()],
        BTreeMap::from([("mount".to_owned(), vec!["/data".to_owned()])]),
        true,
    )
}

#[test]
fn entries_are_checked_like_install() {
    let e = entry("localhost:5000/acme/vol:1.0", Some("vol")).unwrap();
    assert_eq!(e.alias(), "vol:latest");
    assert_eq!(e.names.plugin_reference(), "localhost:5000/acme/vol:1.0");
    let e = entry("acme/vol:2", None).unwrap();
    assert_eq!(e.alias(), "acme/vol:2");
    assert_eq!(e.names.plugin_reference(), "docker.io/acme/vol:2");

    let err = entry("Acme/Vol", None).unwrap_err().to_string();
    assert!(
        err.contains("plugin 1") && err.contains("lowercase"),
        "{err}"
    );
    let err = entry("acme/vol", Some("x@sha256:abc"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("plugin 1"), "{err}");
    let err = PluginSetEntry::parse(
        "plugin 3",
        "acme/vol",
        None,
        vec!["=1".into()],
        BTreeMap::new(),
        true,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("KEY=VALUE"), "{err}");
    let err = PluginSetEntry::parse(
        "plugin 3",
        "acme/vol",
        None,
        vec![],
        BTreeMap::from([("root".to_owned(), vec![])]),
        true,
    )
    .unwrap_err();
    assert_eq!(err.kind(), plugind_types::ErrorKind::InvalidArgument);
    assert!(
        err.to_string().contains("unknown privilege \"root\""),
        "{err}"
    );
}

#[test]
fn two_entries_with_one_alias_are_refused() {
    let a = entry("acme/vol:1", Some("vol")).unwrap();
    let b = entry("acme/other:1", Some("vol:latest")).unwrap();
    let err = PluginSet::new(vec![a.clone(), b], false).unwrap_err();
    assert!(
        err.to_string().contains("already used by plugin 1"),
        "{err}"
    );
    let c = entry("acme/other:1", Some("other")).unwrap();
    let set = PluginSet::new(vec![a, c], true).unwrap();
    assert_eq!(set.entries().len(), 2);
    assert!(set.prune() && !set.is_empty());
    assert!(PluginSet::new(vec![], false).unwrap().is_empty());
}

fn privilege(name: &str, values: &[&str]) -> PluginPrivilege {
    PluginPrivilege {
        name: name.into(),
        description: String::new(),
        value: values.iter().map(|v| (*v).to_owned()).collect(),
    }
}

#[test]
fn privileges_are_accepted_only_when_every_value_is_listed() {
    let accepted = BTreeMap::from([
        (
            "mount".to_owned(),
            vec!["/data".to_owned(), "/srv".to_owned()],
        ),
        ("capabilities".to_owned(), vec!["CAP_SYS_ADMIN".to_owned()]),
    ]);
    assert_eq!(privileges_accepted(&[], &accepted), Ok(()));
    let wanted = [
        privilege("mount", &["/data"]),
        privilege("mount", &["/srv"]),
        privilege("capabilities", &["CAP_SYS_ADMIN"]),
    ];
    assert_eq!(privileges_accepted(&wanted, &accepted), Ok(()));
    // More than accepted: a value not listed, a privilege not named.
    let err = privileges_accepted(
        &[
            privilege("mount", &["/etc"]),
            privilege("capabilities", &["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]),
            privilege("host pid namespace", &["true"]),
        ],
        &accepted,
    )
    .unwrap_err();
    assert!(err.contains("mount [\"/etc\"]"), "{err}");
    assert!(err.contains("capabilities [\"CAP_NET_ADMIN\"]"), "{err}");
    assert!(err.contains("host pid namespace"), "{err}");
}

#[test]
fn settings_drift_is_what_set_would_change() {
    let config = PluginConfig::from_json(
        br#"{"Description":"d","Entrypoint":["/p"],"Interface":{"Socket":"p.sock","Types":["docker.volumedriver/1.0"]},
            "Env":[{"Name":"DEBUG","Settable":["value"],"Value":"0"}]}"#,
    )
    .unwrap();
    let record = PluginRecord::new(
        PluginId::from_bytes([1; 32]),
        "vol:latest".into(),
        config,
        String::new(),
        SystemTime::now(),
    );
    assert!(!settings_drift(&record, &[]).unwrap());
    assert!(!settings_drift(&record, &["DEBUG=0".into()]).unwrap());
    assert!(settings_drift(&record, &["DEBUG=1".into()]).unwrap());
    // A key the plugin does not declare: the entry cannot be applied.
    assert!(settings_drift(&record, &["NOPE=1".into()]).is_err());
}

/// An executor that knows no task: enough for a manager whose plugins never run.
struct NoTasks;

fn none<T>(id: &str) -> plugind_executor::Result<T> {
    Err(plugind_executor::ExecutorError::NotFound { id: id.to_owned() })
}

#[async_trait::async_trait]
impl Executor for NoTasks {
    async fn create(
        &self,
        req: CreateTask,
    ) -> plugind_executor::Result<plugind_executor::TaskState> {
        none(&req.id)
    }
    async fn kill(&self, id: &str, _: Duration) -> plugind_executor::Result<ExitInfo> {
        none(id)
    }
    async fn delete(&self, id: &str) -> plugind_executor::Result<ExitInfo> {
        none(id)
    }
    async fn destroy(&self, _: &str, _: &Path) -> plugind_executor::Result<()> {
        Ok(())
    }
    fn leftovers(&self) -> Vec<String> {
        Vec::new()
    }
    async fn state(&self, id: &str) -> plugind_executor::Result<plugind_executor::TaskState> {
        none(id)
    }
    async fn restore(&self, _: Vec<(String, PathBuf)>) -> Vec<plugind_executor::RestoreOutcome> {
        Vec::new()
    }
    fn log_tail(&self, id: &str, _: usize) -> plugind_executor::Result<Vec<String>> {
        none(id)
    }
    fn log_path(&self, id: &str) -> PathBuf {
        PathBuf::from(id)
    }
}

async fn manager(dir: &Path) -> Manager {
    let mut config = ManagerConfig::new(&dir.join("root"), &dir.join("run"));
    config.registry.retries = 0;
    // Bounds how long a run waits for the hung registry of the queueing test.
    config.registry.request_timeout = Duration::from_secs(1);
    let (_tx, rx) = tokio::sync::mpsc::channel(4);
    Manager::start(config, Arc::new(NoTasks), rx)
        .await
        .unwrap()
        .0
}

/// A plugin tar `create` accepts: config.json and a one-file rootfs.
fn plugin_tar() -> Vec<u8> {
    let config = br#"{"Description":"t","Entrypoint":["/p"],"Interface":{"Socket":"p.sock","Types":["docker.volumedriver/1.0"]}}"#;
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data) in [("config.json", &config[..]), ("rootfs/p", b"#!/bin/sh\n")] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, path, data).unwrap();
    }
    tar.into_inner().unwrap()
}

/// A reference to a registry that refuses connections at once.
fn unreachable(repo: &str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("127.0.0.1:{port}/{repo}:1")
}

fn simple(reference: &str, alias: &str) -> PluginSetEntry {
    PluginSetEntry::parse("t", reference, Some(alias), vec![], BTreeMap::new(), true).unwrap()
}

async fn wait(manager: &Manager, done: impl Fn(&PluginSetStatus) -> bool) -> PluginSetStatus {
    manager
        .watch_plugin_set()
        .wait_for(|s| !s.running && done(s))
        .await
        .unwrap()
        .clone()
}

#[tokio::test]
async fn failing_entries_are_reported_and_a_new_set_runs_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let manager = manager(dir.path()).await;
    assert_eq!(manager.background_tasks(), 1, "the event loop only");
    // An empty set starts nothing.
    manager.apply_plugin_set(PluginSet::default());
    assert_eq!(manager.background_tasks(), 1);
    assert!(!manager.plugin_set_status().configured);
    let set = PluginSet::new(
        vec![
            simple(&unreachable("acme/a"), "a"),
            simple(&unreachable("acme/b"), "b"),
        ],
        false,
    )
    .unwrap();
    manager.apply_plugin_set(set);
    let status = wait(&manager, |s| s.runs >= 1).await;
    assert!(status.configured && !status.prune);
    assert_eq!(status.entries.len(), 2);
    for (entry, alias) in status.entries.iter().zip(["a:latest", "b:latest"]) {
        // The first entry's failure did not keep the second from being tried.
        assert_eq!(entry.alias, alias);
        assert!(
            matches!(&entry.state, EntryState::Failed(e) if e.contains("127.0.0.1")),
            "{entry:?}"
        );
        assert_eq!(entry.failures, 1);
        assert!(entry.next_retry.is_some());
        assert_eq!(entry.last_error.as_deref(), Some(entry.state.reason()));
    }
    let reconcile: Vec<PluginEvent> = manager
        .events()
        .subscribe(None)
        .0
        .into_iter()
        .filter(|e| e.action == "reconcile")
        .collect();
    assert_eq!(reconcile.len(), 2, "{reconcile:?}");
    assert_eq!(reconcile[0].attributes["status"], "failed");
    assert_eq!(reconcile[0].attributes["name"], "a:latest");

    // A new set (a reload) does not wait for the entries' backoff: it runs at once, and
    // shows only its own entries.
    manager.apply_plugin_set(
        PluginSet::new(vec![simple(&unreachable("acme/c"), "c")], false).unwrap(),
    );
    let status = wait(&manager, |s| {
        s.entries.len() == 1 && s.entries[0].state != EntryState::Pending
    })
    .await;
    assert_eq!(status.entries[0].alias, "c:latest");
    assert_eq!(status.entries[0].failures, 1);

    // The runner stops with the manager.
    manager.shutdown().await;
    assert_eq!(manager.background_tasks(), 0);
}

/// Sets given during a run (SIGHUPs) queue one more run, with the latest set; runs never
/// overlap.
#[tokio::test]
async fn sets_given_during_a_run_queue_exactly_one_more_run() {
    let dir = tempfile::tempdir().unwrap();
    let manager = manager(dir.path()).await;
    // A registry that accepts and never answers: the first run waits on it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung = format!("{}/acme/hung:1", listener.local_addr().unwrap());
    manager.apply_plugin_set(PluginSet::new(vec![simple(&hung, "hung")], false).unwrap());
    manager
        .watch_plugin_set()
        .wait_for(|s| s.running)
        .await
        .unwrap();
    manager.apply_plugin_set(
        PluginSet::new(vec![simple(&unreachable("acme/two"), "two")], false).unwrap(),
    );
    manager.apply_plugin_set(
        PluginSet::new(vec![simple(&unreachable("acme/three"), "three")], false).unwrap(),
    );
    let status = wait(&manager, |s| {
        s.entries.len() == 1
            && s.entries[0].alias == "three:latest"
            && s.entries[0].state != EntryState::Pending
    })
    .await;
    // The hung run, then one run with the latest set: the middle set never ran.
    assert_eq!(status.runs, 2, "{status:?}");
    let names: Vec<String> = manager
        .events()
        .subscribe(None)
        .0
        .into_iter()
        .filter(|e| e.action == "reconcile")
        .map(|e| e.attributes["name"].clone())
        .collect();
    assert_eq!(names, ["hung:latest", "three:latest"]);
    drop(listener);
    manager.shutdown().await;
}

#[tokio::test]
async fn prune_removes_unlisted_plugins_but_not_those_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let manager = manager(dir.path()).await;
    let tar = plugin_tar();
    manager
        .create("spare", Box::new(std::io::Cursor::new(tar.clone())))
        .await
        .unwrap();
    let used = manager
        .create("used", Box::new(std::io::Cursor::new(tar.clone())))
        .await
        .unwrap();
    manager
        .create("kept", Box::new(std::io::Cursor::new(tar)))
        .await
        .unwrap();
    manager
        .inner
        .store
        .update(&used, |r| r.acquire("volume:v"))
        .unwrap();
    // Without prune, unlisted plugins are left alone.
    manager.apply_plugin_set(
        PluginSet::new(vec![simple(&unreachable("acme/x"), "kept")], false).unwrap(),
    );
    wait(&manager, |s| s.runs >= 1).await;
    assert_eq!(manager.list().len(), 3);

    manager.apply_plugin_set(
        PluginSet::new(vec![simple(&unreachable("acme/x"), "kept")], true).unwrap(),
    );
    let status = wait(&manager, |s| s.prune && !s.pruned.is_empty()).await;
    assert_eq!(status.pruned, ["spare:latest"]);
    assert_eq!(status.prune_kept, ["used:latest"]);
    let mut names: Vec<String> = manager
        .list()
        .into_iter()
        .map(|v| v.record.name().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["kept:latest", "used:latest"]);
    manager.shutdown().await;
}

#[test]
fn credentials_come_from_a_docker_config_or_one_auth_object() {
    let docker_config = br#"{"auths": {
        "https://index.docker.io/v1/": {"auth": "aHViOmh1YnB3"},
        "registry.example.com:5000": {"auth": "YWxpY2U6czNjcmV0"},
        "https://other.example.com/v2/": {"identitytoken": "tok"}
    }}"#;
    let hub = credentials_from_file(docker_config, "docker.io").unwrap();
    assert_eq!(hub, AuthConfig::basic("hub", "hubpw"));
    let alice = credentials_from_file(docker_config, "registry.example.com:5000").unwrap();
    assert_eq!(alice, AuthConfig::basic("alice", "s3cret"));
    let other = credentials_from_file(docker_config, "other.example.com").unwrap();
    assert_eq!(other.identity_token.as_deref(), Some("tok"));
    // No entry for the registry: anonymous, as the docker CLI.
    assert_eq!(
        credentials_from_file(docker_config, "registry.example.com").unwrap(),
        AuthConfig::default()
    );
    let single = br#"{"username": "bob", "password": "pw"}"#;
    assert_eq!(
        credentials_from_file(single, "anything").unwrap(),
        AuthConfig::basic("bob", "pw")
    );
    assert!(credentials_from_file(b"user:pw", "x").is_err());
    assert!(credentials_from_file(br#"{"auths": []}"#, "x").is_err());
    let entry = simple("acme/a:1", "a");
    let err = entry
        .clone()
        .with_auth_file("t", Path::new("auth.json"))
        .unwrap_err();
    assert!(err.to_string().contains("not an absolute path"), "{err}");
    let entry = entry
        .with_auth_file("t", Path::new("/etc/plugind/auth.json"))
        .unwrap();
    assert_eq!(
        entry.auth_file.as_deref(),
        Some(Path::new("/etc/plugind/auth.json"))
    );
}

#[test]
fn retry_backoff_doubles_up_to_the_cap() {
    assert_eq!(retry_delay(1), RETRY_INITIAL);
    assert_eq!(retry_delay(2), RETRY_INITIAL * 2);
    assert_eq!(retry_delay(3), RETRY_INITIAL * 4);
    assert_eq!(retry_delay(40), RETRY_MAX);
}
