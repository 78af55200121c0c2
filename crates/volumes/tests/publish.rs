//! The published socket over the real plugin manager (shim, runc, the packaged sample plugin)
//! while its plugin is down: it stays, answers every call at once with a clear error instead
//! of hanging, takes no reference for a refused Mount, and goes when the plugin is disabled.
//!
//! Needs root, `containerd-shim-runc-v2`, runc and `target/plugin/volume-plugin` (made by
//! `cargo xtask plugin`); `#[ignore]`d for plain `cargo test`, run by `cargo xtask ci`.

use std::{
    fs,
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};

use plugind_executor::{ExecutorConfig, Runtimes, ShimExecutor};
use plugind_manager::{backoff::RestartPolicy, Manager, ManagerConfig};
use plugind_store::RunState;
use plugind_volumes::{
    publish::{PublishConfig, Publisher},
    volume::random_name,
    VolumeConfig, CAPABILITY,
};

const SHIM: &str = "/usr/bin/containerd-shim-runc-v2";

fn plugin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugin/volume-plugin")
}

fn require_prerequisites() {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:\t0\t")),
        "this test needs root"
    );
    for bin in [SHIM, "/usr/sbin/runc"] {
        assert!(
            Path::new(bin).exists(),
            "this test needs {bin} (cargo xtask setup)"
        );
    }
    assert!(
        plugin_dir().join("rootfs/volume-plugin").exists(),
        "the sample plugin is not packaged: run `cargo xtask plugin` first"
    );
}

/// One POST over the socket; the read deadline only keeps a broken build from hanging CI.
async fn post(socket: &Path, method: &str, body: &str) -> (u16, serde_json::Value) {
    let socket = socket.to_path_buf();
    let request = format!(
        "POST /{method} HTTP/1.1\r\nHost: plugin\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::task::spawn_blocking(move || {
        let mut s = UnixStream::connect(&socket).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer)
            .expect("an answer, not a hang");
        let status = answer.split(' ').nth(1).unwrap().parse().unwrap();
        let (_, body) = answer.split_once("\r\n\r\n").unwrap();
        (status, serde_json::from_str(body).unwrap())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, runc, containerd-shim-runc-v2 and the packaged sample plugin"]
async fn published_socket_answers_at_once_while_its_plugin_is_down() {
    require_prerequisites();
    let dir = tempfile::Builder::new()
        .prefix("pp")
        .tempdir_in("/tmp")
        .unwrap();
    let namespace = format!("plugind-pt-{}", &random_name()[..8]);
    let mut ec = ExecutorConfig::new(&dir.path().join("run"), &namespace);
    ec.shim_binary = PathBuf::from(SHIM);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let executor = ShimExecutor::new(ec, &Runtimes::runc(), Arc::new(tx))
        .await
        .unwrap();
    let mut config = ManagerConfig::new(&dir.path().join("root"), &dir.path().join("run"));
    config.stop_grace = Duration::from_secs(5);
    // A killed plugin stays down for the whole test: its restart is an hour away.
    config.restart = RestartPolicy {
        initial: Duration::from_secs(3600),
        max: Duration::from_secs(3600),
        ..RestartPolicy::DEFAULT
    };
    let (manager, _) = Manager::start(config, Arc::new(executor), rx)
        .await
        .unwrap();
    let tar = Command::new("tar")
        .arg("-C")
        .arg(plugin_dir())
        .args(["-cf", "-", "config.json", "rootfs"])
        .output()
        .unwrap();
    manager
        .create("pub/driver", Box::new(std::io::Cursor::new(tar.stdout)))
        .await
        .unwrap();
    manager.enable("pub/driver", None).await.unwrap();

    let publish_dir = dir.path().join("publish");
    let publisher = Publisher::start(
        manager.clone(),
        PublishConfig {
            dir: publish_dir.clone(),
            docker_specs_dir: None,
            calls: VolumeConfig::DOCKER,
            // `daemon` (gid 1): a group that is not root's, so a chown that did not happen shows.
            socket_owner: plugind_sys::socket::SocketOwner {
                uid: 0,
                gid: 1,
                mode: 0o660,
            },
        },
    )
    .await
    .unwrap();
    let socket = publish_dir.join("pub+driver.sock");
    assert!(socket.exists(), "published at start");
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&socket).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (0, 1, 0o660),
            "published socket owner, group, mode"
        );
    }
    assert_eq!(
        publisher.published().get("pub/driver:latest"),
        Some(&socket)
    );
    let (status, _) = post(&socket, "VolumeDriver.Create", r#"{"Name":"v1"}"#).await;
    assert_eq!(status, 200);

    // Kill the plugin; wait (semantically) until the manager saw the exit.
    let pid = match manager
        .inspect("pub/driver")
        .unwrap()
        .record
        .state
        .observed
        .state
    {
        RunState::Running { pid } => pid,
        other => panic!("plugin not running: {other:?}"),
    };
    assert!(Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    while manager.get_enabled("pub/driver", CAPABILITY).is_ok() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    publisher.reconcile().await;
    assert!(socket.exists(), "kept while the plugin is to be restarted");

    // Every call is answered at once with a clear error (the plugin's own socket is gone).
    let (status, answer) = post(&socket, "VolumeDriver.Get", r#"{"Name":"v1"}"#).await;
    assert_eq!(status, 500);
    let err = answer["Err"].as_str().unwrap();
    assert!(
        err.contains("volume plugin pub/driver:latest is not available"),
        "{err}"
    );
    // Activate still works: consumers see a volume plugin that is temporarily failing.
    let (status, _) = post(&socket, "Plugin.Activate", "").await;
    assert_eq!(status, 200);
    // A refused Mount leaves no reference behind.
    let (status, _) = post(&socket, "VolumeDriver.Mount", r#"{"Name":"v1","ID":"c"}"#).await;
    assert_eq!(status, 500);
    assert_eq!(manager.inspect("pub/driver").unwrap().record.ref_count(), 0);

    // Disabled: the socket goes (the publisher follows the manager's events).
    manager.disable("pub/driver", false).await.unwrap();
    publisher.reconcile().await;
    assert!(!socket.exists(), "still published after disable");
    assert!(publisher.published().is_empty());
    manager.remove("pub/driver", true).await.unwrap();
    publisher.shutdown();
    manager.shutdown().await;
}

/// The publisher follows bursts of events by looking only at the plugins they name: after
/// plugins enabled at once, and then some disabled and removed at once while others stay,
/// exactly the sockets (and drop-in entries) of the running ones are there, each listening,
/// with nothing of the batched binds left beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, runc, containerd-shim-runc-v2 and the packaged sample plugin"]
async fn bursts_of_events_publish_and_remove_exactly_the_right_sockets() {
    require_prerequisites();
    let dir = tempfile::Builder::new()
        .prefix("pb")
        .tempdir_in("/tmp")
        .unwrap();
    let namespace = format!("plugind-pb-{}", &random_name()[..8]);
    let mut ec = ExecutorConfig::new(&dir.path().join("run"), &namespace);
    ec.shim_binary = PathBuf::from(SHIM);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let executor = ShimExecutor::new(ec, &Runtimes::runc(), Arc::new(tx))
        .await
        .unwrap();
    let mut config = ManagerConfig::new(&dir.path().join("root"), &dir.path().join("run"));
    config.stop_grace = Duration::from_secs(5);
    let (manager, _) = Manager::start(config, Arc::new(executor), rx)
        .await
        .unwrap();
    let publish_dir = dir.path().join("publish");
    let publisher = Publisher::start(
        manager.clone(),
        PublishConfig {
            dir: publish_dir.clone(),
            docker_specs_dir: None,
            calls: VolumeConfig::DOCKER,
            socket_owner: plugind_sys::socket::SocketOwner::current(0o660),
        },
    )
    .await
    .unwrap();
    let tar = Command::new("tar")
        .arg("-C")
        .arg(plugin_dir())
        .args(["-cf", "-", "config.json", "rootfs"])
        .output()
        .unwrap();
    let names: Vec<String> = (0..4).map(|i| format!("burst/p{i}")).collect();
    for name in &names {
        manager
            .create(name, Box::new(std::io::Cursor::new(tar.stdout.clone())))
            .await
            .unwrap();
    }
    // Enabled at once: their events arrive together.
    let enabled = tokio::join!(
        manager.enable(&names[0], None),
        manager.enable(&names[1], None),
        manager.enable(&names[2], None),
        manager.enable(&names[3], None)
    );
    for r in [enabled.0, enabled.1, enabled.2, enabled.3] {
        r.unwrap();
    }
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    published_becomes(&publisher, &publish_dir, &all).await;

    // p0 disabled, p1 disabled and removed, at once; p2 and p3 stay.
    let (d0, d1) = tokio::join!(
        manager.disable("burst/p0", false),
        manager.disable("burst/p1", false)
    );
    d0.unwrap();
    d1.unwrap();
    manager.remove("burst/p1", false).await.unwrap();
    published_becomes(&publisher, &publish_dir, &["burst/p2", "burst/p3"]).await;
    for gone in ["burst+p0.sock", "burst+p1.sock"] {
        assert!(!publish_dir.join(gone).exists(), "{gone} still there");
    }

    // Enabled again: published again.
    manager.enable("burst/p0", None).await.unwrap();
    published_becomes(
        &publisher,
        &publish_dir,
        &["burst/p0", "burst/p2", "burst/p3"],
    )
    .await;

    publisher.shutdown();
    for name in ["burst/p0", "burst/p2", "burst/p3"] {
        manager.disable(name, false).await.unwrap();
        manager.remove(name, false).await.unwrap();
    }
    manager.shutdown().await;
}

/// Waits until the publisher serves exactly `names` (following the manager's events on its
/// own), then checks the sockets, the drop-in and the publish directory.
async fn published_becomes(publisher: &Publisher, dir: &Path, names: &[&str]) {
    let want: Vec<String> = names.iter().map(|n| format!("{n}:latest")).collect();
    // Only a deadline against a hang: the events are handled in the background.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while publisher.published().keys().cloned().collect::<Vec<_>>() != want {
        assert!(
            std::time::Instant::now() < deadline,
            "published {:?}, want {want:?}",
            publisher.published()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut files: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        // The drop-in may be being rewritten right now.
        .filter(|n| !plugind_sys::fs::is_temp_name(n))
        .collect();
    files.sort();
    let mut expected: Vec<String> = names
        .iter()
        .map(|n| format!("{}.sock", n.replace('/', "+")))
        .collect();
    expected.push(plugind_volumes::publish::DROP_IN_FILE.to_owned());
    expected.sort();
    assert_eq!(files, expected, "publish directory");
    for name in names {
        let socket = dir.join(format!("{}.sock", name.replace('/', "+")));
        let (status, _) = post(&socket, "Plugin.Activate", "").await;
        assert_eq!(status, 200, "{name} answers");
    }
    // The drop-in is written after the sockets: wait for it the same way.
    let drop_in = dir.join(plugind_volumes::publish::DROP_IN_FILE);
    loop {
        let text = fs::read_to_string(&drop_in).unwrap_or_default();
        let listed = text.lines().filter(|l| l.contains(".sock")).count();
        // Each `name:latest` is listed under its full and its short name.
        if listed == 2 * names.len() && names.iter().all(|n| text.contains(&format!("\"{n}\""))) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "drop-in {text:?}, want {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
