//! Drives sotto stable sessions on smol / async-io.
//!
//! - [`connect`]: an initiator session over streams from your connector (TCP, Unix socket,
//!   anything `futures::io::AsyncRead + AsyncWrite`), redialed with backoff whenever a link
//!   dies.
//! - [`serve_tcp`], [`serve_unix`], [`serve`]: an [`Acceptor`] that runs handshakes under a
//!   deadline, routes resumes to their sessions and yields new ones.
//! - [`StableConduit`]: the raw stable-conduit handle (items in, items out, events, stats,
//!   graceful close), wire-compatible with vox 0.3.0 peers.
//! - The session API: [`connect_session`] and [`serve_sessions_tcp`], [`serve_sessions_unix`],
//!   [`serve_sessions`] (through the core endpoint) give [`SessionHandle`]s, which open and
//!   accept virtual [`Connection`]s (`Stream<Item = Bytes>` + `Sink<Bytes>`, credit flow
//!   control per connection).
//!
//! Tasks run on smol's global executor (`smol::spawn`), or on an executor of yours through
//! [`Smol::on`] (the same entry points as methods); each session runs one driver task;
//! dropping its handle closes the session (GOODBYE after what was sent) and the task ends by
//! itself within `drain_timeout`. The driver and the handles are shared with `sotto-tokio`
//! (crate `sotto-driver`), so both adapters behave the same and interoperate.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> { smol::block_on(async {
//! use bytes::Bytes;
//! use sotto_smol::{connect, serve_tcp, Config};
//!
//! let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let acceptor = serve_tcp(listener, Config::default())?;
//! let client = connect(
//!     move || async move {
//!         let s = smol::net::TcpStream::connect(addr).await?;
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
//! # Ok(()) }) }
//! ```
#![forbid(unsafe_code)]

mod runtime;

use std::future::Future;
use std::io;

use futures::io::{AsyncRead, AsyncWrite};
use futures::stream::Stream;

pub use runtime::Smol;
use sotto_driver::FuturesIo;
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
/// ends as lost. Runs on smol's global executor; [`Smol::connect`] on another.
pub async fn connect<F, Fut, S>(connector: F, config: Config) -> Result<StableConduit, ConnectError>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Smol::global().connect(connector, config).await
}

/// Serve a TCP listener (accepted streams get `TCP_NODELAY`), on smol's global executor.
pub fn serve_tcp(listener: smol::net::TcpListener, config: Config) -> Result<Acceptor, ConfigError> {
    Smol::global().serve_tcp(listener, config)
}

/// Serve a Unix socket listener, on smol's global executor.
#[cfg(unix)]
pub fn serve_unix(listener: smol::net::unix::UnixListener, config: Config) -> Result<Acceptor, ConfigError> {
    Smol::global().serve_unix(listener, config)
}

/// Serve any source of freshly accepted streams, on smol's global executor; the acceptor
/// stops taking new links when `incoming` ends.
pub fn serve<St, S>(incoming: St, config: Config) -> Result<Acceptor, ConfigError>
where
    St: Stream<Item = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Smol::global().serve(incoming, config)
}

/// Start an initiator session (session API) and wait until it is ready for connections.
/// `connector` is as for [`connect`]; the session redials and resumes the same way. Runs on
/// smol's global executor; [`Smol::connect_session`] on another.
pub async fn connect_session<F, Fut, S>(connector: F, config: Config) -> Result<SessionHandle, ConnectError>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Smol::global().connect_session(connector, config).await
}

/// Serve a TCP listener with the session API, through the core endpoint, on smol's global
/// executor (accepted streams get `TCP_NODELAY`; the per-source failure budget is keyed by
/// peer IP).
pub fn serve_sessions_tcp(listener: smol::net::TcpListener, config: Config) -> Result<SessionAcceptor, ConfigError> {
    Smol::global().serve_sessions_tcp(listener, config)
}

/// Serve a Unix socket listener with the session API, on smol's global executor.
#[cfg(unix)]
pub fn serve_sessions_unix(
    listener: smol::net::unix::UnixListener,
    config: Config,
) -> Result<SessionAcceptor, ConfigError> {
    Smol::global().serve_sessions_unix(listener, config)
}

/// Serve any source of freshly accepted streams with the session API (all counted as one
/// source for the failure budget), on smol's global executor.
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
    /// [`connect`] on this executor.
    pub async fn connect<F, Fut, S>(&self, connector: F, config: Config) -> Result<StableConduit, ConnectError>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = io::Result<S>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        sotto_driver::connect(self.clone(), wrap(connector), config).await
    }

    /// [`serve_tcp`] on this executor.
    pub fn serve_tcp(&self, listener: smol::net::TcpListener, config: Config) -> Result<Acceptor, ConfigError> {
        let incoming = futures::stream::unfold(listener, |l| async move {
            let r = accept_nodelay(&l).await.map(|(s, _)| s);
            Some((r, l))
        });
        self.serve(incoming, config)
    }

    /// [`serve_unix`] on this executor.
    #[cfg(unix)]
    pub fn serve_unix(&self, listener: smol::net::unix::UnixListener, config: Config) -> Result<Acceptor, ConfigError> {
        let incoming =
            futures::stream::unfold(listener, |l| async move { Some((l.accept().await.map(|(s, _)| s), l)) });
        self.serve(incoming, config)
    }

    /// [`serve`] on this executor.
    pub fn serve<St, S>(&self, incoming: St, config: Config) -> Result<Acceptor, ConfigError>
    where
        St: Stream<Item = io::Result<S>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        use futures::stream::StreamExt;
        sotto_driver::serve(self.clone(), incoming.map(|r| r.map(FuturesIo)), config)
    }

    /// [`connect_session`] on this executor.
    pub async fn connect_session<F, Fut, S>(&self, connector: F, config: Config) -> Result<SessionHandle, ConnectError>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = io::Result<S>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        sotto_driver::connect_session(self.clone(), wrap(connector), config).await
    }

    /// [`serve_sessions_tcp`] on this executor.
    pub fn serve_sessions_tcp(
        &self,
        listener: smol::net::TcpListener,
        config: Config,
    ) -> Result<SessionAcceptor, ConfigError> {
        let incoming = futures::stream::unfold(listener, |l| async move {
            let r = accept_nodelay(&l).await.map(|(s, addr)| (FuturesIo(s), source_of(&addr)));
            Some((r, l))
        });
        sotto_driver::serve_sessions(self.clone(), incoming, config)
    }

    /// [`serve_sessions_unix`] on this executor.
    #[cfg(unix)]
    pub fn serve_sessions_unix(
        &self,
        listener: smol::net::unix::UnixListener,
        config: Config,
    ) -> Result<SessionAcceptor, ConfigError> {
        let incoming = futures::stream::unfold(listener, |l| async move {
            Some((l.accept().await.map(|(s, _)| (FuturesIo(s), 0)), l))
        });
        sotto_driver::serve_sessions(self.clone(), incoming, config)
    }

    /// [`serve_sessions`] on this executor.
    pub fn serve_sessions<St, S>(&self, incoming: St, config: Config) -> Result<SessionAcceptor, ConfigError>
    where
        St: Stream<Item = io::Result<S>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        use futures::stream::StreamExt;
        sotto_driver::serve_sessions(self.clone(), incoming.map(|r| r.map(|s| (FuturesIo(s), 0))), config)
    }
}

/// The next TCP stream from `listener`, with `TCP_NODELAY` set (writes are already batched;
/// a failure to set it leaves the stream usable).
async fn accept_nodelay(listener: &smol::net::TcpListener) -> io::Result<(smol::net::TcpStream, std::net::SocketAddr)> {
    let (s, addr) = listener.accept().await?;
    let _ = s.set_nodelay(true);
    Ok((s, addr))
}

/// The application's connector, its streams wrapped for the driver.
fn wrap<F, Fut, S>(
    mut connector: F,
) -> impl FnMut() -> futures::future::MapOk<Fut, fn(S) -> FuturesIo<S>> + Send + 'static
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use futures::TryFutureExt;
    move || connector().map_ok(FuturesIo as fn(S) -> FuturesIo<S>)
}
