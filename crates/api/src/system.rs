//! The system endpoints the clients need: `/_ping`, `/version`, `/info` and the `/events`
//! stream (docker-plugin-api.md §2).

use std::{
    convert::Infallible,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::{body::Frame, header, Response, StatusCode};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::{
    backend::EventMessage,
    error::HttpError,
    filters::{event_included, Filters},
    query::{event_time, rfc3339_nano, Query},
    server::{full, json, stopped, Body, State, API_VERSION, MIN_API_VERSION},
};

/// `GET`/`HEAD /_ping`.
pub(crate) fn ping(head: bool) -> Response<Body> {
    let body = if head {
        Bytes::new()
    } else {
        Bytes::from_static(b"OK")
    };
    let mut resp = full(StatusCode::OK, "text/plain; charset=utf-8", body);
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, header::HeaderValue::from_static("no-cache"));
    h.insert("Swarm", header::HeaderValue::from_static("inactive"));
    if head {
        h.insert(
            header::CONTENT_LENGTH,
            header::HeaderValue::from_static("0"),
        );
    }
    resp
}

pub(crate) fn now_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Go's `GOARCH` spelling of the build architecture.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// `GET /version` (moby's `types.Version`, keys in its order).
pub(crate) fn version(state: &State) -> Response<Body> {
    let kernel = read_trimmed("/proc/sys/kernel/osrelease");
    let v = &state.options.engine_version;
    json(
        StatusCode::OK,
        &json!({
            "Platform": {"Name": "plugind"},
            "Components": [{
                "Name": "Engine",
                "Version": v,
                "Details": {
                    "ApiVersion": API_VERSION,
                    "Arch": go_arch(),
                    "BuildTime": "",
                    "Experimental": "false",
                    "GitCommit": "",
                    "GoVersion": "",
                    "KernelVersion": kernel,
                    "MinAPIVersion": MIN_API_VERSION,
                    "Os": "linux",
                },
            }],
            "Version": v,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "",
            "GoVersion": "",
            "Os": "linux",
            "Arch": go_arch(),
            "KernelVersion": kernel,
        }),
    )
}

fn os_pretty_name() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| "Linux".to_owned())
}

fn mem_total() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// `GET /info`: the sparse `system.Info` that `docker info` renders, plus plugind's counts
/// under `PluginD`. Managed plugins are never listed under `Plugins`, as in Docker.
pub(crate) fn info(state: &State) -> Response<Body> {
    let b = state.backend.info();
    let ncpu = std::thread::available_parallelism().map_or(1, usize::from);
    json(
        StatusCode::OK,
        &json!({
            "ID": b.id,
            "Containers": 0,
            "ContainersRunning": 0,
            "ContainersPaused": 0,
            "ContainersStopped": 0,
            "Images": 0,
            "Driver": "",
            "Plugins": {"Volume": [], "Network": [], "Authorization": null, "Log": []},
            "MemoryLimit": false,
            "SwapLimit": false,
            "Debug": false,
            "SystemTime": rfc3339_nano(now_nanos()),
            "LoggingDriver": "",
            "CgroupDriver": "",
            "KernelVersion": read_trimmed("/proc/sys/kernel/osrelease"),
            "OperatingSystem": os_pretty_name(),
            "OSType": "linux",
            "Architecture": std::env::consts::ARCH,
            "NCPU": ncpu,
            "MemTotal": mem_total(),
            "DockerRootDir": b.root_dir,
            "Name": read_trimmed("/proc/sys/kernel/hostname"),
            "ExperimentalBuild": false,
            "ServerVersion": state.options.engine_version,
            "Runtimes": b.runtimes,
            "DefaultRuntime": b.default_runtime,
            "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
                      "ControlAvailable": false, "Error": "", "RemoteManagers": null},
            "LiveRestoreEnabled": b.live_restore,
            "Warnings": quarantine_warnings(&b.quarantined),
            "PluginD": {"Plugins": b.plugins, "PluginsEnabled": b.plugins_enabled,
                        "Quarantined": b.quarantined, "PluginSet": b.plugin_set},
        }),
    )
}

/// `Warnings` of `/info`: one line per quarantined plugin directory (`null` when none, as
/// Docker sends it).
fn quarantine_warnings(quarantined: &[std::path::PathBuf]) -> serde_json::Value {
    if quarantined.is_empty() {
        return serde_json::Value::Null;
    }
    quarantined
        .iter()
        .map(|p| {
            serde_json::Value::String(format!(
                "WARNING: plugin directory quarantined (unreadable record): {}",
                p.display()
            ))
        })
        .collect()
}

fn encode_event(ev: &EventMessage) -> Bytes {
    let mut line = serde_json::to_vec(ev).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// `GET /events` (moby 28 `getEvents`): backlog selected by `since`/`until`, then live events
/// until `until` passes, the client goes away or the server stops.
pub(crate) async fn events(state: &State, q: &Query) -> Result<Response<Body>, HttpError> {
    // moby returns these parse errors untyped: 500.
    let since = event_time(q.get("since")).map_err(HttpError::internal)?;
    let until = event_time(q.get("until")).map_err(HttpError::internal)?;
    let now = now_nanos();
    let mut only_past = false;
    let mut deadline = None;
    if let Some(u) = until {
        if since.is_some_and(|s| u < s) {
            return Err(HttpError::bad_request(format!(
                "`since` time ({}) cannot be after `until` time ({})",
                q.get("since"),
                q.get("until")
            )));
        }
        only_past = u < now;
        if !only_past {
            let wait = u64::try_from(u - now).unwrap_or(u64::MAX);
            deadline = Some(tokio::time::Instant::now() + Duration::from_nanos(wait));
        }
    }
    let filters = Filters::from_json(q.get("filters"))?;
    // moby sends no backlog unless `since` or `until` was given.
    let wants_backlog = since.is_some() || until.is_some();
    let sub = state
        .backend
        .subscribe_events(if wants_backlog {
            Some(i64::try_from(since.unwrap_or(0)).unwrap_or(i64::MAX))
        } else {
            // Only live events: the newest instant, so no history is read.
            Some(i64::MAX)
        })
        .await;
    let backlog: Vec<Bytes> = if !wants_backlog {
        Vec::new()
    } else {
        let from = since.unwrap_or(0);
        sub.backlog
            .iter()
            .filter(|e| i128::from(e.time_nano) >= from)
            .filter(|e| until.is_none_or(|u| i128::from(e.time_nano) <= u))
            .filter(|e| event_included(&filters, e))
            .map(encode_event)
            .collect()
    };
    let backlog = futures::stream::iter(backlog);
    let stream = if only_past {
        backlog.boxed()
    } else {
        let stop = state.stop.clone();
        let live = futures::stream::unfold(
            (sub.live, stop, filters),
            move |(mut rx, mut stop, filters)| async move {
                loop {
                    let timeout = async {
                        match deadline {
                            Some(d) => tokio::time::sleep_until(d).await,
                            None => std::future::pending().await,
                        }
                    };
                    let next = tokio::select! {
                        r = rx.next() => match r {
                            Some(Ok(ev)) if event_included(&filters, &ev) => Some(encode_event(&ev)),
                            Some(Ok(_)) => None,
                            Some(Err(RecvError::Lagged(n))) => {
                                tracing::warn!(missed = n, "events client too slow; events dropped");
                                None
                            }
                            Some(Err(RecvError::Closed)) | None => return None,
                        },
                        () = timeout => return None,
                        () = stopped(&mut stop) => return None,
                    };
                    if let Some(line) = next {
                        return Some((line, (rx, stop, filters)));
                    }
                }
            },
        );
        backlog.chain(live).boxed()
    };
    let body = StreamBody::new(stream.map(|b| Ok::<_, Infallible>(Frame::data(b))));
    let mut resp = Response::new(body.boxed_unsync());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
