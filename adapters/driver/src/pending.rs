//! A link in its handshake at an acceptor, before any session owns it: running its link
//! hook (see `link_hook`), reading the ClientHello (exactly the hello's bytes, never past
//! them), or writing the REJECTED ServerHello. Each one is a future bounded by its own
//! timer; the acceptor task polls them all, so dropping the acceptor ends them.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant as StdInstant;

use sotto_proto::wire::{HELLO_LEN, LEN_PREFIX};

use crate::link_hook::{Arrived, Hook, HookPoll};
use crate::runtime::{Io, Timer};

/// A hello with its length prefix.
const HELLO_MSG: usize = LEN_PREFIX + HELLO_LEN;
/// The length prefix of a hello.
const HELLO_PREFIX: [u8; LEN_PREFIX] = (HELLO_LEN as u32).to_le_bytes();

/// What a pending link came to.
pub(crate) enum Outcome<S> {
    /// The first message had the size of a hello: here it is (not yet decoded).
    Hello(S, [u8; HELLO_LEN]),
    /// The first length prefix was not a hello's.
    BadPrefix,
    /// The stream ended (or failed) before a whole hello arrived.
    Eof,
    /// No hello within the deadline.
    TimedOut,
    /// Not one byte within the first-byte deadline.
    Silent,
    /// The REJECTED reply was written (or could not be, within its deadline).
    Written,
    /// The link hook failed (returned an error, or panicked if `panicked`).
    HookFailed {
        /// The hook panicked.
        panicked: bool,
    },
}

/// A link in its handshake; `K` is the acceptor's name for it, handed back with the outcome.
pub(crate) struct PendingLink<S, T, K> {
    /// The link hook still to run before the hello is read (then `io` is `None`).
    hook: Option<Hook<S>>,
    io: Option<S>,
    buf: [u8; HELLO_MSG],
    pos: usize,
    /// Writing `buf` (REJECTED) rather than reading into it.
    writing: bool,
    timer: T,
    /// While reading and no byte has arrived: the whole handshake's deadline, armed once
    /// the first byte arrives (the timer runs to the first-byte deadline until then).
    full_deadline: Option<StdInstant>,
    key: Option<K>,
}

impl<S: Io, T: Timer, K: Unpin> PendingLink<S, T, K> {
    /// Read the ClientHello from `io` (after its link hook, if it has one) by `deadline`; its
    /// first byte (the hook's first, with a hook) by `first_byte` (if earlier).
    pub(crate) fn hello(io: Arrived<S>, mut timer: T, first_byte: StdInstant, deadline: StdInstant, key: K) -> Self {
        let full_deadline = (first_byte < deadline).then_some(deadline);
        timer.reset(first_byte.min(deadline));
        let (hook, io) = match io {
            Arrived::Ready(io) => (None, Some(io)),
            Arrived::Hook(hook) => (Some(hook), None),
        };
        Self { hook, io, buf: [0; HELLO_MSG], pos: 0, writing: false, timer, full_deadline, key: Some(key) }
    }

    /// Write `reply` (a REJECTED ServerHello) behind its prefix, then close, by `deadline`.
    pub(crate) fn reject(io: S, mut timer: T, deadline: StdInstant, key: K, reply: &[u8; HELLO_LEN]) -> Self {
        timer.reset(deadline);
        let mut buf = [0; HELLO_MSG];
        buf[..LEN_PREFIX].copy_from_slice(&HELLO_PREFIX);
        buf[LEN_PREFIX..].copy_from_slice(reply);
        Self { hook: None, io: Some(io), buf, pos: 0, writing: true, timer, full_deadline: None, key: Some(key) }
    }

    /// Run the link hook, if it is still running: `Ready` with the outcome if it failed.
    /// Once it returns its stream, the first byte has arrived (the hook read it), so the
    /// rest has the whole handshake's deadline.
    fn poll_hook(&mut self, cx: &mut Context<'_>) -> Poll<Option<Outcome<S>>> {
        let Some(hook) = self.hook.as_mut() else { return Poll::Ready(None) };
        let done = match hook.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(done) => done,
        };
        self.hook = None;
        match done {
            HookPoll::Done(io) => {
                self.io = Some(io);
                if let Some(full) = self.full_deadline.take() {
                    self.timer.reset(full);
                }
                Poll::Ready(None)
            }
            HookPoll::Failed => Poll::Ready(Some(Outcome::HookFailed { panicked: false })),
            HookPoll::Panicked => Poll::Ready(Some(Outcome::HookFailed { panicked: true })),
        }
    }

    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Outcome<S>> {
        let Some(io) = self.io.as_mut() else { return Poll::Ready(Outcome::Written) };
        while self.pos < HELLO_MSG {
            let r = if self.writing {
                Pin::new(&mut *io).poll_write(cx, &self.buf[self.pos..])
            } else {
                Pin::new(&mut *io).poll_read(cx, &mut self.buf[self.pos..])
            };
            match r {
                Poll::Ready(Ok(n)) if n > 0 => {
                    self.pos += n;
                    if let Some(full) = self.full_deadline.take() {
                        // The first byte came: the rest has the whole handshake's deadline.
                        self.timer.reset(full);
                    }
                    if !self.writing && self.pos >= LEN_PREFIX && self.buf[..LEN_PREFIX] != HELLO_PREFIX {
                        // Not a hello-sized message: no need to wait for the rest.
                        return Poll::Ready(Outcome::BadPrefix);
                    }
                }
                Poll::Ready(_) if self.writing => return Poll::Ready(Outcome::Written),
                Poll::Ready(_) => return Poll::Ready(Outcome::Eof),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.writing {
            return match Pin::new(&mut *io).poll_close(cx) {
                Poll::Ready(_) => Poll::Ready(Outcome::Written),
                Poll::Pending => Poll::Pending,
            };
        }
        let mut hello = [0u8; HELLO_LEN];
        hello.copy_from_slice(&self.buf[LEN_PREFIX..]);
        match self.io.take() {
            Some(io) => Poll::Ready(Outcome::Hello(io, hello)),
            None => Poll::Ready(Outcome::Eof),
        }
    }
}

impl<S: Io, T: Timer, K: Unpin> Future for PendingLink<S, T, K> {
    type Output = (Option<K>, Outcome<S>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match this.poll_hook(cx) {
                Poll::Ready(Some(failed)) => return Poll::Ready((this.key.take(), failed)),
                Poll::Ready(None) => break,
                Poll::Pending => {
                    if this.timer.poll_expired(cx).is_pending() {
                        return Poll::Pending;
                    }
                    match (this.full_deadline.take(), this.hook.as_ref().is_some_and(Hook::first_byte_seen)) {
                        // The first byte came in time: the hook goes on to the whole deadline.
                        (Some(full), true) => this.timer.reset(full),
                        (Some(_), false) => {
                            this.hook = None;
                            return Poll::Ready((this.key.take(), Outcome::Silent));
                        }
                        (None, _) => {
                            this.hook = None;
                            return Poll::Ready((this.key.take(), Outcome::TimedOut));
                        }
                    }
                }
            }
        }
        // The stream is the application's: a panic in it fails this link alone (as a stream
        // that failed), never the listener with every other pending link (SCENARIOS A9).
        let polled = catch_unwind(AssertUnwindSafe(|| this.poll_io(cx))).unwrap_or_else(|_| {
            let io = this.io.take();
            let _ = catch_unwind(AssertUnwindSafe(move || drop(io)));
            tracing::debug!("sotto: a pending link's stream panicked; link dropped");
            Poll::Ready(Outcome::Eof)
        });
        if let Poll::Ready(outcome) = polled {
            return Poll::Ready((this.key.take(), outcome));
        }
        if this.timer.poll_expired(cx).is_ready() {
            this.io = None;
            let outcome = if this.writing {
                Outcome::Written
            } else if this.full_deadline.is_some() {
                Outcome::Silent
            } else {
                Outcome::TimedOut
            };
            return Poll::Ready((this.key.take(), outcome));
        }
        Poll::Pending
    }
}
