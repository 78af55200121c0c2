//! End-to-end: a daemon held to 256 descriptors (soft and hard, so it cannot raise them).
//! Clients opening more connections than fit get a 503 or a closed connection, never a hang;
//! plugins still start while the API is full, and nothing is left half-created for the next
//! enable. Its own test binary, because it points `PLUGIND_BIN` at a `prlimit` wrapper.

use std::{
    io::{Read, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    time::Duration,
};

use plugind_tests::{plugind_bin, sample_plugin_dir, Daemon};

const NOFILE: u64 = 256;

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI, prlimit and the packaged sample plugin"]
fn scarce_descriptors_leave_room_for_plugins() {
    assert!(
        std::path::Path::new("/usr/bin/prlimit").exists(),
        "needs prlimit (util-linux)"
    );
    let wrapper_dir = tempfile::tempdir().unwrap();
    let wrapper = wrapper_dir.path().join("plugind-scarce");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec /usr/bin/prlimit --nofile={NOFILE}:{NOFILE} -- {} \"$@\"\n",
            plugind_bin().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    // This binary holds only this test, so the variable reaches no other daemon.
    std::env::set_var("PLUGIND_BIN", &wrapper);
    let d = Daemon::start_with(false, &["--api-idle-timeout", "600"]);
    d.docker_ok(&[
        "plugin",
        "create",
        "scarce/vol",
        &sample_plugin_dir().to_string_lossy(),
    ]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid())).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(&format!(" {NOFILE} "))),
        "{limits}"
    );
    // The cap the daemon derives: (256 - 64 reserved) / 2 = 96 connections.
    let cap = 96;
    // Fill the API but one slot with idle connections.
    let held: Vec<UnixStream> = (0..cap - 1)
        .map(|_| UnixStream::connect(d.socket()).unwrap())
        .collect();
    // Twice as many clients again, all at once: one may get the free slot, every other one gets
    // a 503 or a closed connection.
    let extra: Vec<_> = (0..2 * cap)
        .map(|_| {
            let socket = d.socket();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&socket).ok()?;
                s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
                let _ = s.write_all(b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut answer = Vec::new();
                match s.read_to_end(&mut answer) {
                    Ok(_) => Some(String::from_utf8_lossy(&answer).into_owned()),
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
                    Err(e) => panic!("a client past the cap was left hanging: {e}"),
                }
            })
        })
        .collect();
    let mut rejected = 0;
    for t in extra {
        if let Some(answer) = t.join().unwrap() {
            if answer.starts_with("HTTP/1.1 200 ") {
                continue;
            }
            assert!(
                answer.is_empty() || answer.starts_with("HTTP/1.1 503 "),
                "{answer}"
            );
            if !answer.is_empty() {
                assert!(
                    answer.contains("too many API connections (limit 96)"),
                    "{answer}"
                );
                rejected += 1;
            }
        }
    }
    assert!(rejected > 0, "some clients past the cap were told why");
    // The last slot is free again once the daemon has seen the previous client's close
    // (asynchronously), so a 503 here is retried: it only means "not yet".
    let post = |path: &str| loop {
        match d.request("POST", path, None) {
            Some((503, _)) => std::thread::sleep(Duration::from_millis(10)),
            other => break other,
        }
    };
    // The last slot: the plugin starts although the API is full.
    let enable = |what: &str| {
        let r = post("/plugins/scarce/vol/enable?timeout=0");
        assert!(matches!(r, Some((200, _))), "{what}: {r:?}\n{}", d.log());
    };
    let disable = || {
        let r = post("/plugins/scarce/vol/disable");
        assert!(matches!(r, Some((200, _))), "disable: {r:?}\n{}", d.log());
    };
    enable("enable with the API full");
    let fds = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .count() as u64;
    assert!(fds < NOFILE, "{fds} descriptors open");
    disable();
    drop(held);
    // Afterwards nothing is left half-created: enable and disable work as before.
    for round in 0..2 {
        enable(&format!("enable after the shortage, round {round}"));
        disable();
    }
    assert!(!d.log().contains("already exists"), "{}", d.log());
}
