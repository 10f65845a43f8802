//! [`Hosted`]: an [`Endpoint`] together with every session it routes to, owned in one table
//! and driven from one thread. It holds the conversation between the endpoint and its
//! sessions (sessions created from routed ClientHellos, resumes checked by their session,
//! readiness, detachment and ends reported back), so a single-threaded run loop (or a test)
//! drives an acceptor like one [`Session`] per handle. A driver that runs sessions in
//! parallel owns each session itself and talks to the [`Endpoint`] directly instead.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use super::{
    Endpoint, EndpointConfig, EndpointEvent, EndpointStats, LinkRefusal, PendingLink, ResumeOutcome, Routed,
    SessionHandle,
};
use crate::conduit::{ConfigError, LinkId, Role, SessionEnd};
use crate::session::Session;
use crate::time::Instant;
use crate::wire::{ResumeKey, HELLO_LEN};

/// Where [`Hosted::route`] placed a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placed {
    /// The link now belongs to this session: keep feeding its messages to the session, with
    /// this link id. For a resume the previous link (if any) is superseded.
    Session {
        /// The session.
        handle: SessionHandle,
        /// The link's id within the session.
        link: LinkId,
        /// A session created for this link (a fresh ClientHello).
        new: bool,
    },
    /// Write these bytes (a REJECTED ServerHello) after a length prefix, then close the link.
    Reject([u8; HELLO_LEN]),
}

/// An endpoint and the sessions it routes to, in one table (see the module docs).
///
/// Drive each session through [`session_mut`](Self::session_mut) exactly as a standalone
/// [`Session`], and drain [`poll_event`](Self::poll_event) after feeding sessions: it reports
/// what the sessions touched since the last call told the endpoint (a session that became
/// ready: [`EndpointEvent`]s are passed on, with `SessionReady` added). Sessions the endpoint
/// evicts stay in the table, ended, until [`free`](Self::free); sessions it reclaims or
/// expires are dropped from the table at once.
#[derive(Debug)]
pub struct Hosted {
    endpoint: Endpoint,
    /// By slot number: the session the endpoint's handle of that number names, if any.
    sessions: Vec<Option<(SessionHandle, Session)>>,
    /// Sessions freed, kept for reuse (reset) so that a steady churn of sessions allocates
    /// nothing.
    spare: Vec<Session>,
    /// Sessions reached through `session_mut` since the last `poll_event`.
    touched: Vec<SessionHandle>,
    /// By slot number: listed in `touched`.
    marked: Vec<bool>,
    /// Grow every session's buffers to their caps when it is created
    /// ([`reserve_buffers`](Self::reserve_buffers)).
    reserve: bool,
    /// Events to report, in order (endpoint events are acted on as they come).
    events: VecDeque<HostedEvent>,
    metadata: Vec<u8>,
}

/// What [`Hosted::poll_event`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostedEvent {
    /// The endpoint's own event; for `Evicted` the session is still in the table, ended
    /// (free it once drained), for `Reclaimed` and `SessionHandshakeExpired` it is gone.
    Endpoint(EndpointEvent),
    /// A session created by a fresh ClientHello finished its session handshake: hand it to
    /// the application. Once per session.
    SessionReady(SessionHandle),
}

impl Hosted {
    /// An endpoint with `config`; `hello_metadata` goes in each session's HelloYourself.
    pub fn new(config: EndpointConfig, hello_metadata: &[u8]) -> Result<Self, ConfigError> {
        Ok(Self {
            events: VecDeque::with_capacity(config.max_pending_handshakes.min(1024) as usize),
            endpoint: Endpoint::new(config)?,
            sessions: Vec::new(),
            spare: Vec::new(),
            touched: Vec::new(),
            marked: Vec::new(),
            reserve: false,
            metadata: hello_metadata.to_vec(),
        })
    }

    /// The endpoint.
    #[must_use]
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &EndpointConfig {
        self.endpoint.config()
    }

    /// The endpoint's counters.
    #[must_use]
    pub fn stats(&self) -> EndpointStats {
        self.endpoint.stats()
    }

    /// See [`Endpoint::accept_link`].
    pub fn accept_link(&mut self, now: Instant, source: u64) -> Result<PendingLink, LinkRefusal> {
        self.endpoint.accept_link(now, source)
    }

    /// See [`Endpoint::pending_closed`].
    pub fn pending_closed(&mut self, link: PendingLink) {
        self.endpoint.pending_closed(link);
    }

    /// Route the first message of a pending link (see [`Endpoint::route`]): a fresh
    /// ClientHello gets a new session; a resume is checked by its session, which takes the
    /// link only if it accepts the key.
    pub fn route(
        &mut self,
        now: Instant,
        link: PendingLink,
        first_message: &[u8],
        fresh_key: ResumeKey,
    ) -> Result<Placed, LinkRefusal> {
        self.report_touched();
        let routed = self.endpoint.route(now, link, first_message, fresh_key);
        self.take_endpoint_events();
        match routed? {
            Routed::New { handle, hello, key } => {
                let mut s = match self.spare.pop() {
                    Some(mut s) => {
                        s.reset();
                        s
                    }
                    None => match Session::new(Role::Acceptor, self.endpoint.config().session, &self.metadata) {
                        Ok(s) => s,
                        Err(_) => {
                            // Cannot happen: the configuration was validated with the endpoint.
                            self.endpoint.free(handle);
                            return Ok(Placed::Reject(crate::wire::ServerHello::rejected().encode()));
                        }
                    },
                };
                if self.reserve {
                    s.reserve_buffers();
                }
                let (link, _) = s.link_up_with_hello(now, key, &hello);
                let i = handle.index as usize;
                if i >= self.sessions.len() {
                    self.sessions.resize_with(i + 1, || None);
                    // Room to keep every slot's session for reuse: freeing never allocates.
                    if self.spare.capacity() < self.sessions.len() {
                        self.spare.reserve(self.sessions.len() - self.spare.len());
                    }
                }
                self.sessions[i] = Some((handle, s));
                self.touch(handle);
                Ok(Placed::Session { handle, link, new: true })
            }
            Routed::Resume(resume) => {
                let handle = resume.handle();
                let outcome = match self.get_mut(handle) {
                    Some(s) => resume.apply_to_session(now, s),
                    None => ResumeOutcome::Refused,
                };
                let reply = self.endpoint.resume_outcome(now, &resume, &outcome);
                self.take_endpoint_events();
                self.touch(handle);
                match (outcome, reply) {
                    (ResumeOutcome::Linked { link, .. }, _) => Ok(Placed::Session { handle, link, new: false }),
                    (ResumeOutcome::Refused, reply) => {
                        Ok(Placed::Reject(reply.unwrap_or_else(|| crate::wire::ServerHello::rejected().encode())))
                    }
                }
            }
            Routed::Reject { reply, .. } => Ok(Placed::Reject(reply)),
            // A hosted endpoint is one acceptor, never a worker of a group (it has no issuer:
            // `Hosted` offers no way to set one), so no key routes to another worker.
            Routed::Forward { .. } => Ok(Placed::Reject(crate::wire::ServerHello::rejected().encode())),
        }
    }

    /// The session behind `handle`, until it is freed.
    #[must_use]
    pub fn session(&self, handle: SessionHandle) -> Option<&Session> {
        match self.sessions.get(handle.index as usize) {
            Some(Some((h, s))) if *h == handle => Some(s),
            _ => None,
        }
    }

    fn get_mut(&mut self, handle: SessionHandle) -> Option<&mut Session> {
        match self.sessions.get_mut(handle.index as usize) {
            Some(Some((h, s))) if *h == handle => Some(s),
            _ => None,
        }
    }

    fn touch(&mut self, handle: SessionHandle) {
        let i = handle.index as usize;
        if i >= self.marked.len() {
            self.marked.resize(i + 1, false);
        }
        if !self.marked[i] {
            self.marked[i] = true;
            self.touched.push(handle);
        }
    }

    /// Take the session behind `handle` out of the table (ended), keeping it for reuse.
    fn remove(&mut self, now: Instant, handle: SessionHandle) {
        let Some(entry) = self.sessions.get_mut(handle.index as usize) else { return };
        if entry.as_ref().is_none_or(|(h, _)| *h != handle) {
            return;
        }
        if let Some((_, mut s)) = entry.take() {
            if !s.is_ended() {
                s.conduit_end(now, SessionEnd::Evicted);
            }
            self.spare.push(s);
        }
        if let Some(m) = self.marked.get_mut(handle.index as usize).filter(|m| **m) {
            *m = false;
            self.touched.retain(|h| *h != handle);
        }
    }

    /// The session behind `handle`, to drive it; `None` once it is freed.
    #[must_use]
    pub fn session_mut(&mut self, handle: SessionHandle) -> Option<&mut Session> {
        self.session(handle)?;
        self.touch(handle);
        self.get_mut(handle)
    }

    /// Every session in the table, in slot order. O(slots).
    pub fn handles(&self) -> impl Iterator<Item = SessionHandle> + '_ {
        self.sessions.iter().flatten().map(|(h, _)| *h)
    }

    /// Drop the session behind `handle` (call once it ended and its events are drained; a
    /// live session is ended first with [`SessionEnd::Evicted`]). Its keys stop routing.
    pub fn free(&mut self, now: Instant, handle: SessionHandle) {
        self.remove(now, handle);
        self.endpoint.free(handle);
    }

    /// Grow every session's buffers to their caps now, and each new one's when it is
    /// created (see [`Session::reserve_buffers`]): for tests that count allocations.
    pub fn reserve_buffers(&mut self) {
        self.reserve = true;
        for (_, s) in self.sessions.iter_mut().flatten() {
            s.reserve_buffers();
        }
        for s in &mut self.spare {
            s.reserve_buffers();
        }
    }

    /// See [`Endpoint::poll_timeout`].
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.endpoint.poll_timeout()
    }

    /// See [`Endpoint::handle_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.report_touched();
        self.endpoint.handle_timeout(now);
    }

    /// The next event. Call until `None` after feeding sessions and after every endpoint call.
    pub fn poll_event(&mut self) -> Option<HostedEvent> {
        self.report_touched();
        self.take_endpoint_events();
        self.events.pop_front()
    }

    /// Act on the endpoint's events at once (so the table never holds a session the
    /// endpoint reused the number of) and queue them for `poll_event`.
    fn take_endpoint_events(&mut self) {
        while let Some(e) = self.endpoint.poll_event() {
            let now = self.endpoint.clock.get();
            match e {
                EndpointEvent::Evicted(h) => {
                    if let Some(s) = self.get_mut(h) {
                        s.conduit_end(now, SessionEnd::Evicted);
                    }
                }
                EndpointEvent::Reclaimed(h) | EndpointEvent::SessionHandshakeExpired(h) => {
                    self.remove(now, h);
                    self.endpoint.free(h);
                }
                EndpointEvent::HandshakeExpired(_) => {}
            }
            self.events.push_back(HostedEvent::Endpoint(e));
        }
    }

    /// Tell the endpoint what the sessions touched since the last call did: ended, became
    /// ready, detached or attached.
    fn report_touched(&mut self) {
        while let Some(h) = self.touched.pop() {
            if let Some(m) = self.marked.get_mut(h.index as usize) {
                *m = false;
            }
            let Some(s) = self.session(h) else { continue };
            let (ended, detached_since, ready) = (s.is_ended(), s.conduit().detached_since(), s.is_ready());
            if ended {
                self.endpoint.session_ended(h);
                continue;
            }
            if !ready && s.conduit().items_received() > 0 {
                self.endpoint.peer_spoke(h);
            }
            match detached_since {
                Some(since) => self.endpoint.detached(h, since),
                None => self.endpoint.attached(h),
            }
            if ready && self.endpoint.session_ready(h) {
                self.events.push_back(HostedEvent::SessionReady(h));
            }
        }
    }
}
