//! The per-session driver task: one future that owns the session's link (a byte stream), its
//! read and write buffers and its timer, and runs the core's contract in a loop:
//!
//! 1. lock the shared state; fire the core's timers if the clock (not the runtime timer) says
//!    they are due; drain the outputs: frames into the write batch, events handled;
//! 2. get a link if there is none (initiator: dial with backoff; acceptor: take the link the
//!    router handed over);
//! 3. write the batch (one write call for many frames; `Ok(0)` is a dead link);
//! 4. feed whole messages from the read buffer while the inbound queue has room, draining the
//!    outputs after each, or read more;
//! 5. finish writing the last frames of a dropped link (GOODBYE, REJECTED);
//! 6. arm the runtime timer for the earliest deadline.
//!
//! Every step either makes progress (and the loop goes round again) or has registered a
//! waker; the future returns `Pending` only after a round in which nothing moved.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant as StdInstant;

use sotto::stream::{FrameSplitter, WriteBatch};
use sotto::{Event, Instant, LinkId, ResumeKey, SessionEnd};

use crate::config::Config;
use crate::dialer::{Dialed, Dialer};
use crate::keys::fresh_key;
use crate::read_buffer::ReadBuffer;
use crate::router::{NewLink, Registration};
use crate::shared::{ConduitEvent, Inner, LinkDownCause, Shared};
use crate::tasks::LiveTask;
use crate::{Io, Runtime, Timer};

/// Rounds of work before the driver yields to the runtime (fairness under load).
const BUDGET: usize = 64;

/// Where new links come from.
pub(crate) enum Source<S> {
    /// Initiator: dial.
    Dialer(Dialer<S>),
    /// Acceptor: the router hands links over.
    Slot(Registration<S>),
}

struct Link<S> {
    io: S,
    id: LinkId,
    attached: bool,
    /// Written bytes not yet flushed.
    flush: bool,
    /// Acceptor: the key the initiator presented on this link.
    presented: Option<ResumeKey>,
}

/// The last bytes of a dropped link, written out (bounded in time) before it is closed.
struct Drain<S> {
    io: S,
    bytes: Vec<u8>,
    pos: usize,
    deadline: StdInstant,
}

enum Step {
    Busy,
    Idle,
    Done,
}

pub(crate) struct Driver<R: Runtime, S> {
    shared: Arc<Shared>,
    source: Source<S>,
    link: Option<Link<S>>,
    drain: Option<Drain<S>>,
    read: ReadBuffer,
    write: WriteBatch<Vec<u8>>,
    split: FrameSplitter,
    timer: R::Timer,
    timer_at: Option<StdInstant>,
    /// When the session ended with a link still up: the link is closed by this time anyway.
    ended_deadline: Option<StdInstant>,
    config: Config,
    _live: LiveTask,
}

impl<R: Runtime, S: Io> Driver<R, S> {
    pub(crate) fn new(rt: &R, shared: Arc<Shared>, source: Source<S>, config: Config) -> Self {
        Self {
            shared,
            source,
            link: None,
            drain: None,
            read: ReadBuffer::new(config.read_chunk),
            write: WriteBatch::new(vec![0; config.write_buffer_len()]),
            split: FrameSplitter::new(config.conduit.max_frame_len),
            timer: rt.timer(),
            timer_at: None,
            ended_deadline: None,
            config,
            _live: LiveTask::new(),
        }
    }

    fn step(&mut self, cx: &mut Context<'_>) -> Step {
        let now_std = StdInstant::now();
        let now = self.shared.core_time(now_std);
        let shared = Arc::clone(&self.shared);
        let mut busy = false;

        // 1. Timers by the clock, then drain the outputs of whatever the handle did.
        let (ended, core_deadline) = {
            let mut g = shared.lock();
            if g.handle_dropped {
                return Step::Done;
            }
            if !g.driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                g.driver = Some(cx.waker().clone());
            }
            if g.conduit.poll_timeout().is_some_and(|t| t <= now) {
                g.conduit.handle_timeout(now);
            }
            if let Source::Dialer(d) = &self.source {
                if !g.conduit.has_attached() && !g.conduit.is_ended() && d.connect_expired(now_std) {
                    tracing::debug!("sotto: connect timed out");
                    g.conduit.end(now, SessionEnd::RecoveryTimeout);
                }
            }
            busy |= self.drain_outputs(&mut g, now, now_std);
            (g.conduit.is_ended(), g.conduit.poll_timeout().and_then(|t| shared.std_time(t)))
        };

        // 2. A new link.
        if !ended {
            busy |= self.poll_source(cx, now, now_std);
        }

        // 3. Write, 4. read.
        busy |= self.poll_write(cx, now, now_std);
        busy |= self.poll_read(cx, now, now_std);

        // 5. The last frames of a dropped link.
        busy |= self.poll_drain(cx, now_std);

        if ended {
            let deadline = *self.ended_deadline.get_or_insert_with(|| now_std + self.config.drain_timeout);
            if self.link.is_some() && now_std >= deadline {
                let mut g = shared.lock();
                self.retire(
                    &mut g,
                    now,
                    now_std,
                    LinkDownCause::Dropped(sotto::conduit::LinkDropReason::SessionEnded),
                    true,
                );
            }
            if self.link.is_none() && self.drain.is_none() {
                return Step::Done;
            }
        }

        // 6. The timer, for the earliest deadline of all.
        let deadline = [
            core_deadline,
            match &self.source {
                Source::Dialer(d) if !ended => d.deadline(self.link.is_some()),
                _ => None,
            },
            self.drain.as_ref().map(|d| d.deadline),
            self.ended_deadline,
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(at) = deadline {
            if at <= now_std {
                busy = true;
            } else {
                if self.timer_at != Some(at) {
                    self.timer.reset(at);
                    self.timer_at = Some(at);
                }
                if self.timer.poll_expired(cx).is_ready() {
                    self.timer_at = None;
                    busy = true;
                }
            }
        }
        if busy {
            Step::Busy
        } else {
            Step::Idle
        }
    }

    /// Drain the core's outputs: frames into the write batch, then events. Repeats until
    /// neither moves. Returns whether anything did.
    fn drain_outputs(&mut self, g: &mut Inner, now: Instant, now_std: StdInstant) -> bool {
        let mut busy = false;
        loop {
            let mut moved = false;
            if self.link.is_some() {
                let f = self.write.fill(&mut g.conduit, now);
                moved |= f.frames > 0;
            }
            while let Some(e) = g.conduit.poll_event() {
                moved = true;
                self.on_event(g, e, now, now_std);
            }
            if !moved {
                return busy;
            }
            busy = true;
        }
    }

    fn on_event(&mut self, g: &mut Inner, e: Event, now: Instant, now_std: StdInstant) {
        match e {
            Event::Attached { link, resumed, ext, replaying } => {
                let mut presented = None;
                if let Some(l) = self.link.as_mut().filter(|l| l.id == link) {
                    l.attached = true;
                    presented = l.presented;
                }
                g.stats.link_ups += 1;
                match &mut self.source {
                    Source::Dialer(d) => d.on_attached(),
                    // Publish the new key before the ServerHello carrying it is written.
                    Source::Slot(reg) => reg.router.publish(reg.id, g.conduit.resume_key(), presented),
                }
                tracing::debug!(link = link.0, resumed, ext, replaying, "sotto: link up");
                g.push_event(ConduitEvent::LinkUp { resumed, replaying, ext });
            }
            Event::DropLink { link, reason } => {
                if self.link.as_ref().is_some_and(|l| l.id == link) {
                    self.retire(g, now, now_std, LinkDownCause::Dropped(reason), true);
                }
            }
            Event::Writable => g.senders.wake_all(),
            Event::Ended(end) => {
                tracing::debug!(?end, "sotto: session ended");
                if let Source::Slot(reg) = &self.source {
                    reg.router.remove(reg.id);
                }
                g.push_event(ConduitEvent::Ended(end));
                g.wake_all();
            }
        }
    }

    /// The current link is gone (or being dropped): tell the core, keep its unwritten bytes
    /// for a bounded drain if asked, and prepare for the next link.
    fn retire(&mut self, g: &mut Inner, now: Instant, now_std: StdInstant, cause: LinkDownCause, keep: bool) {
        let Some(link) = self.link.take() else { return };
        g.conduit.link_down(now, link.id);
        g.stats.link_downs += 1;
        tracing::debug!(link = link.id.0, ?cause, "sotto: link down");
        g.push_event(ConduitEvent::LinkDown { cause });
        if keep && !self.write.is_empty() {
            self.drain = Some(Drain {
                io: link.io,
                bytes: self.write.pending().to_vec(),
                pos: 0,
                deadline: now_std + self.config.drain_timeout,
            });
        }
        self.write.clear();
        self.read.clear();
        if let Source::Dialer(d) = &mut self.source {
            d.on_link_lost(now_std, link.attached);
        }
        // Wake anyone waiting for the end if this was the last link of an ended session.
        g.watchers.wake_all();
    }

    fn poll_source(&mut self, cx: &mut Context<'_>, now: Instant, now_std: StdInstant) -> bool {
        match &mut self.source {
            Source::Dialer(d) => {
                if self.link.is_some() {
                    return false;
                }
                let Poll::Ready(dialed) = d.poll_dial(cx, now_std) else { return false };
                let shared = Arc::clone(&self.shared);
                let mut g = shared.lock();
                g.stats.dials += 1;
                match dialed {
                    Dialed::Link(io) => {
                        let id = g.conduit.link_up(now, ResumeKey::ZERO);
                        self.link = Some(Link { io, id, attached: false, flush: false, presented: None });
                    }
                    Dialed::Failed(e) => {
                        g.stats.dial_failures += 1;
                        g.last_dial_error = Some(e);
                    }
                    Dialed::GiveUp(e) => {
                        g.stats.dial_failures += 1;
                        g.dial_permanent = !crate::backoff::is_transient(&e);
                        g.last_dial_error = Some(e);
                        g.conduit.end(now, SessionEnd::RecoveryTimeout);
                    }
                }
                self.drain_outputs(&mut g, now, now_std);
                true
            }
            Source::Slot(reg) => {
                let Some(new) = reg.slot.poll_take(cx) else { return false };
                let shared = Arc::clone(&self.shared);
                let mut g = shared.lock();
                self.attach(&mut g, new, now, now_std);
                true
            }
        }
    }

    /// Acceptor: a link whose ClientHello the acceptor read. It supersedes the current one.
    fn attach(&mut self, g: &mut Inner, new: NewLink<S>, now: Instant, now_std: StdInstant) {
        if self.link.take().is_some() {
            // The core reports the old link superseded; its bytes are moot.
            g.stats.link_downs += 1;
            g.push_event(ConduitEvent::LinkDown { cause: LinkDownCause::Superseded });
            self.write.clear();
            self.read.clear();
        }
        let (id, result) = g.conduit.link_up_with_hello(now, fresh_key(), &new.hello);
        if let Err(e) = result {
            tracing::debug!(error = %e, "sotto: resume refused");
        }
        self.link = Some(Link { io: new.io, id, attached: false, flush: false, presented: new.hello.resume_key });
        self.drain_outputs(g, now, now_std);
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, now: Instant, now_std: StdInstant) -> bool {
        let Some(link) = self.link.as_mut() else { return false };
        let cause = if !self.write.is_empty() {
            match Pin::new(&mut link.io).poll_write(cx, self.write.pending()) {
                Poll::Ready(Ok(0)) => LinkDownCause::WriteZero,
                Poll::Ready(Ok(n)) => {
                    self.write.consume(n);
                    link.flush = true;
                    return true;
                }
                Poll::Ready(Err(e)) => LinkDownCause::Io(e.kind()),
                Poll::Pending => return false,
            }
        } else if link.flush {
            match Pin::new(&mut link.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    link.flush = false;
                    return false;
                }
                Poll::Ready(Err(e)) => LinkDownCause::Io(e.kind()),
                Poll::Pending => return false,
            }
        } else {
            return false;
        };
        let shared = Arc::clone(&self.shared);
        let mut g = shared.lock();
        self.retire(&mut g, now, now_std, cause, false);
        true
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, now: Instant, now_std: StdInstant) -> bool {
        if self.link.is_none() {
            return false;
        }
        let room = {
            let mut g = self.shared.lock();
            let items = self.config.inbound_items.saturating_sub(g.inbound.len());
            let room = if g.inbound_bytes >= self.config.inbound_bytes && !g.inbound.is_empty() { 0 } else { items };
            g.reader_blocked = room == 0;
            room
        };
        if room == 0 {
            return false;
        }
        let run = match self.split.complete(self.read.data(), room) {
            Ok(run) => run,
            Err(e) => {
                let shared = Arc::clone(&self.shared);
                let mut g = shared.lock();
                self.retire(&mut g, now, now_std, LinkDownCause::Framing(e), false);
                return true;
            }
        };
        if run.messages > 0 {
            self.feed(run.len, now, now_std);
            return true;
        }
        let wanted = self.split.wanted(self.read.data());
        let Some(link) = self.link.as_mut() else { return false };
        let cause = match Pin::new(&mut link.io).poll_read(cx, self.read.spare(wanted)) {
            Poll::Ready(Ok(0)) => match self.split.at_eof(self.read.data()) {
                Ok(()) => LinkDownCause::Eof,
                Err(_) => LinkDownCause::Truncated,
            },
            Poll::Ready(Ok(n)) => {
                self.read.advance(n);
                return true;
            }
            Poll::Ready(Err(e)) => LinkDownCause::Io(e.kind()),
            Poll::Pending => return false,
        };
        let shared = Arc::clone(&self.shared);
        let mut g = shared.lock();
        self.retire(&mut g, now, now_std, cause, false);
        true
    }

    /// Feed the first `len` bytes of the read buffer (whole messages) to the core; delivered
    /// items go to the inbound queue as slices of the read buffer, without a copy.
    fn feed(&mut self, len: usize, now: Instant, now_std: StdInstant) {
        let Some(id) = self.link.as_ref().map(|l| l.id) else { return };
        let chunk = self.read.split(len);
        let split = self.split;
        let shared = Arc::clone(&self.shared);
        let mut g = shared.lock();
        let mut delivered = false;
        for msg in split.messages(&chunk) {
            if let Ok(Some(item)) = g.conduit.handle_message(now, id, msg) {
                let item = chunk.slice_ref(item);
                g.inbound_bytes += item.len();
                g.inbound.push_back(item);
                delivered = true;
            }
            self.drain_outputs(&mut g, now, now_std);
            if self.link.as_ref().map(|l| l.id) != Some(id) {
                break;
            }
        }
        if delivered {
            g.receivers.wake_all();
        }
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>, now_std: StdInstant) -> bool {
        let Some(d) = self.drain.as_mut() else { return false };
        if now_std >= d.deadline {
            self.drain = None;
            return true;
        }
        if d.pos < d.bytes.len() {
            match Pin::new(&mut d.io).poll_write(cx, &d.bytes[d.pos..]) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    d.pos += n;
                    true
                }
                Poll::Ready(_) => {
                    self.drain = None;
                    true
                }
                Poll::Pending => false,
            }
        } else {
            match Pin::new(&mut d.io).poll_close(cx) {
                Poll::Ready(_) => {
                    self.drain = None;
                    true
                }
                Poll::Pending => false,
            }
        }
    }
}

impl<R: Runtime, S: Io> Future for Driver<R, S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        for _ in 0..BUDGET {
            match this.step(cx) {
                Step::Busy => {}
                Step::Idle => return Poll::Pending,
                Step::Done => return Poll::Ready(()),
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<R: Runtime, S> Drop for Driver<R, S> {
    fn drop(&mut self) {
        let mut g = self.shared.lock();
        g.driver_done = true;
        g.driver = None;
        g.wake_all();
    }
}
