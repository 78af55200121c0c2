//! The registry client against a fake registry that lies: wrong digests, too much or too little
//! data, cut connections, 500s, redirects, huge error bodies, token servers; and the blob
//! guarantees (nothing wrong is ever committed, concurrent fetches download once, a dropped
//! fetch leaves a resumable ingest that the next fetch continues with a range request).

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::{body::Frame, service::service_fn, HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use plugind_blobstore::BlobStore;
use plugind_distribution::{
    sha256_digest, AuthConfig, Descriptor, DistributionError, FetchOutcome, PluginManifest,
    Registry, RegistryOptions, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_PLUGIN_CONFIG,
};
use plugind_types::Reference;

type Body = BoxBody<Bytes, std::io::Error>;

/// A request the fake saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// What the fake answers; `n` is how many requests for this path it saw before.
type Handler = Arc<dyn Fn(&Seen, usize) -> Response<Body> + Send + Sync>;

struct Fake {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    async fn start(
        handler: impl Fn(&Seen, usize) -> Response<Body> + Send + Sync + 'static,
    ) -> Fake {
        let handler: Handler = Arc::new(handler);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let handler = handler.clone();
                        let log = log.clone();
                        async move {
                            let method = req.method().to_string();
                            let path = req
                                .uri()
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default();
                            let headers = req.headers().clone();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let s = Seen {
                                method,
                                path,
                                headers,
                                body,
                            };
                            let n = {
                                let mut log = log.lock().unwrap();
                                let n = log.iter().filter(|x| x.path == s.path).count();
                                log.push(s.clone());
                                n
                            };
                            Ok::<_, Infallible>(handler(&s, n))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Fake { addr, seen }
    }

    fn count(&self, method: &str, path_part: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == method && s.path.contains(path_part))
            .count()
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn reference(&self, repo_and_tag: &str) -> Reference {
        Reference::parse_normalized(&format!("{}/{repo_and_tag}", self.addr)).unwrap()
    }
}

fn reply(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()).map_err(|n| match n {}).boxed());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    for (k, v) in headers {
        resp.headers_mut().insert(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    resp
}

/// A streamed answer: `chunks`, then the connection is cut (`cut`) or the body ends.
fn streamed(
    status: u16,
    headers: &[(&str, &str)],
    chunks: Vec<Bytes>,
    cut: bool,
) -> Response<Body> {
    let mut frames: Vec<Result<Frame<Bytes>, std::io::Error>> =
        chunks.into_iter().map(|c| Ok(Frame::data(c))).collect();
    if cut {
        frames.push(Err(std::io::Error::other("cut")));
    }
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(futures::stream::iter(
        frames,
    ))));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    for (k, v) in headers {
        resp.headers_mut().insert(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    resp
}

/// A body that sends `first`, lets it reach the client, then cuts the connection.
fn cut_after(first: Bytes, total: u64) -> Response<Body> {
    let stream = futures::stream::iter([Ok::<_, std::io::Error>(Frame::data(first))]).chain(
        futures::stream::once(async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Err(std::io::Error::other("cut"))
        }),
    );
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut()
        .insert("content-length", total.to_string().parse().unwrap());
    resp
}

/// A body that sends `first` and then nothing, forever.
fn stalled(first: Bytes, total: u64) -> Response<Body> {
    let stream = futures::stream::iter([Ok::<_, std::io::Error>(Frame::data(first))])
        .chain(futures::stream::pending());
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut()
        .insert("content-length", total.to_string().parse().unwrap());
    resp
}

use futures::StreamExt as _;

fn client() -> Registry {
    Registry::new(RegistryOptions {
        request_timeout: Duration::from_secs(5),
        retries: 2,
        ..RegistryOptions::default()
    })
    .unwrap()
}

fn store() -> (tempfile::TempDir, BlobStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    (dir, store)
}

fn layer_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn descriptor(bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: MEDIA_TYPE_LAYER_GZIP.into(),
        digest: sha256_digest(bytes),
        size: bytes.len() as u64,
    }
}

fn no_progress(_: u64) {}

const ANON: AuthConfig = AuthConfig {
    username: None,
    password: None,
    identity_token: None,
    registry_token: None,
};

fn manifest_of(config: &[u8], layer: &[u8]) -> PluginManifest {
    PluginManifest::build(
        Descriptor {
            media_type: MEDIA_TYPE_PLUGIN_CONFIG.into(),
            digest: sha256_digest(config),
            size: config.len() as u64,
        },
        vec![descriptor(layer)],
    )
}

#[tokio::test]
async fn a_blob_with_the_wrong_content_is_never_committed() {
    let layer = layer_bytes(100_000);
    let mut evil = layer.clone();
    evil[5000] ^= 1;
    let fake = Fake::start(move |_, _| reply(200, &[], evil.clone())).await;
    let (_d, store) = store();
    let d = descriptor(&layer);
    let err = client()
        .fetch_blob(&fake.reference("a/b:1"), &ANON, &d, &store, &no_progress)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DistributionError::DigestMismatch { .. }),
        "{err:?}"
    );
    assert!(!store.contains(&d.digest));
    assert!(
        store.walk().unwrap().next().is_none(),
        "something was committed"
    );
    assert!(
        store.ingests().unwrap().is_empty(),
        "a lying ingest was kept"
    );
}

#[tokio::test]
async fn a_blob_larger_than_its_descriptor_is_cut_off() {
    let layer = layer_bytes(50_000);
    let mut longer = layer.clone();
    longer.extend_from_slice(&[0; 10]);
    // Announced by Content-Length, and not announced (chunked).
    let announced = longer.clone();
    let fake = Fake::start(move |s, _| {
        if s.path.contains("chunked") {
            streamed(200, &[], vec![Bytes::from(longer.clone())], false)
        } else {
            reply(200, &[], announced.clone())
        }
    })
    .await;
    let (_d, store) = store();
    let d = descriptor(&layer);
    for repo in ["a/plain:1", "a/chunked:1"] {
        let err = client()
            .fetch_blob(&fake.reference(repo), &ANON, &d, &store, &no_progress)
            .await
            .unwrap_err();
        assert!(
            matches!(err, DistributionError::TooLarge { .. }),
            "{repo}: {err:?}"
        );
        assert!(!store.contains(&d.digest));
    }
    assert!(store.ingests().unwrap().is_empty());
}

#[tokio::test]
async fn a_cut_download_is_resumed_with_a_range_request() {
    let layer = layer_bytes(300_000);
    let body = layer.clone();
    let fake = Fake::start(move |s, n| {
        if n == 0 {
            // The first answer dies after 100 000 bytes.
            return cut_after(Bytes::copy_from_slice(&body[..100_000]), 300_000);
        }
        let range = s.headers.get("range").unwrap().to_str().unwrap().to_owned();
        let start: usize = range
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .unwrap()
            .parse()
            .unwrap();
        reply(
            206,
            &[("content-range", &format!("bytes {start}-299999/300000"))],
            body[start..].to_vec(),
        )
    })
    .await;
    let (_d, store) = store();
    let d = descriptor(&layer);
    let outcome = client()
        .fetch_blob(&fake.reference("a/b:1"), &ANON, &d, &store, &no_progress)
        .await
        .unwrap();
    assert_eq!(outcome, FetchOutcome::Downloaded);
    assert!(store.contains(&d.digest));
    let gets = fake.requests();
    assert_eq!(gets.len(), 2);
    assert!(gets[0].headers.get("range").is_none());
    assert_eq!(gets[1].headers["range"], "bytes=100000-");
}

#[tokio::test]
async fn a_truncated_answer_fails_and_keeps_a_resumable_ingest() {
    let layer = layer_bytes(10_000);
    let short = layer[..4_000].to_vec();
    let fake =
        Fake::start(move |_, _| streamed(200, &[], vec![Bytes::from(short.clone())], false)).await;
    let (_d, store) = store();
    let d = descriptor(&layer);
    let err = client()
        .fetch_blob(&fake.reference("a/b:1"), &ANON, &d, &store, &no_progress)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DistributionError::Truncated { .. }),
        "{err:?}"
    );
    assert!(!store.contains(&d.digest));
    let ingests = store.ingests().unwrap();
    assert_eq!(ingests.len(), 1);
    assert_eq!(
        ingests[0].offset, 4_000,
        "the partial data is kept for a resume"
    );
    // Retries asked for the rest each time (the fake ignores ranges and sends the start again,
    // which the client treats as a restart from byte 0).
    assert_eq!(fake.count("GET", "/blobs/"), 3);
}

#[tokio::test]
async fn server_errors_are_retried_and_client_errors_are_not() {
    let config = b"{\"Description\":\"x\"}\n".to_vec();
    let body = config.clone();
    let fake = Fake::start(move |s, n| {
        if s.path.contains("/flaky/") && n < 2 {
            return reply(if n == 0 { 503 } else { 429 }, &[], "busy");
        }
        if s.path.contains("/denied/") {
            return reply(
                403,
                &[],
                r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#,
            );
        }
        reply(200, &[], body.clone())
    })
    .await;
    let (_d, store) = store();
    let d = Descriptor {
        media_type: MEDIA_TYPE_PLUGIN_CONFIG.into(),
        digest: sha256_digest(&config),
        size: config.len() as u64,
    };
    let got = client()
        .fetch_config(&fake.reference("flaky/p:1"), &ANON, &d, &store)
        .await
        .unwrap();
    assert_eq!(got, config);
    assert_eq!(fake.count("GET", "/flaky/"), 3);
    let (_d2, other) = self::store();
    let err = client()
        .fetch_config(&fake.reference("denied/p:1"), &ANON, &d, &other)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DistributionError::Unauthorized { .. }),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .contains("requested access to the resource is denied"));
    assert_eq!(fake.count("GET", "/denied/"), 1, "a 4xx was retried");
}

#[tokio::test]
async fn blob_redirects_are_followed_without_credentials_to_the_other_host() {
    let layer = layer_bytes(20_000);
    let body = layer.clone();
    let storage = Fake::start(move |_, _| reply(200, &[], body.clone())).await;
    let storage_addr = storage.addr;
    let registry = Fake::start(move |s, _| {
        if s.headers.get("authorization").is_none() {
            return reply(401, &[("www-authenticate", "Basic realm=\"r\"")], "");
        }
        reply(
            307,
            &[(
                "location",
                &format!("http://{storage_addr}/bucket/blob?sig=1"),
            )],
            "",
        )
    })
    .await;
    let (_d, store) = store();
    let d = descriptor(&layer);
    let auth = AuthConfig::basic("u", "p");
    client()
        .fetch_blob(
            &registry.reference("a/b:1"),
            &auth,
            &d,
            &store,
            &no_progress,
        )
        .await
        .unwrap();
    assert!(store.contains(&d.digest));
    let fetched = storage.requests();
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].path, "/bucket/blob?sig=1");
    assert!(
        fetched[0].headers.get("authorization").is_none(),
        "credentials leaked to the redirect target"
    );
}

#[tokio::test]
async fn a_redirect_to_plain_http_elsewhere_is_refused() {
    let fake =
        Fake::start(|_, _| reply(302, &[("location", "http://example.invalid/blob")], "")).await;
    let (_d, store) = store();
    let err = client()
        .fetch_blob(
            &fake.reference("a/b:1"),
            &ANON,
            &descriptor(b"x"),
            &store,
            &no_progress,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, DistributionError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn manifests_are_checked_against_the_pinned_and_the_announced_digest() {
    let good = manifest_of(b"{}\n", b"layer");
    let bytes = good.bytes.clone();
    let other = manifest_of(b"{}\n", b"other layer");
    let other_digest = other.digest.to_string();
    let fake = Fake::start(move |s, _| {
        if s.path.contains("/lying/") {
            return reply(
                200,
                &[("docker-content-digest", &other_digest)],
                bytes.clone(),
            );
        }
        if s.path.contains("/big/") {
            return reply(200, &[], vec![b' '; 5 << 20]);
        }
        if s.path.contains("/list/") {
            return reply(
                200,
                &[(
                    "content-type",
                    "application/vnd.docker.distribution.manifest.list.v2+json",
                )],
                "{}",
            );
        }
        if s.path.contains("/gone/") {
            return reply(
                404,
                &[],
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            );
        }
        reply(200, &[], bytes.clone())
    })
    .await;
    let c = client();
    assert_eq!(
        c.resolve(&fake.reference("ok/p:1"), &ANON).await.unwrap(),
        good
    );
    let pinned_ok = fake.reference(&format!("ok/p@{}", good.digest));
    assert_eq!(c.resolve(&pinned_ok, &ANON).await.unwrap(), good);
    let pinned_wrong = fake.reference(&format!("ok/p@{}", other.digest));
    assert!(matches!(
        c.resolve(&pinned_wrong, &ANON).await,
        Err(DistributionError::DigestMismatch {
            what: "manifest",
            ..
        })
    ));
    assert!(matches!(
        c.resolve(&fake.reference("lying/p:1"), &ANON).await,
        Err(DistributionError::DigestMismatch { .. })
    ));
    assert!(matches!(
        c.resolve(&fake.reference("big/p:1"), &ANON).await,
        Err(DistributionError::TooLarge {
            what: "manifest",
            ..
        })
    ));
    assert!(matches!(
        c.resolve(&fake.reference("list/p:1"), &ANON).await,
        Err(DistributionError::UnsupportedMediaType { .. })
    ));
    let gone = c
        .resolve(&fake.reference("gone/p:nope"), &ANON)
        .await
        .unwrap_err();
    assert!(
        matches!(gone, DistributionError::ManifestUnknown { .. }),
        "{gone:?}"
    );
    // The Accept header names the schema-2 type first (registry 2.8 needs it).
    let accept = fake.requests()[0].headers["accept"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        accept.starts_with("application/vnd.docker.distribution.manifest.v2+json"),
        "{accept}"
    );
}

#[tokio::test]
async fn an_image_is_not_a_plugin() {
    let image = manifest_of(b"{}\n", b"l").bytes;
    let image = String::from_utf8(image).unwrap().replace(
        MEDIA_TYPE_PLUGIN_CONFIG,
        "application/vnd.docker.container.image.v1+json",
    );
    let fake = Fake::start(move |_, _| reply(200, &[], image.clone())).await;
    let err = client()
        .resolve(&fake.reference("acme/image:1"), &ANON)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "did not find plugin config for specified reference {}/acme/image:1",
            fake.addr
        )
    );
}

#[tokio::test]
async fn huge_error_bodies_are_capped() {
    let fake = Fake::start(|_, _| reply(400, &[], vec![b'e'; 8 << 20])).await;
    let err = client()
        .resolve(&fake.reference("a/b:1"), &ANON)
        .await
        .unwrap_err();
    match err {
        DistributionError::Registry {
            status, message, ..
        } => {
            assert_eq!(status, 400);
            assert!(message.len() <= 512, "{}", message.len());
        }
        e => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn bearer_tokens_are_fetched_with_the_plugin_scope_and_cached() {
    let token_calls = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let calls = token_calls.clone();
    let manifest = manifest_of(b"{}\n", b"layer");
    let bytes = manifest.bytes.clone();
    let fake = Fake::start(move |s, _| {
        if s.path.starts_with("/token") {
            calls.lock().unwrap().push(s.clone());
            let good =
                s.headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Basic dTpw");
            return if good {
                reply(200, &[], r#"{"token":"tok-1","expires_in":300}"#)
            } else {
                reply(
                    401,
                    &[],
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#,
                )
            };
        }
        if s.headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer tok-1") {
            let host = s.headers["host"].to_str().unwrap().to_owned();
            return reply(
                401,
                &[(
                    "www-authenticate",
                    &format!("Bearer realm=\"http://{host}/token\",service=\"fake\",scope=\"x\""),
                )],
                "",
            );
        }
        reply(200, &[], bytes.clone())
    })
    .await;
    let c = client();
    let r = fake.reference("acme/p:1");
    let good = AuthConfig::basic("u", "p");
    assert_eq!(c.resolve(&r, &good).await.unwrap(), manifest);
    assert_eq!(c.resolve(&r, &good).await.unwrap(), manifest);
    let calls = token_calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "the token was not cached");
    assert_eq!(
        calls[0].path,
        "/token?service=fake&scope=repository%28plugin%29%3Aacme%2Fp%3Apull"
    );
    // Other credentials never reuse the cached token, and wrong ones are refused.
    let err = c
        .resolve(&r, &AuthConfig::basic("u", "wrong"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DistributionError::Unauthorized { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("bad credentials"), "{err}");
    // A registry token is used as the bearer token directly.
    let direct = AuthConfig {
        registry_token: Some("tok-1".into()),
        ..AuthConfig::default()
    };
    assert_eq!(c.resolve(&r, &direct).await.unwrap(), manifest);
    assert_eq!(token_calls.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_fetches_of_one_blob_download_it_once() {
    let layer = layer_bytes(200_000);
    let body = layer.clone();
    let fake = Fake::start(move |_, _| {
        // Slow enough that the second fetch starts while the first holds the ingest.
        std::thread::sleep(Duration::from_millis(300));
        reply(200, &[], body.clone())
    })
    .await;
    let (_d, store) = store();
    let d = descriptor(&layer);
    let c = client();
    let r = fake.reference("a/b:1");
    let (a, b) = tokio::join!(
        c.fetch_blob(&r, &ANON, &d, &store, &no_progress),
        c.fetch_blob(&r, &ANON, &d, &store, &no_progress)
    );
    assert_eq!(a.unwrap(), FetchOutcome::Downloaded);
    assert_eq!(b.unwrap(), FetchOutcome::Downloaded);
    assert_eq!(fake.count("GET", "/blobs/"), 1);
    assert!(store.contains(&d.digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_fetch_leaves_a_resumable_ingest() {
    let layer = layer_bytes(100_000);
    let body = layer.clone();
    let resumed_from = Arc::new(Mutex::new(HashMap::new()));
    let record = resumed_from.clone();
    let fake = Fake::start(move |s, n| {
        if n == 0 {
            return stalled(Bytes::copy_from_slice(&body[..30_000]), 100_000);
        }
        let range = s
            .headers
            .get("range")
            .map(|v| v.to_str().unwrap().to_owned());
        record.lock().unwrap().insert(n, range);
        reply(
            206,
            &[("content-range", "bytes 30000-99999/100000")],
            body[30_000..].to_vec(),
        )
    })
    .await;
    let (_d, store) = store();
    let d = descriptor(&layer);
    let c = client();
    let r = fake.reference("a/b:1");
    // The client goes away while the registry stalls.
    let seen = Arc::new(Mutex::new(0u64));
    let progress_seen = seen.clone();
    let progress = move |n: u64| *progress_seen.lock().unwrap() = n;
    let dropped = tokio::time::timeout(
        Duration::from_millis(500),
        c.fetch_blob(&r, &ANON, &d, &store, &progress),
    )
    .await;
    assert!(dropped.is_err(), "the fetch should still be waiting");
    // The writer's thread drains what it was sent, then releases the ingest. (The deadline
    // only turns a lost-bytes regression into a failure instead of a hang.)
    let hang_guard = std::time::Instant::now();
    let ingest = loop {
        assert!(
            hang_guard.elapsed() < Duration::from_secs(60),
            "the bytes received before the drop never reached the ingest: {:?}",
            store.ingests().unwrap()
        );
        let ingests = store.ingests().unwrap();
        if let Some(i) = ingests.first().filter(|i| i.offset == 30_000) {
            break i.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(ingest.offset, 30_000);
    assert!(!store.contains(&d.digest));
    c.fetch_blob(&r, &ANON, &d, &store, &no_progress)
        .await
        .unwrap();
    assert!(store.contains(&d.digest));
    assert_eq!(
        resumed_from
            .lock()
            .unwrap()
            .get(&1)
            .cloned()
            .flatten()
            .as_deref(),
        Some("bytes=30000-")
    );
}

#[tokio::test]
async fn an_identity_token_is_exchanged_through_the_oauth_refresh_flow() {
    let manifest = manifest_of(b"{}\n", b"layer");
    let bytes = manifest.bytes.clone();
    let fake = Fake::start(move |s, _| {
        if s.path.starts_with("/oauth") {
            let form = String::from_utf8_lossy(&s.body).into_owned();
            let good = s.method == "POST"
                && form.contains("grant_type=refresh_token")
                && form.contains("refresh_token=rt-secret")
                && form.contains("scope=repository%28plugin%29%3Aacme%2Fp%3Apull");
            return if good {
                reply(200, &[], r#"{"access_token":"tok-2","expires_in":120}"#)
            } else {
                reply(400, &[], format!("bad form {form}"))
            };
        }
        if s.headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer tok-2") {
            let host = s.headers["host"].to_str().unwrap().to_owned();
            return reply(
                401,
                &[(
                    "www-authenticate",
                    &format!("Bearer realm=\"http://{host}/oauth\",service=\"fake\""),
                )],
                "",
            );
        }
        reply(200, &[], bytes.clone())
    })
    .await;
    let auth = AuthConfig {
        identity_token: Some("rt-secret".into()),
        ..AuthConfig::default()
    };
    let got = client()
        .resolve(&fake.reference("acme/p:1"), &auth)
        .await
        .unwrap();
    assert_eq!(got, manifest);
    assert_eq!(fake.count("POST", "/oauth"), 1);
}
