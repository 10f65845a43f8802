//! The raw stable-conduit acceptor (the vox-compatible API): one task that takes streams from
//! a listener (or any stream source), reads each one's ClientHello under the handshake
//! deadline, and routes it through the core endpoint, as the session acceptor does (see
//! `routing`): a new session (a bare [`Conduit`], yielded by [`Acceptor::accept`] at once),
//! a resume of a live session (checked by that session before it touches its live link), or
//! REJECTED. The task itself is in `listen`: pending handshakes are futures polled inside it,
//! so dropping the [`Acceptor`] ends all of them.
//!
//! The per-source accounting needs each link's source. [`serve`]'s streams carry no source
//! of their own, and counting them all as one would let a single client that guesses keys
//! (or sends garbage) spend the failure budget of every vox peer of the acceptor; so
//! [`serve`] takes the source from the stream itself ([`Io::peer_addr`]: the hash of a TCP
//! peer's IP address, which the adapters' listeners and stream glue record, as for the
//! session acceptor). Links whose stream cannot tell (Unix sockets, stream types the
//! adapter cannot look into) share the one source 0, as at the session acceptor: the global
//! caps and one failure budget apply to them (see `routing`).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{Stream, StreamExt};
use sotto_proto::conduit::ConfigError;
use sotto_proto::endpoint::{EndpointStats, SessionHandle as EpHandle};
use sotto_proto::wire::ClientHello;
use sotto_proto::{Conduit, Instant, ResumeKey, Role};

use crate::config::Config;
use crate::driver::{Driver, Source};
use crate::front::Front;
use crate::handle::StableConduit;
use crate::link_hook::{self, AcceptHooks, Arrived, LinkInfo};
use crate::listen;
use crate::raw::Shared;
use crate::router::{EpShared, Member, Owner};
use crate::routing::{hooked_arrivals, source_of_peer, Kind};
use crate::runtime::{Io, PeerAddr, Runtime};
use crate::session::SessionId;
use crate::shutdown::ShutdownReport;
use crate::summary::{AcceptorSummary, Share};

/// Counters of an acceptor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[non_exhaustive]
pub struct AcceptorStats {
    /// Streams taken from the listener.
    pub links: u64,
    /// Streams closed at once, unread: `max_pending_handshakes` were waiting (or
    /// `max_pending_per_source` from their source), or their source was over its failure
    /// budget.
    pub refused: u64,
    /// Streams closed for sending no ClientHello within `handshake_timeout`, or not one byte
    /// within `first_byte_timeout`.
    pub handshake_timeouts: u64,
    /// Streams closed for a bad ClientHello (size, magic, flags). A stream that ends before
    /// its ClientHello is closed uncounted.
    pub bad_hellos: u64,
    /// New sessions started.
    pub sessions: u64,
    /// Fresh ClientHellos turned away because `accept_backlog` sessions were waiting (or,
    /// counted in `backlog_source_full` too, `accept_backlog_per_source` from their source).
    pub backlog_full: u64,
    /// Fresh ClientHellos turned away because `accept_backlog_per_source` sessions from
    /// their source were waiting for `accept` and the held links (`links_held`) were at their
    /// bound.
    pub backlog_source_full: u64,
    /// Resumes a session accepted.
    pub resumes: u64,
    /// Resumes answered REJECTED (unknown or expired key, or refused by the session).
    pub rejected: u64,
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
    /// The endpoint's counters, which the fields above summarize.
    pub endpoint: EndpointStats,
    /// Acceptor-wide figures in the terms both acceptors share: sessions live and detached,
    /// handshakes, refusals by reason, the bytes the sessions' buffers hold.
    pub summary: AcceptorSummary,
}

listen::impl_counts!(AcceptorStats);

/// Serves a listener: yields each new session once its first link is established; resumes
/// go to their sessions without the application seeing them. Dropping the acceptor stops
/// listening and ends the handshakes in progress; sessions already yielded live on (each
/// until its own handle is dropped), those not yet yielded end.
pub struct Acceptor(Front<StableConduit, AcceptorStats>);

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor").field("stats", &self.stats()).finish()
    }
}

impl Acceptor {
    /// The next new session. Cancel-safe. Fails once the stream source has ended and every
    /// session was taken.
    pub async fn accept(&self) -> io::Result<StableConduit> {
        self.0.accept().await
    }

    /// A snapshot of the counters, with the acceptor-wide
    /// [`summary`](AcceptorStats::summary). O(1): no session is visited.
    #[must_use]
    pub fn stats(&self) -> AcceptorStats {
        let (mut s, e) = self.0.stats();
        s.summary = self.0.summary(&e, s.backlog_full);
        s.refused = e.links_refused;
        s.handshake_timeouts = e.handshakes_expired;
        s.bad_hellos = e.bad_hellos;
        s.resumes = e.resumes_routed;
        s.rejected = e.rejected;
        s.endpoint = e;
        s
    }

    /// Close the acceptor gracefully, within `within`: stop listening (the listener is
    /// closed, handshakes in progress dropped, `accept` fails from now on), then close every
    /// session it started with GOODBYE `code` and `reason` (to a peer with sotto's
    /// extensions; a vox peer's session, or a detached one, ends at once), and wait for their
    /// drivers to write it, at most until `within` has passed; sessions still writing then
    /// are ended and their links closed. Returns what it closed. Call once, when the server
    /// stops; the sessions' handles stay valid (they report the end).
    pub async fn shutdown(&self, code: u32, reason: &str, within: Duration) -> ShutdownReport {
        self.0.shutdown(code, reason, within).await
    }
}

/// Start serving `incoming` (each item a freshly accepted stream) on runtime `rt`.
pub fn serve<R, S, St>(rt: R, incoming: St, config: Config) -> Result<Acceptor, ConfigError>
where
    R: Runtime,
    S: Io,
    St: Stream<Item = io::Result<S>> + Send + 'static,
{
    config.validate()?;
    let incoming = incoming.map(|r| {
        r.map(|io| {
            let source = source_of_peer(&io);
            (Arrived::Ready(io), source)
        })
    });
    Front::spawn(rt, incoming, config, RawKind, None).map(Acceptor)
}

/// [`serve`] with [`AcceptHooks`]: each item of `incoming` is a freshly accepted stream and
/// its peer's address; the link hook turns the stream into a `T`, which `to_io` makes the
/// driver's stream (given the link's address and the identity the hook returned, to report
/// with [`Io::peer_addr`] and [`Io::peer_identity`]; [`WithPeer`](crate::WithPeer) does
/// both). Links are accounted by their TCP peer's IP address. See [`AcceptHooks`] for the
/// deadlines and accounting the hook runs under. The adapters' `raw::serve_tcp_with` call
/// it (through [`listen_with`](crate::listen_with)).
pub fn serve_hooked<R, X, T, S, St>(
    rt: R,
    incoming: St,
    config: Config,
    hooks: AcceptHooks<X, T>,
    to_io: fn(T, LinkInfo) -> S,
) -> Result<Acceptor, ConfigError>
where
    R: Runtime,
    X: Send + 'static,
    T: Send + 'static,
    S: Io,
    St: Stream<Item = io::Result<(X, Option<PeerAddr>)>> + Send + 'static,
{
    config.validate()?;
    let binding = link_hook::binding_of(&hooks);
    let incoming = hooked_arrivals(incoming, hooks, to_io);
    Front::spawn(rt, incoming, config, RawKind, binding).map(Acceptor)
}

/// Bare stable conduits, made of fresh ClientHellos: announced at once (no session
/// handshake).
struct RawKind;

impl<R: Runtime, S: Io> Kind<R, S> for RawKind {
    type Session = StableConduit;
    type Stats = AcceptorStats;

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
    ) -> Option<(StableConduit, bool)> {
        // Cannot fail: the configuration was validated.
        let mut conduit = Conduit::new(Role::Acceptor, config.conduit_config()).ok()?;
        let (link, _) = conduit.link_up_with_hello(now, key, hello);
        let peer = io.peer_addr();
        let member = Member::new(ep, handle, (io, link), true);
        let shared = Arc::new(Shared::new(conduit, config, ep.clock.clone(), Some(member)));
        shared.lock_inner().common.acceptor = Some(Share::new(&ep.gauges));
        ep.register(handle, &(Arc::clone(&shared) as Arc<dyn Owner>));
        let driver = Driver::<R, S, Shared>::new(rt, Arc::clone(&shared), Source::Mailbox, *config);
        let id = SessionId::next();
        let span = crate::trace::session_span(id, Role::Acceptor, crate::trace::Api::Conduit, peer.as_ref());
        let task = crate::trace::spawn_in(rt, driver, span);
        Some((StableConduit::new(shared, id, task), true))
    }
}
