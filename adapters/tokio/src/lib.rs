//! Drives sotto stable sessions on tokio.
//!
//! - [`connect`]: an initiator session over streams from your connector (TCP, Unix socket,
//!   anything `AsyncRead + AsyncWrite`), redialed with backoff whenever a link dies.
//! - [`serve_tcp`], [`serve_unix`], [`serve`]: an [`Acceptor`] that runs handshakes under a
//!   deadline, routes resumes to their sessions and yields new ones.
//! - [`StableConduit`]: the raw stable-conduit handle (items in, items out, events, stats,
//!   graceful close), wire-compatible with vox 0.3.0 peers.
//! - The session API: [`connect_session`] and [`serve_sessions_tcp`], [`serve_sessions_unix`],
//!   [`serve_sessions`] (through the core endpoint) give [`SessionHandle`]s, which open and
//!   accept virtual [`Connection`]s (`Stream<Item = Bytes>` + `Sink<Bytes>`, credit flow
//!   control per connection).
//!
//! Each session runs one driver task; dropping its handle closes the session (GOODBYE after
//! what was sent) and the task ends by itself within `drain_timeout`. The driver and the
//! handles are shared with `sotto-smol` (crate `sotto-driver`), so both adapters behave the
//! same and interoperate.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use bytes::Bytes;
//! use sotto_tokio::{connect, serve_tcp, Config};
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let acceptor = serve_tcp(listener, Config::default())?;
//! let client = connect(
//!     move || async move {
//!         let s = tokio::net::TcpStream::connect(addr).await?;
//!         s.set_nodelay(true)?;
//!         Ok(s)
//!     },
//!     Config::default(),
//! )
//! .await?;
//! let server = acceptor.accept().await?;
//! client.send(Bytes::from_static(b"hello")).await?;
//! assert_eq!(&server.recv().await?[..], b"hello");
//! client.close(0, "bye").await;
//! # Ok(())
//! # }
//! ```
//!
//! The session API, with virtual connections:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use bytes::Bytes;
//! use futures::{SinkExt, StreamExt};
//! use sotto_tokio::{connect_session, serve_sessions_tcp, Config};
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let acceptor = serve_sessions_tcp(listener, Config::default())?;
//! let client = connect_session(move || tokio::net::TcpStream::connect(addr), Config::default()).await?;
//! let server = acceptor.accept().await?;
//! // `open` waits for the peer's answer, so the server answers concurrently.
//! let (opened, answered) = tokio::join!(client.open(b"chat"), async {
//!     let incoming = server.accept().await?;
//!     Ok::<_, Box<dyn std::error::Error>>(incoming.accept(b"welcome").await?)
//! });
//! let mut conn = opened?;
//! let mut peer = answered?;
//! conn.send(Bytes::from_static(b"hello")).await?; // waits for credit, never buffers unboundedly
//! assert_eq!(&peer.next().await.expect("a message")[..], b"hello");
//! peer.feed(Bytes::from_static(b"hi")).await?; // Sink
//! peer.flush().await?;
//! assert_eq!(&conn.recv().await?[..], b"hi");
//! client.close(0, "bye").await;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

/// The repository README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

mod compat;
mod runtime;

use std::future::Future;
use std::io;

use futures::stream::Stream;
use tokio::io::{AsyncRead, AsyncWrite};

pub use compat::TokioIo;
pub use runtime::Tokio;
pub use sotto_driver::{
    live_tasks, source_of, Acceptor, AcceptorStats, AnswerError, ConduitEvent, Config, ConnError, ConnReceiver,
    ConnSender, ConnectError, Connection, Ended, IncomingOpen, LinkDownCause, OpenError, ResumeTiming, SendError,
    SessionAcceptor, SessionAcceptorStats, SessionEvent, SessionHandle, SessionStats, StableConduit, Stats,
    TrySendError, WRITE_CHUNK,
};
pub use sotto_proto::conduit::ConfigError;
pub use sotto_proto::{ConduitConfig, SessionEnd};

/// Start an initiator session and wait until its first link is attached.
///
/// `connector` is called for every link (the first and each redial) and returns a fresh
/// stream; set `TCP_NODELAY` on TCP streams (writes are already batched). Transient errors
/// and failed handshakes are retried with backoff until `config.dial.connect_timeout`; a REJECTED
/// answer is not. Afterwards a lost link is redialed (at once, then with exponential backoff
/// 50 ms to 5 s, full jitter) until `config.protocol.recovery_timeout`, after which the session
/// ends as lost. Must be called within a tokio runtime.
pub async fn connect<F, Fut, S>(connector: F, config: Config) -> Result<StableConduit, ConnectError>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    sotto_driver::connect(Tokio, wrap(connector), config).await
}

/// Serve a TCP listener (accepted streams get `TCP_NODELAY`). Must be called within a tokio
/// runtime (it spawns the acceptor task).
pub fn serve_tcp(listener: tokio::net::TcpListener, config: Config) -> Result<Acceptor, ConfigError> {
    let incoming = futures::stream::poll_fn(move |cx| {
        listener.poll_accept(cx).map(|r| {
            Some(r.map(|(s, _)| {
                let _ = s.set_nodelay(true);
                s
            }))
        })
    });
    serve(incoming, config)
}

/// Serve a Unix socket listener. Must be called within a tokio runtime.
#[cfg(unix)]
pub fn serve_unix(listener: tokio::net::UnixListener, config: Config) -> Result<Acceptor, ConfigError> {
    let incoming = futures::stream::poll_fn(move |cx| listener.poll_accept(cx).map(|r| Some(r.map(|(s, _)| s))));
    serve(incoming, config)
}

/// Serve any source of freshly accepted streams; the acceptor stops taking new links when
/// `incoming` ends. Must be called within a tokio runtime.
pub fn serve<St, S>(incoming: St, config: Config) -> Result<Acceptor, ConfigError>
where
    St: Stream<Item = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use futures::stream::StreamExt;
    sotto_driver::serve(Tokio, incoming.map(|r| r.map(TokioIo::new)), config)
}

/// Start an initiator session (session API) and wait until it is ready for connections.
/// `connector` is as for [`connect`]; the session redials and resumes the same way. Must be
/// called within a tokio runtime.
pub async fn connect_session<F, Fut, S>(connector: F, config: Config) -> Result<SessionHandle, ConnectError>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    sotto_driver::connect_session(Tokio, wrap(connector), config).await
}

/// Serve a TCP listener with the session API, through the core endpoint (accepted streams
/// get `TCP_NODELAY`; the per-source failure budget is keyed by peer IP). Must be called
/// within a tokio runtime.
pub fn serve_sessions_tcp(listener: tokio::net::TcpListener, config: Config) -> Result<SessionAcceptor, ConfigError> {
    let incoming = futures::stream::poll_fn(move |cx| {
        listener.poll_accept(cx).map(|r| {
            Some(r.map(|(s, addr)| {
                let _ = s.set_nodelay(true);
                (TokioIo::new(s), source_of(&addr))
            }))
        })
    });
    sotto_driver::serve_sessions(Tokio, incoming, config)
}

/// Serve a Unix socket listener with the session API. Must be called within a tokio runtime.
#[cfg(unix)]
pub fn serve_sessions_unix(listener: tokio::net::UnixListener, config: Config) -> Result<SessionAcceptor, ConfigError> {
    let incoming = futures::stream::poll_fn(move |cx| {
        listener.poll_accept(cx).map(|r| Some(r.map(|(s, _)| (TokioIo::new(s), 0))))
    });
    sotto_driver::serve_sessions(Tokio, incoming, config)
}

/// Serve any source of freshly accepted streams with the session API (all counted as one
/// source for the failure budget). Must be called within a tokio runtime.
pub fn serve_sessions<St, S>(incoming: St, config: Config) -> Result<SessionAcceptor, ConfigError>
where
    St: Stream<Item = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use futures::stream::StreamExt;
    sotto_driver::serve_sessions(Tokio, incoming.map(|r| r.map(|s| (TokioIo::new(s), 0))), config)
}

/// The application's connector, its streams wrapped for the driver.
fn wrap<F, Fut, S>(
    mut connector: F,
) -> impl FnMut() -> futures::future::MapOk<Fut, fn(S) -> TokioIo<S>> + Send + 'static
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use futures::TryFutureExt;
    move || connector().map_ok(TokioIo::new as fn(S) -> TokioIo<S>)
}
