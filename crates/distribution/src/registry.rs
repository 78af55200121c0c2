//! [`Registry`]: the registry client (resolve, fetch, push) with its options.

use std::{
    collections::HashMap,
    sync::{atomic::AtomicU64, Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::{
    body::Incoming,
    header::{HeaderName, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RANGE},
    Method, Response, StatusCode,
};
use plugind_blobstore::{BlobError, BlobStore, Writer};
use plugind_types::{Digest, Reference};

use crate::{
    manifest::{sha256_digest as sha256, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE},
    transport::{
        content_length, drain, query_escape, read_capped, registry_error, BodySource, Req, Session,
        Transport,
    },
    AuthConfig, Descriptor, DistributionError, PluginManifest, Result, MEDIA_TYPE_MANIFEST_LIST,
    MEDIA_TYPE_MANIFEST_V2, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_PLUGIN_CONFIG,
};

/// What `resolve` accepts: the schema-2 type first (registry 2.8 serves a plugin manifest by tag
/// only when it is listed), then the types it recognises and refuses with a clear error.
const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";
/// The header registries put a manifest's or blob's digest in.
const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
/// Bytes between two calls of a fetch's progress callback.
const PROGRESS_STEP: u64 = 256 * 1024;
/// Bytes of small body frames gathered before they go to a download's writer thread.
const COALESCE: usize = 256 * 1024;
/// How often a push reports upload progress.
const UPLOAD_PROGRESS_PERIOD: Duration = Duration::from_millis(200);
/// How often a fetch that waits for a concurrent download of the same blob looks again.
const LOCKED_POLL: Duration = Duration::from_millis(20);

/// Receives a downloaded blob's bytes as they are handed to the ingest, with the ingest offset
/// they start at, on the blocking writer thread (it may block: the download waits).
/// An offset other than the end of what the tee saw means a resumed or restarted download, so
/// a consumer of the stream (an unpacker) must give up on it; a blob another fetch downloaded,
/// or one already stored, reaches the tee not at all. The tee sees bytes before their digest is
/// checked: whatever it builds must be thrown away unless the fetch succeeds.
pub type BlobTee = Arc<dyn Fn(u64, &[u8]) + Send + Sync>;

/// How the client reaches registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Registries reached over plain HTTP besides loopback: `host[:port]` or a CIDR
    /// (`10.0.0.0/8`), as dockerd's `--insecure-registry`.
    pub insecure_registries: Vec<String>,
    /// Deadline for connecting and receiving a response's headers, and for each read of a body.
    pub request_timeout: Duration,
    /// Retries after a transient failure (connect error, 5xx, 429), with backoff.
    pub retries: u32,
    /// The `User-Agent` sent.
    pub user_agent: String,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure_registries: Vec::new(),
            request_timeout: Duration::from_secs(30),
            retries: 3,
            user_agent: concat!("plugind/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Whether a blob was already in the blobstore or had to be downloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The blob was already stored: nothing was downloaded.
    AlreadyExists,
    /// The blob was downloaded (by this call or a concurrent one) and committed.
    Downloaded,
}

/// Progress of a push, per blob (layers, then config) and manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushProgress {
    /// The object is about to be checked.
    Preparing(Digest),
    /// Bytes of a blob sent so far.
    Uploading {
        /// The blob.
        digest: Digest,
        /// Bytes sent.
        current: u64,
        /// The blob's size.
        total: u64,
    },
    /// The object is in the registry: uploaded, or already there (HEAD answered 200).
    UploadComplete(Digest),
    /// The blob was mounted from another repository of the same registry.
    MountedFrom {
        /// The blob.
        digest: Digest,
        /// The repository it was mounted from.
        repository: String,
    },
}

/// A registry client: HTTP(S) connections, and credentials cached per registry and scope.
///
/// Cheap to clone; clones share connections, tokens and the record of which repositories hold
/// which blobs (used for cross-repository mounts on push).
#[derive(Clone, Debug)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    transport: Transport,
    // (registry authority, blob) -> repositories of that registry known to hold it.
    seen: Mutex<HashMap<(String, Digest), Vec<String>>>,
}

/// The most repositories remembered per blob.
const SEEN_PER_BLOB: usize = 8;

fn pull_scope(path: &str) -> String {
    format!("repository(plugin):{path}:pull")
}

fn push_scope(path: &str) -> String {
    format!("repository(plugin):{path}:pull,push")
}

impl Registry {
    /// Builds a client and loads the system's TLS roots. Without any root, HTTPS registries
    /// fail certificate verification; nothing ever falls back to plain HTTP.
    pub fn new(opts: RegistryOptions) -> Result<Registry> {
        Ok(Registry {
            inner: Arc::new(Inner {
                transport: Transport::new(opts)?,
                seen: Mutex::new(HashMap::new()),
            }),
        })
    }

    fn t(&self) -> &Transport {
        &self.inner.transport
    }

    fn session<'a>(&self, r: &Reference, scopes: Vec<String>, auth: &'a AuthConfig) -> Session<'a> {
        Session {
            endpoint: self.t().endpoint(r.domain()),
            scopes,
            auth,
        }
    }

    fn timeout(&self) -> Duration {
        self.t().opts.request_timeout
    }

    /// Resolves a reference (tag or digest) to its manifest: size capped, digest checked
    /// against a digest in the reference and the registry's `Docker-Content-Digest`, media
    /// types checked.
    pub async fn resolve(&self, r: &Reference, auth: &AuthConfig) -> Result<PluginManifest> {
        let session = self.session(r, vec![pull_scope(r.path())], auth);
        let object = match (r.digest(), r.tag()) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_owned(),
            (None, None) => "latest".to_owned(),
        };
        let url = format!(
            "{}/v2/{}/manifests/{object}",
            session.endpoint.base(),
            r.path()
        );
        let req = Req::new(Method::GET, url).header(ACCEPT, MANIFEST_ACCEPT);
        let resp = self.t().send(&session, &req).await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                drain(resp).await;
                return Err(DistributionError::ManifestUnknown {
                    reference: r.familiar_string(),
                });
            }
            _ => return Err(registry_error(resp).await),
        }
        if let Some(ct) = header_str(&resp, &CONTENT_TYPE) {
            let ct = ct.split(';').next().unwrap_or_default().trim().to_owned();
            if ct == MEDIA_TYPE_MANIFEST_LIST || ct == MEDIA_TYPE_OCI_INDEX {
                drain(resp).await;
                return Err(DistributionError::UnsupportedMediaType {
                    what: "manifest",
                    media_type: ct,
                });
            }
        }
        let announced =
            header_str(&resp, &DOCKER_CONTENT_DIGEST).and_then(|v| Digest::parse(v).ok());
        let bytes = read_capped(resp, MAX_MANIFEST_SIZE, "manifest", self.timeout()).await?;
        let actual = sha256(&bytes);
        for expected in [r.digest(), announced.as_ref()].into_iter().flatten() {
            if *expected != actual {
                return Err(DistributionError::DigestMismatch {
                    what: "manifest",
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        PluginManifest::parse(bytes.to_vec()).map_err(|e| match e {
            DistributionError::NotAPlugin { .. } => DistributionError::NotAPlugin {
                reference: r.familiar_string(),
            },
            e => e,
        })
    }

    /// Fetches a small blob (the config), verifies size and digest, stores it in the blobstore
    /// (or reads it from there when present) and returns its bytes.
    pub async fn fetch_config(
        &self,
        r: &Reference,
        auth: &AuthConfig,
        d: &Descriptor,
        store: &BlobStore,
    ) -> Result<Vec<u8>> {
        if d.size > MAX_CONFIG_SIZE {
            return Err(DistributionError::TooLarge {
                what: "plugin config",
                limit: MAX_CONFIG_SIZE,
            });
        }
        let stored = {
            let (store, digest) = (store.clone(), d.digest.clone());
            blocking(move || match std::fs::read(store.blob_path(&digest)) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(DistributionError::Blobstore(BlobError::Io {
                    op: "read",
                    path: store.blob_path(&digest),
                    source: e,
                })),
            })
            .await?
        };
        if let Some(bytes) = stored {
            if bytes.len() as u64 == d.size {
                return Ok(bytes);
            }
        }
        let session = self.session(r, vec![pull_scope(r.path())], auth);
        let resp = self
            .get_blob(&session, r, d, MEDIA_TYPE_PLUGIN_CONFIG, None)
            .await?;
        let bytes = read_capped(resp, d.size, "plugin config", self.timeout()).await?;
        if (bytes.len() as u64) < d.size {
            return Err(DistributionError::Truncated {
                what: "plugin config",
                expected: d.size,
                actual: bytes.len() as u64,
            });
        }
        let actual = sha256(&bytes);
        if actual != d.digest {
            return Err(DistributionError::DigestMismatch {
                what: "plugin config",
                expected: d.digest.clone(),
                actual,
            });
        }
        let (store, digest, data) = (store.clone(), d.digest.clone(), bytes.clone());
        blocking(move || {
            match store.ingest(
                &digest.to_string(),
                &data[..],
                Some((data.len() as u64, &digest)),
            ) {
                // Stored meanwhile, or being stored by a concurrent fetch of the same bytes.
                Ok(_) | Err(BlobError::AlreadyExists { .. } | BlobError::Locked { .. }) => Ok(()),
                Err(e) => Err(DistributionError::Blobstore(e)),
            }
        })
        .await?;
        self.saw(&session, r.path(), &d.digest);
        Ok(bytes.to_vec())
    }

    /// Streams a blob into the blobstore, size and digest verified while it arrives.
    ///
    /// `progress(bytes_so_far)` is called as data arrives. Two concurrent calls for one digest
    /// download it once (the blobstore's per-ref writer lock); a dropped future leaves only a
    /// resumable ingest, which the next call continues with a range request. A connection cut
    /// or a truncated answer is resumed the same way, up to the configured retries.
    pub async fn fetch_blob(
        &self,
        r: &Reference,
        auth: &AuthConfig,
        d: &Descriptor,
        store: &BlobStore,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<FetchOutcome> {
        self.fetch_blob_teed(r, auth, d, store, progress, None)
            .await
    }

    /// [`Registry::fetch_blob`] handing every byte written to the ingest to `tee` as well (so
    /// the caller can unpack while the blob streams).
    pub async fn fetch_blob_teed(
        &self,
        r: &Reference,
        auth: &AuthConfig,
        d: &Descriptor,
        store: &BlobStore,
        progress: &(dyn Fn(u64) + Send + Sync),
        tee: Option<BlobTee>,
    ) -> Result<FetchOutcome> {
        if self.stored_with_size(store, d).await? {
            return Ok(FetchOutcome::AlreadyExists);
        }
        let ingest_ref = d.digest.to_string();
        let mut waited = false;
        let mut writer = loop {
            let (s, rf) = (store.clone(), ingest_ref.clone());
            match blocking(move || Ok(s.writer(&rf))).await? {
                Ok(w) => break w,
                Err(BlobError::Locked { .. }) => {
                    // Another fetch of this blob is under way: wait for its outcome.
                    waited = true;
                    tokio::time::sleep(LOCKED_POLL).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        if self.stored_with_size(store, d).await? {
            blocking(move || writer.abort().map_err(DistributionError::from)).await?;
            return Ok(if waited {
                FetchOutcome::Downloaded
            } else {
                FetchOutcome::AlreadyExists
            });
        }
        let session = self.session(r, vec![pull_scope(r.path())], auth);
        let mut attempt = 0u32;
        loop {
            if writer.offset() > d.size {
                writer = blocking(move || {
                    writer.reset()?;
                    Ok(writer)
                })
                .await?;
            }
            if writer.offset() < d.size {
                let (w, outcome) = self
                    .download(&session, r, d, writer, progress, tee.clone())
                    .await;
                writer = w;
                if let Err(e) = outcome {
                    let discard = matches!(
                        e,
                        DistributionError::TooLarge { .. }
                            | DistributionError::DigestMismatch { .. }
                    );
                    if !discard && is_transient(&e) && attempt < self.t().opts.retries {
                        attempt += 1;
                        tracing::debug!(digest = %d.digest, error = %e, attempt, "blob download interrupted, resuming");
                        continue;
                    }
                    if discard {
                        blocking(move || writer.abort().map_err(DistributionError::from)).await?;
                    } else {
                        writer.close();
                    }
                    return Err(e);
                }
            }
            let (size, digest) = (d.size, d.digest.clone());
            return match blocking(move || Ok(writer.commit(size, &digest))).await? {
                Ok(_) | Err(BlobError::AlreadyExists { .. }) => {
                    self.saw(&session, r.path(), &d.digest);
                    Ok(FetchOutcome::Downloaded)
                }
                Err(BlobError::DigestMismatch {
                    expected, actual, ..
                }) => Err(DistributionError::DigestMismatch {
                    what: "blob",
                    expected,
                    actual,
                }),
                Err(BlobError::SizeMismatch {
                    expected, actual, ..
                }) => Err(DistributionError::Truncated {
                    what: "blob",
                    expected,
                    actual,
                }),
                Err(e) => Err(e.into()),
            };
        }
    }

    async fn stored_with_size(&self, store: &BlobStore, d: &Descriptor) -> Result<bool> {
        let (store, digest) = (store.clone(), d.digest.clone());
        let size = d.size;
        blocking(move || match store.info(&digest) {
            Ok(info) => Ok(info.size == size),
            Err(BlobError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        })
        .await
    }

    /// GETs a blob (redirects followed), from `offset` when given; non-success → error.
    async fn get_blob(
        &self,
        session: &Session<'_>,
        r: &Reference,
        d: &Descriptor,
        accept: &str,
        offset: Option<u64>,
    ) -> Result<Response<Incoming>> {
        let url = format!(
            "{}/v2/{}/blobs/{}",
            session.endpoint.base(),
            r.path(),
            d.digest
        );
        let mut req = Req::new(Method::GET, url).header(ACCEPT, &format!("{accept}, */*"));
        if let Some(offset) = offset {
            req = req.header(RANGE, &format!("bytes={offset}-"));
        }
        req.follow_redirects = true;
        let resp = self.t().send(session, &req).await?;
        match resp.status() {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => Ok(resp),
            StatusCode::NOT_FOUND => {
                drain(resp).await;
                Err(DistributionError::BlobUnknown {
                    repository: r.full_name(),
                    digest: d.digest.clone(),
                })
            }
            _ => Err(registry_error(resp).await),
        }
    }

    /// One download attempt from the writer's offset; gives the writer back in every case.
    async fn download(
        &self,
        session: &Session<'_>,
        r: &Reference,
        d: &Descriptor,
        mut writer: Writer,
        progress: &(dyn Fn(u64) + Send + Sync),
        tee: Option<BlobTee>,
    ) -> (Writer, Result<()>) {
        let offset = writer.offset();
        let resp = match self
            .get_blob(session, r, d, &d.media_type, (offset > 0).then_some(offset))
            .await
        {
            Ok(resp) => resp,
            Err(e) => return (writer, Err(e)),
        };
        let start = if resp.status() == StatusCode::PARTIAL_CONTENT {
            match content_range_start(&resp) {
                Some(s) if s == offset => offset,
                _ => {
                    return (
                        writer,
                        Err(DistributionError::Protocol(
                            "range answer does not start where asked".into(),
                        )),
                    )
                }
            }
        } else {
            0
        };
        if start == 0 && offset > 0 {
            // The registry ignored the range: start over.
            writer = match blocking_writer(writer, |w| w.reset()).await {
                (w, Ok(())) => w,
                (w, Err(e)) => return (w, Err(e)),
            };
        }
        if let Some(len) = content_length(&resp) {
            if start.saturating_add(len) > d.size {
                return (
                    writer,
                    Err(DistributionError::TooLarge {
                        what: "blob",
                        limit: d.size,
                    }),
                );
            }
        }
        // The writer lives on a blocking thread; chunks reach it through a small channel, so
        // hashing and disk writes overlap the network (and each other: `copy_from` hashes and
        // writes on threads of their own). A dropped future closes the channel and the writer
        // is dropped there, keeping the ingest resumable (reopening it rehashes its data).
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let task = tokio::task::spawn_blocking(move || {
            let mut chunks = ChunkSource {
                rx,
                chunk: Bytes::new(),
                at: writer.offset(),
                tee,
            };
            let copied = writer.copy_from(&mut chunks).map(drop);
            (writer, copied)
        });
        let mut body = resp.into_body();
        let mut total = start;
        let mut reported = start;
        // Small frames are gathered into chunks of COALESCE bytes: one hand-off to the writer
        // thread per chunk rather than per frame. Only frames already there are gathered: when
        // the body has to wait, what was gathered goes to the writer first, so a stalled or
        // abandoned download keeps everything received in its resumable ingest.
        let mut gathered = bytes::BytesMut::new();
        let streamed: Result<()> = async {
            loop {
                let ready = futures::FutureExt::now_or_never(body.frame());
                let frame = match ready {
                    Some(frame) => frame,
                    None => {
                        if !gathered.is_empty() && tx.send(gathered.split().freeze()).await.is_err()
                        {
                            break; // the writer failed; its error is reported below
                        }
                        tokio::time::timeout(self.timeout(), body.frame())
                            .await
                            .map_err(|_| {
                                DistributionError::Protocol("timeout reading blob".into())
                            })?
                    }
                };
                let Some(frame) = frame else { break };
                let frame =
                    frame.map_err(|e| DistributionError::Protocol(format!("reading blob: {e}")))?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                total += data.len() as u64;
                if total > d.size {
                    return Err(DistributionError::TooLarge {
                        what: "blob",
                        limit: d.size,
                    });
                }
                let chunk = if gathered.is_empty() && data.len() >= COALESCE {
                    data
                } else {
                    gathered.extend_from_slice(&data);
                    if gathered.len() < COALESCE {
                        continue;
                    }
                    gathered.split().freeze()
                };
                if tx.send(chunk).await.is_err() {
                    break; // the writer failed; its error is reported below
                }
                if total - reported >= PROGRESS_STEP {
                    reported = total;
                    progress(total);
                }
            }
            Ok(())
        }
        .await;
        if !gathered.is_empty() && !matches!(streamed, Err(DistributionError::TooLarge { .. })) {
            // Received in order: worth keeping even when the stream was cut after them.
            let _ = tx.send(gathered.freeze()).await;
        }
        drop(tx);
        let (writer, written) = match task.await {
            Ok(pair) => pair,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        if let Err(e) = written {
            return (writer, Err(DistributionError::Blobstore(e)));
        }
        if let Err(e) = streamed {
            return (writer, Err(e));
        }
        if writer.offset() < d.size {
            let actual = writer.offset();
            return (
                writer,
                Err(DistributionError::Truncated {
                    what: "blob",
                    expected: d.size,
                    actual,
                }),
            );
        }
        progress(total);
        (writer, Ok(()))
    }

    /// Pushes the manifest's blobs (HEAD first, cross-repository mount when the blob is known
    /// in another repository of the registry, upload otherwise), then the manifest under the
    /// target's tag (HEAD first: a re-push uploads nothing). Returns the manifest digest and
    /// size as stored.
    pub async fn push(
        &self,
        target: &Reference,
        auth: &AuthConfig,
        manifest: &PluginManifest,
        store: &BlobStore,
        progress: &(dyn Fn(PushProgress) + Send + Sync),
    ) -> Result<(Digest, u64)> {
        if target.digest().is_some() {
            return Err(DistributionError::InvalidReference {
                reference: target.familiar_string(),
                reason: "cannot push to a digest reference",
            });
        }
        let tag = target.tag().unwrap_or("latest");
        let session = self.session(target, vec![push_scope(target.path())], auth);
        let blobs: Vec<&Descriptor> = manifest.layers.iter().chain([&manifest.config]).collect();
        for d in &blobs {
            progress(PushProgress::Preparing(d.digest.clone()));
        }
        futures::future::try_join_all(
            blobs
                .iter()
                .map(|d| self.push_blob(&session, target, d, store, progress)),
        )
        .await?;
        let url = format!(
            "{}/v2/{}/manifests/{tag}",
            session.endpoint.base(),
            target.path()
        );
        let head = Req::new(Method::HEAD, url.clone()).header(ACCEPT, MEDIA_TYPE_MANIFEST_V2);
        let resp = self.t().send(&session, &head).await?;
        let present = resp.status() == StatusCode::OK
            && header_str(&resp, &DOCKER_CONTENT_DIGEST)
                .and_then(|v| Digest::parse(v).ok())
                .is_some_and(|d| d == manifest.digest);
        drain(resp).await;
        if !present {
            let mut put = Req::new(Method::PUT, url).header(CONTENT_TYPE, MEDIA_TYPE_MANIFEST_V2);
            put.body = BodySource::Bytes(Bytes::from(manifest.bytes.clone()));
            let resp = self.t().send(&session, &put).await?;
            if !resp.status().is_success() {
                return Err(registry_error(resp).await);
            }
            if let Some(stored) =
                header_str(&resp, &DOCKER_CONTENT_DIGEST).and_then(|v| Digest::parse(v).ok())
            {
                if stored != manifest.digest {
                    return Err(DistributionError::DigestMismatch {
                        what: "pushed manifest",
                        expected: manifest.digest.clone(),
                        actual: stored,
                    });
                }
            }
            drain(resp).await;
        }
        Ok((manifest.digest.clone(), manifest.bytes.len() as u64))
    }

    async fn push_blob(
        &self,
        session: &Session<'_>,
        target: &Reference,
        d: &Descriptor,
        store: &BlobStore,
        progress: &(dyn Fn(PushProgress) + Send + Sync),
    ) -> Result<()> {
        let (s, digest) = (store.clone(), d.digest.clone());
        let info = blocking(move || s.info(&digest).map_err(DistributionError::from)).await?;
        if info.size != d.size {
            return Err(DistributionError::InvalidManifest {
                reason: format!(
                    "blob {} is {} bytes in the store, the manifest says {}",
                    d.digest, info.size, d.size
                ),
            });
        }
        let base = session.endpoint.base();
        let path = target.path();
        let head = Req::new(Method::HEAD, format!("{base}/v2/{path}/blobs/{}", d.digest));
        let resp = self.t().send(session, &head).await?;
        match resp.status() {
            StatusCode::OK => {
                drain(resp).await;
                self.saw(session, path, &d.digest);
                progress(PushProgress::UploadComplete(d.digest.clone()));
                return Ok(());
            }
            StatusCode::NOT_FOUND => drain(resp).await,
            _ => return Err(registry_error(resp).await),
        }
        let mut location = None;
        if let Some(from) = self.mount_candidate(session, path, &d.digest) {
            let mount_session = Session {
                endpoint: session.endpoint.clone(),
                scopes: vec![push_scope(path), pull_scope(&from)],
                auth: session.auth,
            };
            let url = format!(
                "{base}/v2/{path}/blobs/uploads/?mount={}&from={}",
                query_escape(&d.digest.to_string()),
                query_escape(&from)
            );
            let resp = self
                .t()
                .send(&mount_session, &Req::new(Method::POST, url.clone()))
                .await?;
            match resp.status() {
                StatusCode::CREATED => {
                    drain(resp).await;
                    self.saw(session, path, &d.digest);
                    progress(PushProgress::MountedFrom {
                        digest: d.digest.clone(),
                        repository: from,
                    });
                    progress(PushProgress::UploadComplete(d.digest.clone()));
                    return Ok(());
                }
                // Mount refused: the registry opened an ordinary upload instead.
                StatusCode::ACCEPTED => {
                    location = Some(self.location(&url, &resp)?);
                    drain(resp).await;
                }
                status => {
                    tracing::debug!(%status, digest = %d.digest, %from, "cross-repository mount failed, uploading");
                    drain(resp).await;
                }
            }
        }
        let location = match location {
            Some(l) => l,
            None => {
                let url = format!("{base}/v2/{path}/blobs/uploads/");
                let resp = self
                    .t()
                    .send(session, &Req::new(Method::POST, url.clone()))
                    .await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(registry_error(resp).await);
                }
                let l = self.location(&url, &resp)?;
                drain(resp).await;
                l
            }
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!(
            "{location}{sep}digest={}",
            query_escape(&d.digest.to_string())
        );
        let sent = Arc::new(AtomicU64::new(0));
        let mut put = Req::new(Method::PUT, url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, &d.size.to_string());
        put.body = BodySource::Blob {
            store: store.clone(),
            digest: d.digest.clone(),
            sent: sent.clone(),
        };
        let send = self.t().send(session, &put);
        tokio::pin!(send);
        let mut ticker = tokio::time::interval(UPLOAD_PROGRESS_PERIOD);
        ticker.tick().await;
        let resp = loop {
            tokio::select! {
                resp = &mut send => break resp?,
                _ = ticker.tick() => progress(PushProgress::Uploading {
                    digest: d.digest.clone(),
                    current: sent.load(std::sync::atomic::Ordering::Relaxed),
                    total: d.size,
                }),
            }
        };
        if resp.status() != StatusCode::CREATED {
            return Err(registry_error(resp).await);
        }
        drain(resp).await;
        self.saw(session, path, &d.digest);
        progress(PushProgress::UploadComplete(d.digest.clone()));
        Ok(())
    }

    fn location(&self, url: &str, resp: &Response<Incoming>) -> Result<String> {
        let l = header_str(resp, &LOCATION)
            .ok_or_else(|| DistributionError::Protocol("upload answer without Location".into()))?;
        self.t().redirect_target(url, l)
    }

    /// Remembers that `repository` of the session's registry holds `digest`.
    fn saw(&self, session: &Session<'_>, repository: &str, digest: &Digest) {
        let mut seen = self.inner.seen.lock().unwrap_or_else(|p| p.into_inner());
        let repos = seen
            .entry((session.endpoint.authority.clone(), digest.clone()))
            .or_default();
        if !repos.iter().any(|r| r == repository) {
            if repos.len() == SEEN_PER_BLOB {
                repos.remove(0);
            }
            repos.push(repository.to_owned());
        }
    }

    /// Another repository of the session's registry known to hold `digest`.
    fn mount_candidate(
        &self,
        session: &Session<'_>,
        repository: &str,
        digest: &Digest,
    ) -> Option<String> {
        let seen = self.inner.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(&(session.endpoint.authority.clone(), digest.clone()))?
            .iter()
            .rev()
            .find(|r| *r != repository)
            .cloned()
    }
}

fn header_str<'a>(resp: &'a Response<Incoming>, name: &HeaderName) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The first byte of `Content-Range: bytes <first>-<last>/<total>`.
fn content_range_start(resp: &Response<Incoming>) -> Option<u64> {
    let v = header_str(resp, &hyper::header::CONTENT_RANGE)?;
    let range = v.strip_prefix("bytes ")?;
    range.split_once('-')?.0.trim().parse().ok()
}

/// Failures worth resuming a download after.
fn is_transient(e: &DistributionError) -> bool {
    match e {
        DistributionError::Unreachable { .. }
        | DistributionError::Protocol(_)
        | DistributionError::Truncated { .. } => true,
        DistributionError::Registry { status, .. } => *status == 429 || *status >= 500,
        _ => false,
    }
}

/// The chunks of a download as a reader (for the ingest's pipelined copy); hands each chunk
/// to the tee, with its ingest offset, as it is taken from the channel. The channel's end is
/// the end of the stream.
struct ChunkSource {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    chunk: Bytes,
    at: u64,
    tee: Option<BlobTee>,
}

impl std::io::Read for ChunkSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            let Some(chunk) = self.rx.blocking_recv() else {
                return Ok(0);
            };
            if let Some(tee) = &self.tee {
                tee(self.at, &chunk);
            }
            self.at += chunk.len() as u64;
            self.chunk = chunk;
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        bytes::Buf::advance(&mut self.chunk, n);
        Ok(n)
    }
}

/// Runs blocking disk work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Runs a blocking operation on a writer and hands the writer back.
async fn blocking_writer(
    mut writer: Writer,
    f: impl FnOnce(&mut Writer) -> Result<(), BlobError> + Send + 'static,
) -> (Writer, Result<()>) {
    match tokio::task::spawn_blocking(move || {
        let r = f(&mut writer);
        (writer, r)
    })
    .await
    {
        Ok((w, r)) => (w, r.map_err(DistributionError::from)),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: T) {}

    #[test]
    fn futures_are_send_so_callers_can_spawn_them() {
        let Ok(registry) = Registry::new(RegistryOptions::default()) else {
            panic!("client")
        };
        let r = Reference::parse_normalized("127.0.0.1:1/a/b:1").unwrap();
        let auth = AuthConfig::default();
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let m = PluginManifest::parse(
            br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.docker.plugin.v1+json","digest":"sha256:da12c96a2c31c648951e1dc8a4f8bc6cc76154716c2a56e895437c6f070d59e3","size":804},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"sha256:cec2e3189279134d83a5bff0a10f82ca2a75853be6a9ee7a6e747af1845b8f01","size":1669322}],"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#.to_vec(),
        )
        .unwrap();
        assert_send(registry.resolve(&r, &auth));
        assert_send(registry.fetch_config(&r, &auth, &m.config, &store));
        assert_send(registry.fetch_blob(&r, &auth, &m.layers[0], &store, &|_| {}));
        assert_send(registry.push(&r, &auth, &m, &store, &|_| {}));
    }

    #[test]
    fn content_range_and_transient_classification() {
        assert!(is_transient(&DistributionError::Registry {
            status: 503,
            code: String::new(),
            message: String::new()
        }));
        assert!(!is_transient(&DistributionError::Registry {
            status: 404,
            code: String::new(),
            message: String::new()
        }));
        assert!(!is_transient(&DistributionError::TooLarge {
            what: "blob",
            limit: 1
        }));
    }
}
