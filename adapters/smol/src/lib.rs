//! Sessions that survive their links, on smol / async-io.
//!
//! A session joins two peers over a succession of links (TCP connections, Unix sockets, any
//! `futures::io::AsyncRead + AsyncWrite`): when a link dies the initiator redials, the session
//! resumes and what was in flight is replayed, so every message arrives exactly once and in
//! order. Inside a session, virtual [`Connection`]s carry messages (`Stream<Item = Bytes>` +
//! `Sink<Bytes>`, or a byte stream through `AsyncRead + AsyncWrite`), each with its own
//! credit flow control. `close` on the byte stream (or [`Connection::finish`]) is a
//! half-close: the peer reads the end of its stream, and reading ours goes on.
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
//! use futures::StreamExt;
//! use sotto_smol::{connect_session, serve_sessions_tcp, Config};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     smol::block_on(async {
//!         let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
//!         let addr = listener.local_addr()?;
//!         let acceptor = serve_sessions_tcp(listener, Config::default())?;
//!         let client = connect_session(move || smol::net::TcpStream::connect(addr), Config::default()).await?;
//!         let server = acceptor.accept().await?;
//!
//!         // `open` waits for the peer's answer, so the server answers concurrently.
//!         let (opened, answered) = futures::join!(client.open(b"chat"), async {
//!             let incoming = server.accept().await?;
//!             Ok::<_, Box<dyn std::error::Error>>(incoming.accept(b"welcome").await?)
//!         });
//!         let mut conn = opened?;
//!         let mut peer = answered?;
//!         conn.send(b"hello").await?;
//!         assert_eq!(&peer.next().await.expect("a message")[..], b"hello");
//!         client.close(0, "bye").await;
//!         Ok(())
//!     })
//! }
//! ```
//!
//! Tasks run on smol's global executor (`smol::spawn`), or on an executor of yours through
//! [`Smol::on`] (the same entry points as methods); each session runs one driver task;
//! dropping its handle closes the session (GOODBYE after what was sent) and the task ends by
//! itself within `protocol.drain_timeout`. The driver and the handles are shared with
//! `sotto-tokio` (crate `sotto-driver`), so both adapters behave the same and interoperate.
//!
//! Other modules: [`raw`], the bare stable conduit (one ordered item stream, no virtual
//! connections) for vox 0.3.0 peers; [`proto`], the sans-IO core (`sotto-proto`) whose types
//! appear in some reports (the common ones are re-exported here).
#![forbid(unsafe_code)]

mod glue;
pub mod raw;
mod runtime;

use std::future::Future;
use std::io;

use futures::io::{AsyncRead, AsyncWrite};
use futures::stream::Stream;

pub use runtime::Smol;
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
/// reported as a [`SessionEvent::DialFailed`]. Runs on smol's
/// global executor; [`Smol::connect_session`] on another.
pub async fn connect_session<F, Fut, S>(connector: F, config: Config) -> Result<SessionHandle, ConnectError>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Smol::global().connect_session(connector, config).await
}

/// [`connect_session`] with `metadata` in the session Hello, for the acceptor to read with
/// [`SessionHandle::peer_metadata`] (at most `config.protocol.max_metadata` bytes). Runs on
/// smol's global executor; [`Smol::connect_session_with`] on another.
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
    Smol::global().connect_session_with(connector, config, metadata).await
}

/// An initiator session that starts a new session whenever its session is lost (opt-in):
/// [`connect_session_with`]'s first session, then, after each loss,
/// [`ReconnectingSession::renewed`] connects anew with the same connector, configuration
/// and `metadata`, and hands over what the lost session left ([`Unacknowledged`]: the
/// connections to open again, the messages the peer never acknowledged). Delivery across a
/// loss is at least once. Runs on smol's global executor; [`Smol::connect_reconnecting`] on
/// another.
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
    Smol::global().connect_reconnecting(connector, config, metadata).await
}

/// Serve a TCP listener with the session API, through the core endpoint, on smol's global
/// executor (accepted streams get `TCP_NODELAY`; the per-source failure budget is keyed by
/// peer IP).
pub fn serve_sessions_tcp(listener: smol::net::TcpListener, config: Config) -> Result<SessionAcceptor, ConfigError> {
    Smol::global().serve_sessions_tcp(listener, config)
}

/// [`serve_sessions_tcp`] with `hooks` run on every accepted link: a link hook (a TLS
/// handshake; it gets the [`AcceptedLink`] and returns the stream to run the session over,
/// with the peer's identity if it established one) and, optionally, a resume binding. The
/// hook runs under the acceptor's first-byte and handshake deadlines, concurrently for every
/// pending link; a hook that fails, stalls or panics costs only its own link and is charged
/// to the link's source (see [`AcceptHooks`]). Each session reports its peer's address and
/// identity ([`SessionHandle::peer_addr`], [`SessionHandle::peer_identity`]). Runs on smol's
/// global executor; [`Smol::serve_sessions_tcp_with`] on another.
///
/// ```
/// # fn main() -> std::io::Result<()> { smol::block_on(async {
/// # let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
/// use sotto_smol::{serve_sessions_tcp_with, AcceptHooks, AcceptedLink, Config, PeerAddr, PeerIdentity};
/// // A TLS handshake goes here (`tls.accept(link).await?`, with the client certificate's
/// // fingerprint as the identity); this hook passes the stream on and names the peer by
/// // its IP address.
/// let hooks = AcceptHooks::new(|link: AcceptedLink<smol::net::TcpStream>| async move {
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
/// # Ok(()) }) }
/// ```
pub fn serve_sessions_tcp_with<T>(
    listener: smol::net::TcpListener,
    config: Config,
    hooks: AcceptHooks<smol::net::TcpStream, T>,
) -> Result<SessionAcceptor, ConfigError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Smol::global().serve_sessions_tcp_with(listener, config, hooks)
}

/// The stream type of the TCP acceptors: an [`AcceptorGroup`] serving TCP is an
/// `AcceptorGroup<TcpLink>`.
pub type TcpLink = WithPeer<sotto_driver::FuturesIo<smol::net::TcpStream>>;

/// Serve a TCP listener as worker `worker` of `group` (see [`AcceptorGroup`]), on smol's
/// global executor: several listeners bound to one port with `SO_REUSEPORT`, one worker
/// each, and resumes reach the worker that holds their session.
pub fn serve_group_tcp(
    group: &AcceptorGroup<TcpLink>,
    worker: u16,
    listener: smol::net::TcpListener,
    config: Config,
) -> Result<SessionAcceptor, GroupError> {
    Smol::global().serve_group_tcp(group, worker, listener, config)
}

/// Serve a Unix socket listener with the session API, on smol's global executor.
#[cfg(unix)]
pub fn serve_sessions_unix(
    listener: smol::net::unix::UnixListener,
    config: Config,
) -> Result<SessionAcceptor, ConfigError> {
    Smol::global().serve_sessions_unix(listener, config)
}

/// Serve any source of freshly accepted streams with the session API (smol TCP streams are
/// keyed by peer IP for the failure budget, any other stream counts as one source), on
/// smol's global executor.
pub fn serve_sessions<St, S>(incoming: St, config: Config) -> Result<SessionAcceptor, ConfigError>
where
    St: Stream<Item = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Smol::global().serve_sessions(incoming, config)
}

/// The same entry points as the crate's free functions, with sotto's tasks on this
/// runtime's executor (see [`Smol::on`]).
impl Smol {
    /// [`connect_session`] on this executor.
    pub async fn connect_session<F, Fut, S>(&self, connector: F, config: Config) -> Result<SessionHandle, ConnectError>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = io::Result<S>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        sotto_driver::dial_session(self.clone(), connector, config, &[]).await
    }

    /// [`connect_session_with`] on this executor.
    pub async fn connect_session_with<F, Fut, S>(
        &self,
        connector: F,
        config: Config,
        metadata: &[u8],
    ) -> Result<SessionHandle, ConnectError>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = io::Result<S>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        sotto_driver::dial_session(self.clone(), connector, config, metadata).await
    }

    /// [`connect_reconnecting`] on this executor.
    pub async fn connect_reconnecting<F, Fut, S>(
        &self,
        connector: F,
        config: Config,
        metadata: &[u8],
    ) -> Result<ReconnectingSession, ConnectError>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = io::Result<S>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        sotto_driver::dial_reconnecting(self.clone(), connector, config, metadata).await
    }

    /// [`serve_sessions_tcp`] on this executor.
    pub fn serve_sessions_tcp(
        &self,
        listener: smol::net::TcpListener,
        config: Config,
    ) -> Result<SessionAcceptor, ConfigError> {
        sotto_driver::listen_sessions(self.clone(), listener, config)
    }

    /// [`serve_sessions_tcp_with`] on this executor.
    pub fn serve_sessions_tcp_with<T>(
        &self,
        listener: smol::net::TcpListener,
        config: Config,
        hooks: AcceptHooks<smol::net::TcpStream, T>,
    ) -> Result<SessionAcceptor, ConfigError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        sotto_driver::listen_sessions_with(self.clone(), listener, config, hooks)
    }

    /// [`serve_group_tcp`] on this executor.
    pub fn serve_group_tcp(
        &self,
        group: &AcceptorGroup<TcpLink>,
        worker: u16,
        listener: smol::net::TcpListener,
        config: Config,
    ) -> Result<SessionAcceptor, GroupError> {
        group.serve_listener(self.clone(), worker, listener, config)
    }

    /// [`serve_sessions_unix`] on this executor.
    #[cfg(unix)]
    pub fn serve_sessions_unix(
        &self,
        listener: smol::net::unix::UnixListener,
        config: Config,
    ) -> Result<SessionAcceptor, ConfigError> {
        sotto_driver::listen_sessions(self.clone(), listener, config)
    }

    /// [`serve_sessions`] on this executor.
    pub fn serve_sessions<St, S>(&self, incoming: St, config: Config) -> Result<SessionAcceptor, ConfigError>
    where
        St: Stream<Item = io::Result<S>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        sotto_driver::listen_sessions(self.clone(), Streams(incoming), config)
    }
}
