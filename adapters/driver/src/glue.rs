//! Link sources as a runtime's adapter plugs them in: how its streams become links
//! ([`StreamGlue`]: wrap a stream of type `S` for the driver, learning its peer's address
//! where it can) and how its listeners yield accepted streams ([`ListenerGlue`]: a TCP
//! listener, a Unix socket listener; any stream of accepted streams is one through
//! [`Streams`]; [`HookGlue`]: a TCP listener's streams as they are, for a link hook).

use std::io;

use futures::stream::{BoxStream, Stream, StreamExt};

use crate::runtime::{Io, PeerAddr, Runtime};

/// How a runtime's adapter carries a stream of type `S` (what an application's connector
/// returns, or a generic listener yields) as a link: implemented by the adapter's runtime
/// type for every stream type it takes.
pub trait StreamGlue<S>: Runtime {
    /// The stream as the driver carries it (typically [`WithPeer`](crate::WithPeer) around
    /// the adapter's I/O wrapper).
    type Io: Io;

    /// Wrap `stream` for the driver, with its peer's address if the adapter can tell it.
    fn io(stream: S) -> Self::Io;
}

/// How a runtime's adapter takes accepted streams from a listener of type `L` (a TCP or Unix
/// socket listener of that runtime): implemented by the adapter's runtime type.
pub trait ListenerGlue<L>: Runtime {
    /// An accepted stream, as the driver carries it (with the peer's address the listener
    /// reported, through [`Io::peer_addr`]).
    type Io: Io;

    /// The listener's accepted streams, in order: an `Err` item pauses accepting briefly
    /// (out of file descriptors, say); the end of the stream stops the acceptor. Called
    /// once, on a task of this runtime's.
    fn incoming(&self, listener: L) -> BoxStream<'static, io::Result<Self::Io>>;
}

/// How a runtime's adapter takes accepted streams from a listener of type `L` as they are,
/// for an acceptor's link hook ([`AcceptHooks`](crate::AcceptHooks)) to transform:
/// implemented by the adapter's runtime type for its TCP listener.
pub trait HookGlue<L>: Runtime {
    /// An accepted stream, as the listener made it (what the link hook gets, inside an
    /// [`AcceptedLink`](crate::AcceptedLink)).
    type Stream: Send + 'static;

    /// The listener's accepted streams with their peers' addresses, in order (an `Err`
    /// item pauses accepting briefly; the end of the stream stops the acceptor). Called
    /// once, on a task of this runtime's.
    fn accepted(&self, listener: L) -> BoxStream<'static, io::Result<(Self::Stream, Option<PeerAddr>)>>;
}

/// Any stream of freshly accepted streams, as a listener: each is wrapped by the runtime's
/// [`StreamGlue`].
#[derive(Debug)]
pub struct Streams<St>(pub St);

impl<R, St, S> ListenerGlue<Streams<St>> for R
where
    R: StreamGlue<S>,
    St: Stream<Item = io::Result<S>> + Send + 'static,
{
    type Io = R::Io;

    fn incoming(&self, listener: Streams<St>) -> BoxStream<'static, io::Result<R::Io>> {
        listener.0.map(|r| r.map(R::io)).boxed()
    }
}
