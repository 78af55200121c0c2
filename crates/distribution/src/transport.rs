//! The HTTP layer under [`Registry`](crate::Registry): one pooled hyper client (rustls for
//! HTTPS), per-request deadlines, retries with backoff for transient failures, the 401 →
//! challenge → credentials round (Basic, bearer tokens cached per registry, scope and
//! credentials), redirects, and capped reading of bodies and registry errors.

use std::{
    collections::HashMap,
    error::Error as _,
    io,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::{
    body::{Frame, Incoming},
    header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, LOCATION, USER_AGENT},
    Method, Request, Response, StatusCode, Uri,
};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use plugind_blobstore::BlobStore;
use plugind_types::Digest;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::{
    challenge::{self, Challenge},
    endpoint::{Endpoint, InsecureRegistries},
    AuthConfig, DistributionError, RegistryOptions, Result,
};

/// A request body as every crate-internal request sends it.
pub(crate) type ReqBody = BoxBody<Bytes, io::Error>;

/// How much of an error body (or token answer) is read.
const MAX_ERROR_BODY: u64 = 64 * 1024;
/// The largest token server answer read.
const MAX_TOKEN_BODY: u64 = 1 << 20;
/// Redirects followed for one request.
const MAX_REDIRECTS: u32 = 5;
/// Chunk size when streaming a stored blob to a registry.
const UPLOAD_CHUNK: usize = 256 * 1024;
/// A token without `expires_in` is valid this long (the token spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Where a request body comes from; a source can make its body again for a retry.
pub(crate) enum BodySource {
    /// No body.
    Empty,
    /// Bytes in memory.
    Bytes(Bytes),
    /// A committed blob streamed from the blobstore; `sent` counts bytes handed to hyper.
    Blob {
        store: BlobStore,
        digest: Digest,
        sent: Arc<AtomicU64>,
    },
}

impl BodySource {
    fn make(&self) -> ReqBody {
        match self {
            BodySource::Empty => Empty::new().map_err(|n| match n {}).boxed(),
            BodySource::Bytes(b) => Full::new(b.clone()).map_err(|n| match n {}).boxed(),
            BodySource::Blob {
                store,
                digest,
                sent,
            } => {
                sent.store(0, Ordering::Relaxed);
                let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
                let store = store.clone();
                let digest = digest.clone();
                tokio::task::spawn_blocking(move || {
                    use std::io::Read as _;
                    let mut reader = match store.reader(&digest) {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
                            return;
                        }
                    };
                    loop {
                        let mut buf = vec![0u8; UPLOAD_CHUNK];
                        match reader.read(&mut buf) {
                            Ok(0) => return,
                            Ok(n) => {
                                buf.truncate(n);
                                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                                    return; // the request was dropped
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                let _ = tx.blocking_send(Err(e));
                                return;
                            }
                        }
                    }
                });
                let sent = sent.clone();
                let stream = futures::stream::unfold((rx, sent), |(mut rx, sent)| async move {
                    let chunk = rx.recv().await?;
                    if let Ok(b) = &chunk {
                        sent.fetch_add(b.len() as u64, Ordering::Relaxed);
                    }
                    Some((chunk.map(Frame::data), (rx, sent)))
                });
                BodyExt::boxed(StreamBody::new(stream))
            }
        }
    }
}

/// One request to a registry, with what may be done to it.
pub(crate) struct Req {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: BodySource,
    /// Follow 3xx answers (blob downloads: S3-backed registries redirect).
    pub follow_redirects: bool,
}

impl Req {
    pub fn new(method: Method, url: String) -> Req {
        Req {
            method,
            url,
            headers: Vec::new(),
            body: BodySource::Empty,
            follow_redirects: false,
        }
    }

    pub fn header(mut self, name: HeaderName, value: &str) -> Req {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }
}

/// What a request is made for: the registry, the token scopes it needs and whose credentials.
pub(crate) struct Session<'a> {
    pub endpoint: Endpoint,
    pub scopes: Vec<String>,
    pub auth: &'a AuthConfig,
}

/// (registry authority, scopes, fingerprint of the credentials).
type AuthKey = (String, String, [u8; 32]);

/// A cached `Authorization` value.
#[derive(Clone)]
struct CachedAuth {
    header: HeaderValue,
    expires: Option<Instant>,
}

/// The pooled client, its options and the credential cache.
pub(crate) struct Transport {
    client: Client<HttpsConnector<HttpConnector>, ReqBody>,
    pub opts: RegistryOptions,
    pub insecure: InsecureRegistries,
    // Keyed by (authority, scopes, fingerprint of the credentials): a token obtained with one
    // user's credentials is never sent for another's request.
    auth_cache: Mutex<HashMap<AuthKey, CachedAuth>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Transport {
    pub fn new(opts: RegistryOptions) -> Result<Transport> {
        let insecure = InsecureRegistries::parse(&opts.insecure_registries)
            .map_err(DistributionError::Client)?;
        let tls = tls_config()?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(opts.request_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        Ok(Transport {
            client,
            opts,
            insecure,
            auth_cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn endpoint(&self, domain: &str) -> Endpoint {
        self.insecure.endpoint(domain)
    }

    /// Sends a request: retries transient failures (connect errors always; timeouts, 5xx and
    /// 429 for GET and HEAD), answers one 401 with credentials, follows redirects when asked.
    /// Returns the final response whatever its status.
    pub async fn send(&self, session: &Session<'_>, req: &Req) -> Result<Response<Incoming>> {
        let mut authorized = false;
        loop {
            let (resp, same_host) = self.send_once(session, req).await?;
            if resp.status() == StatusCode::UNAUTHORIZED && same_host && !authorized {
                authorized = true;
                let challenges = challenges(&resp);
                drain(resp).await;
                self.authorize(session, &challenges).await?;
                continue;
            }
            return Ok(resp);
        }
    }

    /// [`Transport::send`] without the 401 round (token servers are asked with this). Also
    /// says whether the final URL is on the session's registry.
    async fn send_once(
        &self,
        session: &Session<'_>,
        req: &Req,
    ) -> Result<(Response<Incoming>, bool)> {
        let mut url = req.url.clone();
        let mut method = req.method.clone();
        let mut attempt = 0u32;
        let mut redirects = 0u32;
        let idempotent = req.method == Method::GET || req.method == Method::HEAD;
        loop {
            let uri: Uri = url
                .parse()
                .map_err(|_| DistributionError::Protocol(format!("invalid URL {url:?}")))?;
            let same_host = uri
                .authority()
                .is_some_and(|a| a.as_str().eq_ignore_ascii_case(&session.endpoint.authority));
            let mut builder = Request::builder()
                .method(method.clone())
                .uri(uri)
                .header(USER_AGENT, &self.opts.user_agent);
            let mut has_authorization = false;
            for (name, value) in &req.headers {
                has_authorization |= *name == AUTHORIZATION;
                builder = builder.header(name, value);
            }
            // Credentials never follow a redirect to another host.
            if same_host && !has_authorization {
                if let Some(h) = self.cached_auth(session) {
                    builder = builder.header(AUTHORIZATION, h);
                }
            }
            let body = if method == req.method {
                req.body.make()
            } else {
                BodySource::Empty.make()
            };
            let request = builder
                .body(body)
                .map_err(|e| DistributionError::Protocol(format!("building request: {e}")))?;
            let outcome =
                tokio::time::timeout(self.opts.request_timeout, self.client.request(request)).await;
            let failure = match outcome {
                Err(_) if idempotent => format!("timeout after {:?}", self.opts.request_timeout),
                Err(_) => {
                    let text = format!("timeout after {:?}", self.opts.request_timeout);
                    return Err(self.unreachable(session, &method, &url, text));
                }
                Ok(Err(e)) => {
                    let text = error_chain(&e);
                    // A request that reached the registry is sent again only if it is safe.
                    if !(e.is_connect() || idempotent) {
                        return Err(self.unreachable(session, &method, &url, text));
                    }
                    text
                }
                Ok(Ok(resp)) => {
                    let status = resp.status();
                    if status.is_redirection() && req.follow_redirects {
                        if let Some(next) = resp
                            .headers()
                            .get(LOCATION)
                            .and_then(|l| l.to_str().ok())
                            .map(str::to_owned)
                        {
                            redirects += 1;
                            if redirects > MAX_REDIRECTS {
                                return Err(DistributionError::Protocol(format!(
                                    "more than {MAX_REDIRECTS} redirects for {}",
                                    req.url
                                )));
                            }
                            url = self.redirect_target(&url, &next)?;
                            if status == StatusCode::SEE_OTHER {
                                method = Method::GET;
                            }
                            drain(resp).await;
                            continue;
                        }
                    }
                    let transient =
                        status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
                    if transient && idempotent && attempt < self.opts.retries {
                        tracing::debug!(%url, %status, attempt, "transient registry answer, retrying");
                        drain(resp).await;
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    return Ok((resp, same_host));
                }
            };
            if attempt >= self.opts.retries {
                return Err(self.unreachable(session, &method, &url, failure));
            }
            tracing::debug!(%url, error = %failure, attempt, "registry request failed, retrying");
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }

    fn unreachable(
        &self,
        session: &Session<'_>,
        method: &Method,
        url: &str,
        text: String,
    ) -> DistributionError {
        DistributionError::Unreachable {
            registry: session.endpoint.authority.clone(),
            message: format!(
                "failed to do request: {} {url:?}: {text}",
                go_method(method)
            ),
        }
    }

    /// Resolves a `Location` against the current URL and checks the scheme: plain HTTP only
    /// to a host that may be spoken to in plain HTTP.
    pub fn redirect_target(&self, current: &str, location: &str) -> Result<String> {
        let target = resolve_location(current, location)?;
        let uri: Uri = target
            .parse()
            .map_err(|_| DistributionError::Protocol(format!("invalid Location {location:?}")))?;
        match (uri.scheme_str(), uri.authority()) {
            (Some("https"), Some(_)) => Ok(target),
            (Some("http"), Some(a)) if self.insecure.is_insecure(a.as_str()) => Ok(target),
            _ => Err(DistributionError::Protocol(format!(
                "refusing redirect to {target:?}: only https, or http to an insecure registry"
            ))),
        }
    }

    fn cache_key(&self, session: &Session<'_>) -> AuthKey {
        (
            session.endpoint.authority.to_ascii_lowercase(),
            session.scopes.join(" "),
            fingerprint(session.auth),
        )
    }

    fn cached_auth(&self, session: &Session<'_>) -> Option<HeaderValue> {
        let mut cache = plugind_lock(&self.auth_cache);
        let key = self.cache_key(session);
        let basic_key = (key.0.clone(), String::new(), key.2);
        for k in [key, basic_key] {
            if let Some(entry) = cache.get(&k) {
                if entry.expires.is_some_and(|t| Instant::now() >= t) {
                    cache.remove(&k);
                    continue;
                }
                return Some(entry.header.clone());
            }
        }
        None
    }

    /// Answers a 401: Basic credentials, or a bearer token from the challenge's realm.
    async fn authorize(&self, session: &Session<'_>, challenges: &[Challenge]) -> Result<()> {
        let key = self.cache_key(session);
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let (token, lifetime) = match &session.auth.registry_token {
                Some(t) => (t.clone(), None),
                None => {
                    let (t, l) = self.fetch_token(session, bearer).await?;
                    (t, Some(l))
                }
            };
            let header = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                DistributionError::Protocol("token server sent an invalid token".into())
            })?;
            // A little early, so a token is not sent just as it expires.
            let expires =
                lifetime.map(|l| Instant::now() + l.saturating_sub(Duration::from_secs(5)));
            plugind_lock(&self.auth_cache).insert(key, CachedAuth { header, expires });
            return Ok(());
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            let (Some(user), Some(password)) = (&session.auth.username, &session.auth.password)
            else {
                return Err(DistributionError::Unauthorized {
                    message: "authentication required".into(),
                });
            };
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            let header = HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| {
                DistributionError::Unauthorized {
                    message: "credentials are not valid header text".into(),
                }
            })?;
            // Basic credentials do not depend on the scope.
            plugind_lock(&self.auth_cache).insert(
                (key.0, String::new(), key.2),
                CachedAuth {
                    header,
                    expires: None,
                },
            );
            return Ok(());
        }
        Err(DistributionError::Unauthorized {
            message: "registry asked for an authentication scheme plugind does not speak".into(),
        })
    }

    /// Gets a bearer token (docker's token spec): GET with Basic credentials, or the OAuth2
    /// refresh-token POST when the client holds an identity token.
    async fn fetch_token(
        &self,
        session: &Session<'_>,
        challenge: &Challenge,
    ) -> Result<(String, Duration)> {
        let realm = challenge
            .param("realm")
            .ok_or_else(|| DistributionError::Protocol("bearer challenge without realm".into()))?;
        let realm_uri: Uri = realm
            .parse()
            .map_err(|_| DistributionError::Protocol(format!("invalid token realm {realm:?}")))?;
        // Credentials go in clear over plain HTTP only to a host that may be spoken to so.
        match (realm_uri.scheme_str(), realm_uri.authority()) {
            (Some("https"), Some(_)) => {}
            (Some("http"), Some(a)) if self.insecure.is_insecure(a.as_str()) => {}
            _ => {
                return Err(DistributionError::Protocol(format!(
                    "token realm {realm:?} is not https"
                )))
            }
        }
        let service = challenge.param("service").unwrap_or_default();
        let enc = |s: &str| percent_encoding::utf8_percent_encode(s, QUERY).to_string();
        let token_session = Session {
            endpoint: Endpoint {
                scheme: if realm_uri.scheme_str() == Some("http") {
                    "http"
                } else {
                    "https"
                },
                authority: realm_uri
                    .authority()
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
            },
            scopes: Vec::new(),
            auth: session.auth,
        };
        let req = if let Some(refresh) = &session.auth.identity_token {
            let form = format!(
                "grant_type=refresh_token&client_id=plugind&service={}&scope={}&refresh_token={}",
                enc(service),
                enc(&session.scopes.join(" ")),
                enc(refresh)
            );
            let mut req = Req::new(Method::POST, realm.to_owned()).header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
            req.body = BodySource::Bytes(Bytes::from(form));
            req
        } else {
            let mut url = realm.to_owned();
            let mut sep = if url.contains('?') { '&' } else { '?' };
            if !service.is_empty() {
                url.push_str(&format!("{sep}service={}", enc(service)));
                sep = '&';
            }
            for scope in &session.scopes {
                url.push_str(&format!("{sep}scope={}", enc(scope)));
                sep = '&';
            }
            let mut req = Req::new(Method::GET, url);
            if let (Some(u), Some(p)) = (&session.auth.username, &session.auth.password) {
                let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                req = req.header(AUTHORIZATION, &format!("Basic {encoded}"));
            }
            req
        };
        // The token server is asked directly (no 401 round of its own).
        let (resp, _) = self.send_once(&token_session, &req).await?;
        let status = resp.status();
        if !status.is_success() {
            let err = registry_error(resp).await;
            return Err(match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    DistributionError::Unauthorized {
                        message: format!("token server refused: {err}"),
                    }
                }
                _ => err,
            });
        }
        let body = read_capped(
            resp,
            MAX_TOKEN_BODY,
            "token answer",
            self.opts.request_timeout,
        )
        .await?;
        #[derive(Deserialize)]
        struct TokenAnswer {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
            #[serde(default)]
            expires_in: u64,
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| DistributionError::Protocol(format!("token answer: {e}")))?;
        let token = if answer.access_token.is_empty() {
            answer.token
        } else {
            answer.access_token
        };
        if token.is_empty() {
            return Err(DistributionError::Protocol(
                "token server sent no token".into(),
            ));
        }
        let lifetime = if answer.expires_in == 0 {
            DEFAULT_TOKEN_LIFETIME
        } else {
            Duration::from_secs(answer.expires_in.min(24 * 3600)).max(DEFAULT_TOKEN_LIFETIME)
        };
        Ok((token, lifetime))
    }
}

/// Characters escaped in query values.
const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Escapes a query value.
pub(crate) fn query_escape(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY).to_string()
}

fn plugind_lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the cache cannot leave it inconsistent (single inserts/removes).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn fingerprint(auth: &AuthConfig) -> [u8; 32] {
    let mut h = Sha256::new();
    for field in [
        &auth.username,
        &auth.password,
        &auth.identity_token,
        &auth.registry_token,
    ] {
        match field {
            Some(v) => {
                h.update([1]);
                h.update((v.len() as u64).to_le_bytes());
                h.update(v.as_bytes());
            }
            None => h.update([0]),
        }
    }
    h.finalize().into()
}

fn challenges(resp: &Response<Incoming>) -> Vec<Challenge> {
    resp.headers()
        .get_all(hyper::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(challenge::parse)
        .collect()
}

/// Go's spelling of a method in `failed to do request: Head "…"`.
fn go_method(m: &Method) -> String {
    let s = m.as_str();
    let mut out = s[..1].to_ascii_uppercase();
    out.push_str(&s[1..].to_ascii_lowercase());
    out
}

fn error_chain(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = String::new();
    let mut source = e.source();
    while let Some(s) = source {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&s.to_string());
        source = s.source();
    }
    if text.is_empty() {
        e.to_string()
    } else {
        text
    }
}

fn backoff(attempt: u32) -> Duration {
    // 100 ms, 200 ms, 400 ms ... capped at 3.2 s; jitter from the clock's nanoseconds spreads
    // clients that failed together.
    let base = Duration::from_millis(100) * 2u32.saturating_pow(attempt.min(5));
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() % 50);
    base + Duration::from_millis(u64::from(jitter))
}

/// Resolves `location` (absolute, or a path) against `current`.
pub(crate) fn resolve_location(current: &str, location: &str) -> Result<String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Ok(location.to_owned());
    }
    let uri: Uri = current
        .parse()
        .map_err(|_| DistributionError::Protocol(format!("invalid URL {current:?}")))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(DistributionError::Protocol(format!(
            "invalid URL {current:?}"
        )));
    };
    if location.starts_with("//") {
        return Ok(format!("{scheme}:{location}"));
    }
    if location.starts_with('/') {
        return Ok(format!("{scheme}://{authority}{location}"));
    }
    Err(DistributionError::Protocol(format!(
        "unsupported relative Location {location:?}"
    )))
}

/// Reads the rest of a response and drops it, so the connection can be reused (bounded).
pub(crate) async fn drain(resp: Response<Incoming>) {
    let mut body = resp.into_body();
    let mut left = MAX_ERROR_BODY;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(Duration::from_secs(1), body.frame()).await
    {
        let n = frame.data_ref().map_or(0, |d| d.len() as u64);
        if n >= left {
            return;
        }
        left -= n;
    }
}

/// Reads a whole body of at most `cap` bytes, each read under `deadline`.
pub(crate) async fn read_capped(
    resp: Response<Incoming>,
    cap: u64,
    what: &'static str,
    deadline: Duration,
) -> Result<Bytes> {
    if let Some(len) = content_length(&resp) {
        if len > cap {
            return Err(DistributionError::TooLarge { what, limit: cap });
        }
    }
    let mut body = resp.into_body();
    let mut out = Vec::new();
    loop {
        let frame = tokio::time::timeout(deadline, body.frame())
            .await
            .map_err(|_| DistributionError::Protocol(format!("timeout reading {what}")))?;
        match frame {
            None => break,
            Some(Err(e)) => {
                return Err(DistributionError::Protocol(format!("reading {what}: {e}")))
            }
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if (out.len() + data.len()) as u64 > cap {
                        return Err(DistributionError::TooLarge { what, limit: cap });
                    }
                    out.extend_from_slice(data);
                }
            }
        }
    }
    Ok(Bytes::from(out))
}

pub(crate) fn content_length(resp: &Response<Incoming>) -> Option<u64> {
    resp.headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The registry error of a non-success answer: its `errors[0]` code and message, capped.
pub(crate) async fn registry_error(resp: Response<Incoming>) -> DistributionError {
    let status = resp.status().as_u16();
    let body = read_capped_lossy(resp).await;
    let (code, message) = parse_errors(&body);
    if status == 401 || status == 403 {
        return DistributionError::Unauthorized {
            message: if message.is_empty() {
                format!("registry answered {status}")
            } else {
                message
            },
        };
    }
    DistributionError::Registry {
        status,
        code,
        message,
    }
}

async fn read_capped_lossy(resp: Response<Incoming>) -> Bytes {
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(Duration::from_secs(5), body.frame()).await
    {
        if let Some(data) = frame.data_ref() {
            let room = MAX_ERROR_BODY as usize - out.len();
            out.extend_from_slice(&data[..data.len().min(room)]);
            if out.len() >= MAX_ERROR_BODY as usize {
                break;
            }
        }
    }
    Bytes::from(out)
}

/// `{"errors":[{"code":"…","message":"…"}]}` → (code, message); other bodies → ("", text).
pub(crate) fn parse_errors(body: &[u8]) -> (String, String) {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(Errors { errors }) = serde_json::from_slice::<Errors>(body) {
        if let Some(first) = errors.into_iter().next() {
            return (first.code, printable(&first.message));
        }
    }
    (String::new(), printable(&String::from_utf8_lossy(body)))
}

/// Text from a registry made safe for logs and error messages: control characters dropped,
/// at most 512 characters.
fn printable(s: &str) -> String {
    s.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(512)
        .collect()
}

fn tls_config() -> Result<rustls::ClientConfig> {
    use hyper_rustls::ConfigBuilderExt as _;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = || {
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| DistributionError::Client(format!("TLS: {e}")))
    };
    match builder()?.with_native_roots() {
        Ok(b) => Ok(b.with_no_client_auth()),
        Err(e) => {
            // No system roots: HTTPS registries will fail verification, plain-HTTP ones work.
            tracing::warn!(error = %e, "no system TLS roots found; HTTPS registries cannot be verified");
            Ok(builder()?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_method_spelling() {
        assert_eq!(go_method(&Method::HEAD), "Head");
        assert_eq!(go_method(&Method::GET), "Get");
    }

    #[test]
    fn locations_resolve_against_the_current_url() {
        let cur = "http://127.0.0.1:5000/v2/a/blobs/uploads/";
        assert_eq!(
            resolve_location(cur, "/v2/a/blobs/uploads/u?_state=x").unwrap(),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u?_state=x"
        );
        assert_eq!(
            resolve_location(cur, "https://s3.example/b?sig=1").unwrap(),
            "https://s3.example/b?sig=1"
        );
        assert_eq!(
            resolve_location(cur, "//cdn.example/x").unwrap(),
            "http://cdn.example/x"
        );
        assert!(resolve_location(cur, "relative/path").is_err());
    }

    #[test]
    fn registry_errors_are_parsed_and_made_printable() {
        let (code, message) = parse_errors(
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"nope"}}]}"#,
        );
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("MANIFEST_UNKNOWN", "manifest unknown")
        );
        let (code, message) = parse_errors(b"oops\x1b[31m\n");
        assert_eq!((code.as_str(), message.as_str()), ("", "oops[31m"));
        assert_eq!(parse_errors(&[b'x'; 5000]).1.len(), 512);
    }

    #[test]
    fn credentials_fingerprints_differ() {
        assert_ne!(
            fingerprint(&AuthConfig::basic("a", "b")),
            fingerprint(&AuthConfig::basic("ab", ""))
        );
        assert_ne!(
            fingerprint(&AuthConfig::default()),
            fingerprint(&AuthConfig::basic("a", "b"))
        );
    }
}
