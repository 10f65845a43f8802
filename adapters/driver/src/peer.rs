//! Who is at the other end of a link: [`WithPeer`] gives any
//! [`Io`] stream the address its adapter learned when the stream was made (the driver
//! records it as the session's current link's peer, [`SessionHandle::peer_addr`](crate::SessionHandle::peer_addr)).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;

use crate::link_hook::PeerIdentity;
use crate::runtime::{Io, PeerAddr};

/// A stream and its peer's address (and identity, when a link hook established one): an
/// [`Io`] whose [`Io::peer_addr`] and [`Io::peer_identity`] are those. The adapters wrap the
/// streams they make or accept in it.
#[derive(Debug)]
pub struct WithPeer<T> {
    io: T,
    peer: Option<PeerAddr>,
    identity: Option<PeerIdentity>,
}

impl<T> WithPeer<T> {
    /// `io`, whose peer is `peer`.
    #[must_use]
    pub fn new(io: T, peer: Option<PeerAddr>) -> Self {
        Self { io, peer, identity: None }
    }

    /// The same stream, whose peer is identified as `identity` (see
    /// [`AcceptHooks`](crate::AcceptHooks)).
    #[must_use]
    pub fn with_identity(mut self, identity: Option<PeerIdentity>) -> Self {
        self.identity = identity;
        self
    }

    /// The wrapped stream.
    #[must_use]
    pub fn into_inner(self) -> T {
        self.io
    }
}

impl<T: Io> futures::io::AsyncRead for WithPeer<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: Io> futures::io::AsyncWrite for WithPeer<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

impl<T: Io> Io for WithPeer<T> {
    const READS_UNINIT: bool = T::READS_UNINIT;

    fn poll_read_uninit(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<std::io::Result<usize>> {
        self.io.poll_read_uninit(cx, buf)
    }

    fn peer_addr(&self) -> Option<PeerAddr> {
        self.peer.clone()
    }

    fn peer_identity(&self) -> Option<PeerIdentity> {
        self.identity.clone()
    }
}
