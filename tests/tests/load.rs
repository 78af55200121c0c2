//! End-to-end load on the real daemon: 200 concurrent API clients reading while a plugin is
//! enabled and disabled in a loop, plus 500 stalled half-requests. Well-formed requests never
//! fail, new clients are answered while the stalled ones are held, the stalled ones are closed
//! by the daemon's header deadline, and its descriptors and memory come back afterwards. Also:
//! deeply nested JSON on every JSON-body route is a 400 and the daemon stays up.

use std::{
    fs,
    io::{Read, Write},
    os::unix::net::UnixStream,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use plugind_tests::{http_over_unix, sample_plugin_dir, Daemon};

const READERS: usize = 200;
const STALLED: usize = 500;
const CYCLES: usize = 5;

fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Polls `done` until it holds; a generous bound turns a daemon that never recovers into a
/// failure instead of a hang.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn create_plugin(d: &Daemon, name: &str) {
    d.docker_ok(&[
        "plugin",
        "create",
        name,
        &sample_plugin_dir().to_string_lossy(),
    ]);
}

fn post_ok(d: &Daemon, path: &str) {
    let r = d.request("POST", path, None);
    assert!(
        matches!(r, Some((200, _))),
        "POST {path}: {r:?}\n{}",
        d.log()
    );
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn readers_and_stalled_clients_under_enable_disable() {
    let d = Daemon::start_with(
        false,
        &[
            "--api-header-timeout",
            "5",
            "--api-idle-timeout",
            "5",
            "--api-body-timeout",
            "5",
            "--api-max-connections",
            "1000",
        ],
    );
    create_plugin(&d, "load/vol");
    let pid = d.pid();
    let socket = d.socket();
    let routes = ["/plugins", "/plugins/load/vol/json", "/_ping", "/volumes"];
    // Warm up: one cycle and every route, so lazily made things exist before the baseline.
    post_ok(&d, "/plugins/load/vol/enable?timeout=0");
    post_ok(&d, "/plugins/load/vol/disable");
    for _ in 0..20 {
        for r in routes {
            assert_eq!(d.request("GET", r, None).map(|r| r.0), Some(200), "{r}");
        }
    }
    let mut last = fd_count(pid);
    eventually("descriptors settle before the baseline", || {
        std::thread::sleep(Duration::from_millis(500));
        let now = fd_count(pid);
        let settled = now == last;
        last = now;
        settled
    });
    let (fds_before, rss_before) = (fd_count(pid), rss_kib(pid));

    // 500 half-requests: a partial head, then nothing.
    let mut stalled: Vec<UnixStream> = (0..STALLED)
        .map(|i| {
            let mut s = UnixStream::connect(&socket).unwrap();
            write!(s, "GET /_ping HTTP/1.1\r\nHost: x\r\nX-Stalled-{i}: ").unwrap();
            s
        })
        .collect();
    eventually("the daemon holds every stalled connection", || {
        fd_count(pid) >= fds_before + STALLED
    });
    // While all of them are held, a new client is answered.
    assert_eq!(
        http_over_unix(&socket, "GET", "/_ping", None).map(|r| r.0),
        Some(200)
    );
    let held_when_answered = stalled
        .iter()
        .filter(|s| {
            s.set_nonblocking(true).unwrap();
            let mut b = [0u8; 1];
            let open =
                matches!((&**s).read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
            s.set_nonblocking(false).unwrap();
            open
        })
        .count();
    assert_eq!(held_when_answered, STALLED, "stalled clients still held");

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let readers: Vec<_> = (0..READERS)
        .map(|i| {
            let (stop, served, errors, socket) = (
                Arc::clone(&stop),
                Arc::clone(&served),
                Arc::clone(&errors),
                socket.clone(),
            );
            std::thread::spawn(move || {
                let mut n = i;
                // Every reader makes at least one full round, however fast the cycles are.
                while n < i + routes.len() || !stop.load(Ordering::Relaxed) {
                    let route = routes[n % routes.len()];
                    match http_over_unix(&socket, "GET", route, None) {
                        Some((200, _)) => {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        other => errors
                            .lock()
                            .unwrap()
                            .push(format!("GET {route}: {other:?}")),
                    }
                    n += 1;
                }
            })
        })
        .collect();
    let mut max_fds = 0;
    let mut max_rss = 0;
    let mut sample = || {
        max_fds = max_fds.max(fd_count(pid));
        max_rss = max_rss.max(rss_kib(pid));
    };
    for _ in 0..CYCLES {
        sample();
        post_ok(&d, "/plugins/load/vol/enable?timeout=0");
        sample();
        post_ok(&d, "/plugins/load/vol/disable");
    }
    // The stalled clients are closed by the daemon (the header deadline), without an answer.
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut rest = Vec::new();
        let closed = s.read_to_end(&mut rest);
        assert!(
            matches!(closed, Ok(0)),
            "stalled client not closed by the daemon: {closed:?} {rest:?}"
        );
    }
    sample();
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    sample();
    drop(stalled);
    let errors = errors.lock().unwrap().clone();
    let served = served.load(Ordering::Relaxed);
    assert!(
        errors.is_empty(),
        "{} failed requests: {:?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    assert!(served >= (READERS * routes.len()) as u64);

    // Descriptors come back to the baseline (small slack: a log file, a pooled connection), and
    // so does memory: the daemon gives the burst's heap back once the connections are gone.
    eventually("descriptors back to the baseline", || {
        fd_count(pid) <= fds_before + 4
    });
    eventually("resident memory back to the baseline", || {
        rss_kib(pid) <= rss_before + 4 * 1024
    });
    let (fds_after, rss_after) = (fd_count(pid), rss_kib(pid));
    eprintln!(
        "load: {served} requests served by {READERS} clients, {CYCLES} enable/disable cycles, \
         {STALLED} stalled; fds {fds_before} -> max {max_fds} -> {fds_after}; \
         RSS {rss_before} KiB -> max {max_rss} KiB -> {rss_after} KiB"
    );
    assert!(
        max_fds >= fds_before + STALLED,
        "the stalled clients were held"
    );
    assert_eq!(
        http_over_unix(&socket, "GET", "/_ping", None).map(|r| r.0),
        Some(200)
    );
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn deeply_nested_json_is_400_on_every_json_route() {
    let d = Daemon::start(false);
    create_plugin(&d, "deep/vol");
    let arrays = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(5_000), "}".repeat(5_000));
    let labels = format!(r#"{{"Name":"v","Labels":{objects}}}"#);
    let unknown = format!(r#"{{"Name":"v","Extra":{arrays}}}"#);
    for (path, body) in [
        ("/plugins/deep/vol/set", &arrays),
        ("/plugins/deep/vol/set", &objects),
        ("/plugins/nope/set", &arrays),
        ("/volumes/create", &arrays),
        ("/volumes/create", &labels),
    ] {
        let r = d.request("POST", path, Some(body));
        assert!(
            matches!(r, Some((400, _))),
            "POST {path} with {} bytes: {r:?}",
            body.len()
        );
    }
    // An unknown key is skipped whatever its depth, as Go does (serde_json skips iteratively):
    // the answer is the one without it.
    let plain = d.request("POST", "/volumes/create", Some(r#"{"Name":"v"}"#));
    assert_eq!(d.request("POST", "/volumes/create", Some(&unknown)), plain);
    let status = |body: &str| {
        d.request("POST", "/volumes/create", Some(body))
            .map(|r| r.0)
    };
    assert_eq!(status(&objects), status("{}"));
    let filter: String = format!(r#"{{"name":{arrays}}}"#)
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect();
    for route in ["/plugins", "/volumes", "/events"] {
        let r = d.request("GET", &format!("{route}?filters={filter}"), None);
        assert!(matches!(r, Some((400, _))), "GET {route}: {r:?}");
    }
    let r = d.request("POST", &format!("/volumes/prune?filters={filter}"), None);
    assert!(matches!(r, Some((400, _))), "prune: {r:?}");
    assert_eq!(d.request("GET", "/_ping", None).map(|r| r.0), Some(200));
    assert!(d.log().lines().all(|l| !l.contains("overflow")));
}
