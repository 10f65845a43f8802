//! Where a session's core lives, and how its handles and its driver reach it.
//!
//! - An initiator's [`Session`] is owned: [`OwnHome`], one mutex per session holding the
//!   session and its [`SessState`].
//! - An acceptor's sessions live in the core [`Endpoint`] (which routes links to them by
//!   resume key and enforces the acceptor's limits): [`EpShared`], one mutex per acceptor
//!   holding the endpoint and, per session slot, its [`SessState`] and a mailbox for the next
//!   link. Each session is reached through [`EpHome`] (the shared endpoint plus its handle).
//!
//! Handles see both through the object-safe [`SessionHome`], so application types are not
//! generic over the stream or the runtime. The driver sees them through [`SessDriverHost`].

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use sotto_proto::conduit::{InputError, Observed};
use sotto_proto::endpoint::{Endpoint, EndpointEvent, SessionHandle as EpHandle};
use sotto_proto::session::{Session, SessionConfig};
use sotto_proto::stream::{LendingBatch, Messages};
use sotto_proto::wire::ClientHello;
use sotto_proto::{Conduit, ConduitConfig, Event, Instant, LinkId, ResumeKey, Role, SessionEnd};

use super::state::{self, SessState};
use crate::host::{Host, Locked};
use crate::lean_mutex::{LeanGuard, LeanMutex};
use crate::shared::{Clock, Common};

/// Where a session lives, as its handles and its driver reach it: an enum rather than a
/// trait object, so that `lock` inlines into the send path (no indirect call, and the
/// variant is known to `SessLock`'s matches that follow).
#[derive(Clone)]
pub(crate) enum Home {
    /// An initiator's session.
    Own(Arc<OwnHome>),
    /// One session of an acceptor's endpoint.
    Ep(Arc<EpShared>, EpHandle),
}

impl Home {
    /// Lock the session and its state.
    #[inline]
    pub(crate) fn lock(&self) -> SessLock<'_> {
        match self {
            Self::Own(h) => SessLock::Own(h.inner.lock()),
            Self::Ep(ep, handle) => SessLock::Ep(ep.lock(), *handle),
        }
    }

    /// The session's clock.
    #[inline]
    pub(crate) fn clock(&self) -> &Clock {
        match self {
            Self::Own(h) => &h.clock,
            Self::Ep(ep, _) => &ep.clock,
        }
    }
}

/// An initiator's session and its state.
#[derive(Debug)]
pub(crate) struct Owned {
    session: Session,
    state: SessState,
}

/// An initiator's session behind its own lock.
#[derive(Debug)]
pub(crate) struct OwnHome {
    inner: LeanMutex<Owned>,
    clock: Clock,
}

impl OwnHome {
    pub(crate) fn new(session: Session, state: SessState, clock: Clock) -> Self {
        Self { inner: LeanMutex::new(Owned { session, state }), clock }
    }
}

/// One endpoint session slot's driver-side state.
pub(crate) struct Slot {
    /// The generation of the endpoint handle this state belongs to.
    generation: u32,
    pub(crate) state: SessState,
    /// The next link (a boxed `(S, LinkId)`), attached by the endpoint, for the driver.
    pub(crate) mailbox: Option<Box<dyn Any + Send>>,
}

/// Everything behind an acceptor's lock.
pub(crate) struct EpHost {
    pub(crate) endpoint: Endpoint,
    slots: Vec<Slot>,
    /// Stands in for a freed session (a stale handle): ended, so every command fails.
    orphan: (Session, SessState),
}

impl EpHost {
    /// The session behind `h` and its state (the ended orphan if `h` is stale).
    pub(crate) fn parts(&mut self, h: EpHandle) -> (&mut Session, &mut SessState) {
        let live = self.slots.get(h.index as usize).is_some_and(|s| s.generation == h.generation);
        match self.endpoint.session_mut(h) {
            Some(s) if live => (s, &mut self.slots[h.index as usize].state),
            _ => (&mut self.orphan.0, &mut self.orphan.1),
        }
    }

    fn parts_ref(&self, h: EpHandle) -> (&Session, &SessState) {
        let live = self.slots.get(h.index as usize).is_some_and(|s| s.generation == h.generation);
        match self.endpoint.session(h) {
            Some(s) if live => (s, &self.slots[h.index as usize].state),
            _ => (&self.orphan.0, &self.orphan.1),
        }
    }

    /// The slot of a live handle.
    pub(crate) fn slot(&mut self, h: EpHandle) -> Option<&mut Slot> {
        self.slots.get_mut(h.index as usize).filter(|s| s.generation == h.generation)
    }

    /// Start the state of a session the endpoint just created.
    pub(crate) fn start(&mut self, h: EpHandle) -> Option<&mut Slot> {
        let slot = self.slots.get_mut(h.index as usize)?;
        slot.state.reset();
        slot.mailbox = None;
        slot.generation = h.generation;
        Some(slot)
    }

    /// Drain the endpoint's events: evicted sessions' drivers are woken to see their end;
    /// expired handshakes need nothing (each pending link has its own timer).
    pub(crate) fn drain_events(&mut self) {
        while let Some(e) = self.endpoint.poll_event() {
            if let EndpointEvent::Evicted(h) = e {
                if let Some(slot) = self.slot(h) {
                    slot.state.common.wake_driver();
                }
            }
        }
    }

    /// Free the session once both its driver and its handle are gone.
    fn release_if_done(&mut self, now: Instant, h: EpHandle) {
        let Some(slot) = self.slot(h) else { return };
        if slot.state.common.driver_done && slot.state.common.handle_dropped {
            slot.mailbox = None;
            slot.state.reset();
            self.endpoint.free(now, h);
        }
    }
}

/// An acceptor's endpoint behind one lock.
pub(crate) struct EpShared {
    inner: LeanMutex<EpHost>,
    pub(crate) clock: Clock,
}

impl EpShared {
    pub(crate) fn new(
        endpoint: Endpoint,
        config: &crate::Config,
        clock: Clock,
    ) -> Result<Self, sotto_proto::conduit::ConfigError> {
        let slots = (0..endpoint.config().max_sessions)
            .map(|_| Slot { generation: 0, state: SessState::new(config), mailbox: None })
            .collect();
        // The smallest configuration a session accepts: the orphan only ever says "ended".
        let tiny = {
            let mut patched = SessionConfig::default();
            patched.conduit = {
                let mut patched = ConduitConfig::default();
                patched.max_frame_len = 64;
                patched.replay_bytes = 64;
                patched.replay_frames = 1;
                patched
            };
            patched.max_connections = 1;
            patched.max_pending_opens = 1;
            patched
        };
        let mut orphan = Session::new(Role::Acceptor, tiny, &[])?;
        orphan.conduit_end(clock.now(), SessionEnd::Evicted);
        let mut orphan_state = SessState::new(config);
        orphan_state.common.driver_done = true;
        orphan_state.common.handle_dropped = true;
        Ok(Self { inner: LeanMutex::new(EpHost { endpoint, slots, orphan: (orphan, orphan_state) }), clock })
    }

    pub(crate) fn lock(&self) -> LeanGuard<'_, EpHost> {
        self.inner.lock()
    }
}

/// A locked session, wherever it lives.
pub(crate) enum SessLock<'a> {
    /// An initiator's.
    Own(LeanGuard<'a, Owned>),
    /// One of an acceptor's.
    Ep(LeanGuard<'a, EpHost>, EpHandle),
}

impl SessLock<'_> {
    /// The session and its state.
    pub(crate) fn parts(&mut self) -> (&mut Session, &mut SessState) {
        match self {
            Self::Own(g) => {
                let g = &mut **g;
                (&mut g.session, &mut g.state)
            }
            Self::Ep(g, h) => g.parts(*h),
        }
    }

    /// The session and its state, read-only.
    pub(crate) fn parts_ref(&self) -> (&Session, &SessState) {
        match self {
            Self::Own(g) => (&g.session, &g.state),
            Self::Ep(g, h) => g.parts_ref(*h),
        }
    }

    /// The application dropped its session handle (`handle_dropped` is set): free the
    /// endpoint slot if the driver is gone too.
    pub(crate) fn release_if_done(&mut self, now: Instant) {
        if let Self::Ep(g, h) = self {
            g.release_if_done(now, *h);
        }
    }

    fn take_link<S: 'static>(&mut self) -> Option<(S, LinkId)> {
        let Self::Ep(g, h) = self else { return None };
        let boxed = g.slot(*h)?.mailbox.take()?;
        boxed.downcast::<(S, LinkId)>().ok().map(|b| *b)
    }

    /// After a link went down: the endpoint may evict detached sessions now.
    fn detached(&mut self) {
        if let Self::Ep(g, _) = self {
            g.drain_events();
        }
    }
}

/// After one input: write the frames it made due, if any, and return the next event.
fn light_drain(
    s: &mut Session,
    st: &mut SessState,
    batch: &mut LendingBatch<Vec<u8>>,
    now: Instant,
    link: LinkId,
) -> Option<Event> {
    if s.conduit().current_link() == Some(link) && s.conduit().has_transmit() {
        let _ = batch.fill(s, now);
    }
    state::poll_event(s, st)
}

/// The driver's view of a session: its home, and the stream type its links carry.
pub(crate) struct SessDriverHost<S> {
    home: Home,
    _stream: PhantomData<fn() -> S>,
}

impl<S> SessDriverHost<S> {
    pub(crate) fn new(home: Home) -> Self {
        Self { home, _stream: PhantomData }
    }
}

/// A locked session, as the driver holds it.
pub(crate) struct SessGuard<'a, S> {
    lock: SessLock<'a>,
    _stream: PhantomData<fn() -> S>,
}

impl<S: 'static> Host<S> for SessDriverHost<S> {
    type Guard<'a> = SessGuard<'a, S>;

    fn lock(&self) -> SessGuard<'_, S> {
        SessGuard { lock: self.home.lock(), _stream: PhantomData }
    }

    fn clock(&self) -> &Clock {
        self.home.clock()
    }
}

impl<S: 'static> Locked<S> for SessGuard<'_, S> {
    fn begin(&mut self, waker: &std::task::Waker, now: Instant) -> bool {
        let (s, st) = self.lock.parts();
        if !st.common.driver.as_ref().is_some_and(|w| w.will_wake(waker)) {
            st.common.driver = Some(waker.clone());
        }
        if s.poll_timeout().is_some_and(|t| t <= now) {
            s.handle_timeout(now);
        }
        st.common.handle_dropped
    }
    fn shrink_buffers(&mut self) {
        let (s, st) = self.lock.parts();
        let _ = s.shrink_buffers();
        for c in st.conns.values_mut() {
            c.release_arena();
        }
    }
    fn drain_round(
        &mut self,
        batch: &mut LendingBatch<Vec<u8>>,
        now: Instant,
        link: Option<LinkId>,
    ) -> (bool, Option<Event>) {
        let (s, st) = self.lock.parts();
        if !st.owed.is_empty() {
            state::flush_owed(s, st, now);
        }
        let filled = link.is_some() && s.conduit().current_link() == link && batch.fill(s, now).frames > 0;
        (filled, state::poll_event(s, st))
    }
    fn status(&self) -> (bool, Option<Instant>) {
        let s = self.lock.parts_ref().0;
        (s.is_ended(), s.poll_timeout())
    }
    fn common(&mut self) -> &mut Common {
        &mut self.lock.parts().1.common
    }
    fn conduit(&self) -> &Conduit {
        self.lock.parts_ref().0.conduit()
    }
    fn end(&mut self, now: Instant, reason: SessionEnd) {
        self.lock.parts().0.conduit_end(now, reason);
    }
    fn link_up(&mut self, now: Instant) -> LinkId {
        self.lock.parts().0.link_up(now, ResumeKey::ZERO)
    }
    fn link_up_with_hello(
        &mut self,
        now: Instant,
        key: ResumeKey,
        hello: &ClientHello,
    ) -> (LinkId, Result<(), InputError>) {
        self.lock.parts().0.link_up_with_hello(now, key, hello)
    }
    fn link_down(&mut self, now: Instant, link: LinkId) {
        self.lock.parts().0.link_down(now, link);
        self.lock.detached();
    }
    fn feed(
        &mut self,
        now: Instant,
        link: LinkId,
        msg: &[u8],
        chunk: &Bytes,
        batch: &mut LendingBatch<Vec<u8>>,
    ) -> Option<Event> {
        let (s, st) = self.lock.parts();
        state::feed(s, st, now, link, msg, chunk);
        light_drain(s, st, batch, now, link)
    }
    fn feed_run(
        &mut self,
        now: Instant,
        link: LinkId,
        msgs: &mut Messages<'_>,
        chunk: &Bytes,
        _batch: &mut LendingBatch<Vec<u8>>,
    ) -> Option<Event> {
        // One lookup of the session for the whole run, and the outputs drained once, after
        // it (the driver's full drain follows): every event a run of input can make is
        // edge-triggered or one per link (the conduit's queue of 8 cannot overflow), frames
        // due are coalesced (acks, grants), and once the core drops the link it answers
        // the rest of the run with `StaleLink`, so nothing is lost or taken from a dead link.
        let (s, st) = self.lock.parts();
        for msg in msgs {
            state::feed(s, st, now, link, msg, chunk);
        }
        None
    }
    fn observe(
        &mut self,
        now: Instant,
        link: LinkId,
        msg: &[u8],
        batch: &mut LendingBatch<Vec<u8>>,
    ) -> (Observed, Option<Event>) {
        let (s, st) = self.lock.parts();
        let observed = s.observe_message(now, link, msg).unwrap_or(Observed::Handled);
        (observed, light_drain(s, st, batch, now, link))
    }
    fn after_input(&mut self, batch: &mut LendingBatch<Vec<u8>>, now: Instant, link: LinkId) -> Option<Event> {
        let (s, st) = self.lock.parts();
        light_drain(s, st, batch, now, link)
    }
    fn fed(&mut self) {
        state::fed(self.lock.parts().1);
    }
    fn read_room(&mut self) -> usize {
        let st = self.lock.parts().1;
        if st.full_conns > 0 {
            0
        } else {
            st.tuning.feed_batch
        }
    }
    fn take_link(&mut self) -> Option<(S, LinkId)> {
        self.lock.take_link::<S>()
    }
    fn wake_senders(&mut self) {
        self.lock.parts().1.ring.wake_all();
    }
    fn wake_all(&mut self) {
        self.lock.parts().1.wake_all();
    }
    fn close_on_drop(&mut self, now: Instant) -> bool {
        let (s, _) = self.lock.parts();
        if !s.is_ended() {
            s.close(now, sotto_proto::conduit::goodbye_code::NORMAL, "session handle dropped");
        }
        true
    }
    fn driver_exit(&mut self, now: Instant) {
        let (s, st) = self.lock.parts();
        // A driver gone while its session lives (its task cancelled, or a panic in the
        // application's stream) leaves nobody to move it: end it, so that every handle's
        // call (a send waiting for credit too) returns `Ended(Evicted)` instead of waiting.
        if !s.is_ended() {
            s.conduit_end(now, SessionEnd::Evicted);
        }
        st.common.driver_done = true;
        st.common.driver = None;
        st.wake_all();
        self.lock.release_if_done(now);
    }
}
