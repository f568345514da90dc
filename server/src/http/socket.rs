//! A connection's socket, shared by hyper (which reads and writes it) and a
//! watch for the client hanging up.
//!
//! hyper notices a closed connection only when it next reads, and a request
//! whose body it is still reading from the kernel's buffers (a large import
//! the client sent whole, then gave up on) would be served to the end for
//! nobody. The kernel says at once that the peer has closed its side
//! (`EPOLLRDHUP`, tokio's "read closed"), even with data still buffered:
//! the connection is then dropped, and with it the request's work.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// How often a connection with unread data is checked for a hang-up (when
/// all is read, the check waits for the kernel instead).
const HANG_UP_CHECK_EVERY: Duration = Duration::from_secs(1);

/// hyper's handle on the socket.
#[derive(Debug, Clone)]
pub(crate) struct Shared(Arc<TcpStream>);

impl Shared {
    pub fn new(stream: TcpStream) -> Self {
        Self(Arc::new(stream))
    }

    /// Resolves once the client has closed its side of the connection (or
    /// the socket failed). Never reads: what is buffered stays for hyper.
    pub async fn hung_up(&self) {
        loop {
            match self.0.ready(Interest::READABLE).await {
                Ok(ready) if ready.is_read_closed() => return,
                // Data waits for hyper: readiness stays set until it reads,
                // so look again after a while rather than spin.
                Ok(_) => tokio::time::sleep(HANG_UP_CHECK_EVERY).await,
                Err(_) => return,
            }
        }
    }
}

impl AsyncRead for Shared {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for Shared {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                written => return Poll::Ready(written),
            }
        }
    }

    /// Headers and body in one system call, as hyper does on a bare socket.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                written => return Poll::Ready(written),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The socket closes (and the client reads the end) when the connection
    /// ends and both handles are dropped, a moment after this.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
