//! End-to-end: the declarative plugin set (`[[plugin]]` tables) of the built `plugind` against
//! the real `docker-registry`, shim and runc. A file naming plugins of the local registry is
//! reconciled at start (installed, set, enabled); after an edit and SIGHUP one plugin is
//! upgraded (same id, settings kept) and one disabled, then pruned; entries that fail (no such
//! repository, privileges not accepted) do not block the others and show in `info` and events.
//!
//! `#[ignore]`d for plain `cargo test` (root, registry, CLI); CI runs them.

use std::{
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use plugind_distribution::{AuthConfig, PluginManifest, Registry, RegistryOptions};
use plugind_manager::layer::{import_create_tar, LayerLimits};
use plugind_tests::{registry::TestRegistry, sample_plugin_dir, Daemon};
use plugind_types::{config::PluginConfig, Reference};
use serde_json::Value;

/// Pushes the sample plugin as `<registry>/<repo_tag>` with `description` (so two tags differ).
fn seed(registry: &TestRegistry, repo_tag: &str, description: &str) {
    seed_as(
        registry,
        repo_tag,
        description,
        &AuthConfig::from_header(""),
    );
}

fn seed_as(registry: &TestRegistry, repo_tag: &str, description: &str, auth: &AuthConfig) {
    let dir = tempfile::tempdir().unwrap();
    let store = plugind_blobstore::BlobStore::open(&dir.path().join("blobs")).unwrap();
    let tar_path = sample_plugin_dir().with_extension("tar");
    let tar = std::fs::File::open(&tar_path)
        .unwrap_or_else(|e| panic!("{}: {e} (run cargo xtask plugin)", tar_path.display()));
    let imported = import_create_tar(&store, "seed", tar, &LayerLimits::DEFAULT).unwrap();
    let mut config = PluginConfig::from_json(&imported.config).unwrap();
    config.description = description.to_owned();
    let mut config_bytes = serde_json::to_vec(&config).unwrap();
    config_bytes.push(b'\n');
    let c = store.ingest("config", &config_bytes[..], None).unwrap();
    let l = store.info(&imported.layer).unwrap();
    let manifest = PluginManifest::for_plugin((c.digest, c.size), (l.digest, l.size));
    let client = Registry::new(RegistryOptions {
        request_timeout: Duration::from_secs(20),
        ..RegistryOptions::default()
    })
    .unwrap();
    let target = Reference::parse_normalized(&format!("{}/{repo_tag}", registry.addr())).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(client.push(&target, auth, &manifest, &store, &|_| {}))
        .unwrap();
}

fn info(d: &Daemon) -> Value {
    let (status, body) = d.request("GET", "/info", None).expect("info answers");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn plugin_set(d: &Daemon) -> Value {
    info(d)["PluginD"]["PluginSet"].clone()
}

fn find_entry<'a>(set: &'a Value, alias: &str) -> Option<&'a Value> {
    set["Entries"]
        .as_array()?
        .iter()
        .find(|e| e["Alias"] == alias)
}

fn entry<'a>(set: &'a Value, alias: &str) -> &'a Value {
    find_entry(set, alias).unwrap_or_else(|| panic!("no entry {alias} in {set:#}"))
}

/// Polls `info` until `done` holds for the plugin set (a run finishing, not a time budget: the
/// deadline only turns a hang into a failure with the daemon's log).
fn wait_for_set(d: &Daemon, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let set = plugin_set(d);
        if done(&set) {
            return set;
        }
        assert!(
            Instant::now() < deadline,
            "plugin set never reached: {what}\n{set:#}\nplugind log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn inspect(d: &Daemon, name: &str, format: &str) -> String {
    d.docker_ok(&["plugin", "inspect", "-f", format, name])
        .trim()
        .to_owned()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The `/events` history as (action, Actor.Attributes.name, status attribute).
fn events(d: &Daemon) -> Vec<(String, String, String)> {
    let (status, body) = d
        .request(
            "GET",
            &format!("/events?since=0&until={}", now_secs() + 1),
            None,
        )
        .expect("events answer");
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["Type"] == "plugin")
        .map(|e| {
            let attr = |k: &str| {
                e["Actor"]["Attributes"][k]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            };
            (
                e["Action"].as_str().unwrap().to_owned(),
                attr("name"),
                attr("status"),
            )
        })
        .collect()
}

fn write_config(path: &Path, text: &str) {
    // Replaced whole, as configuration management ships a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn sighup(d: &Daemon) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &d.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
#[ignore = "needs root, docker-registry, runc, the shim, the docker CLI and the sample plugin"]
fn plugin_set_installs_upgrades_disables_and_prunes() {
    let registry = TestRegistry::start();
    let addr = registry.addr().to_owned();
    seed(&registry, "acme/sample:1.0", "sample one");
    seed(&registry, "acme/sample:2.0", "sample two");
    seed(&registry, "acme/other:1.0", "other one");
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("plugind.toml");
    let caps = r#"privileges = { capabilities = ["CAP_SYS_ADMIN"] }"#;
    write_config(
        &conf,
        &format!(
            r#"
[[plugin]]
reference = "{addr}/acme/sample:1.0"
alias = "vol"
settings = ["DEBUG=1"]
{caps}

[[plugin]]
reference = "{addr}/acme/nosuch:1.0"
alias = "missing"
{caps}

[[plugin]]
reference = "{addr}/acme/sample:1.0"
alias = "greedy"

[[plugin]]
reference = "{addr}/acme/other:1.0"
alias = "other"
{caps}
"#
        ),
    );
    let conf_arg = conf.display().to_string();
    let mut d = Daemon::start_with(false, &["--config-file", &conf_arg]);

    // At start: the two good entries installed, set and enabled; the failing ones (listed
    // before `other`) did not stop it.
    let set = wait_for_set(&d, "first run", |s| {
        s["Runs"].as_u64().unwrap_or(0) >= 1 && s["Reconciling"] == false
    });
    assert_eq!(entry(&set, "vol:latest")["Status"], "in-sync", "{set:#}");
    assert_eq!(entry(&set, "other:latest")["Status"], "in-sync", "{set:#}");
    let missing = entry(&set, "missing:latest");
    assert_eq!(missing["Status"], "failed", "{set:#}");
    assert!(missing["Failures"].as_u64().unwrap() >= 1);
    assert_ne!(missing["NextRetry"], "");
    let greedy = entry(&set, "greedy:latest");
    assert_eq!(greedy["Status"], "failed");
    assert!(
        greedy["Reason"]
            .as_str()
            .unwrap()
            .contains("not accepted by its entry: capabilities [\"CAP_SYS_ADMIN\"]"),
        "{set:#}"
    );
    assert_eq!(inspect(&d, "vol", "{{.Enabled}}"), "true");
    assert_eq!(inspect(&d, "other", "{{.Enabled}}"), "true");
    assert!(inspect(&d, "vol", "{{.Settings.Env}}").contains("DEBUG=1"));
    assert_eq!(
        inspect(&d, "vol", "{{.PluginReference}}"),
        format!("{addr}/acme/sample:1.0")
    );
    let err = d.docker_err(&["plugin", "inspect", "greedy"]);
    assert!(err.contains("not found"), "{err}");
    let vol_id = inspect(&d, "vol", "{{.Id}}");

    // The edit: vol moves to 2.0, other is to be disabled, greedy's entry is gone.
    write_config(
        &conf,
        &format!(
            r#"
[[plugin]]
reference = "{addr}/acme/sample:2.0"
alias = "vol"
settings = ["DEBUG=1"]
{caps}

[[plugin]]
reference = "{addr}/acme/nosuch:1.0"
alias = "missing"
{caps}

[[plugin]]
reference = "{addr}/acme/other:1.0"
alias = "other"
enabled = false
{caps}
"#
        ),
    );
    sighup(&d);
    let set = wait_for_set(&d, "vol upgraded and other disabled", |s| {
        let upgraded = find_entry(s, "vol:latest").is_some_and(|e| {
            e["Reference"] == format!("{addr}/acme/sample:2.0") && e["Status"] == "in-sync"
        });
        // The run that upgraded vol went on to `other` before it finished.
        s["Entries"].as_array().is_some_and(|e| e.len() == 3)
            && upgraded
            && s["Reconciling"] == false
    });
    assert_eq!(entry(&set, "other:latest")["Status"], "in-sync", "{set:#}");
    assert_eq!(entry(&set, "missing:latest")["Status"], "failed");
    assert_eq!(
        inspect(&d, "vol", "{{.Id}}"),
        vol_id,
        "an upgrade keeps the id"
    );
    assert_eq!(inspect(&d, "vol", "{{.Enabled}}"), "true");
    assert_eq!(inspect(&d, "vol", "{{.Config.Description}}"), "sample two");
    assert!(inspect(&d, "vol", "{{.Settings.Env}}").contains("DEBUG=1"));
    assert_eq!(inspect(&d, "other", "{{.Enabled}}"), "false");
    // The upgraded plugin serves.
    d.docker_ok(&["volume", "create", "-d", "vol", "v1"]);
    d.docker_ok(&["volume", "rm", "v1"]);

    // Events: the actions (named with the alias) and the status changes.
    let events = events(&d);
    let has = |action: &str, name: &str, status: &str| {
        events
            .iter()
            .any(|(a, n, s)| a == action && n == name && s == status)
    };
    assert!(has("pull", "vol:latest", ""), "{events:?}");
    assert!(has("enable", "vol:latest", ""), "{events:?}");
    assert!(has("disable", "other:latest", ""), "{events:?}");
    assert!(has("reconcile", "vol:latest", "in-sync"), "{events:?}");
    assert!(has("reconcile", "missing:latest", "failed"), "{events:?}");
    assert!(has("reconcile", "greedy:latest", "failed"), "{events:?}");

    // Prune: `other` is no longer listed and goes; `vol` stays.
    write_config(
        &conf,
        &format!(
            r#"
prune = true

[[plugin]]
reference = "{addr}/acme/sample:2.0"
alias = "vol"
settings = ["DEBUG=1"]
{caps}
"#
        ),
    );
    sighup(&d);
    let set = wait_for_set(&d, "other pruned", |s| {
        s["Pruned"]
            .as_array()
            .is_some_and(|p| p.iter().any(|n| n == "other:latest"))
    });
    assert_eq!(set["Prune"], true);
    assert_eq!(set["Entries"].as_array().unwrap().len(), 1);
    let out = d.docker_ok(&["plugin", "ls", "--format", "{{.Name}}"]);
    assert_eq!(out.trim(), "vol:latest", "{out}");
    d.stop();
}

#[test]
#[ignore = "needs root, docker-registry, runc, the shim, the docker CLI and the sample plugin"]
fn plugin_set_pulls_from_a_private_registry_with_its_auth_file() {
    let registry = TestRegistry::start_with_htpasswd("alice", "s3cret");
    let addr = registry.addr().to_owned();
    seed_as(
        &registry,
        "acme/private:1.0",
        "private one",
        &AuthConfig::basic("alice", "s3cret"),
    );
    let conf_dir = tempfile::tempdir().unwrap();
    let auth = conf_dir.path().join("config.json");
    // As `docker login` writes it: base64("alice:s3cret") under the registry's address.
    std::fs::write(
        &auth,
        format!(r#"{{"auths": {{"{addr}": {{"auth": "YWxpY2U6czNjcmV0"}}}}}}"#),
    )
    .unwrap();
    let conf = conf_dir.path().join("plugind.toml");
    write_config(
        &conf,
        &format!(
            r#"
[[plugin]]
reference = "{addr}/acme/private:1.0"
alias = "anon"
privileges = {{ capabilities = ["CAP_SYS_ADMIN"] }}

[[plugin]]
reference = "{addr}/acme/private:1.0"
alias = "private"
privileges = {{ capabilities = ["CAP_SYS_ADMIN"] }}
registry-auth-file = "{}"
"#,
            auth.display()
        ),
    );
    let conf_arg = conf.display().to_string();
    let mut d = Daemon::start_with(false, &["--config-file", &conf_arg]);
    let set = wait_for_set(&d, "first run", |s| {
        s["Runs"].as_u64().unwrap_or(0) >= 1 && s["Reconciling"] == false
    });
    assert_eq!(
        entry(&set, "private:latest")["Status"],
        "in-sync",
        "{set:#}"
    );
    assert_eq!(entry(&set, "anon:latest")["Status"], "failed", "{set:#}");
    assert_eq!(inspect(&d, "private", "{{.Enabled}}"), "true");
    assert_eq!(
        inspect(&d, "private", "{{.Config.Description}}"),
        "private one"
    );
    d.stop();
}

#[test]
#[ignore = "needs root, runc, the shim and the docker CLI"]
fn a_hung_registry_delays_neither_the_api_nor_shutdown() {
    // A "registry" that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("plugind.toml");
    write_config(
        &conf,
        &format!("[[plugin]]\nreference = \"{addr}/acme/hung:1\"\nalias = \"hung\"\n"),
    );
    let conf_arg = conf.display().to_string();
    // start_with returns once the API answers `_ping`: the reconcile runs behind it.
    let mut d = Daemon::start_with(false, &["--config-file", &conf_arg]);
    let set = wait_for_set(&d, "the run started", |s| s["Reconciling"] == true);
    assert_eq!(entry(&set, "hung:latest")["Status"], "pending", "{set:#}");
    assert_eq!(set["Runs"], 0);
    d.docker_ok(&["plugin", "ls"]);
    // SIGTERM: the run is abandoned, plugind exits (Daemon::stop panics if it does not).
    d.stop();
}
