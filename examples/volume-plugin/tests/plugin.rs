//! Drives the real `volume-plugin` binary over its unix socket with hand-written HTTP: the
//! handshake, every VolumeDriver method with its error cases, persistence across a restart,
//! SIGTERM handling, `--listen-delay-ms` and `--exit-immediately`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_volume-plugin");

/// A running plugin on a private socket and root; killed on drop.
struct Plugin {
    child: Child,
    socket: PathBuf,
    root: PathBuf,
}

impl Plugin {
    fn start(dir: &Path, extra: &[&str]) -> Plugin {
        let socket = dir.join("vol.sock");
        let root = dir.join("volumes");
        let child = Command::new(BIN)
            .arg("--socket")
            .arg(&socket)
            .arg("--root")
            .arg(&root)
            .args(extra)
            .env("DEBUG", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn volume-plugin");
        let mut p = Plugin {
            child,
            socket,
            root,
        };
        p.wait_ready();
        p
    }

    /// Polls until the socket accepts; fails if the process exits first. Not a timing
    /// assertion: the loop is bounded only to keep a broken binary from hanging the suite.
    fn wait_ready(&mut self) {
        for _ in 0..2_000 {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("volume-plugin exited before listening: {status}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("volume-plugin never listened on {}", self.socket.display());
    }

    fn call(&self, path: &str, body: &str) -> (u16, Value) {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: plugin.moby.localhost\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        parse_response(&raw)
    }

    fn sigterm(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        wait_exit(&mut self.child)
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_response(raw: &str) -> (u16, Value) {
    let (head, body) = raw.split_once("\r\n\r\n").expect("response has a head");
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        head.contains("Content-Type: application/vnd.docker.plugins.v1.2+json"),
        "{head}"
    );
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("content-length")
        .parse()
        .unwrap();
    assert_eq!(len, body.len());
    (status, serde_json::from_str(body).unwrap())
}

fn err_of(v: &Value) -> &str {
    v["Err"].as_str().unwrap_or("")
}

#[test]
fn volume_driver_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let p = Plugin::start(dir.path(), &[]);

    assert_eq!(
        p.call("/Plugin.Activate", ""),
        (200, json!({"Implements": ["VolumeDriver"]}))
    );
    assert_eq!(
        p.call("/VolumeDriver.Capabilities", "{}"),
        (200, json!({"Capabilities": {"Scope": "local"}}))
    );
    let (status, v) = p.call("/VolumeDriver.List", "{}\n");
    assert_eq!((status, v["Volumes"].clone()), (200, json!([])));

    // Create, including invalid names.
    let (status, v) = p.call(
        "/VolumeDriver.Create",
        r#"{"Name":"v1","Opts":{"size":"1G"}}"#,
    );
    assert_eq!((status, err_of(&v)), (200, ""));
    assert!(p.root.join("v1").is_dir());
    assert_eq!(
        p.call("/VolumeDriver.Create", r#"{"Name":"v2","Opts":null}"#)
            .0,
        200
    );
    for bad in ["", ".", "..", "a/b"] {
        let (status, v) = p.call("/VolumeDriver.Create", &json!({"Name": bad}).to_string());
        assert_eq!(status, 500, "name {bad:?}");
        assert!(!err_of(&v).is_empty(), "name {bad:?}");
    }
    assert_eq!(p.call("/VolumeDriver.Create", "not json").0, 400);

    let (_, v) = p.call("/VolumeDriver.List", "{}");
    let mountpoint = p.root.join("v1").display().to_string();
    assert_eq!(
        v["Volumes"],
        json!([
            {"Name": "v1", "Mountpoint": mountpoint},
            {"Name": "v2", "Mountpoint": p.root.join("v2").display().to_string()},
        ])
    );

    let (status, v) = p.call("/VolumeDriver.Get", r#"{"Name":"v1"}"#);
    assert_eq!(status, 200);
    assert_eq!(v["Err"], "");
    assert_eq!(v["Volume"]["Name"], "v1");
    assert_eq!(v["Volume"]["Mountpoint"], mountpoint.as_str());
    assert!(v["Volume"]["Status"].is_object());
    assert!(v["Volume"]["CreatedAt"].as_str().unwrap().ends_with('Z'));
    let (status, v) = p.call("/VolumeDriver.Get", r#"{"Name":"nope"}"#);
    assert_eq!(status, 500);
    assert!(err_of(&v).contains("nope"), "{v}");

    // Mount twice (two containers), remove refused while mounted.
    let id_a = "a".repeat(64);
    let id_b = "b".repeat(64);
    for id in [&id_a, &id_b] {
        let (status, v) = p.call(
            "/VolumeDriver.Mount",
            &json!({"Name": "v1", "ID": id}).to_string(),
        );
        assert_eq!(
            (status, v["Mountpoint"].as_str()),
            (200, Some(mountpoint.as_str()))
        );
    }
    assert_eq!(
        p.call("/VolumeDriver.Mount", r#"{"Name":"nope","ID":"x"}"#)
            .0,
        500
    );
    assert_eq!(
        p.call("/VolumeDriver.Path", r#"{"Name":"v1"}"#),
        (200, json!({"Mountpoint": mountpoint, "Err": ""}))
    );
    let (status, v) = p.call("/VolumeDriver.Remove", r#"{"Name":"v1"}"#);
    assert_eq!(status, 500);
    assert!(err_of(&v).contains("in use"), "{v}");
    assert_eq!(
        p.call(
            "/VolumeDriver.Unmount",
            &json!({"Name": "v1", "ID": id_a}).to_string()
        )
        .0,
        200
    );
    // Still mounted by b.
    assert_eq!(p.call("/VolumeDriver.Remove", r#"{"Name":"v1"}"#).0, 500);
    assert_eq!(
        p.call(
            "/VolumeDriver.Unmount",
            &json!({"Name": "v1", "ID": id_b}).to_string()
        )
        .0,
        200
    );
    let (status, v) = p.call("/VolumeDriver.Remove", r#"{"Name":"v1"}"#);
    assert_eq!((status, err_of(&v)), (200, ""));
    assert!(!p.root.join("v1").exists());
    assert_eq!(p.call("/VolumeDriver.Remove", r#"{"Name":"v1"}"#).0, 500);
    assert_eq!(
        p.call("/VolumeDriver.Unmount", r#"{"Name":"v1","ID":"x"}"#)
            .0,
        500
    );

    // Unknown paths are 404 (Docker reads that as "not implemented").
    assert_eq!(p.call("/VolumeDriver.Frobnicate", "{}").0, 404);
    assert_eq!(p.call("/NetworkDriver.GetCapabilities", "{}").0, 404);
}

#[test]
fn keep_alive_connection_serves_several_requests() {
    let dir = tempfile::tempdir().unwrap();
    let p = Plugin::start(dir.path(), &[]);
    let s = UnixStream::connect(&p.socket).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    for name in ["k1", "k2", "k3"] {
        let body = json!({"Name": name}).to_string();
        write!(
            w,
            "POST /VolumeDriver.Create HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut head = String::new();
        let mut len = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(v) = line.strip_prefix("Content-Length: ") {
                len = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"Err": ""})
        );
    }
    let (_, v) = p.call("/VolumeDriver.List", "{}");
    assert_eq!(v["Volumes"].as_array().unwrap().len(), 3);
}

#[test]
fn state_survives_restart_and_sigterm_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Plugin::start(dir.path(), &[]);
    assert_eq!(p.call("/VolumeDriver.Create", r#"{"Name":"keep"}"#).0, 200);
    assert_eq!(
        p.call("/VolumeDriver.Mount", r#"{"Name":"keep","ID":"c"}"#)
            .0,
        200
    );
    let status = p.sigterm();
    assert_eq!(status.code(), Some(0), "SIGTERM exit: {status}");
    assert!(!p.socket.exists(), "socket left behind after SIGTERM");
    let state: Value =
        serde_json::from_slice(&std::fs::read(p.root.join(".state.json")).unwrap()).unwrap();
    assert_eq!(state["Volumes"]["keep"]["Mounts"]["c"], 1);
    drop(p);

    let p = Plugin::start(dir.path(), &[]);
    let (_, v) = p.call("/VolumeDriver.Get", r#"{"Name":"keep"}"#);
    assert_eq!(v["Volume"]["Name"], "keep");
    // The mount reference survived the restart.
    assert_eq!(p.call("/VolumeDriver.Remove", r#"{"Name":"keep"}"#).0, 500);
}

#[test]
fn sigterm_during_listen_delay_exits_zero_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vol.sock");
    let mut child = Command::new(BIN)
        .arg("--socket")
        .arg(&socket)
        .arg("--root")
        .arg(dir.path().join("volumes"))
        .args(["--listen-delay-ms", "600000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The signal handler is installed before the root is created, so once the root exists a
    // SIGTERM must be handled (a default action would kill the process without an exit code).
    let state_dir = dir.path().join("volumes");
    while !state_dir.exists() {
        assert!(child.try_wait().unwrap().is_none(), "plugin exited early");
        std::thread::sleep(Duration::from_millis(5));
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(!socket.exists(), "plugin listened despite the delay");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(!out.contains("listening"), "{out}");
}

#[test]
fn listen_delay_then_serves() {
    let dir = tempfile::tempdir().unwrap();
    let p = Plugin::start(dir.path(), &["--listen-delay-ms", "50"]);
    assert_eq!(p.call("/Plugin.Activate", "").0, 200);
}

#[test]
fn exit_immediately_reports_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--socket")
        .arg(dir.path().join("vol.sock"))
        .args(["--exit-immediately", "3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("exiting immediately with code 3"),
        "{stderr}"
    );
    assert!(!dir.path().join("vol.sock").exists());
}

#[test]
fn unknown_argument_is_rejected() {
    let out = Command::new(BIN).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bogus"));
}

#[test]
fn config_json_matches_the_binary_defaults() {
    let raw = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/config.json")).unwrap();
    let c: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(c["entrypoint"], json!(["/volume-plugin"]));
    assert_eq!(c["interface"]["types"], json!(["docker.volumedriver/1.0"]));
    // The binary's default socket name and volume root.
    assert_eq!(c["interface"]["socket"], "vol.sock");
    assert_eq!(c["propagatedMount"], "/data");
    let env = c["env"].as_array().unwrap();
    let root = env.iter().find(|e| e["name"] == "VOLUME_ROOT").unwrap();
    assert_eq!(root["value"], "/data/volumes");
    assert!(root["value"].as_str().unwrap().starts_with("/data/"));
    let debug = env.iter().find(|e| e["name"] == "DEBUG").unwrap();
    assert_eq!(
        (debug["value"].clone(), debug["settable"].clone()),
        (json!("0"), json!(["value"]))
    );
    assert_eq!(c["args"]["value"], json!([]));
}

/// Waits for `child` to exit; the bound only turns a plugin that ignores SIGTERM into a failure
/// instead of a hung suite (it is not a timing assertion).
fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..6_000 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("process {} did not exit after SIGTERM", child.id());
}

/// Panics unless running as root with `unshare` available: the test must not pass silently.
fn require_root_and_unshare() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    assert_eq!(uid, "0", "this test needs root (new PID namespace)");
    let ok = Command::new("unshare")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "this test needs `unshare` from util-linux on PATH");
}

#[test]
#[ignore = "needs root and unshare (util-linux)"]
fn sigterm_exits_zero_as_pid_1() {
    require_root_and_unshare();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vol.sock");
    // The plugin is PID 1 of a new PID namespace, as in its container: without a handler the
    // kernel would drop SIGTERM and the plugin would keep running.
    let mut unshare = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", BIN, "--socket"])
        .arg(&socket)
        .arg("--root")
        .arg(dir.path().join("volumes"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let children = format!("/proc/{0}/task/{0}/children", unshare.id());
    let mut plugin_pid = String::new();
    for _ in 0..2_000 {
        if UnixStream::connect(&socket).is_ok() {
            plugin_pid = std::fs::read_to_string(&children)
                .unwrap()
                .trim()
                .to_string();
            break;
        }
        assert!(unshare.try_wait().unwrap().is_none(), "plugin exited early");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!plugin_pid.is_empty(), "plugin never listened");
    let status_file = std::fs::read_to_string(format!("/proc/{plugin_pid}/status")).unwrap();
    let nspid = status_file
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_string();
    assert_eq!(nspid, "1", "plugin is not PID 1 of its namespace");
    assert!(Command::new("kill")
        .args(["-TERM", &plugin_pid])
        .status()
        .unwrap()
        .success());
    // unshare --fork exits with its child's status.
    let status = wait_exit(&mut unshare);
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(!socket.exists());
}
