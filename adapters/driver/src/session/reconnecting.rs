//! An opt-in initiator session that starts a new session when its session is lost, and
//! hands the application what the lost one left: the connections to open again and the
//! messages the peer never acknowledged. See [`ReconnectingSession`].

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use sotto_proto::session::ConnId;
use sotto_proto::SessionEnd;

use super::conn::Connection;
use super::handle::{connect_session_with, OpenError, SessionHandle};
use super::loss::{LostConnection, Unacknowledged};
use crate::backoff::Backoff;
use crate::config::Config;
use crate::handle::ConnectError;
use crate::runtime::{Io, Runtime, Timer};

/// An initiator session that survives the loss of its session: when the session is lost
/// (the server restarted, so the resume was REJECTED; the recovery timeout passed; a
/// permanent dial error), [`renewed`](Self::renewed) starts a new session with the same
/// connector, configuration and hello metadata, and returns it with what the lost session
/// left ([`Unacknowledged`]: the connections the application held, and every message the
/// peer never acknowledged). [`Renewal::reopen`] opens our connections again on the new
/// session and pairs each with its messages, for the application to send again.
///
/// Opt-in: a plain [`connect_session`](super::connect_session) never starts a second
/// session on its own, since a new session is a new conversation for the peer (its
/// connections and state are gone); only the application knows how to pick it up.
/// Delivery across the loss is at least once (see [`Unacknowledged`]).
///
/// The adapters' `connect_reconnecting` starts one (with an example).
pub struct ReconnectingSession {
    /// Starts a new session (same connector, configuration and metadata), retrying while
    /// starting fails in a way a later try may fix.
    start: Starter,
    session: SessionHandle,
    renewals: u64,
}

/// A boxed, sendable future.
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
/// See [`ReconnectingSession::start`].
type Starter = Box<dyn FnMut() -> BoxFuture<Result<SessionHandle, ConnectError>> + Send + Sync>;

impl std::fmt::Debug for ReconnectingSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconnectingSession").field("session", &self.session).field("renewals", &self.renewals).finish()
    }
}

/// A new session started after a loss, and what the lost one left; see
/// [`ReconnectingSession::renewed`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Renewal {
    /// The new session (also [`ReconnectingSession::session`] from now on).
    pub session: SessionHandle,
    /// What the lost session left: its end, its connections, its unacknowledged messages.
    pub lost: Unacknowledged,
}

/// One of our connections of a lost session, opened again on the new one; see
/// [`Renewal::reopen`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Reopened {
    /// The connection in the lost session (its id there, its Open's metadata).
    pub old: LostConnection,
    /// The same connection on the new session (opened with the same metadata).
    pub conn: Connection,
    /// Its messages the peer never acknowledged, in order: send them again on `conn`.
    pub messages: Vec<Bytes>,
}

/// Why [`ReconnectingSession::renewed`] returned without a new session.
#[derive(Debug)]
#[non_exhaustive]
pub enum RenewError {
    /// The session ended gracefully (our close, or the peer's GOODBYE): nothing to renew.
    Closed(SessionEnd),
    /// Starting a new session failed in a way retrying cannot fix (a configuration error,
    /// an error the connector marked permanent, a REJECTED answer to a fresh session).
    /// The lost session's leftovers are still there: [`ReconnectingSession::session`] is the
    /// lost session, and its [`unacknowledged`](SessionHandle::unacknowledged) has them.
    Connect(ConnectError),
}

impl std::fmt::Display for RenewError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed(end) => write!(f, "the session was closed ({end}): nothing to renew"),
            Self::Connect(e) => write!(f, "a new session could not be started: {e:?}"),
        }
    }
}

impl std::error::Error for RenewError {}

impl ReconnectingSession {
    /// Start the first session, as [`connect_session_with`] does (with `metadata` in every
    /// session's Hello), on runtime `rt`; the adapters wrap this with their runtime.
    pub async fn connect<R, F, Fut, S>(
        rt: R,
        connector: F,
        config: Config,
        metadata: &[u8],
    ) -> Result<Self, ConnectError>
    where
        R: Runtime,
        S: Io,
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = io::Result<S>> + Send + 'static,
    {
        let connector = Arc::new(Mutex::new(connector));
        let session = start(&rt, &connector, config, metadata).await?;
        let metadata = Bytes::copy_from_slice(metadata);
        let starter: Starter = Box::new(move || {
            let (rt, connector, metadata) = (rt.clone(), Arc::clone(&connector), metadata.clone());
            Box::pin(async move { start_retrying(&rt, &connector, config, &metadata).await })
        });
        Ok(Self { start: starter, session, renewals: 0 })
    }

    /// The current session: the first, or the newest renewal's.
    #[must_use]
    pub fn session(&self) -> &SessionHandle {
        &self.session
    }

    /// How many new sessions were started after losses.
    #[must_use]
    pub fn renewals(&self) -> u64 {
        self.renewals
    }

    /// Wait until the current session ends. If it was lost, start a new session (same
    /// connector, configuration and metadata), retrying with the configured dial backoff
    /// (`config.dial`) while starting fails in a way a later try may fix (the server still
    /// down: `TimedOut`; a full acceptor), and return it with what the lost session left. If it
    /// was closed gracefully, [`RenewError::Closed`].
    ///
    /// Cancel-safe: until it returns, the lost session stays the current one (its leftovers
    /// with it), and a later call starts over.
    pub async fn renewed(&mut self) -> Result<Renewal, RenewError> {
        let end = self.session.closed().await;
        if !end.is_lost() {
            return Err(RenewError::Closed(end));
        }
        let session = (self.start)().await.map_err(RenewError::Connect)?;
        let lost = self.session.unacknowledged().unwrap_or(Unacknowledged {
            end,
            connections: Vec::new(),
            messages: Vec::new(),
        });
        tracing::info!(
            lost = %end,
            connections = lost.connections.len(),
            unacknowledged = lost.messages.len(),
            "sotto: session lost; a new session started"
        );
        self.session = session.clone();
        self.renewals += 1;
        Ok(Renewal { session, lost })
    }
}

impl Renewal {
    /// Open our connections of the lost session again on the new one, each with its
    /// Open's metadata, in id order, and pair each with its unacknowledged messages. The
    /// peer's connections are not opened (only the peer can); their messages are in
    /// [`lost`](Self::lost) still. Stops at the first open that fails.
    pub async fn reopen(&self) -> Result<Vec<Reopened>, OpenError> {
        let mut out = Vec::new();
        for old in self.lost.connections.iter().filter(|c| c.ours) {
            let conn = self.session.open(&old.open_metadata).await?;
            out.push(Reopened { old: old.clone(), conn, messages: self.messages_of(old.id) });
        }
        Ok(out)
    }

    /// The unacknowledged messages of connection `id` of the lost session, in order.
    #[must_use]
    pub fn messages_of(&self, id: ConnId) -> Vec<Bytes> {
        self.lost.messages.iter().filter(|m| m.conn == id).map(|m| m.payload.clone()).collect()
    }
}

/// A new session with `connector`, retrying with the configured dial backoff while starting
/// fails in a way a later try may fix (the server still down: `TimedOut`; a full acceptor).
async fn start_retrying<R, F, Fut, S>(
    rt: &R,
    connector: &Arc<Mutex<F>>,
    config: Config,
    metadata: &[u8],
) -> Result<SessionHandle, ConnectError>
where
    R: Runtime,
    S: Io,
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
{
    let mut backoff = Backoff::new(config.dial.backoff_initial, config.dial.backoff_max);
    loop {
        match start(rt, connector, config, metadata).await {
            Err(ConnectError::TimedOut { .. } | ConnectError::Full) => {
                let delay = backoff.next_delay(rt.jitter_seed());
                tracing::info!(?delay, "sotto: a new session after the loss could not start yet; retrying");
                let mut timer = rt.timer();
                timer.reset(rt.now() + delay);
                poll_fn(|cx| timer.poll_expired(cx)).await;
            }
            r => return r,
        }
    }
}

/// One session with `connector` (shared by every session of a [`ReconnectingSession`]).
async fn start<R, F, Fut, S>(
    rt: &R,
    connector: &Arc<Mutex<F>>,
    config: Config,
    metadata: &[u8],
) -> Result<SessionHandle, ConnectError>
where
    R: Runtime,
    S: Io,
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
{
    let connector = Arc::clone(connector);
    let dial = move || (connector.lock().unwrap_or_else(PoisonError::into_inner))();
    connect_session_with(rt.clone(), dial, config, metadata).await
}
