//! What the driver loop needs from the state behind a session's lock, so that one loop drives
//! both kinds of session: a raw stable conduit (`raw`) and a session-layer [`sotto::session::Session`]
//! (`session`), the latter either owned (initiator) or living in a core endpoint (acceptor).

use bytes::Bytes;
use sotto::conduit::InputError;
use sotto::stream::{Fill, WriteBatch};
use sotto::wire::ClientHello;
use sotto::{Conduit, Event, Instant, LinkId, ResumeKey, SessionEnd};

use crate::shared::{Clock, Common};

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
    /// Driver-managed fields.
    fn common(&mut self) -> &mut Common;
    /// The conduit underneath (read-only).
    fn conduit(&self) -> &Conduit;
    /// The core's earliest deadline.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Fire the core's due timers.
    fn handle_timeout(&mut self, now: Instant);
    /// Drain frames into the write batch.
    fn fill(&mut self, batch: &mut WriteBatch<Vec<u8>>, now: Instant) -> Fill;
    /// The next conduit event for the driver (session-level events are handled inside).
    fn poll_event(&mut self) -> Option<Event>;
    /// End the session (connect deadline passed, dial gave up).
    fn end(&mut self, now: Instant, reason: SessionEnd);
    /// A fresh link (initiator).
    fn link_up(&mut self, now: Instant) -> LinkId;
    /// A fresh link whose ClientHello was read (raw acceptor).
    fn link_up_with_hello(
        &mut self,
        now: Instant,
        key: ResumeKey,
        hello: &ClientHello,
    ) -> (LinkId, Result<(), InputError>);
    /// The link is gone.
    fn link_down(&mut self, now: Instant, link: LinkId);
    /// Feed one link message; delivered data is a slice of (or copied from) `chunk`.
    fn feed(&mut self, now: Instant, link: LinkId, msg: &[u8], chunk: &Bytes);
    /// A run of messages was fed: wake the readers that got data.
    fn fed(&mut self);
    /// How many messages may be fed now (0: the application's queues are full, stop reading).
    fn read_room(&mut self) -> usize;
    /// A link handed over through the lock (session acceptor), already attached to the core.
    fn take_link(&mut self) -> Option<(S, LinkId)>;
    /// Application commands that could not enter the core earlier (ring full): retry them.
    fn flush_owed(&mut self, now: Instant);
    /// The ring has room again: wake blocked senders.
    fn wake_senders(&mut self);
    /// Wake every waiting application task (the session ended or the driver stopped).
    fn wake_all(&mut self);
    /// The application dropped its handle. Return `true` to keep running until the session
    /// has ended (a graceful close was started) or the drain timeout passes, `false` to stop
    /// at once.
    fn close_on_drop(&mut self, now: Instant) -> bool;
    /// The driver task is finishing.
    fn driver_exit(&mut self, now: Instant);
}
