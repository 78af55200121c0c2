//! Tests of the daemon's configuration: flags over the TOML file, reload diffs, and the
//! documented files (README examples, contrib/plugind.toml) against the real parser.

use super::*;

fn cli(args: &[&str]) -> Cli {
    Cli::parse_from(
        std::iter::once("plugind")
            .chain(args.iter().copied())
            .map(OsString::from),
    )
    .unwrap()
}

fn with_file(text: &str, args: &[&str]) -> anyhow::Result<Config> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugind.toml");
    std::fs::write(&path, text).unwrap();
    let mut all = vec!["--config-file", path.to_str().unwrap()];
    all.extend_from_slice(args);
    Config::load(&cli(&all))
}

#[test]
fn defaults() {
    let c = Config::load(&cli(&[])).unwrap();
    assert_eq!(c.root, Path::new("/var/lib/plugind"));
    assert_eq!(c.exec_root, Path::new("/run/plugind"));
    assert_eq!(c.socket, Path::new("/run/plugind/plugind.sock"));
    assert!(!c.live_restore);
    assert_eq!(c.default_runtime, "runc");
    assert_eq!(c.runtimes.len(), 1);
    assert_eq!(c.shutdown_timeout, Duration::from_secs(15));
    assert_eq!(c.log_level, LogLevel::Info);
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.create_body_limit, plugind_api::DEFAULT_CREATE_BODY_LIMIT);
    assert_eq!(c.api_max_connections, plugind_api::DEFAULT_MAX_CONNECTIONS);
    assert_eq!(c.api_header_timeout, plugind_api::DEFAULT_HEADER_TIMEOUT);
    assert_eq!(c.api_idle_timeout, plugind_api::DEFAULT_IDLE_TIMEOUT);
    assert_eq!(c.api_body_timeout, plugind_api::DEFAULT_BODY_TIMEOUT);
}

#[test]
fn publishing_settings_from_flags_and_file() {
    let c = Config::load(&cli(&["--exec-root", "/run/x"])).unwrap();
    assert_eq!(c.publish_dir, Path::new("/run/x/publish"));
    assert_eq!(c.docker_specs_dir, None);
    let c = Config::load(&cli(&[
        "--publish-dir",
        "/run/pub",
        "--publish-docker-specs",
        "--docker-specs-dir",
        "/tmp/specs",
    ]))
    .unwrap();
    assert_eq!(c.publish_dir, Path::new("/run/pub"));
    assert_eq!(c.docker_specs_dir.as_deref(), Some(Path::new("/tmp/specs")));
    let c = with_file("publish-dir = \"/run/f\"\npublish-docker-specs = true", &[]).unwrap();
    assert_eq!(c.publish_dir, Path::new("/run/f"));
    assert_eq!(
        c.docker_specs_dir.as_deref(),
        Some(Path::new("/etc/docker/plugins"))
    );
    let c = with_file("publish-dir = \"/run/f\"", &["--publish-dir", "/run/flag"]).unwrap();
    assert_eq!(c.publish_dir, Path::new("/run/flag"));
    assert!(Config::load(&cli(&["--publish-dir", "rel"])).is_err());
    // `plugind podman-conf [OPTIONS]` is `--podman-conf`.
    let c = cli(&["podman-conf", "--exec-root", "/run/y"]);
    assert!(c.podman_conf);
    assert_eq!(
        Config::load(&c).unwrap().publish_dir,
        Path::new("/run/y/publish")
    );
}

#[test]
fn api_limits_from_file_and_flags() {
    let c = with_file(
        "api-max-connections = 10\napi-idle-timeout = 7\napi-body-timeout = 9",
        &["--api-header-timeout", "2", "--api-max-connections", "20"],
    )
    .unwrap();
    assert_eq!(c.api_max_connections, 20);
    assert_eq!(c.api_header_timeout, Duration::from_secs(2));
    assert_eq!(c.api_idle_timeout, Duration::from_secs(7));
    assert_eq!(c.api_body_timeout, Duration::from_secs(9));
    assert_eq!(c.plugin_start_timeout, Duration::from_millis(12_500));
}

#[test]
fn access_control_from_flags_or_file() {
    let c = Config::load(&cli(&[])).unwrap();
    assert_eq!(c.group, "docker");
    assert!(c.authorization_plugins.is_empty());
    let c = with_file(
        "group = \"staff\"\nauthorization-plugins = [\"a\", \"b\", \"a\"]",
        &[],
    )
    .unwrap();
    assert_eq!(c.group, "staff");
    assert_eq!(c.authorization_plugins, ["a", "b"], "in order, once each");
    let c = with_file(
        "authorization-plugins = [\"a\"]",
        &[
            "-G",
            "wheel",
            "--authorization-plugin",
            "x",
            "--authorization-plugin=y",
        ],
    )
    .unwrap();
    assert_eq!(c.group, "wheel");
    assert_eq!(c.authorization_plugins, ["x", "y"]);
    assert!(with_file("authorization-plugins = [\"\"]", &[]).is_err());
    // The chain is reloaded live; the group needs a restart.
    let running = Config::load(&cli(&[])).unwrap();
    let new = Config::load(&cli(&["--authorization-plugin", "x", "-G", "g"])).unwrap();
    let diff = ReloadDiff::between(&running, &new);
    assert_eq!(diff.applied, ["authorization-plugins"]);
    assert_eq!(diff.needs_restart, ["group"]);
    let in_force = ReloadDiff::apply(&running, &new);
    assert_eq!(in_force.authorization_plugins, ["x"]);
    assert_eq!(in_force.group, "docker");
}

#[test]
fn event_history_bounds_from_flags_or_file() {
    let c = Config::load(&cli(&[])).unwrap();
    assert_eq!(c.events_max_bytes, 32 << 20);
    assert_eq!(c.events_max_age, Duration::from_secs(168 * 3600));
    let c = with_file("events-max-bytes = 1048576\nevents-max-age = \"7d\"", &[]).unwrap();
    assert_eq!(c.events_max_bytes, 1 << 20);
    assert_eq!(c.events_max_age, Duration::from_secs(7 * 24 * 3600));
    let c = with_file("events-max-age = \"7d\"", &["--events-max-age", "90m"]).unwrap();
    assert_eq!(c.events_max_age, Duration::from_secs(90 * 60));
    let e = Config::load(&cli(&["--events-max-age", "soon"])).unwrap_err();
    assert!(format!("{e:#}").contains("events-max-age"), "{e:#}");
    assert!(Config::load(&cli(&["--events-max-age", "0s"])).is_err());
}

#[test]
fn insecure_registries_from_flags_or_file() {
    let c = with_file(r#"insecure-registries = ["10.0.0.0/8"]"#, &[]).unwrap();
    assert_eq!(c.insecure_registries, ["10.0.0.0/8"]);
    let c = with_file(
        r#"insecure-registries = ["10.0.0.0/8"]"#,
        &[
            "--insecure-registry",
            "reg.local:5000",
            "--insecure-registry=192.168.0.0/16",
        ],
    )
    .unwrap();
    assert_eq!(c.insecure_registries, ["reg.local:5000", "192.168.0.0/16"]);
    assert!(Config::load(&cli(&[]))
        .unwrap()
        .insecure_registries
        .is_empty());
}

#[test]
fn shim_group_from_flag_or_file() {
    use plugind_executor::ShimGroup;
    assert_eq!(
        Config::load(&cli(&[])).unwrap().shim_group,
        ShimGroup::Max(16)
    );
    let c = Config::load(&cli(&["--shim-group", "all"])).unwrap();
    assert_eq!(c.shim_group, ShimGroup::All);
    let c = Config::load(&cli(&["--shim-group", "none"])).unwrap();
    assert_eq!(c.shim_group, ShimGroup::None);
    assert_eq!(
        with_file("shim-group = 8\n", &[]).unwrap().shim_group,
        ShimGroup::Max(8)
    );
    assert_eq!(
        with_file("shim-group = \"none\"\n", &[])
            .unwrap()
            .shim_group,
        ShimGroup::None
    );
    let c = with_file("shim-group = 8\n", &["--shim-group", "4"]).unwrap();
    assert_eq!(c.shim_group, ShimGroup::Max(4));
    for bad in ["0", "some", ""] {
        let e = Config::load(&cli(&["--shim-group", bad])).unwrap_err();
        assert!(format!("{e:#}").contains("shim group"), "{bad}: {e:#}");
    }
    assert!(with_file("shim-group = 0\n", &[]).is_err());
}

#[test]
fn plugin_start_timeout_from_flag_or_file() {
    let c = with_file("plugin-start-timeout = 2.5", &[]).unwrap();
    assert_eq!(c.plugin_start_timeout, Duration::from_millis(2500));
    let c = with_file(
        "plugin-start-timeout = 2.5",
        &["--plugin-start-timeout", "40"],
    )
    .unwrap();
    assert_eq!(c.plugin_start_timeout, Duration::from_secs(40));
    for bad in ["0", "-1", "NaN", "1e9"] {
        let arg = format!("--plugin-start-timeout={bad}");
        let e = format!("{:#}", Config::load(&cli(&[&arg])).unwrap_err());
        assert!(e.contains("--plugin-start-timeout must be"), "{bad}: {e}");
    }
}

#[test]
fn reload_reports_applied_and_restart_only_settings() {
    let running = Config::load(&cli(&[])).unwrap();
    assert_eq!(
        ReloadDiff::between(&running, &running),
        ReloadDiff::default()
    );
    let new = Config::load(&cli(&[
        "--add-runtime",
        "crun=/usr/bin/crun",
        "--shutdown-timeout",
        "3",
        "--live-restore",
        "--root",
        "/srv/p",
        "--plugin-start-timeout",
        "30",
        "--health-interval",
        "5s",
    ]))
    .unwrap();
    let diff = ReloadDiff::between(&running, &new);
    assert_eq!(diff.applied, ["runtimes", "shutdown-timeout", "health"]);
    assert_eq!(
        diff.needs_restart,
        ["root", "live-restore", "plugin-start-timeout"]
    );
    let after = ReloadDiff::apply(&running, &new);
    assert!(after.runtimes.contains_key("crun"));
    assert_eq!(after.shutdown_timeout, Duration::from_secs(3));
    assert_eq!(after.health.interval, Duration::from_secs(5));
    assert_eq!(
        after.root, running.root,
        "not applied: still the running value"
    );
    assert!(!after.live_restore);
    // The next reload with the same file still reports what waits for a restart.
    let again = ReloadDiff::between(&after, &new);
    assert!(again.applied.is_empty());
    assert_eq!(again.needs_restart.len(), 3);
}

#[test]
fn plugin_tables_become_a_checked_plugin_set() {
    let file = r#"
prune = true

[[plugin]]
reference = "registry.example.com/acme/vol:1.2"
alias = "vol"
settings = ["DEBUG=1", "mount.source=/srv/vol"]
privileges = { mount = ["/var/lib/vol"], "host pid namespace" = ["true"] }

[[plugin]]
reference = "registry.example.com/acme/net:3"
enabled = false
registry-auth-file = "/etc/plugind/registry-auth.json"
"#;
    let config = with_file(file, &[]).unwrap();
    assert!(config.prune);
    assert_eq!(config.plugins.len(), 2);
    assert!(config.plugins[0].enabled, "enabled defaults to true");
    assert!(!config.plugins[1].enabled);
    assert_eq!(config.plugins[0].registry_auth_file, None);
    let set = config.plugin_set().unwrap();
    assert!(set.prune());
    assert_eq!(set.entries()[0].alias(), "vol:latest");
    assert_eq!(set.entries()[1].alias(), "registry.example.com/acme/net:3");
    assert_eq!(
        set.entries()[1].auth_file.as_deref(),
        Some(Path::new("/etc/plugind/registry-auth.json"))
    );
    assert_eq!(
        set.entries()[0].settings,
        ["DEBUG=1", "mount.source=/srv/vol"]
    );
    assert_eq!(
        set.entries()[0].accepted["mount"],
        vec!["/var/lib/vol".to_owned()]
    );
    // No tables: an empty set, nothing reconciled.
    assert!(Config::load(&cli(&[]))
        .unwrap()
        .plugin_set()
        .unwrap()
        .is_empty());
}

/// README's `plugind.toml` examples are files plugind accepts.
#[test]
fn readme_config_examples_load() {
    let readme = include_str!("../../../../README.md");
    let mut found = 0;
    for block in readme.split("```toml\n").skip(1) {
        let text = block.split("```").next().unwrap();
        let config = with_file(text, &[]).unwrap_or_else(|e| panic!("{e:#}:\n{text}"));
        found += config.plugin_set().unwrap().entries().len();
    }
    assert!(found >= 2, "README shows [[plugin]] tables in a toml block");
}

#[test]
fn invalid_plugin_tables_are_config_errors() {
    for (file, expected) in [
        (
            "[[plugin]]\nreference = \"Acme/Vol\"\n",
            "must be lowercase",
        ),
        (
            "[[plugin]]\nreference = \"acme/a\"\nalias = \"x\"\n\
             [[plugin]]\nreference = \"acme/b\"\nalias = \"x:latest\"\n",
            "already used by plugin 1",
        ),
        (
            "[[plugin]]\nreference = \"acme/a\"\nprivileges = { root = [\"yes\"] }\n",
            "unknown privilege \"root\"",
        ),
        (
            "[[plugin]]\nreference = \"acme/a\"\nsettings = [\"DEBUG\"]\n",
            "KEY=VALUE",
        ),
        (
            "[[plugin]]\nreference = \"acme/a\"\nregistry-auth-file = \"auth.json\"\n",
            "not an absolute path",
        ),
        ("[[plugin]]\nalias = \"x\"\n", "missing field `reference`"),
        (
            "[[plugin]]\nreference = \"acme/a\"\nenable = true\n",
            "unknown field `enable`",
        ),
    ] {
        let err = format!("{:#}", with_file(file, &[]).unwrap_err());
        assert!(err.contains(expected), "{file:?}: {err}");
    }
}

#[test]
fn reload_applies_the_plugin_set() {
    let running = with_file("", &[]).unwrap();
    let new = with_file("prune = true\n[[plugin]]\nreference = \"acme/a:1\"\n", &[]).unwrap();
    let diff = ReloadDiff::between(&running, &new);
    assert_eq!(diff.applied, ["plugin", "prune"]);
    assert!(diff.needs_restart.is_empty());
    let after = ReloadDiff::apply(&running, &new);
    assert_eq!(after.plugins, new.plugins);
    assert!(after.prune);
}

#[test]
fn file_overrides_defaults_and_flags_override_file() {
    let file = r#"
        root = "/srv/plugind"
        exec-root = "/run/p2"
        host = "unix:///tmp/p.sock"
        live-restore = true
        default-runtime = "crun"
        shutdown-timeout = 3
        log-level = "warn"
        log-format = "json"
        [runtimes.crun]
        path = "/usr/bin/crun"
        args = ["--systemd-cgroup"]
    "#;
    let c = with_file(file, &[]).unwrap();
    assert_eq!(c.root, Path::new("/srv/plugind"));
    assert_eq!(c.exec_root, Path::new("/run/p2"));
    assert_eq!(c.socket, Path::new("/tmp/p.sock"));
    assert!(c.live_restore);
    assert_eq!(c.default_runtime, "crun");
    assert_eq!(c.runtimes["crun"].args, ["--systemd-cgroup"]);
    assert_eq!(c.shutdown_timeout, Duration::from_secs(3));
    assert_eq!(
        (c.log_level, c.log_format),
        (LogLevel::Warn, LogFormat::Json)
    );
    let c = with_file(
        file,
        &[
            "--root",
            "/a",
            "-H",
            "unix:///b.sock",
            "--live-restore=false",
            "--log-format",
            "text",
            "-D",
            "--add-runtime",
            "crun=/opt/crun,--x,--y",
            "--default-runtime",
            "runc",
            "--shutdown-timeout",
            "0",
        ],
    )
    .unwrap();
    assert_eq!(c.root, Path::new("/a"));
    assert_eq!(
        c.exec_root,
        Path::new("/run/p2"),
        "not given: the file's value"
    );
    assert_eq!(c.socket, Path::new("/b.sock"));
    assert!(!c.live_restore);
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.log_level, LogLevel::Debug);
    assert_eq!(c.default_runtime, "runc");
    assert_eq!(c.shutdown_timeout, Duration::ZERO);
    assert_eq!(
        c.runtimes["crun"],
        Runtime {
            path: "/opt/crun".into(),
            args: vec!["--x".into(), "--y".into()],
            single_call: true,
        }
    );
    // A bare boolean flag means true.
    assert!(
        Config::load(&cli(&["--live-restore"]))
            .unwrap()
            .live_restore
    );
    // Same value as the default, but given explicitly: still wins over the file.
    let c = with_file("root = \"/srv\"", &["--root", "/var/lib/plugind"]).unwrap();
    assert_eq!(c.root, Path::new("/var/lib/plugind"));
}

/// dockerd accepts a flag given twice (last wins); given as a flag and in the file, plugind
/// lets the flag win where dockerd refuses to start (docs/compat.md).
#[test]
fn live_restore_given_twice_is_not_a_start_failure() {
    let c = Config::load(&cli(&["--live-restore", "--live-restore"])).unwrap();
    assert!(c.live_restore);
    let c = Config::load(&cli(&["--live-restore", "--live-restore=false"])).unwrap();
    assert!(!c.live_restore, "the last occurrence wins");
    let c = with_file("live-restore = true", &["--live-restore"]).unwrap();
    assert!(c.live_restore);
    let c = with_file("live-restore = true", &["--live-restore=false"]).unwrap();
    assert!(!c.live_restore, "the flag wins over the file");
    let c = with_file(
        "live-restore = false",
        &["--live-restore", "--live-restore"],
    )
    .unwrap();
    assert!(c.live_restore);
    // Other single-value flags behave the same; repeatable ones still accumulate.
    let c = Config::load(&cli(&[
        "--root",
        "/a",
        "--root",
        "/b",
        "-D",
        "-D",
        "--add-runtime",
        "r1=/x",
        "--add-runtime",
        "r2=/y",
    ]))
    .unwrap();
    assert_eq!(c.root, Path::new("/b"));
    assert_eq!(c.log_level, LogLevel::Debug);
    assert!(c.runtimes.contains_key("r1") && c.runtimes.contains_key("r2"));
}

#[test]
fn validation_errors() {
    let err = |args: &[&str]| format!("{:#}", Config::load(&cli(args)).unwrap_err());
    assert!(err(&["-H", "tcp://0.0.0.0:2375"]).contains("only unix://PATH is supported"));
    assert!(err(&["-H", "unix://rel.sock"]).contains("absolute socket path"));
    assert!(err(&["--root", "rel"]).contains("--root must be an absolute path"));
    assert!(err(&["--root", "/x", "--exec-root", "/x"]).contains("must differ"));
    assert!(
        err(&["--default-runtime", "crun"]).contains(r#"default runtime "crun" is not configured"#)
    );
    assert!(err(&["--add-runtime", "runc=/x"]).contains("'runc' is reserved"));
    assert!(err(&["--add-runtime", "crun"]).contains("expected NAME=PATH"));
    assert!(err(&["--add-runtime", "bad name=/x"]).contains("invalid runtime name"));
    assert!(err(&["--add-runtime", "crun="]).contains("empty path"));
    assert!(err(&["--create-body-limit", "0"]).contains("greater than 0"));
    assert!(err(&["--api-max-connections", "0"]).contains("greater than 0"));
    assert!(err(&["--api-idle-timeout", "0"]).contains("--api-idle-timeout must be"));
    let e = format!("{:#}", with_file("rooot = \"/x\"", &[]).unwrap_err());
    assert!(
        e.contains("invalid config file") && e.contains("rooot"),
        "{e}"
    );
    let e = format!(
        "{:#}",
        with_file("[runtimes.crun]\nargs = []", &[]).unwrap_err()
    );
    assert!(e.contains("path"), "{e}");
    let missing = Config::load(&cli(&["--config-file", "/nonexistent/plugind.toml"]));
    assert!(format!("{:#}", missing.unwrap_err()).contains("cannot read config file"));
    assert!(Cli::parse_from(["plugind", "--log-level", "loud"].map(OsString::from)).is_err());
}

#[test]
fn help_documents_every_flag() {
    let help = Cli::command().render_long_help().to_string();
    for flag in [
        "--root",
        "--data-root",
        "--exec-root",
        "--host",
        "-H",
        "--live-restore",
        "--config-file",
        "--config",
        "--default-runtime",
        "--add-runtime",
        "--shutdown-timeout",
        "--log-level",
        "--log-format",
        "--debug",
        "--create-body-limit",
        "--api-max-connections",
        "--api-header-timeout",
        "--api-idle-timeout",
        "--api-body-timeout",
        "--plugin-start-timeout",
        "--publish-dir",
        "--publish-docker-specs",
        "--docker-specs-dir",
        "--podman-conf",
        "--podman-conf-output",
        "/var/lib/plugind",
        "/run/plugind",
        "unix:///run/plugind/plugind.sock",
    ] {
        assert!(help.contains(flag), "help lacks {flag}:\n{help}");
    }
}

#[test]
fn metrics_addr_is_unix_or_loopback_tcp() {
    let addr = |a: &str| Config::load(&cli(&["--metrics-addr", a])).map(|c| c.metrics_addr);
    assert_eq!(
        addr("unix:///run/plugind/metrics.sock").unwrap(),
        Some(MetricsAddr::Unix("/run/plugind/metrics.sock".into()))
    );
    assert_eq!(
        addr("tcp://127.0.0.1:9323").unwrap(),
        Some(MetricsAddr::Tcp("127.0.0.1:9323".parse().unwrap()))
    );
    // dockerd's spelling: a bare HOST:PORT.
    assert_eq!(
        addr("localhost:9323").unwrap(),
        Some(MetricsAddr::Tcp("127.0.0.1:9323".parse().unwrap()))
    );
    assert_eq!(
        addr("[::1]:9323").unwrap(),
        Some(MetricsAddr::Tcp("[::1]:9323".parse().unwrap()))
    );
    for bad in [
        "0.0.0.0:9323",
        "tcp://10.1.2.3:9323",
        "tcp://example.com:9323",
        "unix://relative.sock",
        "http://127.0.0.1:9323",
        "127.0.0.1",
        "127.0.0.1:port",
    ] {
        let e = addr(bad).unwrap_err().to_string();
        assert!(e.contains("--metrics-addr"), "{bad}: {e}");
    }
    let e = addr("0.0.0.0:9323").unwrap_err().to_string();
    assert!(e.contains("loopback"), "{e}");
    assert_eq!(Config::load(&cli(&[])).unwrap().metrics_addr, None);
    assert_eq!(
        with_file("metrics-addr = \"127.0.0.1:9323\"\n", &[])
            .unwrap()
            .metrics_addr,
        Some(MetricsAddr::Tcp("127.0.0.1:9323".parse().unwrap()))
    );
}

#[test]
fn health_keys_from_flags_and_file_are_checked() {
    let c = Config::load(&cli(&[])).unwrap();
    assert_eq!(c.health, plugind_manager::HealthPolicy::DEFAULT);
    let c = with_file(
        "health-interval = \"1m30s\"\nhealth-timeout = \"2s\"\nhealth-retries = 5\n",
        &["--health-retries", "4"],
    )
    .unwrap();
    assert_eq!(c.health.interval, Duration::from_secs(90));
    assert_eq!(c.health.timeout, Duration::from_secs(2));
    assert_eq!(c.health.retries, 4, "the flag wins over the file");
    // Zero interval: health checks off.
    let c = Config::load(&cli(&["--health-interval", "0s"])).unwrap();
    assert!(c.health.interval.is_zero());
    for bad in [
        &["--health-interval", "soon"][..],
        &["--health-timeout", "0"],
        &["--health-retries", "0"],
    ] {
        assert!(Config::load(&cli(bad)).is_err(), "{bad:?}");
    }
}

/// `contrib/plugind.toml`, installed as `/etc/plugind/plugind.toml` by the package.
const CONTRIB_CONFIG: &str = include_str!("../../../../contrib/plugind.toml");

/// The lines of the shipped file with its commented-out settings (`#key = value`,
/// `#[table]`: a `#` directly followed by the setting) turned on.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn without_file(mut c: Config) -> Config {
    c.config_file = None;
    c
}

#[test]
fn contrib_config_documents_every_key_with_its_default() {
    let defaults = Config::load(&cli(&[])).unwrap();
    // As shipped (everything commented out) it changes nothing.
    assert_eq!(
        without_file(with_file(CONTRIB_CONFIG, &[]).unwrap()),
        defaults
    );
    // Each commented value is the real default: turned on, the settings change nothing
    // either (the example runtime table at the end adds its runtime and nothing else).
    let (settings, runtimes_example) = CONTRIB_CONFIG
        .split_once("#[runtimes.")
        .expect("the file shows a [runtimes.NAME] example");
    let on = without_file(with_file(&uncommented(settings), &[]).unwrap());
    assert_eq!(
        on, defaults,
        "a commented value in contrib/plugind.toml is not the default"
    );
    let all = without_file(
        with_file(
            &uncommented(&format!("{settings}#[runtimes.{runtimes_example}")),
            &[],
        )
        .unwrap(),
    );
    assert_eq!(all.runtimes["crun"].path, "/usr/bin/crun");
    // The example [[plugin]] tables are a valid plugin set.
    assert_eq!(
        all.plugins.len(),
        2,
        "the file shows two [[plugin]] examples"
    );
    assert_eq!(all.plugin_set().unwrap().entries().len(), 2);
    assert_eq!(
        Config {
            runtimes: defaults.runtimes.clone(),
            plugins: defaults.plugins.clone(),
            ..all
        },
        defaults
    );
    // Every key the file format accepts is there: serde lists them when refusing one.
    let refused = toml::from_str::<FileConfig>("not-a-key = 1")
        .unwrap_err()
        .to_string();
    let keys: Vec<&str> = refused
        .split('`')
        .skip(3)
        .step_by(2)
        .filter(|k| *k != "data-root")
        .collect();
    assert!(
        keys.len() >= 16,
        "could not read the key list from: {refused}"
    );
    for key in keys {
        let shown = if key == "runtimes" {
            "\n#[runtimes.".to_owned()
        } else if key == "plugin" {
            "\n#[[plugin]]".to_owned()
        } else {
            format!("\n#{key} = ")
        };
        assert!(
            CONTRIB_CONFIG.contains(&shown),
            "contrib/plugind.toml lacks {key}"
        );
    }
}
