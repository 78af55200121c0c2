//! Sample Docker authorization plugin (`docker.authz/1.0`) for plugind: answers
//! `AuthZPlugin.AuthZReq` and `AuthZPlugin.AuthZRes` over HTTP/1.1 on a unix socket, std only
//! so it builds as a small static binary.
//!
//! Policy: every request is allowed except volume creation (`POST /volumes/create`, with or
//! without a `/v1.xx` prefix), which is denied with `DENY_MESSAGE`; every answer is allowed.
//! `HANG=1` makes it accept authorization calls and never answer (a plugin that hangs, for
//! deadline tests). Environment: `SOCKET` (file name under `/run/docker/plugins`, default
//! `authz.sock`). One line per decision goes to stdout. SIGTERM and SIGINT remove the socket
//! and exit 0.

#[path = "../../volume-plugin/src/http.rs"]
#[allow(dead_code)]
mod http;

use std::{
    io::BufReader,
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    process::exit,
};

use base64::Engine as _;
use serde_json::{json, Value};
use signal_hook::{
    consts::{SIGINT, SIGTERM},
    iterator::Signals,
};

/// Where Docker mounts the plugin's socket directory inside the plugin's rootfs.
const PLUGIN_SOCKET_DIR: &str = "/run/docker/plugins";

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

fn main() {
    let socket =
        Path::new(PLUGIN_SOCKET_DIR).join(env("SOCKET").unwrap_or_else(|| "authz.sock".into()));
    let hang = env("HANG").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let message = env("DENY_MESSAGE").unwrap_or_else(|| "volume creation is not allowed".into());
    let _ = std::fs::remove_file(&socket);
    let listener = match UnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("authz-plugin: cannot listen on {}: {e}", socket.display());
            exit(1)
        }
    };
    stop_on_signals(socket.clone());
    println!(
        "authz-plugin: listening on {} (hang: {hang})",
        socket.display()
    );
    for stream in listener.incoming().flatten() {
        let message = message.clone();
        std::thread::spawn(move || serve(stream, hang, &message));
    }
}

fn stop_on_signals(socket: PathBuf) {
    let mut signals = match Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("authz-plugin: cannot install signal handlers: {e}");
            exit(1)
        }
    };
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let _ = std::fs::remove_file(&socket);
            exit(0);
        }
    });
}

fn serve(stream: UnixStream, hang: bool, message: &str) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let req = match http::read_request(&mut reader) {
            Ok(r) => r,
            Err(http::ReadError::Bad(msg)) => {
                let body = json!({ "Err": msg }).to_string();
                let _ = http::write_response(&mut writer, 400, body.as_bytes(), true);
                return;
            }
            Err(_) => return,
        };
        let (status, answer) = answer(&req.path, &req.body, hang, message);
        let body = answer.to_string();
        if http::write_response(&mut writer, status, body.as_bytes(), req.close).is_err()
            || req.close
        {
            return;
        }
    }
}

/// The plugin's answer to one call: status and JSON body.
fn answer(path: &str, body: &[u8], hang: bool, message: &str) -> (u16, Value) {
    match path {
        "/Plugin.Activate" => (200, json!({ "Implements": ["authz"] })),
        "/AuthZPlugin.AuthZReq" | "/AuthZPlugin.AuthZRes" => {
            if hang {
                println!("authz-plugin: hanging on {path}");
                loop {
                    std::thread::park();
                }
            }
            let Ok(request) = serde_json::from_slice::<Value>(body) else {
                return (200, json!({ "Allow": false, "Err": "request is not JSON" }));
            };
            let method = request["RequestMethod"].as_str().unwrap_or_default();
            let uri = request["RequestUri"].as_str().unwrap_or_default();
            if path == "/AuthZPlugin.AuthZReq" && creates_volume(method, uri) {
                let name = request_volume_name(&request).unwrap_or_default();
                println!("authz-plugin: deny {method} {uri} (volume {name:?})");
                return (200, json!({ "Allow": false, "Msg": message }));
            }
            println!("authz-plugin: allow {path} {method} {uri}");
            (200, json!({ "Allow": true }))
        }
        _ => (404, json!({ "Err": format!("{path}: not implemented") })),
    }
}

/// `POST /volumes/create`, `POST /v1.51/volumes/create`, with or without a query.
fn creates_volume(method: &str, uri: &str) -> bool {
    if method != "POST" {
        return false;
    }
    let path = uri.split('?').next().unwrap_or(uri);
    let rest = match path.strip_prefix("/v") {
        Some(r) => match r.find('/') {
            Some(i) if r[..i].chars().all(|c| c.is_ascii_digit() || c == '.') => &r[i..],
            _ => path,
        },
        None => path,
    };
    rest.trim_end_matches('/') == "/volumes/create"
}

/// The `Name` of a volume create body, when the daemon sent the body (JSON, base64-encoded).
fn request_volume_name(request: &Value) -> Option<String> {
    let body = base64::engine::general_purpose::STANDARD
        .decode(request["RequestBody"].as_str()?)
        .ok()?;
    let body: Value = serde_json::from_slice(&body).ok()?;
    body["Name"].as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denies_volume_creation_only() {
        for uri in [
            "/volumes/create",
            "/v1.51/volumes/create",
            "/v1.24/volumes/create?x=1",
        ] {
            assert!(creates_volume("POST", uri), "{uri}");
        }
        for (m, uri) in [
            ("GET", "/volumes/create"),
            ("POST", "/volumes/prune"),
            ("POST", "/vx/volumes/create"),
            ("GET", "/v1.51/volumes"),
        ] {
            assert!(!creates_volume(m, uri), "{m} {uri}");
        }
        let body = base64::engine::general_purpose::STANDARD.encode(br#"{"Name":"v1"}"#);
        let req =
            json!({"RequestMethod":"POST","RequestUri":"/v1.51/volumes/create","RequestBody":body});
        let (status, answer) = answer(
            "/AuthZPlugin.AuthZReq",
            req.to_string().as_bytes(),
            false,
            "no",
        );
        assert_eq!(
            (status, answer),
            (200, json!({"Allow": false, "Msg": "no"}))
        );
        let (_, answer) = answer_of("/AuthZPlugin.AuthZRes", &req);
        assert_eq!(answer, json!({"Allow": true}));
        let get = json!({"RequestMethod":"GET","RequestUri":"/v1.51/volumes"});
        assert_eq!(
            answer_of("/AuthZPlugin.AuthZReq", &get).1,
            json!({"Allow": true})
        );
        assert_eq!(request_volume_name(&req).as_deref(), Some("v1"));
    }

    fn answer_of(path: &str, req: &Value) -> (u16, Value) {
        answer(path, req.to_string().as_bytes(), false, "no")
    }
}
