//! The adapters' entry points, written once: [`dial`], [`dial_session`], [`listen`],
//! [`listen_sessions`], generic over an adapter's glue (`glue`: [`StreamGlue`] for its
//! streams, [`ListenerGlue`] for its listeners), so an adapter's `connect`, `serve_tcp` and
//! the rest are one line each, and a new runtime is its [`Runtime`](crate::Runtime) plus
//! those glue impls.
//!
//! Both acceptors account links per source, the hash of a TCP peer's IP address taken from
//! the accepted stream ([`Io::peer_addr`](crate::runtime::Io::peer_addr)); a stream with no TCP peer address (a Unix socket,
//! a stream type the adapter cannot look into) counts as the one source 0 (see `routing`).

use std::future::Future;
use std::io;

use futures::stream::StreamExt;
use futures::TryFutureExt;
use sotto_proto::conduit::ConfigError;

use crate::acceptor::{serve, serve_hooked, Acceptor};
use crate::config::Config;
use crate::glue::{HookGlue, ListenerGlue, StreamGlue};
use crate::handle::{connect, ConnectError, StableConduit};
use crate::link_hook::{AcceptHooks, LinkInfo};
use crate::peer::WithPeer;
use crate::routing::source_of_peer;
use crate::session::{
    connect_session_with, serve_sessions, serve_sessions_hooked, ReconnectingSession, SessionAcceptor, SessionHandle,
};

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

/// Start a [`ReconnectingSession`] on `rt` over the streams `connector` makes, with
/// `metadata` in every session's Hello, each stream wrapped by `rt`'s [`StreamGlue`]. What
/// an adapter's `connect_reconnecting` is.
pub async fn dial_reconnecting<R, S, F, Fut>(
    rt: R,
    connector: F,
    config: Config,
    metadata: &[u8],
) -> Result<ReconnectingSession, ConnectError>
where
    R: StreamGlue<S>,
    S: 'static,
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
{
    ReconnectingSession::connect(rt, glued::<R, S, F, Fut>(connector), config, metadata).await
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

/// A link hook's stream `t`, wrapped by `R`'s [`StreamGlue`], with the link's address and
/// identity.
fn hooked_io<R: StreamGlue<T>, T>(t: T, info: LinkInfo) -> WithPeer<R::Io> {
    WithPeer::new(R::io(t), info.peer_addr).with_identity(info.identity)
}

/// Serve `listener` on `rt` with the session API, running `hooks` on every accepted link
/// (see [`AcceptHooks`] and [`serve_sessions_hooked`]): the link hook gets each accepted
/// stream and returns the stream of type `T` to run the session over, which `rt`'s
/// [`StreamGlue`] carries. What an adapter's `serve_sessions_tcp_with` is.
pub fn listen_sessions_with<R, L, T>(
    rt: R,
    listener: L,
    config: Config,
    hooks: AcceptHooks<<R as HookGlue<L>>::Stream, T>,
) -> Result<SessionAcceptor, ConfigError>
where
    R: HookGlue<L> + StreamGlue<T>,
    T: Send + 'static,
{
    let incoming = rt.accepted(listener);
    serve_sessions_hooked(rt, incoming, config, hooks, hooked_io::<R, T>)
}

/// [`listen_sessions_with`] for the raw stable-conduit API (see [`serve_hooked`]). What an
/// adapter's `raw::serve_tcp_with` is.
pub fn listen_with<R, L, T>(
    rt: R,
    listener: L,
    config: Config,
    hooks: AcceptHooks<<R as HookGlue<L>>::Stream, T>,
) -> Result<Acceptor, ConfigError>
where
    R: HookGlue<L> + StreamGlue<T>,
    T: Send + 'static,
{
    let incoming = rt.accepted(listener);
    serve_hooked(rt, incoming, config, hooks, hooked_io::<R, T>)
}
