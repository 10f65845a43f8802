//! A connection as a byte stream: `futures::io::AsyncRead` on [`ConnReceiver`],
//! `AsyncWrite` on [`ConnSender`], both on [`Connection`], for code that wants bytes rather
//! than messages (a codec, TLS, `futures::io::copy`). Message boundaries are not preserved.
//! With the `tokio` feature (on in `sotto-tokio`) the same types implement tokio's
//! `AsyncRead`/`AsyncWrite` too, with the same behaviour (`tokio::io::copy` works on them
//! directly).
//!
//! - A write sends (a prefix of) the buffer as one message: at most [`WRITE_CHUNK`] bytes,
//!   or less if the connection cannot carry that much in one message. It waits for credit
//!   and ring space like [`ConnSender::send`], and is done once the bytes are in the replay
//!   ring, so `poll_flush` has nothing left to do but queue what the `Sink` staged (it does
//!   not wait for the peer; [`ConnSender::flush_acked`] does).
//! - `poll_close` (tokio: `poll_shutdown`) is a half-close, as on a TCP stream: it
//!   [`finish`](ConnSender::finish)es our side, the peer reads the end of its stream, and
//!   reading ours goes on until the peer finishes too. With a peer of session protocol
//!   version 2 it closes the connection both ways instead.
//! - A read copies out of the next message; what does not fit is kept for the next read.
//!   The peer's finish or close is the end of the stream (`Ok(0)`); a session that ended,
//!   or a connection we closed, is an error.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Buf;
use futures::io::{AsyncRead, AsyncWrite};
use futures::sink::Sink;

use super::conn::{ConnError, ConnReceiver, ConnSender, Connection};

/// The most bytes one write sends as a message.
pub const WRITE_CHUNK: usize = 16 << 10;

/// `e` as an I/O error (the `ConnError` is its source).
pub(super) fn io_error(e: ConnError) -> io::Error {
    let kind = match &e {
        ConnError::PeerClosed(_) => io::ErrorKind::BrokenPipe,
        ConnError::Closed => io::ErrorKind::NotConnected,
        ConnError::Finished => io::ErrorKind::BrokenPipe,
        ConnError::PeerFinished => io::ErrorKind::UnexpectedEof,
        ConnError::Ended(_) => io::ErrorKind::ConnectionAborted,
        ConnError::TooLarge { .. } => io::ErrorKind::InvalidInput,
    };
    io::Error::new(kind, e)
}

impl ConnSender {
    /// One byte-stream write; see the module docs.
    pub(super) fn poll_write_bytes(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // Messages the Sink staged go first.
        ready!(this.poll_staged(cx)).map_err(io_error)?;
        let mut n = buf.len().min(WRITE_CHUNK);
        loop {
            match ready!(this.poll_send(cx, &buf[..n])) {
                Ok(()) => return Poll::Ready(Ok(n)),
                // A small window: send what one message can carry (`max` only shrinks `n`).
                Err(ConnError::TooLarge { max, .. }) if max > 0 && (max as usize) < n => n = max as usize,
                Err(e) => return Poll::Ready(Err(io_error(e))),
            }
        }
    }
}

impl ConnReceiver {
    /// The bytes available now (at least one), or `Ok(None)` at the end of the stream.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<&mut bytes::Bytes>>> {
        // Empty messages carry no bytes: skip them.
        while self.partial.is_empty() {
            match ready!(self.poll_recv(cx)) {
                Ok(message) => self.partial = message,
                Err(ConnError::PeerClosed(_) | ConnError::PeerFinished) => return Poll::Ready(Ok(None)),
                Err(e) => return Poll::Ready(Err(io_error(e))),
            }
        }
        Poll::Ready(Ok(Some(&mut self.partial)))
    }
}

impl AsyncWrite for ConnSender {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_bytes(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_staged(cx).map_err(io_error)
    }

    /// A half-close: see [`ConnSender::finish`].
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Sink::poll_close(self, cx).map_err(io_error)
    }
}

impl AsyncRead for ConnReceiver {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let Some(partial) = ready!(this.poll_fill(cx))? else { return Poll::Ready(Ok(0)) };
        let n = buf.len().min(partial.len());
        buf[..n].copy_from_slice(&partial[..n]);
        partial.advance(n);
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().halves_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(self.get_mut().halves_mut().0), cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_close(Pin::new(self.get_mut().halves_mut().0), cx)
    }
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().halves_mut().1).poll_read(cx, buf)
    }
}

/// tokio's `AsyncRead`/`AsyncWrite`, the same byte stream as `futures::io`'s above
/// (`poll_shutdown` is the half-close).
#[cfg(feature = "tokio")]
mod tokio_io {
    use std::io;
    use std::pin::Pin;
    use std::task::{ready, Context, Poll};

    use bytes::Buf;
    use futures::sink::Sink;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    use super::super::conn::{ConnReceiver, ConnSender, Connection};
    use super::io_error;

    impl AsyncWrite for ConnSender {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.get_mut().poll_write_bytes(cx, buf)
        }
        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().poll_staged(cx).map_err(io_error)
        }
        /// A half-close: see [`ConnSender::finish`].
        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Sink::poll_close(self, cx).map_err(io_error)
        }
    }

    impl AsyncRead for ConnReceiver {
        fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let Some(partial) = ready!(this.poll_fill(cx))? else { return Poll::Ready(Ok(())) };
            let n = buf.remaining().min(partial.len());
            buf.put_slice(&partial[..n]);
            partial.advance(n);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Connection {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            AsyncWrite::poll_write(Pin::new(self.get_mut().halves_mut().0), cx, buf)
        }
        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            AsyncWrite::poll_flush(Pin::new(self.get_mut().halves_mut().0), cx)
        }
        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            AsyncWrite::poll_shutdown(Pin::new(self.get_mut().halves_mut().0), cx)
        }
    }

    impl AsyncRead for Connection {
        fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            AsyncRead::poll_read(Pin::new(self.get_mut().halves_mut().1), cx, buf)
        }
    }
}
