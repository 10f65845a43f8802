//! The bare stable conduit, for vox 0.3.0 peers: one ordered, exactly-once stream of items
//! in each direction that survives link loss, without the session layer's virtual
//! connections. Use the crate root's session API unless the peer speaks vox's stable conduit.
//!
//! - [`connect`]: an initiator's [`StableConduit`], redialed with backoff whenever a link dies.
//! - [`serve_tcp`], [`serve_unix`], [`serve`]: an [`Acceptor`] that runs handshakes under a
//!   deadline, routes resumes to their sessions and yields new ones.
//!
//! These run on smol's global executor; the `raw_*` methods of [`Smol`] run on another.
//!
//! ```
//! use bytes::Bytes;
//! use sotto_smol::raw::{connect, serve_tcp};
//! use sotto_smol::Config;
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     smol::block_on(async {
//!         let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
//!         let addr = listener.local_addr()?;
//!         let acceptor = serve_tcp(listener, Config::default())?;
//!         let connector = move || async move {
//!             let s = smol::net::TcpStream::connect(addr).await?;
//!             s.set_nodelay(true)?;
//!             Ok(s)
//!         };
//!         let client = connect(connector, Config::default()).await?;
//!         let server = acceptor.accept().await?;
//!         client.send(Bytes::from_static(b"hello")).await?;
//!         assert_eq!(&server.recv().await?[..], b"hello");
//!         client.close(0, "bye").await;
//!         Ok(())
//!     })
//! }
//! ```

use std::future::Future;
use std::io;

use futures::io::{AsyncRead, AsyncWrite};
use futures::stream::Stream;
use sotto_driver::Streams;
pub use sotto_driver::{Acceptor, AcceptorStats, ConduitEvent, SendError, StableConduit, Stats, TrySendError};

use crate::{Config, ConfigError, ConnectError, Smol};

/// Start an initiator stable conduit and wait until its first link is attached.
///
/// `connector` is called for every link (the first and each redial) and returns a fresh
/// stream; set `TCP_NODELAY` on TCP streams (writes are already batched). Transient errors
/// and failed handshakes are retried with backoff until `config.dial.connect_timeout`; a
/// REJECTED answer is not. Afterwards a lost link is redialed (at once, then with exponential
/// backoff, full jitter) until `config.protocol.recovery_timeout`, after which the session
/// ends as lost. Runs on smol's global executor; [`Smol::raw_connect`] on another.
pub async fn connect<F, Fut, S>(connector: F, config: Config) -> Result<StableConduit, ConnectError>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Smol::global().raw_connect(connector, config).await
}

/// Serve a TCP listener (accepted streams get `TCP_NODELAY`), on smol's global executor.
pub fn serve_tcp(listener: smol::net::TcpListener, config: Config) -> Result<Acceptor, ConfigError> {
    Smol::global().raw_serve_tcp(listener, config)
}

/// [`serve_tcp`] with `hooks` run on every accepted link: a link hook (a TLS handshake) and,
/// optionally, a resume binding, exactly as for the session API's
/// [`serve_sessions_tcp_with`](crate::serve_sessions_tcp_with) (see
/// [`AcceptHooks`](crate::AcceptHooks) for the deadlines and accounting). On smol's
/// global executor; [`Smol::raw_serve_tcp_with`] on another.
pub fn serve_tcp_with<T>(
    listener: smol::net::TcpListener,
    config: Config,
    hooks: crate::AcceptHooks<smol::net::TcpStream, T>,
) -> Result<Acceptor, ConfigError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Smol::global().raw_serve_tcp_with(listener, config, hooks)
}

/// Serve a Unix socket listener, on smol's global executor.
#[cfg(unix)]
pub fn serve_unix(listener: smol::net::unix::UnixListener, config: Config) -> Result<Acceptor, ConfigError> {
    Smol::global().raw_serve_unix(listener, config)
}

/// Serve any source of freshly accepted streams, on smol's global executor; the acceptor
/// stops taking new links when `incoming` ends.
pub fn serve<St, S>(incoming: St, config: Config) -> Result<Acceptor, ConfigError>
where
    St: Stream<Item = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Smol::global().raw_serve(incoming, config)
}

/// The raw stable-conduit entry points with sotto's tasks on this runtime's executor.
impl Smol {
    /// [`connect`] on this executor.
    pub async fn raw_connect<F, Fut, S>(&self, connector: F, config: Config) -> Result<StableConduit, ConnectError>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = io::Result<S>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        sotto_driver::dial(self.clone(), connector, config).await
    }

    /// [`serve_tcp`] on this executor.
    pub fn raw_serve_tcp(&self, listener: smol::net::TcpListener, config: Config) -> Result<Acceptor, ConfigError> {
        sotto_driver::listen(self.clone(), listener, config)
    }

    /// [`serve_tcp_with`] on this executor.
    pub fn raw_serve_tcp_with<T>(
        &self,
        listener: smol::net::TcpListener,
        config: Config,
        hooks: crate::AcceptHooks<smol::net::TcpStream, T>,
    ) -> Result<Acceptor, ConfigError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        sotto_driver::listen_with(self.clone(), listener, config, hooks)
    }

    /// [`serve_unix`] on this executor.
    #[cfg(unix)]
    pub fn raw_serve_unix(
        &self,
        listener: smol::net::unix::UnixListener,
        config: Config,
    ) -> Result<Acceptor, ConfigError> {
        sotto_driver::listen(self.clone(), listener, config)
    }

    /// [`serve`] on this executor.
    pub fn raw_serve<St, S>(&self, incoming: St, config: Config) -> Result<Acceptor, ConfigError>
    where
        St: Stream<Item = io::Result<S>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        sotto_driver::listen(self.clone(), Streams(incoming), config)
    }
}
