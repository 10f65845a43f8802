//! The one router of both acceptors: the core [`Endpoint`] behind its own small lock
//! ([`EpShared`]), and each routed session's tie to it ([`Member`]), kept in the session's
//! own state. The raw stable-conduit acceptor and the session acceptor share all of it; a
//! session is reached through [`Owner`], which a raw session's state and a session-layer
//! session's home both implement.
//!
//! The endpoint only routes: it is taken by the listener to route a link and by a session's
//! driver to report what the endpoint needs (ready, detached or attached, a resume's outcome,
//! ended), never across a system call. A resume routed to a session is put in its member's
//! mailbox; the session's driver checks it ([`sotto_proto::endpoint::Resume::apply`]) and
//! only then does the new link supersede the live one. Lock order: a session's lock, then the
//! endpoint's; the listener never holds the endpoint's lock while it locks a session.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use futures::task::AtomicWaker;
use sotto_proto::endpoint::{Endpoint, Resume, ResumeOutcome, SessionHandle as EpHandle};
use sotto_proto::session::Session;
use sotto_proto::wire::{ServerHello, HELLO_LEN};
use sotto_proto::{Conduit, Instant, LinkId, SessionEnd};

use crate::shared::{Clock, Common};

/// Links waiting in a session's mailbox at most. A resume arriving at a full mailbox drops
/// the oldest resume waiting there: the newest attempt is the one the initiator waits on (as
/// a resume supersedes the live link). The dropped link is closed without a reply (a REJECTED
/// would end a session its initiator may still be resuming), counted by the endpoint
/// (`EndpointStats::resumes_superseded`) and not charged to its source.
pub(crate) const MAILBOX: usize = 4;

/// A link from a session's mailbox, as its driver takes it.
pub(crate) enum Taken<S> {
    /// Attached to the core under this id: it supersedes the driver's current link.
    Link(S, LinkId),
    /// Refused: write this REJECTED ServerHello (after a length prefix), then close it.
    Refused(S, [u8; HELLO_LEN]),
}

/// A link routed to a session, in its mailbox.
pub(crate) enum Arrival<S> {
    /// A new session's first link, already attached by the listener.
    First(S, LinkId),
    /// A resume, to be checked by the session before it touches the live link.
    Resume(S, Resume),
}

/// The lifecycle calls the router makes on a session's core: a raw [`Conduit`] or a
/// [`Session`].
pub(crate) trait Lifecycle {
    /// Whether it is over.
    fn is_ended(&self) -> bool;
    /// End it at once (evicted, expired, forced by a shutdown).
    fn end_now(&mut self, now: Instant, reason: SessionEnd);
    /// Close it with GOODBYE (at once if its peer has no GOODBYE or it has no link).
    fn close(&mut self, now: Instant, code: u32, reason: &str);
}

impl Lifecycle for Conduit {
    fn is_ended(&self) -> bool {
        Conduit::is_ended(self)
    }
    fn end_now(&mut self, now: Instant, reason: SessionEnd) {
        self.end(now, reason);
    }
    fn close(&mut self, now: Instant, code: u32, reason: &str) {
        Conduit::close(self, now, code, reason);
    }
}

impl Lifecycle for Session {
    fn is_ended(&self) -> bool {
        Session::is_ended(self)
    }
    fn end_now(&mut self, now: Instant, reason: SessionEnd) {
        self.conduit_end(now, reason);
    }
    fn close(&mut self, now: Instant, code: u32, reason: &str) {
        Session::close(self, now, code, reason);
    }
}

/// A routed session's state, locked: its core, its driver-managed fields and its membership.
pub(crate) struct Parts<'a> {
    pub(crate) core: &'a mut dyn Lifecycle,
    pub(crate) common: &'a mut Common,
    pub(crate) member: Option<&'a mut Member>,
}

/// Whatever owns a routed session (its driver and handles share it): the router reaches it
/// through this, weakly.
pub(crate) trait Owner: Send + Sync + 'static {
    /// Lock the session and call `f` with its parts.
    fn with_parts(&self, f: &mut dyn FnMut(Parts<'_>));

    /// The owner itself, for an acceptor that needs its own type back (the session
    /// acceptor's handoff, `crate::handoff`).
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
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

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").field("handle", &self.handle).field("waiting", &self.mailbox.len()).finish()
    }
}

impl Member {
    /// The membership of the session routed as `handle`, with its first link (attached to
    /// its core already) in its mailbox. `settled`: reported ready already (a raw conduit
    /// has no session handshake: it is announced when it is routed).
    pub(crate) fn new<S: Send + 'static>(
        ep: &Arc<EpShared>,
        handle: EpHandle,
        first: (S, LinkId),
        settled: bool,
    ) -> Self {
        let mut mailbox: VecDeque<Box<dyn Any + Send>> = VecDeque::with_capacity(1);
        mailbox.push_back(Box::new(Arrival::First(first.0, first.1)));
        Self { ep: Arc::clone(ep), handle, mailbox, detached: false, settled, spoke: settled, freed: false }
    }

    /// Report what the endpoint needs to know about the session whose conduit is `c` now:
    /// ready (`ready`: its session handshake finished), ended (then free it), detached or
    /// attached. Called after the driver's drain, with the session's lock held (the
    /// endpoint's lock is taken only when something changed).
    pub(crate) fn report(&mut self, c: &Conduit, ready: bool) {
        if self.freed {
            return;
        }
        let ended = c.is_ended();
        let ready = !self.settled && (ended || ready);
        let detached = !ended && c.detached_since().is_some();
        let spoke = !self.spoke && !self.settled && c.items_received() > 0;
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
            g.free(self.handle);
        } else if detached != self.detached {
            self.detached = detached;
            match c.detached_since() {
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

    /// The session's driver is gone: free its slot in the endpoint if its end was not
    /// reported (its keys route nowhere from now on).
    pub(crate) fn leave(&mut self) {
        if !std::mem::replace(&mut self.freed, true) {
            self.ep.lock().free(self.handle);
        }
    }

    /// Take the next link routed here: a first link, or a resume the session accepts
    /// (`apply` checks it, before anything touches the live link). A refused resume comes
    /// back with the REJECTED reply to write, its source charged.
    pub(crate) fn take<S: 'static>(
        &mut self,
        now: Instant,
        apply: impl FnOnce(&Resume) -> ResumeOutcome,
    ) -> Option<Taken<S>> {
        let boxed = self.mailbox.pop_front()?;
        let arrival = *boxed.downcast::<Arrival<S>>().ok()?;
        match arrival {
            Arrival::First(io, link) => Some(Taken::Link(io, link)),
            Arrival::Resume(io, resume) => {
                let outcome = if self.freed { ResumeOutcome::Refused } else { apply(&resume) };
                let reply = self.ep.lock().endpoint.resume_outcome(now, &resume, &outcome);
                match outcome {
                    ResumeOutcome::Linked { link, .. } => Some(Taken::Link(io, link)),
                    // Logged by the driver, which knows the link's peer.
                    ResumeOutcome::Refused => Some(Taken::Refused(io, reply.unwrap_or_else(rejected))),
                }
            }
        }
    }
}

/// The REJECTED ServerHello.
pub(crate) fn rejected() -> [u8; HELLO_LEN] {
    ServerHello::rejected().encode()
}

/// An acceptor's endpoint behind its own lock, with what the listener needs from it.
pub(crate) struct EpShared {
    inner: Mutex<EpInner>,
    /// The listener task, woken when sessions report something it acts on.
    listener: AtomicWaker,
    pub(crate) clock: Clock,
    /// What the acceptor counts beside the endpoint, for its summary (see `summary`).
    pub(crate) gauges: Arc<crate::summary::Gauges>,
}

/// What the endpoint's lock guards.
pub(crate) struct EpInner {
    pub(crate) endpoint: Endpoint,
    /// By endpoint slot number: that session's owner, to reach it for a routed link or an
    /// eviction (weak: the session is owned by its driver and handles).
    owners: Vec<Option<(EpHandle, Weak<dyn Owner>)>>,
    /// New sessions that reported ready (`true`) or ended unready (`false`), for the
    /// listener to announce or drop.
    pub(crate) settled: Vec<(EpHandle, bool)>,
    /// The acceptor is shutting down: a session started from now on is closed at once.
    shutting_down: bool,
}

/// A session the listener must reach, found under the endpoint's lock and used after it.
pub(crate) struct Reach(Option<Arc<dyn Owner>>);

impl EpShared {
    pub(crate) fn new(endpoint: Endpoint, clock: Clock) -> Self {
        let inner = EpInner { endpoint, owners: Vec::new(), settled: Vec::new(), shutting_down: false };
        Self { inner: Mutex::new(inner), listener: AtomicWaker::new(), clock, gauges: Arc::default() }
    }

    /// Lock the endpoint (briefly: never across a system call or a session's lock).
    pub(crate) fn lock(&self) -> MutexGuard<'_, EpInner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Register the listener task to be woken.
    pub(crate) fn register_listener(&self, waker: &std::task::Waker) {
        self.listener.register(waker);
    }

    /// Record `owner` as the owner of the new session routed as `handle`. If the acceptor is
    /// shutting down (routed before the listener stopped, started after the shutdown closed
    /// every session) the session is closed at once.
    pub(crate) fn register(&self, handle: EpHandle, owner: &Arc<dyn Owner>) {
        let mut g = self.lock();
        let i = handle.index as usize;
        if i >= g.owners.len() {
            g.owners.resize_with(i + 1, || None);
        }
        g.owners[i] = Some((handle, Arc::downgrade(owner)));
        let shutting_down = g.shutting_down;
        drop(g);
        if shutting_down {
            let now = self.clock.now();
            owner.with_parts(&mut |p| {
                p.common.shut_down = true;
                p.core.close(now, sotto_proto::conduit::goodbye_code::NORMAL, "acceptor shutting down");
            });
        }
    }

    /// Shutdown: from now on a session started is closed at once; close every live session
    /// with GOODBYE `code` and `reason` (a detached one, or one whose link cannot carry a
    /// GOODBYE, ends at once). Returns the sessions closing over a link (their drivers write
    /// the GOODBYE, then finish) and how many ended without one.
    pub(crate) fn close_all(&self, now: Instant, code: u32, reason: &str) -> (Vec<Closing>, usize) {
        let owners: Vec<Arc<dyn Owner>> = {
            let mut g = self.lock();
            g.shutting_down = true;
            g.owners.iter().flatten().filter_map(|(_, w)| w.upgrade()).collect()
        };
        let mut closing = Vec::new();
        let mut without = 0;
        for owner in owners {
            let mut over_link = None;
            owner.with_parts(&mut |p| {
                if p.core.is_ended() {
                    return;
                }
                p.common.shut_down = true;
                p.core.close(now, code, reason);
                p.common.wake_driver();
                over_link = Some(!p.core.is_ended());
            });
            match over_link {
                Some(true) => closing.push(Closing(owner, self.clock.clone())),
                Some(false) => without += 1,
                None => {}
            }
        }
        (closing, without)
    }
}

/// A session closing with GOODBYE during an acceptor's shutdown.
pub(crate) struct Closing(Arc<dyn Owner>, Clock);

impl Closing {
    /// Whether its driver has finished (the GOODBYE written and the link closed, or the link
    /// lost).
    pub(crate) fn done(&self) -> bool {
        let mut done = false;
        self.0.with_parts(&mut |p| done = p.common.driver_done);
        done
    }

    /// Out of time: end it without waiting for the GOODBYE to be written; its driver stops.
    pub(crate) fn force(&self) {
        let now = self.1.now();
        self.0.with_parts(&mut |p| {
            if !p.core.is_ended() {
                p.core.end_now(now, SessionEnd::Evicted);
            }
            p.common.exit_now = true;
            p.common.wake_driver();
        });
    }
}

// ---- sessions that move between acceptors (crate::handoff) ----

impl Member {
    /// The membership of a session adopted from another acceptor
    /// ([`Endpoint::adopt`](sotto_proto::endpoint::Endpoint::adopt)ed as `handle`): detached,
    /// ready, no link waiting.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn adopted(ep: &Arc<EpShared>, handle: EpHandle) -> Self {
        Self {
            ep: Arc::clone(ep),
            handle,
            mailbox: VecDeque::new(),
            detached: true,
            settled: true,
            spoke: true,
            freed: false,
        }
    }

    /// The session moved to another acceptor (`handed_off`: its keys are released, counted)
    /// or its adoption is undone: its keys stop routing here, its slot is freed.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn give_up(&mut self, handed_off: bool) {
        if std::mem::replace(&mut self.freed, true) {
            return;
        }
        let mut g = self.ep.lock();
        if handed_off {
            g.endpoint.release(self.handle);
        }
        g.free(self.handle);
    }
}

impl EpShared {
    /// Every live session's owner (for a handoff).
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn owners(&self) -> Vec<Arc<dyn Owner>> {
        self.lock().owners.iter().flatten().filter_map(|(_, w)| w.upgrade()).collect()
    }
}

impl EpInner {
    /// The acceptor is shutting down (it adopts no session).
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutting_down
    }
}

impl EpInner {
    /// The owner of `handle`'s session, to use once the endpoint's lock is released.
    pub(crate) fn reach(&self, handle: EpHandle) -> Reach {
        Reach(match self.owners.get(handle.index as usize) {
            Some(Some((h, w))) if *h == handle => w.upgrade(),
            _ => None,
        })
    }

    /// The session `handle` has ended: free its slot, forget its owner.
    fn free(&mut self, handle: EpHandle) {
        self.endpoint.free(handle);
        let i = handle.index as usize;
        if self.owners.get(i).is_some_and(|e| e.as_ref().is_some_and(|(h, _)| *h == handle)) {
            self.owners[i] = None;
        }
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
        let Some(owner) = self.0 else { return Err((io, resume)) };
        let mut link = Some((io, resume));
        let mut dropped = None;
        owner.with_parts(&mut |p| {
            let Some(m) = p.member else { return };
            let Some((io, resume)) = link.take() else { return };
            if m.mailbox.len() >= MAILBOX {
                // The oldest resume; a first link (attached already) is never dropped.
                let oldest =
                    m.mailbox.iter().position(|a| matches!(a.downcast_ref::<Arrival<S>>(), Some(Arrival::Resume(..))));
                dropped = oldest.and_then(|i| m.mailbox.remove(i)).map(|a| (Arc::clone(&m.ep), a));
            }
            m.mailbox.push_back(Box::new(Arrival::Resume(io, resume)));
            p.common.wake_driver();
        });
        if let Some(link) = link {
            return Err(link);
        }
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

    /// What the session's first link told of its peer (for a resume binding); `None` if the
    /// session is gone or no link attached yet.
    pub(crate) fn first_link(&self) -> Option<crate::link_hook::LinkInfo> {
        let owner = self.0.as_ref()?;
        let mut first = None;
        owner.with_parts(&mut |p| first = p.common.first_link.clone());
        first
    }

    /// The endpoint forgot the session (evicted, reclaimed or expired): end it; its driver
    /// sees the end.
    pub(crate) fn end(self, now: Instant) {
        let Some(owner) = self.0 else { return };
        owner.with_parts(&mut |p| {
            if !p.core.is_ended() {
                p.core.end_now(now, SessionEnd::Evicted);
            }
            p.common.wake_driver();
        });
    }
}
