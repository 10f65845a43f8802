//! The raw stable-conduit acceptor (the vox-compatible API): one task that takes streams from
//! a listener (or any stream source), reads each one's ClientHello under the handshake
//! deadline, and routes it (see `router`): a new session (yielded by [`Acceptor::accept`]), a
//! resume of a live session, or REJECTED. (The session-layer acceptor routes through the core
//! endpoint instead; see `session::acceptor`.) The task itself, shared with the session
//! acceptor, is in `listen`: pending handshakes are futures polled inside it, so dropping
//! the [`Acceptor`] ends all of them.

use std::io;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::stream::Stream;
use sotto_proto::conduit::ConfigError;
use sotto_proto::wire::ClientHello;
use sotto_proto::{Conduit, Role};

use crate::config::Config;
use crate::driver::{Driver, Source};
use crate::handle::StableConduit;
use crate::listen::{self, ListenOf, Queue, Routing};
use crate::pending::Outcome;
use crate::raw::Shared;
use crate::router::{LinkSlot, NewLink, Registration, Route, Router};
use crate::shared::Clock;
use crate::shutdown::{self, Closing, ShutdownReport, Sleep};
use crate::{Io, Runtime, TaskGuard};

/// Counters of an acceptor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AcceptorStats {
    /// Streams taken from the listener.
    pub links: u64,
    /// Streams closed at once because `max_pending_handshakes` were waiting.
    pub refused: u64,
    /// Streams closed for sending no ClientHello within `handshake_timeout`, or not one byte
    /// within `first_byte_timeout`.
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

listen::impl_counts!(AcceptorStats);

/// Serves a listener: yields each new session once its first link is established; resumes
/// go to their sessions without the application seeing them. Dropping the acceptor stops
/// listening and ends the handshakes in progress; sessions already yielded live on (each
/// until its own handle is dropped), those not yet yielded end.
pub struct Acceptor {
    queue: Arc<Queue<StableConduit, AcceptorStats>>,
    /// Every session started, for a shutdown.
    sessions: Arc<Mutex<Started>>,
    clock: Clock,
    sleep: Sleep,
    _task: TaskGuard,
}

/// The sessions an acceptor started (weak: each is owned by its driver and handles).
#[derive(Default)]
struct Started {
    list: Vec<Weak<Shared>>,
    /// A shutdown began: start no more.
    shutting_down: bool,
}

impl Started {
    /// Remember `s`; the list is pruned of ended sessions as it grows, so it stays within
    /// twice the live sessions.
    fn push(&mut self, s: &Arc<Shared>) {
        if self.list.len() == self.list.capacity() {
            self.list.retain(|w| w.strong_count() > 0);
        }
        self.list.push(Arc::downgrade(s));
    }
}

/// A raw session closing with GOODBYE during a shutdown.
struct RawClosing(Arc<Shared>);

impl Closing for RawClosing {
    fn done(&self) -> bool {
        self.0.lock_inner().common.driver_done
    }

    fn force(&self) {
        let now = self.0.now();
        let mut g = self.0.lock_inner();
        if !g.conduit.is_ended() {
            g.conduit.end(now, sotto_proto::SessionEnd::Evicted);
        }
        g.common.exit_now = true;
        g.common.wake_driver();
        g.wake_all();
    }
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
        self.queue.accept().await
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> AcceptorStats {
        self.queue.lock().stats
    }

    /// Close the acceptor gracefully, within `within`: stop listening (the listener is
    /// closed, handshakes in progress dropped, `accept` fails from now on), then close every
    /// session it started with GOODBYE `code` and `reason` (to a peer with sotto's
    /// extensions; a vox peer's session, or a detached one, ends at once), and wait for their
    /// drivers to write it, at most until `within` has passed; sessions still writing then
    /// are ended and their links closed. Returns what it closed. Call once, when the server
    /// stops; the sessions' handles stay valid (they report the end).
    pub async fn shutdown(&self, code: u32, reason: &str, within: Duration) -> ShutdownReport {
        shutdown::shutdown(&self.queue, &self.clock, &self.sleep, within, |now| {
            let sessions: Vec<Arc<Shared>> = {
                let mut g = self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                g.shutting_down = true;
                g.list.drain(..).filter_map(|w| w.upgrade()).collect()
            };
            let mut closing: Vec<Box<dyn Closing>> = Vec::new();
            let mut without = 0;
            for s in sessions {
                let mut g = s.lock_inner();
                if g.conduit.is_ended() {
                    continue;
                }
                g.conduit.close(now, code, reason);
                g.common.wake_driver();
                g.wake_all();
                if g.conduit.is_ended() {
                    without += 1;
                } else {
                    drop(g);
                    closing.push(Box::new(RawClosing(s)));
                }
            }
            (closing, without)
        })
        .await
    }
}

/// Start serving `incoming` (each item a freshly accepted stream) on runtime `rt`.
pub fn serve<R, S, St>(rt: R, incoming: St, config: Config) -> Result<Acceptor, ConfigError>
where
    R: Runtime,
    S: Io,
    St: Stream<Item = io::Result<S>> + Send + 'static,
{
    config.validate()?;
    let sessions = Arc::new(Mutex::new(Started::default()));
    let routing = RawRouting { router: Arc::new(Router::new()), sessions: Arc::clone(&sessions) };
    let (clock, sleep) = (Clock::new(&rt), shutdown::sleeper(&rt));
    let (queue, guard) = listen::spawn(rt, incoming, config, routing);
    Ok(Acceptor { queue, sessions, clock, sleep, _task: guard })
}

/// The raw acceptor's routing: by its own resume-key router.
struct RawRouting<S> {
    router: Arc<Router<S>>,
    sessions: Arc<Mutex<Started>>,
}

impl<R: Runtime, S: Io> Routing<R, S> for RawRouting<S> {
    type Item = S;
    type Key = ();
    type Session = StableConduit;
    type Stats = AcceptorStats;

    fn admit(&mut self, l: &mut ListenOf<R, S, Self>, io: S) {
        if l.pending() >= l.config.acceptor.max_pending_handshakes {
            l.queue.lock().stats.refused += 1;
            drop(io);
        } else {
            l.read_hello(io, ());
        }
    }

    fn outcome(&mut self, l: &mut ListenOf<R, S, Self>, (): (), outcome: Outcome<S>) {
        let (io, hello) = match outcome {
            Outcome::Hello(io, bytes) => match ClientHello::decode(&bytes) {
                Ok(hello) => (io, hello),
                Err(_) => {
                    l.queue.lock().stats.bad_hellos += 1;
                    return;
                }
            },
            Outcome::TimedOut | Outcome::Silent => {
                tracing::debug!("sotto: handshake timed out");
                l.queue.lock().stats.handshake_timeouts += 1;
                return;
            }
            Outcome::BadPrefix | Outcome::Eof => {
                l.queue.lock().stats.bad_hellos += 1;
                return;
            }
            Outcome::Written => return,
        };
        match self.router.route(&hello) {
            Route::Fresh => self.start_session(l, io, hello),
            Route::Resume(slot) => {
                l.queue.lock().stats.resumes += 1;
                slot.put(NewLink { io, hello });
            }
            Route::Reject => {
                l.queue.lock().stats.rejected += 1;
                l.reject(io, (), &sotto_proto::wire::ServerHello::rejected().encode());
            }
        }
    }
}

impl<S: Io> RawRouting<S> {
    fn start_session<R: Runtime>(&self, l: &ListenOf<R, S, Self>, io: S, hello: ClientHello) {
        if l.queue.full(l.config.acceptor.accept_backlog) {
            return;
        }
        let Ok(conduit) = Conduit::new(Role::Acceptor, l.config.conduit_config()) else { return };
        let shared = Arc::new(Shared::new(conduit, &l.config, Clock::new(&l.rt)));
        {
            let mut started = self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if started.shutting_down {
                // Routed as the acceptor shut down: the link is closed, no session starts.
                return;
            }
            started.push(&shared);
        }
        let slot = Arc::new(LinkSlot::new(Some(NewLink { io, hello })));
        let id = self.router.insert(Arc::clone(&slot));
        let registration = Registration { router: Arc::clone(&self.router), id, slot };
        let driver = Driver::<R, S, Shared>::new(&l.rt, Arc::clone(&shared), Source::Router(registration), l.config);
        let task = l.rt.spawn(crate::tasks::isolated(driver));
        l.queue.push(StableConduit::new(shared, task), 0);
    }
}
