//! smol's streams and listeners as the driver's link sources: any `futures::io` stream
//! becomes a link ([`StreamGlue`]), and smol's TCP and Unix socket listeners yield accepted
//! links ([`ListenerGlue`]), each with its peer's address.

use futures::io::{AsyncRead, AsyncWrite};
use futures::stream::{BoxStream, StreamExt};
use sotto_driver::{FuturesIo, HookGlue, ListenerGlue, PeerAddr, StreamGlue, WithPeer};

use crate::Smol;

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> StreamGlue<S> for Smol {
    type Io = WithPeer<FuturesIo<S>>;

    /// `s`, with its peer's address if it is a smol TCP or Unix stream.
    fn io(s: S) -> Self::Io {
        let peer = peer_of(&s);
        WithPeer::new(FuturesIo(s), peer)
    }
}

/// Accepted streams get `TCP_NODELAY` (writes are already batched; a failure to set it
/// leaves the stream usable).
impl ListenerGlue<smol::net::TcpListener> for Smol {
    type Io = WithPeer<FuturesIo<smol::net::TcpStream>>;

    fn incoming(&self, listener: smol::net::TcpListener) -> BoxStream<'static, std::io::Result<Self::Io>> {
        futures::stream::unfold(listener, |l| async move {
            let r = l.accept().await.map(|(s, addr)| {
                let _ = s.set_nodelay(true);
                WithPeer::new(FuturesIo(s), Some(PeerAddr::Tcp(addr)))
            });
            Some((r, l))
        })
        .boxed()
    }
}

/// Accepted streams as they are, for a link hook (with `TCP_NODELAY`, as above).
impl HookGlue<smol::net::TcpListener> for Smol {
    type Stream = smol::net::TcpStream;

    fn accepted(
        &self,
        listener: smol::net::TcpListener,
    ) -> BoxStream<'static, std::io::Result<(smol::net::TcpStream, Option<PeerAddr>)>> {
        futures::stream::unfold(listener, |l| async move {
            let r = l.accept().await.map(|(s, addr)| {
                let _ = s.set_nodelay(true);
                (s, Some(PeerAddr::Tcp(addr)))
            });
            Some((r, l))
        })
        .boxed()
    }
}

#[cfg(unix)]
impl ListenerGlue<smol::net::unix::UnixListener> for Smol {
    type Io = WithPeer<FuturesIo<smol::net::unix::UnixStream>>;

    fn incoming(&self, listener: smol::net::unix::UnixListener) -> BoxStream<'static, std::io::Result<Self::Io>> {
        futures::stream::unfold(listener, |l| async move {
            let r = l.accept().await.map(|(s, addr)| {
                let peer = PeerAddr::Unix(addr.as_pathname().map(Into::into));
                WithPeer::new(FuturesIo(s), Some(peer))
            });
            Some((r, l))
        })
        .boxed()
    }
}

/// The peer address of a smol TCP or Unix stream; `None` for any other stream type.
fn peer_of(s: &dyn std::any::Any) -> Option<PeerAddr> {
    if let Some(tcp) = s.downcast_ref::<smol::net::TcpStream>() {
        return tcp.peer_addr().ok().map(PeerAddr::Tcp);
    }
    #[cfg(unix)]
    if let Some(unix) = s.downcast_ref::<smol::net::unix::UnixStream>() {
        return unix.peer_addr().ok().map(|a| PeerAddr::Unix(a.as_pathname().map(Into::into)));
    }
    None
}
