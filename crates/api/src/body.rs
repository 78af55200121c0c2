//! Request bodies: small JSON bodies read whole under a limit with moby's Content-Type rules,
//! and create tars streamed into a blocking [`std::io::Read`] without ever being held in memory.

use std::{
    io::{self, Read},
    time::Duration,
};

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use hyper::{
    body::{Frame, Incoming, SizeHint},
    header, HeaderMap, StatusCode,
};
use tokio::sync::mpsc;

use crate::error::HttpError;

/// How many body chunks may wait between the HTTP connection and the blocking reader.
const CHANNEL_CHUNKS: usize = 16;

/// After the reader has gone away, read (and drop) at most this much more of the body, so a
/// client still uploading gets to read the error instead of a reset (Go's server does the same).
const DRAIN_AFTER_CLOSE: u64 = 256 * 1024;

/// A request body as handlers see it: the client's stream, or the bytes the authorization
/// middleware already read to show them to the plugins (replayed once).
#[derive(Debug)]
pub(crate) enum RequestBody {
    /// Straight from the connection.
    Stream(Incoming),
    /// Read before the handler ran; `None` once handed out.
    Read(Option<Bytes>),
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Stream(body) => std::pin::Pin::new(body).poll_frame(cx),
            RequestBody::Read(bytes) => std::task::Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Stream(body) => body.is_end_stream(),
            RequestBody::Read(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Stream(body) => body.size_hint(),
            RequestBody::Read(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

/// What the request's headers say about its body, for moby's "empty body" rule.
pub(crate) fn declared_empty(headers: &HeaderMap) -> bool {
    let chunked = headers
        .get(header::TRANSFER_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    !chunked && length.unwrap_or(0) == 0
}

/// The declared `Content-Length`, if any.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

pub(crate) fn too_large(limit: u64) -> HttpError {
    HttpError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body exceeds the limit of {limit} bytes"),
    )
}

/// moby's `httputils.CheckForJSON` + `matchesContentType`.
pub(crate) fn check_json_content_type(headers: &HeaderMap, empty: bool) -> Result<(), HttpError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    if ct.is_empty() && empty {
        return Ok(());
    }
    let base = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if let Err(e) = check_media_type(&base) {
        return Err(HttpError::bad_request(format!(
            "malformed Content-Type header ({ct}): {e}"
        )));
    }
    if base != "application/json" {
        return Err(HttpError::bad_request(format!(
            "unsupported Content-Type header ({base}): must be 'application/json'"
        )));
    }
    Ok(())
}

/// Go's `mime.checkMediaTypeDisposition`.
fn check_media_type(s: &str) -> Result<(), &'static str> {
    let is_token = |c: char| c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?=".contains(c);
    let typ_len = s.find(|c| !is_token(c)).unwrap_or(s.len());
    if typ_len == 0 {
        return Err("mime: no media type");
    }
    let rest = &s[typ_len..];
    if rest.is_empty() {
        return Ok(());
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return Err("mime: expected slash after first token");
    };
    let sub_len = rest.find(|c| !is_token(c)).unwrap_or(rest.len());
    if sub_len == 0 {
        return Err("mime: expected token after slash");
    }
    if sub_len != rest.len() {
        return Err("mime: unexpected content after media subtype");
    }
    Ok(())
}

/// The 408 of a body that sent nothing for `timeout`.
pub(crate) fn timed_out(timeout: Duration) -> HttpError {
    HttpError::new(
        StatusCode::REQUEST_TIMEOUT,
        format!("timed out reading the request body: nothing received for {timeout:?}"),
    )
}

/// The next frame of `body`, or `None` when the client sent nothing for `timeout`: a deadline
/// per read, so an upload that keeps making progress is never cut off.
async fn next_frame(
    body: &mut RequestBody,
    timeout: Duration,
) -> Option<Option<Result<Frame<Bytes>, hyper::Error>>> {
    tokio::time::timeout(timeout, body.frame()).await.ok()
}

/// Reads the whole body, failing with 413 beyond `limit` bytes and with 408 when the client
/// sends nothing for `timeout`.
pub(crate) async fn read_limited(
    body: RequestBody,
    limit: u64,
    timeout: Duration,
) -> Result<Bytes, HttpError> {
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    loop {
        let Some(next) = next_frame(&mut body, timeout).await else {
            return Err(timed_out(timeout));
        };
        let Some(frame) = next else { break };
        let frame =
            frame.map_err(|e| HttpError::bad_request(format!("reading request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                return Err(too_large(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Reads and drops, in the background, a body the handler answers without reading, so a client
/// still sending it gets to read the answer. A declared length over [`DRAIN_AFTER_CLOSE`] is
/// not read at all (the connection is closed after the answer, as Go's server does); a body of
/// unknown length (chunked: the docker CLI streams the whole plugin tar so) is read up to
/// `cap`, each piece within `timeout`, since cutting it off after 256 KiB makes the client
/// report a broken pipe instead of the answer.
pub(crate) fn discard(
    body: RequestBody,
    declared_length: Option<u64>,
    cap: u64,
    timeout: Duration,
) {
    let cap = match declared_length {
        Some(n) if n > DRAIN_AFTER_CLOSE => return,
        Some(n) => n,
        None => cap,
    };
    tokio::spawn(async move {
        let mut body = body;
        let mut drained: u64 = 0;
        while let Some(Some(Ok(frame))) = next_frame(&mut body, timeout).await {
            if let Ok(data) = frame.into_data() {
                drained += data.len() as u64;
                if drained > cap {
                    break;
                }
            }
        }
    });
}

/// A blocking reader over a request body fed by [`pump`].
pub(crate) struct BodyReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while !self.current.has_remaining() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        self.current.copy_to_slice(&mut out[..n]);
        Ok(n)
    }
}

/// How feeding the body to the reader ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PumpOutcome {
    /// The whole body was delivered (or the reader stopped early).
    Done,
    /// The body grew past the limit; the reader got an error.
    TooLarge,
    /// The client broke off the upload; the reader got an error.
    Broken,
    /// The client sent nothing for the body timeout; the reader got an error.
    TimedOut,
}

/// Splits a request body into a blocking reader and the future that feeds it.
pub(crate) fn bridge(
    body: RequestBody,
    limit: u64,
    timeout: Duration,
) -> (BodyReader, impl std::future::Future<Output = PumpOutcome>) {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let reader = BodyReader {
        rx,
        current: Bytes::new(),
    };
    (reader, pump(body, limit, timeout, tx))
}

async fn pump(
    mut body: RequestBody,
    limit: u64,
    timeout: Duration,
    tx: mpsc::Sender<io::Result<Bytes>>,
) -> PumpOutcome {
    let mut total: u64 = 0;
    let mut reader_gone = false;
    let mut drained: u64 = 0;
    loop {
        let Some(next) = next_frame(&mut body, timeout).await else {
            if !reader_gone {
                let _ = tx
                    .send(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("request body sent nothing for {timeout:?}"),
                    )))
                    .await;
            }
            return PumpOutcome::TimedOut;
        };
        let Some(frame) = next else { break };
        let data = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            Err(e) => {
                let _ = tx
                    .send(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("request body broken off: {e}"),
                    )))
                    .await;
                return PumpOutcome::Broken;
            }
        };
        total += data.len() as u64;
        if reader_gone {
            drained += data.len() as u64;
            if drained > DRAIN_AFTER_CLOSE {
                return PumpOutcome::Done;
            }
            continue;
        }
        if total > limit {
            let _ = tx
                .send(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("request body exceeds the limit of {limit} bytes"),
                )))
                .await;
            return PumpOutcome::TooLarge;
        }
        if tx.send(Ok(data)).await.is_err() {
            reader_gone = true;
        }
    }
    PumpOutcome::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn content_type_rules() {
        assert!(check_json_content_type(&headers(&[]), true).is_ok());
        assert!(check_json_content_type(
            &headers(&[("content-type", "application/json; charset=utf-8")]),
            false
        )
        .is_ok());
        assert_eq!(
            check_json_content_type(&headers(&[("content-type", "text/plain")]), false)
                .unwrap_err()
                .message,
            "unsupported Content-Type header (text/plain): must be 'application/json'"
        );
        assert_eq!(
            check_json_content_type(&headers(&[]), false)
                .unwrap_err()
                .message,
            "malformed Content-Type header (): mime: no media type"
        );
        assert_eq!(
            check_json_content_type(&headers(&[("content-type", "application/")]), false)
                .unwrap_err()
                .message,
            "malformed Content-Type header (application/): mime: expected token after slash"
        );
        assert!(declared_empty(&headers(&[("content-length", "0")])));
        assert!(!declared_empty(&headers(&[(
            "transfer-encoding",
            "chunked"
        )])));
    }
}
