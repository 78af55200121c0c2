//! One published socket: an HTTP/1.1 server on a unix socket that answers `Plugin.Activate`
//! itself and forwards `VolumeDriver.*` calls to the managed plugin through
//! [`plugind_manager::client::PluginClient`] (deadlines, answer limits), rewriting the paths of
//! the answers to host paths ([`super::scope`]) and counting consumers' mounts as references.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, header, service::service_fn, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use plugind_manager::{client::PluginCallError, Manager, ManagerError};
use plugind_types::PluginId;
use serde_json::{json, Value};
use tokio::{net::UnixListener, sync::Semaphore, task::JoinSet};

use super::scope::{host_path, PluginDirs, ScopeError};
use crate::driver::{VolumeConfig, CAPABILITY};

/// The most bytes of a consumer's request body (real ones are a name, an id and options).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Connections served at once on one published socket; more are closed at once.
pub const MAX_CONNECTIONS: usize = 128;

/// Time a consumer has to send a request head, and to send its body.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest volume name or consumer id kept in a reference holder.
const MAX_HOLDER_PART: usize = 1024;

/// Prefix of the references consumers' mounts hold on a plugin: `consumer:["<volume>","<id>"]`
/// (a JSON pair, so no volume name or id can be mistaken for another).
pub const CONSUMER_HOLDER_PREFIX: &str = "consumer:";

/// The media type of plugin answers (what Docker's plugin helpers answer).
const MEDIA_TYPE: &str = "application/vnd.docker.plugins.v1+json";

/// What one published socket serves.
#[derive(Debug)]
pub(super) struct Endpoint {
    pub manager: Manager,
    pub id: PluginId,
    pub name: String,
    pub dirs: PluginDirs,
    pub calls: VolumeConfig,
}

/// Serves `listener` until the task is aborted (which ends every connection; requests already
/// running finish, bounded by their deadlines).
pub(super) async fn serve(listener: UnixListener, endpoint: Arc<Endpoint>) {
    let mut connections = JoinSet::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(
                            plugin = %endpoint.name,
                            error = %e,
                            "published socket: accept failed"
                        );
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(
                        plugin = %endpoint.name,
                        "published socket: too many connections"
                    );
                    continue;
                };
                let endpoint = endpoint.clone();
                // Held by the connection and by each of its requests still running.
                let slot = Arc::new(slot);
                connections.spawn(async move {
                    let service = service_fn(move |req| {
                        let endpoint = endpoint.clone();
                        let slot = slot.clone();
                        // Each request runs to its end in its own task, even when the consumer
                        // goes away: a Mount is never left with the plugin's mount done and
                        // the reference not (or the other way round).
                        let request = tokio::spawn(async move {
                            let _slot = slot;
                            endpoint.handle(req).await
                        });
                        async move {
                            Ok::<_, Infallible>(request.await.unwrap_or_else(|e| {
                                let body = json!({ "Err": format!("request failed: {e}") });
                                let mut response = Response::new(Full::new(Bytes::from(
                                    body.to_string(),
                                )));
                                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                                response
                            }))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(REQUEST_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// An answer the consumer gets: a status and a JSON body.
#[derive(Debug)]
struct Answer(StatusCode, Value);

impl Answer {
    fn error(status: StatusCode, text: impl Into<String>) -> Answer {
        Answer(status, json!({ "Err": text.into() }))
    }
}

impl Endpoint {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let Answer(status, body) = self.answer(req).await;
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, MEDIA_TYPE)
            .body(Full::new(Bytes::from(bytes)))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    }

    async fn answer(&self, req: Request<Incoming>) -> Answer {
        if req.method() != Method::POST {
            return Answer::error(StatusCode::METHOD_NOT_ALLOWED, "only POST is served");
        }
        let method = req.uri().path().trim_start_matches('/').to_owned();
        let body = match read_body(req.into_body()).await {
            Ok(body) => body,
            Err(text) => return Answer::error(StatusCode::BAD_REQUEST, text),
        };
        match method.as_str() {
            // Managed plugins need not implement Activate; consumers refuse a socket without it.
            "Plugin.Activate" => Answer(StatusCode::OK, json!({ "Implements": ["VolumeDriver"] })),
            "VolumeDriver.Create"
            | "VolumeDriver.Remove"
            | "VolumeDriver.Mount"
            | "VolumeDriver.Unmount"
            | "VolumeDriver.Path"
            | "VolumeDriver.Get"
            | "VolumeDriver.List"
            | "VolumeDriver.Capabilities" => {
                let request = if body.iter().all(u8::is_ascii_whitespace) {
                    None
                } else {
                    match serde_json::from_slice::<Value>(&body) {
                        Ok(v) => Some(v),
                        Err(e) => {
                            return Answer::error(
                                StatusCode::BAD_REQUEST,
                                format!("{method}: invalid JSON request: {e}"),
                            )
                        }
                    }
                };
                match self.forward(&method, request).await {
                    Ok(answer) => Answer(StatusCode::OK, answer),
                    Err(answer) => answer,
                }
            }
            _ => Answer::error(
                StatusCode::NOT_FOUND,
                format!("{method}: not a volume plugin method"),
            ),
        }
    }

    fn deadline(&self, method: &str) -> Duration {
        match method {
            "VolumeDriver.Create" => self.calls.create_timeout,
            "VolumeDriver.Mount" => self.calls.mount_timeout,
            _ => self.calls.call_timeout,
        }
    }

    fn not_ready(&self, e: &ManagerError) -> Answer {
        Answer::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("volume plugin {} is not available: {e}", self.name),
        )
    }

    fn call_failed(&self, method: &str, e: PluginCallError) -> Answer {
        let text = match e {
            // The plugin's own text, as a consumer talking to the plugin would get it.
            PluginCallError::Remote { message, .. } => message
                .strip_prefix(&format!("{method}: "))
                .map(str::to_owned)
                .unwrap_or(message),
            PluginCallError::NotImplemented { .. } => {
                return Answer::error(StatusCode::NOT_FOUND, e.to_string())
            }
            other => other.to_string(),
        };
        Answer::error(StatusCode::INTERNAL_SERVER_ERROR, text)
    }

    /// A consumer's call to the plugin, counted in the volume-driver metrics.
    async fn timed<T, E>(
        &self,
        method: &str,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let began = std::time::Instant::now();
        let answer = call.await;
        plugind_manager::metrics::Metrics::global().record_driver_call(
            &self.name,
            method,
            began.elapsed(),
            answer.is_ok(),
        );
        answer
    }

    async fn forward(&self, method: &str, request: Option<Value>) -> Result<Value, Answer> {
        let timeout = self.deadline(method);
        match method {
            "VolumeDriver.Mount" => return self.mount(request, timeout).await,
            "VolumeDriver.Unmount" => return self.unmount(request, timeout).await,
            _ => {}
        }
        let handle = self
            .manager
            .get_enabled(self.id.as_str(), CAPABILITY)
            .map_err(|e| self.not_ready(&e))?;
        let answer = self
            .timed(
                method,
                handle.client.call(method, request.as_ref(), timeout),
            )
            .await
            .map_err(|e| self.call_failed(method, e))?;
        if method == "VolumeDriver.Remove" {
            self.release_volume(request.as_ref()).await;
        }
        self.rewrite(method, answer).await
    }

    /// Releases one reference of `holder`; a failure is logged (the reference stays, and
    /// `disable -f` still overrides it).
    async fn release(&self, holder: &str) {
        if let Err(e) = self.manager.release(self.id.as_str(), holder).await {
            tracing::warn!(
                plugin = %self.name,
                holder,
                error = %e,
                "cannot release a consumer reference"
            );
        }
    }

    /// After a volume is removed no consumer can have it mounted: its references go too (Podman
    /// never unmounts volumes of `--rootfs` containers, volume-consumers.md gotcha 4, so they
    /// would otherwise keep the plugin "in use" for ever).
    async fn release_volume(&self, request: Option<&Value>) {
        let Some(volume) = request.and_then(|r| r.get("Name")).and_then(Value::as_str) else {
            return;
        };
        let Ok(view) = self.manager.inspect(self.id.as_str()) else {
            return;
        };
        for (holder, count) in &view.record.state.references {
            if holder_volume(holder).as_deref() != Some(volume) {
                continue;
            }
            for _ in 0..*count {
                self.release(holder).await;
            }
        }
    }

    /// Mount: the consumer's reference first (so a disable cannot slip in between), then the
    /// plugin's mount, then the path; any failure undoes what was done.
    async fn mount(&self, request: Option<Value>, timeout: Duration) -> Result<Value, Answer> {
        let method = "VolumeDriver.Mount";
        let holder = holder(request.as_ref())?;
        let handle = self
            .manager
            .acquire(self.id.as_str(), CAPABILITY, &holder)
            .await
            .map_err(|e| self.not_ready(&e))?;
        let release = || self.release(&holder);
        let answer = match self
            .timed(
                method,
                handle.client.call(method, request.as_ref(), timeout),
            )
            .await
        {
            Ok(answer) => answer,
            Err(e) => {
                release().await;
                return Err(self.call_failed(method, e));
            }
        };
        match self.rewrite(method, answer).await {
            Ok(answer) => Ok(answer),
            Err(refused) => {
                let undo = handle
                    .client
                    .call(
                        "VolumeDriver.Unmount",
                        request.as_ref(),
                        self.calls.call_timeout,
                    )
                    .await;
                if let Err(e) = undo {
                    tracing::warn!(plugin = %self.name, error = %e, "cannot undo a refused mount");
                }
                release().await;
                Err(refused)
            }
        }
    }

    /// Unmount: the reference goes once the plugin unmounted.
    async fn unmount(&self, request: Option<Value>, timeout: Duration) -> Result<Value, Answer> {
        let method = "VolumeDriver.Unmount";
        let holder = holder(request.as_ref())?;
        let handle = self
            .manager
            .get_enabled(self.id.as_str(), CAPABILITY)
            .map_err(|e| self.not_ready(&e))?;
        let answer = self
            .timed(
                method,
                handle.client.call(method, request.as_ref(), timeout),
            )
            .await
            .map_err(|e| self.call_failed(method, e))?;
        self.release(&holder).await;
        Ok(answer)
    }

    /// Rewrites every mountpoint of an answer to its host path (blocking work off the async
    /// workers); a path that leads out of the plugin's directories refuses the whole answer.
    async fn rewrite(&self, method: &str, mut answer: Value) -> Result<Value, Answer> {
        let dirs = self.dirs.clone();
        let owned = method.to_owned();
        let result = tokio::task::spawn_blocking(move || {
            rewrite_answer(&owned, &mut answer, &dirs).map(|()| answer)
        })
        .await;
        match result {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                tracing::warn!(
                    plugin = %self.name,
                    method,
                    error = %e,
                    "refused a plugin's answer"
                );
                Err(Answer::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("volume plugin {}: {method}: {e}", self.name),
                ))
            }
            Err(e) => Err(Answer::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("volume plugin {}: {method}: {e}", self.name),
            )),
        }
    }
}

/// The reference holder of a Mount/Unmount request: `consumer:<Name>:<ID>`.
fn holder(request: Option<&Value>) -> Result<String, Answer> {
    let field = |key: &str| request.and_then(|r| r.get(key)).and_then(Value::as_str);
    let name = field("Name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Answer::error(StatusCode::BAD_REQUEST, "request names no volume (Name)"))?;
    let id = field("ID").unwrap_or("");
    if name.len() > MAX_HOLDER_PART || id.len() > MAX_HOLDER_PART {
        return Err(Answer::error(
            StatusCode::BAD_REQUEST,
            "volume name or ID too long",
        ));
    }
    Ok(holder_of(name, id))
}

fn holder_of(volume: &str, id: &str) -> String {
    format!("{CONSUMER_HOLDER_PREFIX}{}", json!([volume, id]))
}

/// The volume a consumer holder names, if `holder` is one.
fn holder_volume(holder: &str) -> Option<String> {
    let pair: (String, String) =
        serde_json::from_str(holder.strip_prefix(CONSUMER_HOLDER_PREFIX)?).ok()?;
    Some(pair.0)
}

/// The mountpoints of one answer, rewritten in place: `Mountpoint` of Mount and Path,
/// `Volume.Mountpoint` of Get, `Volumes[].Mountpoint` of List. Empty ones stay empty.
pub fn rewrite_answer(
    method: &str,
    answer: &mut Value,
    dirs: &PluginDirs,
) -> Result<(), ScopeError> {
    let fix = |slot: Option<&mut Value>| -> Result<(), ScopeError> {
        if let Some(Value::String(path)) = slot {
            if !path.is_empty() {
                *path = host_path(dirs, path)?.to_string_lossy().into_owned();
            }
        }
        Ok(())
    };
    match method {
        "VolumeDriver.Mount" | "VolumeDriver.Path" => fix(answer.get_mut("Mountpoint")),
        "VolumeDriver.Get" => fix(answer
            .get_mut("Volume")
            .and_then(|v| v.get_mut("Mountpoint"))),
        "VolumeDriver.List" => {
            if let Some(Value::Array(volumes)) = answer.get_mut("Volumes") {
                for volume in volumes {
                    fix(volume.get_mut("Mountpoint"))?;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Reads a request body: at most [`MAX_REQUEST_BYTES`], within [`REQUEST_TIMEOUT`].
async fn read_body(body: Incoming) -> Result<Bytes, String> {
    let limited = Limited::new(body, MAX_REQUEST_BYTES);
    match tokio::time::timeout(REQUEST_TIMEOUT, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) => Err(format!("cannot read the request: {e}")),
        Err(_) => Err(format!("request body not sent within {REQUEST_TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answered_mountpoint_is_rewritten_and_empty_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = PluginDirs {
            rootfs: tmp.path().join("rootfs"),
            propagated_mount: tmp.path().join("pm"),
            propagated_in_plugin: "/data".into(),
        };
        std::fs::create_dir_all(&dirs.rootfs).unwrap();
        std::fs::create_dir_all(&dirs.propagated_mount).unwrap();
        let pm = dirs.propagated_mount.canonicalize().unwrap();
        let rootfs = dirs.rootfs.canonicalize().unwrap();
        let p = |s: &Path| s.to_string_lossy().into_owned();
        use std::path::Path;

        let mut mount = json!({"Mountpoint": "/data/v1", "Err": ""});
        rewrite_answer("VolumeDriver.Mount", &mut mount, &dirs).unwrap();
        assert_eq!(mount["Mountpoint"], p(&pm.join("v1")));

        let mut path = json!({"Mountpoint": "/other/v1"});
        rewrite_answer("VolumeDriver.Path", &mut path, &dirs).unwrap();
        assert_eq!(path["Mountpoint"], p(&rootfs.join("other/v1")));

        let mut get = json!({"Volume": {"Name": "v1", "Mountpoint": "/data/v1"}});
        rewrite_answer("VolumeDriver.Get", &mut get, &dirs).unwrap();
        assert_eq!(get["Volume"]["Mountpoint"], p(&pm.join("v1")));

        let mut list = json!({"Volumes": [
            {"Name": "a", "Mountpoint": "/data/a"},
            {"Name": "b", "Mountpoint": ""},
            {"Name": "c"}
        ]});
        rewrite_answer("VolumeDriver.List", &mut list, &dirs).unwrap();
        assert_eq!(list["Volumes"][0]["Mountpoint"], p(&pm.join("a")));
        assert_eq!(list["Volumes"][1]["Mountpoint"], "");
        assert!(list["Volumes"][2].get("Mountpoint").is_none());

        // One escaping path refuses the whole answer.
        std::os::unix::fs::symlink("/etc", dirs.propagated_mount.join("evil")).unwrap();
        let mut bad = json!({"Volumes": [
            {"Name": "a", "Mountpoint": "/data/a"},
            {"Name": "e", "Mountpoint": "/data/evil"}
        ]});
        assert!(matches!(
            rewrite_answer("VolumeDriver.List", &mut bad, &dirs),
            Err(ScopeError::Escapes { .. })
        ));
        // Other answers are left alone.
        let mut caps = json!({"Capabilities": {"Scope": "local"}});
        rewrite_answer("VolumeDriver.Capabilities", &mut caps, &dirs).unwrap();
        assert_eq!(caps, json!({"Capabilities": {"Scope": "local"}}));
    }

    #[test]
    fn mount_holders_name_volume_and_consumer() {
        assert_eq!(
            holder(Some(&json!({"Name": "v1", "ID": "abc"}))).ok(),
            Some(r#"consumer:["v1","abc"]"#.to_owned())
        );
        assert_eq!(
            holder(Some(&json!({"Name": "v1"}))).ok(),
            Some(r#"consumer:["v1",""]"#.to_owned())
        );
        // Names with the separator cannot be confused with other volumes.
        let tricky = holder(Some(&json!({"Name": "a:b", "ID": "c"}))).unwrap();
        assert_eq!(holder_volume(&tricky).as_deref(), Some("a:b"));
        assert_eq!(holder_volume("volume:a"), None);
        assert_eq!(holder_volume(r#"consumer:["a"]"#), None);
        assert!(holder(Some(&json!({"ID": "abc"}))).is_err());
        assert!(holder(None).is_err());
        assert!(holder(Some(&json!({"Name": "v".repeat(2000)}))).is_err());
    }
}
