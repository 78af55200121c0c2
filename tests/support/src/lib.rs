//! plugind-test-support: the one HTTP client of plugind's tests and xtask.
//!
//! Tests, the demo, the benchmarks and the torture run all talk to a plugind (or to a plugin)
//! over a unix socket. They are synchronous programs, so this is a small blocking client: each
//! call builds a current-thread tokio runtime, speaks HTTP/1.1 with hyper's connection-level
//! client over one fresh connection, and drops both when done (nothing outlives the call, so a
//! test counting the daemon's connections sees only its own). Bodies are read to the end whatever
//! their framing (chunked or sized); [`stream_lines`] hands a streamed body over line by line
//! (`/events`). The timeout bounds the connect, the wait for the response head and each wait for
//! the next piece of the body, not the whole exchange, so a long stream that keeps talking stays
//! open.
//!
//! Must not be called from inside a tokio runtime (it blocks the calling thread).

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

/// How long a request waits by default for each step (connect, head, next body piece).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request got no complete answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket did not accept a connection.
    #[error("connect {socket}")]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The request could not be built (bad method, path or header).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The HTTP exchange failed (connection closed early, malformed answer, ...).
    #[error("{what}")]
    Http {
        /// Which step failed.
        what: &'static str,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// A step took longer than the request's timeout.
    #[error("no answer to {what} within {timeout:?}")]
    Timeout {
        /// Which step timed out.
        what: &'static str,
        /// The limit.
        timeout: Duration,
    },
    /// The runtime driving the request could not be built.
    #[error("build a tokio runtime")]
    Runtime(#[source] io::Error),
}

/// One request: method, path (with query), headers, body, timeout.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
}

impl Request {
    /// `method path` with no body, a `Host` header and [`DEFAULT_TIMEOUT`].
    pub fn new(method: &str, path: &str) -> Request {
        Request {
            method: method.to_owned(),
            path: path.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Adds a header (sent in the order added).
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body as raw bytes (add a `Content-Type` yourself).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and `Content-Type: application/json`.
    pub fn json(self, value: &serde_json::Value) -> Request {
        self.header("Content-Type", "application/json")
            .body(value.to_string())
    }

    /// Sets the limit on each step (connect, response head, each body piece).
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = timeout;
        self
    }

    /// Sends the request to the HTTP server on `socket` and reads the whole answer.
    pub fn send(&self, socket: &Path) -> Result<Response, ClientError> {
        let mut body = BytesMut::new();
        let (status, headers) = self.exchange(socket, |piece| {
            body.extend_from_slice(piece);
            true
        })?;
        Ok(Response {
            status,
            headers,
            body: body.freeze().to_vec(),
        })
    }

    fn build(&self) -> Result<hyper::Request<Full<Bytes>>, ClientError> {
        let invalid = |e: hyper::http::Error| ClientError::InvalidRequest(e.to_string());
        let mut builder = hyper::Request::builder()
            .method(self.method.as_str())
            .uri(self.path.as_str());
        if !self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("host"))
        {
            builder = builder.header("Host", "plugind");
        }
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder
            .body(Full::new(Bytes::from(self.body.clone())))
            .map_err(invalid)
    }

    /// Runs the exchange, handing each body piece to `each` until it returns `false`.
    fn exchange(
        &self,
        socket: &Path,
        each: impl FnMut(&[u8]) -> bool,
    ) -> Result<(u16, Vec<(String, String)>), ClientError> {
        let request = self.build()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ClientError::Runtime)?;
        runtime.block_on(exchange(socket, request, self.timeout, each))
    }
}

async fn step<T, E>(
    what: &'static str,
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, E>>,
    err: impl FnOnce(E) -> ClientError,
) -> Result<T, ClientError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r.map_err(err),
        Err(_) => Err(ClientError::Timeout { what, timeout }),
    }
}

async fn exchange(
    socket: &Path,
    request: hyper::Request<Full<Bytes>>,
    timeout: Duration,
    mut each: impl FnMut(&[u8]) -> bool,
) -> Result<(u16, Vec<(String, String)>), ClientError> {
    let stream = step(
        "connect",
        timeout,
        tokio::net::UnixStream::connect(socket),
        |source| ClientError::Connect {
            socket: socket.to_path_buf(),
            source,
        },
    )
    .await?;
    let http = |what| move |source| ClientError::Http { what, source };
    let (mut sender, connection) = step(
        "the handshake",
        timeout,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
        http("handshake"),
    )
    .await?;
    let work = async move {
        let response = step(
            "the request",
            timeout,
            sender.send_request(request),
            http("send the request"),
        )
        .await?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body: Incoming = response.into_body();
        loop {
            let next = tokio::time::timeout(timeout, body.frame()).await;
            let frame = match next {
                Err(_) => {
                    return Err(ClientError::Timeout {
                        what: "the next body piece",
                        timeout,
                    })
                }
                Ok(None) => break,
                Ok(Some(frame)) => frame.map_err(http("read the body"))?,
            };
            if let Ok(data) = frame.into_data() {
                if !each(&data) {
                    break;
                }
            }
        }
        // Dropping the sender and the body here ends the connection task below.
        Ok((status, headers))
    };
    // The connection must be driven while the response is read; its own end (the server
    // closing after the answer, or us dropping the sender) is not an error of the request.
    let (result, _connection_end) = tokio::join!(work, connection);
    result
}

/// A complete answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
    }

    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` to `socket` and hands each complete line of the streamed body (without its
/// `\n`) to `each` as it arrives, until the body ends or `each` returns `false`. A last line
/// without `\n` is handed over when the body ends. Returns the status code.
pub fn stream_lines(
    socket: &Path,
    request: &Request,
    mut each: impl FnMut(&str) -> bool,
) -> Result<u16, ClientError> {
    let mut pending: Vec<u8> = Vec::new();
    let mut stopped = false;
    let (status, _) = request.exchange(socket, |piece| {
        pending.extend_from_slice(piece);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if !each(String::from_utf8_lossy(&line[..end]).trim_end_matches('\r')) {
                stopped = true;
                return false;
            }
        }
        true
    })?;
    if !stopped && !pending.is_empty() {
        each(&String::from_utf8_lossy(&pending));
    }
    Ok(status)
}

/// `method path` with an optional JSON body, read to the end.
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    json_body: Option<&str>,
) -> Result<Response, ClientError> {
    let mut req = Request::new(method, path).header("Content-Type", "application/json");
    if let Some(body) = json_body {
        req = req.body(body);
    }
    req.send(socket)
}

#[cfg(test)]
mod tests;
