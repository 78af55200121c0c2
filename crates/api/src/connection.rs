//! What keeps slow or many clients from stalling the daemon: per-connection activity tracking
//! (idle and header deadlines, as Go's `http.Server` applies `IdleTimeout` and
//! `ReadHeaderTimeout`), a write-progress deadline on the socket, and the descriptor budget
//! from which the connection cap is derived.
//!
//! Request bodies have their own per-read progress deadline in `body`; a response that streams
//! for hours (`/events`, `logs?follow`) is fine as long as the client keeps reading it.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::watch,
    time::{Instant, Sleep},
};

/// What a connection is doing, for its deadlines.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ActivityState {
    /// Requests whose response has not been fully written yet.
    in_flight: usize,
    /// When the connection last became idle (no request in flight).
    idle_since: Instant,
    /// When the first byte of the next request arrived, while no request is in flight.
    request_started: Option<Instant>,
}

/// Shared between the socket wrapper, the request handlers and the connection's watchdog.
#[derive(Debug)]
pub(crate) struct Activity {
    state: watch::Sender<ActivityState>,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            state: watch::Sender::new(ActivityState {
                in_flight: 0,
                idle_since: Instant::now(),
                request_started: None,
            }),
        })
    }

    /// Bytes arrived on the socket.
    fn on_read(&self) {
        self.state.send_if_modified(|s| {
            if s.in_flight == 0 && s.request_started.is_none() {
                s.request_started = Some(Instant::now());
                return true;
            }
            false
        });
    }

    /// A request's head was parsed; the returned guard ends it when its response is done.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.state.send_modify(|s| {
            s.in_flight += 1;
            s.request_started = None;
        });
        InFlight(Arc::clone(self))
    }

    /// When the connection must be closed if nothing changes: the header deadline while a
    /// request's head is arriving, the idle deadline while nothing is, none while a request is
    /// in flight (body reads and response writes have their own progress deadlines).
    pub(crate) fn deadline(&self, header: Duration, idle: Duration) -> Option<Instant> {
        let s = *self.state.borrow();
        if s.in_flight > 0 {
            return None;
        }
        Some(match s.request_started {
            Some(t) => t + header,
            None => s.idle_since + idle,
        })
    }

    /// A receiver that sees every change of state.
    pub(crate) fn subscribe(&self) -> watch::Receiver<ActivityState> {
        self.state.subscribe()
    }
}

/// One request in flight; dropped when its response body is done (or abandoned).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.state.send_modify(|s| {
            s.in_flight -= 1;
            if s.in_flight == 0 {
                s.idle_since = Instant::now();
                s.request_started = None;
            }
        });
    }
}

/// A response body that keeps its request [`InFlight`] until it is written or dropped; sizes
/// and frames pass through unchanged (so `Content-Length` answers keep their length).
#[derive(Debug)]
pub(crate) struct TrackedBody<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> TrackedBody<B> {
    pub(crate) fn new(inner: B, in_flight: InFlight) -> Self {
        TrackedBody {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The client's socket, reporting reads to [`Activity`] and failing a write that makes no
/// progress for `write_timeout` (a client that stopped reading its response).
#[derive(Debug)]
pub(crate) struct TrackedIo<T> {
    inner: T,
    activity: Arc<Activity>,
    write_timeout: Duration,
    write_stall: Option<Pin<Box<Sleep>>>,
}

impl<T> TrackedIo<T> {
    pub(crate) fn new(inner: T, activity: Arc<Activity>, write_timeout: Duration) -> Self {
        TrackedIo {
            inner,
            activity,
            write_timeout,
            write_stall: None,
        }
    }

    /// Turns a pending write into an error once it has been pending for the write timeout.
    fn stalled<R>(
        &mut self,
        poll: Poll<io::Result<R>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<R>> {
        match poll {
            Poll::Ready(r) => {
                self.write_stall = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timeout = self.write_timeout;
                let stall = self
                    .write_stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match stall.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client read nothing of its response for {timeout:?}"),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.stalled(poll, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.stalled(poll, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.stalled(poll, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Descriptors kept free of API connections for plugin work (shim and plugin sockets, log
/// files and pipes, store files) when the limit is `nofile`: a quarter, at least 64, at most 4096.
pub fn reserved_descriptors(nofile: u64) -> u64 {
    (nofile / 4).clamp(64, 4096)
}

/// How many API connections fit under the descriptor limit `nofile` with
/// [`reserved_descriptors`] left free: a connection may hold two descriptors (its socket, and
/// a plugin socket or log file while it is served).
pub fn connection_budget(nofile: u64) -> usize {
    let budget = nofile.saturating_sub(reserved_descriptors(nofile)) / 2;
    usize::try_from(budget).unwrap_or(usize::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_leaves_room_for_plugin_work() {
        assert_eq!(connection_budget(1024), (1024 - 256) / 2);
        assert_eq!(connection_budget(256), (256 - 64) / 2);
        assert_eq!(connection_budget(1 << 20), ((1 << 20) - 4096) / 2);
        assert_eq!(connection_budget(10), 1);
    }

    #[test]
    fn deadlines_follow_the_connection_state() {
        let header = Duration::from_secs(5);
        let idle = Duration::from_secs(60);
        let a = Activity::new();
        let idle_since = a.state.borrow().idle_since;
        assert_eq!(a.deadline(header, idle), Some(idle_since + idle));
        a.on_read();
        let first_byte = a.state.borrow().request_started.unwrap();
        assert_eq!(a.deadline(header, idle), Some(first_byte + header));
        // More bytes of the same head do not extend it.
        a.on_read();
        assert_eq!(a.deadline(header, idle), Some(first_byte + header));
        let guard = a.begin();
        assert_eq!(a.deadline(header, idle), None, "a request in flight");
        // Bytes read while a request is in flight start no header deadline.
        a.on_read();
        let second = a.begin();
        drop(guard);
        assert_eq!(a.deadline(header, idle), None, "still one in flight");
        drop(second);
        let s = *a.state.borrow();
        assert!(s.idle_since >= first_byte);
        assert_eq!(s.request_started, None);
        assert_eq!(a.deadline(header, idle), Some(s.idle_since + idle));
    }

    #[tokio::test]
    async fn a_write_nobody_reads_fails_after_the_write_timeout() {
        use tokio::io::AsyncWriteExt;
        let (client, server) = tokio::io::duplex(1024);
        let mut io = TrackedIo::new(server, Activity::new(), Duration::from_millis(100));
        let err = io.write_all(&[0u8; 64 * 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);
    }

    #[tokio::test]
    async fn reads_mark_the_start_of_a_request_head() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(1024);
        let activity = Activity::new();
        let mut io = TrackedIo::new(server, Arc::clone(&activity), Duration::from_secs(1));
        assert_eq!(activity.state.borrow().request_started, None);
        client.write_all(b"GET").await.unwrap();
        let mut buf = [0u8; 3];
        io.read_exact(&mut buf).await.unwrap();
        assert!(activity.state.borrow().request_started.is_some());
    }
}
