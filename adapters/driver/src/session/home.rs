//! Where a session's core lives, and how its handles, its driver and (for an acceptor's
//! session) the router reach it.
//!
//! Every session, initiator or acceptor, is owned: a [`Home`] is one lock holding the core
//! [`Session`], its [`SessState`] and, for an acceptor's session, its [`Member`]ship of the
//! acceptor's endpoint (see `router`). Nothing on the data path touches another session or
//! the endpoint.
//!
//! The driver sees a home through [`SessDriverHost`]; the router through [`Owner`].

use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use sotto_proto::conduit::Observed;
use sotto_proto::session::Session;
use sotto_proto::stream::{LendingBatch, Messages};
use sotto_proto::{Conduit, Event, Instant, LinkId, ResumeKey, SessionEnd};

use super::state::{self, SessState};
use crate::host::{Host, Locked, Round};
use crate::router::{Member, Owner, Parts, Taken};
use crate::shared::{Clock, Common};

/// Where a session lives, as its handles and its driver reach it.
#[derive(Clone)]
pub(crate) struct Home(pub(crate) Arc<OwnHome>);

impl Home {
    /// A session with no endpoint (an initiator's), on `clock`.
    pub(crate) fn new(session: Session, state: SessState, clock: Clock) -> Self {
        Self::with_clock(session, state, None, clock)
    }

    /// A session, an acceptor's if `member` is set, on `clock` (an acceptor's sessions share
    /// the endpoint's clock, so that the times they report compare).
    pub(crate) fn with_clock(session: Session, state: SessState, member: Option<Member>, clock: Clock) -> Self {
        Self(Arc::new(OwnHome { inner: Mutex::new(Owned { session, state, member }), clock }))
    }

    /// Lock the session and its state.
    #[inline]
    pub(crate) fn lock(&self) -> SessLock<'_> {
        SessLock(self.0.lock())
    }

    /// The session's clock.
    #[inline]
    pub(crate) fn clock(&self) -> &Clock {
        &self.0.clock
    }
}

/// A session, its state and its endpoint membership.
pub(crate) struct Owned {
    pub(crate) session: Session,
    pub(crate) state: SessState,
    pub(crate) member: Option<Member>,
}

/// A session behind its own lock.
pub(crate) struct OwnHome {
    inner: Mutex<Owned>,
    pub(crate) clock: Clock,
}

impl OwnHome {
    /// Lock it (never poisoned: the core never panics on input, so the state is consistent
    /// even if another holder panicked).
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, Owned> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A locked session.
pub(crate) struct SessLock<'a>(MutexGuard<'a, Owned>);

impl SessLock<'_> {
    /// The session and its state.
    pub(crate) fn parts(&mut self) -> (&mut Session, &mut SessState) {
        let g = &mut *self.0;
        (&mut g.session, &mut g.state)
    }

    /// The session and its state, read-only.
    pub(crate) fn parts_ref(&self) -> (&Session, &SessState) {
        (&self.0.session, &self.0.state)
    }
}

impl Owner for OwnHome {
    fn with_parts(&self, f: &mut dyn FnMut(Parts<'_>)) {
        let mut g = self.lock();
        let Owned { session, state, member } = &mut *g;
        f(Parts { core: session, common: &mut state.common, member: member.as_mut() });
    }

    fn as_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}

impl Home {
    /// This session's owner, as the router reaches it.
    pub(crate) fn owner(&self) -> Arc<dyn Owner> {
        Arc::clone(&self.0) as Arc<dyn Owner>
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

/// Write the session's due frames into `batch`; whether any were. With nothing due the batch
/// is left alone (most drains find nothing: filling costs more than asking), and the session
/// is only told the time, as `poll_transmit` would have.
#[inline]
fn fill(s: &mut Session, batch: &mut LendingBatch<Vec<u8>>, now: Instant) -> bool {
    if s.has_transmit() {
        batch.fill(s, now).frames > 0
    } else {
        s.observe_time(now);
        false
    }
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
    fn begin(&mut self, now: Instant) {
        let (s, st) = self.lock.parts();
        if s.poll_timeout().is_some_and(|t| t <= now) {
            s.handle_timeout(now);
        }
        state::note_acks(s, st);
        state::settle_close(s, st, now);
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
    ) -> (Round, Option<Event>) {
        let (s, st) = self.lock.parts();
        if !st.owed.is_empty() {
            state::flush_owed(s, st, now);
        }
        let wrote = link.is_some() && s.conduit().current_link() == link && fill(s, batch, now);
        let event = state::poll_event(s, st);
        // The batch may have run out of room, or handling session events queued frames or
        // commands: asked after the event poll (`has_transmit` may say yes for a frame it
        // then does not write; the next round finds that out).
        let round = Round { wrote, more: wrote && (!st.owed.is_empty() || s.has_transmit()) };
        if event.is_none() {
            let Owned { session, member, .. } = &mut *self.lock.0;
            if let Some(m) = member {
                m.report(session.conduit(), session.is_ready());
            }
        }
        (round, event)
    }
    fn output_left(&self) -> bool {
        let (s, st) = self.lock.parts_ref();
        !st.owed.is_empty() || s.has_transmit()
    }
    fn status(&self) -> (bool, Option<Instant>) {
        let (s, st) = self.lock.parts_ref();
        let close = st.pending_close.as_ref().map(|pc| pc.deadline);
        let deadline = match (s.poll_timeout(), close) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        (s.is_ended(), deadline)
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
    fn link_down(&mut self, now: Instant, link: LinkId) {
        let Owned { session, member, .. } = &mut *self.lock.0;
        session.link_down(now, link);
        if let Some(m) = member {
            m.report(session.conduit(), session.is_ready());
        }
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
        state::note_acks(s, st);
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
        state::note_acks(s, st);
        (observed, light_drain(s, st, batch, now, link))
    }
    fn progress(&mut self, now: Instant, link: LinkId) {
        self.lock.parts().0.handle_progress(now, link);
    }
    fn after_input(&mut self, batch: &mut LendingBatch<Vec<u8>>, now: Instant, link: LinkId) -> Option<Event> {
        let (s, st) = self.lock.parts();
        light_drain(s, st, batch, now, link)
    }
    fn read_room(&mut self) -> usize {
        let st = self.lock.parts().1;
        state::fed(st);
        if st.full_conns > 0 {
            0
        } else {
            st.tuning.feed_batch
        }
    }
    fn take_link(&mut self, now: Instant) -> Option<Taken<S>> {
        let Owned { session, member, .. } = &mut *self.lock.0;
        member.as_mut()?.take(now, |r| r.apply_to_session(now, session))
    }
    fn wake_senders(&mut self) {
        self.lock.parts().1.ring.wake_all();
    }
    fn wake_all(&mut self) {
        self.lock.parts().1.wake_all();
    }
    fn close_on_drop(&mut self, now: Instant) {
        let (s, _) = self.lock.parts();
        if !s.is_ended() {
            s.close(now, sotto_proto::conduit::goodbye_code::NORMAL, "session handle dropped");
        }
    }
    fn driver_exit(&mut self, now: Instant) {
        let (s, st) = self.lock.parts();
        // A driver gone while its session lives (its task cancelled, or a panic in the
        // application's stream) leaves nobody to move it: end it, so that every handle's
        // call (a send waiting for credit too) returns `Ended(Evicted)` instead of waiting.
        if !s.is_ended() {
            s.conduit_end(now, SessionEnd::Evicted);
        }
        st.wake_all();
        let Owned { session, member, .. } = &mut *self.lock.0;
        if let Some(m) = member {
            m.report(session.conduit(), session.is_ready());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use sotto_proto::endpoint::{Endpoint, Routed};
    use sotto_proto::wire::ClientHello;
    use sotto_proto::Role;

    use super::*;
    use crate::router::{EpShared, MAILBOX};

    /// A link that counts its closes (drops) and which one was closed.
    struct Link(usize, Arc<Mutex<Vec<usize>>>, Arc<AtomicUsize>);

    impl Drop for Link {
        fn drop(&mut self) {
            self.2.fetch_add(1, Ordering::Relaxed);
            self.1.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(self.0);
        }
    }

    #[test]
    fn a_resume_beyond_the_mailbox_closes_the_oldest_waiting_resume_and_counts_it() {
        let config = crate::config::Config::default();
        let endpoint = Endpoint::new(config.endpoint_config());
        let ep = Arc::new(EpShared::new(endpoint.expect("config"), Clock::system()));
        let closed = Arc::new(Mutex::new(Vec::new()));
        let drops = Arc::new(AtomicUsize::new(0));
        let now = ep.clock.now();
        let fresh = ClientHello { resume_key: None, last_received: None, ext: true, early: false }.encode();
        let routed = {
            let mut g = ep.lock();
            let p = g.endpoint.accept_link(now, 1).expect("pending");
            g.endpoint.route(now, p, &fresh, ResumeKey([1; 16])).expect("routed")
        };
        let Routed::New { handle, hello, key } = routed else { panic!("new session expected") };
        let mut session = Session::new(Role::Acceptor, config.session_config(), &[]).expect("config");
        let (link, _) = session.link_up_with_hello(now, key, &hello);
        let first = (Link(0, Arc::clone(&closed), Arc::clone(&drops)), link);
        let member = Member::new(&ep, handle, first, false);
        let home = Home::with_clock(session, SessState::new(&config), Some(member), ep.clock.clone());
        ep.register(handle, &home.owner());
        let resume = ClientHello { resume_key: Some(key), last_received: None, ext: true, early: false }.encode();
        // The session's driver is not running: nothing takes the links routed to it.
        for n in 1..=MAILBOX {
            let (routed, reach) = {
                let mut g = ep.lock();
                let p = g.endpoint.accept_link(now, 1).expect("pending");
                let routed = g.endpoint.route(now, p, &resume, ResumeKey([1 + n as u8; 16])).expect("routed");
                let Routed::Resume(r) = routed else { panic!("resume expected") };
                let reach = g.reach(r.handle());
                (r, reach)
            };
            let io = Link(n, Arc::clone(&closed), Arc::clone(&drops));
            assert!(reach.deliver(io, routed).is_ok(), "delivered to the live session");
        }
        // The first link and MAILBOX - 1 resumes fill the mailbox; the last resume dropped the
        // oldest resume (link 1), never the first link.
        assert_eq!(*closed.lock().expect("lock"), vec![1], "the oldest waiting resume was closed");
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        let st = ep.lock().endpoint.stats();
        assert_eq!((st.resumes_superseded, st.rejected, st.links_refused), (1, 0, 0), "counted, not charged");
    }
}
