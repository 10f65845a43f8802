//! Sessions that survive their links, on tokio.
//!
//! A session joins two peers over a succession of links (TCP connections, Unix sockets, any
//! `AsyncRead + AsyncWrite`): when a link dies the initiator redials, the session resumes and
//! what was in flight is replayed, so every message arrives exactly once and in order. Inside
//! a session, virtual [`Connection`]s carry messages (`Stream<Item = Bytes>` +
//! `Sink<Bytes>`, or a byte stream through tokio's own `AsyncRead + AsyncWrite`, so
//! `tokio::io::copy(&mut conn, &mut tcp)` works without compat, or `futures::io`'s), each
//! with its own credit flow control. `shutdown` (or [`Connection::finish`]) is a half-close:
//! the peer reads the end of its stream, and reading ours goes on.
//! [`ConnSender::flush_acked`] and [`SessionHandle::flush`] wait until the peer acknowledged
//! what was sent; [`SessionHandle::close`] waits for that (and, with no link, for the next
//! link) within `config.protocol.close_timeout` before its GOODBYE.
//!
//! - [`connect_session`]: an initiator's [`SessionHandle`], over streams from your connector
//!   (called again, with backoff, whenever a link dies).
//! - [`serve_sessions_tcp`], [`serve_sessions_unix`], [`serve_sessions`]: a
//!   [`SessionAcceptor`] that runs handshakes under a deadline, routes resumes to their
//!   sessions, enforces its limits ([`AcceptorConfig`]) and yields new sessions.
//! - [`SessionHandle::open`] / [`SessionHandle::accept`]: virtual connections.
//! - [`SessionHandle::unacknowledged`]: once a session is lost (the server restarted), the
//!   messages the peer never acknowledged, with their connections, in order, and the
//!   connections to open again; delivery across a loss is at least once
//!   ([`Unacknowledged`]). [`connect_reconnecting`]: an opt-in [`ReconnectingSession`] that
//!   starts a new session after a loss and hands over those leftovers.
//! - [`Config`]: every knob, grouped by concern, with its default.
//!
//! ```
//! use futures::{SinkExt, StreamExt};
//! use sotto_tokio::{connect_session, serve_sessions_tcp, Config};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//!     let addr = listener.local_addr()?;
//!     let acceptor = serve_sessions_tcp(listener, Config::default())?;
//!     let client = connect_session(move || tokio::net::TcpStream::connect(addr), Config::default()).await?;
//!     let server = acceptor.accept().await?;
//!
//!     // `open` waits for the peer's answer, so the server answers concurrently.
//!     let (opened, answered) = tokio::join!(client.open(b"chat"), async {
//!         let incoming = server.accept().await?;
//!         Ok::<_, Box<dyn std::error::Error>>(incoming.accept(b"welcome").await?)
//!     });
//!     let mut conn = opened?;
//!     let mut peer = answered?;
//!     conn.send(b"hello").await?; // waits for credit, never buffers unboundedly
//!     assert_eq!(&peer.next().await.expect("a message")[..], b"hello");
//!     peer.send(bytes::Bytes::from_static(b"hi")).await?; // Sink
//!     assert_eq!(&conn.recv().await?[..], b"hi");
//!     client.close(0, "bye").await;
//!     Ok(())
//! }
//! ```
//!
//! Each session runs one driver task; dropping its handle closes the session (GOODBYE after
//! what was sent) and the task ends by itself within `protocol.drain_timeout`. The driver and
//! the handles are shared with `sotto-smol` (crate `sotto-driver`), so both adapters behave
//! the same and interoperate.
//!
//! Other modules: [`raw`], the bare stable conduit (one ordered item stream, no virtual
//! connections) for vox 0.3.0 peers; [`proto`], the sans-IO core (`sotto-proto`) whose types
//! appear in some reports (the common ones are re-exported here).
#![forbid(unsafe_code)]

/// The repository README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

mod compat;
mod glue;
pub mod raw;
mod runtime;

use std::future::Future;
use std::io;

use futures::stream::Stream;
use tokio::io::{AsyncRead, AsyncWrite};

pub use compat::TokioIo;
pub use runtime::Tokio;
/// The sans-IO core, `sotto-proto`: every type the adapter's reports carry.
/// Handing sessions and the listening socket to a new process (zero-downtime restart; see
/// docs/handoff.md): [`SessionAcceptor::hand_off`], [`SessionAcceptor::receive_handoff`],
/// [`handoff::receive_listener`].
#[cfg(unix)]
pub use sotto_driver::handoff;
use sotto_driver::Streams;
pub use sotto_driver::{
    live_tasks, permanent, AcceptHooks, AcceptedLink, AcceptorConfig, AcceptorGroup, AcceptorSummary, AnswerError,
    BufferConfig, Config, ConnError, ConnReceiver, ConnSender, ConnectError, Connection, DialConfig, DialFailure,
    Ended, Goodbye, GroupError, IncomingOpen, LinkDownCause, LinkHookFuture, LinkInfo, LostConnection, OpenError,
    PeerAddr, PeerIdentity, Permanent, ProtocolConfig, ReconnectingSession, Refusals, RenewError, Renewal, Reopened,
    ResumeTiming, SessionAcceptor, SessionAcceptorStats, SessionEvent, SessionHandle, SessionId, SessionStats,
    ShutdownReport, UnackedMessage, Unacknowledged, WithPeer, WRITE_CHUNK,
};
pub use sotto_proto as proto;
pub use sotto_proto::conduit::{ConfigError, LinkDropReason};
pub use sotto_proto::session::{CommandError, ConnId, SessionFailure, SessionViolation};
pub use sotto_proto::wire::FramingError;
pub use sotto_proto::SessionEnd;

/// Start an initiator session (session API) and wait until it is ready for connections.
/// `connector` is called for every link (the first and each redial) and returns a fresh
/// stream. Transient errors and failed handshakes are retried with backoff until
/// `config.dial.connect_timeout`; a REJECTED answer is not, nor an error the connector marks
/// with [`permanent`] (a TLS certificate error): connecting fails at once with it. Afterwards a
/// lost link is redialed (at once, then with exponential backoff, full jitter) until
/// `config.protocol.recovery_timeout`, after which the session ends as lost; an error marked
/// [`permanent`] ends it at once ([`SessionEnd::PermanentDialError`]). Every failed dial is
/// reported as a [`SessionEvent::DialFailed`]. Must be called
/// within a tokio runtime.
pub async fn connect_session<F, Fut, S>(connector: F, config: Config) -> Result<SessionHandle, ConnectError>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    sotto_driver::dial_session(Tokio, connector, config, &[]).await
}

/// [`connect_session`] with `metadata` in the session Hello, for the acceptor to read with
/// [`SessionHandle::peer_metadata`] (at most `config.protocol.max_metadata` bytes). Must be
/// called within a tokio runtime.
pub async fn connect_session_with<F, Fut, S>(
    connector: F,
    config: Config,
    metadata: &[u8],
) -> Result<SessionHandle, ConnectError>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    sotto_driver::dial_session(Tokio, connector, config, metadata).await
}

/// An initiator session that starts a new session whenever its session is lost (opt-in):
/// [`connect_session_with`]'s first session, then, after each loss,
/// [`ReconnectingSession::renewed`] connects anew with the same connector, configuration
/// and `metadata`, and hands over what the lost session left ([`Unacknowledged`]: the
/// connections to open again, the messages the peer never acknowledged). Delivery across a
/// loss is at least once. Must be called within a tokio runtime.
///
/// ```
/// # use futures::StreamExt;
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let addr = listener.local_addr()?;
/// # let acceptor = sotto_tokio::serve_sessions_tcp(listener, sotto_tokio::Config::default())?;
/// # let server = tokio::spawn(async move {
/// #     let session = acceptor.accept().await?;
/// #     let mut orders = session.accept().await?.accept(b"").await?;
/// #     let mut got = 0;
/// #     while got < 10 { orders.next().await.expect("an order"); got += 1; }
/// #     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(got)
/// # });
/// use sotto_tokio::{connect_reconnecting, Config, ConnError};
///
/// let connector = move || tokio::net::TcpStream::connect(addr);
/// let mut rs = connect_reconnecting(connector, Config::default(), b"client 7").await?;
/// let mut conn = rs.session().open(b"orders").await?;
/// let mut next = 0u64;
/// loop {
///     match conn.send(next.to_le_bytes()).await {
///         Ok(()) => next += 1,
///         Err(ConnError::Ended(_)) => {
///             // Lost (the server restarted): a new session, our connections opened again
///             // on it, and every message the old server never acknowledged sent again.
///             let renewal = rs.renewed().await?;
///             for again in renewal.reopen().await? {
///                 conn = again.conn;
///                 for m in again.messages {
///                     conn.send(m).await?;
///                 }
///             }
///         }
///         Err(e) => return Err(e.into()),
///     }
/// #   if next == 10 { break; }
/// }
/// # assert_eq!(server.await?.map_err(|e| e.to_string())?, 10);
/// # Ok(())
/// # }
/// ```
pub async fn connect_reconnecting<F, Fut, S>(
    connector: F,
    config: Config,
    metadata: &[u8],
) -> Result<ReconnectingSession, ConnectError>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    sotto_driver::dial_reconnecting(Tokio, connector, config, metadata).await
}

/// Serve a TCP listener with the session API, through the core endpoint (accepted streams
/// get `TCP_NODELAY`; the per-source failure budget is keyed by peer IP). Must be called
/// within a tokio runtime.
pub fn serve_sessions_tcp(listener: tokio::net::TcpListener, config: Config) -> Result<SessionAcceptor, ConfigError> {
    sotto_driver::listen_sessions(Tokio, listener, config)
}

/// [`serve_sessions_tcp`] with `hooks` run on every accepted link: a link hook (a TLS
/// handshake; it gets the [`AcceptedLink`] and returns the stream to run the session over,
/// with the peer's identity if it established one) and, optionally, a resume binding. The
/// hook runs under the acceptor's first-byte and handshake deadlines, concurrently for every
/// pending link; a hook that fails, stalls or panics costs only its own link and is charged
/// to the link's source (see [`AcceptHooks`]). Each session reports its peer's address and
/// identity ([`SessionHandle::peer_addr`], [`SessionHandle::peer_identity`]). Must be
/// called within a tokio runtime.
///
/// ```
/// # #[tokio::main]
/// # async fn main() -> std::io::Result<()> {
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// use sotto_tokio::{serve_sessions_tcp_with, AcceptHooks, AcceptedLink, Config, PeerAddr, PeerIdentity};
/// // A TLS handshake goes here (`tls.accept(link).await?`, with the client certificate's
/// // fingerprint as the identity); this hook passes the stream on and names the peer by
/// // its IP address.
/// let hooks = AcceptHooks::new(|link: AcceptedLink<tokio::net::TcpStream>| async move {
///     let who = match link.peer_addr() {
///         Some(PeerAddr::Tcp(a)) => Some(PeerIdentity::new(a.ip().to_string())),
///         _ => None,
///     };
///     Ok((link, who))
/// })
/// // Only the client that made a session may resume it.
/// .bind_resumes(|first, resuming| first.identity == resuming.identity);
/// let acceptor = serve_sessions_tcp_with(listener, Config::default(), hooks).map_err(std::io::Error::other)?;
/// # drop(acceptor);
/// # Ok(()) }
/// ```
pub fn serve_sessions_tcp_with<T>(
    listener: tokio::net::TcpListener,
    config: Config,
    hooks: AcceptHooks<tokio::net::TcpStream, T>,
) -> Result<SessionAcceptor, ConfigError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    sotto_driver::listen_sessions_with(Tokio, listener, config, hooks)
}

/// The stream type of the TCP acceptors: an [`AcceptorGroup`] serving TCP is an
/// `AcceptorGroup<TcpLink>`.
pub type TcpLink = WithPeer<TokioIo<tokio::net::TcpStream>>;

/// Serve a TCP listener as worker `worker` of `group` (see [`AcceptorGroup`]): several
/// listeners bound to one port with `SO_REUSEPORT` (or to several ports), one worker each,
/// and resumes reach the worker that holds their session. Must be called within a tokio
/// runtime.
pub fn serve_group_tcp(
    group: &AcceptorGroup<TcpLink>,
    worker: u16,
    listener: tokio::net::TcpListener,
    config: Config,
) -> Result<SessionAcceptor, GroupError> {
    group.serve_listener(Tokio, worker, listener, config)
}

/// Serve a Unix socket listener with the session API. Must be called within a tokio runtime.
#[cfg(unix)]
pub fn serve_sessions_unix(listener: tokio::net::UnixListener, config: Config) -> Result<SessionAcceptor, ConfigError> {
    sotto_driver::listen_sessions(Tokio, listener, config)
}

/// Serve any source of freshly accepted streams with the session API (tokio TCP streams are
/// keyed by peer IP for the failure budget, any other stream counts as one source). Must be
/// called within a tokio runtime.
pub fn serve_sessions<St, S>(incoming: St, config: Config) -> Result<SessionAcceptor, ConfigError>
where
    St: Stream<Item = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    sotto_driver::listen_sessions(Tokio, Streams(incoming), config)
}
