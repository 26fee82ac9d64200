//! The partner's socket: binding (with `SO_REUSEADDR`, so the same port can be
//! bound again after [`MockPartner::go_down`](super::MockPartner::go_down)), and
//! a listener that counts open connections and reports when it is closed.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;

use super::state::Shared;

/// Bind `addr` with `SO_REUSEADDR` and listen.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// [`bind`], trying again for up to `patience` while the port is in use.
pub(crate) async fn bind_patiently(
    addr: SocketAddr,
    patience: Duration,
) -> io::Result<TcpListener> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match bind(addr) {
            Err(err)
                if err.kind() == io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            bound => return bound,
        }
    }
}

/// A listener whose connections are counted in [`Shared`], and whose drop
/// (when axum stops accepting) resolves the paired receiver.
#[derive(Debug)]
pub(crate) struct TrackedListener {
    inner: TcpListener,
    shared: Arc<Shared>,
    _closed: oneshot::Sender<()>,
}

impl TrackedListener {
    /// The listener, and a receiver that resolves (with an error) once it is
    /// dropped, that is, once the port no longer accepts connections.
    pub(crate) fn new(
        inner: TcpListener,
        shared: Arc<Shared>,
    ) -> (TrackedListener, oneshot::Receiver<()>) {
        let (closed, on_close) = oneshot::channel();
        let listener = TrackedListener {
            inner,
            shared,
            _closed: closed,
        };
        (listener, on_close)
    }
}

impl axum::serve::Listener for TrackedListener {
    type Io = TrackedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TrackedStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    self.shared.connection_opened();
                    let stream = TrackedStream {
                        inner: stream,
                        shared: Arc::clone(&self.shared),
                    };
                    return (stream, addr);
                }
                // A client that gave up before we accepted: nothing to do.
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionRefused
                    ) => {}
                // Out of file descriptors, say: wait a little for some to close.
                Err(err) => {
                    tracing::warn!(error = %err, "mock partner: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted connection, counted in [`Shared`] until dropped.
#[derive(Debug)]
pub(crate) struct TrackedStream {
    inner: TcpStream,
    shared: Arc<Shared>,
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        self.shared.connection_closed();
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
