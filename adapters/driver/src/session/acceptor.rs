//! The session acceptor: one task that takes streams from a listener (or any stream source)
//! and routes each through the core [`Endpoint`]: [`Endpoint::accept_link`] (refused unread
//! past the pending-handshake cap or a source's failure budget), the ClientHello read under
//! the handshake deadline, then [`Endpoint::route`]: a new session (its driver task is
//! spawned; the session is yielded by [`SessionAcceptor::accept`] once its session handshake
//! has finished, or closed unseen if it has not by the link's handshake deadline), a resume
//! (the link goes to that session's driver through the endpoint lock), or REJECTED (written,
//! then the link is closed).
//!
//! A session is only handed to the application once the core reports it ready: an initiator
//! whose first ServerHello was lost redials as a fresh session, and the first attempt must
//! not become a session the application holds with no peer behind it.

use std::io;
use std::sync::Arc;
use std::task::Context;
use std::time::Instant as StdInstant;

use futures::stream::Stream;
use sotto::conduit::ConfigError;
use sotto::endpoint::{Endpoint, EndpointStats, PendingLink as EpPending, Routed};
use sotto::wire::{ClientHello, HELLO_LEN};
use sotto::{Instant, ResumeKey, SessionEnd};

use super::handle::SessionHandle;
use super::home::{EpHome, EpShared, SessDriverHost, SessionHome};
use crate::config::Config;
use crate::driver::{Driver, Source};
use crate::keys::fresh_key;
use crate::listen::{self, ListenOf, Queue, Routing};
use crate::pending::Outcome;
use crate::{Io, Runtime, TaskGuard, Timer};

/// Counters of a session acceptor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionAcceptorStats {
    /// Streams taken from the listener.
    pub links: u64,
    /// New sessions handed to the application's queue (their session handshake finished).
    pub sessions: u64,
    /// New sessions whose session handshake had not finished by their link's handshake
    /// deadline: closed without ever being yielded.
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
    let ep = Arc::new(EpShared::new(endpoint, &config)?);
    let routing = EpRouting::<R> { ep: Arc::clone(&ep), unannounced: Vec::new(), timer: None, armed: None };
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
    /// New sessions whose session handshake has not finished yet: not shown to the
    /// application. Dropping one closes it.
    unannounced: Vec<Unannounced>,
    /// Fires at the earliest deadline in `unannounced`.
    timer: Option<R::Timer>,
    /// The deadline `timer` is armed for.
    armed: Option<StdInstant>,
}

/// A new session in its session handshake.
struct Unannounced {
    handle: sotto::endpoint::SessionHandle,
    session: SessionHandle,
    /// Its first link's handshake deadline (from when the link was taken).
    deadline: StdInstant,
}

enum After<S> {
    Nothing,
    Spawn(sotto::endpoint::SessionHandle),
    Reject(S),
}

impl<R: Runtime, S: Io> Routing<R, S> for EpRouting<R> {
    type Item = (S, u64);
    /// The pending link and its handshake deadline.
    type Key = (EpPending, StdInstant);
    type Session = SessionHandle;
    type Stats = SessionAcceptorStats;

    fn admit(&mut self, l: &mut ListenOf<R, S, Self>, (io, source): (S, u64)) {
        let now = self.ep.clock.now();
        let admitted = self.ep.lock().endpoint.accept_link(now, source);
        match admitted {
            Ok(p) => {
                let deadline = listen::deadline(l.config.conduit.handshake_timeout.into());
                l.read_hello(io, (p, deadline));
            }
            Err(refusal) => tracing::debug!(?refusal, "sotto: link refused"),
        }
    }

    fn outcome(&mut self, l: &mut ListenOf<R, S, Self>, (p, deadline): Self::Key, outcome: Outcome<S>) {
        let now = self.ep.clock.now();
        match outcome {
            Outcome::Hello(io, hello) => self.route(l, now, p, deadline, io, &hello),
            Outcome::BadPrefix => {
                // Counted (and charged to the source) by the endpoint as a bad hello.
                let mut g = self.ep.lock();
                let _ = g.endpoint.route(now, p, &[], ResumeKey::ZERO);
                g.drain_events();
            }
            Outcome::Eof => self.ep.lock().endpoint.pending_closed(p),
            Outcome::TimedOut => {
                tracing::debug!("sotto: handshake timed out");
                let mut g = self.ep.lock();
                g.endpoint.handle_timeout(now);
                g.drain_events();
                g.endpoint.pending_closed(p);
            }
            Outcome::Written => {}
        }
    }

    /// Yield the sessions whose handshake finished; close those past their deadline.
    fn poll(&mut self, l: &mut ListenOf<R, S, Self>, cx: &mut Context<'_>) -> bool {
        if self.unannounced.is_empty() {
            return false;
        }
        let std_now = StdInstant::now();
        let mut settled = Vec::new();
        {
            let mut g = self.ep.lock();
            let now = self.ep.clock.now();
            let mut i = 0;
            while i < self.unannounced.len() {
                let u = &self.unannounced[i];
                // A stale handle (the session was freed) gets the ended stand-in.
                let (s, st) = g.parts(u.handle);
                let announce = if st.ready {
                    true
                } else if s.is_ended() {
                    false
                } else if u.deadline <= std_now {
                    tracing::debug!("sotto: session handshake timed out");
                    s.conduit_end(now, SessionEnd::Evicted);
                    st.common.wake_driver();
                    l.queue.lock().stats.sessions_expired += 1;
                    false
                } else {
                    // Woken when the core reports Ready and when the driver ends.
                    st.common.watchers.register(cx);
                    i += 1;
                    continue;
                };
                settled.push((self.unannounced.swap_remove(i).session, announce));
            }
        }
        // Outside the endpoint lock: dropping a handle takes it.
        let busy = !settled.is_empty();
        for (session, announce) in settled {
            if announce {
                l.queue.push(session);
            }
        }
        let Some(next) = self.unannounced.iter().map(|u| u.deadline).min() else {
            self.armed = None;
            return busy;
        };
        let timer = self.timer.get_or_insert_with(|| l.rt.timer());
        if self.armed != Some(next) {
            timer.reset(next);
            self.armed = Some(next);
        }
        if timer.poll_expired(cx).is_ready() {
            // Look again now that the deadline has passed.
            self.armed = None;
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
        deadline: StdInstant,
        io: S,
        hello: &[u8; HELLO_LEN],
    ) {
        let fresh = ClientHello::decode(hello).is_ok_and(|h| h.resume_key.is_none());
        // Sessions still in their handshake count against the backlog too.
        if fresh && l.queue.full(l.config.accept_backlog.saturating_sub(self.unannounced.len())) {
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
            g.drain_events();
            after
        };
        match after {
            After::Nothing => {}
            After::Reject(io) => l.reject(io, (p, deadline)),
            After::Spawn(handle) => {
                let home: Arc<dyn SessionHome> = Arc::new(EpHome { ep: Arc::clone(&self.ep), handle });
                let host = Arc::new(SessDriverHost::<S>::new(Arc::clone(&home)));
                let driver = Driver::<R, S, SessDriverHost<S>>::new(&l.rt, host, Source::Mailbox, l.config);
                let task = l.rt.spawn(Box::pin(driver));
                let session = SessionHandle::new(home, task);
                self.unannounced.push(Unannounced { handle, session, deadline });
            }
        }
    }
}
