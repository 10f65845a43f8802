//! A connection as a byte stream: `futures::io::AsyncRead` on [`ConnReceiver`],
//! `AsyncWrite` on [`ConnSender`], both on [`Connection`], for code that wants bytes rather
//! than messages (a codec, TLS, `futures::io::copy`). Message boundaries are not preserved.
//!
//! - A write sends (a prefix of) the buffer as one message: at most [`WRITE_CHUNK`] bytes,
//!   or less if the connection cannot carry that much in one message. It waits for credit
//!   and ring space like [`ConnSender::send`], and is done once the bytes are in the replay
//!   ring, so `poll_flush` has nothing left to do but queue what the `Sink` staged.
//!   `poll_close` closes the connection (both ways).
//! - A read copies out of the next message; what does not fit is kept for the next read.
//!   The peer's close is the end of the stream (`Ok(0)`); a session that ended, or a
//!   connection we closed, is an error. tokio users can wrap these with
//!   `tokio_util::compat`.

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
fn io_error(e: ConnError) -> io::Error {
    let kind = match &e {
        ConnError::PeerClosed(_) => io::ErrorKind::BrokenPipe,
        ConnError::Closed => io::ErrorKind::NotConnected,
        ConnError::Ended(_) => io::ErrorKind::ConnectionAborted,
        ConnError::TooLarge { .. } => io::ErrorKind::InvalidInput,
    };
    io::Error::new(kind, e)
}

impl AsyncWrite for ConnSender {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
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

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_staged(cx).map_err(io_error)
    }

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
        // Empty messages carry no bytes: skip them.
        while this.partial.is_empty() {
            match ready!(this.poll_recv(cx)) {
                Ok(message) => this.partial = message,
                Err(ConnError::PeerClosed(_)) => return Poll::Ready(Ok(0)),
                Err(e) => return Poll::Ready(Err(io_error(e))),
            }
        }
        let n = buf.len().min(this.partial.len());
        buf[..n].copy_from_slice(&this.partial[..n]);
        this.partial.advance(n);
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
