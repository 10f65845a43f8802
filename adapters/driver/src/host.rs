//! What the driver loop needs from the state behind a session's lock, so that one loop drives
//! both kinds of session: a raw stable conduit (`raw`) and a session-layer [`sotto_proto::session::Session`]
//! (`session`).

use bytes::Bytes;
use sotto_proto::conduit::Observed;
use sotto_proto::stream::{LendingBatch, Messages};
use sotto_proto::{Conduit, Event, Instant, LinkId, SessionEnd};

use crate::router::Taken;
use crate::shared::{Clock, Common};

/// What one [`Locked::drain_round`] wrote.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Round {
    /// Frames were written into the batch.
    pub(crate) wrote: bool,
    /// Frames were written, and another round may find more: the core (or the commands
    /// owed to it) still has frames after the round's event poll (the batch ran out of
    /// room, or the event handling queued some). A round that wrote nothing ends the drain
    /// unless it returned an event.
    pub(crate) more: bool,
}

/// A session's shared state, as the driver reaches it.
pub(crate) trait Host<S>: Send + Sync + 'static {
    /// The locked state.
    type Guard<'a>: Locked<S>
    where
        Self: 'a;

    /// Lock the state (never poisoned: the core never panics on input, so its state is
    /// consistent even if another holder panicked).
    fn lock(&self) -> Self::Guard<'_>;

    /// The clock of this session.
    fn clock(&self) -> &Clock;
}

/// The locked state of one session: the core's contract plus the application-facing queues.
pub(crate) trait Locked<S> {
    /// Start of a driver step: fire the core's timers if due at `now`, and settle what the
    /// handles left for the driver.
    fn begin(&mut self, now: Instant);
    /// One round of draining: retry owed commands, write due frames (if `link` is the
    /// conduit's current link), and take the next event. Returns what the round wrote, and
    /// the event.
    fn drain_round(
        &mut self,
        batch: &mut LendingBatch<Vec<u8>>,
        now: Instant,
        link: Option<LinkId>,
    ) -> (Round, Option<Event>);
    /// Whether a drain now could find work: frames or commands owed to the core that the
    /// last drain did not take (its batch was full, or the ring had no room).
    fn output_left(&self) -> bool;
    /// Whether the session is over, and the core's earliest deadline.
    fn status(&self) -> (bool, Option<Instant>);
    /// Driver-managed fields.
    fn common(&mut self) -> &mut Common;
    /// The conduit underneath (read-only).
    fn conduit(&self) -> &Conduit;
    /// End the session (connect deadline passed, dial gave up).
    fn end(&mut self, now: Instant, reason: SessionEnd);
    /// A fresh link (initiator).
    fn link_up(&mut self, now: Instant) -> LinkId;
    /// The link is gone.
    fn link_down(&mut self, now: Instant, link: LinkId);
    /// Feed the link messages of `msgs`, received on `link`, in order (delivered data is a
    /// slice of, or copied from, `chunk`). After each, drain lightly: write the frames the
    /// input made due (only if the core has any, and only if `link` is still current); stop
    /// at the first message that makes an event and return it (the messages after it stay in
    /// `msgs`; call [`after_input`](Self::after_input) until it returns `None` for the
    /// other events); `None` once all were fed. A full drain follows every run. A host may
    /// instead feed the whole run and leave its outputs to that full drain, where that loses
    /// nothing (see the session host).
    fn feed_run(
        &mut self,
        now: Instant,
        link: LinkId,
        msgs: &mut Messages<'_>,
        chunk: &Bytes,
        batch: &mut LendingBatch<Vec<u8>>,
    ) -> Option<Event>;
    /// A link message received on `link` that cannot be fed now (the application's queues
    /// are full), after any held back before it: the core observes it
    /// ([`Conduit::observe_message`](sotto_proto::Conduit::observe_message): the acks riding
    /// on data applied, liveness counted; standalone acks, PINGs, PONGs and hellos handled
    /// in full), then a light drain as in [`feed_run`](Self::feed_run). Returns what became of the
    /// message (`Handled` also when the input failed: the link is stale or being dropped,
    /// or the session ended, and the events follow) and the first event.
    fn observe(
        &mut self,
        now: Instant,
        link: LinkId,
        msg: &[u8],
        batch: &mut LendingBatch<Vec<u8>>,
    ) -> (Observed, Option<Event>);
    /// Bytes of a link message not complete yet arrived on `link`
    /// ([`Conduit::handle_progress`](sotto_proto::Conduit::handle_progress): keepalive
    /// deadlines kept ahead, and a standalone ACK made due if our PING has been awaited for
    /// an interval). Drain after it.
    fn progress(&mut self, now: Instant, link: LinkId);
    /// The light drain of [`feed_run`](Self::feed_run), on its own.
    fn after_input(&mut self, batch: &mut LendingBatch<Vec<u8>>, now: Instant, link: LinkId) -> Option<Event>;
    /// Wake the readers that got data since the last call, then say how many messages may
    /// be fed now (0: the application's queues are full, stop reading).
    fn read_room(&mut self) -> usize;
    /// A link routed to this session through its mailbox (an acceptor's session): attached to
    /// the core if the session took it, or refused (a resume with a key it does not accept),
    /// with the REJECTED reply to write before closing it.
    fn take_link(&mut self, now: Instant) -> Option<Taken<S>>;
    /// The ring has room again: wake blocked senders.
    fn wake_senders(&mut self);
    /// Wake every waiting application task (the session ended or the driver stopped).
    fn wake_all(&mut self);
    /// The application dropped its handle: close the session gracefully (GOODBYE after what
    /// was sent); the driver runs on until it has ended or the drain timeout passes.
    fn close_on_drop(&mut self, now: Instant);
    /// The driver task is finishing ([`Common::driver_gone`] was called): wake everyone
    /// waiting, and tell the endpoint, if any.
    fn driver_exit(&mut self, now: Instant);
    /// No item moved for a while: give back replay-ring memory the unacked items do not
    /// need (see [`Conduit::shrink_buffers`]) and, for sessions, each connection's hold on
    /// its arena block.
    fn shrink_buffers(&mut self);
}
