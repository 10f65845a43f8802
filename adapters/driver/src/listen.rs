//! What the raw acceptor (`acceptor`) and the session acceptor (`session::acceptor`) share:
//! the queue of new sessions the application takes with `accept`, and the listening task
//! that takes streams from the listener (pausing after a failed accept), runs each one's
//! handshake as a [`PendingLink`] under its deadline and hands what it came to to the
//! acceptor's own [`Routing`]. Pending handshakes are futures polled inside this task, so
//! dropping the task ends all of them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant as StdInstant};

use futures::stream::{FuturesUnordered, Stream, StreamExt};
use futures::task::AtomicWaker;
use sotto_proto::wire::HELLO_LEN;

use crate::config::Config;
use crate::link_hook::Arrived;
use crate::pending::{Outcome, PendingLink};
use crate::runtime::{Io, Runtime, TaskGuard, Timer};
use crate::shared::WakerList;
use crate::tasks::LiveTask;

/// After a failed `accept` (out of file descriptors, say), wait this long before the next.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// Steps the task takes in one poll before it yields to the runtime.
const BUDGET: usize = 64;

/// The counters every acceptor keeps, in its own stats type.
pub(crate) trait Counts: Copy + Default + Send + 'static {
    /// A stream was taken from the listener.
    fn link(&mut self);
    /// A new session was queued for the application.
    fn session(&mut self);
    /// A new session was turned away: `accept_backlog` sessions were waiting.
    fn backlog_full(&mut self);
    /// A new session was turned away: `accept_backlog_per_source` sessions from its source
    /// were waiting (counted in `backlog_full` too).
    fn backlog_source_full(&mut self);
    /// A link's link hook failed (returned an error, or panicked if `panicked`).
    fn link_hook_failed(&mut self, panicked: bool);
    /// A resume was refused by the acceptor's resume binding.
    fn resume_refused_by_binding(&mut self);
    /// A link over its source's pending quota was parked (see `lot`).
    fn link_parked(&mut self);
    /// A parked link was closed at its deadline.
    fn parked_expired(&mut self);
    /// A fresh session over its source's accept-backlog share was held (see `lot`).
    fn link_held(&mut self);
    /// A held link was closed at its deadline.
    fn held_expired(&mut self);
}

/// Implements [`Counts`] for a stats type with the fields `links`, `sessions`,
/// `backlog_full`, `backlog_source_full`, `link_hook_failures`, `link_hook_panics`,
/// `resumes_refused_by_binding`, `links_parked`, `parked_expired`, `links_held` and
/// `held_expired`.
macro_rules! impl_counts {
    ($stats:ty) => {
        impl $crate::listen::Counts for $stats {
            fn link(&mut self) {
                self.links += 1;
            }
            fn session(&mut self) {
                self.sessions += 1;
            }
            fn backlog_full(&mut self) {
                self.backlog_full += 1;
            }
            fn backlog_source_full(&mut self) {
                self.backlog_full += 1;
                self.backlog_source_full += 1;
            }
            fn link_hook_failed(&mut self, panicked: bool) {
                if panicked {
                    self.link_hook_panics += 1;
                } else {
                    self.link_hook_failures += 1;
                }
            }
            fn resume_refused_by_binding(&mut self) {
                self.resumes_refused_by_binding += 1;
            }
            fn link_parked(&mut self) {
                self.links_parked += 1;
            }
            fn parked_expired(&mut self) {
                self.parked_expired += 1;
            }
            fn link_held(&mut self) {
                self.links_held += 1;
            }
            fn held_expired(&mut self) {
                self.held_expired += 1;
            }
        }
    };
}
pub(crate) use impl_counts;

/// What the queue's lock guards.
pub(crate) struct QueueInner<T, C> {
    /// New sessions with their sources.
    ready: VecDeque<(T, u64)>,
    /// How many of `ready` each source has (sources with none are removed).
    ready_by_source: HashMap<u64, usize>,
    waiters: WakerList,
    /// Sources with links held for their accept-backlog share (kept by the routing).
    pub(crate) holding: HashSet<u64>,
    /// Sources in `holding` one of whose sessions `accept` took since the routing last
    /// looked: their share has room for a held link.
    pub(crate) freed: Vec<u64>,
    /// The listener ended, or the task is gone.
    done: bool,
    /// The acceptor's counters.
    pub(crate) stats: C,
}

/// New sessions waiting for the application's `accept`, with the acceptor's counters.
pub(crate) struct Queue<T, C> {
    inner: Mutex<QueueInner<T, C>>,
    /// Asked to stop listening (a shutdown).
    stopping: AtomicBool,
    /// The listening task has stopped listening (or is gone).
    stopped: AtomicBool,
    /// The listening task, woken to stop.
    task: AtomicWaker,
}

impl<T, C: Counts> Queue<T, C> {
    fn new() -> Self {
        let inner = QueueInner {
            ready: VecDeque::new(),
            ready_by_source: HashMap::new(),
            waiters: WakerList::default(),
            holding: HashSet::new(),
            freed: Vec::new(),
            done: false,
            stats: C::default(),
        };
        Self {
            inner: Mutex::new(inner),
            stopping: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            task: AtomicWaker::new(),
        }
    }

    /// Stop listening: the task drops the listener and the handshakes in progress; `accept`
    /// fails from now on, and sessions that finish their handshake later are not queued.
    /// Returns the sessions that were waiting for `accept` (drop them outside every lock).
    pub(crate) fn stop(&self) -> Vec<T> {
        self.stopping.store(true, Ordering::Release);
        let ready: Vec<T> = {
            let mut g = self.lock();
            g.done = true;
            g.waiters.wake_all();
            g.ready_by_source.clear();
            g.ready.drain(..).map(|(t, _)| t).collect()
        };
        self.task.wake();
        ready
    }

    /// Whether the listening task has stopped listening.
    pub(crate) fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, QueueInner<T, C>> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next new session. Cancel-safe. Fails once the stream source has ended and every
    /// session was taken.
    pub(crate) async fn accept(&self) -> io::Result<T> {
        poll_fn(|cx| {
            let mut g = self.lock();
            if let Some((s, source)) = g.ready.pop_front() {
                if let Some(n) = g.ready_by_source.get_mut(&source) {
                    *n -= 1;
                    if *n == 0 {
                        g.ready_by_source.remove(&source);
                    }
                }
                if g.holding.contains(&source) {
                    // Room in the source's share: the listening task routes a held link.
                    g.freed.push(source);
                    drop(g);
                    self.task.wake();
                }
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

    /// Whether `backlog` sessions are waiting already (then counted as turned away).
    pub(crate) fn full(&self, backlog: usize) -> bool {
        let mut g = self.lock();
        let full = g.ready.len() >= backlog;
        if full {
            g.stats.backlog_full();
        }
        full
    }

    /// How many new sessions from `source` wait for `accept`.
    pub(crate) fn ready_from(&self, source: u64) -> usize {
        self.lock().ready_by_source.get(&source).copied().unwrap_or(0)
    }

    /// Queue a new session from `source` (0 if unknown) for the application; after a
    /// shutdown began it is dropped instead (closed: the shutdown closed it already).
    pub(crate) fn push(&self, session: T, source: u64) {
        let mut g = self.lock();
        if self.stopping.load(Ordering::Acquire) {
            drop(g);
            // Outside the queue's lock: dropping a handle locks its session.
            drop(session);
            return;
        }
        g.stats.session();
        g.ready.push_back((session, source));
        *g.ready_by_source.entry(source).or_insert(0) += 1;
        g.waiters.wake_all();
    }

    /// No more sessions will come.
    fn end(&self) {
        let mut g = self.lock();
        g.done = true;
        g.waiters.wake_all();
    }
}

/// How an acceptor admits and routes links; the listening task does the rest.
pub(crate) trait Routing<R: Runtime, S: Io>: Send + Unpin + 'static {
    /// What the listener yields for each stream.
    type Item: Send + 'static;
    /// The acceptor's name for a pending link, handed back with its outcome.
    type Key: Unpin + Send + 'static;
    /// What `accept` yields.
    type Session: Send + 'static;
    /// The acceptor's counters.
    type Stats: Counts;

    /// A stream taken from the listener (already counted): start its handshake with
    /// [`Listen::read_hello`], or drop it to close it unread.
    fn admit(&mut self, l: &mut ListenOf<R, S, Self>, item: Self::Item);

    /// The handshake of the link named `key` came to `outcome`.
    fn outcome(&mut self, l: &mut ListenOf<R, S, Self>, key: Self::Key, outcome: Outcome<S>);

    /// Any other work of the acceptor's own (its core's deadlines and events: sessions
    /// finishing or missing their session handshake after the hello was routed); registers
    /// `cx` for what it waits on. Returns whether it did work.
    fn poll(&mut self, _l: &mut ListenOf<R, S, Self>, _cx: &mut Context<'_>) -> bool {
        false
    }
}

/// The [`Listen`] a [`Routing`] works with.
pub(crate) type ListenOf<R, S, H> =
    Listen<R, S, <H as Routing<R, S>>::Key, <H as Routing<R, S>>::Session, <H as Routing<R, S>>::Stats>;

/// What a [`Routing`] may use: the runtime, the configuration, the queue of new sessions and
/// the pending handshakes.
pub(crate) struct Listen<R: Runtime, S, K, T, C> {
    pub(crate) rt: R,
    pub(crate) config: Config,
    pub(crate) queue: Arc<Queue<T, C>>,
    pending: FuturesUnordered<PendingLink<S, R::Timer, K>>,
}

impl<R: Runtime, S: Io, K: Unpin, T, C> Listen<R, S, K, T, C> {
    /// Read the link's ClientHello (after its link hook, if it has one) within the handshake
    /// timeout, its first byte within the first-byte timeout.
    pub(crate) fn read_hello(&mut self, io: impl Into<Arrived<S>>, key: K) {
        let io = io.into();
        let now = self.rt.now();
        let whole = deadline(now, self.config.protocol.handshake_timeout);
        let first = deadline(now, self.config.acceptor.first_byte_timeout);
        self.pending.push(PendingLink::hello(io, self.rt.timer(), first, whole, key));
    }

    /// Answer `reply` (a REJECTED ServerHello) within the drain timeout, then close the link.
    pub(crate) fn reject(&mut self, io: S, key: K, reply: &[u8; HELLO_LEN]) {
        tracing::debug!("sotto: answering REJECTED");
        let deadline = deadline(self.rt.now(), self.config.protocol.drain_timeout);
        self.pending.push(PendingLink::reject(io, self.rt.timer(), deadline, key, reply));
    }
}

/// The queue a [`Routing`]'s acceptor takes its sessions from.
pub(crate) type QueueOf<R, S, H> = Arc<Queue<<H as Routing<R, S>>::Session, <H as Routing<R, S>>::Stats>>;

/// Spawn the listening task on `rt`; returns the queue it fills and the task's guard.
pub(crate) fn spawn<R, S, H, St>(rt: R, incoming: St, config: Config, routing: H) -> (QueueOf<R, S, H>, TaskGuard)
where
    R: Runtime,
    S: Io,
    H: Routing<R, S>,
    St: Stream<Item = io::Result<H::Item>> + Send + 'static,
{
    let queue = Arc::new(Queue::new());
    let task = ListenTask {
        incoming: Box::pin(incoming),
        incoming_done: false,
        pause: None,
        listen: Listen { rt: rt.clone(), config, queue: Arc::clone(&queue), pending: FuturesUnordered::new() },
        routing,
        _live: LiveTask::new(),
    };
    let guard = rt.spawn(crate::tasks::isolated(task));
    (queue, guard)
}

type Incoming<T> = Pin<Box<dyn Stream<Item = io::Result<T>> + Send>>;

struct ListenTask<R: Runtime, S: Io, H: Routing<R, S>> {
    incoming: Incoming<H::Item>,
    incoming_done: bool,
    pause: Option<R::Timer>,
    listen: ListenOf<R, S, H>,
    routing: H,
    _live: LiveTask,
}

impl<R: Runtime, S: Io, H: Routing<R, S>> ListenTask<R, S, H> {
    fn step(&mut self, cx: &mut Context<'_>) -> bool {
        let mut busy = false;
        if !self.incoming_done && self.listen.queue.stopping.load(Ordering::Acquire) {
            // Shutdown: the listener is closed, handshakes in progress dropped.
            self.incoming = Box::pin(futures::stream::empty());
            self.incoming_done = true;
            self.pause = None;
            self.listen.pending = FuturesUnordered::new();
            self.listen.queue.stopped.store(true, Ordering::Release);
        }
        if let Some(t) = self.pause.as_mut() {
            if t.poll_expired(cx).is_ready() {
                self.pause = None;
            }
        }
        if !self.incoming_done && self.pause.is_none() {
            match self.incoming.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(item))) => {
                    busy = true;
                    self.listen.queue.lock().stats.link();
                    self.routing.admit(&mut self.listen, item);
                }
                Poll::Ready(Some(Err(e))) => {
                    busy = true;
                    tracing::debug!(error = %e, "sotto: accept failed");
                    let mut t = self.listen.rt.timer();
                    t.reset(deadline(self.listen.rt.now(), ACCEPT_ERROR_PAUSE));
                    self.pause = Some(t);
                }
                Poll::Ready(None) => {
                    busy = true;
                    self.incoming_done = true;
                    self.listen.queue.end();
                }
                Poll::Pending => {}
            }
        }
        // A pending link hands its key back exactly once, with its outcome.
        if let Poll::Ready(Some((Some(key), outcome))) = self.listen.pending.poll_next_unpin(cx) {
            busy = true;
            self.routing.outcome(&mut self.listen, key, outcome);
        }
        busy |= self.routing.poll(&mut self.listen, cx);
        busy
    }
}

/// `d` after `now` (`now`, if that is past the clock's range).
fn deadline(now: StdInstant, d: Duration) -> StdInstant {
    now.checked_add(d).unwrap_or(now)
}

impl<R: Runtime, S: Io, H: Routing<R, S>> Future for ListenTask<R, S, H> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.listen.queue.task.register(cx.waker());
        for _ in 0..BUDGET {
            if !this.step(cx) {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<R: Runtime, S: Io, H: Routing<R, S>> Drop for ListenTask<R, S, H> {
    fn drop(&mut self) {
        self.listen.queue.stopped.store(true, Ordering::Release);
        self.listen.queue.end();
    }
}
