//! Docker's progress stream (distribution.md §2) for pull, upgrade and push: a chunked
//! `application/json` body with one `jsonmessage.JSONMessage` object per chunk, each followed
//! by `\r\n`, written as the operation produces it.
//!
//! [`respond`] runs an operation in its own task and turns it into a response: an error before
//! the first object is an ordinary error reply with its status code; after the first object
//! the status is 200 and a failure is the last object (`errorDetail` + `error`). When the
//! client goes away the response body is dropped, the operation's task notices the closed
//! channel and drops the operation's future, which cancels it.
//!
//! Objects are encoded as Go's `encoding/json` does (`<`, `>`, `&`, U+2028, U+2029 escaped, so
//! a bar's `>` is `\u003e`), with `JSONMessage`'s field order, and bars rendered as
//! `JSONProgress.String` renders them for a 200-column (non-terminal) width.

use std::{convert::Infallible, future::Future, panic::AssertUnwindSafe, sync::Arc};

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::{body::Frame, header, Response};
use plugind_manager::progress::Progress;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::{backend::BackendError, error::HttpError, server::Body};

/// Hands an operation's [`Progress`] to the response body. Cheap to clone; sending never
/// blocks, and messages sent after the client went away are dropped.
#[derive(Clone)]
pub struct ProgressSink {
    send: Arc<dyn Fn(Progress) + Send + Sync>,
}

impl std::fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressSink")
    }
}

impl ProgressSink {
    /// A sink calling `send` for every message (tests collect them this way).
    pub fn new(send: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        ProgressSink {
            send: Arc::new(send),
        }
    }

    /// A sink that drops everything.
    pub fn discard() -> Self {
        Self::new(|_| {})
    }

    /// Reports one message.
    pub fn send(&self, progress: Progress) {
        (self.send)(progress);
    }

    /// The sink as the manager's callback type.
    pub fn as_fn(&self) -> &(dyn Fn(Progress) + Send + Sync) {
        &*self.send
    }

    /// The sink as the manager's owned callback type (for work on blocking threads).
    pub fn shared(&self) -> plugind_manager::progress::SharedProgress {
        Arc::clone(&self.send)
    }
}

/// Go's `jsonmessage.JSONProgress`.
#[derive(Debug, Default, Serialize)]
struct JsonProgress {
    #[serde(skip_serializing_if = "is_zero")]
    current: u64,
    #[serde(skip_serializing_if = "is_zero")]
    total: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Go's `jsonmessage.JSONError`.
#[derive(Debug, Serialize)]
struct JsonError<'a> {
    message: &'a str,
}

/// Go's `jsonmessage.JSONMessage`, fields in its order, empty ones omitted.
#[derive(Debug, Default, Serialize)]
struct JsonMessage<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    #[serde(rename = "progressDetail", skip_serializing_if = "Option::is_none")]
    progress_detail: Option<JsonProgress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "errorDetail", skip_serializing_if = "Option::is_none")]
    error_detail: Option<JsonError<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aux: Option<&'a serde_json::Value>,
}

/// One stream object for `progress`, with its `\r\n`.
pub(crate) fn encode(progress: &Progress) -> Bytes {
    let msg = match progress {
        Progress::Status(status) => JsonMessage {
            status: Some(status),
            ..JsonMessage::default()
        },
        Progress::Named { status, id } => JsonMessage {
            status: Some(status),
            id: Some(id),
            ..JsonMessage::default()
        },
        Progress::Step { status, id } => JsonMessage {
            status: Some(status),
            progress_detail: Some(JsonProgress::default()),
            id: Some(id),
            ..JsonMessage::default()
        },
        Progress::Bytes {
            status,
            id,
            current,
            total,
        } => JsonMessage {
            status: Some(status),
            progress_detail: Some(JsonProgress {
                current: *current,
                total: *total,
            }),
            progress: Some(progress_bar(*current, *total)).filter(|s| !s.is_empty()),
            id: Some(id),
            ..JsonMessage::default()
        },
        Progress::Aux(aux) => JsonMessage {
            progress_detail: Some(JsonProgress::default()),
            aux: Some(aux),
            ..JsonMessage::default()
        },
    };
    to_go_json(&msg)
}

/// The last object of a failed stream: `{"errorDetail":{"message":m},"error":m}`.
pub(crate) fn encode_error(message: &str) -> Bytes {
    to_go_json(&JsonMessage {
        error_detail: Some(JsonError { message }),
        error: Some(message),
        ..JsonMessage::default()
    })
}

fn to_go_json<T: Serialize>(value: &T) -> Bytes {
    // Serialising these plain structs cannot fail.
    let json = serde_json::to_string(value).unwrap_or_default();
    let mut out = go_escape(&json);
    out.push_str("\r\n");
    Bytes::from(out)
}

/// Go's `encoding/json` HTML-safe escaping of an encoded document: the characters can only
/// occur inside strings (they are not JSON syntax), so replacing them anywhere is exact.
pub(crate) fn go_escape(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// `JSONProgress.String()` at a width over 110 columns (the daemon has no terminal, so Go
/// uses 200): `[====>    ]  1.147MB/1.669MB`.
pub(crate) fn progress_bar(current: u64, total: u64) -> String {
    if current == 0 && total == 0 {
        return String::new();
    }
    if total == 0 {
        return format!("{:>8}", human_size(current));
    }
    // Go: int(float64(current)/float64(total)*100) / 2, capped at 50.
    let percent = (((current as f64 / total as f64) * 100.0) as i64 / 2).clamp(0, 50) as usize;
    let bar = format!("[{}>{}] ", "=".repeat(percent), " ".repeat(50 - percent));
    let numbers = if current > total {
        format!("{:>8}", human_size(current))
    } else {
        format!("{:>8}/{}", human_size(current), human_size(total))
    };
    bar + &numbers
}

/// `go-units.HumanSize`: decimal units, 4 significant digits (`%.4g`), e.g. `1.147MB`,
/// `32.77kB`, `418B`.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    format!("{}{}", format_g4(size), UNITS[unit])
}

/// Go's `%.4g` for 0 <= x < 1000 (no exponent form is reachable): 4 significant digits,
/// trailing zeros dropped.
fn format_g4(x: f64) -> String {
    if x == 0.0 {
        return "0".to_owned();
    }
    let int_digits = if x < 1.0 {
        0
    } else {
        (x.log10().floor() as i32 + 1).max(1)
    };
    let decimals = (4 - int_digits).max(0) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// What the operation's task hands to the response body.
enum Item {
    Message(Bytes),
    Done(Result<(), BackendError>),
}

/// Runs `operation` with a [`ProgressSink`] and answers with its stream.
///
/// The operation runs in a task of its own; the returned future waits only for its first
/// message. An error before any message becomes `to_http(err)` (a status code); once a message
/// was sent the status is 200 and an error is the stream's last object. Dropping the response body (the client went
/// away) or this future cancels the operation.
pub(crate) async fn respond<F, Fut>(
    operation: F,
    to_http: impl FnOnce(BackendError) -> HttpError,
) -> Result<Response<Body>, HttpError>
where
    F: FnOnce(ProgressSink) -> Fut,
    Fut: Future<Output = Result<(), BackendError>> + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<Item>();
    let messages = tx.clone();
    let sink = ProgressSink::new(move |p| {
        // A closed channel means the client is gone; the task below cancels the operation.
        let _ = messages.send(Item::Message(encode(&p)));
    });
    let operation = AssertUnwindSafe(operation(sink)).catch_unwind();
    tokio::spawn(async move {
        tokio::select! {
            result = operation => {
                let result = result.unwrap_or_else(|_| {
                    Err(BackendError::new(
                        plugind_types::ErrorKind::Internal,
                        "the operation failed unexpectedly (panic)",
                    ))
                });
                let _ = tx.send(Item::Done(result));
            }
            () = tx.closed() => {
                tracing::info!("client went away: remote plugin operation cancelled");
            }
        }
    });
    let first = match rx.recv().await {
        Some(Item::Message(m)) => m,
        Some(Item::Done(Ok(()))) | None => Bytes::new(),
        Some(Item::Done(Err(e))) => return Err(to_http(e)),
    };
    let rest = futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await? {
            Item::Message(m) => Some((m, rx)),
            Item::Done(Ok(())) => None,
            Item::Done(Err(e)) => {
                tracing::warn!(error = %e.message, "remote plugin operation failed in-stream");
                // Nothing follows the error object.
                rx.close();
                Some((encode_error(&e.message), rx))
            }
        }
    });
    let body = futures::stream::iter([first])
        .chain(rest)
        .filter(|b| std::future::ready(!b.is_empty()))
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut resp = Response::new(StreamBody::new(body).boxed_unsync());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugind_types::ErrorKind;

    #[test]
    fn sizes_as_go_units() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(418), "418B");
        assert_eq!(human_size(32768), "32.77kB");
        assert_eq!(human_size(1_146_880), "1.147MB");
        assert_eq!(human_size(1_669_322), "1.669MB");
        assert_eq!(human_size(1_000_000), "1MB");
        assert_eq!(human_size(1_500_000), "1.5MB");
        assert_eq!(human_size(999_960), "1000kB");
        assert_eq!(human_size(300_000_000), "300MB");
    }

    #[test]
    fn objects_are_dockers_byte_for_byte() {
        let text = |p: Progress| String::from_utf8(encode(&p).to_vec()).unwrap();
        assert_eq!(
            text(Progress::Named {
                status: "Pulling from 127.0.0.1:5000/acme/sample".into(),
                id: "1.0".into()
            }),
            "{\"status\":\"Pulling from 127.0.0.1:5000/acme/sample\",\"id\":\"1.0\"}\r\n"
        );
        assert_eq!(
            text(Progress::Status("Digest: sha256:ff".into())),
            "{\"status\":\"Digest: sha256:ff\"}\r\n"
        );
        assert_eq!(
            text(Progress::step("Waiting", "sha256:cec2e3189279134d83a5")),
            "{\"status\":\"Waiting\",\"progressDetail\":{},\"id\":\"cec2e3189279\"}\r\n"
        );
        // The measured objects of distribution.md §2.
        assert_eq!(
            text(Progress::bytes("Extracting", "cec2e3189279", 32768, 1_669_322)),
            "{\"status\":\"Extracting\",\"progressDetail\":{\"current\":32768,\"total\":1669322},\"progress\":\"[\\u003e                                                  ]  32.77kB/1.669MB\",\"id\":\"cec2e3189279\"}\r\n"
        );
        assert_eq!(
            text(Progress::bytes("Extracting", "cec2e3189279", 1_146_880, 1_669_322)),
            "{\"status\":\"Extracting\",\"progressDetail\":{\"current\":1146880,\"total\":1669322},\"progress\":\"[==================================\\u003e                ]  1.147MB/1.669MB\",\"id\":\"cec2e3189279\"}\r\n"
        );
        assert_eq!(
            text(Progress::bytes("Extracting", "cec2e3189279", 1_669_322, 1_669_322)),
            "{\"status\":\"Extracting\",\"progressDetail\":{\"current\":1669322,\"total\":1669322},\"progress\":\"[==================================================\\u003e]  1.669MB/1.669MB\",\"id\":\"cec2e3189279\"}\r\n"
        );
        let aux = serde_json::json!({"Tag":"1.0","Digest":"sha256:ff","Size":418});
        assert_eq!(
            text(Progress::Aux(aux)),
            "{\"progressDetail\":{},\"aux\":{\"Tag\":\"1.0\",\"Digest\":\"sha256:ff\",\"Size\":418}}\r\n"
        );
        assert_eq!(
            String::from_utf8(encode_error("incorrect privileges").to_vec()).unwrap(),
            "{\"errorDetail\":{\"message\":\"incorrect privileges\"},\"error\":\"incorrect privileges\"}\r\n"
        );
        assert_eq!(go_escape("a<b>&\u{2028}"), "a\\u003cb\\u003e\\u0026\\u2028");
    }

    async fn body_text(resp: Response<Body>) -> (Vec<Bytes>, String) {
        let mut body = resp.into_body();
        let mut frames = Vec::new();
        while let Some(f) = body.frame().await {
            if let Ok(d) = f.unwrap().into_data() {
                frames.push(d);
            }
        }
        let text = frames
            .iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        (frames, text)
    }

    #[tokio::test]
    async fn an_error_before_the_first_object_is_a_status_code() {
        let res = respond(
            |_sink| async { Err(BackendError::new(ErrorKind::NotFound, "manifest unknown")) },
            |e| HttpError::new(hyper::StatusCode::NOT_FOUND, e.message),
        )
        .await;
        let err = res.unwrap_err();
        assert_eq!(err.status, 404);
        assert_eq!(err.message, "manifest unknown");
    }

    #[tokio::test]
    async fn after_the_first_object_an_error_is_the_last_object_one_per_chunk() {
        let resp = respond(
            |sink| async move {
                sink.send(Progress::Status("one".into()));
                sink.send(Progress::step("Waiting", "abcdef0123456789"));
                Err(BackendError::new(
                    ErrorKind::Internal,
                    "incorrect privileges",
                ))
            },
            |_| unreachable!("the error comes after the first object"),
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let (frames, text) = body_text(resp).await;
        assert_eq!(frames.len(), 3, "one object per chunk");
        assert!(frames.iter().all(|f| f.ends_with(b"\r\n")));
        assert_eq!(
            text,
            "{\"status\":\"one\"}\r\n{\"status\":\"Waiting\",\"progressDetail\":{},\"id\":\"abcdef012345\"}\r\n{\"errorDetail\":{\"message\":\"incorrect privileges\"},\"error\":\"incorrect privileges\"}\r\n"
        );
    }

    #[tokio::test]
    async fn a_dropped_body_cancels_the_operation() {
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        struct Guard(Option<tokio::sync::oneshot::Sender<()>>);
        impl Drop for Guard {
            fn drop(&mut self) {
                if let Some(tx) = self.0.take() {
                    let _ = tx.send(());
                }
            }
        }
        let resp = respond(
            |sink| async move {
                let _guard = Guard(Some(dropped_tx));
                sink.send(Progress::Status("started".into()));
                std::future::pending::<()>().await;
                Ok(())
            },
            |_| unreachable!(),
        )
        .await
        .unwrap();
        drop(resp);
        // The operation's future is dropped (its guard fires) instead of running forever.
        dropped_rx.await.expect("the operation was dropped");
    }
}
