//! The state of a raw stable-conduit session (the vox-compatible API): the [`Conduit`]
//! itself (the handle calls `send`/`close` on it directly, so an item is copied once, into the
//! replay ring), the bounded inbound queue, and the driver-managed [`Common`] fields.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use sotto_proto::conduit::Observed;
use sotto_proto::stream::{LendingBatch, Messages};
use sotto_proto::{Conduit, Event, Instant, LinkId, ResumeKey, SessionEnd};

use crate::host::{Host, Locked, Round};
use crate::router::{Member, Owner, Parts, Taken};
use crate::shared::{Clock, Common, WakerList};

/// Everything behind a raw session's lock.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) conduit: Conduit,
    pub(crate) common: Common,
    pub(crate) inbound: VecDeque<Bytes>,
    pub(crate) inbound_bytes: usize,
    /// The driver holds the link's data back because the inbound queue is full.
    pub(crate) reader_blocked: bool,
    /// A blocked reader is woken once the queue is down to this many items and bytes.
    pub(crate) resume_reading_at: (usize, usize),
    inbound_items_max: usize,
    inbound_bytes_max: usize,
    pub(crate) senders: WakerList,
    pub(crate) receivers: WakerList,
    delivered: bool,
    /// An acceptor's session: its tie to the acceptor's endpoint.
    member: Option<Member>,
}

impl Inner {
    pub(crate) fn end(&self) -> Option<SessionEnd> {
        self.common.end(&self.conduit)
    }

    pub(crate) fn wake_all(&mut self) {
        self.senders.wake_all();
        self.receivers.wake_all();
        self.common.watchers.wake_all();
    }
}

/// The lock plus the clock.
#[derive(Debug)]
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    clock: Clock,
}

impl Shared {
    /// A raw session, an acceptor's if `member` is set.
    pub(crate) fn new(conduit: Conduit, config: &crate::config::Config, clock: Clock, member: Option<Member>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                conduit,
                common: Common::default(),
                inbound: VecDeque::new(),
                inbound_bytes: 0,
                reader_blocked: false,
                resume_reading_at: (config.buffers.inbound_items / 2, config.buffers.inbound_bytes / 2),
                inbound_items_max: config.buffers.inbound_items,
                inbound_bytes_max: config.buffers.inbound_bytes,
                senders: WakerList::default(),
                receivers: WakerList::default(),
                delivered: false,
                member,
            }),
            clock,
        }
    }

    /// Lock the state (see [`Host::lock`] on panics under the lock).
    pub(crate) fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The core's "now".
    pub(crate) fn now(&self) -> Instant {
        self.clock.now()
    }

    /// The session's clock.
    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }
}

impl Owner for Shared {
    fn with_parts(&self, f: &mut dyn FnMut(Parts<'_>)) {
        let mut g = self.lock_inner();
        let Inner { conduit, common, member, .. } = &mut *g;
        f(Parts { core: conduit, common, member: member.as_mut() });
    }

    fn as_any(self: std::sync::Arc<Self>) -> std::sync::Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}

impl Inner {
    /// Report the session's lifecycle to its endpoint, if it has one.
    fn report(&mut self) {
        if let Some(m) = self.member.as_mut() {
            m.report(&self.conduit, true);
        }
    }
}

/// The raw session's locked state, as the driver sees it.
pub(crate) struct RawGuard<'a>(MutexGuard<'a, Inner>);

impl<S: 'static> Host<S> for Shared {
    type Guard<'a> = RawGuard<'a>;

    fn lock(&self) -> RawGuard<'_> {
        RawGuard(self.lock_inner())
    }

    fn clock(&self) -> &Clock {
        &self.clock
    }
}

impl<S: 'static> Locked<S> for RawGuard<'_> {
    fn begin(&mut self, now: Instant) {
        let c = &mut self.0.conduit;
        if c.poll_timeout().is_some_and(|t| t <= now) {
            c.handle_timeout(now);
        }
    }
    fn shrink_buffers(&mut self) {
        let _ = self.0.conduit.shrink_buffers();
    }
    fn drain_round(
        &mut self,
        batch: &mut LendingBatch<Vec<u8>>,
        now: Instant,
        link: Option<LinkId>,
    ) -> (Round, Option<Event>) {
        let c = &mut self.0.conduit;
        let mut round = Round::default();
        if link.is_some() && c.current_link() == link {
            // With nothing due the batch is left alone (filling costs more than asking), and
            // the conduit is only told the time, as `poll_transmit` would have.
            if c.has_transmit() {
                round.wrote = batch.fill(c, now).frames > 0;
            } else {
                c.observe_time(now);
            }
        }
        let event = c.poll_event();
        // The batch may have run out of room: asked after the event poll.
        round.more = round.wrote && c.has_transmit();
        if event.is_none() {
            self.0.report();
        }
        (round, event)
    }
    fn output_left(&self) -> bool {
        self.0.conduit.has_transmit()
    }
    fn status(&self) -> (bool, Option<Instant>) {
        (self.0.conduit.is_ended(), self.0.conduit.poll_timeout())
    }
    fn common(&mut self) -> &mut Common {
        &mut self.0.common
    }
    fn conduit(&self) -> &Conduit {
        &self.0.conduit
    }
    fn end(&mut self, now: Instant, reason: SessionEnd) {
        self.0.conduit.end(now, reason);
    }
    fn link_up(&mut self, now: Instant) -> LinkId {
        self.0.conduit.link_up(now, ResumeKey::ZERO)
    }
    fn link_down(&mut self, now: Instant, link: LinkId) {
        self.0.conduit.link_down(now, link);
        self.0.report();
    }
    fn feed_run(
        &mut self,
        now: Instant,
        link: LinkId,
        msgs: &mut Messages<'_>,
        chunk: &Bytes,
        batch: &mut LendingBatch<Vec<u8>>,
    ) -> Option<Event> {
        for msg in msgs {
            let g = &mut *self.0;
            if let Ok(Some(item)) = g.conduit.handle_message(now, link, msg) {
                let item = chunk.slice_ref(item);
                g.inbound_bytes += item.len();
                g.inbound.push_back(item);
                g.delivered = true;
                g.common.delivered(now);
            }
            if let Some(e) = Locked::<S>::after_input(self, batch, now, link) {
                return Some(e);
            }
        }
        None
    }
    fn observe(
        &mut self,
        now: Instant,
        link: LinkId,
        msg: &[u8],
        batch: &mut LendingBatch<Vec<u8>>,
    ) -> (Observed, Option<Event>) {
        let observed = self.0.conduit.observe_message(now, link, msg).unwrap_or(Observed::Handled);
        (observed, Locked::<S>::after_input(self, batch, now, link))
    }
    fn progress(&mut self, now: Instant, link: LinkId) {
        self.0.conduit.handle_progress(now, link);
    }
    fn after_input(&mut self, batch: &mut LendingBatch<Vec<u8>>, now: Instant, link: LinkId) -> Option<Event> {
        let c = &mut self.0.conduit;
        if c.current_link() == Some(link) && c.has_transmit() {
            let _ = batch.fill(c, now);
        }
        c.poll_event()
    }
    fn read_room(&mut self) -> usize {
        let g = &mut *self.0;
        if std::mem::take(&mut g.delivered) {
            g.receivers.wake_all();
        }
        let items = g.inbound_items_max.saturating_sub(g.inbound.len());
        let room = if g.inbound_bytes >= g.inbound_bytes_max && !g.inbound.is_empty() { 0 } else { items };
        g.reader_blocked = room == 0;
        room
    }
    fn take_link(&mut self, now: Instant) -> Option<Taken<S>> {
        let Inner { conduit, member, .. } = &mut *self.0;
        member.as_mut()?.take(now, |r| r.apply(now, conduit))
    }
    fn wake_senders(&mut self) {
        self.0.senders.wake_all();
    }
    fn wake_all(&mut self) {
        self.0.wake_all();
    }
    fn close_on_drop(&mut self, now: Instant) {
        // As for a session handle: GOODBYE after what was sent (a peer without sotto's
        // extensions, a vox peer, has no GOODBYE: the session ends at once there).
        let c = &mut self.0.conduit;
        if !c.is_ended() {
            c.close(now, sotto_proto::conduit::goodbye_code::NORMAL, "handle dropped");
        }
    }
    fn driver_exit(&mut self, _now: Instant) {
        self.0.wake_all();
        self.0.report();
        if let Some(m) = self.0.member.as_mut() {
            // Nobody drives it any more: its keys route nowhere from now on.
            m.leave();
        }
    }
}
