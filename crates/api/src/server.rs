//! The HTTP/1.1 server on a unix socket: binding, the accept loop, graceful shutdown, routing
//! (with and without `/v1.xx` prefixes), API version checks and the headers Docker sets on every
//! routed response.

use std::{
    convert::Infallible, future::Future, os::unix::fs::FileTypeExt, path::Path, sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};
use hyper::body::Body as _;
use hyper::{
    body::Incoming, header, server::conn::http1, service::service_fn, Method, Request, Response,
    StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use plugind_manager::metrics::Metrics;
use plugind_sys::socket::SocketOwner;
use serde::Serialize;
use tokio::{
    net::UnixListener,
    sync::{watch, OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
    time::Instant,
};

use crate::{
    authz,
    backend::PluginBackend,
    body::{self, RequestBody},
    connection::{Activity, TrackedBody, TrackedIo},
    error::HttpError,
    plugins,
    query::Query,
    remote, system, volumes, ApiError,
};

/// The newest API version served; unprefixed requests are treated as this version.
pub const API_VERSION: &str = "1.51";
/// The oldest API version accepted (moby 28's minimum).
pub const MIN_API_VERSION: &str = "1.24";
/// Default limit of a `POST /plugins/create` body (4 GiB).
pub const DEFAULT_CREATE_BODY_LIMIT: u64 = 4 << 30;
/// Default limit of a JSON request body (1 MiB).
pub const DEFAULT_JSON_BODY_LIMIT: u64 = 1 << 20;
/// Default time a client has to send a request's head once it started sending it.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time an idle keep-alive connection stays open. Longer than the 90 s Go's and the
/// docker CLI's clients keep idle connections, so the client closes first.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default time a request body may send nothing (or a response may not be read) before the
/// connection is cut: a deadline per read, so long uploads that keep moving are never cut.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Default cap of concurrent API connections (lowered to fit the descriptor limit).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Connections past the cap that may wait at once for their 503 answer; past this they are
/// closed at once, so a flood costs no more descriptors than this.
const MAX_REJECTING: usize = 64;

/// Settings of the API server.
#[derive(Clone)]
pub struct ServerOptions {
    /// Reported as the engine version (`/version`, the `Server` header).
    pub engine_version: String,
    /// Largest accepted JSON body (`set`), in bytes; larger ones get 413.
    pub json_body_limit: u64,
    /// Largest accepted create tar, in bytes; larger ones get 413 and create nothing.
    pub create_body_limit: u64,
    /// The volume service behind `/volumes` (a [`crate::VolumeBackend`]: the real
    /// `plugind_volumes::VolumeService` or a fake); `None` answers those routes 501.
    pub volumes: Option<Arc<dyn crate::VolumeBackend>>,
    /// Time to receive a request's head once its first byte arrived.
    pub header_timeout: Duration,
    /// Time an idle keep-alive connection stays open.
    pub idle_timeout: Duration,
    /// Time a request body may make no progress, and a response write may make none.
    pub body_timeout: Duration,
    /// Concurrent connections served; more are answered 503 and closed.
    pub max_connections: usize,
    /// The authorization plugin chain every routed request goes through (`None`: none).
    pub authz: Option<Arc<dyn crate::AuthzChain>>,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("engine_version", &self.engine_version)
            .field("json_body_limit", &self.json_body_limit)
            .field("create_body_limit", &self.create_body_limit)
            .field("header_timeout", &self.header_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("max_connections", &self.max_connections)
            .field("authz", &self.authz.as_ref().map(|a| a.plugins()))
            .finish_non_exhaustive()
    }
}

impl ServerOptions {
    /// Options with the default body limits.
    pub fn new(engine_version: &str) -> Self {
        ServerOptions {
            engine_version: engine_version.to_owned(),
            json_body_limit: DEFAULT_JSON_BODY_LIMIT,
            create_body_limit: DEFAULT_CREATE_BODY_LIMIT,
            volumes: None,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            authz: None,
        }
    }
}

/// The response body type of every handler.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// What every request handler can reach.
pub(crate) struct State {
    pub(crate) backend: Arc<dyn PluginBackend>,
    pub(crate) options: ServerOptions,
    /// Turns true when the server shuts down; streaming responses end then.
    pub(crate) stop: watch::Receiver<bool>,
}

/// Binds the API socket at `path` owned by this process's user and group, mode 0660 (see
/// [`bind_owned`]).
pub fn bind(path: &Path) -> Result<UnixListener, ApiError> {
    bind_owned(path, &SocketOwner::current(0o660))
}

/// Binds the API socket at `path`: creates the parent directory, replaces a stale socket (but
/// refuses when a live server answers on it or the path is not a socket). The socket appears
/// at `path` only with `owner`'s user, group and mode (dockerd's `root:docker 0660`), never
/// with umask permissions for a moment.
pub fn bind_owned(path: &Path, owner: &SocketOwner) -> Result<UnixListener, ApiError> {
    let socket_err = |source| ApiError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(socket_err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ApiError::SocketInUse {
                    path: path.to_owned(),
                });
            }
            std::fs::remove_file(path).map_err(socket_err)?;
        }
        Ok(_) => {
            return Err(socket_err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "path exists and is not a socket",
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(socket_err(e)),
    }
    let listener = plugind_sys::socket::bind_unix_owned(path, owner).map_err(socket_err)?;
    listener.set_nonblocking(true).map_err(socket_err)?;
    UnixListener::from_std(listener).map_err(socket_err)
}

/// Serves the API on `listener` until `shutdown` completes, then stops accepting, ends event
/// and log streams, lets in-flight requests finish and returns.
///
/// At most `max_connections` connections are served at once; one more is answered 503 and
/// closed. Every connection is closed when idle or when a client stalls (see
/// [`ServerOptions`]); a failing `accept` (EMFILE) backs off instead of spinning.
pub async fn serve(
    listener: UnixListener,
    backend: Arc<dyn PluginBackend>,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ApiError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let served = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));
    let state = Arc::new(State {
        backend,
        options,
        stop: stop_rx.clone(),
    });
    let mut conns = JoinSet::new();
    // Accept failures since the last warning, and when that was: one line per interval.
    let mut accept_failures: u64 = 0;
    let mut last_warning: Option<Instant> = None;
    // Most connections open at once since memory was last given back.
    let mut peak: usize = 0;
    // Connections accepted since memory was last given back, and the quiet spell (no
    // connection open) after which it is: many clients one request at a time (a fleet enabled
    // by 8 clients) never reach the peak but leave the heap grown all the same.
    let mut accepted_since_trim: usize = 0;
    let quiet = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(quiet);
    let mut quiet_armed = false;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = &mut quiet, if quiet_armed => {
                quiet_armed = false;
                accepted_since_trim = 0;
                tokio::task::spawn_blocking(plugind_sys::limits::release_free_memory);
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    quiet_armed = false;
                    accepted_since_trim += 1;
                    peak = peak.max(conns.len() + 1);
                    if let Ok(permit) = Arc::clone(&served).try_acquire_owned() {
                        conns.spawn(serve_connection(
                            stream,
                            Arc::clone(&state),
                            stop_rx.clone(),
                            permit,
                        ));
                    } else if let Ok(permit) = Arc::clone(&rejecting).try_acquire_owned() {
                        conns.spawn(reject_connection(stream, Arc::clone(&state), permit));
                    } else {
                        // Even the 503 answers are at their cap: closing is the only answer
                        // that costs nothing, and it never leaves the client hanging.
                        drop(stream);
                    }
                }
                // Per-connection failures (a client that went away, EMFILE) must not stop the
                // server; back off briefly so a persistent EMFILE does not spin a core. The
                // pending connection stays in the backlog and is accepted once descriptors
                // are free again.
                Err(e) => {
                    accept_failures += 1;
                    if last_warning.is_none_or(|t| t.elapsed() >= ACCEPT_WARNING_INTERVAL) {
                        tracing::warn!(error = %e, failures = accept_failures, "accepting an api connection failed");
                        last_warning = Some(Instant::now());
                        accept_failures = 0;
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {
                // A burst of connections is over: give the heap it grew back to the system,
                // so resident memory returns to its level before the burst.
                if peak >= TRIM_AFTER_PEAK && conns.len() <= peak / 8 {
                    peak = conns.len();
                    accepted_since_trim = 0;
                    tokio::task::spawn_blocking(plugind_sys::limits::release_free_memory);
                } else if conns.is_empty() && accepted_since_trim >= TRIM_AFTER_PEAK {
                    quiet
                        .as_mut()
                        .reset(tokio::time::Instant::now() + QUIET_BEFORE_TRIM);
                    quiet_armed = true;
                }
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// Pause after a failed `accept` (EMFILE, ENFILE, ENOBUFS).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Connections open at once (or accepted since the last trim, then followed by a quiet
/// spell) that count as a burst worth trimming the heap after.
const TRIM_AFTER_PEAK: usize = 64;
/// How long no connection is open before the heap a burst grew is given back.
const QUIET_BEFORE_TRIM: Duration = Duration::from_secs(1);
/// At most one warning about failing accepts per interval (with the count since the last).
const ACCEPT_WARNING_INTERVAL: Duration = Duration::from_secs(10);

fn http1_builder(state: &State) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .title_case_headers(true)
        .timer(TokioTimer::new())
        // hyper starts this timer when a connection waits for a request head, idle or not;
        // the watchdog enforces the idle and header deadlines separately, this bounds both.
        .header_read_timeout(state.options.idle_timeout + state.options.header_timeout);
    builder
}

async fn serve_connection(
    stream: tokio::net::UnixStream,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let activity = Activity::new();
    let io = TrackedIo::new(stream, Arc::clone(&activity), state.options.body_timeout);
    let (header_timeout, idle_timeout) = (state.options.header_timeout, state.options.idle_timeout);
    let builder = http1_builder(&state);
    let requests = Arc::clone(&activity);
    let service = service_fn(move |req| {
        let state = Arc::clone(&state);
        let in_flight = requests.begin();
        async move {
            let resp = handle(&state, req).await;
            // The request counts as in flight until its body is written or abandoned.
            Ok::<_, Infallible>(resp.map(|body| TrackedBody::new(body, in_flight)))
        }
    });
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut changes = activity.subscribe();
    loop {
        let deadline = activity.deadline(header_timeout, idle_timeout);
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "api connection ended with an error");
                }
                return;
            }
            () = stopped(&mut stop) => break,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = sleep_until_some(deadline) => {
                // The state may have changed just now; close only if the deadline still holds.
                if activity
                    .deadline(header_timeout, idle_timeout)
                    .is_some_and(|d| d <= Instant::now())
                {
                    tracing::debug!("closing an idle or stalled api connection");
                    return;
                }
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "api connection ended with an error");
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A connection past the cap: its request is answered 503 with Docker's JSON error, and the
/// connection is closed.
async fn reject_connection(
    stream: tokio::net::UnixStream,
    state: Arc<State>,
    _permit: OwnedSemaphorePermit,
) {
    let limit = state.options.max_connections;
    let activity = Activity::new();
    let io = TrackedIo::new(stream, activity, state.options.body_timeout);
    let mut builder = http1_builder(&state);
    builder
        .keep_alive(false)
        .header_read_timeout(state.options.header_timeout);
    let service = service_fn(move |_req| async move {
        Ok::<_, Infallible>(error_response(
            HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("too many API connections (limit {limit}), try again later"),
            ),
            true,
        ))
    });
    if let Err(e) = builder.serve_connection(TokioIo::new(io), service).await {
        tracing::debug!(error = %e, "rejected api connection ended with an error");
    }
}

/// Completes once the server is stopping.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, so callers' futures stay `Send`.
    let _ = stop.wait_for(|s| *s).await;
}

/// One route of the table (docker-plugin-api.md §1.1), with the plugin name where it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Options,
    Ping,
    Version,
    Info,
    Events,
    List,
    Inspect(String),
    Privileges,
    Remove(String),
    Enable(String),
    Disable(String),
    Pull,
    Push(String),
    Upgrade(String),
    Set(String),
    Create,
    Logs(String),
    VolumeList,
    VolumeCreate,
    VolumeInspect(String),
    VolumeRemove(String),
    VolumePrune,
}

impl Route {
    /// The route's template, the `route` label of the request metrics: bounded, never a
    /// client's raw path or a plugin or volume name.
    pub(crate) fn template(&self) -> &'static str {
        match self {
            Route::Options => "OPTIONS *",
            Route::Ping => "/_ping",
            Route::Version => "/version",
            Route::Info => "/info",
            Route::Events => "/events",
            Route::List => "/plugins",
            Route::Inspect(_) => "/plugins/:name/json",
            Route::Privileges => "/plugins/privileges",
            Route::Remove(_) => "DELETE /plugins/:name",
            Route::Enable(_) => "/plugins/:name/enable",
            Route::Disable(_) => "/plugins/:name/disable",
            Route::Pull => "/plugins/pull",
            Route::Push(_) => "/plugins/:name/push",
            Route::Upgrade(_) => "/plugins/:name/upgrade",
            Route::Set(_) => "/plugins/:name/set",
            Route::Create => "/plugins/create",
            Route::Logs(_) => "/plugins/:name/logs",
            Route::VolumeList => "/volumes",
            Route::VolumeCreate => "/volumes/create",
            Route::VolumeInspect(_) => "/volumes/:name",
            Route::VolumeRemove(_) => "DELETE /volumes/:name",
            Route::VolumePrune => "/volumes/prune",
        }
    }
}

/// The name between `/plugins/` and `suffix` (greedy, may contain `/` and `:`).
fn plugin_name(path: &str, suffix: &str) -> Option<String> {
    path.strip_prefix("/plugins/")?
        .strip_suffix(suffix)
        .map(str::to_owned)
}

/// Matches a decoded, unversioned path in moby's registration order.
pub(crate) fn match_route(method: &Method, path: &str) -> Option<Route> {
    if method == Method::OPTIONS {
        return path.starts_with('/').then_some(Route::Options);
    }
    let get = method == Method::GET;
    let post = method == Method::POST;
    match path {
        "/_ping" if get || method == Method::HEAD => return Some(Route::Ping),
        "/version" if get => return Some(Route::Version),
        "/info" if get => return Some(Route::Info),
        "/events" if get => return Some(Route::Events),
        "/plugins" if get => return Some(Route::List),
        "/volumes" if get => return Some(Route::VolumeList),
        "/volumes/create" if post => return Some(Route::VolumeCreate),
        "/volumes/prune" if post => return Some(Route::VolumePrune),
        _ => {}
    }
    if let Some(name) = path
        .strip_prefix("/volumes/")
        .filter(|n| !n.is_empty() && !n.contains('/'))
    {
        if get {
            return Some(Route::VolumeInspect(name.to_owned()));
        }
        if method == Method::DELETE {
            return Some(Route::VolumeRemove(name.to_owned()));
        }
    }
    if get {
        if let Some(n) = plugin_name(path, "/json") {
            return Some(Route::Inspect(n));
        }
        if path == "/plugins/privileges" {
            return Some(Route::Privileges);
        }
        return plugin_name(path, "/logs").map(Route::Logs);
    }
    if method == Method::DELETE {
        return plugin_name(path, "").map(Route::Remove);
    }
    if post {
        if let Some(n) = plugin_name(path, "/enable") {
            return Some(Route::Enable(n));
        }
        if let Some(n) = plugin_name(path, "/disable") {
            return Some(Route::Disable(n));
        }
        if path == "/plugins/pull" {
            return Some(Route::Pull);
        }
        if let Some(n) = plugin_name(path, "/push") {
            return Some(Route::Push(n));
        }
        if let Some(n) = plugin_name(path, "/upgrade") {
            return Some(Route::Upgrade(n));
        }
        if let Some(n) = plugin_name(path, "/set") {
            return Some(Route::Set(n));
        }
        if path == "/plugins/create" {
            return Some(Route::Create);
        }
    }
    None
}

/// Splits `/v1.45/rest` into (`1.45`, `/rest`); `("", path)` without a prefix.
pub(crate) fn split_version(path: &str) -> (&str, &str) {
    if let Some(rest) = path.strip_prefix("/v") {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n > 0 && rest[n..].starts_with('/') {
            return (&rest[..n], &rest[n..]);
        }
    }
    ("", path)
}

/// moby's `versions.compare`: dot-separated integers, missing or non-numeric parts are 0.
pub(crate) fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let pa: Vec<&str> = a.split('.').collect();
    let pb: Vec<&str> = b.split('.').collect();
    for i in 0..pa.len().max(pb.len()) {
        let x = pa.get(i).and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
        let y = pb.get(i).and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
        match x.cmp(&y) {
            std::cmp::Ordering::Equal => {}
            other => return other,
        }
    }
    std::cmp::Ordering::Equal
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    let raw_path = req.uri().path().to_owned();
    let path = crate::query::unescape(&raw_path, false).unwrap_or(raw_path);
    let (version, rest) = split_version(&path);
    // moby answers errors as plain text for API versions before 1.24.
    let json_errors =
        version.is_empty() || compare_versions(version, "1.23") == std::cmp::Ordering::Greater;
    let began = std::time::Instant::now();
    let Some(route) = match_route(req.method(), rest) else {
        // Like moby's notFoundHandler, this bypasses the middleware: no version headers.
        Metrics::global().record_api_request("other", 404, began.elapsed());
        return error_response(
            HttpError::new(StatusCode::NOT_FOUND, "page not found"),
            json_errors,
        );
    };
    let template = route.template();
    tracing::debug!(method = %req.method(), path = %path, "api request");
    let version = version.to_owned();
    let req = req.map(RequestBody::Stream);
    let chain = state
        .options
        .authz
        .as_ref()
        .filter(|chain| !chain.plugins().is_empty());
    let mut resp = match chain {
        None => routed(state, &version, route, req, json_errors).await.0,
        Some(chain) => authorized(state, &**chain, &version, route, req, json_errors).await,
    };
    let h = resp.headers_mut();
    let server = format!("Docker/{} (linux)", state.options.engine_version);
    if let Ok(v) = server.parse() {
        h.insert(header::SERVER, v);
    }
    h.insert("Api-Version", header::HeaderValue::from_static(API_VERSION));
    h.insert(
        "Docker-Experimental",
        header::HeaderValue::from_static("false"),
    );
    h.insert("Ostype", header::HeaderValue::from_static("linux"));
    Metrics::global().record_api_request(template, resp.status().as_u16(), began.elapsed());
    resp
}

/// The version check and the route's handler; the flag says whether the handler succeeded
/// (moby's middleware asks the plugins about successful answers only).
async fn routed(
    state: &State,
    version: &str,
    route: Route,
    req: Request<RequestBody>,
    json_errors: bool,
) -> (Response<Body>, bool) {
    match check_version(version) {
        Err(e) => (error_response(e, json_errors), false),
        Ok(()) => match dispatch(state, route, req).await {
            Ok(resp) => (resp, true),
            Err(e) => {
                let plugin_name = e.plugin_name.clone();
                let mut resp = error_response(e, json_errors);
                if let Some(v) = plugin_name.and_then(|n| header::HeaderValue::from_str(&n).ok()) {
                    resp.headers_mut().insert(remote::PLUGIN_NAME_HEADER, v);
                }
                (resp, false)
            }
        },
    }
}

/// moby's authorization middleware around [`routed`]: the request goes to the chain before
/// the handler (its JSON body, read here, when under 1 MiB), a successful answer after it.
/// Streamed answers (events, logs, progress) are shown to the plugins by status and headers
/// before they start, and go out only if allowed.
async fn authorized(
    state: &State,
    chain: &dyn crate::AuthzChain,
    version: &str,
    route: Route,
    req: Request<RequestBody>,
    json_errors: bool,
) -> Response<Body> {
    let uri = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let mut request = authz::AuthzRequest {
        request_method: req.method().as_str().to_owned(),
        request_uri: uri.clone(),
        request_headers: authz::flat_headers(req.headers()),
        ..authz::AuthzRequest::default()
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (parts, body) = req.into_parts();
    let body = if authz::sends_body(&uri, &parts.headers)
        && declared.is_some_and(|n| n > 0 && n < authz::MAX_AUTHZ_BODY)
    {
        match body::read_limited(body, authz::MAX_AUTHZ_BODY, state.options.body_timeout).await {
            Ok(bytes) => {
                request.request_body = Some(bytes.to_vec());
                RequestBody::Read(Some(bytes))
            }
            Err(e) => return error_response(e, json_errors),
        }
    } else {
        body
    };
    let plugins = chain.plugins();
    if let Err(e) = authz::ask(chain, &plugins, authz::AUTHZ_REQUEST_METHOD, &request).await {
        tracing::warn!(method = %request.request_method, uri = %uri, error = %e.message, "authorization denied the request");
        return error_response(e, json_errors);
    }
    // Only a plugin in the chain is protected from removal while the chain is in force.
    if let Route::Remove(name) = &route {
        if let Some(full) = chain.guards(name) {
            return error_response(
                HttpError::new(StatusCode::CONFLICT, format!("plugin {full} is in use")),
                json_errors,
            );
        }
    }
    let req = Request::from_parts(parts, body);
    let (resp, succeeded) = routed(state, version, route, req, json_errors).await;
    // A plugin disabled by this very request has dropped out (moby reads the chain again).
    let plugins = chain.plugins();
    if !succeeded || plugins.is_empty() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    request.response_status_code = parts.status.as_u16();
    request.response_headers = authz::flat_headers(&parts.headers);
    let streamed = body.size_hint().exact().is_none();
    let body = if streamed {
        body
    } else {
        // A complete answer is in memory already: collecting it costs nothing.
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(never) => match never {},
        };
        if authz::sends_body(&uri, &parts.headers) {
            request.response_body = Some(bytes.to_vec());
        }
        Full::new(bytes).boxed_unsync()
    };
    if let Err(e) = authz::ask(chain, &plugins, authz::AUTHZ_RESPONSE_METHOD, &request).await {
        tracing::warn!(method = %request.request_method, uri = %uri, error = %e.message, "authorization denied the answer");
        return error_response(e, json_errors);
    }
    Response::from_parts(parts, body)
}

fn check_version(version: &str) -> Result<(), HttpError> {
    if version.is_empty() {
        return Ok(());
    }
    if compare_versions(version, MIN_API_VERSION) == std::cmp::Ordering::Less {
        return Err(HttpError::bad_request(format!(
            "client version {version} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    if compare_versions(version, API_VERSION) == std::cmp::Ordering::Greater {
        return Err(HttpError::bad_request(format!(
            "client version {version} is too new. Maximum supported API version is {API_VERSION}"
        )));
    }
    Ok(())
}

async fn dispatch(
    state: &State,
    route: Route,
    req: Request<RequestBody>,
) -> Result<Response<Body>, HttpError> {
    let uri = req.uri().clone();
    // Only the handlers that read the query parse it (moby's `ParseForm`), so `set` ignores it.
    let query = || Query::parse(uri.query());
    match route {
        Route::Options => Ok(empty(StatusCode::OK)),
        Route::Ping => Ok(system::ping(req.method() == Method::HEAD)),
        Route::Version => Ok(system::version(state)),
        Route::Info => Ok(system::info(state)),
        Route::Events => system::events(state, &query()?).await,
        Route::List => plugins::list(state, &query()?).await,
        Route::Inspect(name) => plugins::inspect(state, &name).await,
        Route::Privileges => remote::privileges(state, &query()?, req.headers()).await,
        Route::Pull => remote::pull(state, req).await,
        Route::Push(name) => plugins::push(state, &name, &req).await,
        Route::Upgrade(name) => remote::upgrade(state, &name, req).await,
        Route::Remove(name) => plugins::remove(state, &name, &query()?).await,
        Route::Enable(name) => plugins::enable(state, &name, &query()?).await,
        Route::Disable(name) => plugins::disable(state, &name, &query()?).await,
        Route::Set(name) => plugins::set(state, &name, req).await,
        Route::Create => plugins::create(state, &query()?, req).await,
        Route::Logs(name) => plugins::logs(state, &name, &query()?).await,
        Route::VolumeList => volumes::list(state, &query()?).await,
        Route::VolumeCreate => volumes::create(state, req).await,
        Route::VolumeInspect(name) => volumes::inspect(state, &name).await,
        Route::VolumeRemove(name) => volumes::remove(state, &name, &query()?).await,
        Route::VolumePrune => volumes::prune(state, &query()?, uri.path()).await,
    }
}

/// A bodyless response (Go's `WriteHeader` alone: `Content-Length: 0` for 200).
pub(crate) fn empty(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Empty::new().boxed_unsync());
    *resp.status_mut() = status;
    resp
}

/// A body with a content type.
pub(crate) fn full(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(body).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

/// moby's `httputils.WriteJSON`: the value, a newline, `Content-Type: application/json`.
pub(crate) fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            full(status, "application/json", Bytes::from(bytes))
        }
        Err(e) => error_response(
            HttpError::internal(format!("encoding the response: {e}")),
            true,
        ),
    }
}

/// `{"message": ...}` (or Go's `http.Error` plain text for pre-1.24 versions).
fn error_response(err: HttpError, json_errors: bool) -> Response<Body> {
    if err.status.is_server_error() {
        tracing::warn!(status = %err.status, message = %err.message, "api request failed");
    } else {
        tracing::debug!(status = %err.status, message = %err.message, "api request rejected");
    }
    if json_errors {
        #[derive(Serialize)]
        struct Message<'a> {
            message: &'a str,
        }
        return json(
            err.status,
            &Message {
                message: &err.message,
            },
        );
    }
    let mut resp = full(
        err.status,
        "text/plain; charset=utf-8",
        Bytes::from(format!("{}\n", err.message)),
    );
    resp.headers_mut().insert(
        "X-Content-Type-Options",
        header::HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_templates_never_carry_names() {
        // The `route` label of the request metrics must stay bounded: no name of a plugin or
        // volume, whatever the client sends.
        for (m, p) in [
            (Method::POST, "/plugins/evil/name:tag/enable"),
            (Method::GET, "/plugins/x/json"),
            (Method::DELETE, "/plugins/x"),
            (Method::GET, "/volumes/evil"),
            (Method::DELETE, "/volumes/evil"),
            (Method::POST, "/plugins/x/set"),
        ] {
            let t = match_route(&m, p).unwrap().template();
            assert!(!t.contains("evil") && !t.contains('x'), "{p} -> {t}");
            assert!(t.contains(":name"), "{p} -> {t}");
        }
    }

    #[test]
    fn routes_take_the_whole_middle_as_name() {
        let r = |m: Method, p: &str| match_route(&m, p);
        assert_eq!(
            r(Method::GET, "/plugins/localhost:5000/foo/bar:latest/json"),
            Some(Route::Inspect("localhost:5000/foo/bar:latest".into()))
        );
        assert_eq!(
            r(Method::GET, "/plugins/privileges"),
            Some(Route::Privileges)
        );
        assert_eq!(r(Method::GET, "/plugins/json"), None);
        assert_eq!(
            r(Method::GET, "/plugins//json"),
            Some(Route::Inspect(String::new()))
        );
        assert_eq!(
            r(Method::DELETE, "/plugins/a/b:1"),
            Some(Route::Remove("a/b:1".into()))
        );
        assert_eq!(r(Method::POST, "/plugins/pull"), Some(Route::Pull));
        assert_eq!(
            r(Method::POST, "/plugins/pull/enable"),
            Some(Route::Enable("pull".into()))
        );
        assert_eq!(r(Method::POST, "/plugins/x/pull"), None);
        assert_eq!(r(Method::POST, "/plugins/create"), Some(Route::Create));
        assert_eq!(r(Method::HEAD, "/_ping"), Some(Route::Ping));
        assert_eq!(r(Method::HEAD, "/version"), None);
        assert_eq!(r(Method::OPTIONS, "/anything/at/all"), Some(Route::Options));
        assert_eq!(split_version("/v1.45/plugins"), ("1.45", "/plugins"));
        assert_eq!(split_version("/v/plugins"), ("", "/v/plugins"));
        assert_eq!(split_version("/version"), ("", "/version"));
    }

    #[test]
    fn versions() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("1.9", "1.24"), Less);
        assert_eq!(compare_versions("1.50", "1.51"), Less);
        assert_eq!(compare_versions("1.51.0", "1.51"), Equal);
        assert_eq!(compare_versions("2", "1.51"), Greater);
        assert!(check_version("1.23")
            .unwrap_err()
            .message
            .contains("is too old"));
        assert_eq!(
            check_version("1.52").unwrap_err().message,
            "client version 1.52 is too new. Maximum supported API version is 1.51"
        );
        assert!(check_version("1.24").is_ok());
    }
}
