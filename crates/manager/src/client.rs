//! A client for the Docker plugin protocol: HTTP/1.1 POSTs over the plugin's unix socket with
//! `application/vnd.docker.plugins.v1.2+json`, a deadline on every call, and Docker's error
//! rules (plugin-protocol.md §3). Any consumer in plugind (enable's `Plugin.Activate`, the
//! volume service) talks to plugins through it.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{header, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// The media type of the plugin protocol.
pub const PLUGIN_MEDIA_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// The most bytes read from one plugin answer unless configured otherwise
/// ([`PluginClient::with_max_answer_bytes`]): far above any real answer, far below what a
/// hostile plugin streaming forever could make plugind hold.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 1 << 20;

/// The most bytes of a plugin's text copied into an error message (then marked truncated).
pub const MAX_ERROR_TEXT_BYTES: usize = 4096;

/// A failed plugin call. Messages follow moby's so that users see the same texts.
#[derive(Debug, thiserror::Error)]
pub enum PluginCallError {
    /// The socket could not be reached.
    #[error("plugin {plugin}: cannot connect to {socket}")]
    Connect {
        /// The plugin's name.
        plugin: String,
        /// The socket path.
        socket: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The call did not finish within its deadline.
    #[error("plugin {plugin}: {method} did not answer within {timeout:?}")]
    Timeout {
        /// The plugin's name.
        plugin: String,
        /// `VolumeDriver.Mount`, ...
        method: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The plugin does not implement the method (HTTP 404).
    #[error("plugin {plugin}: {method} is not implemented")]
    NotImplemented {
        /// The plugin's name.
        plugin: String,
        /// The method.
        method: String,
    },
    /// The plugin answered with an error (its `Err` text, or the raw body).
    #[error("{message}")]
    Remote {
        /// The plugin's name.
        plugin: String,
        /// moby's wording: `<Method>: <Err>` for HTTP errors, the bare `Err` for driver errors.
        message: String,
    },
    /// The HTTP exchange itself failed or the answer was not JSON.
    #[error("plugin {plugin}: {method}: {detail}")]
    Protocol {
        /// The plugin's name.
        plugin: String,
        /// The method.
        method: String,
        /// What went wrong.
        detail: String,
    },
}

/// A handle for calling one plugin.
#[derive(Debug, Clone)]
pub struct PluginClient {
    name: String,
    socket: PathBuf,
    max_answer_bytes: usize,
    /// The plugin's own deadline (`enable?timeout=`, Docker's client timeout): no call lasts
    /// longer, whatever deadline the caller gives.
    timeout: Option<Duration>,
}

impl PluginClient {
    /// A client for the plugin `name` listening on `socket` (a host path).
    pub fn new(name: &str, socket: &Path) -> Self {
        PluginClient {
            name: name.to_owned(),
            socket: socket.to_path_buf(),
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
            timeout: None,
        }
    }

    /// Caps every call at `timeout` (`None` or zero: no cap beyond the caller's deadline), as
    /// Docker's plugin client does with the timeout given at enable.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout.filter(|t| !t.is_zero());
        self
    }

    /// The plugin's own call deadline, if one was given at enable.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The same client reading at most `limit` bytes of an answer; a longer answer is a
    /// [`PluginCallError::Protocol`] error.
    pub fn with_max_answer_bytes(mut self, limit: usize) -> Self {
        self.max_answer_bytes = limit;
        self
    }

    /// The socket this client dials.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// POSTs `/<method>` with `body` (None sends an empty body, as Docker does for
    /// `Plugin.Activate`) and returns the decoded JSON answer. A 200 answer with a non-empty
    /// `Err` field is an error, as for Docker's volume drivers.
    pub async fn call(
        &self,
        method: &str,
        body: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<serde_json::Value, PluginCallError> {
        let timeout = self.timeout.map_or(timeout, |cap| cap.min(timeout));
        match tokio::time::timeout(timeout, self.call_inner(method, body)).await {
            Ok(r) => r,
            Err(_) => Err(PluginCallError::Timeout {
                plugin: self.name.clone(),
                method: method.to_owned(),
                timeout,
            }),
        }
    }

    async fn call_inner(
        &self,
        method: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, PluginCallError> {
        let protocol = |detail: String| PluginCallError::Protocol {
            plugin: self.name.clone(),
            method: method.to_owned(),
            detail,
        };
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| PluginCallError::Connect {
                    plugin: self.name.clone(),
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| protocol(e.to_string()))?;
        // The connection dies with this call, whichever way the call ends (an endless answer
        // must not keep being read after we gave up on it).
        let _conn_task = AbortOnDrop(tokio::spawn(conn));
        let payload = match body {
            Some(v) => {
                let mut bytes = serde_json::to_vec(v).map_err(|e| protocol(e.to_string()))?;
                bytes.push(b'\n');
                bytes
            }
            None => Vec::new(),
        };
        let request = Request::post(format!("/{method}"))
            .header(header::HOST, "plugin.moby.localhost")
            .header(header::ACCEPT, PLUGIN_MEDIA_TYPE)
            .header(header::CONTENT_TYPE, PLUGIN_MEDIA_TYPE)
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| protocol(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| protocol(e.to_string()))?;
        let status = response.status();
        let bytes = read_capped(response.into_body(), self.max_answer_bytes)
            .await
            .map_err(protocol)?;
        if status == StatusCode::NOT_FOUND {
            return Err(PluginCallError::NotImplemented {
                plugin: self.name.clone(),
                method: method.to_owned(),
            });
        }
        let parsed: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
        let err_text = parsed
            .as_ref()
            .and_then(|v| v.get("Err"))
            .and_then(|e| e.as_str())
            .filter(|e| !e.is_empty())
            .map(str::to_owned);
        if status != StatusCode::OK {
            let detail = match err_text {
                Some(e) => error_text(e.as_bytes()),
                None => error_text(String::from_utf8_lossy(&bytes).trim().as_bytes()),
            };
            return Err(PluginCallError::Remote {
                plugin: self.name.clone(),
                message: format!("{method}: {detail}"),
            });
        }
        if let Some(message) = err_text {
            return Err(PluginCallError::Remote {
                plugin: self.name.clone(),
                message: error_text(message.as_bytes()),
            });
        }
        parsed.ok_or_else(|| protocol(format!("invalid JSON answer: {}", error_text(&bytes))))
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), hyper::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads a whole answer body, refusing (by `Content-Length` before reading, else as soon as the
/// total passes it) one longer than `limit` bytes.
async fn read_capped(body: hyper::body::Incoming, limit: usize) -> Result<Bytes, String> {
    use hyper::body::Body;
    let too_long = || format!("answer larger than {limit} bytes");
    if body
        .size_hint()
        .lower()
        .try_into()
        .map_or(true, |n: usize| n > limit)
    {
        return Err(too_long());
    }
    let mut body = body;
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            if out.len().saturating_add(data.len()) > limit {
                return Err(too_long());
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(out))
}

/// A plugin's text for an error message: lossy UTF-8, at most [`MAX_ERROR_TEXT_BYTES`] bytes
/// (cut on a character boundary and marked when cut).
fn error_text(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    if text.len() <= MAX_ERROR_TEXT_BYTES {
        return text.into_owned();
    }
    let mut end = MAX_ERROR_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...(truncated, {} bytes)", &text[..end], raw.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixListener;

    /// A one-shot server that answers every request with `status` and `body`.
    async fn serve(socket: &Path, status: &'static str, body: &'static str) {
        let listener = UnixListener::bind(socket).unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
    }

    #[tokio::test]
    async fn decodes_answers_and_errors_like_docker() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.sock");
        serve(&ok, "200 OK", r#"{"Implements":["VolumeDriver"]}"#).await;
        let v = PluginClient::new("p", &ok)
            .call("Plugin.Activate", None, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(v["Implements"][0], "VolumeDriver");

        let err200 = dir.path().join("e.sock");
        serve(&err200, "200 OK", r#"{"Err":"no such volume"}"#).await;
        let e = PluginClient::new("p", &err200)
            .call(
                "VolumeDriver.Get",
                Some(&serde_json::json!({})),
                Duration::from_secs(5),
            )
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "no such volume");

        let err500 = dir.path().join("f.sock");
        serve(&err500, "500 Internal Server Error", r#"{"Err":"boom"}"#).await;
        let e = PluginClient::new("p", &err500)
            .call("VolumeDriver.Mount", None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "VolumeDriver.Mount: boom");

        let nf = dir.path().join("n.sock");
        serve(&nf, "404 Not Found", "").await;
        let e = PluginClient::new("p", &nf)
            .call("Plugin.Activate", None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, PluginCallError::NotImplemented { .. }));

        let missing = PluginClient::new("p", &dir.path().join("none.sock"));
        assert!(matches!(
            missing.call("x", None, Duration::from_secs(1)).await,
            Err(PluginCallError::Connect { .. })
        ));
    }

    /// A plugin answering 100 MiB, or a body that never ends, is cut off at the limit (the
    /// endless one would otherwise be read until the deadline, growing plugind's memory).
    #[tokio::test]
    async fn huge_and_endless_answers_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        // Declares 100 MiB and sends it.
        let big = dir.path().join("big.sock");
        let listener = UnixListener::bind(&big).unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let len = 100usize << 20;
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
                    let _ = s.write_all(head.as_bytes()).await;
                    let chunk = vec![b' '; 1 << 16];
                    for _ in 0..len / chunk.len() {
                        if s.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let e = PluginClient::new("p", &big)
            .call("VolumeDriver.List", None, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(
            matches!(e, PluginCallError::Protocol { ref detail, .. } if detail.contains("larger than 1048576")),
            "{e}"
        );

        // Chunked, never ends; the limit is configurable.
        let endless = dir.path().join("endless.sock");
        let listener = UnixListener::bind(&endless).unwrap();
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await;
            let head = "HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n";
            let _ = s.write_all(head.as_bytes()).await;
            let chunk = format!("1000\r\n{}\r\n", "e".repeat(0x1000));
            while s.write_all(chunk.as_bytes()).await.is_ok() {}
            // Only reached once the client dropped the connection.
            let _ = closed_tx.send(());
        });
        let e = PluginClient::new("p", &endless)
            .with_max_answer_bytes(64 * 1024)
            .call("VolumeDriver.Get", None, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(
            matches!(e, PluginCallError::Protocol { ref detail, .. } if detail.contains("larger than 65536")),
            "{e}"
        );
        tokio::time::timeout(Duration::from_secs(30), closed_rx)
            .await
            .expect("the client closes the connection of an answer it gave up on")
            .unwrap();
    }

    /// An error body of 1 MiB is copied into the message only up to 4 KiB, marked truncated.
    #[tokio::test]
    async fn error_texts_are_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("e.sock");
        let body: &'static str =
            Box::leak(format!(r#"{{"Err":"{}"}}"#, "x".repeat(1 << 19)).into_boxed_str());
        serve(&sock, "200 OK", body).await;
        let e = PluginClient::new("p", &sock)
            .call("VolumeDriver.Get", None, Duration::from_secs(5))
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(text.len() < MAX_ERROR_TEXT_BYTES + 100, "{}", text.len());
        assert!(
            text.ends_with("...(truncated, 524288 bytes)"),
            "{}",
            &text[4000..]
        );

        let raw = dir.path().join("r.sock");
        let body: &'static str = Box::leak("é".repeat(10_000).into_boxed_str());
        serve(&raw, "500 Internal Server Error", body).await;
        let e = PluginClient::new("p", &raw)
            .call("VolumeDriver.Mount", None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("VolumeDriver.Mount: éé"));
        assert!(e.to_string().contains("(truncated, 20000 bytes)"));
    }

    #[tokio::test]
    async fn a_hung_plugin_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("hang.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let _hold = tokio::spawn(async move {
            let _conns: Vec<_> = vec![listener.accept().await];
            std::future::pending::<()>().await;
        });
        let e = PluginClient::new("slow", &sock)
            .call("VolumeDriver.List", None, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(e, PluginCallError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("slow"));

        // The plugin's enable timeout caps a call whose own deadline is longer (issue 10,
        // defect 9: `enable?timeout=` was ignored).
        let capped =
            PluginClient::new("slow", &sock).with_timeout(Some(Duration::from_millis(200)));
        let e = capped
            .call("VolumeDriver.Create", None, Duration::from_secs(3600))
            .await
            .unwrap_err();
        match e {
            PluginCallError::Timeout { timeout, .. } => {
                assert_eq!(timeout, Duration::from_millis(200))
            }
            other => panic!("not a timeout: {other}"),
        }
        assert_eq!(
            PluginClient::new("p", &sock)
                .with_timeout(Some(Duration::ZERO))
                .timeout(),
            None,
            "zero means no cap, as in Docker"
        );
    }
}
