//! Where a session's core lives, and how its handles, its driver and (for an acceptor's
//! session) its endpoint reach it.
//!
//! Every session, initiator or acceptor, is owned: a [`Home`] is one lock holding the core
//! [`Session`], its [`SessState`] and, for an acceptor's session, its [`Member`]ship of the
//! acceptor's endpoint. Nothing on the data path touches another session or the endpoint.
//!
//! An acceptor's [`Endpoint`] only routes: it sits behind its own small lock in
//! [`EpShared`], taken by the listener to route a link and by a session's driver to report
//! what the endpoint needs (ready, detached or attached, a resume's outcome, ended), never
//! across a system call. A resume routed to a session is put in its member's mailbox; the
//! session's driver checks it ([`sotto_proto::endpoint::Resume::apply`]) and only then does
//! the new link supersede the live one. Lock order: a session's lock, then the endpoint's;
//! the listener never holds the endpoint's lock while it locks a session.
//!
//! The driver sees a home through [`SessDriverHost`].

use std::any::Any;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use futures::task::AtomicWaker;
use sotto_proto::conduit::{InputError, Observed};
use sotto_proto::endpoint::{Endpoint, Resume, ResumeOutcome, SessionHandle as EpHandle};
use sotto_proto::session::Session;
use sotto_proto::stream::{LendingBatch, Messages};
use sotto_proto::wire::{ClientHello, ServerHello, HELLO_LEN};
use sotto_proto::{Conduit, Event, Instant, LinkId, ResumeKey, SessionEnd};

use super::state::{self, SessState};
use crate::host::{Host, Locked, Taken};
use crate::shared::{Clock, Common};

/// Links waiting in a session's mailbox at most. A resume arriving at a full mailbox drops
/// the oldest resume waiting there: the newest attempt is the one the initiator waits on (as
/// a resume supersedes the live link). The dropped link is closed without a reply (a REJECTED
/// would end a session its initiator may still be resuming), counted by the endpoint
/// (`EndpointStats::resumes_superseded`) and not charged to its source.
const MAILBOX: usize = 4;

/// Where a session lives, as its handles and its driver reach it.
#[derive(Clone)]
pub(crate) struct Home(Arc<OwnHome>);

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

    fn downgrade(&self) -> Weak<OwnHome> {
        Arc::downgrade(&self.0)
    }
}

/// A session, its state and its endpoint membership.
pub(crate) struct Owned {
    session: Session,
    state: SessState,
    member: Option<Member>,
}

/// A session behind its own lock.
pub(crate) struct OwnHome {
    inner: Mutex<Owned>,
    clock: Clock,
}

impl OwnHome {
    /// Lock it (never poisoned: the core never panics on input, so the state is consistent
    /// even if another holder panicked).
    #[inline]
    fn lock(&self) -> MutexGuard<'_, Owned> {
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

// ---- the acceptor's endpoint ----

/// A link routed to a session, in its mailbox.
pub(crate) enum Arrival<S> {
    /// A new session's first link, already attached by the listener.
    First(S, LinkId),
    /// A resume, to be checked by the session before it touches the live link.
    Resume(S, Resume),
}

/// An acceptor session's tie to its endpoint, kept in the session's own state.
pub(crate) struct Member {
    ep: Arc<EpShared>,
    handle: EpHandle,
    /// Links routed here, not yet taken by the driver (each a boxed `Arrival<S>`).
    mailbox: VecDeque<Box<dyn Any + Send>>,
    /// Whether the session is reported detached (its link went down) now.
    detached: bool,
    /// Reported ready (or found expired) already.
    settled: bool,
    /// Reported that the peer spoke (it holds the key), or no longer needed (settled).
    spoke: bool,
    /// Freed in the endpoint already.
    freed: bool,
}

/// An acceptor's endpoint behind its own lock, with what the listener needs from it.
pub(crate) struct EpShared {
    inner: Mutex<EpInner>,
    /// The listener task, woken when sessions report something it acts on.
    listener: AtomicWaker,
    pub(crate) clock: Clock,
}

/// What the endpoint's lock guards.
pub(crate) struct EpInner {
    pub(crate) endpoint: Endpoint,
    /// By endpoint slot number: that session's home, to reach it for a routed link or an
    /// eviction (weak: the session is owned by its driver and handles).
    homes: Vec<Option<(EpHandle, Weak<OwnHome>)>>,
    /// New sessions that reported ready (`true`) or ended unready (`false`), for the
    /// listener to announce or drop.
    pub(crate) settled: Vec<(EpHandle, bool)>,
    /// The acceptor is shutting down: a session started from now on is closed at once.
    shutting_down: bool,
}

/// A session the listener must reach, found under the endpoint's lock and used after it.
pub(crate) struct Reach(Option<Arc<OwnHome>>);

impl EpShared {
    pub(crate) fn new(endpoint: Endpoint, clock: Clock) -> Self {
        let inner = EpInner { endpoint, homes: Vec::new(), settled: Vec::new(), shutting_down: false };
        Self { inner: Mutex::new(inner), listener: AtomicWaker::new(), clock }
    }

    /// Lock the endpoint (briefly: never across a system call or a session's lock).
    pub(crate) fn lock(&self) -> MutexGuard<'_, EpInner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Register the listener task to be woken.
    pub(crate) fn register_listener(&self, waker: &std::task::Waker) {
        self.listener.register(waker);
    }

    /// Create the home of the new session routed as `handle`, with its first link in its
    /// mailbox.
    pub(crate) fn start<S: Send + 'static>(
        self: &Arc<Self>,
        handle: EpHandle,
        session: Session,
        state: SessState,
        first: (S, LinkId),
    ) -> Home {
        let mut mailbox: VecDeque<Box<dyn Any + Send>> = VecDeque::with_capacity(1);
        mailbox.push_back(Box::new(Arrival::First(first.0, first.1)));
        let member = Member {
            ep: Arc::clone(self),
            handle,
            mailbox,
            detached: false,
            settled: false,
            spoke: false,
            freed: false,
        };
        let home = Home::with_clock(session, state, Some(member), self.clock.clone());
        let mut g = self.lock();
        let i = handle.index as usize;
        if i >= g.homes.len() {
            g.homes.resize_with(i + 1, || None);
        }
        g.homes[i] = Some((handle, home.downgrade()));
        let shutting_down = g.shutting_down;
        drop(g);
        if shutting_down {
            // Routed before the listener stopped, started after the shutdown closed every
            // session: close this one too.
            let now = home.clock().now();
            home.lock().parts().0.close(now, sotto_proto::conduit::goodbye_code::NORMAL, "acceptor shutting down");
        }
        home
    }

    /// Shutdown: from now on a session started is closed at once; close every live session
    /// with GOODBYE `code` and `reason` (a detached one, or one whose link cannot carry a
    /// GOODBYE, ends at once). Returns the sessions closing over a link (their drivers write
    /// the GOODBYE, then finish) and how many ended without one.
    pub(crate) fn close_all(&self, now: Instant, code: u32, reason: &str) -> (Vec<Closing>, usize) {
        let homes: Vec<Arc<OwnHome>> = {
            let mut g = self.lock();
            g.shutting_down = true;
            g.homes.iter().flatten().filter_map(|(_, w)| w.upgrade()).collect()
        };
        let mut closing = Vec::new();
        let mut without = 0;
        for home in homes {
            let mut g = home.lock();
            let Owned { session, state, .. } = &mut *g;
            if session.is_ended() {
                continue;
            }
            session.close(now, code, reason);
            state.common.wake_driver();
            if session.is_ended() {
                without += 1;
            } else {
                drop(g);
                closing.push(Closing(home));
            }
        }
        (closing, without)
    }
}

/// A session closing with GOODBYE during an acceptor's shutdown.
pub(crate) struct Closing(Arc<OwnHome>);

impl crate::shutdown::Closing for Closing {
    fn done(&self) -> bool {
        self.0.lock().state.common.driver_done
    }

    fn force(&self) {
        let now = self.0.clock.now();
        let mut g = self.0.lock();
        let Owned { session, state, .. } = &mut *g;
        if !session.is_ended() {
            session.conduit_end(now, SessionEnd::Evicted);
        }
        state.common.exit_now = true;
        state.common.wake_driver();
    }
}

impl EpInner {
    /// The home of `handle`'s session, to use once the endpoint's lock is released.
    pub(crate) fn reach(&self, handle: EpHandle) -> Reach {
        Reach(match self.homes.get(handle.index as usize) {
            Some(Some((h, w))) if *h == handle => w.upgrade(),
            _ => None,
        })
    }
}

impl Reach {
    /// No session.
    pub(crate) fn none() -> Self {
        Self(None)
    }

    /// Hand a routed resume link to the session's driver. Returns it if the session is gone.
    /// A full mailbox drops its oldest resume (see [`MAILBOX`]).
    pub(crate) fn deliver<S: Send + 'static>(self, io: S, resume: Resume) -> Result<(), (S, Resume)> {
        let Some(home) = self.0 else { return Err((io, resume)) };
        let mut g = home.lock();
        let Owned { state, member, .. } = &mut *g;
        let Some(m) = member.as_mut() else { return Err((io, resume)) };
        let mut dropped = None;
        if m.mailbox.len() >= MAILBOX {
            // The oldest resume; a first link (attached already) is never dropped.
            let oldest =
                m.mailbox.iter().position(|a| matches!(a.downcast_ref::<Arrival<S>>(), Some(Arrival::Resume(..))));
            dropped = oldest.and_then(|i| m.mailbox.remove(i)).map(|a| (Arc::clone(&m.ep), a));
        }
        m.mailbox.push_back(Box::new(Arrival::Resume(io, resume)));
        state.common.wake_driver();
        drop(g);
        if let Some((ep, arrival)) = dropped {
            if let Ok(arrival) = arrival.downcast::<Arrival<S>>() {
                if let Arrival::Resume(io, old) = *arrival {
                    tracing::debug!("sotto: a newer resume superseded one not yet taken; closing the older link");
                    ep.lock().endpoint.resume_superseded(&old);
                    drop(io);
                }
            }
        }
        Ok(())
    }

    /// The endpoint forgot the session (evicted, reclaimed or expired): end it; its driver
    /// sees the end.
    pub(crate) fn end(self, now: Instant) {
        let Some(home) = self.0 else { return };
        let mut g = home.lock();
        let Owned { session, state, .. } = &mut *g;
        if !session.is_ended() {
            session.conduit_end(now, SessionEnd::Evicted);
        }
        state.common.wake_driver();
    }
}

impl Member {
    /// Report what the endpoint needs to know about `s` now: ready, ended (then free it),
    /// detached or attached. Called after the driver's drain, with the session's lock held
    /// (the endpoint's lock is taken only when something changed).
    fn report(&mut self, s: &Session) {
        if self.freed {
            return;
        }
        let ended = s.is_ended();
        let ready = !self.settled && (ended || s.is_ready());
        let detached = !ended && s.conduit().detached_since().is_some();
        let spoke = !self.spoke && !self.settled && s.conduit().items_received() > 0;
        if !ended && !ready && !spoke && detached == self.detached {
            return;
        }
        let mut g = self.ep.lock();
        let mut wake = false;
        if spoke {
            // Before a detach seen at the same time: the peer holds the key, so the handshake
            // deadline of this unready session stops while it has no link.
            self.spoke = true;
            g.endpoint.peer_spoke(self.handle);
        }
        if ready {
            self.settled = true;
            // An unready session that ended, or one the endpoint expired, is dropped by the
            // listener without being announced.
            let announce = !ended && g.endpoint.session_ready(self.handle);
            g.settled.push((self.handle, announce));
            wake = true;
        }
        if ended {
            self.freed = true;
            g.endpoint.free(self.handle);
            let i = self.handle.index as usize;
            if g.homes.get(i).is_some_and(|e| e.as_ref().is_some_and(|(h, _)| *h == self.handle)) {
                g.homes[i] = None;
            }
        } else if detached != self.detached {
            self.detached = detached;
            match s.conduit().detached_since() {
                Some(since) if detached => g.endpoint.detached(self.handle, since),
                _ => g.endpoint.attached(self.handle),
            }
            // An eviction it caused is the listener's to act on.
            wake = true;
        }
        drop(g);
        if wake {
            self.ep.listener.wake();
        }
    }

    /// Take the next link routed here: a first link, or a resume the session accepts (checked
    /// before anything touches the live link). A refused resume comes back with the
    /// REJECTED reply to write, its source charged.
    fn take<S: 'static>(&mut self, s: &mut Session, now: Instant) -> Option<Taken<S>> {
        let boxed = self.mailbox.pop_front()?;
        let arrival = *boxed.downcast::<Arrival<S>>().ok()?;
        match arrival {
            Arrival::First(io, link) => Some(Taken::Link(io, link)),
            Arrival::Resume(io, resume) => {
                let outcome = if self.freed { ResumeOutcome::Refused } else { resume.apply_to_session(now, s) };
                let reply = self.ep.lock().endpoint.resume_outcome(now, &resume, &outcome);
                match outcome {
                    ResumeOutcome::Linked { link, .. } => Some(Taken::Link(io, link)),
                    ResumeOutcome::Refused => {
                        tracing::debug!("sotto: resume refused by its session, answering REJECTED");
                        Some(Taken::Refused(io, reply.unwrap_or_else(rejected)))
                    }
                }
            }
        }
    }
}

fn rejected() -> [u8; HELLO_LEN] {
    ServerHello::rejected().encode()
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
        state::note_acks(s, st);
        state::settle_close(s, st, now);
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
        let event = state::poll_event(s, st);
        if event.is_none() {
            let Owned { session, member, .. } = &mut *self.lock.0;
            if let Some(m) = member {
                m.report(session);
            }
        }
        (filled, event)
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
    fn link_up_with_hello(
        &mut self,
        now: Instant,
        key: ResumeKey,
        hello: &ClientHello,
    ) -> (LinkId, Result<(), InputError>) {
        self.lock.parts().0.link_up_with_hello(now, key, hello)
    }
    fn link_down(&mut self, now: Instant, link: LinkId) {
        let Owned { session, member, .. } = &mut *self.lock.0;
        session.link_down(now, link);
        if let Some(m) = member {
            m.report(session);
        }
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
        state::note_acks(s, st);
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
    fn take_link(&mut self, now: Instant) -> Option<Taken<S>> {
        let Owned { session, member, .. } = &mut *self.lock.0;
        member.as_mut()?.take(session, now)
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
        let Owned { session, member, .. } = &mut *self.lock.0;
        if let Some(m) = member {
            m.report(session);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use sotto_proto::endpoint::Routed;
    use sotto_proto::Role;

    use super::*;

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
        let config = crate::Config::default();
        let endpoint = Endpoint::new(config.endpoint_config());
        let ep = Arc::new(EpShared::new(endpoint.expect("config"), Clock::system()));
        let closed = Arc::new(Mutex::new(Vec::new()));
        let drops = Arc::new(AtomicUsize::new(0));
        let now = ep.clock.now();
        let fresh = ClientHello { resume_key: None, last_received: None, ext: true }.encode();
        let routed = {
            let mut g = ep.lock();
            let p = g.endpoint.accept_link(now, 1).expect("pending");
            g.endpoint.route(now, p, &fresh, ResumeKey([1; 16])).expect("routed")
        };
        let Routed::New { handle, hello, key } = routed else { panic!("new session expected") };
        let mut session = Session::new(Role::Acceptor, config.session_config(), &[]).expect("config");
        let (link, _) = session.link_up_with_hello(now, key, &hello);
        let _home = ep.start(
            handle,
            session,
            SessState::new(&config),
            (Link(0, Arc::clone(&closed), Arc::clone(&drops)), link),
        );
        let resume = ClientHello { resume_key: Some(key), last_received: None, ext: true }.encode();
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
