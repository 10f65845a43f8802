//! The per-session driver task: one future that owns the session's link (a byte stream), its
//! read and write buffers and its timer, and runs the core's contract in a loop:
//!
//! 1. lock the shared state; fire the core's timers if the clock (not the runtime timer) says
//!    they are due; drain the outputs: frames into the write batch, events handled;
//! 2. get a link if there is none (initiator: dial with backoff; an acceptor's session: the
//!    router hands links over through the session's mailbox, picked up under the lock in
//!    step 1);
//! 3. write the batch (one write call for many frames; `Ok(0)` is a dead link): small
//!    frames are copied into it, items of `lend_from` bytes and more stay in the core's
//!    replay ring and go out in one vectored write with the headers, under the lock;
//! 4. feed whole messages from the read buffer while the application's queues have room,
//!    draining the outputs after each, and read more (a few reads per step, each followed
//!    by feeding what it completed). While the queues are full, keep reading (up to a bound:
//!    what the peer can have in flight) and let the core observe what arrives: acks and
//!    keepalive are applied at once, data is held back in the read buffer, in order, and fed
//!    once there is room;
//! 5. finish writing the last frames of a dropped link (GOODBYE, REJECTED);
//! 6. arm the runtime timer for the earliest deadline.
//!
//! Buffers follow the traffic: the write buffer is allocated when the first frame is
//! written, at the largest frame it must copy (a few KiB), and doubles while batches fill
//! it more than half, up to `write_buffer`; the read buffer and the core's replay ring grow
//! as they need room. Once no item has been sent, acked or received for [`SHRINK_AFTER`]
//! (keepalive frames do not count), the driver shrinks all three back, once (the next item
//! re-arms it): the read and write buffers are freed, the ring is freed or compacted. A
//! busy session never shrinks, so nothing is freed and allocated again message by message;
//! an idle session keeps only its bookkeeping (a keepalive frame written while idle gets a
//! write buffer for as long as it takes to write it).
//!
//! Every step either makes progress (and the loop goes round again) or has registered a
//! waker; the future returns `Pending` only after a round in which nothing moved, or after
//! one that only wrote out what the core had and left provably nothing for another round
//! (see `Driver::settled`). A drain asks the core whether it has frames before filling the
//! write batch.
//!
//! The loop is generic over [`Host`]: the same code drives raw stable conduits and
//! session-layer sessions.

use std::future::Future;
use std::io::{self, IoSlice};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant as StdInstant;

use sotto_proto::conduit::Observed;
use sotto_proto::stream::{FrameSplitter, LendingBatch};
use sotto_proto::{Event, Instant, LinkId, SessionEnd};

use crate::config::Config;
use crate::dialer::{Dialed, Dialer};
use crate::host::{Host, Locked};
use crate::read_buffer::ReadBuffer;
use crate::read_gate::ReadGate;
use crate::router::Taken;
use crate::runtime::{Io, Runtime, Timer};
use crate::shared::{ConduitEvent, DialFailure, LinkDownCause};
use crate::tasks::LiveTask;

/// Rounds of work before the driver yields to the runtime (fairness under load).
const BUDGET: usize = 64;
/// Reads per step at most (each followed by feeding what it completed).
const READ_ROUNDS: usize = 4;
/// A session that moved no item for this long has its buffers shrunk (see the module docs).
pub(crate) const SHRINK_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Where new links come from.
pub(crate) enum Source<S> {
    /// Initiator: dial.
    Dialer(Dialer<S>),
    /// An acceptor's session (raw or session-layer): routed links arrive in the session's
    /// mailbox ([`Locked::take_link`]); the session checks a resume before it takes it.
    Mailbox,
}

struct Link<S> {
    io: S,
    id: LinkId,
    attached: bool,
    /// Written bytes not yet flushed.
    flush: bool,
}

/// The last bytes of a dropped link, written out (bounded in time) before it is closed.
struct Drain<S> {
    io: S,
    bytes: Vec<u8>,
    pos: usize,
    deadline: StdInstant,
}

enum Step {
    /// Something moved; the next step may find more.
    Busy,
    /// Something moved, and the next step would find nothing: see [`Driver::settled`].
    Settled,
    Idle,
    Done,
}

/// The session as the last feed (or observation) left it, read under the same lock: what the
/// step that fed would otherwise read again in a step of its own.
#[derive(Clone, Copy)]
struct Fed {
    ended: bool,
    /// The core's earliest deadline.
    deadline: Option<StdInstant>,
    output_left: bool,
    items: u64,
}

/// Items sent, acked and received: while the count moves, the buffers are kept.
fn items_moved(c: &sotto_proto::Conduit) -> u64 {
    c.items_sent() + c.items_acked() + c.items_received()
}

/// Lent items a write batch holds at most (each one or two slices of the ring).
const MAX_LENT: usize = 64;
/// Slices of one vectored write at most: every lent item's (two, if it wraps in the ring)
/// and the buffer's runs between them.
const MAX_CHUNKS: usize = 3 * MAX_LENT + 1;

/// The write batch, given its storage back first if it was released while idle.
fn ready<'a>(write: &'a mut LendingBatch<Vec<u8>>, config: &Config) -> &'a mut LendingBatch<Vec<u8>> {
    if write.is_released() {
        write.restore(config.write_buffer_min());
    }
    write
}

/// The most bytes the read buffer holds while the application's queues are full (the driver
/// keeps reading up to it, handling the peer's acks and keepalive and holding its data
/// back): what a peer with our replay ring can have unacknowledged in flight (it cannot send
/// past its ring, and nothing held back is acknowledged: every item bytes, plus each frame's
/// length prefix and largest data header), plus one largest message being received and one
/// read's worth. With the defaults about 5.3 MiB. A peer whose replay ring is larger than
/// ours can have more in flight: then reading stops at this bound until the application
/// takes from its queues (acks and keepalive wait behind the unread data again, as for any
/// peer that sends faster than the application reads).
fn hold_limit(config: &Config) -> usize {
    let c = &config.protocol;
    let per_frame = sotto_proto::wire::LEN_PREFIX + sotto_proto::wire::MAX_DATA_HEADER_LEN;
    (c.replay_bytes as usize)
        .saturating_add((c.replay_frames as usize).saturating_mul(per_frame))
        .saturating_add(c.max_frame_len as usize + sotto_proto::wire::LEN_PREFIX)
        .saturating_add(config.buffers.read_chunk)
}

pub(crate) struct Driver<R: Runtime, S, H: Host<S>> {
    host: Arc<H>,
    source: Source<S>,
    link: Option<Link<S>>,
    drain: Option<Drain<S>>,
    read: ReadBuffer,
    /// Skips polling the read until the stream woke since its last `Pending`.
    read_gate: ReadGate,
    write: LendingBatch<Vec<u8>>,
    split: FrameSplitter,
    timer: R::Timer,
    timer_at: Option<StdInstant>,
    /// Messages that may be fed now ([`Locked::read_room`]), as of the last lock: it only
    /// shrinks by feeding, and a reader that makes room again wakes the driver.
    room: usize,
    /// While `room` is 0: the first bytes of the read buffer, whole messages the core has
    /// observed and held back (data frames, GOODBYE), to be fed in order once there is room.
    /// The messages it handled in full (acks, PINGs, PONGs, hellos) were cut out.
    observed: usize,
    /// The peer's GOODBYE is among the held-back messages: they are its last words (nothing
    /// replays them), fed even if the link ends first.
    goodbye_held: bool,
    /// While `room` is 0 the link is still read (so that the peer's acks and keepalive are
    /// never left unread behind data the application has not taken, and a reader that
    /// keeps reading at any pace never costs its link), until the read buffer holds this
    /// many bytes; see [`hold_limit`].
    hold_limit: usize,
    /// The write batch holds only what feeding made due (acks, handshake replies), or what a
    /// newly adopted link owes first (its ServerHello, and any replay), this many bytes: it
    /// is written after the task has yielded once, together with what the application does
    /// meanwhile (the credit its reader gives back, its replies) or, for a new link, with the
    /// answer to what the step's read finds (an early Hello's HelloYourself), instead of in a
    /// write call of its own now. Anything else joining the batch ends the wait.
    held: Option<usize>,
    /// The last read phase ended with the driver registered for the stream's next wake-up
    /// (its read returned `Pending`, or has not woken since it did).
    read_waits: bool,
    /// Set by a feed or an observation, taken by the step it ran in.
    fed: Option<Fed>,
    /// When the session ended with a link still up: the link is closed by this time anyway.
    ended_deadline: Option<StdInstant>,
    /// The handle was dropped and a graceful close started: the task ends by this time anyway.
    exit_deadline: Option<StdInstant>,
    /// Items sent, acked and received, as of the last step.
    items_seen: u64,
    /// When that count last changed (or the driver started).
    last_data: StdInstant,
    /// The buffers were shrunk since it last changed.
    shrunk: bool,
    config: Config,
    _live: LiveTask,
    _rt: PhantomData<fn() -> R>,
}

impl<R: Runtime, S: Io, H: Host<S>> Driver<R, S, H> {
    pub(crate) fn new(rt: &R, host: Arc<H>, source: Source<S>, config: Config) -> Self {
        Self {
            host,
            source,
            link: None,
            drain: None,
            read: ReadBuffer::new(config.buffers.read_chunk, S::READS_UNINIT),
            read_gate: ReadGate::default(),
            write: LendingBatch::new_released(config.buffers.lend_from, MAX_LENT),
            split: FrameSplitter::new(config.protocol.max_frame_len),
            timer: rt.timer(),
            timer_at: None,
            room: 0,
            observed: 0,
            goodbye_held: false,
            hold_limit: hold_limit(&config),
            held: None,
            read_waits: false,
            fed: None,
            ended_deadline: None,
            exit_deadline: None,
            items_seen: 0,
            last_data: StdInstant::now(),
            shrunk: false,
            config,
            _live: LiveTask::new(),
            _rt: PhantomData,
        }
    }

    fn step(&mut self, cx: &mut Context<'_>) -> Step {
        let host = Arc::clone(&self.host);
        let now_std = host.clock().now_std();
        let now = host.clock().core_time(now_std);
        let mut busy = false;
        // Something moved that the next step must follow up (see `settled`).
        let mut again = false;
        let link_before = self.link.as_ref().map(|l| l.id);
        let mut items;
        let mut output_left;
        let reported_write;

        // 1. Timers by the clock, then drain the outputs of whatever the handle did.
        let (ended, mut core_deadline) = {
            let mut g = host.lock();
            g.common().register_driver(cx.waker());
            if g.conduit().is_frozen() && !g.common().exit_now {
                // Being handed off (crate::handoff): no input, no output, no timer until the
                // handoff is settled; whoever settles it wakes this task (and, if the session
                // moved, sets `exit_now`: the link is closed at once, below).
                return Step::Idle;
            }
            g.begin(now);
            if g.common().exit_now {
                return Step::Done;
            }
            if g.common().handle_dropped {
                match self.exit_deadline {
                    None => {
                        g.close_on_drop(now);
                        self.exit_deadline = Some(now_std + self.config.protocol.drain_timeout);
                    }
                    Some(at) if now_std >= at => return Step::Done,
                    Some(_) => {}
                }
            }
            if let Source::Dialer(d) = &self.source {
                if d.connecting()
                    && !g.conduit().has_attached()
                    && !g.conduit().is_ended()
                    && d.connect_expired(now_std)
                {
                    tracing::debug!("sotto: connect timed out");
                    g.end(now, SessionEnd::RecoveryTimeout);
                }
            }
            if std::mem::take(&mut g.common().reconnect) {
                again |= self.reconnect(&mut g, now, now_std);
            }
            busy |= self.drain_outputs(&mut g, now, now_std);
            output_left = g.output_left();
            let ring = g.conduit().buffer_bytes() as u64;
            reported_write = self.write.capacity();
            g.common().set_buffer_bytes((self.read.allocated() + reported_write) as u64, ring);
            self.room = g.read_room();
            items = items_moved(g.conduit());
            let (ended, deadline) = g.status();
            (ended, deadline.and_then(|t| host.clock().std_time(t)))
        };

        // 2. A new link.
        if !ended {
            again |= self.poll_source(cx, now, now_std);
        }

        // 3. Write, 4. read.
        busy |= self.poll_write(cx, now, now_std);
        busy |= self.poll_read(cx, now, now_std);
        if let Some(fed) = self.fed.take() {
            // Input reached the core after the lock above: its state as the feed left it.
            again |= fed.ended;
            core_deadline = fed.deadline;
            output_left = fed.output_left;
            items = fed.items;
        }

        // Buffers shrunk after a while without data.
        if items != self.items_seen {
            self.items_seen = items;
            self.last_data = now_std;
            self.shrunk = false;
        } else if !self.shrunk && now_std >= self.last_data + SHRINK_AFTER {
            self.shrink_buffers();
        }

        if self.shrunk && !self.write.is_released() && self.write.release() {
            // Idle, and a keepalive (or a control frame) was written: the buffer is freed
            // again, and the stats say so.
            let mut g = self.host.lock();
            let ring = g.conduit().buffer_bytes() as u64;
            g.common().set_buffer_bytes(self.read.allocated() as u64, ring);
        }

        // 5. The last frames of a dropped link.
        again |= self.poll_drain(cx, now_std);

        if ended {
            let deadline = *self.ended_deadline.get_or_insert_with(|| now_std + self.config.protocol.drain_timeout);
            if self.link.is_some() && now_std >= deadline {
                let mut g = host.lock();
                let cause = LinkDownCause::Dropped(sotto_proto::conduit::LinkDropReason::SessionEnded);
                self.retire(&mut g, now, now_std, cause, true);
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
            self.exit_deadline,
            (!self.shrunk).then(|| self.last_data + SHRINK_AFTER),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(at) = deadline {
            if at <= now_std {
                again = true;
            } else {
                // A timer armed for earlier is kept (resetting a runtime timer on every step
                // costs more than an early wake-up, after which it is armed again).
                if self.timer_at.is_none_or(|t| t > at) {
                    self.timer.reset(at);
                    self.timer_at = Some(at);
                }
                if self.timer.poll_expired(cx).is_ready() {
                    self.timer_at = None;
                    again = true;
                }
            }
        }
        if again {
            Step::Busy
        } else if !busy {
            Step::Idle
        } else if !ended
            && !output_left
            && link_before.is_some()
            && self.link.as_ref().map(|l| l.id) == link_before
            && self.write.capacity() == reported_write
            && self.settled(cx, now, now_std)
        {
            Step::Settled
        } else {
            Step::Busy
        }
    }

    /// Whether a busy step leaves nothing for another step, which the poll then skips. The
    /// caller checked that the step did not reconnect, dial, drain an old link or find a
    /// deadline due (those make it `again`), kept its link, did not see the session end, and
    /// that the core had no output left after the last drain (the step's own, or the one
    /// closing its last feed) and the write buffer kept the size the stats were given.
    /// Finishes the write first: a flush owed after the batch went out.
    ///
    /// Why skipping that step cannot stall. The skipped step would find work only in what
    /// changed since this step last held the lock (each drain under it ran until the core
    /// had no event left, nor a frame unless `output_left` says so), and:
    /// - changes by other tasks (a send, a reader making room, a handle dropped, a link
    ///   routed to the mailbox, a handoff) wake the driver's waker, registered under the
    ///   step's lock (the same wake-ups an idle step relies on for changes made just after
    ///   its lock); a wake-up during this poll polls the task again;
    /// - the stream: the read phase ended with the driver registered for its next wake-up
    ///   (`read_waits`: every whole message read was fed or observed, and the rest waits
    ///   for more bytes), and the write batch is empty (its flush polled here) or held
    ///   until the task has yielded (which `poll` arranges, as for an idle step);
    /// - time: the deadlines were read after the last input (the step's drain, or the
    ///   last feed's), and writing arms no core timer; the runtime timer was armed for the
    ///   earliest, or a due one made the step `again`;
    /// - the step's own leftovers: the core's frames and owed commands (`output_left`),
    ///   its events (drained until none, or the link changed), the session's end (`ended`,
    ///   also as the last feed left it), the count of items moved (as the last feed left
    ///   it, for the shrink deadline).
    fn settled(&mut self, cx: &mut Context<'_>, now: Instant, now_std: StdInstant) -> bool {
        if !self.read_waits {
            return false;
        }
        if self.write.is_empty() {
            // Flush what was written, as the next step's `poll_write` would (a failure
            // moves the link, which another step follows up).
            !(self.link.as_ref().is_some_and(|l| l.flush) && self.poll_write(cx, now, now_std))
        } else {
            // Written once the task has yielded: the next step's `poll_write` skips it too.
            self.held == Some(self.write.pending_len())
        }
    }

    /// Record the session's state after a feed or an observation, under its lock.
    fn note_fed(&mut self, g: &H::Guard<'_>) {
        let (ended, deadline) = g.status();
        self.fed = Some(Fed {
            ended,
            deadline: deadline.and_then(|t| self.host.clock().std_time(t)),
            output_left: g.output_left(),
            items: items_moved(g.conduit()),
        });
    }

    /// The application asked for a fresh link (initiator): an attached link is dropped (the
    /// session resumes over the next one, dialed at once); a backoff wait is cut short. A
    /// link still in its handshake, or a dial in progress, is left alone.
    fn reconnect(&mut self, g: &mut H::Guard<'_>, now: Instant, now_std: StdInstant) -> bool {
        let Source::Dialer(d) = &mut self.source else { return false };
        if g.conduit().is_ended() {
            return false;
        }
        d.redial_now(now_std);
        if self.link.as_ref().is_some_and(|l| l.attached) {
            self.retire(g, now, now_std, LinkDownCause::Reconnect, true);
        }
        true
    }

    /// No item moved for [`SHRINK_AFTER`]: give back the read buffer, the write
    /// buffer's growth and the replay ring's room beyond what unacked items need.
    fn shrink_buffers(&mut self) {
        self.shrunk = true;
        let held = self.read.allocated() + self.write.capacity();
        self.read.shrink();
        let _ = self.write.release();
        let kept = self.read.allocated() + self.write.capacity();
        let mut g = self.host.lock();
        let ring_held = g.conduit().buffer_bytes();
        g.shrink_buffers();
        let ring = g.conduit().buffer_bytes();
        g.common().set_buffer_bytes(kept as u64, ring as u64);
        drop(g);
        if self.config.buffers.return_freed_memory {
            crate::memory_return::note(held.saturating_sub(kept) + ring_held.saturating_sub(ring));
        }
    }

    /// Drain the core's outputs: links handed over, owed commands, frames into the write
    /// batch, then events. Repeats while a round returns an event or may have left frames
    /// (see [`Round::more`](crate::host::Round)). Returns whether anything moved.
    fn drain_outputs(&mut self, g: &mut H::Guard<'_>, now: Instant, now_std: StdInstant) -> bool {
        let mut busy = false;
        let mut adopted = false;
        if matches!(self.source, Source::Mailbox) {
            while let Some(taken) = g.take_link(now) {
                match taken {
                    Taken::Link(io, id) => {
                        self.adopt(g, io, id);
                        adopted = true;
                    }
                    Taken::Refused(io, reply) => {
                        crate::trace::resume_refused_by_session(io.peer_addr().as_ref());
                        self.refuse(io, &reply, now_std);
                    }
                }
                busy = true;
            }
        }
        // Frames are for the conduit's current link; if that is not ours (an endpoint
        // superseded it and the new link is on its way), nothing is written until it is.
        loop {
            let (round, event) =
                g.drain_round(ready(&mut self.write, &self.config), now, self.link.as_ref().map(|l| l.id));
            busy |= round.wrote;
            if let Some(e) = event {
                self.on_event(g, e, now, now_std);
                busy = true;
            } else if !round.more {
                break;
            }
        }
        if adopted && self.held.is_none() && !self.write.is_empty() {
            // A new link's ServerHello waits for this step's read: a fresh initiator's early
            // Hello is usually there already, and the answer to it (HelloYourself) then
            // leaves with the ServerHello in one write. Otherwise it goes once the task has
            // yielded, as a held batch does.
            self.held = Some(self.write.pending_len());
        }
        busy
    }

    fn on_event(&mut self, g: &mut H::Guard<'_>, e: Event, now: Instant, now_std: StdInstant) {
        match e {
            Event::Attached { link, resumed, ext, replaying } => {
                if let Some(l) = self.link.as_mut().filter(|l| l.id == link) {
                    l.attached = true;
                    g.common().peer_addr = l.io.peer_addr();
                    let c = g.common();
                    c.peer_identity = l.io.peer_identity();
                    if c.first_link.is_none() {
                        // What a resume binding compares resumes with. No resume can come
                        // before this: its key is issued on this link, after the attach.
                        c.first_link = Some(crate::LinkInfo::new(c.peer_addr.clone(), c.peer_identity.clone()));
                    }
                }
                let c = g.common();
                c.counters.link_ups += 1;
                c.link_attached(resumed, now);
                if let Source::Dialer(d) = &mut self.source {
                    d.on_attached();
                }
                crate::trace::link_up(link, g.common().peer_addr.as_ref(), resumed, ext, replaying);
                g.common().push_event(ConduitEvent::LinkUp { resumed, replaying, ext });
            }
            Event::DropLink { link, reason } => {
                if self.link.as_ref().is_some_and(|l| l.id == link) {
                    self.retire(g, now, now_std, LinkDownCause::Dropped(reason), true);
                }
            }
            Event::Writable => g.wake_senders(),
            Event::Ended(end) => {
                let shut_down = g.common().shut_down;
                crate::trace::session_ended(end, g.conduit().peer_goodbye(), shut_down);
                g.common().push_event(ConduitEvent::Ended(end));
                g.wake_all();
            }
        }
    }

    /// A new link replaces the current one, if any: the core reports the old link
    /// superseded, so its unwritten and unread bytes are moot.
    fn supersede(&mut self, g: &mut H::Guard<'_>) {
        if self.link.take().is_some() {
            let lost = self.host.clock().now();
            let c = g.common();
            c.link_lost(lost);
            c.counters.link_downs += 1;
            c.push_event(ConduitEvent::LinkDown { cause: LinkDownCause::Superseded });
            self.write.clear();
            self.held = None;
            self.read.clear();
            self.observed = 0;
            self.goodbye_held = false;
        }
    }

    /// A link whose resume was refused: write the REJECTED reply, bounded by the drain
    /// timeout, then close it. The live link is untouched. (If another link is still being
    /// drained, this one is closed without the reply.)
    fn refuse(&mut self, io: S, reply: &[u8], now_std: StdInstant) {
        if self.drain.is_some() {
            return;
        }
        let mut bytes = Vec::with_capacity(4 + reply.len());
        bytes.extend_from_slice(&(reply.len() as u32).to_le_bytes());
        bytes.extend_from_slice(reply);
        self.drain = Some(Drain { io, bytes, pos: 0, deadline: now_std + self.config.protocol.drain_timeout });
    }

    /// An acceptor's session: a link the session took. The core has superseded ours, if any.
    fn adopt(&mut self, g: &mut H::Guard<'_>, io: S, id: LinkId) {
        self.supersede(g);
        self.link = Some(Link { io, id, attached: false, flush: false });
    }

    /// The current link is gone (or being dropped): tell the core, keep its unwritten bytes
    /// for a bounded drain if asked, and prepare for the next link.
    fn retire(&mut self, g: &mut H::Guard<'_>, now: Instant, now_std: StdInstant, cause: LinkDownCause, keep: bool) {
        let Some(link) = self.link.take() else { return };
        g.link_down(now, link.id);
        tracing::debug!(link = link.id.0, ?cause, "sotto: link down");
        let lost = self.host.clock().now();
        let c = g.common();
        c.link_lost(lost);
        c.counters.link_downs += 1;
        c.push_event(ConduitEvent::LinkDown { cause });
        if keep && !self.write.is_empty() {
            // Its lent items are still in the ring (nothing acks an unwritten frame).
            let mut chunks = vec![&[][..]; self.write.max_chunks()];
            let bytes = match self.write.chunks(g.conduit(), &mut chunks) {
                Ok(n) => chunks[..n].concat(),
                Err(_) => Vec::new(),
            };
            self.drain =
                Some(Drain { io: link.io, bytes, pos: 0, deadline: now_std + self.config.protocol.drain_timeout });
        }
        self.write.clear();
        self.held = None;
        self.read.clear();
        self.observed = 0;
        self.goodbye_held = false;
        if let Source::Dialer(d) = &mut self.source {
            d.on_link_lost(now_std, link.attached);
        }
        // Wake anyone waiting for the end if this was the last link of an ended session.
        g.common().watchers.wake_all();
    }

    fn poll_source(&mut self, cx: &mut Context<'_>, now: Instant, now_std: StdInstant) -> bool {
        match &mut self.source {
            Source::Dialer(d) => {
                if self.link.is_some() {
                    return false;
                }
                let Poll::Ready(dialed) = d.poll_dial(cx, now_std) else { return false };
                let host = Arc::clone(&self.host);
                let mut g = host.lock();
                g.common().counters.dials += 1;
                match dialed {
                    Dialed::Link(io) => {
                        let id = g.link_up(now);
                        self.link = Some(Link { io, id, attached: false, flush: false });
                    }
                    Dialed::Failed(e, delay) => {
                        let error = Arc::new(e);
                        let c = g.common();
                        c.counters.dial_failures += 1;
                        c.last_dial_error = Some(Arc::clone(&error));
                        c.push_event(ConduitEvent::DialFailed(DialFailure::new(error, Some(delay))));
                    }
                    Dialed::GiveUp { error, permanent } => {
                        let error = Arc::new(error);
                        let first = d.connecting();
                        let c = g.common();
                        c.counters.dial_failures += 1;
                        c.dial_permanent = permanent;
                        c.last_dial_error = Some(Arc::clone(&error));
                        c.push_event(ConduitEvent::DialFailed(DialFailure::new(error, None)));
                        if first {
                            g.end(now, SessionEnd::RecoveryTimeout);
                        } else {
                            tracing::debug!("sotto: redial failed permanently");
                            g.end(now, SessionEnd::PermanentDialError);
                        }
                    }
                }
                self.drain_outputs(&mut g, now, now_std);
                true
            }
            Source::Mailbox => false,
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, now: Instant, now_std: StdInstant) -> bool {
        if let Some(held) = self.held {
            if self.write.pending_len() == held {
                // Written once the task has yielded (see `held`); `poll` wakes it.
                return false;
            }
            self.held = None;
        }
        let Some(link) = self.link.as_mut() else { return false };
        let cap = self.write.capacity();
        if self.write.owned_end() * 2 > cap && cap < self.config.write_buffer_len() {
            // Batches fill the buffer: double it for the next ones.
            self.write.resize_buffer((cap * 2).min(self.config.write_buffer_len()));
        }
        let cause = if !self.write.is_empty() {
            let (written, asked) = match self.write.owned_only() {
                Some(bytes) => (Pin::new(&mut link.io).poll_write(cx, bytes), bytes.len()),
                None => {
                    // Lent items: their bytes are read from the ring under the lock.
                    let host = Arc::clone(&self.host);
                    let g = host.lock();
                    let mut chunks: [&[u8]; MAX_CHUNKS] = [&[]; MAX_CHUNKS];
                    match self.write.chunks(g.conduit(), &mut chunks) {
                        Ok(n) => {
                            let mut slices = [IoSlice::new(&[]); MAX_CHUNKS];
                            for (slot, chunk) in slices.iter_mut().zip(&chunks[..n]) {
                                *slot = IoSlice::new(chunk);
                            }
                            let asked = chunks[..n].iter().map(|c| c.len()).sum();
                            (Pin::new(&mut link.io).poll_write_vectored(cx, &slices[..n]), asked)
                        }
                        // Cannot happen while the link lasts: the ring keeps an item until
                        // the peer acks its frame, which it has not read yet.
                        Err(_) => (Poll::Ready(Err(io::Error::other("sotto: a lent item is gone"))), 0),
                    }
                }
            };
            match written {
                Poll::Ready(Ok(0)) => LinkDownCause::WriteZero,
                // A stream claiming more than it was given cannot be trusted with the frames
                // (SCENARIOS A4): the link goes, the session resumes on the next.
                Poll::Ready(Ok(n)) if n > asked => LinkDownCause::Io(io::ErrorKind::InvalidData),
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
        self.link_failed(cause, now, now_std);
        true
    }

    /// Feed the whole messages in the read buffer and read more, alternately, until the read
    /// is pending or [`READ_ROUNDS`] reads were made. While the application's queues are
    /// full the link is still read, up to [`hold_limit`] bytes: what arrives is observed
    /// (see [`observe`](Self::observe)) and fed once there is room. Returns whether anything
    /// moved.
    fn poll_read(&mut self, cx: &mut Context<'_>, now: Instant, now_std: StdInstant) -> bool {
        let (busy, heard) = self.read_link(cx, now, now_std);
        if heard && self.fed.is_none() {
            // Bytes came in, no whole message: the peer is alive all the same (a PONG may be
            // queued behind a large frame it is still writing over a slow link).
            if let Some(id) = self.link.as_ref().map(|l| l.id) {
                let host = Arc::clone(&self.host);
                let mut g = host.lock();
                g.progress(now, id);
                // It may have made a standalone ACK due (a sign of life for the peer).
                self.drain_outputs(&mut g, now, now_std);
                self.note_fed(&g);
            }
        }
        busy
    }

    /// [`poll_read`](Self::poll_read)'s reading and feeding. Returns whether anything moved,
    /// and whether a read brought bytes.
    fn read_link(&mut self, cx: &mut Context<'_>, now: Instant, now_std: StdInstant) -> (bool, bool) {
        let mut busy = false;
        let mut heard = false;
        let mut reads = 0;
        self.read_waits = false;
        loop {
            if self.link.is_none() {
                return (busy, heard);
            }
            if self.room > 0 {
                let run = match self.split.complete(self.read.data(), self.room) {
                    Ok(run) => run,
                    Err(e) => {
                        let host = Arc::clone(&self.host);
                        let mut g = host.lock();
                        self.retire(&mut g, now, now_std, LinkDownCause::Framing(e), false);
                        return (true, heard);
                    }
                };
                if run.messages > 0 {
                    // Held-back messages go first, in order: the core observed them already.
                    if !self.feed(run.len, now, now_std) {
                        return (busy, heard);
                    }
                    self.observed = self.observed.saturating_sub(run.len);
                    self.goodbye_held &= self.observed > 0;
                    busy = true;
                    continue;
                }
            } else if self.observe(now, now_std) {
                busy = true;
                continue;
            }
            if reads == READ_ROUNDS || (self.room == 0 && self.read.data().len() >= self.hold_limit) {
                return (busy, heard);
            }
            reads += 1;
            let wanted = self.split.wanted(&self.read.data()[self.observed..]);
            let Some(link) = self.link.as_mut() else { return (busy, heard) };
            if !self.read_gate.open(link.id, cx) {
                self.read_waits = true;
                return (busy, heard);
            }
            let mut rcx = Context::from_waker(self.read_gate.waker());
            let (r, asked) = if S::READS_UNINIT {
                let buf = self.read.appendable(wanted);
                let asked = buf.capacity() - buf.len();
                (link.io.poll_read_uninit(&mut rcx, buf), asked)
            } else {
                let spare = self.read.spare(wanted);
                let asked = spare.len();
                (Pin::new(&mut link.io).poll_read(&mut rcx, spare), asked)
            };
            let cause = match r {
                Poll::Ready(Ok(0)) => match self.split.at_eof(&self.read.data()[self.observed..]) {
                    Ok(()) => LinkDownCause::Eof,
                    Err(_) => LinkDownCause::Truncated,
                },
                // More than the room it was given (SCENARIOS A4): the bytes cannot be trusted.
                Poll::Ready(Ok(n)) if n > asked => LinkDownCause::Io(io::ErrorKind::InvalidData),
                Poll::Ready(Ok(n)) => {
                    self.read.advance(n);
                    heard = true;
                    busy = true;
                    continue;
                }
                Poll::Ready(Err(e)) => LinkDownCause::Io(e.kind()),
                Poll::Pending => {
                    self.read_gate.pending(link.id);
                    self.read_waits = true;
                    return (busy, heard);
                }
            };
            self.link_failed(cause, now, now_std);
            return (true, heard);
        }
    }

    /// The link's stream ended or failed (a read or a write), and goes down. If the peer's
    /// GOODBYE was among the messages held back, they are its last words, which nothing
    /// would replay: they are fed first, past the application's bounds (they are bounded by
    /// [`hold_limit`]). Otherwise the peer replays them on the next link.
    fn link_failed(&mut self, cause: LinkDownCause, now: Instant, now_std: StdInstant) {
        // Bytes from a stream that claimed more than it was given cannot be trusted.
        if self.goodbye_held && self.observed > 0 && cause != LinkDownCause::Io(io::ErrorKind::InvalidData) {
            let held = std::mem::take(&mut self.observed);
            self.goodbye_held = false;
            // Not fed if the session is frozen for a handoff (see `feed`): its GOODBYE is
            // then lost with the link, and the session ends by its recovery timeout instead.
            let _ = self.feed(held, now, now_std);
        }
        if self.link.is_some() {
            let host = Arc::clone(&self.host);
            let mut g = host.lock();
            self.retire(&mut g, now, now_std, cause, false);
        }
    }

    /// The application's queues are full: pass the whole messages after the held-back ones
    /// to the core's `observe_message` (under one lock), which applies the acks riding on
    /// data frames and counts them as traffic for the keepalive, and handles standalone
    /// acks, PINGs, PONGs and hellos in full. Those are cut out of the read buffer; data
    /// frames and GOODBYE stay, in order, to be fed once there is room. Returns whether any
    /// message was observed.
    fn observe(&mut self, now: Instant, now_std: StdInstant) -> bool {
        let Some(id) = self.link.as_ref().map(|l| l.id) else { return false };
        let host = Arc::clone(&self.host);
        let was_empty = self.write.is_empty();
        let mut g: Option<H::Guard<'_>> = None;
        // `self.observed..kept`: held back in this pass (moved down); `kept..at`: cut out.
        let mut kept = self.observed;
        let mut at = self.observed;
        let mut frozen = false;
        loop {
            let run = match self.split.complete(&self.read.data()[at..], 1) {
                Ok(run) => run,
                Err(e) => {
                    drop(g.take());
                    self.read.cut(kept, at - kept);
                    self.observed = kept;
                    self.link_failed(LinkDownCause::Framing(e), now, now_std);
                    return true;
                }
            };
            if run.messages == 0 {
                break;
            }
            let g = g.get_or_insert_with(|| host.lock());
            if g.conduit().is_frozen() {
                // Frozen for a handoff since this step began: see `feed`.
                frozen = true;
                break;
            }
            let msg = &self.read.data()[at + sotto_proto::wire::LEN_PREFIX..at + run.len];
            let (observed, mut event) = g.observe(now, id, msg, ready(&mut self.write, &self.config));
            self.goodbye_held |= observed == Observed::DeferredGoodbye;
            if observed != Observed::Handled {
                self.read.move_within(at, run.len, kept);
                kept += run.len;
            }
            at += run.len;
            while let Some(e) = event {
                self.on_event(g, e, now, now_std);
                if self.link.as_ref().map(|l| l.id) != Some(id) {
                    // The link is gone (its read buffer with it).
                    return true;
                }
                event = g.after_input(ready(&mut self.write, &self.config), now, id);
            }
        }
        let Some(mut g) = g else { return false };
        self.read.cut(kept, at - kept);
        self.observed = kept;
        if frozen && at == kept {
            // Nothing observed in this pass: no progress to report (the caller would loop).
            return false;
        }
        self.drain_outputs(&mut g, now, now_std);
        self.room = g.read_room();
        self.note_fed(&g);
        drop(g);
        if was_empty && !self.write.is_empty() {
            self.held = Some(self.write.pending_len());
        }
        true
    }

    /// Feed the first `len` bytes of the read buffer (whole messages) to the core; delivered
    /// items go to the application's queues (as slices of the read buffer where that pays).
    /// After each message the frames it made due are written and its events handled (the
    /// core's contract); the link cannot change hands meanwhile (the lock is held), so a full
    /// drain at the end of the run covers the rest.
    ///
    /// Returns `false`, feeding nothing, if the session was frozen for a handoff since this
    /// step began (`step` checks at its start, the handoff's thread freezes and exports
    /// under the lock at any moment): what arrives now must not reach the core or the
    /// application, or the exported state would lag behind what this process delivered
    /// and acknowledged, and the peer would replay it to the new owner (delivered twice),
    /// or find its resume position contradicted there. The bytes wait in the read buffer:
    /// fed here if the handoff fails, replayed by the peer to the new owner if it succeeds.
    fn feed(&mut self, len: usize, now: Instant, now_std: StdInstant) -> bool {
        let Some(id) = self.link.as_ref().map(|l| l.id) else { return false };
        let host = Arc::clone(&self.host);
        let mut g = host.lock();
        if g.conduit().is_frozen() {
            return false;
        }
        let chunk = self.read.split(len);
        let split = self.split;
        let was_empty = self.write.is_empty();
        let mut msgs = split.messages(&chunk);
        'messages: while let Some(mut e) = g.feed_run(now, id, &mut msgs, &chunk, ready(&mut self.write, &self.config))
        {
            loop {
                self.on_event(&mut g, e, now, now_std);
                if self.link.as_ref().map(|l| l.id) != Some(id) {
                    break 'messages;
                }
                match g.after_input(ready(&mut self.write, &self.config), now, id) {
                    Some(next) => e = next,
                    None => break,
                }
            }
        }
        self.drain_outputs(&mut g, now, now_std);
        self.room = g.read_room();
        self.note_fed(&g);
        drop(g);
        if was_empty && !self.write.is_empty() {
            self.held = Some(self.write.pending_len());
        }
        true
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

impl<R: Runtime, S: Io, H: Host<S>> Future for Driver<R, S, H> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        for _ in 0..BUDGET {
            match this.step(cx) {
                Step::Busy => {}
                Step::Idle | Step::Settled => {
                    if this.held.take().is_some() {
                        // Write the held batch on the next poll, after the others' turn.
                        R::yield_wake(cx);
                    }
                    return Poll::Pending;
                }
                Step::Done => return Poll::Ready(()),
            }
        }
        this.held = None;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<R: Runtime, S, H: Host<S>> Drop for Driver<R, S, H> {
    fn drop(&mut self) {
        let now = self.host.clock().now();
        let mut g = self.host.lock();
        g.common().driver_gone();
        g.driver_exit(now);
        drop(g);
        if self.config.buffers.return_freed_memory {
            crate::memory_return::note(self.read.allocated() + self.write.capacity());
        }
    }
}
