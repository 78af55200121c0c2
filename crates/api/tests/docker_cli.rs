//! The real docker CLI (found on `PATH`; written against the 28.x client) driven against the in-process server
//! with the fake backend: negotiation, every `docker plugin` command we serve, events, and the
//! error cases with Docker's exact messages and exit codes.

mod common;

use common::{Server, AUTHZ_CONFIG, VOLUME_CONFIG};
use plugind_api::EventMessage;

/// The docker CLI on `PATH` (and the sbin directories); panics when there is none, so a
/// machine without it fails these tests instead of skipping them.
fn docker_cli() -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("docker"))
        .find(|p| p.is_file())
        .expect("these tests need the docker CLI on PATH (cargo xtask setup)")
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the CLI against the server with a private config dir; panics if the CLI is missing.
async fn docker(s: &Server, args: &[&str]) -> Out {
    let config = s.dir.path().join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    let out = tokio::process::Command::new(docker_cli())
        .arg("-H")
        .arg(format!("unix://{}", s.sock.display()))
        .args(args)
        .env("DOCKER_CONFIG", &config)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_API_VERSION")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .output()
        .await
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[track_caller]
fn ok(o: &Out) -> &str {
    assert_eq!(o.code, 0, "stdout: {}\nstderr: {}", o.stdout, o.stderr);
    &o.stdout
}

#[track_caller]
fn fails_with(o: &Out, stderr: &str) {
    assert_eq!(o.code, 1, "stdout: {}\nstderr: {}", o.stdout, o.stderr);
    assert_eq!(o.stderr, stderr);
}

#[tokio::test]
async fn version_and_info_work() {
    let s = Server::start().await;
    let o = docker(
        &s,
        &[
            "version",
            "--format",
            "{{.Server.APIVersion}} {{.Server.Os}} {{.Client.APIVersion}}",
        ],
    )
    .await;
    assert_eq!(ok(&o), "1.51 linux 1.50\n");
    let o = docker(
        &s,
        &[
            "info",
            "--format",
            "{{.OSType}} {{.ServerVersion}} {{.DockerRootDir}}",
        ],
    )
    .await;
    assert_eq!(ok(&o), "linux 0.1.0-test /var/lib/plugind\n");
    let o = docker(&s, &["version"]).await;
    assert!(
        ok(&o).contains("1.51 (minimum version 1.24)"),
        "{}",
        o.stdout
    );
}

#[tokio::test]
async fn plugin_ls_quiet_format_and_filters() {
    let s = Server::start().await;
    let vol = s.backend.add("vieux/sshfs:latest", VOLUME_CONFIG, true);
    let authz = s.backend.add("authz:latest", AUTHZ_CONFIG, false);
    let o = docker(&s, &["plugin", "ls"]).await;
    let table = ok(&o);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("ID"), "{table}");
    for col in ["NAME", "DESCRIPTION", "ENABLED"] {
        assert!(lines[0].contains(col));
    }
    // The CLI sorts by name.
    assert!(lines[1].starts_with(&authz[..12]) && lines[1].contains("authz:latest"));
    assert!(lines[1].trim_end().ends_with("false"));
    assert!(lines[2].starts_with(&vol[..12]) && lines[2].contains("a volume plugin"));
    let o = docker(&s, &["plugin", "ls", "-q"]).await;
    assert_eq!(ok(&o), format!("{}\n{}\n", &authz[..12], &vol[..12]));
    let o = docker(
        &s,
        &[
            "plugin",
            "ls",
            "--format",
            "{{.Name}} {{.Enabled}} {{.PluginReference}}",
        ],
    )
    .await;
    assert_eq!(
        ok(&o),
        "authz:latest false authz:latest\nvieux/sshfs:latest true vieux/sshfs:latest\n"
    );
    let o = docker(
        &s,
        &[
            "plugin",
            "ls",
            "--filter",
            "enabled=true",
            "--format",
            "{{.Name}}",
        ],
    )
    .await;
    assert_eq!(ok(&o), "vieux/sshfs:latest\n");
    let o = docker(
        &s,
        &[
            "plugin",
            "ls",
            "-f",
            "capability=authz",
            "--format",
            "{{.Name}}",
        ],
    )
    .await;
    assert_eq!(ok(&o), "authz:latest\n");
    let o = docker(&s, &["plugin", "ls", "--filter", "foo=bar"]).await;
    fails_with(&o, "Error response from daemon: invalid filter 'foo'\n");
    let o = docker(&s, &["plugin", "ls", "--filter", "enabled=maybe"]).await;
    fails_with(
        &o,
        "Error response from daemon: invalid filter 'enabled=[maybe]'\n",
    );
}

#[tokio::test]
async fn plugin_inspect_by_name_id_and_format() {
    let s = Server::start().await;
    let id = s
        .backend
        .add("localhost:5000/foo/bar:latest", VOLUME_CONFIG, false);
    // `.Id` is the raw key, `.ID` the Go field: the CLI tries both renderings.
    let o = docker(
        &s,
        &[
            "plugin",
            "inspect",
            "-f",
            "{{.Id}} {{.Name}}",
            "localhost:5000/foo/bar",
        ],
    )
    .await;
    assert_eq!(ok(&o), format!("{id} localhost:5000/foo/bar:latest\n"));
    let o = docker(
        &s,
        &[
            "plugin",
            "inspect",
            "-f",
            "{{.ID}} {{.Enabled}}",
            "localhost:5000/foo/bar:latest",
        ],
    )
    .await;
    assert_eq!(ok(&o), format!("{id} false\n"));
    let o = docker(&s, &["plugin", "inspect", &id[..6]]).await;
    let v: serde_json::Value = serde_json::from_str(ok(&o)).unwrap();
    assert_eq!(v[0]["Name"], "localhost:5000/foo/bar:latest");
    assert_eq!(
        v[0]["Config"]["Interface"]["Types"][0],
        "docker.volumedriver/1.0"
    );
    let o = docker(&s, &["plugin", "inspect", "nope"]).await;
    assert_eq!(o.code, 1);
    assert_eq!(o.stdout, "[]\n");
    assert_eq!(
        o.stderr,
        "Error response from daemon: plugin \"nope\" not found\n"
    );
}

#[tokio::test]
async fn enable_disable_set_rm_and_their_errors() {
    let s = Server::start().await;
    s.backend.add("test/vol:latest", VOLUME_CONFIG, false);
    let o = docker(&s, &["plugin", "enable", "test/vol"]).await;
    assert_eq!(ok(&o), "test/vol\n");
    // The CLI's default timeout is 30 seconds.
    assert_eq!(
        *s.backend.last_timeout.lock().unwrap(),
        Some(Some(std::time::Duration::from_secs(30)))
    );
    let o = docker(&s, &["plugin", "enable", "test/vol"]).await;
    fails_with(
        &o,
        "Error response from daemon: plugin already enabled: plugin test/vol:latest is enabled\n",
    );
    let o = docker(&s, &["plugin", "set", "test/vol", "DEBUG=1"]).await;
    fails_with(
        &o,
        "Error response from daemon: cannot set on an active plugin, disable plugin before setting\n",
    );
    let o = docker(&s, &["plugin", "rm", "test/vol"]).await;
    fails_with(
        &o,
        "Error response from daemon: plugin test/vol:latest is enabled\n",
    );
    let o = docker(&s, &["plugin", "disable", "test/vol"]).await;
    assert_eq!(ok(&o), "test/vol\n");
    let o = docker(&s, &["plugin", "disable", "test/vol"]).await;
    fails_with(
        &o,
        "Error response from daemon: plugin is already disabled: plugin test/vol:latest found but disabled\n",
    );
    let o = docker(&s, &["plugin", "set", "test/vol", "DEBUG=1"]).await;
    assert_eq!(ok(&o), "");
    let o = docker(
        &s,
        &["plugin", "inspect", "-f", "{{.Settings.Env}}", "test/vol"],
    )
    .await;
    assert_eq!(ok(&o), "[DEBUG=1]\n");
    let o = docker(&s, &["plugin", "set", "test/vol", "NOPE=1"]).await;
    fails_with(
        &o,
        "Error response from daemon: setting \"NOPE\" not found in the plugin configuration\n",
    );
    let o = docker(&s, &["plugin", "enable", "nope"]).await;
    fails_with(
        &o,
        "Error response from daemon: plugin \"nope\" not found\n",
    );
    let o = docker(&s, &["plugin", "rm", "test/vol"]).await;
    assert_eq!(ok(&o), "test/vol\n");
    s.backend.add("forced:latest", "{}", true);
    let o = docker(&s, &["plugin", "rm", "-f", "forced"]).await;
    assert_eq!(ok(&o), "forced\n");
    assert!(s.backend.names().is_empty());
    let o = docker(&s, &["plugin", "rm", "gone"]).await;
    fails_with(
        &o,
        "Error response from daemon: plugin \"gone\" not found\n",
    );
}

#[tokio::test]
async fn create_uploads_the_directory_as_a_tar() {
    let s = Server::start().await;
    let dir = s.dir.path().join("plugin");
    std::fs::create_dir_all(dir.join("rootfs/bin")).unwrap();
    std::fs::write(dir.join("config.json"), VOLUME_CONFIG).unwrap();
    std::fs::write(dir.join("rootfs/bin/vol"), vec![1u8; 100_000]).unwrap();
    let d = dir.to_str().unwrap();
    let o = docker(&s, &["plugin", "create", "local/vol", d]).await;
    assert_eq!(ok(&o), "local/vol\n");
    assert!(*s.backend.last_create_bytes.lock().unwrap() > 100_000);
    let o = docker(
        &s,
        &[
            "plugin",
            "ls",
            "--format",
            "{{.Name}}|{{.Description}}|{{.Enabled}}",
        ],
    )
    .await;
    assert_eq!(ok(&o), "local/vol:latest|a volume plugin|false\n");
    let o = docker(&s, &["plugin", "create", "local/vol", d]).await;
    fails_with(
        &o,
        "Error response from daemon: plugin local/vol:latest already exists\n",
    );
    let empty = s.dir.path().join("noconfig");
    std::fs::create_dir_all(empty.join("rootfs")).unwrap();
    std::fs::write(empty.join("config.json"), "{}").unwrap();
    std::fs::remove_file(empty.join("config.json")).unwrap();
    // The CLI itself refuses a directory without config.json, before any upload.
    let o = docker(&s, &["plugin", "create", "other", empty.to_str().unwrap()]).await;
    assert_eq!(o.code, 1);
    assert_eq!(s.backend.names(), ["local/vol:latest"]);
}

#[tokio::test]
async fn events_since_until_with_plugin_filter() {
    let s = Server::start().await;
    let id = "3f".repeat(32);
    s.backend.publish(EventMessage::plugin(
        "create",
        &id,
        "t/vol:latest",
        1_795_330_138_685_398_233,
    ));
    s.backend.publish(EventMessage::plugin(
        "enable",
        &id,
        "t/vol",
        1_795_330_139_000_000_000,
    ));
    s.backend.publish(EventMessage::plugin(
        "enable",
        "other",
        "x",
        1_795_330_139_500_000_000,
    ));
    let o = docker(
        &s,
        &[
            "events",
            "--filter",
            "type=plugin",
            "--filter",
            "plugin=t/vol",
            "--since",
            "1795330138",
            "--until",
            "1795330140",
        ],
    )
    .await;
    assert_eq!(
        ok(&o),
        format!(
            "2026-11-22T06:48:58.685398233Z plugin create {id} (name=t/vol:latest)\n\
             2026-11-22T06:48:59.000000000Z plugin enable {id} (name=t/vol)\n"
        )
    );
    let o = docker(
        &s,
        &["events", "--since", "1795330140", "--until", "1795330139"],
    )
    .await;
    fails_with(
        &o,
        "Error response from daemon: `since` time (1795330140) cannot be after `until` time (1795330139)\n",
    );
}

#[tokio::test]
async fn install_renders_the_stream_and_uses_the_plugin_name() {
    let s = Server::start().await;
    let o = docker(
        &s,
        &[
            "plugin",
            "install",
            "--grant-all-permissions",
            "--disable",
            "--alias",
            "x",
            "acme/sample:1.0",
        ],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        o.stdout,
        "latest: Pulling from acme/sample\nabababababab: Waiting\nabababababab: Complete\nInstalled plugin acme/sample:1.0\n"
    );
    assert_eq!(s.backend.names(), ["x:latest"]);
    let o = docker(
        &s,
        &[
            "plugin",
            "install",
            "--grant-all-permissions",
            "acme/missing",
        ],
    )
    .await;
    assert_eq!(o.code, 1);
    assert_eq!(
        o.stderr.trim(),
        "Error response from daemon: error resolving plugin reference: manifest unknown"
    );
}

#[tokio::test]
async fn events_stream_live_to_the_cli_and_end_when_it_exits() {
    use tokio::io::AsyncBufReadExt;

    let s = Server::start().await;
    s.backend.add("live/vol:latest", VOLUME_CONFIG, false);
    let config = s.dir.path().join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    let mut child = tokio::process::Command::new(docker_cli())
        .arg("-H")
        .arg(format!("unix://{}", s.sock.display()))
        .args([
            "events",
            "--filter",
            "type=plugin",
            "--format",
            "{{.Action}} {{.Actor.Attributes.name}}",
        ])
        .env("DOCKER_CONFIG", &config)
        .env_remove("DOCKER_HOST")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    while s.backend.event_receivers() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // An action through the CLI shows up on the open stream at once.
    let o = docker(&s, &["plugin", "enable", "live/vol"]).await;
    assert_eq!(ok(&o), "live/vol\n");
    assert_eq!(lines.next_line().await.unwrap().unwrap(), "enable live/vol");
    child.kill().await.unwrap();
    // The server drops the subscription once the client is gone.
    while s.backend.event_receivers() > 0 {
        s.backend
            .publish(EventMessage::plugin("noop", "x", "x", common::now_nanos()));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
