//! The session acceptor: one task that takes streams from a listener (or any stream source)
//! and routes each through the core [`Endpoint`]: [`Endpoint::accept_link`] (refused unread
//! past the pending-handshake cap or a source's failure budget), the ClientHello read under
//! the handshake deadline, then [`Endpoint::route`]: a new session (its driver task is
//! spawned and the session is yielded by [`SessionAcceptor::accept`]), a resume (the link
//! goes to that session's driver through the endpoint lock), or REJECTED (written, then the
//! link is closed).

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant as StdInstant};

use futures::stream::{FuturesUnordered, Stream, StreamExt};
use sotto::conduit::ConfigError;
use sotto::endpoint::{Endpoint, EndpointStats, PendingLink as EpPending, Routed};
use sotto::wire::{ClientHello, HELLO_LEN};
use sotto::{Instant, ResumeKey};

use super::handle::SessionHandle;
use super::home::{EpHome, EpShared, SessDriverHost, SessionHome};
use crate::config::Config;
use crate::driver::{Driver, Source};
use crate::keys::fresh_key;
use crate::pending::{Outcome, PendingLink};
use crate::shared::WakerList;
use crate::tasks::LiveTask;
use crate::{Io, Runtime, TaskGuard, Timer};

/// After a failed `accept` (out of file descriptors, say), wait this long before the next.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
const BUDGET: usize = 64;

/// Counters of a session acceptor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionAcceptorStats {
    /// Streams taken from the listener.
    pub links: u64,
    /// New sessions handed to the application's queue.
    pub sessions: u64,
    /// Fresh ClientHellos turned away because `accept_backlog` sessions were waiting.
    pub backlog_full: u64,
    /// The endpoint's counters: links refused, bad hellos, expired handshakes, sessions
    /// created, resumes routed, REJECTED replies, evictions, live sessions and pending links.
    pub endpoint: EndpointStats,
}

#[derive(Default)]
struct AccInner {
    ready: VecDeque<SessionHandle>,
    waiters: WakerList,
    /// The listener ended, or the task is gone.
    done: bool,
    stats: SessionAcceptorStats,
}

#[derive(Default)]
struct AccShared {
    inner: Mutex<AccInner>,
}

impl AccShared {
    fn lock(&self) -> MutexGuard<'_, AccInner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Serves a listener with the session API: yields each new session as its first link
/// arrives; resumes go to their sessions without the application seeing them. Dropping the
/// acceptor stops listening and ends the handshakes in progress; sessions already yielded
/// live on (each until its own handle is dropped), those not yet yielded are closed.
pub struct SessionAcceptor {
    shared: Arc<AccShared>,
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
        poll_fn(|cx| {
            let mut g = self.shared.lock();
            if let Some(s) = g.ready.pop_front() {
                return Poll::Ready(Ok(s));
            }
            if g.done {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::NotConnected, "the listener has ended")));
            }
            g.waiters.register(cx);
            Poll::Pending
        })
        .await
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> SessionAcceptorStats {
        let mut s = self.shared.lock().stats;
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
    let shared = Arc::new(AccShared::default());
    let task = AcceptorTask {
        rt: rt.clone(),
        incoming: Box::pin(incoming),
        incoming_done: false,
        pause: None,
        pending: FuturesUnordered::new(),
        ep: Arc::clone(&ep),
        shared: Arc::clone(&shared),
        config,
        _live: LiveTask::new(),
    };
    let guard = rt.spawn(Box::pin(task));
    Ok(SessionAcceptor { shared, ep, _task: guard })
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

type Incoming<S> = Pin<Box<dyn Stream<Item = io::Result<(S, u64)>> + Send>>;

struct AcceptorTask<R: Runtime, S> {
    rt: R,
    incoming: Incoming<S>,
    incoming_done: bool,
    pause: Option<R::Timer>,
    pending: FuturesUnordered<PendingLink<S, R::Timer, EpPending>>,
    ep: Arc<EpShared>,
    shared: Arc<AccShared>,
    config: Config,
    _live: LiveTask,
}

enum After<S> {
    Nothing,
    Spawn(sotto::endpoint::SessionHandle),
    Reject(S),
}

impl<R: Runtime, S: Io> AcceptorTask<R, S> {
    fn step(&mut self, cx: &mut Context<'_>) -> bool {
        let mut busy = false;
        if let Some(t) = self.pause.as_mut() {
            if t.poll_expired(cx).is_ready() {
                self.pause = None;
            }
        }
        if !self.incoming_done && self.pause.is_none() {
            match self.incoming.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok((io, source)))) => {
                    busy = true;
                    self.shared.lock().stats.links += 1;
                    let now = self.ep.clock.now();
                    let admitted = self.ep.lock().endpoint.accept_link(now, source);
                    match admitted {
                        Ok(p) => {
                            let deadline = deadline(self.config.conduit.handshake_timeout.into());
                            self.pending.push(PendingLink::hello(io, self.rt.timer(), deadline, p));
                        }
                        Err(refusal) => tracing::debug!(?refusal, "sotto: link refused"),
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    busy = true;
                    tracing::debug!(error = %e, "sotto: accept failed");
                    let mut t = self.rt.timer();
                    t.reset(deadline(ACCEPT_ERROR_PAUSE));
                    self.pause = Some(t);
                }
                Poll::Ready(None) => {
                    busy = true;
                    self.incoming_done = true;
                    let mut g = self.shared.lock();
                    g.done = true;
                    g.waiters.wake_all();
                }
                Poll::Pending => {}
            }
        }
        if let Poll::Ready(Some((Some(p), outcome))) = self.pending.poll_next_unpin(cx) {
            busy = true;
            self.on_outcome(p, outcome);
        }
        busy
    }

    fn on_outcome(&mut self, p: EpPending, outcome: Outcome<S>) {
        let now = self.ep.clock.now();
        match outcome {
            Outcome::Hello(io, hello) => self.route(now, p, io, &hello),
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

    fn route(&mut self, now: Instant, p: EpPending, io: S, hello: &[u8; HELLO_LEN]) {
        let fresh = ClientHello::decode(hello).is_ok_and(|h| h.resume_key.is_none());
        if fresh && self.shared.lock().ready.len() >= self.config.accept_backlog {
            self.shared.lock().stats.backlog_full += 1;
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
            After::Reject(io) => {
                tracing::debug!("sotto: unknown resume key, answering REJECTED");
                let deadline = deadline(self.config.drain_timeout);
                self.pending.push(PendingLink::reject(io, self.rt.timer(), deadline, p));
            }
            After::Spawn(handle) => {
                let home: Arc<dyn SessionHome> = Arc::new(EpHome { ep: Arc::clone(&self.ep), handle });
                let host = Arc::new(SessDriverHost::<S>::new(Arc::clone(&home)));
                let driver = Driver::<R, S, SessDriverHost<S>>::new(&self.rt, host, Source::Mailbox, self.config);
                let task = self.rt.spawn(Box::pin(driver));
                let session = SessionHandle::new(home, task);
                let mut g = self.shared.lock();
                g.stats.sessions += 1;
                g.ready.push_back(session);
                g.waiters.wake_all();
            }
        }
    }
}

fn deadline(d: Duration) -> StdInstant {
    let now = StdInstant::now();
    now.checked_add(d).unwrap_or(now)
}

impl<R: Runtime, S: Io> Future for AcceptorTask<R, S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        for _ in 0..BUDGET {
            if !this.step(cx) {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<R: Runtime, S> Drop for AcceptorTask<R, S> {
    fn drop(&mut self) {
        let mut g = self.shared.lock();
        g.done = true;
        g.waiters.wake_all();
    }
}
