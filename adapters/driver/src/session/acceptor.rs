//! The session acceptor: one task that takes streams from a listener (or any stream source)
//! and routes each through the core [`Endpoint`]: [`Endpoint::accept_link`] (refused unread
//! past the pending-handshake cap or a source's failure budget), the ClientHello read under
//! the handshake deadline, then [`Endpoint::route`]: a new session (created here, owned by
//! its own driver task; yielded by [`SessionAcceptor::accept`] once it reports ready, or
//! dropped unseen if it ends or expires first), a resume (the link goes to that session's
//! mailbox; the session checks the key before the link touches its live one), or REJECTED
//! (written, then the link is closed).
//!
//! A session is only handed to the application once its session handshake is done: an
//! initiator whose first ServerHello was lost redials as a fresh session, and the first
//! attempt must not become a session the application holds with no peer behind it. The
//! deadline is the endpoint's (the first link's handshake deadline): this task calls
//! [`Endpoint::handle_timeout`] at [`Endpoint::poll_timeout`] and ends the sessions the
//! endpoint reports expired, evicted or reclaimed.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::task::Context;
use std::time::{Duration, Instant as StdInstant};

use futures::stream::Stream;
use sotto_proto::conduit::ConfigError;
use sotto_proto::endpoint::{
    Endpoint, EndpointEvent, EndpointStats, PendingLink as EpPending, RejectReason, ResumeOutcome, Routed,
    SessionHandle as EpHandle,
};
use sotto_proto::session::Session;
use sotto_proto::wire::HELLO_LEN;
use sotto_proto::{Instant, ResumeKey, Role};

use super::handle::SessionHandle;
use super::home::{EpShared, Reach, SessDriverHost};
use super::state::SessState;
use crate::config::Config;
use crate::driver::{Driver, Source};
use crate::keys::fresh_key;
use crate::listen::{self, ListenOf, Queue, Routing};
use crate::pending::Outcome;
use crate::shared::Clock;
use crate::shutdown::{self, Closing, ShutdownReport, Sleep};
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
    /// Fresh ClientHellos turned away because `accept_backlog` sessions were waiting (or,
    /// counted in `backlog_source_full` too, `accept_backlog_per_source` from their source).
    pub backlog_full: u64,
    /// Fresh ClientHellos turned away because `accept_backlog_per_source` sessions from
    /// their source were waiting for `accept` or in their session handshake.
    pub backlog_source_full: u64,
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
    /// Waits until an instant, on the acceptor's runtime.
    sleep: Sleep,
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

    /// Close the acceptor gracefully, within `within`: stop listening (the listener is
    /// closed, handshakes in progress dropped, `accept` fails from now on), then close every
    /// session (yielded, waiting for `accept`, or still in its session handshake) with GOODBYE `code` and `reason`, and wait for their drivers
    /// to write it, at most until `within` has passed; sessions still writing then are ended
    /// and their links closed. Detached sessions end at once (their peers' resumes will be
    /// REJECTED). Returns what it closed. Call once, when the server stops; the sessions'
    /// handles stay valid (they report the end).
    pub async fn shutdown(&self, code: u32, reason: &str, within: Duration) -> ShutdownReport {
        shutdown::shutdown(&self.queue, &self.ep.clock, &self.sleep, within, |now| {
            let (closing, without) = self.ep.close_all(now, code, reason);
            (closing.into_iter().map(|c| Box::new(c) as Box<dyn Closing>).collect(), without)
        })
        .await
    }

    /// Hold the endpoint's lock until the returned guard is dropped (no new link is routed
    /// meanwhile). For tests showing that sessions never need it to move data.
    #[doc(hidden)]
    pub fn hold_endpoint_lock(&self) -> impl Sized + '_ {
        self.ep.lock()
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
    let endpoint = Endpoint::new(config.endpoint_config())?;
    let ep = Arc::new(EpShared::new(endpoint, Clock::new(&rt)));
    let routing = EpRouting::<R> {
        ep: Arc::clone(&ep),
        unannounced: HashMap::new(),
        unannounced_by_source: HashMap::new(),
        timer: None,
        armed: None,
    };
    let sleep = shutdown::sleeper(&rt);
    let (queue, guard) = listen::spawn(rt, incoming, config, routing);
    Ok(SessionAcceptor { queue, ep, sleep, _task: guard })
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
    /// New sessions not reported ready yet, with their sources: not shown to the
    /// application. Dropping one closes it.
    unannounced: HashMap<EpHandle, (SessionHandle, u64)>,
    /// How many of `unannounced` each source has (sources with none are removed).
    unannounced_by_source: HashMap<u64, usize>,
    /// Fires at the endpoint's [`poll_timeout`](Endpoint::poll_timeout).
    timer: Option<R::Timer>,
    /// The deadline `timer` is armed for.
    armed: Option<StdInstant>,
}

/// What the endpoint asked for, done once its lock is released.
enum Todo {
    /// End this session (expired, evicted or reclaimed); drop its handle if unannounced.
    End(EpHandle, Reach),
}

/// Drain the endpoint's events under its lock: the sessions to end afterwards.
fn drain(g: &mut super::home::EpInner, todo: &mut Vec<Todo>) {
    while let Some(e) = g.endpoint.poll_event() {
        match e {
            EndpointEvent::SessionHandshakeExpired(h) => {
                tracing::debug!("sotto: session handshake timed out");
                todo.push(Todo::End(h, g.reach(h)));
            }
            EndpointEvent::Evicted(h) | EndpointEvent::Reclaimed(h) => {
                tracing::debug!(?e, "sotto: detached session evicted");
                todo.push(Todo::End(h, g.reach(h)));
            }
            // Each pending link has its own timer in the listener.
            EndpointEvent::HandshakeExpired(_) => {}
        }
    }
}

impl<R: Runtime> EpRouting<R> {
    /// Act on what the endpoint asked for, outside its lock.
    fn settle(&mut self, todo: Vec<Todo>, now: Instant) {
        for Todo::End(h, reach) in todo {
            reach.end(now);
            // Dropped outside every lock: dropping a handle locks its session.
            drop(self.take_unannounced(h));
        }
    }

    /// Remove an unannounced session (and its count against its source).
    fn take_unannounced(&mut self, h: EpHandle) -> Option<(SessionHandle, u64)> {
        let (session, source) = self.unannounced.remove(&h)?;
        if let Some(n) = self.unannounced_by_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.unannounced_by_source.remove(&source);
            }
        }
        Some((session, source))
    }
}

impl<R: Runtime, S: Io> Routing<R, S> for EpRouting<R> {
    type Item = (S, u64);
    /// The endpoint's pending link and the link's source.
    type Key = (EpPending, u64);
    type Session = SessionHandle;
    type Stats = SessionAcceptorStats;

    fn admit(&mut self, l: &mut ListenOf<R, S, Self>, (io, source): (S, u64)) {
        let now = self.ep.clock.now();
        let admitted = self.ep.lock().endpoint.accept_link(now, source);
        match admitted {
            Ok(p) => l.read_hello(io, (p, source)),
            Err(refusal) => tracing::debug!(?refusal, "sotto: link refused"),
        }
    }

    fn outcome(&mut self, l: &mut ListenOf<R, S, Self>, (p, source): (EpPending, u64), outcome: Outcome<S>) {
        let now = self.ep.clock.now();
        match outcome {
            Outcome::Hello(io, hello) => self.route(l, now, p, source, io, &hello),
            Outcome::Silent => {
                tracing::debug!("sotto: no byte by the first-byte deadline; link closed");
                self.ep.lock().endpoint.pending_silent(now, p);
            }
            Outcome::BadPrefix => {
                // Counted (and charged to the source) by the endpoint as a bad hello.
                let _ = self.ep.lock().endpoint.route(now, p, &[], ResumeKey::ZERO);
            }
            Outcome::Eof => self.ep.lock().endpoint.pending_closed(p),
            Outcome::TimedOut => {
                tracing::debug!("sotto: handshake timed out");
                let mut todo = Vec::new();
                {
                    let mut g = self.ep.lock();
                    g.endpoint.handle_timeout(now);
                    g.endpoint.pending_closed(p);
                    drain(&mut g, &mut todo);
                }
                self.settle(todo, now);
            }
            Outcome::Written => {}
        }
    }

    /// Fire the endpoint's deadlines, yield the sessions that reported ready, drop those
    /// that ended or expired first.
    fn poll(&mut self, l: &mut ListenOf<R, S, Self>, cx: &mut Context<'_>) -> bool {
        self.ep.register_listener(cx.waker());
        let now = self.ep.clock.now();
        let mut todo = Vec::new();
        let (settled, next) = {
            let mut g = self.ep.lock();
            if self.armed.is_some_and(|t| t <= self.ep.clock.now_std()) {
                self.armed = None;
                g.endpoint.handle_timeout(now);
            }
            drain(&mut g, &mut todo);
            let settled = std::mem::take(&mut g.settled);
            (settled, g.endpoint.poll_timeout().and_then(|t| self.ep.clock.std_time(t)))
        };
        let mut busy = !todo.is_empty() || !settled.is_empty();
        self.settle(todo, now);
        // Outside the endpoint lock: dropping a handle takes its session's lock.
        for (h, ready) in settled {
            let Some((session, source)) = self.take_unannounced(h) else { continue };
            if ready {
                l.queue.push(session, source);
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
            busy = true;
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
        source: u64,
        io: S,
        hello: &[u8; HELLO_LEN],
    ) {
        let fresh = sotto_proto::wire::ClientHello::decode(hello).is_ok_and(|h| h.resume_key.is_none());
        // Sessions still in their handshake count against the backlog too.
        if fresh && l.queue.full(l.config.acceptor.accept_backlog.saturating_sub(self.unannounced.len())) {
            self.ep.lock().endpoint.pending_closed(p);
            return;
        }
        if fresh && source != 0 {
            let held = l.queue.ready_from(source) + self.unannounced_by_source.get(&source).copied().unwrap_or(0);
            if held >= l.config.acceptor.accept_backlog_per_source {
                {
                    let mut g = l.queue.lock();
                    g.stats.backlog_full += 1;
                    g.stats.backlog_source_full += 1;
                }
                tracing::debug!("sotto: a source's accept backlog is full; link closed");
                self.ep.lock().endpoint.pending_closed(p);
                return;
            }
        }
        let mut todo = Vec::new();
        let (routed, reach) = {
            let mut g = self.ep.lock();
            let routed = g.endpoint.route(now, p, hello, fresh_key());
            let reach = match &routed {
                Ok(Routed::Resume(r)) => Some(g.reach(r.handle())),
                _ => None,
            };
            drain(&mut g, &mut todo);
            (routed, reach)
        };
        self.settle(todo, now);
        match routed {
            Ok(Routed::New { handle, hello, key }) => self.start(l, now, handle, (io, source), &hello, key),
            Ok(Routed::Resume(resume)) => {
                let reach = reach.unwrap_or_else(Reach::none);
                if let Err((io, resume)) = reach.deliver(io, resume) {
                    // Its session is gone: refused, like an unknown key.
                    let reply = self.ep.lock().endpoint.resume_outcome(now, &resume, &ResumeOutcome::Refused);
                    let reply = reply.unwrap_or_else(|| sotto_proto::wire::ServerHello::rejected().encode());
                    l.reject(io, (p, source), &reply);
                }
            }
            Ok(Routed::Reject { reason, reply }) => {
                if reason == RejectReason::Full {
                    tracing::warn!(
                        "sotto: acceptor full (max_sessions sessions live, none detached): refusing a new session"
                    );
                }
                l.reject(io, (p, source), &reply);
            }
            Err(refusal) => tracing::debug!(?refusal, "sotto: bad hello"),
        }
    }

    /// A new session: created here from its ClientHello over `io` (from `source`), then
    /// owned by its own driver task.
    fn start<S: Io>(
        &mut self,
        l: &mut ListenOf<R, S, Self>,
        now: Instant,
        handle: EpHandle,
        (io, source): (S, u64),
        hello: &sotto_proto::wire::ClientHello,
        key: ResumeKey,
    ) {
        let mut session = match Session::new(Role::Acceptor, l.config.session_config(), &[]) {
            Ok(s) => s,
            Err(e) => {
                // Cannot happen: the configuration was validated with the endpoint.
                tracing::debug!(error = %e, "sotto: session not created");
                self.ep.lock().endpoint.free(handle);
                return;
            }
        };
        let (link, _) = session.link_up_with_hello(now, key, hello);
        let home = self.ep.start(handle, session, SessState::new(&l.config), (io, link));
        let host = Arc::new(SessDriverHost::<S>::new(home.clone()));
        let driver = Driver::<R, S, SessDriverHost<S>>::new(&l.rt, host, Source::Mailbox, l.config);
        let task = l.rt.spawn(crate::tasks::isolated(driver));
        self.unannounced.insert(handle, (SessionHandle::new(home, super::handle::SessionId::next(), task), source));
        *self.unannounced_by_source.entry(source).or_insert(0) += 1;
    }
}
