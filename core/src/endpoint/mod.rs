//! The acceptor-side endpoint: reads the first message of every incoming link and routes it to
//! a new session, to an existing session (resume by key), or to a REJECTED reply. Owns the
//! sessions, in slots allocated at construction. See [`Endpoint`].

mod key_index;
mod source_limiter;

use alloc::vec::Vec;

use crate::conduit::{ConfigError, Role, SessionEnd};
use crate::session::{Session, SessionConfig};
use crate::time::{Duration, Instant, MonotonicNow};
use crate::wire::{ClientHello, ResumeKey, ServerHello, WireError, HELLO_LEN};
use key_index::KeyIndex;
use source_limiter::SourceLimiter;

/// Limits of an endpoint. The session's `conduit.recovery_timeout` is the `resume_window`
/// after which a detached session is freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[non_exhaustive]
pub struct EndpointConfig {
    /// Every session's configuration.
    pub session: SessionConfig,
    /// Sessions held at once (attached or detached); their buffers are allocated up front.
    /// Default 64.
    pub max_sessions: u32,
    /// Links waiting for their ClientHello at once; more are refused at once. Default 64.
    pub max_pending_handshakes: u32,
    /// Detached sessions kept at once; past it the oldest is evicted (session lost).
    /// Default 1024 (so, by default, `max_sessions` binds first).
    pub max_detached_sessions: u32,
    /// The ClientHello must arrive within this of the link's arrival, and a session that link
    /// creates must finish its session handshake (report [`SessionEvent::Ready`]) by the same
    /// deadline, else it is ended and freed
    /// ([`EndpointEvent::SessionHandshakeExpired`]). Default 10 s.
    ///
    /// [`SessionEvent::Ready`]: crate::session::SessionEvent::Ready
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
            max_sessions: 64,
            max_pending_handshakes: 64,
            max_detached_sessions: 1024,
            handshake_timeout: Duration::from_secs(10),
            failure_budget: 16,
            failure_period: Duration::from_secs(10),
            tracked_sources: 256,
        }
    }
}

/// Names a session slot and its generation: a handle to a session that has since been freed
/// (and its slot reused) is detected, never aliased.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
pub struct SessionHandle {
    /// Slot number.
    pub index: u32,
    /// Generation of the slot when the handle was made.
    pub generation: u32,
}

/// Names a link waiting for its ClientHello.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// The source caused too many failed handshakes or resumes lately: close it unread.
    RateLimited,
    /// The first message was not a valid ClientHello (H2, H4, H5, H6, H10): close it.
    BadHello(WireError),
    /// The handle is stale (expired or already routed).
    UnknownPending,
}

impl core::fmt::Display for LinkRefusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TooManyPendingHandshakes => f.write_str("too many links waiting for their handshake"),
            Self::RateLimited => f.write_str("too many failed handshakes or resumes from this source"),
            Self::BadHello(e) => write!(f, "bad ClientHello: {e}"),
            Self::UnknownPending => f.write_str("stale pending-link handle"),
        }
    }
}

impl core::error::Error for LinkRefusal {}

/// Where a ClientHello was routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routed {
    /// The link now belongs to this session: keep feeding its messages to the session, with
    /// this link id. For a resume the previous link (if any) is superseded.
    Session {
        /// The session.
        handle: SessionHandle,
        /// The link's id within the session.
        link: crate::conduit::LinkId,
        /// A session created for this link (a fresh ClientHello).
        new: bool,
    },
    /// Unknown or expired key, or no room for a new session: write these bytes (a REJECTED
    /// ServerHello, identical for every cause) after a length prefix, then close the link.
    Reject([u8; HELLO_LEN]),
}

/// Something the driver must act on. Drain with [`Endpoint::poll_event`].
///
/// Deliberately not `#[non_exhaustive]`: a driver must act on every event, so a new one is a
/// breaking change that the compiler points out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointEvent {
    /// A pending link missed the handshake deadline (H7): close it; its slot is free.
    HandshakeExpired(PendingLink),
    /// A detached session was evicted (its conduit ended with [`SessionEnd::Evicted`]): to
    /// respect `max_detached_sessions` (drain its events, then [`free`](Endpoint::free) it), or
    /// to make room for a new session when every slot was taken (then it is already freed and
    /// the handle is stale: stop driving it).
    Evicted(SessionHandle),
    /// A session created by a fresh ClientHello finished its session handshake (it reported
    /// [`SessionEvent::Ready`](crate::session::SessionEvent::Ready)): hand it to the
    /// application now. Reported once per session, never for a session that expired.
    SessionReady(SessionHandle),
    /// A session created by a fresh ClientHello was not ready by the handshake deadline of the
    /// link that created it: it is already ended ([`SessionEnd::Evicted`]) and freed, its keys
    /// no longer route, the handle is stale, and its source was charged a failure. Close its
    /// links and stop driving it; the application never saw it.
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
    /// The handshake deadline of the link that created it.
    deadline: Instant,
    /// That link's source, charged if the deadline passes.
    source: u64,
}

#[derive(Debug)]
struct SessionSlot {
    generation: u32,
    live: bool,
    /// Keys indexed for this slot (the presented and the issued one).
    keys: [Option<ResumeKey>; 2],
    /// Set while a session created by a fresh ClientHello has not been reported ready.
    unready: Option<Unready>,
    session: Session,
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
    /// Sessions created.
    pub sessions_created: u64,
    /// New sessions reported ready ([`EndpointEvent::SessionReady`]).
    pub sessions_ready: u64,
    /// New sessions ended and freed because they were not ready by their link's handshake
    /// deadline ([`EndpointEvent::SessionHandshakeExpired`]).
    pub session_handshakes_expired: u64,
    /// Resumes routed to a session.
    pub resumes_routed: u64,
    /// REJECTED replies sent (unknown/expired key or no room).
    pub rejected: u64,
    /// Detached sessions evicted.
    pub evicted: u64,
    /// Sessions live now.
    pub sessions_live: u64,
    /// Links pending now.
    pub pending_links: u64,
}

/// The acceptor side of sotto: many sessions behind one listener.
///
/// # Contract
///
/// Same shape as [`Session`]'s: for every incoming link call
/// [`accept_link`](Self::accept_link) (refused at once if too many are pending), then feed its
/// first link message to [`route`](Self::route), which returns where the link goes. From then
/// on the link belongs to that session: drive it through [`session_mut`](Self::session_mut)
/// exactly as a standalone [`Session`] (its events, transmits and timers). Call
/// [`handle_timeout`](Self::handle_timeout) at [`poll_timeout`](Self::poll_timeout) for the
/// endpoint's own deadlines (handshakes, new sessions' session handshakes, evictions) and
/// drain [`poll_event`](Self::poll_event), also after feeding a session that is not ready
/// yet: a new session is the application's once [`EndpointEvent::SessionReady`] reports it,
/// and is ended and freed by the endpoint
/// ([`EndpointEvent::SessionHandshakeExpired`]) if its session handshake is not done by the
/// handshake deadline of the link that created it. When a session's conduit reports
/// [`Event::Ended`](crate::Event::Ended) and its events are drained, call
/// [`free`](Self::free): its slot (buffers kept) is reused by a later session, and old
/// handles to it become stale.
///
/// Every table is sized in [`new`](Self::new): sessions (with their replay rings and
/// connection tables), pending links, the key index and the per-source limiter. Nothing is
/// allocated afterwards.
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    pending: Vec<PendingSlot>,
    sessions: Vec<SessionSlot>,
    keys: KeyIndex,
    limiter: SourceLimiter,
    expired_cursor: usize,
    clock: MonotonicNow,
    /// A detached session freed to make room for a new one, not yet reported.
    reclaimed: Option<SessionHandle>,
    stats: EndpointStats,
}

impl Endpoint {
    /// Build an endpoint; allocates every session slot now. `hello_metadata` goes in each
    /// session's HelloYourself.
    pub fn new(config: EndpointConfig, hello_metadata: &[u8]) -> Result<Self, ConfigError> {
        config.session.validate()?;
        if config.max_sessions == 0 || config.max_pending_handshakes == 0 {
            return Err(ConfigError::SessionLimits);
        }
        let mut sessions = Vec::with_capacity(config.max_sessions as usize);
        for _ in 0..config.max_sessions {
            sessions.push(SessionSlot {
                generation: 0,
                live: false,
                keys: [None; 2],
                unready: None,
                session: Session::new(Role::Acceptor, config.session, hello_metadata)?,
            });
        }
        let pending = alloc::vec![
            PendingSlot { generation: 0, live: false, source: 0, deadline: Instant::ZERO };
            config.max_pending_handshakes as usize
        ];
        Ok(Self {
            config,
            pending,
            sessions,
            keys: KeyIndex::new(config.max_sessions as usize * 2),
            limiter: SourceLimiter::new(config.tracked_sources as usize, config.failure_budget, config.failure_period),
            expired_cursor: 0,
            clock: MonotonicNow::default(),
            reclaimed: None,
            stats: EndpointStats::default(),
        })
    }

    /// Grow every session slot's replay ring to its caps now (see
    /// [`Session::reserve_buffers`]): for tests that count allocations from the start.
    pub fn reserve_buffers(&mut self) {
        for slot in &mut self.sessions {
            slot.session.reserve_buffers();
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
        s.sessions_live = self.sessions.iter().filter(|s| s.live).count() as u64;
        s.pending_links = self.pending.iter().filter(|p| p.live).count() as u64;
        s
    }

    /// A new link arrived from `source` (a hash of the peer address the driver chooses; 0 if
    /// unknown). Returns its pending handle, or a refusal: close the link unread.
    pub fn accept_link(&mut self, now: Instant, source: u64) -> Result<PendingLink, LinkRefusal> {
        let now = self.clock.observe(now);
        if !self.limiter.allowed(now, source) {
            self.stats.links_refused += 1;
            return Err(LinkRefusal::RateLimited);
        }
        let Some(index) = self.pending.iter().position(|p| !p.live) else {
            self.stats.links_refused += 1;
            return Err(LinkRefusal::TooManyPendingHandshakes);
        };
        let slot = &mut self.pending[index];
        slot.generation = slot.generation.wrapping_add(1);
        slot.live = true;
        slot.source = source;
        slot.deadline = now.saturating_add(self.config.handshake_timeout);
        Ok(PendingLink { index: index as u32, generation: slot.generation })
    }

    /// A pending link closed before its ClientHello arrived: free its slot.
    pub fn pending_closed(&mut self, link: PendingLink) {
        if let Some(p) = self.pending_slot(link) {
            p.live = false;
        }
    }

    fn pending_slot(&mut self, link: PendingLink) -> Option<&mut PendingSlot> {
        self.pending.get_mut(link.index as usize).filter(|p| p.live && p.generation == link.generation)
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
        let Some(p) = self.pending_slot(link) else { return Err(LinkRefusal::UnknownPending) };
        p.live = false;
        let source = p.source;
        let deadline = p.deadline;
        let hello = match ClientHello::decode(first_message) {
            Ok(h) => h,
            Err(e) => {
                self.stats.bad_hellos += 1;
                self.limiter.fail(now, source);
                return Err(LinkRefusal::BadHello(e));
            }
        };
        match hello.resume_key {
            None => self.route_fresh(now, Unready { deadline, source }, &hello, fresh_key),
            Some(key) => self.route_resume(now, source, key, &hello, fresh_key),
        }
    }

    fn reject(&mut self) -> Result<Routed, LinkRefusal> {
        self.stats.rejected += 1;
        Ok(Routed::Reject(ServerHello::rejected().encode()))
    }

    fn route_fresh(
        &mut self,
        now: Instant,
        unready: Unready,
        hello: &ClientHello,
        fresh_key: ResumeKey,
    ) -> Result<Routed, LinkRefusal> {
        let index = match self.sessions.iter().position(|s| !s.live) {
            Some(i) => i,
            None => match self.oldest_detached() {
                // Every slot is taken: a new session beats the oldest abandoned one.
                Some(i) => {
                    let old = SessionHandle { index: i as u32, generation: self.sessions[i].generation };
                    self.free(now, old);
                    self.stats.evicted += 1;
                    self.reclaimed = Some(old);
                    i
                }
                None => return self.reject(),
            },
        };
        let slot = &mut self.sessions[index];
        slot.generation = slot.generation.wrapping_add(1);
        slot.live = true;
        slot.unready = Some(unready);
        slot.session.reset();
        let (link, result) = slot.session.link_up_with_hello(now, fresh_key, hello);
        let handle = SessionHandle { index: index as u32, generation: slot.generation };
        if result.is_ok() {
            slot.keys = [Some(fresh_key), None];
            self.keys.insert(fresh_key, index as u32);
        }
        self.stats.sessions_created += 1;
        Ok(Routed::Session { handle, link, new: true })
    }

    fn route_resume(
        &mut self,
        now: Instant,
        source: u64,
        key: ResumeKey,
        hello: &ClientHello,
        fresh_key: ResumeKey,
    ) -> Result<Routed, LinkRefusal> {
        let Some(index) = self.keys.get(&key) else {
            self.limiter.fail(now, source);
            return self.reject();
        };
        let index = index as usize;
        let slot = &mut self.sessions[index];
        if !slot.live || slot.session.is_ended() || !accepts_resume(&slot.session, &key, hello) {
            // A key the session no longer accepts (its previous key, retired once the newer
            // one was used), or a stale duplicate of an earlier resume, is refused here, before
            // the link is handed over: handing it over would supersede the live link first
            // (R15, R16) or end the session as inconsistent. Same reply as an unknown key.
            self.limiter.fail(now, source);
            return self.reject();
        }
        // The session's conduit is the authority on which keys are valid (it retires the
        // previous key once the newer one is used); the index only routes.
        //
        // A resume with the previous key comes from a client that may or may not hold the
        // current key: its ServerHello was lost, or this hello is a stale duplicate from a link
        // the client abandoned after it resumed elsewhere. Issue the current key again, so that
        // whichever it holds, the session accepts it next time (a new key here would leave a
        // client holding the current one REJECTED).
        let fresh_key = match slot.session.conduit.key {
            Some(current) if !current.ct_eq(&key) => current,
            _ => fresh_key,
        };
        let (link, result) = slot.session.link_up_with_hello(now, fresh_key, hello);
        let handle = SessionHandle { index: index as u32, generation: slot.generation };
        if result.is_ok() {
            let old = slot.keys;
            slot.keys = [Some(key), Some(fresh_key)];
            for k in old.into_iter().flatten() {
                if !k.ct_eq(&key) {
                    self.keys.remove(&k);
                }
            }
            self.keys.insert(key, index as u32);
            self.keys.insert(fresh_key, index as u32);
            self.stats.resumes_routed += 1;
        } else {
            self.limiter.fail(now, source);
            self.stats.rejected += 1;
        }
        Ok(Routed::Session { handle, link, new: false })
    }

    /// The session behind `handle`, unless the handle is stale.
    #[must_use]
    pub fn session(&self, handle: SessionHandle) -> Option<&Session> {
        self.sessions
            .get(handle.index as usize)
            .filter(|s| s.live && s.generation == handle.generation)
            .map(|s| &s.session)
    }

    /// The session behind `handle`, to drive it; `None` if the handle is stale.
    #[must_use]
    pub fn session_mut(&mut self, handle: SessionHandle) -> Option<&mut Session> {
        self.sessions
            .get_mut(handle.index as usize)
            .filter(|s| s.live && s.generation == handle.generation)
            .map(|s| &mut s.session)
    }

    /// Every live session's handle, in slot order.
    pub fn handles(&self) -> impl Iterator<Item = SessionHandle> + '_ {
        self.sessions
            .iter()
            .enumerate()
            .filter(|(_, s)| s.live)
            .map(|(i, s)| SessionHandle { index: i as u32, generation: s.generation })
    }

    /// Free the session behind `handle` (call once its conduit ended and its events are
    /// drained; a live session is ended first with [`SessionEnd::Evicted`]). Its keys stop
    /// routing; the handle becomes stale.
    pub fn free(&mut self, now: Instant, handle: SessionHandle) {
        let Some(slot) =
            self.sessions.get_mut(handle.index as usize).filter(|s| s.live && s.generation == handle.generation)
        else {
            return;
        };
        if !slot.session.is_ended() {
            slot.session.conduit_end(now, SessionEnd::Evicted);
        }
        slot.live = false;
        slot.unready = None;
        for k in slot.keys.into_iter().flatten() {
            self.keys.remove(&k);
        }
        slot.keys = [None; 2];
        slot.generation = slot.generation.wrapping_add(1);
    }

    /// The live, detached session that has been detached longest.
    fn oldest_detached(&self) -> Option<usize> {
        self.sessions
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.session.conduit().detached_since().filter(|_| s.live).map(|t| (t, i)))
            .min()
            .map(|(_, i)| i)
    }

    /// The earliest endpoint deadline: pending links' handshakes and new sessions' session
    /// handshakes. Sessions have their own [`Session::poll_timeout`] besides.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let links = self.pending.iter().filter(|p| p.live).map(|p| p.deadline);
        let sessions = self.sessions.iter().filter(|s| s.live).filter_map(|s| s.unready.map(|u| u.deadline));
        links.chain(sessions).min()
    }

    /// Expire pending handshakes and unready new sessions due at `now` and evict detached
    /// sessions beyond `max_detached_sessions`. Report through [`poll_event`](Self::poll_event).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock.observe(now);
    }

    /// The next endpoint event. Call until `None` after `handle_timeout`, `route` and
    /// `free`, whenever a session detaches, and after feeding a session that has not been
    /// reported ready (so that [`EndpointEvent::SessionReady`] comes without delay).
    #[must_use]
    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        let now = self.clock.get();
        if let Some(h) = self.reclaimed.take() {
            return Some(EndpointEvent::Evicted(h));
        }
        // Pending handshakes past their deadline (H7).
        let n = self.pending.len();
        for step in 0..n {
            let i = (self.expired_cursor + step) % n;
            let p = &mut self.pending[i];
            if p.live && p.deadline <= now {
                p.live = false;
                self.expired_cursor = (i + 1) % n;
                self.stats.handshakes_expired += 1;
                self.limiter.fail(now, p.source);
                return Some(EndpointEvent::HandshakeExpired(PendingLink {
                    index: i as u32,
                    generation: p.generation,
                }));
            }
        }
        // New sessions: ready (reported), ended by themselves (forgotten: the driver sees the
        // end), or past their link's handshake deadline (ended, freed, charged).
        for i in 0..self.sessions.len() {
            let slot = &mut self.sessions[i];
            let (true, Some(u)) = (slot.live, slot.unready) else { continue };
            let handle = SessionHandle { index: i as u32, generation: slot.generation };
            if slot.session.is_ready() {
                slot.unready = None;
                self.stats.sessions_ready += 1;
                return Some(EndpointEvent::SessionReady(handle));
            }
            if slot.session.is_ended() {
                slot.unready = None;
            } else if u.deadline <= now {
                self.free(now, handle);
                self.limiter.fail(now, u.source);
                self.stats.session_handshakes_expired += 1;
                return Some(EndpointEvent::SessionHandshakeExpired(handle));
            }
        }
        // Detached sessions beyond the cap: evict the oldest (L2).
        let mut detached = 0usize;
        let mut oldest: Option<(Instant, usize)> = None;
        for (i, s) in self.sessions.iter().enumerate() {
            if let (true, Some(since)) = (s.live, s.session.conduit().detached_since()) {
                detached += 1;
                if oldest.is_none_or(|(t, _)| since < t) {
                    oldest = Some((since, i));
                }
            }
        }
        if detached > self.config.max_detached_sessions as usize {
            if let Some((_, i)) = oldest {
                let slot = &mut self.sessions[i];
                slot.session.conduit_end(now, SessionEnd::Evicted);
                self.stats.evicted += 1;
                return Some(EndpointEvent::Evicted(SessionHandle { index: i as u32, generation: slot.generation }));
            }
        }
        None
    }
}

/// Whether `session` would accept the resume `hello` presenting `key`: its current key, or
/// the key the peer held before until the current one has been used (both compared in
/// constant time). A hello with the previous key must also present a position no older than
/// what the session has trimmed: a genuine retry after a lost ServerHello presents the
/// position its first attempt presented (nothing can have been acked since: any frame would
/// have retired the previous key), so an older one is a stale duplicate from a link the client
/// abandoned, not a peer that lost state.
fn accepts_resume(session: &Session, key: &ResumeKey, hello: &ClientHello) -> bool {
    let c = &session.conduit;
    let current = c.key.is_some_and(|k| k.ct_eq(key));
    let previous = c.previous_key.is_some_and(|k| k.ct_eq(key));
    if !c.ever_attached || !(current | previous) {
        return false;
    }
    current || crate::conduit::serial::count_of(hello.last_received, c.sent).is_some_and(|n| n >= c.acked)
}

#[cfg(test)]
mod tests;
