//! The session acceptor: one task that takes streams from a listener (or any stream source)
//! and routes each through the core [`Endpoint`]: [`Endpoint::accept_link`] (refused unread
//! past the pending-handshake cap or a source's failure budget), the ClientHello read under
//! the handshake deadline, then [`Endpoint::route`]: a new session (its driver task is
//! spawned; the session is yielded by [`SessionAcceptor::accept`] when the endpoint reports
//! [`EndpointEvent::SessionReady`], or closed unseen when it reports
//! [`EndpointEvent::SessionHandshakeExpired`]), a resume (the link goes to that session's
//! driver through the endpoint lock), or REJECTED (written, then the link is closed).
//!
//! A session is only handed to the application once the core reports it ready: an initiator
//! whose first ServerHello was lost redials as a fresh session, and the first attempt must
//! not become a session the application holds with no peer behind it. The deadline is the
//! endpoint's (the first link's handshake deadline): this task only calls
//! [`Endpoint::handle_timeout`] at [`Endpoint::poll_timeout`] and drains the events.

use std::io;
use std::sync::Arc;
use std::task::Context;
use std::time::Instant as StdInstant;

use futures::stream::Stream;
use sotto_proto::conduit::ConfigError;
use sotto_proto::endpoint::{Endpoint, EndpointEvent, EndpointStats, PendingLink as EpPending, Routed};
use sotto_proto::wire::{ClientHello, HELLO_LEN};
use sotto_proto::{Instant, ResumeKey};

use super::handle::SessionHandle;
use super::home::{EpHost, EpShared, Home, SessDriverHost};
use crate::config::Config;
use crate::driver::{Driver, Source};
use crate::keys::fresh_key;
use crate::listen::{self, ListenOf, Queue, Routing};
use crate::pending::Outcome;
use crate::shared::Clock;
use crate::{Io, Runtime, TaskGuard, Timer};

/// Counters of a session acceptor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionAcceptorStats {
    /// Streams taken from the listener.
    pub links: u64,
    /// New sessions handed to the application's queue (their session handshake finished).
    pub sessions: u64,
    /// New sessions whose session handshake had not finished by their link's handshake
    /// deadline: ended and freed by the endpoint, closed without ever being yielded (the
    /// endpoint's `session_handshakes_expired`, one per
    /// [`EndpointEvent::SessionHandshakeExpired`]).
    pub sessions_expired: u64,
    /// Fresh ClientHellos turned away because `accept_backlog` sessions were waiting.
    pub backlog_full: u64,
    /// The endpoint's counters: links refused, bad hellos, expired handshakes, sessions
    /// created, resumes routed, REJECTED replies, evictions, live sessions and pending links.
    pub endpoint: EndpointStats,
}

listen::impl_counts!(SessionAcceptorStats);

/// Serves a listener with the session API: yields each new session once its session
/// handshake (Hello, HelloYourself, LetsGo) has finished over its first link; resumes go to
/// their sessions without the application seeing them. Dropping the
/// acceptor stops listening and ends the handshakes in progress; sessions already yielded
/// live on (each until its own handle is dropped), those not yet yielded are closed.
pub struct SessionAcceptor {
    queue: Arc<Queue<SessionHandle, SessionAcceptorStats>>,
    ep: Arc<EpShared>,
    _task: TaskGuard,
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
        self.queue.accept().await
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> SessionAcceptorStats {
        let mut s = self.queue.lock().stats;
        s.endpoint = self.ep.lock().endpoint.stats();
        s.sessions_expired = s.endpoint.session_handshakes_expired;
        s
    }
}

/// Start serving `incoming` with the session API on runtime `rt`. Each item is a freshly
/// accepted stream and its source: a hash of the peer's address, for the per-source failure
/// budget (0 when unknown; see [`source_of`]).
pub fn serve_sessions<R, S, St>(rt: R, incoming: St, config: Config) -> Result<SessionAcceptor, ConfigError>
where
    R: Runtime,
    S: Io,
    St: Stream<Item = io::Result<(S, u64)>> + Send + 'static,
{
    let endpoint = Endpoint::new(config.endpoint_config(), &[])?;
    let ep = Arc::new(EpShared::new(endpoint, &config, Clock::new(&rt))?);
    let routing =
        EpRouting::<R> { ep: Arc::clone(&ep), unannounced: Vec::new(), settled: Vec::new(), timer: None, armed: None };
    let (queue, guard) = listen::spawn(rt, incoming, config, routing);
    Ok(SessionAcceptor { queue, ep, _task: guard })
}

/// The source of a link from `addr` for the per-source failure budget: a hash of its IP
/// address (ports are free to change).
#[must_use]
pub fn source_of(addr: &std::net::SocketAddr) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    addr.ip().hash(&mut h);
    h.finish() | 1
}

/// The session acceptor's routing: through the core endpoint.
struct EpRouting<R: Runtime> {
    ep: Arc<EpShared>,
    /// New sessions the endpoint has not reported ready yet: not shown to the application.
    /// Dropping one closes it.
    unannounced: Vec<(sotto_proto::endpoint::SessionHandle, SessionHandle)>,
    /// New sessions the endpoint reported ready (`true`) or gone (`false`), to settle outside
    /// the endpoint lock.
    settled: Vec<(sotto_proto::endpoint::SessionHandle, bool)>,
    /// Fires at the endpoint's [`poll_timeout`](Endpoint::poll_timeout).
    timer: Option<R::Timer>,
    /// The deadline `timer` is armed for.
    armed: Option<StdInstant>,
}

enum After<S> {
    Nothing,
    Spawn(sotto_proto::endpoint::SessionHandle),
    Reject(S),
}

/// Drain the endpoint's events (call after every endpoint call, in the same lock hold):
/// drivers of evicted and expired sessions are woken to see their end; new sessions reported
/// ready or expired are noted in `settled`.
fn drain(g: &mut EpHost, settled: &mut Vec<(sotto_proto::endpoint::SessionHandle, bool)>) {
    while let Some(e) = g.endpoint.poll_event() {
        match e {
            EndpointEvent::SessionReady(h) => settled.push((h, true)),
            EndpointEvent::SessionHandshakeExpired(h) => {
                tracing::debug!("sotto: session handshake timed out");
                if let Some(slot) = g.slot(h) {
                    slot.state.common.wake_driver();
                }
                settled.push((h, false));
            }
            EndpointEvent::Evicted(h) => {
                if let Some(slot) = g.slot(h) {
                    slot.state.common.wake_driver();
                }
            }
            // Each pending link has its own timer in the listener.
            EndpointEvent::HandshakeExpired(_) => {}
        }
    }
}

impl<R: Runtime, S: Io> Routing<R, S> for EpRouting<R> {
    type Item = (S, u64);
    type Key = EpPending;
    type Session = SessionHandle;
    type Stats = SessionAcceptorStats;

    fn admit(&mut self, l: &mut ListenOf<R, S, Self>, (io, source): (S, u64)) {
        let now = self.ep.clock.now();
        let admitted = {
            let mut g = self.ep.lock();
            let admitted = g.endpoint.accept_link(now, source);
            drain(&mut g, &mut self.settled);
            admitted
        };
        match admitted {
            Ok(p) => l.read_hello(io, p),
            Err(refusal) => tracing::debug!(?refusal, "sotto: link refused"),
        }
    }

    fn outcome(&mut self, l: &mut ListenOf<R, S, Self>, p: EpPending, outcome: Outcome<S>) {
        let now = self.ep.clock.now();
        match outcome {
            Outcome::Hello(io, hello) => self.route(l, now, p, io, &hello),
            Outcome::BadPrefix => {
                // Counted (and charged to the source) by the endpoint as a bad hello.
                let mut g = self.ep.lock();
                let _ = g.endpoint.route(now, p, &[], ResumeKey::ZERO);
                drain(&mut g, &mut self.settled);
            }
            Outcome::Eof => self.ep.lock().endpoint.pending_closed(p),
            Outcome::TimedOut => {
                tracing::debug!("sotto: handshake timed out");
                let mut g = self.ep.lock();
                g.endpoint.handle_timeout(now);
                drain(&mut g, &mut self.settled);
                g.endpoint.pending_closed(p);
            }
            Outcome::Written => {}
        }
    }

    /// Fire the endpoint's deadlines, yield the sessions it reported ready, drop those it
    /// reported gone.
    fn poll(&mut self, l: &mut ListenOf<R, S, Self>, cx: &mut Context<'_>) -> bool {
        let mut busy = false;
        let next = {
            let mut g = self.ep.lock();
            if self.armed.is_some_and(|t| t <= self.ep.clock.now_std()) {
                self.armed = None;
                g.endpoint.handle_timeout(self.ep.clock.now());
            }
            drain(&mut g, &mut self.settled);
            // A safety net for what these events do not cover: an unannounced session that
            // ended by itself (no event; its driver's end wakes us), and events another
            // drainer took (the session drivers drain the endpoint after a link goes down).
            for (h, _) in &self.unannounced {
                let (s, st) = g.parts(*h);
                if !self.settled.iter().any(|(x, _)| x == h) {
                    if s.is_ended() {
                        self.settled.push((*h, false));
                    } else if s.is_ready() {
                        self.settled.push((*h, true));
                    } else {
                        // Woken when the core reports Ready and when the driver ends.
                        st.common.watchers.register(cx);
                    }
                }
            }
            g.endpoint.poll_timeout().and_then(|t| self.ep.clock.std_time(t))
        };
        // Outside the endpoint lock: dropping a handle takes it.
        for (h, ready) in std::mem::take(&mut self.settled) {
            let Some(i) = self.unannounced.iter().position(|(x, _)| *x == h) else { continue };
            busy = true;
            let (_, session) = self.unannounced.swap_remove(i);
            if ready {
                l.queue.push(session);
            }
        }
        let Some(next) = next else {
            self.armed = None;
            return busy;
        };
        let timer = self.timer.get_or_insert_with(|| l.rt.timer());
        if self.armed != Some(next) {
            timer.reset(next);
            self.armed = Some(next);
        }
        if timer.poll_expired(cx).is_ready() {
            // Fire the deadline on the next step.
            return true;
        }
        busy
    }
}

impl<R: Runtime> EpRouting<R> {
    fn route<S: Io>(
        &mut self,
        l: &mut ListenOf<R, S, Self>,
        now: Instant,
        p: EpPending,
        io: S,
        hello: &[u8; HELLO_LEN],
    ) {
        let fresh = ClientHello::decode(hello).is_ok_and(|h| h.resume_key.is_none());
        // Sessions still in their handshake count against the backlog too.
        if fresh && l.queue.full(l.config.acceptor.accept_backlog.saturating_sub(self.unannounced.len())) {
            self.ep.lock().endpoint.pending_closed(p);
            return;
        }
        let key = fresh_key();
        let after = {
            let mut g = self.ep.lock();
            let after = match g.endpoint.route(now, p, hello, key) {
                Ok(Routed::Session { handle, link, new: true }) => match g.start(handle) {
                    Some(slot) => {
                        slot.mailbox = Some(Box::new((io, link)));
                        After::Spawn(handle)
                    }
                    None => After::Nothing,
                },
                Ok(Routed::Session { handle, link, new: false }) => {
                    if let Some(slot) = g.slot(handle) {
                        // A link not yet taken is replaced (dropped, closing it): the newest
                        // attempt is the one the initiator waits on.
                        slot.mailbox = Some(Box::new((io, link)));
                        slot.state.common.wake_driver();
                    }
                    After::Nothing
                }
                Ok(Routed::Reject(_)) => After::Reject(io),
                Err(refusal) => {
                    tracing::debug!(?refusal, "sotto: bad hello");
                    After::Nothing
                }
            };
            drain(&mut g, &mut self.settled);
            after
        };
        match after {
            After::Nothing => {}
            After::Reject(io) => l.reject(io, p),
            After::Spawn(handle) => {
                let home = Home::Ep(Arc::clone(&self.ep), handle);
                let host = Arc::new(SessDriverHost::<S>::new(home.clone()));
                let driver = Driver::<R, S, SessDriverHost<S>>::new(&l.rt, host, Source::Mailbox, l.config);
                let task = l.rt.spawn(crate::tasks::isolated(driver));
                let session = SessionHandle::new(home, task);
                self.unannounced.push((handle, session));
            }
        }
    }
}
