//! The acceptor-side endpoint: reads the first message of every incoming link and routes it to
//! a new session, to an existing session (resume by key), or to a REJECTED reply. It does
//! **not** own the sessions: each is owned (and locked) by its own driver, and the endpoint
//! and a session talk in values. See [`Endpoint`]; [`Hosted`] is a single-threaded owner of
//! an endpoint and all its sessions, for sync run loops and tests.

mod adopt;
mod hosted;
mod issuer;
mod key_index;
mod slot_heap;
mod source_limiter;

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use crate::conduit::{Conduit, ConfigError, InputError, LinkId};
use crate::session::{Session, SessionConfig};
use crate::time::{Duration, Instant, MonotonicNow};
use crate::wire::{ClientHello, ResumeKey, ServerHello, WireError, HELLO_LEN};
pub use adopt::AdoptError;
pub use hosted::{Hosted, HostedEvent, Placed};
pub use issuer::{Issuer, IssuerError, IssuerIdentity, KeyOrigin, KeyTag, IDENTITY_VERSION, MAX_ADOPTED_EPOCHS};
use key_index::KeyIndex;
use slot_heap::SlotHeap;
use source_limiter::SourceLimiter;

/// Limits of an endpoint. The session's `conduit.recovery_timeout` is the `resume_window`
/// after which a detached session is freed (by its own driver, when its conduit ends).
///
/// Nothing here is allocated up front: the endpoint's tables grow with the sessions and links
/// live at once, and a session's buffers are allocated when it is created. So the limits are
/// set by memory: `max_sessions` times what one session may hold (its replay ring,
/// `session.conduit.replay_bytes`, plus its connections' queued data) must fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[non_exhaustive]
pub struct EndpointConfig {
    /// Every session's configuration.
    pub session: SessionConfig,
    /// Sessions held at once (attached or detached). When every one is taken, a fresh
    /// ClientHello reclaims the session detached longest, or, with none detached, is refused
    /// as [`RejectReason::Full`]. Default 100,000.
    pub max_sessions: u32,
    /// Links waiting for their ClientHello at once; more are refused at once. A pending
    /// link costs its socket and about a hundred bytes here. Default 1024.
    pub max_pending_handshakes: u32,
    /// Links waiting for their ClientHello at once from one source; more from it are refused
    /// at once ([`LinkRefusal::SourcePendingQuota`]), so idle links from one source cannot
    /// fill `max_pending_handshakes` and lock every other source out. Source 0 (unknown)
    /// has no quota of its own: it is every client whose address the driver cannot tell.
    /// Default 256, a quarter of the default `max_pending_handshakes` (clients behind one
    /// NAT reconnecting at once share it).
    pub max_pending_per_source: u32,
    /// Detached sessions kept at once; past it the one detached longest is evicted (session
    /// lost). Default `u32::MAX`: only `max_sessions` binds, so a mass disconnect evicts no
    /// session inside its resume window.
    pub max_detached_sessions: u32,
    /// The ClientHello must arrive within this of the link's arrival, and a session that link
    /// creates must finish its session handshake (reported with
    /// [`Endpoint::session_ready`]) by the same deadline, else it is freed
    /// ([`EndpointEvent::SessionHandshakeExpired`]). Once the peer has shown that it holds
    /// the session's key (a frame from it, [`Endpoint::peer_spoke`], or a resume), that
    /// deadline runs only while the unready session has a link: while it is detached it is
    /// held like any detached session (its resume window), and a resume restarts it from that
    /// link's arrival; an unready session takes at most [`MAX_UNREADY_RESUMES`] resumes.
    /// Default 10 s.
    pub handshake_timeout: Duration,
    /// Failed handshakes (bad or missing ClientHellos, sessions not ready by their deadline)
    /// and failed resumes a source may cause per `failure_period` before its links are refused
    /// unread. Default 16.
    pub failure_budget: u32,
    /// See `failure_budget`. Default 10 s.
    pub failure_period: Duration,
    /// Sources tracked for `failure_budget` (oldest recycled). Default 256.
    pub tracked_sources: u32,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            session: SessionConfig::default(),
            max_sessions: 100_000,
            max_pending_handshakes: 1024,
            max_pending_per_source: 256,
            max_detached_sessions: u32::MAX,
            handshake_timeout: Duration::from_secs(10),
            failure_budget: 16,
            failure_period: Duration::from_secs(10),
            tracked_sources: 256,
        }
    }
}

/// Resumes an unready session (one whose session handshake has not finished) may take.
/// Each resumed link gets a fresh `handshake_timeout` to finish the handshake (once the peer
/// holds the key the deadline does not run while the session is detached), so a session whose
/// links die during its handshake survives like any detached one; this bounds how long a peer
/// that keeps reconnecting without finishing holds a slot: at most `MAX_UNREADY_RESUMES + 1` links of
/// `handshake_timeout` each, and the resume windows between them. The next resume is refused
/// (REJECTED), the session freed ([`EndpointEvent::SessionHandshakeExpired`]) and its source
/// charged.
pub const MAX_UNREADY_RESUMES: u32 = 8;

/// Names a session the endpoint routes to, and its generation: a handle to a session that
/// has since been freed (and its number reused) is detected, never aliased.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
pub struct SessionHandle {
    /// Slot number (small: slots are reused).
    pub index: u32,
    /// Generation of the slot when the handle was made.
    pub generation: u32,
}

/// Names a link waiting for its ClientHello.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
pub struct PendingLink {
    /// Slot number.
    pub index: u32,
    /// Generation of the slot.
    pub generation: u32,
}

/// Why the endpoint will not take or keep a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[repr(u8)]
#[non_exhaustive]
pub enum LinkRefusal {
    /// `max_pending_handshakes` links are already waiting (H9): close it unread.
    TooManyPendingHandshakes,
    /// `max_pending_per_source` links from this link's source are already waiting: close it
    /// unread (other sources still get in).
    SourcePendingQuota,
    /// The source caused too many failed handshakes or resumes lately: close it unread.
    RateLimited,
    /// The first message was not a valid ClientHello (H2, H4, H5, H6, H10): close it.
    BadHello(WireError),
    /// The handle is stale (expired or already routed).
    UnknownPending,
}

/// Why a ClientHello is answered REJECTED. The reply is the same for every reason (a vox
/// peer sees REJECTED), except [`Full`](Self::Full) answering a ClientHello with `EXT` (a
/// sotto initiator), which gets [`ServerHello::rejected_full`], and
/// [`IssuerGone`](Self::IssuerGone) answering a resume with `EXT`, which gets
/// [`ServerHello::rejected_issuer_gone`]; the reason is for the acceptor's logs and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// No live session holds the presented key (expired, evicted, never issued, or the
    /// acceptor restarted).
    UnknownKey,
    /// The session holding the key refused it (a retired key, a stale duplicate, or the
    /// session has ended).
    Refused,
    /// A fresh ClientHello, but `max_sessions` sessions are live and none is detached: the
    /// acceptor is full. Worth a warning in the acceptor's log. A sotto initiator (its hello
    /// sets `EXT`) is told so ([`ServerHello::rejected_full`]); a vox one sees REJECTED.
    Full,
    /// The key was issued by an earlier run of the acceptor group (an epoch its
    /// [`Issuer`] no longer serves): the session is gone with that run. Not charged to the
    /// source (only the group's secret makes such a key, so it is no guess); a sotto
    /// initiator is told so ([`ServerHello::rejected_issuer_gone`]).
    IssuerGone,
}

impl core::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::UnknownKey => f.write_str("no live session holds the presented resume key"),
            Self::Refused => f.write_str("the session holding the key refused the resume"),
            Self::Full => f.write_str("the acceptor is full"),
            Self::IssuerGone => f.write_str("the key's issuer (an earlier run of the acceptor) is gone"),
        }
    }
}

impl core::fmt::Display for LinkRefusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TooManyPendingHandshakes => f.write_str("too many links waiting for their handshake"),
            Self::SourcePendingQuota => f.write_str("too many links from this source waiting for their handshake"),
            Self::RateLimited => f.write_str("too many failed handshakes or resumes from this source"),
            Self::BadHello(e) => write!(f, "bad ClientHello: {e}"),
            Self::UnknownPending => f.write_str("stale pending-link handle"),
        }
    }
}

impl core::error::Error for LinkRefusal {}

/// Where a ClientHello was routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Routed {
    /// A fresh ClientHello: a new session, named `handle`, was admitted. Create it (an
    /// acceptor [`Session`], or a bare [`Conduit`]), attach the link with
    /// `link_up_with_hello(now, key, &hello)`, and drive it; report
    /// [`session_ready`](Endpoint::session_ready) when its handshake finishes,
    /// [`detached`](Endpoint::detached) / [`attached`](Endpoint::attached) as its links come
    /// and go, and [`free`](Endpoint::free) when it ends. `key` already routes to `handle`.
    New {
        /// The new session's handle.
        handle: SessionHandle,
        /// The ClientHello read from the link.
        hello: ClientHello,
        /// The key the session issues in its ServerHello.
        key: ResumeKey,
    },
    /// A resume of a live session: hand the link and this ticket to the session's owner, who
    /// applies it with [`Resume::apply`] (which checks the key before anything touches the
    /// session's live link) and reports the outcome with [`Endpoint::resume_outcome`].
    Resume(Resume),
    /// The key was issued by another worker of the acceptor group (its [`Issuer`] says
    /// which): pass the link, with the ClientHello already read from it, to that worker,
    /// which routes it through its own endpoint ([`accept_link`](Endpoint::accept_link), then
    /// [`route`](Endpoint::route) with the same hello). Not charged; nothing is written.
    Forward {
        /// The worker that issued the key.
        worker: u16,
        /// The ClientHello read from the link.
        hello: ClientHello,
    },
    /// Answer REJECTED: write `reply` after a length prefix, then close the link.
    Reject {
        /// A REJECTED ServerHello, identical for every reason but a full acceptor answering
        /// a sotto initiator (see [`RejectReason::Full`]).
        reply: [u8; HELLO_LEN],
        /// Why (for logs and counters; never sent).
        reason: RejectReason,
    },
}

/// A resume routed to a session, to be checked and applied by whoever owns that session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Resume {
    handle: SessionHandle,
    key: ResumeKey,
    hello: ClientHello,
    fresh_key: ResumeKey,
    source: u64,
    /// The handshake deadline of the resuming link (from its arrival).
    deadline: Instant,
}

/// What a session made of a [`Resume`]; report it with [`Endpoint::resume_outcome`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum ResumeOutcome {
    /// The session took the link (its previous link, if any, is superseded): keep feeding the
    /// link's messages to it with this id. `result` is the conduit's verdict on the hello;
    /// on an error the conduit owes the peer a REJECTED on this link and drops it.
    Linked {
        /// The link's id within the session.
        link: LinkId,
        /// The key the session issues in its ServerHello.
        issued: ResumeKey,
        /// The conduit's verdict on the hello.
        result: Result<(), InputError>,
    },
    /// The session refused the key: it never touched the session; answer REJECTED (the reply
    /// is returned by [`Endpoint::resume_outcome`]) and close the link.
    Refused,
}

impl Resume {
    /// The session this resume was routed to.
    #[must_use]
    pub fn handle(&self) -> SessionHandle {
        self.handle
    }

    /// The ClientHello of the resuming link.
    #[must_use]
    pub fn hello(&self) -> &ClientHello {
        &self.hello
    }

    /// Check the presented key against `conduit` (its current key, or its previous one
    /// under the rules of [`Conduit::link_up_with_hello`]'s key rotation; compared in
    /// constant time) and only if it is accepted attach the link, superseding the live one.
    /// A refused resume leaves the conduit untouched.
    pub fn apply(&self, now: Instant, conduit: &mut Conduit) -> ResumeOutcome {
        if conduit.is_ended() || !accepts_resume(conduit, &self.key, &self.hello) {
            return ResumeOutcome::Refused;
        }
        // A resume with the previous key comes from a client that may or may not hold the
        // current key: its ServerHello was lost, or this hello is a stale duplicate from a
        // link the client abandoned after it resumed elsewhere. Issue the current key again,
        // so that whichever it holds, the session accepts it next time (a new key here would
        // leave a client holding the current one REJECTED).
        let issued = match conduit.key {
            Some(current) if !current.ct_eq(&self.key) => current,
            _ => self.fresh_key,
        };
        let (link, result) = conduit.link_up_with_hello(now, issued, &self.hello);
        ResumeOutcome::Linked { link, issued, result }
    }

    /// [`apply`](Self::apply) to a session's conduit.
    pub fn apply_to_session(&self, now: Instant, session: &mut Session) -> ResumeOutcome {
        self.apply(now, &mut session.conduit)
    }
}

/// Something the driver must act on. Drain with [`Endpoint::poll_event`].
///
/// Deliberately not `#[non_exhaustive]`: a driver must act on every event, so a new one is a
/// breaking change that the compiler points out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointEvent {
    /// A pending link missed the handshake deadline (H7): close it now (nothing is owed on
    /// it); its slot is free.
    HandshakeExpired(PendingLink),
    /// A detached session was evicted to respect `max_detached_sessions`. The endpoint has
    /// forgotten it (its keys no longer route): its owner must end it with
    /// [`SessionEnd::Evicted`](crate::SessionEnd::Evicted), then [`free`](Endpoint::free)
    /// and drop it.
    Evicted(SessionHandle),
    /// The session detached longest was reclaimed to make room for a new session while
    /// every one of `max_sessions` was taken. Already forgotten and freed (its slot is
    /// reused at once, the handle is stale): its owner must end it and drop it.
    Reclaimed(SessionHandle),
    /// A session created by a fresh ClientHello was not reported ready by the handshake
    /// deadline of the link that created it: the endpoint has forgotten it (its keys no
    /// longer route) and charged its source. Its owner must end it
    /// ([`SessionEnd::Evicted`](crate::SessionEnd::Evicted)), close its links and
    /// [`free`](Endpoint::free) it; the application never saw it.
    SessionHandshakeExpired(SessionHandle),
}

#[derive(Clone, Copy, Debug)]
struct PendingSlot {
    generation: u32,
    live: bool,
    source: u64,
    deadline: Instant,
}

/// A new session still in its session handshake.
#[derive(Clone, Copy, Debug)]
struct Unready {
    /// The handshake deadline of its latest link (the one that created it, or the latest
    /// resume). In `Endpoint::unready_deadlines` only while the session is attached.
    deadline: Instant,
    /// That link's source, charged if the deadline passes.
    source: u64,
    /// Resumes taken so far (at most [`MAX_UNREADY_RESUMES`]).
    resumes: u32,
    /// The peer has shown it holds the key (it sent a frame, or resumed): from then on the
    /// deadline runs only while the session is attached. Before, it runs from the first
    /// link's arrival whatever happens to the link, so a session whose ServerHello was lost
    /// (an orphan its initiator cannot resume) costs at most `handshake_timeout`.
    keyed: bool,
}

#[derive(Clone, Copy, Debug)]
struct SessionSlot {
    generation: u32,
    /// Allocated to a session (routed to, or forgotten but not freed yet).
    live: bool,
    /// Forgotten (evicted or expired): routes nowhere, but the slot is reused only once its
    /// owner calls `free`, so that two sessions an owner still holds never share a number.
    forgotten: bool,
    /// Keys indexed for this slot (the presented and the issued one).
    keys: [Option<ResumeKey>; 2],
    /// Set while a session created by a fresh ClientHello has not been reported ready.
    unready: Option<Unready>,
    /// When it detached, while it is detached (its entry in `Endpoint::detached`).
    detached_since: Option<Instant>,
}

/// Counters of an endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[non_exhaustive]
pub struct EndpointStats {
    /// Links refused before reading (pending table full or rate-limited).
    pub links_refused: u64,
    /// First messages that were not valid ClientHellos.
    pub bad_hellos: u64,
    /// Pending links that missed the handshake deadline.
    pub handshakes_expired: u64,
    /// Pending links the driver closed for sending nothing by its first-byte deadline
    /// ([`Endpoint::pending_silent`]); also counted in `handshakes_expired`.
    pub first_byte_expired: u64,
    /// Pending links the driver closed because they failed before their ClientHello (a
    /// link hook, such as a TLS handshake, failed or panicked), each charged to its source
    /// ([`Endpoint::pending_failed`]).
    pub pending_failed: u64,
    /// Links refused unread because their source had spent its failure budget
    /// ([`LinkRefusal::RateLimited`]; also counted in `links_refused`).
    pub rate_limited: u64,
    /// Links refused because their source held `max_pending_per_source` pending links
    /// (also counted in `links_refused`).
    pub source_quota_refused: u64,
    /// Sessions created.
    pub sessions_created: u64,
    /// New sessions reported ready ([`Endpoint::session_ready`]).
    pub sessions_ready: u64,
    /// New sessions freed because they were not ready by their link's handshake deadline
    /// ([`EndpointEvent::SessionHandshakeExpired`]).
    pub session_handshakes_expired: u64,
    /// Resumes a session accepted.
    pub resumes_routed: u64,
    /// Resumes dropped untried because a newer link for the same session arrived before
    /// the session's owner took them ([`Endpoint::resume_superseded`]): closed without a
    /// reply, not charged.
    pub resumes_superseded: u64,
    /// REJECTED replies for a resume: unknown key, or refused by its session.
    pub rejected: u64,
    /// REJECTED replies to fresh ClientHellos because the acceptor was full
    /// ([`RejectReason::Full`]).
    pub rejected_full: u64,
    /// REJECTED replies, uncharged, to resumes presenting a key of an earlier run of the
    /// acceptor group ([`RejectReason::IssuerGone`]).
    pub rejected_issuer_gone: u64,
    /// Resumes passed to the worker that issued their key ([`Routed::Forward`]).
    pub forwarded: u64,
    /// Detached sessions evicted or reclaimed.
    pub evicted: u64,
    /// Sessions live now.
    pub sessions_live: u64,
    /// Sessions detached now (as reported).
    pub sessions_detached: u64,
    /// Links pending now.
    pub pending_links: u64,
    /// Sessions imported from another acceptor and adopted ([`Endpoint::adopt`]).
    pub sessions_adopted: u64,
    /// Sessions handed off to another acceptor and released ([`Endpoint::release`]).
    pub sessions_released: u64,
}

/// The acceptor side of sotto: routes the links of one listener to its sessions.
///
/// # Contract
///
/// The endpoint keeps what routing needs (the key index, pending handshakes and their
/// deadlines, per-source accounting, the bookkeeping of unready and detached sessions); it
/// never holds a session. For every incoming link call [`accept_link`](Self::accept_link)
/// (refused at once if too many are pending or the source is over its failure budget), then
/// feed its first link message to [`route`](Self::route):
///
/// - [`Routed::New`]: create the session, attach the link, drive it. Report back what the
///   endpoint needs: [`session_ready`](Self::session_ready) when its session handshake
///   finishes (then hand it to the application), [`detached`](Self::detached) when it loses
///   its link and [`attached`](Self::attached) when one attaches, and [`free`](Self::free)
///   when it has ended (or [`session_ended`](Self::session_ended) first, if it is freed
///   later).
/// - [`Routed::Resume`]: hand the link and the ticket to the session's owner, which checks
///   it with [`Resume::apply`] and reports [`resume_outcome`](Self::resume_outcome).
/// - [`Routed::Reject`]: write the reply and close the link.
///
/// Call [`handle_timeout`](Self::handle_timeout) at [`poll_timeout`](Self::poll_timeout) and
/// drain [`poll_event`](Self::poll_event) after every call: pending links that miss their
/// deadline, new sessions not ready by theirs, and sessions evicted or reclaimed are reported
/// there, and the session's owner must end those.
///
/// Every call does O(1) or O(log n) work in live sessions and pending links (deadlines and
/// detachment times in heaps that track each slot's entry, free lists, a hashed key index). Nothing is allocated in
/// proportion to `max_sessions`: the tables grow with what is live at once.
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    pending: Vec<PendingSlot>,
    pending_free: Vec<u32>,
    pending_live: u32,
    /// Live pending links per source (sources with none are removed).
    pending_by_source: BTreeMap<u64, u32>,
    /// Live pending links by deadline.
    pending_deadlines: SlotHeap,
    sessions: Vec<SessionSlot>,
    sessions_free: Vec<u32>,
    sessions_live: u32,
    /// Unready new sessions by deadline.
    unready_deadlines: SlotHeap,
    /// Detached sessions by when they detached.
    detached: SlotHeap,
    keys: KeyIndex,
    limiter: SourceLimiter,
    clock: MonotonicNow,
    /// Evictions and reclaims not reported yet.
    events: VecDeque<EndpointEvent>,
    stats: EndpointStats,
    /// Mints and classifies issuer-tagged keys, when the endpoint is a worker of a group.
    issuer: Option<Issuer>,
}

impl Endpoint {
    /// Build an endpoint. Allocates only the per-source table (`tracked_sources` entries) and
    /// room for `max_pending_handshakes` events; everything else grows with what is live.
    pub fn new(config: EndpointConfig) -> Result<Self, ConfigError> {
        config.session.validate()?;
        if config.max_sessions == 0 || config.max_pending_handshakes == 0 || config.max_pending_per_source == 0 {
            return Err(ConfigError::SessionLimits);
        }
        Ok(Self {
            config,
            pending: Vec::new(),
            pending_free: Vec::new(),
            pending_live: 0,
            pending_by_source: BTreeMap::new(),
            pending_deadlines: SlotHeap::new(),
            sessions: Vec::new(),
            sessions_free: Vec::new(),
            sessions_live: 0,
            unready_deadlines: SlotHeap::new(),
            detached: SlotHeap::new(),
            keys: KeyIndex::new(),
            limiter: SourceLimiter::new(config.tracked_sources as usize, config.failure_budget, config.failure_period),
            clock: MonotonicNow::default(),
            // Room for every pending link expiring at once (the common burst).
            events: VecDeque::with_capacity(config.max_pending_handshakes.min(1024) as usize),
            stats: EndpointStats::default(),
            issuer: None,
        })
    }

    /// Make this endpoint a worker of an acceptor group: from now on [`mint_key`](Self::mint_key)
    /// mints keys tagged with `issuer`'s worker and epoch, and [`route`](Self::route) reads the
    /// tag of every presented key first: another worker's key is [`Routed::Forward`]ed, an
    /// earlier run's key is answered REJECTED at once ([`RejectReason::IssuerGone`],
    /// uncharged), a key the group never issued is charged as a guess without a lookup.
    /// Call before the first link; `None` goes back to untagged keys.
    pub fn set_issuer(&mut self, issuer: Option<Issuer>) {
        self.issuer = issuer;
    }

    /// The group identity in force, if any.
    #[must_use]
    pub fn issuer(&self) -> Option<&Issuer> {
        self.issuer.as_ref()
    }

    /// The group identity in force, to [`adopt`](Issuer::adopt) or
    /// [`retire`](Issuer::retire) a predecessor's epoch.
    pub fn issuer_mut(&mut self) -> Option<&mut Issuer> {
        self.issuer.as_mut()
    }

    /// The key a session issues next, from 16 bytes of the driver's randomness: tagged with
    /// this worker and epoch under [`set_issuer`](Self::set_issuer), else the random bytes
    /// themselves. Pass it to [`route`](Self::route) as `fresh_key`.
    #[must_use]
    pub fn mint_key(&self, random: &[u8; 16]) -> ResumeKey {
        match &self.issuer {
            Some(i) => i.mint(random),
            None => ResumeKey(*random),
        }
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> EndpointStats {
        let mut s = self.stats;
        s.sessions_live = u64::from(self.sessions_live);
        s.pending_links = u64::from(self.pending_live);
        s.sessions_detached = self.detached.len() as u64;
        s
    }

    /// Whether `handle` names a session the endpoint still routes to.
    #[must_use]
    pub fn is_live(&self, handle: SessionHandle) -> bool {
        self.slot(handle).is_some()
    }

    /// Every live session's handle, in slot order. O(slots): for tests and diagnostics, not
    /// for a run loop.
    pub fn handles(&self) -> impl Iterator<Item = SessionHandle> + '_ {
        self.sessions
            .iter()
            .enumerate()
            .filter(|(_, s)| s.live && !s.forgotten)
            .map(|(i, s)| SessionHandle { index: i as u32, generation: s.generation })
    }

    fn slot(&self, h: SessionHandle) -> Option<&SessionSlot> {
        self.sessions.get(h.index as usize).filter(|s| s.live && !s.forgotten && s.generation == h.generation)
    }

    fn slot_mut(&mut self, h: SessionHandle) -> Option<&mut SessionSlot> {
        self.sessions.get_mut(h.index as usize).filter(|s| s.live && !s.forgotten && s.generation == h.generation)
    }

    /// A new link arrived from `source` (a hash of the peer address the driver chooses; 0 if
    /// unknown). Returns its pending handle, or a refusal: close the link unread.
    pub fn accept_link(&mut self, now: Instant, source: u64) -> Result<PendingLink, LinkRefusal> {
        let now = self.clock.observe(now);
        if !self.limiter.allowed(now, source) {
            self.stats.links_refused += 1;
            self.stats.rate_limited += 1;
            return Err(LinkRefusal::RateLimited);
        }
        if self.pending_live >= self.config.max_pending_handshakes {
            self.stats.links_refused += 1;
            return Err(LinkRefusal::TooManyPendingHandshakes);
        }
        if source != 0 {
            let held = self.pending_by_source.entry(source).or_insert(0);
            if *held >= self.config.max_pending_per_source {
                self.stats.links_refused += 1;
                self.stats.source_quota_refused += 1;
                return Err(LinkRefusal::SourcePendingQuota);
            }
            *held += 1;
        }
        let index = match self.pending_free.pop() {
            Some(i) => i as usize,
            None => {
                self.pending.push(PendingSlot { generation: 0, live: false, source: 0, deadline: Instant::ZERO });
                // Room for every slot in the free list: freeing never allocates.
                reserve_for(&mut self.pending_free, self.pending.len());
                self.pending.len() - 1
            }
        };
        let deadline = now.saturating_add(self.config.handshake_timeout);
        let slot = &mut self.pending[index];
        slot.generation = slot.generation.wrapping_add(1);
        slot.live = true;
        slot.source = source;
        slot.deadline = deadline;
        self.pending_live += 1;
        self.pending_deadlines.set(index as u32, deadline);
        Ok(PendingLink { index: index as u32, generation: slot.generation })
    }

    /// The handshake deadline of pending link `link` (set when it was accepted, `now` plus
    /// `handshake_timeout`), or `None` for a stale handle. A driver that keeps a link whose
    /// ClientHello it has read waiting before [`route`](Self::route) (its source's accept
    /// backlog is full) closes it by then with [`pending_closed`](Self::pending_closed);
    /// past it [`handle_timeout`](Self::handle_timeout) expires the slot and charges the source.
    #[must_use]
    pub fn pending_deadline(&self, link: PendingLink) -> Option<Instant> {
        self.pending.get(link.index as usize).filter(|p| p.live && p.generation == link.generation).map(|p| p.deadline)
    }

    /// Whether a link from `source` would get past its source's pending quota now
    /// (`max_pending_per_source`; always for source 0). A driver that parks links over the
    /// quota asks before it retries one, so that a retry refused again is not counted as a
    /// refusal (`source_quota_refused`) a second time.
    #[must_use]
    pub fn source_has_room(&self, source: u64) -> bool {
        source == 0 || self.pending_by_source.get(&source).is_none_or(|&n| n < self.config.max_pending_per_source)
    }

    /// A pending link closed before its ClientHello arrived: free its slot.
    pub fn pending_closed(&mut self, link: PendingLink) {
        let _ = self.take_pending(link);
    }

    /// The driver closed a pending link that sent nothing by its first-byte deadline (shorter
    /// than `handshake_timeout`): free its slot and count it (`first_byte_expired`, and
    /// `handshakes_expired`). Its source is not charged a failure: in a reconnect storm an
    /// honest client's first bytes can wait out a TCP retransmission or two, and charging
    /// them would lock every client behind that address out for `failure_period`; what
    /// silent links can hold is bounded by `max_pending_per_source` and the deadline. A
    /// stale handle is ignored.
    pub fn pending_silent(&mut self, now: Instant, link: PendingLink) {
        let _ = self.clock.observe(now);
        if self.take_pending(link).is_some() {
            self.stats.handshakes_expired += 1;
            self.stats.first_byte_expired += 1;
        }
    }

    /// The driver closed a pending link that failed before its ClientHello for a reason of
    /// the peer's (its link hook, a TLS handshake, failed): free its slot, count it
    /// (`pending_failed`) and charge its source a failure, as for a bad hello. A stale
    /// handle is ignored.
    pub fn pending_failed(&mut self, now: Instant, link: PendingLink) {
        let now = self.clock.observe(now);
        if let Some((source, _)) = self.take_pending(link) {
            self.stats.pending_failed += 1;
            self.limiter.fail(now, source);
        }
    }

    /// Free a live pending slot; returns its source and deadline.
    fn take_pending(&mut self, link: PendingLink) -> Option<(u64, Instant)> {
        let p = self.pending.get_mut(link.index as usize).filter(|p| p.live && p.generation == link.generation)?;
        p.live = false;
        self.pending_live -= 1;
        self.pending_free.push(link.index);
        let (source, deadline) = (p.source, p.deadline);
        self.pending_deadlines.remove(link.index);
        if let Some(held) = self.pending_by_source.get_mut(&source) {
            *held -= 1;
            if *held == 0 {
                self.pending_by_source.remove(&source);
            }
        }
        Some((source, deadline))
    }

    /// The first link message of a pending link: decode the ClientHello and route the link.
    /// `fresh_key` is the key a session issues if the link is accepted (random, from the
    /// driver). On `Err` close the link without a reply.
    pub fn route(
        &mut self,
        now: Instant,
        link: PendingLink,
        first_message: &[u8],
        fresh_key: ResumeKey,
    ) -> Result<Routed, LinkRefusal> {
        let now = self.clock.observe(now);
        let Some((source, deadline)) = self.take_pending(link) else { return Err(LinkRefusal::UnknownPending) };
        let hello = match ClientHello::decode(first_message) {
            Ok(h) => h,
            Err(e) => {
                self.stats.bad_hellos += 1;
                self.limiter.fail(now, source);
                return Err(LinkRefusal::BadHello(e));
            }
        };
        Ok(match hello.resume_key {
            None => self.route_fresh(Unready { deadline, source, resumes: 0, keyed: false }, hello, fresh_key),
            Some(key) => match self.issuer.as_ref().map(|i| i.classify(&key)) {
                Some(KeyOrigin::Worker(worker)) => {
                    self.stats.forwarded += 1;
                    Routed::Forward { worker, hello }
                }
                Some(KeyOrigin::IssuerGone(_)) => {
                    // Not a guess (only the secret makes one): the session died with the run
                    // that issued it. Answered at once, not charged.
                    self.stats.rejected_issuer_gone += 1;
                    let reply = if hello.ext { ServerHello::rejected_issuer_gone() } else { ServerHello::rejected() };
                    Routed::Reject { reply: reply.encode(), reason: RejectReason::IssuerGone }
                }
                Some(KeyOrigin::Foreign) => {
                    self.limiter.fail(now, source);
                    self.stats.rejected += 1;
                    reject(RejectReason::UnknownKey)
                }
                _ => self.route_key(now, source, deadline, hello, key, fresh_key),
            },
        })
    }

    /// Route a resume presenting `key` through the key index.
    fn route_key(
        &mut self,
        now: Instant,
        source: u64,
        deadline: Instant,
        hello: ClientHello,
        key: ResumeKey,
        fresh_key: ResumeKey,
    ) -> Routed {
        match self.keys.get(&key) {
            Some(index) => {
                let slot = &self.sessions[index as usize];
                let handle = SessionHandle { index, generation: slot.generation };
                if slot.unready.is_some_and(|u| u.resumes >= MAX_UNREADY_RESUMES) {
                    // A peer that keeps reconnecting without finishing its handshake.
                    self.expire_unready(now, handle);
                    self.stats.rejected += 1;
                    return reject(RejectReason::Refused);
                }
                Routed::Resume(Resume { handle, key, hello, fresh_key, source, deadline })
            }
            None => {
                self.limiter.fail(now, source);
                self.stats.rejected += 1;
                reject(RejectReason::UnknownKey)
            }
        }
    }

    fn route_fresh(&mut self, unready: Unready, hello: ClientHello, key: ResumeKey) -> Routed {
        if self.sessions_live >= self.config.max_sessions {
            // Every session is taken: a new session beats the one detached longest.
            let Some((_, index)) = self.detached.peek() else {
                self.stats.rejected_full += 1;
                let reply = if hello.ext { ServerHello::rejected_full() } else { ServerHello::rejected() };
                return Routed::Reject { reply: reply.encode(), reason: RejectReason::Full };
            };
            let old = SessionHandle { index, generation: self.sessions[index as usize].generation };
            self.forget(old);
            self.free(old);
            self.stats.evicted += 1;
            self.events.push_back(EndpointEvent::Reclaimed(old));
        }
        let index = self.take_session_slot();
        let slot = &mut self.sessions[index];
        slot.generation = slot.generation.wrapping_add(1);
        slot.live = true;
        slot.forgotten = false;
        slot.keys = [Some(key), None];
        slot.unready = Some(unready);
        slot.detached_since = None;
        let handle = SessionHandle { index: index as u32, generation: slot.generation };
        self.sessions_live += 1;
        self.unready_deadlines.set(handle.index, unready.deadline);
        self.keys.insert(key, handle.index);
        self.stats.sessions_created += 1;
        Routed::New { handle, hello, key }
    }

    /// A free session slot's number (a new slot if none is free); not yet marked live.
    fn take_session_slot(&mut self) -> usize {
        match self.sessions_free.pop() {
            Some(i) => i as usize,
            None => {
                self.sessions.push(SessionSlot {
                    generation: 0,
                    live: false,
                    forgotten: false,
                    keys: [None; 2],
                    unready: None,
                    detached_since: None,
                });
                reserve_for(&mut self.sessions_free, self.sessions.len());
                self.sessions.len() - 1
            }
        }
    }

    /// What the session made of a [`Resume`] routed to it. On
    /// [`ResumeOutcome::Refused`] (and on a hello the conduit rejected) the resume's source is
    /// charged a failure; a refusal returns the REJECTED reply to write before closing the
    /// link. On success the session's keys (the presented and the issued one) route to it.
    pub fn resume_outcome(
        &mut self,
        now: Instant,
        resume: &Resume,
        outcome: &ResumeOutcome,
    ) -> Option<[u8; HELLO_LEN]> {
        let now = self.clock.observe(now);
        match outcome {
            ResumeOutcome::Refused => {
                self.limiter.fail(now, resume.source);
                self.stats.rejected += 1;
                Some(ServerHello::rejected().encode())
            }
            ResumeOutcome::Linked { result: Err(_), .. } => {
                self.limiter.fail(now, resume.source);
                self.stats.rejected += 1;
                None
            }
            ResumeOutcome::Linked { issued, result: Ok(()), .. } => {
                let index = resume.handle.index;
                let slot = self.slot_mut(resume.handle)?;
                let attached = slot.detached_since.is_none();
                let restart = slot.unready.as_mut().map(|u| {
                    // A new link: the session handshake gets this link's deadline. It runs
                    // now if the endpoint sees the session attached (a resume superseding a
                    // live link), else from the `attached` report; the peer has shown the
                    // key, so a deadline left running through a detach (an unkeyed session's)
                    // stops until then.
                    u.deadline = resume.deadline;
                    u.source = resume.source;
                    u.resumes += 1;
                    u.keyed = true;
                    attached
                });
                let old = core::mem::replace(&mut slot.keys, [Some(resume.key), Some(*issued)]);
                match restart {
                    Some(true) => self.unready_deadlines.set(index, resume.deadline),
                    Some(false) => {
                        let _ = self.unready_deadlines.remove(index);
                    }
                    None => {}
                }
                for k in old.into_iter().flatten() {
                    if !k.ct_eq(&resume.key) && !k.ct_eq(issued) {
                        self.keys.remove(&k);
                    }
                }
                self.keys.insert(resume.key, index);
                self.keys.insert(*issued, index);
                self.stats.resumes_routed += 1;
                None
            }
        }
    }

    /// The owner of the session `resume` was routed to dropped it untried, because newer links
    /// for the session arrived before it could take it (a bounded queue of routed links: the
    /// newest attempt is the one the initiator waits on). Close the link without a reply:
    /// counted (`resumes_superseded`), not charged to its source, the session untouched.
    pub fn resume_superseded(&mut self, resume: &Resume) {
        let _ = resume;
        self.stats.resumes_superseded += 1;
    }

    /// A new session finished its session handshake. Returns `true` exactly once per
    /// session, if it is still live and was not yet reported (then hand it to the
    /// application); `false` for a stale handle (it expired: its owner ends it).
    pub fn session_ready(&mut self, handle: SessionHandle) -> bool {
        let Some(slot) = self.slot_mut(handle) else { return false };
        if slot.unready.take().is_none() {
            return false;
        }
        self.unready_deadlines.remove(handle.index);
        self.stats.sessions_ready += 1;
        true
    }

    /// The session lost its link at `since` (its conduit's
    /// [`detached_since`](Conduit::detached_since)). The handshake deadline of an unready
    /// session whose peer holds the key stops running until it attaches again. May evict the session detached longest past
    /// `max_detached_sessions` ([`EndpointEvent::Evicted`]). Idempotent.
    pub fn detached(&mut self, handle: SessionHandle, since: Instant) {
        let Some(slot) = self.slot_mut(handle) else { return };
        if slot.detached_since.is_some() {
            return;
        }
        slot.detached_since = Some(since);
        if slot.unready.is_some_and(|u| u.keyed) {
            self.unready_deadlines.remove(handle.index);
        }
        self.detached.set(handle.index, since);
        while self.detached.len() > self.config.max_detached_sessions as usize {
            let Some((_, index)) = self.detached.peek() else { break };
            let old = SessionHandle { index, generation: self.sessions[index as usize].generation };
            self.forget(old);
            self.stats.evicted += 1;
            self.events.push_back(EndpointEvent::Evicted(old));
        }
    }

    /// The session attached a link again (after [`resume_outcome`](Self::resume_outcome)
    /// reported the resume). An unready session's handshake deadline runs again, from the
    /// resuming link's arrival. Idempotent.
    pub fn attached(&mut self, handle: SessionHandle) {
        let Some(slot) = self.slot_mut(handle) else { return };
        if slot.detached_since.take().is_some() {
            let unready = slot.unready;
            self.detached.remove(handle.index);
            if let Some(u) = unready.filter(|u| u.keyed) {
                self.unready_deadlines.set(handle.index, u.deadline);
            }
        }
    }

    /// The session received a frame from its peer (its conduit's
    /// [`items_received`](Conduit::items_received) is non-zero). An initiator sends frames
    /// only after the ServerHello, so the peer holds the session's key and can resume: from
    /// now on an unready session's handshake deadline runs only while it has a link (see
    /// [`EndpointConfig::handshake_timeout`]). Call it when it first happens, before
    /// reporting a detach seen at the same time. Idempotent.
    pub fn peer_spoke(&mut self, handle: SessionHandle) {
        let Some(slot) = self.slot_mut(handle) else { return };
        let detached = slot.detached_since.is_some();
        let Some(u) = slot.unready.as_mut().filter(|u| !u.keyed) else { return };
        u.keyed = true;
        if detached {
            self.unready_deadlines.remove(handle.index);
        }
    }

    /// The session ended on its own, and is freed later: its handshake deadline no longer
    /// applies and it no longer counts as detached. (Its keys keep routing to it until
    /// [`free`](Self::free), and it refuses them.)
    pub fn session_ended(&mut self, handle: SessionHandle) {
        if let Some(slot) = self.slot_mut(handle) {
            slot.unready = None;
        }
        self.attached(handle);
        self.unready_deadlines.remove(handle.index);
    }

    /// Forget an unready session whose handshake will not finish, charge its latest
    /// link's source and report it ([`EndpointEvent::SessionHandshakeExpired`]).
    fn expire_unready(&mut self, now: Instant, handle: SessionHandle) {
        let source = self.slot(handle).and_then(|s| s.unready).map(|u| u.source);
        self.forget(handle);
        if let Some(source) = source {
            self.limiter.fail(now, source);
            self.stats.session_handshakes_expired += 1;
            self.events.push_back(EndpointEvent::SessionHandshakeExpired(handle));
        }
    }

    /// Stop routing to the session behind `handle`: its keys, deadline and detached entry go,
    /// and it no longer counts as live; the slot stays reserved until `free`.
    fn forget(&mut self, handle: SessionHandle) {
        let Some(slot) = self.slot_mut(handle) else { return };
        slot.forgotten = true;
        slot.unready = None;
        slot.detached_since = None;
        let keys = core::mem::take(&mut slot.keys);
        for k in keys.into_iter().flatten() {
            self.keys.remove(&k);
        }
        self.detached.remove(handle.index);
        self.unready_deadlines.remove(handle.index);
        self.sessions_live -= 1;
    }

    /// Release the session behind `handle` (call once it ended, also after
    /// [`EndpointEvent::Evicted`] and [`EndpointEvent::SessionHandshakeExpired`]; its owner
    /// drops it). Its keys stop routing; the handle becomes stale and its slot is reused. A
    /// stale handle is ignored.
    pub fn free(&mut self, handle: SessionHandle) {
        self.forget(handle);
        let Some(slot) =
            self.sessions.get_mut(handle.index as usize).filter(|s| s.live && s.generation == handle.generation)
        else {
            return;
        };
        slot.live = false;
        slot.forgotten = false;
        self.sessions_free.push(handle.index);
    }

    /// The earliest endpoint deadline: pending links' handshakes and new sessions' session
    /// handshakes. Sessions have their own `poll_timeout` besides.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let a = self.pending_deadlines.peek().map(|(t, _)| t);
        let b = self.unready_deadlines.peek().map(|(t, _)| t);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fire the deadlines due at `now`: pending links that missed their handshake deadline
    /// and new sessions not ready by theirs. Each is reported by
    /// [`poll_event`](Self::poll_event).
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        // Pending handshakes past their deadline (H7).
        while let Some((at, index)) = self.pending_deadlines.peek() {
            if at > now {
                break;
            }
            let link = PendingLink { index, generation: self.pending[index as usize].generation };
            if let Some((source, _)) = self.take_pending(link) {
                self.stats.handshakes_expired += 1;
                self.limiter.fail(now, source);
                self.events.push_back(EndpointEvent::HandshakeExpired(link));
            }
            self.pending_deadlines.remove(index);
        }
        // New sessions past their link's handshake deadline: forgotten, charged.
        while let Some((at, index)) = self.unready_deadlines.peek() {
            if at > now {
                break;
            }
            let handle = SessionHandle { index, generation: self.sessions[index as usize].generation };
            self.expire_unready(now, handle);
            self.unready_deadlines.remove(index);
        }
    }

    /// The next endpoint event. Call until `None` after every other call.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        self.events.pop_front()
    }
}

/// Make room in `free` for `slots` entries.
fn reserve_for(free: &mut Vec<u32>, slots: usize) {
    if free.capacity() < slots {
        free.reserve(slots - free.len());
    }
}

fn reject(reason: RejectReason) -> Routed {
    Routed::Reject { reply: ServerHello::rejected().encode(), reason }
}

impl Conduit {
    /// Acceptor: whether a resume opening with `hello` would be accepted now (the check
    /// [`Resume::apply`] makes before it attaches the link): the session has not ended and
    /// the hello presents its current key, or its previous one under the rotation rule (both
    /// compared in constant time). Changes nothing: call it before a new link may supersede
    /// the live one.
    #[must_use]
    pub fn accepts_resume(&self, hello: &ClientHello) -> bool {
        !self.is_ended() && hello.resume_key.is_some_and(|k| accepts_resume(self, &k, hello))
    }
}

/// Whether `conduit` would accept the resume `hello` presenting `key`: its current key, or
/// the key the peer held before until the current one has been used (both compared in
/// constant time). A hello with the previous key must also present a position no older than
/// what the conduit has trimmed: a genuine retry after a lost ServerHello presents the
/// position its first attempt presented (nothing can have been acked since: any frame would
/// have retired the previous key), so an older one is a stale duplicate from a link the client
/// abandoned, not a peer that lost state.
fn accepts_resume(c: &Conduit, key: &ResumeKey, hello: &ClientHello) -> bool {
    let current = c.key.is_some_and(|k| k.ct_eq(key));
    let previous = c.previous_key.is_some_and(|k| k.ct_eq(key));
    if !c.ever_attached || !(current | previous) {
        return false;
    }
    current || crate::conduit::serial::count_of(hello.last_received, c.sent).is_some_and(|n| n >= c.acked)
}

#[cfg(test)]
mod tests;
