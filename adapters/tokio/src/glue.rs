//! tokio's streams and listeners as the driver's link sources: any tokio stream becomes a
//! link ([`StreamGlue`]), and tokio's TCP and Unix socket listeners yield accepted links
//! ([`ListenerGlue`]), each with its peer's address.

use futures::stream::{BoxStream, StreamExt};
use sotto_driver::{HookGlue, ListenerGlue, PeerAddr, StreamGlue, WithPeer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{Tokio, TokioIo};

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> StreamGlue<S> for Tokio {
    type Io = WithPeer<TokioIo<S>>;

    /// `s`, with its peer's address if it is a tokio TCP or Unix stream.
    fn io(s: S) -> Self::Io {
        let peer = peer_of(&s);
        WithPeer::new(TokioIo::new(s), peer)
    }
}

/// Accepted streams get `TCP_NODELAY` (writes are already batched; a failure to set it
/// leaves the stream usable).
impl ListenerGlue<tokio::net::TcpListener> for Tokio {
    type Io = WithPeer<TokioIo<tokio::net::TcpStream>>;

    fn incoming(&self, listener: tokio::net::TcpListener) -> BoxStream<'static, std::io::Result<Self::Io>> {
        futures::stream::poll_fn(move |cx| {
            listener.poll_accept(cx).map(|r| {
                Some(r.map(|(s, addr)| {
                    let _ = s.set_nodelay(true);
                    WithPeer::new(TokioIo::new(s), Some(PeerAddr::Tcp(addr)))
                }))
            })
        })
        .boxed()
    }
}

/// Accepted streams as they are, for a link hook (with `TCP_NODELAY`, as above).
impl HookGlue<tokio::net::TcpListener> for Tokio {
    type Stream = tokio::net::TcpStream;

    fn accepted(
        &self,
        listener: tokio::net::TcpListener,
    ) -> BoxStream<'static, std::io::Result<(tokio::net::TcpStream, Option<PeerAddr>)>> {
        futures::stream::poll_fn(move |cx| {
            listener.poll_accept(cx).map(|r| {
                Some(r.map(|(s, addr)| {
                    let _ = s.set_nodelay(true);
                    (s, Some(PeerAddr::Tcp(addr)))
                }))
            })
        })
        .boxed()
    }
}

#[cfg(unix)]
impl ListenerGlue<tokio::net::UnixListener> for Tokio {
    type Io = WithPeer<TokioIo<tokio::net::UnixStream>>;

    fn incoming(&self, listener: tokio::net::UnixListener) -> BoxStream<'static, std::io::Result<Self::Io>> {
        futures::stream::poll_fn(move |cx| {
            listener.poll_accept(cx).map(|r| {
                Some(r.map(|(s, addr)| {
                    let peer = PeerAddr::Unix(addr.as_pathname().map(Into::into));
                    WithPeer::new(TokioIo::new(s), Some(peer))
                }))
            })
        })
        .boxed()
    }
}

/// The peer address of a tokio TCP or Unix stream; `None` for any other stream type.
fn peer_of(s: &dyn std::any::Any) -> Option<PeerAddr> {
    if let Some(tcp) = s.downcast_ref::<tokio::net::TcpStream>() {
        return tcp.peer_addr().ok().map(PeerAddr::Tcp);
    }
    #[cfg(unix)]
    if let Some(unix) = s.downcast_ref::<tokio::net::UnixStream>() {
        return unix.peer_addr().ok().map(|a| PeerAddr::Unix(a.as_pathname().map(Into::into)));
    }
    None
}
