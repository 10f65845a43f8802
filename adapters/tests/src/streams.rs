//! Stream wrappers that misbehave in controlled ways, for both `futures::io` (smol) and
//! `tokio::io` streams.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Reads at most one byte and writes at most one byte per call: every frame boundary (and
/// every byte inside a prefix) falls between two calls.
#[derive(Debug)]
pub struct OneByte<T>(pub T);

/// Writes normally until `budget` bytes have gone out, then every write returns `Ok(0)`.
#[derive(Debug)]
pub struct WriteZeroAfter<T> {
    /// The wrapped stream.
    pub inner: T,
    /// Bytes still accepted before writes return 0.
    pub budget: usize,
}

impl<T: futures::io::AsyncRead + Unpin> futures::io::AsyncRead for OneByte<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let n = buf.len().min(1);
        Pin::new(&mut self.get_mut().0).poll_read(cx, &mut buf[..n])
    }
}

impl<T: futures::io::AsyncWrite + Unpin> futures::io::AsyncWrite for OneByte<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let n = buf.len().min(1);
        Pin::new(&mut self.get_mut().0).poll_write(cx, &buf[..n])
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_close(cx)
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for OneByte<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut one = [0u8; 1];
        let mut small = tokio::io::ReadBuf::new(&mut one);
        match Pin::new(&mut self.get_mut().0).poll_read(cx, &mut small) {
            Poll::Ready(Ok(())) => {
                buf.put_slice(small.filled());
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for OneByte<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let n = buf.len().min(1);
        Pin::new(&mut self.get_mut().0).poll_write(cx, &buf[..n])
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl<T: futures::io::AsyncRead + Unpin> futures::io::AsyncRead for WriteZeroAfter<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: futures::io::AsyncWrite + Unpin> futures::io::AsyncWrite for WriteZeroAfter<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = buf.len().min(this.budget);
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        let r = Pin::new(&mut this.inner).poll_write(cx, &buf[..n]);
        if let Poll::Ready(Ok(w)) = r {
            this.budget -= w;
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteZeroAfter<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteZeroAfter<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = buf.len().min(this.budget);
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        let r = Pin::new(&mut this.inner).poll_write(cx, &buf[..n]);
        if let Poll::Ready(Ok(w)) = r {
            this.budget -= w;
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Claims more than it was given, on the `every`-th write (it wrote what it was given, and
/// says one byte more) and on the `every`-th read (it read what fit, and says one byte more
/// than the room): a broken stream, which must cost a link, not the framing.
#[derive(Debug)]
pub struct OverReport<T> {
    /// The wrapped stream.
    pub inner: T,
    /// Every this many calls (of each kind) lie; 0: never.
    pub every: u32,
    /// Writes so far.
    pub writes: u32,
    /// Reads so far.
    pub reads: u32,
}

impl<T> OverReport<T> {
    /// Wrap `inner`, lying on every `every`-th read and write.
    pub fn new(inner: T, every: u32) -> Self {
        Self { inner, every, writes: 0, reads: 0 }
    }
}

impl<T: futures::io::AsyncRead + Unpin> futures::io::AsyncRead for OverReport<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        match r {
            Poll::Ready(Ok(n)) if n > 0 => {
                this.reads += 1;
                let lie = this.every > 0 && this.reads % this.every == 0;
                Poll::Ready(Ok(if lie { buf.len() + 1 } else { n }))
            }
            other => other,
        }
    }
}

impl<T: futures::io::AsyncWrite + Unpin> futures::io::AsyncWrite for OverReport<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        match r {
            Poll::Ready(Ok(n)) if n > 0 => {
                this.writes += 1;
                let lie = this.every > 0 && this.writes % this.every == 0;
                Poll::Ready(Ok(if lie { buf.len() + 1 } else { n }))
            }
            other => other,
        }
    }
    // The lie is about the whole call: one byte more than all the slices (a lie about a
    // prefix of them would be a transport silently dropping bytes, which no framing without
    // checksums can see; TCP does not do that).
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        match r {
            Poll::Ready(Ok(n)) if n > 0 => {
                this.writes += 1;
                let lie = this.every > 0 && this.writes % this.every == 0;
                Poll::Ready(Ok(if lie { bufs.iter().map(|b| b.len()).sum::<usize>() + 1 } else { n }))
            }
            other => other,
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

/// Panics in its `reads`-th read (a bug in the application's stream type).
#[derive(Debug)]
pub struct PanicOnRead<T> {
    /// The wrapped stream.
    pub inner: T,
    /// Reads left before the one that panics.
    pub reads: u32,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for PanicOnRead<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.reads = this.reads.saturating_sub(1);
        assert!(this.reads > 0, "the application's stream panics (on purpose)");
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for PanicOnRead<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Passes everything through until `stall` is set; from then on every write, flush and
/// close is pending forever (as toward a peer that stopped reading, its socket buffers
/// full). Reads go on.
#[derive(Debug)]
pub struct Stallable<T> {
    /// The wrapped stream.
    pub inner: T,
    /// Set to stall the writes.
    pub stall: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<T> Stallable<T> {
    fn stalled(&self) -> bool {
        self.stall.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl<T: futures::io::AsyncRead + Unpin> futures::io::AsyncRead for Stallable<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: futures::io::AsyncWrite + Unpin> futures::io::AsyncWrite for Stallable<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.stalled() {
            return Poll::Pending;
        }
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.stalled() {
            return Poll::Pending;
        }
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.stalled() {
            return Poll::Pending;
        }
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Stallable<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Stallable<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.stalled() {
            return Poll::Pending;
        }
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.stalled() {
            return Poll::Pending;
        }
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.stalled() {
            return Poll::Pending;
        }
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
