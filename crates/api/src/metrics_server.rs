//! The `--metrics-addr` server: `GET /metrics` answers the Prometheus (OpenMetrics) text of
//! the manager's metrics, on a unix socket or a loopback TCP listener the daemon bound. It is
//! a separate, small server (not a route of the Engine API socket) so that scraping needs no
//! access to the API and a scraper can never reach a plugin operation.
//!
//! Bounded like the API server: at most [`MAX_CONNECTIONS`] connections at once (more are
//! closed), a deadline on each request head and on each whole exchange.

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{header, server::conn::http1, service::service_fn, Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use plugind_manager::Manager;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::Semaphore,
    task::JoinSet,
};

/// Connections served at once; a scraper needs one.
pub const MAX_CONNECTIONS: usize = 16;
/// Time to send a request head, and the most one connection lives.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECTION_DEADLINE: Duration = Duration::from_secs(60);

/// A bound listener for [`serve_metrics`].
#[derive(Debug)]
pub enum MetricsListener {
    /// A unix socket (`unix:///PATH`).
    Unix(tokio::net::UnixListener),
    /// A loopback TCP socket (`tcp://127.0.0.1:PORT`).
    Tcp(tokio::net::TcpListener),
}

/// Serves `/metrics` on `listener` until `shutdown` completes; open connections are dropped
/// then (a scrape is cheap to repeat).
pub async fn serve_metrics(
    listener: MetricsListener,
    manager: Manager,
    shutdown: impl Future<Output = ()> + Send,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted: std::io::Result<Box<dyn Io>> = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            a = accept(&listener) => a,
        };
        match accepted {
            Ok(stream) => {
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    continue; // at the cap: closing costs nothing and never hangs a client
                };
                let manager = manager.clone();
                conns.spawn(async move {
                    let _permit = permit;
                    let service = service_fn(move |req| {
                        let manager = manager.clone();
                        async move { Ok::<_, Infallible>(answer(&manager, &req).await) }
                    });
                    let mut builder = http1::Builder::new();
                    builder
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT);
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_DEADLINE, conn).await {
                        tracing::debug!(error = %e, "metrics connection ended with an error");
                    }
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "accepting a metrics connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

async fn accept(listener: &MetricsListener) -> std::io::Result<Box<dyn Io>> {
    Ok(match listener {
        MetricsListener::Unix(l) => Box::new(l.accept().await?.0),
        MetricsListener::Tcp(l) => Box::new(l.accept().await?.0),
    })
}

async fn answer<B>(manager: &Manager, req: &Request<B>) -> Response<Full<Bytes>> {
    let reply = |status: u16, content_type: &'static str, body: Bytes| {
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        resp
    };
    if req.uri().path() != "/metrics" {
        return reply(404, "text/plain; charset=utf-8", Bytes::from("not found\n"));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            405,
            "text/plain; charset=utf-8",
            Bytes::from("method not allowed\n"),
        );
    }
    let text = manager.render_metrics().await;
    reply(
        200,
        plugind_manager::metrics::CONTENT_TYPE,
        Bytes::from(text),
    )
}
