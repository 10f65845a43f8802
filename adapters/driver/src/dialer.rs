//! The initiator's link source: dial with the application's connector, back off with full
//! jitter between failures, give the first connect a deadline.

use std::future::Future;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant as StdInstant};

use crate::backoff::{is_transient, Backoff, Jitter, Permanent};
use crate::config::Config;

/// A boxed connect attempt.
pub(crate) type DialFuture<S> = Pin<Box<dyn Future<Output = io::Result<S>> + Send + 'static>>;
/// The application's connector, boxed.
pub(crate) type Connector<S> = Box<dyn FnMut() -> DialFuture<S> + Send + 'static>;

/// What a dial produced.
pub(crate) enum Dialed<S> {
    /// A fresh stream: attach it.
    Link(S),
    /// The attempt failed; the next one waits for the backoff, this long.
    Failed(io::Error, Duration),
    /// No dial can succeed: the first connect met a permanent error (`permanent`: a panic,
    /// or an error retrying cannot fix) or its deadline passed; or a redial met an error
    /// the connector marked [`permanent`](crate::backoff::permanent) (`permanent` is true).
    GiveUp {
        /// The attempt's error.
        error: io::Error,
        /// Whether retrying could never help (the connect fails with this error rather
        /// than as timed out).
        permanent: bool,
    },
}

/// The error a panicking connector (or connect future) becomes. A first connect gives up at
/// once; after a link has attached, the next attempt follows the backoff, as after any
/// failed dial.
fn connector_panicked() -> io::Error {
    io::Error::other("the connector panicked")
}

pub(crate) struct Dialer<S> {
    connector: Connector<S>,
    attempt: Option<(DialFuture<S>, StdInstant)>,
    not_before: StdInstant,
    backoff: Backoff,
    jitter: Jitter,
    dial_timeout: Duration,
    /// Until the first link attaches: when `connect` gives up.
    connect_deadline: Option<StdInstant>,
}

impl<S> Dialer<S> {
    pub(crate) fn new(connector: Connector<S>, config: &Config, now: StdInstant, jitter_seed: u64) -> Self {
        Self {
            connector,
            attempt: None,
            not_before: now,
            backoff: Backoff::new(config.dial.backoff_initial, config.dial.backoff_max),
            jitter: Jitter::from_seed(jitter_seed),
            dial_timeout: config.protocol.handshake_timeout,
            connect_deadline: now.checked_add(config.dial.connect_timeout),
        }
    }

    /// Whether the first connect is still in progress (no link has attached yet).
    pub(crate) fn connecting(&self) -> bool {
        self.connect_deadline.is_some()
    }

    /// Whether the first connect's deadline has passed.
    pub(crate) fn connect_expired(&self, now: StdInstant) -> bool {
        self.connect_deadline.is_some_and(|d| now >= d)
    }

    /// The next instant at which [`poll_dial`](Self::poll_dial) has time-based work.
    pub(crate) fn deadline(&self, linked: bool) -> Option<StdInstant> {
        let own = match &self.attempt {
            Some((_, deadline)) => Some(*deadline),
            None if linked => None,
            None => Some(self.not_before),
        };
        match (own, self.connect_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Dial when no link exists: wait out the backoff, start an attempt, poll it.
    pub(crate) fn poll_dial(&mut self, cx: &mut Context<'_>, now: StdInstant) -> Poll<Dialed<S>> {
        if self.attempt.is_none() {
            if now < self.not_before {
                return Poll::Pending;
            }
            let deadline = now.checked_add(self.dial_timeout).unwrap_or(now);
            // The connector is the application's code: a panic in it (or in the future it
            // returns, below) fails this attempt like an I/O error and never reaches the
            // session's state (SCENARIOS A9).
            match catch_unwind(AssertUnwindSafe(|| (self.connector)())) {
                Ok(fut) => self.attempt = Some((fut, deadline)),
                Err(_) => return Poll::Ready(self.failed(now, connector_panicked(), true)),
            }
            tracing::debug!("sotto: dialing");
        }
        let Some((fut, deadline)) = self.attempt.as_mut() else { return Poll::Pending };
        let result = match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Err(_) => {
                // Its `Drop` is the application's code too.
                let attempt = self.attempt.take();
                let _ = catch_unwind(AssertUnwindSafe(move || drop(attempt)));
                return Poll::Ready(self.failed(now, connector_panicked(), true));
            }
            Ok(Poll::Ready(r)) => r,
            Ok(Poll::Pending) if now >= *deadline => Err(io::Error::new(io::ErrorKind::TimedOut, "dial timed out")),
            Ok(Poll::Pending) => return Poll::Pending,
        };
        self.attempt = None;
        Poll::Ready(match result {
            Ok(s) => Dialed::Link(s),
            Err(e) => self.failed(now, e, false),
        })
    }

    /// An attempt failed with `e`: give up (first connect: a panic, a permanent error or past
    /// its deadline; redial: an error marked permanent) or back off before the next one.
    /// After a link has attached only an explicit mark ends the session: the kinds
    /// [`is_transient`] calls permanent are guesses, and a session has state worth waiting for.
    fn failed(&mut self, now: StdInstant, e: io::Error, panicked: bool) -> Dialed<S> {
        tracing::debug!(error = %e, "sotto: dial failed");
        let permanent = panicked || !is_transient(&e);
        if self.connect_deadline.is_some() && (permanent || self.connect_expired(now)) {
            Dialed::GiveUp { error: e, permanent }
        } else if Permanent::is_marked(&e) {
            Dialed::GiveUp { error: e, permanent: true }
        } else {
            let delay = self.back_off(now);
            Dialed::Failed(e, delay)
        }
    }

    /// Cut the backoff wait short: the next dial starts at once (an attempt in progress goes on).
    pub(crate) fn redial_now(&mut self, now: StdInstant) {
        self.not_before = self.not_before.min(now);
    }

    /// A link completed its handshake: the first connect is done, backoff starts over.
    pub(crate) fn on_attached(&mut self) {
        self.connect_deadline = None;
        self.backoff.reset();
    }

    /// The link is gone. After a link that had attached, redial at once (a resume should be
    /// quick); after one that never did, back off first.
    pub(crate) fn on_link_lost(&mut self, now: StdInstant, had_attached: bool) {
        if had_attached {
            self.not_before = now;
        } else {
            let _ = self.back_off(now);
        }
    }

    fn back_off(&mut self, now: StdInstant) -> Duration {
        let delay = self.backoff.next_delay(self.jitter.next());
        self.not_before = now.checked_add(delay).unwrap_or(now);
        delay
    }
}
