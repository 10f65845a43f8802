//! Link sources, as a runtime's adapter plugs them in, and the adapters' entry points written
//! once on top of them.
//!
//! An adapter says how its runtime's streams become links ([`StreamGlue`]: wrap a stream of
//! type `S` for the driver, learning its peer's address where it can) and how its listeners
//! yield accepted streams ([`ListenerGlue`]: a TCP listener, a Unix socket listener; any
//! stream of accepted streams is one through [`Streams`]). The entry points ([`dial`],
//! [`dial_session`], [`listen`], [`listen_sessions`]) are generic over those two traits, so
//! an adapter's `connect`, `serve_tcp` and the rest are one line each, and a new runtime is
//! its [`Runtime`] plus these glue impls.
//!
//! Both acceptors account links per source, the hash of a TCP peer's IP address taken from
//! the accepted stream ([`Io::peer_addr`]); a stream with no TCP peer address (a Unix socket,
//! a stream type the adapter cannot look into) counts as the one source 0 (see `routing`).

use std::future::Future;
use std::io;

use futures::stream::{BoxStream, Stream, StreamExt};
use futures::TryFutureExt;
use sotto_proto::conduit::ConfigError;

use crate::acceptor::{serve, Acceptor};
use crate::config::Config;
use crate::handle::{connect, ConnectError, StableConduit};
use crate::routing::source_of_peer;
use crate::runtime::{Io, Runtime};
use crate::session::{connect_session_with, serve_sessions, SessionAcceptor, SessionHandle};

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

/// The application's connector, its streams wrapped by `R`'s glue.
fn glued<R, S, F, Fut>(mut connector: F) -> impl FnMut() -> futures::future::MapOk<Fut, fn(S) -> R::Io> + Send + 'static
where
    R: StreamGlue<S>,
    S: 'static,
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
{
    move || connector().map_ok(R::io as fn(S) -> R::Io)
}

/// Start an initiator stable conduit on `rt` over the streams `connector` makes (see
/// [`connect`]), each wrapped by `rt`'s [`StreamGlue`]. What an adapter's `raw::connect` is.
pub async fn dial<R, S, F, Fut>(rt: R, connector: F, config: Config) -> Result<StableConduit, ConnectError>
where
    R: StreamGlue<S>,
    S: 'static,
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
{
    connect(rt, glued::<R, S, F, Fut>(connector), config).await
}

/// Start an initiator session on `rt` over the streams `connector` makes, with `metadata`
/// in its Hello (see [`connect_session_with`]), each stream wrapped by `rt`'s
/// [`StreamGlue`]. What an adapter's `connect_session` and `connect_session_with` are.
pub async fn dial_session<R, S, F, Fut>(
    rt: R,
    connector: F,
    config: Config,
    metadata: &[u8],
) -> Result<SessionHandle, ConnectError>
where
    R: StreamGlue<S>,
    S: 'static,
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
{
    connect_session_with(rt, glued::<R, S, F, Fut>(connector), config, metadata).await
}

/// Serve `listener` on `rt` with the raw stable-conduit API (see [`serve`]). What an
/// adapter's `raw::serve_tcp`, `raw::serve_unix` and `raw::serve` are.
pub fn listen<R, L>(rt: R, listener: L, config: Config) -> Result<Acceptor, ConfigError>
where
    R: ListenerGlue<L>,
{
    let incoming = rt.incoming(listener);
    serve(rt, incoming, config)
}

/// Serve `listener` on `rt` with the session API (see [`serve_sessions`]), each link's
/// source taken from its peer's address. What an adapter's `serve_sessions_tcp`,
/// `serve_sessions_unix` and `serve_sessions` are.
pub fn listen_sessions<R, L>(rt: R, listener: L, config: Config) -> Result<SessionAcceptor, ConfigError>
where
    R: ListenerGlue<L>,
{
    let incoming = rt.incoming(listener).map(|r| {
        r.map(|io| {
            let source = source_of_peer(&io);
            (io, source)
        })
    });
    serve_sessions(rt, incoming, config)
}
