//! The raw stable-conduit acceptor (the vox-compatible API): one task that takes streams from
//! a listener (or any stream source), reads each one's ClientHello under the handshake
//! deadline, and routes it (see `router`): a new session (yielded by [`Acceptor::accept`]), a
//! resume of a live session, or REJECTED. (The session-layer acceptor routes through the core
//! endpoint instead; see `session::acceptor`.)
//! Pending handshakes are futures polled inside this task, so dropping the [`Acceptor`]
//! ends all of them.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant as StdInstant};

use futures::stream::{FuturesUnordered, Stream, StreamExt};
use sotto::conduit::ConfigError;
use sotto::wire::ClientHello;
use sotto::{Conduit, Role};

use crate::config::Config;
use crate::driver::{Driver, Source};
use crate::handle::StableConduit;
use crate::pending::{Outcome, PendingLink};
use crate::raw::Shared;
use crate::router::{LinkSlot, NewLink, Registration, Route, Router};
use crate::shared::WakerList;
use crate::tasks::LiveTask;
use crate::{Io, Runtime, TaskGuard, Timer};

type Pending<S, T> = PendingLink<S, T, ()>;

/// After a failed `accept` (out of file descriptors, say), wait this long before the next.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
const BUDGET: usize = 64;

/// Counters of an acceptor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcceptorStats {
    /// Streams taken from the listener.
    pub links: u64,
    /// Streams closed at once because `max_pending_handshakes` were waiting.
    pub refused: u64,
    /// Streams closed for sending no ClientHello within `handshake_timeout`.
    pub handshake_timeouts: u64,
    /// Streams closed for a bad ClientHello (size, magic, flags) or EOF before it.
    pub bad_hellos: u64,
    /// New sessions started.
    pub sessions: u64,
    /// Fresh ClientHellos turned away because `accept_backlog` sessions were waiting.
    pub backlog_full: u64,
    /// Resumes handed to their session.
    pub resumes: u64,
    /// Resumes answered REJECTED (unknown or expired key).
    pub rejected: u64,
}

#[derive(Default)]
struct AcceptorInner {
    ready: VecDeque<StableConduit>,
    waiters: WakerList,
    /// The listener ended, or the task is gone.
    done: bool,
    stats: AcceptorStats,
}

#[derive(Default)]
struct AcceptorShared {
    inner: Mutex<AcceptorInner>,
}

impl AcceptorShared {
    fn lock(&self) -> MutexGuard<'_, AcceptorInner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Serves a listener: yields each new session once its first link is established; resumes
/// go to their sessions without the application seeing them. Dropping the acceptor stops
/// listening and ends the handshakes in progress; sessions already yielded live on (each
/// until its own handle is dropped), those not yet yielded end.
pub struct Acceptor {
    shared: Arc<AcceptorShared>,
    _task: TaskGuard,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor").field("stats", &self.stats()).finish()
    }
}

impl Acceptor {
    /// The next new session. Cancel-safe. Fails once the stream source has ended and every
    /// session was taken.
    pub async fn accept(&self) -> io::Result<StableConduit> {
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
    pub fn stats(&self) -> AcceptorStats {
        self.shared.lock().stats
    }
}

/// Start serving `incoming` (each item a freshly accepted stream) on runtime `rt`.
pub fn serve<R, S, St>(rt: R, incoming: St, config: Config) -> Result<Acceptor, ConfigError>
where
    R: Runtime,
    S: Io,
    St: Stream<Item = io::Result<S>> + Send + 'static,
{
    config.conduit.validate()?;
    let shared = Arc::new(AcceptorShared::default());
    let task = AcceptorTask {
        rt: rt.clone(),
        incoming: Box::pin(incoming),
        incoming_done: false,
        pause: None,
        pending: FuturesUnordered::new(),
        router: Arc::new(Router::new()),
        shared: Arc::clone(&shared),
        config,
        _live: LiveTask::new(),
    };
    let guard = rt.spawn(Box::pin(task));
    Ok(Acceptor { shared, _task: guard })
}

type Incoming<S> = Pin<Box<dyn Stream<Item = io::Result<S>> + Send>>;

struct AcceptorTask<R: Runtime, S> {
    rt: R,
    incoming: Incoming<S>,
    incoming_done: bool,
    pause: Option<R::Timer>,
    pending: FuturesUnordered<Pending<S, R::Timer>>,
    router: Arc<Router<S>>,
    shared: Arc<AcceptorShared>,
    config: Config,
    _live: LiveTask,
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
                Poll::Ready(Some(Ok(io))) => {
                    busy = true;
                    self.shared.lock().stats.links += 1;
                    if self.pending.len() >= self.config.max_pending_handshakes {
                        self.shared.lock().stats.refused += 1;
                        drop(io);
                    } else {
                        let deadline = self.deadline(self.config.conduit.handshake_timeout.into());
                        self.pending.push(PendingLink::hello(io, self.rt.timer(), deadline, ()));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    busy = true;
                    tracing::debug!(error = %e, "sotto: accept failed");
                    let mut t = self.rt.timer();
                    t.reset(self.deadline(ACCEPT_ERROR_PAUSE));
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
        if let Poll::Ready(Some((_, outcome))) = self.pending.poll_next_unpin(cx) {
            busy = true;
            self.route(outcome);
        }
        busy
    }

    fn deadline(&self, d: Duration) -> StdInstant {
        let now = StdInstant::now();
        now.checked_add(d).unwrap_or(now)
    }

    fn route(&mut self, outcome: Outcome<S>) {
        let (io, hello) = match outcome {
            Outcome::Hello(io, bytes) => match ClientHello::decode(&bytes) {
                Ok(hello) => (io, hello),
                Err(_) => {
                    self.shared.lock().stats.bad_hellos += 1;
                    return;
                }
            },
            Outcome::TimedOut => {
                tracing::debug!("sotto: handshake timed out");
                self.shared.lock().stats.handshake_timeouts += 1;
                return;
            }
            Outcome::BadPrefix | Outcome::Eof => {
                self.shared.lock().stats.bad_hellos += 1;
                return;
            }
            Outcome::Written => return,
        };
        match self.router.route(&hello) {
            Route::Fresh => self.start_session(io, hello),
            Route::Resume(slot) => {
                self.shared.lock().stats.resumes += 1;
                slot.put(NewLink { io, hello });
            }
            Route::Reject => {
                tracing::debug!("sotto: unknown resume key, answering REJECTED");
                self.shared.lock().stats.rejected += 1;
                let deadline = self.deadline(self.config.drain_timeout);
                self.pending.push(PendingLink::reject(io, self.rt.timer(), deadline, ()));
            }
        }
    }

    fn start_session(&mut self, io: S, hello: ClientHello) {
        if self.shared.lock().ready.len() >= self.config.accept_backlog {
            self.shared.lock().stats.backlog_full += 1;
            return;
        }
        let Ok(conduit) = Conduit::new(Role::Acceptor, self.config.conduit) else { return };
        let shared = Arc::new(Shared::new(conduit, &self.config));
        let slot = Arc::new(LinkSlot::new(Some(NewLink { io, hello })));
        let id = self.router.insert(Arc::clone(&slot));
        let registration = Registration { router: Arc::clone(&self.router), id, slot };
        let driver =
            Driver::<R, S, Shared>::new(&self.rt, Arc::clone(&shared), Source::Router(registration), self.config);
        let task = self.rt.spawn(Box::pin(driver));
        let session = StableConduit::new(shared, task);
        let mut g = self.shared.lock();
        g.stats.sessions += 1;
        g.ready.push_back(session);
        g.waiters.wake_all();
    }
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
