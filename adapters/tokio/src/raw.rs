//! The bare stable conduit, for vox 0.3.0 peers: one ordered, exactly-once stream of items
//! in each direction that survives link loss, without the session layer's virtual
//! connections. Use the crate root's session API unless the peer speaks vox's stable conduit.
//!
//! - [`connect`]: an initiator's [`StableConduit`], redialed with backoff whenever a link dies.
//! - [`serve_tcp`], [`serve_unix`], [`serve`]: an [`Acceptor`] that runs handshakes under a
//!   deadline, routes resumes to their sessions and yields new ones.
//!
//! ```
//! use bytes::Bytes;
//! use sotto_tokio::raw::{connect, serve_tcp};
//! use sotto_tokio::Config;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//!     let addr = listener.local_addr()?;
//!     let acceptor = serve_tcp(listener, Config::default())?;
//!     let connector = move || async move {
//!         let s = tokio::net::TcpStream::connect(addr).await?;
//!         s.set_nodelay(true)?;
//!         Ok(s)
//!     };
//!     let client = connect(connector, Config::default()).await?;
//!     let server = acceptor.accept().await?;
//!     client.send(Bytes::from_static(b"hello")).await?;
//!     assert_eq!(&server.recv().await?[..], b"hello");
//!     client.close(0, "bye").await;
//!     Ok(())
//! }
//! ```

use std::future::Future;
use std::io;

use futures::stream::Stream;
use tokio::io::{AsyncRead, AsyncWrite};

pub use sotto_driver::{Acceptor, AcceptorStats, ConduitEvent, SendError, StableConduit, Stats, TrySendError};

use sotto_driver::Streams;

use crate::{Config, ConfigError, ConnectError, Tokio};

/// Start an initiator stable conduit and wait until its first link is attached.
///
/// `connector` is called for every link (the first and each redial) and returns a fresh
/// stream; set `TCP_NODELAY` on TCP streams (writes are already batched). Transient errors
/// and failed handshakes are retried with backoff until `config.dial.connect_timeout`; a
/// REJECTED answer is not. Afterwards a lost link is redialed (at once, then with exponential
/// backoff, full jitter) until `config.protocol.recovery_timeout`, after which the session
/// ends as lost. Must be called within a tokio runtime.
pub async fn connect<F, Fut, S>(connector: F, config: Config) -> Result<StableConduit, ConnectError>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    sotto_driver::dial(Tokio, connector, config).await
}

/// Serve a TCP listener (accepted streams get `TCP_NODELAY`; the per-source failure budget
/// is keyed by peer IP). Must be called within a tokio runtime (it spawns the acceptor task).
pub fn serve_tcp(listener: tokio::net::TcpListener, config: Config) -> Result<Acceptor, ConfigError> {
    sotto_driver::listen(Tokio, listener, config)
}

/// [`serve_tcp`] with `hooks` run on every accepted link: a link hook (a TLS handshake) and,
/// optionally, a resume binding, exactly as for the session API's
/// [`serve_sessions_tcp_with`](crate::serve_sessions_tcp_with) (see
/// [`AcceptHooks`](crate::AcceptHooks) for the deadlines and accounting). Must be called
/// within a tokio runtime.
pub fn serve_tcp_with<T>(
    listener: tokio::net::TcpListener,
    config: Config,
    hooks: crate::AcceptHooks<tokio::net::TcpStream, T>,
) -> Result<Acceptor, ConfigError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    sotto_driver::listen_with(Tokio, listener, config, hooks)
}

/// Serve a Unix socket listener (all its links count as one source for the failure
/// budget). Must be called within a tokio runtime.
#[cfg(unix)]
pub fn serve_unix(listener: tokio::net::UnixListener, config: Config) -> Result<Acceptor, ConfigError> {
    sotto_driver::listen(Tokio, listener, config)
}

/// Serve any source of freshly accepted streams; the acceptor stops taking new links when
/// `incoming` ends. Tokio TCP streams are keyed by peer IP for the failure budget, any other
/// stream counts as one source. Must be called within a tokio runtime.
pub fn serve<St, S>(incoming: St, config: Config) -> Result<Acceptor, ConfigError>
where
    St: Stream<Item = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    sotto_driver::listen(Tokio, Streams(incoming), config)
}
