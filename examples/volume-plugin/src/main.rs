//! Sample Docker volume plugin (`docker.volumedriver/1.0`) for plugind: serves the plugin
//! protocol (HTTP/1.1 over a unix socket) with volumes as directories under a root, std only so it
//! builds as a small static binary.
//!
//! Usage: `volume-plugin [--root DIR] [--socket PATH] [--listen-delay-ms N]
//! [--exit-immediately CODE]`. Environment: `SOCKET` (socket file name under
//! `/run/docker/plugins`, default `vol.sock`), `VOLUME_ROOT` (default `/data/volumes`), `DEBUG=1`
//! (request and response bodies on stderr). One line per request goes to stdout. SIGTERM and
//! SIGINT remove the socket and exit 0: as PID 1 of its container the plugin would otherwise
//! ignore them.

mod driver;
mod http;

use std::io::{BufReader, ErrorKind};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::exit;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::json;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use driver::Driver;

/// Where Docker mounts the plugin's socket directory inside the plugin's rootfs.
const PLUGIN_SOCKET_DIR: &str = "/run/docker/plugins";

#[derive(Debug)]
struct Options {
    socket: PathBuf,
    root: PathBuf,
    listen_delay: Duration,
    exit_immediately: Option<i32>,
    debug: bool,
}

fn usage_error(msg: &str) -> ! {
    eprintln!("volume-plugin: {msg}");
    eprintln!(
        "usage: volume-plugin [--root DIR] [--socket PATH] [--listen-delay-ms N] [--exit-immediately CODE]"
    );
    exit(2)
}

fn parse_options() -> Options {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut opts = Options {
        socket: Path::new(PLUGIN_SOCKET_DIR)
            .join(env("SOCKET").unwrap_or_else(|| "vol.sock".into())),
        root: PathBuf::from(env("VOLUME_ROOT").unwrap_or_else(|| "/data/volumes".into())),
        listen_delay: Duration::ZERO,
        exit_immediately: None,
        debug: env("DEBUG").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true")),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .unwrap_or_else(|| usage_error(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--root" => opts.root = PathBuf::from(value()),
            "--socket" => opts.socket = PathBuf::from(value()),
            "--listen-delay-ms" => {
                let v = value();
                let ms = v
                    .parse::<u64>()
                    .unwrap_or_else(|_| usage_error(&format!("bad --listen-delay-ms {v:?}")));
                opts.listen_delay = Duration::from_millis(ms);
            }
            "--exit-immediately" => {
                let v = value();
                let code = v
                    .parse::<i32>()
                    .unwrap_or_else(|_| usage_error(&format!("bad --exit-immediately {v:?}")));
                opts.exit_immediately = Some(code);
            }
            "-h" | "--help" => {
                println!("volume-plugin: sample Docker volume plugin; see the source header");
                exit(0)
            }
            other => usage_error(&format!("unknown argument {other:?}")),
        }
    }
    // Mountpoints are reported as absolute paths, so the root must be one.
    if opts.root.is_relative() {
        match std::env::current_dir() {
            Ok(cwd) => opts.root = cwd.join(&opts.root),
            Err(e) => usage_error(&format!("cannot resolve relative root: {e}")),
        }
    }
    opts
}

fn lock(d: &Mutex<Driver>) -> MutexGuard<'_, Driver> {
    d.lock().unwrap_or_else(|p| p.into_inner())
}

fn main() {
    let opts = parse_options();
    if let Some(code) = opts.exit_immediately {
        eprintln!("volume-plugin: exiting immediately with code {code} (--exit-immediately)");
        exit(code);
    }

    // Installed first (signals are buffered until the thread below reads them), so a plugin
    // stopped while starting or during the listen delay still exits 0 at once.
    let mut signals = match Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("volume-plugin: install signal handlers: {e}");
            exit(1)
        }
    };
    let driver = match Driver::open(&opts.root) {
        Ok(d) => Arc::new(Mutex::new(d)),
        Err(e) => {
            eprintln!(
                "volume-plugin: open volume root {}: {e}",
                opts.root.display()
            );
            exit(1)
        }
    };
    {
        let (driver, socket) = (Arc::clone(&driver), opts.socket.clone());
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                // Holding the lock means no state write is half done when we exit.
                let _guard = lock(&driver);
                let _ = std::fs::remove_file(&socket);
                println!("volume-plugin: signal {sig}, exiting");
                exit(0);
            }
        });
    }

    if !opts.listen_delay.is_zero() {
        std::thread::sleep(opts.listen_delay);
    }
    if let Some(dir) = opts.socket.parent() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("volume-plugin: create {}: {e}", dir.display());
            exit(1);
        }
    }
    // A stale socket from a previous run would make bind fail with EADDRINUSE.
    match std::fs::remove_file(&opts.socket) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            eprintln!("volume-plugin: remove stale {}: {e}", opts.socket.display());
            exit(1);
        }
    }
    let listener = match UnixListener::bind(&opts.socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("volume-plugin: listen on {}: {e}", opts.socket.display());
            exit(1)
        }
    };
    println!(
        "volume-plugin: listening on {} (root {}, {} volumes)",
        opts.socket.display(),
        opts.root.display(),
        lock(&driver).volume_count()
    );

    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let driver = Arc::clone(&driver);
                let debug = opts.debug;
                std::thread::spawn(move || serve(stream, &driver, debug));
            }
            Err(e) => eprintln!("volume-plugin: accept: {e}"),
        }
    }
}

/// Serves requests on one connection until the client closes it or asks to.
fn serve(stream: UnixStream, driver: &Mutex<Driver>, debug: bool) {
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("volume-plugin: clone connection: {e}");
            return;
        }
    };
    let mut reader = BufReader::new(stream);
    loop {
        let req = match http::read_request(&mut reader) {
            Ok(r) => r,
            Err(http::ReadError::Eof) => return,
            Err(http::ReadError::Io(e)) => {
                if debug {
                    eprintln!("volume-plugin: read request: {e}");
                }
                return;
            }
            Err(http::ReadError::Bad(msg)) => {
                println!("volume-plugin: bad request: {msg}");
                let body = json!({ "Err": msg }).to_string();
                let _ = http::write_response(&mut writer, 400, body.as_bytes(), true);
                return;
            }
        };
        if debug {
            eprintln!(
                "volume-plugin: > {} {} {}",
                req.method,
                req.path,
                String::from_utf8_lossy(&req.body).trim_end()
            );
        }
        let (status, body) = route(&req, driver);
        let body = body.to_string();
        let err = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("Err").and_then(|e| e.as_str()).map(str::to_string))
            .filter(|e| !e.is_empty());
        match err {
            Some(e) => println!("{} {} {status} err={e:?}", req.method, req.path),
            None => println!("{} {} {status}", req.method, req.path),
        }
        if debug {
            eprintln!("volume-plugin: < {status} {body}");
        }
        if http::write_response(&mut writer, status, body.as_bytes(), req.close).is_err()
            || req.close
        {
            return;
        }
    }
}

fn route(req: &http::Request, driver: &Mutex<Driver>) -> driver::Reply {
    if req.method != "POST" {
        return (
            405,
            json!({ "Err": format!("method {} not allowed", req.method) }),
        );
    }
    if req.path == "/Plugin.Activate" {
        return (200, json!({ "Implements": ["VolumeDriver"] }));
    }
    match req.path.strip_prefix("/VolumeDriver.") {
        Some(method) => lock(driver).handle(method, &req.body),
        None => (
            404,
            json!({ "Err": format!("not implemented: {}", req.path) }),
        ),
    }
}
