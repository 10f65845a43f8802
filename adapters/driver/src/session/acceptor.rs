//! The session acceptor: one task that takes streams from a listener (or any stream source)
//! and routes each through the core [`Endpoint`] (see `routing`, shared with the raw
//! acceptor). A new session is created here ([`SessionKind`]), owned by its own driver task,
//! and yielded by [`SessionAcceptor::accept`] once its session handshake has finished (or
//! dropped unseen if it ends or expires first).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{Stream, StreamExt};
use sotto_proto::conduit::ConfigError;
use sotto_proto::endpoint::{EndpointStats, Issuer, SessionHandle as EpHandle};
use sotto_proto::session::Session;
use sotto_proto::wire::ClientHello;
use sotto_proto::{Instant, ResumeKey, Role};

use super::handle::SessionHandle;
use super::home::{Home, SessDriverHost};
use super::state::SessState;
use crate::config::Config;
use crate::driver::{Driver, Source};
use crate::front::Front;
use crate::group::GroupMember;
use crate::link_hook::{self, AcceptHooks, Arrived, LinkInfo};
use crate::listen;
use crate::router::{EpShared, Member};
use crate::routing::{hooked_arrivals, Kind};
use crate::runtime::{Io, PeerAddr, Runtime};
use crate::shutdown::ShutdownReport;
use crate::summary::{AcceptorSummary, Share};

/// Counters of a session acceptor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[non_exhaustive]
pub struct SessionAcceptorStats {
    /// Streams taken from the listener.
    pub links: u64,
    /// New sessions handed to the application's queue (their session handshake finished).
    pub sessions: u64,
    /// New sessions whose session handshake had not finished by their link's handshake
    /// deadline: ended and freed by the endpoint, closed without ever being yielded (the
    /// endpoint's `session_handshakes_expired`, one per
    /// [`EndpointEvent::SessionHandshakeExpired`](sotto_proto::endpoint::EndpointEvent::SessionHandshakeExpired)).
    pub sessions_expired: u64,
    /// Fresh ClientHellos turned away because `accept_backlog` sessions were waiting (or,
    /// counted in `backlog_source_full` too, `accept_backlog_per_source` from their source).
    pub backlog_full: u64,
    /// Fresh ClientHellos turned away because `accept_backlog_per_source` sessions from
    /// their source were waiting for `accept` or in their session handshake and the held links
    /// (`links_held`) were at their bound.
    pub backlog_source_full: u64,
    /// Links that arrived while their source held `max_pending_per_source` pending
    /// handshakes and were kept unread until one of them finished, rather than closed (also
    /// counted in the endpoint's `source_quota_refused`, which counts them with the links
    /// closed because the lot of parked links was full too; the lot holds
    /// `max_pending_handshakes` links plus one per detached session).
    pub links_parked: u64,
    /// Parked links closed because they waited `protocol.handshake_timeout` without a
    /// pending-handshake slot of their source coming free (each also in `links_parked`).
    pub parked_expired: u64,
    /// Fresh ClientHellos that arrived while their source held `accept_backlog_per_source`
    /// sessions (waiting for `accept` or in their session handshake) and were held, their
    /// hello read, until the application took one of that source's sessions (or one ended),
    /// rather than closed. Each keeps its pending handshake (and its deadline) meanwhile; at
    /// most `accept_backlog_per_source` are held per source and `accept_backlog` in all,
    /// past which they are closed as before (`backlog_source_full`). See `docs/sizing.md`.
    pub links_held: u64,
    /// Held links closed at their handshake deadline because the application did not take
    /// enough of their source's sessions in time (each also in `links_held`; their source
    /// is not charged).
    pub held_expired: u64,
    /// Links closed because their link hook returned an error (a failed TLS handshake);
    /// each charged to its source (the endpoint's `pending_failed`).
    pub link_hook_failures: u64,
    /// Links closed because their link hook panicked (also charged to their source); the
    /// acceptor goes on.
    pub link_hook_panics: u64,
    /// Resumes the resume binding refused: answered REJECTED as an unknown key (charged to
    /// their source, in the endpoint's `rejected` too), the session untouched.
    pub resumes_refused_by_binding: u64,
    /// The endpoint's counters: links refused, bad hellos, expired handshakes, sessions
    /// created, resumes routed, REJECTED replies, evictions, live sessions and pending links.
    pub endpoint: EndpointStats,
    /// Acceptor-wide figures in the terms both acceptors share: sessions live and detached,
    /// handshakes, refusals by reason, the bytes the sessions' buffers hold.
    pub summary: AcceptorSummary,
}

listen::impl_counts!(SessionAcceptorStats);

/// Serves a listener with the session API: yields each new session once its session
/// handshake has finished over its first link (as its HelloYourself is queued; with an
/// initiator older than session version 4, on its LetsGo); resumes go to
/// their sessions without the application seeing them. Dropping the
/// acceptor stops listening and ends the handshakes in progress; sessions already yielded
/// live on (each until its own handle is dropped), those not yet yielded are closed.
pub struct SessionAcceptor {
    pub(crate) front: Front<SessionHandle, SessionAcceptorStats>,
    /// The configuration it serves with (a handoff imports sessions under it).
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) config: Config,
    /// Starts the driver of a session adopted from another process (on the acceptor's
    /// runtime; call it from a task there) and returns its handle.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) adopt: Adopt,
}

/// See [`SessionAcceptor::adopt`].
pub(crate) type Adopt = Arc<dyn Fn(Home) -> SessionHandle + Send + Sync>;

impl SessionAcceptor {
    /// The acceptor around `front`, whose sessions' links are `S` on `rt`.
    fn with_front<R: Runtime, S: Io>(rt: R, front: Front<SessionHandle, SessionAcceptorStats>, config: Config) -> Self {
        let adopt: Adopt = Arc::new(move |home| {
            let host = Arc::new(SessDriverHost::<S>::new(home.clone()));
            let driver = Driver::<R, S, SessDriverHost<S>>::new(&rt, host, Source::Mailbox, config);
            let task = rt.spawn(crate::tasks::isolated(driver));
            SessionHandle::new(home, super::handle::SessionId::next(), task)
        });
        Self { front, config, adopt }
    }
}

impl std::fmt::Debug for SessionAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionAcceptor").field("stats", &self.stats()).finish()
    }
}

impl SessionAcceptor {
    /// The next new session. Cancel-safe. Fails once the stream source has ended and every
    /// session was taken.
    pub async fn accept(&self) -> io::Result<SessionHandle> {
        self.front.accept().await
    }

    /// A snapshot of the counters, with the acceptor-wide
    /// [`summary`](SessionAcceptorStats::summary). O(1): no session is visited.
    #[must_use]
    pub fn stats(&self) -> SessionAcceptorStats {
        let (mut s, endpoint) = self.front.stats();
        s.summary = self.front.summary(&endpoint, s.backlog_full);
        s.endpoint = endpoint;
        s.sessions_expired = s.endpoint.session_handshakes_expired;
        s
    }

    /// Close the acceptor gracefully, within `within`: stop listening (the listener is
    /// closed, handshakes in progress dropped, `accept` fails from now on), then close every
    /// session (yielded, waiting for `accept`, or still in its session handshake) with GOODBYE `code` and `reason`, and wait for their drivers
    /// to write it, at most until `within` has passed; sessions still writing then are ended
    /// and their links closed. Detached sessions end at once (their peers' resumes will be
    /// REJECTED). Returns what it closed. Call once, when the server stops; the sessions'
    /// handles stay valid (they report the end).
    pub async fn shutdown(&self, code: u32, reason: &str, within: Duration) -> ShutdownReport {
        self.front.shutdown(code, reason, within).await
    }

    /// Hold the endpoint's lock until the returned guard is dropped (no new link is routed
    /// meanwhile). For tests showing that sessions never need it to move data.
    #[doc(hidden)]
    pub fn hold_endpoint_lock(&self) -> impl Sized + '_ {
        self.front.lock_endpoint()
    }
}

/// Start serving `incoming` with the session API on runtime `rt`. Each item is a freshly
/// accepted stream and its source: a hash of the peer's address, for the per-source failure
/// budget (0 when unknown; see [`source_of`](crate::routing::source_of)).
pub fn serve_sessions<R, S, St>(rt: R, incoming: St, config: Config) -> Result<SessionAcceptor, ConfigError>
where
    R: Runtime,
    S: Io,
    St: Stream<Item = io::Result<(S, u64)>> + Send + 'static,
{
    let incoming = incoming.map(|r| r.map(|(s, source)| (Arrived::Ready(s), source)));
    Front::spawn(rt.clone(), incoming, config, SessionKind, None)
        .map(|f| SessionAcceptor::with_front::<R, S>(rt, f, config))
}

/// [`serve_sessions`] as a worker of an acceptor group (see `group`): the endpoint mints and
/// reads `issuer`'s tagged keys, and links for other workers go to them through `member`.
pub(super) fn serve_in_group<R, S, St>(
    rt: R,
    incoming: St,
    config: Config,
    issuer: Issuer,
    member: GroupMember<S>,
) -> Result<SessionAcceptor, ConfigError>
where
    R: Runtime,
    S: Io,
    St: Stream<Item = io::Result<(S, u64)>> + Send + 'static,
{
    let incoming = incoming.map(|r| r.map(|(s, source)| (Arrived::Ready(s), source)));
    Front::spawn_in_group(rt.clone(), incoming, config, SessionKind, None, (issuer, member))
        .map(|f| SessionAcceptor::with_front::<R, S>(rt, f, config))
}

/// [`serve_sessions`] with [`AcceptHooks`]: each item of `incoming` is a freshly accepted
/// stream and its peer's address (links are accounted by their TCP peer's IP address); the
/// link hook turns the stream into a `T`, which `to_io` makes the driver's stream (given the
/// link's address and the identity the hook returned, to report with [`Io::peer_addr`] and
/// [`Io::peer_identity`]; [`WithPeer`](crate::WithPeer) does both). See [`AcceptHooks`] for
/// the deadlines and accounting the hook runs under. The adapters' `serve_sessions_tcp_with`
/// call it (through [`listen_sessions_with`](crate::listen_sessions_with)).
pub fn serve_sessions_hooked<R, X, T, S, St>(
    rt: R,
    incoming: St,
    config: Config,
    hooks: AcceptHooks<X, T>,
    to_io: fn(T, LinkInfo) -> S,
) -> Result<SessionAcceptor, ConfigError>
where
    R: Runtime,
    X: Send + 'static,
    T: Send + 'static,
    S: Io,
    St: Stream<Item = io::Result<(X, Option<PeerAddr>)>> + Send + 'static,
{
    let binding = link_hook::binding_of(&hooks);
    let incoming = hooked_arrivals(incoming, hooks, to_io);
    Front::spawn(rt.clone(), incoming, config, SessionKind, binding)
        .map(|f| SessionAcceptor::with_front::<R, S>(rt, f, config))
}

/// Session-layer sessions, made of fresh ClientHellos.
struct SessionKind;

impl<R: Runtime, S: Io> Kind<R, S> for SessionKind {
    type Session = SessionHandle;
    type Stats = SessionAcceptorStats;

    fn start(
        &self,
        rt: &R,
        config: &Config,
        ep: &Arc<EpShared>,
        now: Instant,
        handle: EpHandle,
        io: S,
        hello: &ClientHello,
        key: ResumeKey,
    ) -> Option<(SessionHandle, bool)> {
        let mut session = match Session::new(Role::Acceptor, config.session_config(), &[]) {
            Ok(s) => s,
            Err(e) => {
                // Cannot happen: the configuration was validated with the endpoint.
                tracing::debug!(error = %e, "sotto: session not created");
                return None;
            }
        };
        let (link, _) = session.link_up_with_hello(now, key, hello);
        let peer = io.peer_addr();
        let member = Member::new(ep, handle, (io, link), false);
        let mut state = SessState::new(config);
        state.common.acceptor = Some(Share::new(&ep.gauges));
        let home = Home::with_clock(session, state, Some(member), ep.clock.clone());
        ep.register(handle, &home.owner());
        let host = Arc::new(SessDriverHost::<S>::new(home.clone()));
        let driver = Driver::<R, S, SessDriverHost<S>>::new(rt, host, Source::Mailbox, *config);
        let id = super::handle::SessionId::next();
        let span = crate::trace::session_span(id, Role::Acceptor, crate::trace::Api::Session, peer.as_ref());
        let task = crate::trace::spawn_in(rt, driver, span);
        Some((SessionHandle::new(home, id, task), false))
    }
}
