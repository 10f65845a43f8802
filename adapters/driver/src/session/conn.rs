//! A virtual connection's handles: [`Connection`] (both ways), or its two halves
//! [`ConnSender`] and [`ConnReceiver`] after [`Connection::split`].
//!
//! Sending copies the payload once, into the session's replay ring; it waits (the send stays
//! pending, nothing is buffered elsewhere) while the connection has no credit or the ring is
//! full. [`ConnSender::send_many`] queues a burst under one lock; the [`Sink`] stages up to
//! 256 messages and queues them together when flushed. What the `Sink` accepted keeps its
//! place: any later send queues it first, and if the sender is dropped with messages staged
//! the session's driver sends them (before the connection's close) once credit allows. A
//! sender may be shared by many tasks: all those waiting for credit are woken.
//!
//! Each direction ends on its own (half-close, session protocol version 3):
//! [`ConnSender::finish`] (also the `Sink`'s and the byte stream's close) sends an end of
//! stream after everything sent; the peer's reader then ends ([`ConnError::PeerFinished`],
//! the end of the `Stream`, `Ok(0)` from byte reads) while the peer may go on sending to us.
//! The connection is over once both sides finished, or at once when either closes it
//! ([`Connection::close`]: both ways, an abort). With a peer of version 2, `finish` is such a
//! close. [`ConnSender::flush_acked`] waits until the peer acknowledged everything sent so
//! far, across link losses.
//!
//! Receiving takes the connection's whole queue under one lock into the receiver (a swap, no
//! copy), then hands messages out one by one (cutting a peer's batch as it goes); the credit
//! for what the application took goes back to the core in batches (a quarter of the window,
//! or whenever the receiver next locks), so the peer's sender is never starved while a
//! reader keeps up, and a slow reader only holds back its own connection.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::sink::Sink;
use futures::stream::{FusedStream, Stream};
use sotto_proto::session::{CommandError, ConnId, Session};
use sotto_proto::SessionEnd;

use super::handle::end_of;
use super::home::Home;
use super::inbox::Inbox;
use super::staging::Staging;
use super::state::{self, Phase, SessState};
use crate::shared::register;

/// Why a connection cannot send or receive any more.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnError {
    /// The peer closed the connection, with this metadata. Everything it sent before was
    /// delivered.
    PeerClosed(Bytes),
    /// We closed the connection.
    Closed,
    /// The peer finished sending (half-closed its side): everything it sent was delivered
    /// and nothing more comes. The end of the stream, not a failure: we may still send.
    PeerFinished,
    /// We finished sending (half-closed our side): nothing more can be sent; receiving goes
    /// on until the peer finishes or closes.
    Finished,
    /// The session is over (or closing).
    Ended(SessionEnd),
    /// The payload can never be sent on this connection (larger than the peer's window or
    /// than a frame).
    TooLarge {
        /// The payload's length.
        len: u32,
        /// The most it could be.
        max: u32,
    },
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PeerClosed(_) => f.write_str("the peer closed the connection"),
            Self::Closed => f.write_str("the connection is closed"),
            Self::PeerFinished => f.write_str("the peer finished sending (end of stream)"),
            Self::Finished => f.write_str("we finished sending on this connection"),
            Self::Ended(end) => write!(f, "session ended: {end}"),
            Self::TooLarge { len, max } => write!(f, "payload of {len} bytes exceeds {max}"),
        }
    }
}

impl std::error::Error for ConnError {}

/// What both halves share; the last one dropped closes the connection.
struct ConnShared {
    home: Home,
    id: ConnId,
    metadata: Bytes,
}

impl Drop for ConnShared {
    fn drop(&mut self) {
        let mut l = self.home.lock();
        let now = self.home.clock().now();
        let (s, st) = l.parts();
        state::abandon(s, st, now, self.id);
    }
}

/// A virtual connection: an ordered, exactly-once message stream each way, with credit flow
/// control. A `futures` [`Stream`] of received messages and a [`Sink`] of messages to send.
///
/// `send` and `recv` take `&mut self`; to send and receive from different tasks,
/// [`split`](Self::split) it. Dropping it (both halves) closes the connection.
pub struct Connection {
    tx: ConnSender,
    rx: ConnReceiver,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("id", &self.id()).finish()
    }
}

impl Connection {
    pub(crate) fn new(home: Home, id: ConnId, metadata: Bytes, release_at: usize) -> Self {
        let shared = Arc::new(ConnShared { home, id, metadata });
        Self {
            tx: ConnSender {
                shared: Arc::clone(&shared),
                staged: Mutex::new(Staging::default()),
                has_staged: AtomicBool::new(false),
            },
            rx: ConnReceiver {
                shared,
                local: Inbox::default(),
                unreleased: 0,
                unreleased_bytes: 0,
                credit_floor: 0,
                release_at,
                yield_next: false,
                done: None,
                partial: Bytes::new(),
            },
        }
    }

    /// The connection's id (odd: opened by the initiator; even: by the acceptor).
    #[must_use]
    pub fn id(&self) -> ConnId {
        self.tx.shared.id
    }

    /// The peer's metadata: its Accept (connections we opened) or its Open (the peer's).
    #[must_use]
    pub fn peer_metadata(&self) -> &Bytes {
        &self.tx.shared.metadata
    }

    /// Send `item`; see [`ConnSender::send`].
    pub async fn send(&mut self, item: impl AsRef<[u8]>) -> Result<(), ConnError> {
        self.tx.send(item).await
    }

    /// Send a prefix of `items`; see [`ConnSender::send_many`].
    pub async fn send_many<B: AsRef<[u8]>>(&mut self, items: &[B]) -> Result<usize, ConnError> {
        self.tx.send_many(items).await
    }

    /// Receive the next message; see [`ConnReceiver::recv`].
    pub async fn recv(&mut self) -> Result<Bytes, ConnError> {
        self.rx.recv().await
    }

    /// Close the connection with `metadata` (both ways, at once: the peer's data still in
    /// flight is dropped on arrival). Waits for room in the replay ring. To end only our
    /// side and keep reading the peer's, [`finish`](Self::finish) instead.
    pub async fn close(mut self, metadata: &[u8]) {
        self.tx.close_with(metadata).await;
    }

    /// Finish sending (half-close); see [`ConnSender::finish`].
    pub async fn finish(&mut self) -> Result<(), ConnError> {
        self.tx.finish().await
    }

    /// Wait until the peer acknowledged everything sent so far; see
    /// [`ConnSender::flush_acked`].
    pub async fn flush_acked(&mut self) -> Result<(), ConnError> {
        self.tx.flush_acked().await
    }

    /// Both halves, borrowed.
    pub(super) fn halves_mut(&mut self) -> (&mut ConnSender, &mut ConnReceiver) {
        (&mut self.tx, &mut self.rx)
    }

    /// The two halves, for sending and receiving from different tasks. The connection is
    /// closed when both are dropped.
    #[must_use]
    pub fn split(self) -> (ConnSender, ConnReceiver) {
        (self.tx, self.rx)
    }

    /// Put the halves of one connection back together; halves of different connections are
    /// handed back.
    pub fn reunite(tx: ConnSender, rx: ConnReceiver) -> Result<Self, Box<(ConnSender, ConnReceiver)>> {
        if Arc::ptr_eq(&tx.shared, &rx.shared) {
            Ok(Self { tx, rx })
        } else {
            Err(Box::new((tx, rx)))
        }
    }
}

/// The sending half of a [`Connection`].
///
/// It may be shared between tasks (`&self` is enough for [`poll_send`](Self::poll_send) and
/// [`poll_send_many`](Self::poll_send_many), e.g. behind an `Arc`): every task waiting for
/// credit or ring room is woken when there is some, and each task's messages go out in the
/// order it sent them. Messages its [`Sink`] accepted go out before anything sent after
/// them, in every way of sending; a `Sink` send cancelled while it waited keeps its place.
pub struct ConnSender {
    shared: Arc<ConnShared>,
    /// Messages fed to the [`Sink`], not yet queued in the session. Behind a mutex because
    /// `poll_send` (`&self`) queues them first; the `Sink`'s calls (`&mut self`) reach them
    /// without locking.
    staged: Mutex<Staging>,
    /// `staged` is not empty: `poll_send` locks it only then.
    has_staged: AtomicBool,
}

impl std::fmt::Debug for ConnSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnSender").field("id", &self.shared.id).finish()
    }
}

/// The future of [`ConnSender::send`]: one [`poll_send`](ConnSender::poll_send) per poll,
/// inlined into the caller (a message that fits costs no call beyond the session's).
struct SendOne<'a, B> {
    tx: &'a mut ConnSender,
    item: B,
}

impl<B: AsRef<[u8]>> Future for SendOne<'_, B> {
    type Output = Result<(), ConnError>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.into_ref().get_ref();
        this.tx.poll_send(cx, this.item.as_ref())
    }
}

/// The future of [`ConnReceiver::recv`]: one [`poll_recv`](ConnReceiver::poll_recv) per
/// poll, whose common case is inlined into the caller.
struct RecvOne<'a> {
    rx: &'a mut ConnReceiver,
}

impl Future for RecvOne<'_> {
    type Output = Result<Bytes, ConnError>;

    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.rx.poll_recv(cx)
    }
}

impl ConnSender {
    /// The connection's id.
    #[must_use]
    pub fn id(&self) -> ConnId {
        self.shared.id
    }

    /// Send `item`: completes once it is in the session's replay ring (delivery is then the
    /// session's job, across link losses). Waits while the connection has no credit (the
    /// peer's reader is behind) or the ring is full. Cancel-safe: a dropped `send` did not
    /// send its item. The payload is copied once (into the ring), so any byte slice will do.
    /// Each call takes the session's lock once: to send many small messages, hand them over
    /// in bursts with [`send_many`](Self::send_many), which takes it once per burst.
    ///
    /// Messages the [`Sink`] accepted and has not queued yet (a `SinkExt::send` cancelled
    /// while it waited for credit, or `feed` without `flush`) are queued first: they were
    /// handed over first. If one of them cannot be sent, this call returns that error
    /// (dropping that message: only it if it is too large, all of them if the connection or
    /// the session is over) and has not sent `item`.
    pub fn send<B: AsRef<[u8]>>(&mut self, item: B) -> impl Future<Output = Result<(), ConnError>> + use<'_, B> {
        SendOne { tx: self, item }
    }

    /// [`send`](Self::send) as a poll function: `Ready(Ok)` once `item` is queued.
    #[inline(always)]
    pub fn poll_send(&self, cx: &mut Context<'_>, item: &[u8]) -> Poll<Result<(), ConnError>> {
        if self.has_staged.load(Ordering::Acquire) {
            return self.poll_send_staged(cx, item);
        }
        // One message, nothing staged: `queue`'s loop without the loop.
        let id = self.shared.id;
        let mut l = self.shared.home.lock();
        let (s, st) = l.parts();
        match s.send(id, item) {
            Ok(()) => {
                st.common.wake_driver();
                Poll::Ready(Ok(()))
            }
            Err(e) => refusal(s, st, cx, id, e).map_ok(|()| ()),
        }
    }

    /// [`poll_send`](Self::poll_send) with messages staged by the [`Sink`] (they go first).
    #[inline(never)]
    fn poll_send_staged(&self, cx: &mut Context<'_>, item: &[u8]) -> Poll<Result<(), ConnError>> {
        self.poll_send_many(cx, std::slice::from_ref(&item)).map_ok(|_| ())
    }

    /// Send a prefix of `items`, in order, under one lock of the session: as many as the
    /// connection's credit and the replay ring take now, at least one (it waits, like
    /// [`send`](Self::send), until the first one fits). Returns how many were queued, like
    /// a `write` that may be short; `Ok(0)` only for an empty `items`. Cancel-safe: a
    /// dropped call queued nothing.
    ///
    /// Call it when messages come in bursts: the per-message cost of the lock and of waking
    /// the driver is paid once per call. An error on a later item is not lost: the call
    /// returns the count before it, and the next call (starting at that item) returns the
    /// error.
    pub async fn send_many<B: AsRef<[u8]>>(&mut self, items: &[B]) -> Result<usize, ConnError> {
        poll_fn(|cx| self.poll_send_many(cx, items)).await
    }

    /// [`send_many`](Self::send_many) as a poll function.
    pub fn poll_send_many<B: AsRef<[u8]>>(&self, cx: &mut Context<'_>, items: &[B]) -> Poll<Result<usize, ConnError>> {
        if items.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let items = items.iter().map(AsRef::as_ref);
        if self.has_staged.load(Ordering::Acquire) {
            let mut staged = self.staged.lock().unwrap_or_else(PoisonError::into_inner);
            let r = queue(&self.shared, cx, Some(&mut staged), items);
            self.has_staged.store(!staged.is_empty(), Ordering::Release);
            return r;
        }
        queue(&self.shared, cx, None, items)
    }

    /// Close the connection with `metadata`; see [`Connection::close`]. Messages staged in
    /// the [`Sink`] are queued first (they go before the close).
    pub async fn close_with(&mut self, metadata: &[u8]) {
        // An error here means the connection can no longer send: closing is then a no-op.
        let _ = poll_fn(|cx| self.poll_staged(cx)).await;
        let id = self.shared.id;
        poll_fn(|cx| {
            let mut l = self.shared.home.lock();
            let now = self.shared.home.clock().now();
            let (s, st) = l.parts();
            match st.conns.get(&id) {
                Some(slot) if slot.phase == Phase::Open && !slot.local_closed && slot.peer_closed.is_none() => {}
                _ => return Poll::Ready(()),
            }
            match s.close_conn(now, id, metadata) {
                Err(CommandError::WouldBlock) => {
                    st.ring.register(cx);
                    Poll::Pending
                }
                _ => {
                    if let Some(slot) = st.conns.get_mut(&id) {
                        slot.local_closed = true;
                        crate::shared::wake(&mut slot.rx);
                    }
                    st.common.wake_driver();
                    Poll::Ready(())
                }
            }
        })
        .await;
    }

    /// Finish sending on the connection (half-close, like TCP's `shutdown(Write)` or
    /// quinn's `finish`): messages staged in the [`Sink`] are queued first, then an end of
    /// stream, which the peer reads once it has read everything sent before it
    /// ([`ConnError::PeerFinished`] from `recv`, the end of its `Stream`, `Ok(0)` from its
    /// byte reads). Receiving goes on; the connection is over once the peer finishes too (or
    /// either side closes it). Later sends fail with [`ConnError::Finished`]; finishing
    /// again is a no-op. Completes once the end of stream is in the replay ring (waits for
    /// room there); delivery is then the session's job, across link losses.
    ///
    /// With a peer of session protocol version 2 or older (no half-close), this closes the
    /// connection both ways instead, as [`Connection::close`] does: the peer reads
    /// [`ConnError::PeerClosed`] and our reads end with [`ConnError::Closed`].
    pub async fn finish(&mut self) -> Result<(), ConnError> {
        poll_fn(|cx| self.poll_finish(cx)).await
    }

    /// [`finish`](Self::finish) as a poll function.
    pub fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        futures::ready!(self.poll_staged(cx))?;
        let id = self.shared.id;
        let mut l = self.shared.home.lock();
        let now = self.shared.home.clock().now();
        let (s, st) = l.parts();
        match st.conns.get(&id) {
            Some(slot) if slot.local_finished => return Poll::Ready(Ok(())),
            Some(slot) if slot.local_closed => return Poll::Ready(Err(ConnError::Closed)),
            Some(slot) => {
                if let Some(md) = &slot.peer_closed {
                    return Poll::Ready(Err(ConnError::PeerClosed(md.clone())));
                }
            }
            None => return Poll::Ready(Err(ConnError::Closed)),
        }
        let r = match s.finish(id) {
            // An older peer: close both ways instead.
            Err(CommandError::Unsupported) => s.close_conn(now, id, &[]).map(|()| false),
            r => r.map(|()| true),
        };
        match r {
            Ok(half) => {
                if let Some(slot) = st.conns.get_mut(&id) {
                    if half {
                        slot.local_finished = true;
                    } else {
                        slot.local_closed = true;
                        crate::shared::wake(&mut slot.rx);
                    }
                    slot.tx.wake_all();
                }
                st.common.wake_driver();
                Poll::Ready(Ok(()))
            }
            Err(CommandError::WouldBlock) => {
                st.ring.register(cx);
                Poll::Pending
            }
            Err(CommandError::Ended) => Poll::Ready(Err(ConnError::Ended(end_of(s, st)))),
            Err(_) => Poll::Ready(Err(ConnError::Closed)),
        }
    }

    /// Wait until the peer has acknowledged everything sent on this session so far (this
    /// connection's messages and its end of stream included, and every other connection's
    /// sent before the call): the peer's session holds it, past any link loss. Messages the
    /// [`Sink`] staged are queued first. Errors if the session ends first with something
    /// unacknowledged ([`ConnError::Ended`]), or the staged messages cannot be sent. See
    /// [`SessionHandle::flush`](super::SessionHandle::flush).
    pub async fn flush_acked(&mut self) -> Result<(), ConnError> {
        poll_fn(|cx| self.poll_staged(cx)).await?;
        let target = self.shared.home.lock().parts_ref().0.conduit().items_sent();
        poll_fn(|cx| {
            let mut l = self.shared.home.lock();
            let (s, st) = l.parts();
            state::poll_acked(s, st, cx, target).map_err(ConnError::Ended)
        })
        .await
    }

    /// Queue the staged messages (the [`Sink`]'s), in order, as far as they fit now.
    /// `Ready(Ok)` once none is left. An error drops what it concerns: the one message that
    /// is too large, or every staged message if the connection or the session is over.
    pub(super) fn poll_staged(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        let staged = self.staged.get_mut().unwrap_or_else(PoisonError::into_inner);
        if staged.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let r = queue(&self.shared, cx, Some(staged), std::iter::empty());
        *self.has_staged.get_mut() = !staged.is_empty();
        match r {
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The staging, from a `&mut self` call (no locking).
    #[inline]
    fn staging(&mut self) -> &mut Staging {
        self.staged.get_mut().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Queue `staged`'s messages (if any), then a prefix of `items`, in order, under one lock
/// of the session; see [`ConnSender::send_many`]. Returns how many of `items` were queued:
/// `Pending` (registered for credit or ring room) until all of `staged` and at least one of
/// `items` were, or `items` is empty. An error on a staged message drops what it concerns
/// (that message if it is too large, all of them if the connection or the session is over)
/// and is returned.
fn queue<'a>(
    shared: &ConnShared,
    cx: &mut Context<'_>,
    staged: Option<&mut Staging>,
    items: impl Iterator<Item = &'a [u8]>,
) -> Poll<Result<usize, ConnError>> {
    let id = shared.id;
    let mut l = shared.home.lock();
    let (s, st) = l.parts();
    let mut refused = None;
    let mut moved = false;
    if let Some(staged) = staged {
        let mut n = 0;
        for item in staged.items() {
            if let Err(e) = s.send(id, item) {
                refused = Some(e);
                break;
            }
            n += 1;
        }
        moved = n > 0;
        staged.consume(n);
        match refused {
            None | Some(CommandError::NoCredit | CommandError::WouldBlock) => {}
            Some(CommandError::TooLarge { .. }) => staged.consume(1),
            // Never sent: returned with the session's unacknowledged messages.
            Some(CommandError::Ended) => st.unsent.extend(staged.take_rest().into_iter().map(|item| (id, item))),
            Some(_) => staged.consume(staged.len()),
        }
    }
    let mut queued = 0;
    if refused.is_none() {
        for item in items {
            if let Err(e) = s.send(id, item) {
                refused = Some(e);
                break;
            }
            queued += 1;
        }
    }
    if moved || queued > 0 {
        st.common.wake_driver();
    }
    if queued > 0 {
        return Poll::Ready(Ok(queued));
    }
    match refused {
        None => Poll::Ready(Ok(0)),
        Some(e) => refusal(s, st, cx, id, e).map_ok(|()| 0),
    }
}

/// A send on `id` was refused with `e` (nothing of it queued): `Pending`, registered for
/// credit or ring room, or the error for the application. Never `Ready(Ok)`.
#[cold]
fn refusal(
    s: &mut Session,
    st: &mut SessState,
    cx: &mut Context<'_>,
    id: ConnId,
    e: CommandError,
) -> Poll<Result<(), ConnError>> {
    match e {
        CommandError::NoCredit => match st.conns.get_mut(&id) {
            Some(slot) => {
                slot.tx.register(cx);
                Poll::Pending
            }
            None => Poll::Ready(Err(ConnError::Closed)),
        },
        CommandError::WouldBlock => {
            st.ring.register(cx);
            Poll::Pending
        }
        CommandError::TooLarge { len, max } => Poll::Ready(Err(ConnError::TooLarge { len, max })),
        CommandError::Ended => Poll::Ready(Err(ConnError::Ended(end_of(s, st)))),
        _ => Poll::Ready(Err(match st.conns.get(&id) {
            Some(slot) if !slot.local_closed => match &slot.peer_closed {
                Some(md) => ConnError::PeerClosed(md.clone()),
                None if slot.local_finished => ConnError::Finished,
                None => ConnError::Closed,
            },
            _ => ConnError::Closed,
        })),
    }
}

impl Drop for ConnSender {
    /// Messages fed to the [`Sink`] and not queued yet are queued now as far as they fit;
    /// the rest are handed to the session's driver, which sends them (in order, before the
    /// connection's close) once the peer's credit and the ring allow. Only if the connection
    /// or the session is over are they dropped, as every unsent message is then.
    fn drop(&mut self) {
        let id = self.shared.id;
        let staged = self.staged.get_mut().unwrap_or_else(PoisonError::into_inner);
        if staged.is_empty() {
            return;
        }
        let mut l = self.shared.home.lock();
        let (s, st) = l.parts();
        let mut rest = staged.take_rest().into_iter().peekable();
        let mut queued = false;
        while let Some(item) = rest.peek() {
            match s.send(id, item) {
                Ok(()) => queued = true,
                Err(CommandError::NoCredit | CommandError::WouldBlock) => break,
                // Never sendable; the ones after it are.
                Err(CommandError::TooLarge { len, max }) => {
                    tracing::debug!(conn = id, len, max, "sotto: a dropped sink held a message too large to send");
                }
                Err(CommandError::Ended) => {
                    // Returned with the session's unacknowledged messages.
                    st.unsent.extend(rest.map(|item| (id, item)));
                    return;
                }
                Err(e) => {
                    tracing::debug!(conn = id, error = ?e, "sotto: a dropped sink's messages cannot be sent");
                    return;
                }
            }
            rest.next();
        }
        if rest.peek().is_some() {
            state::owe_sends(st, id, rest);
        } else if queued {
            st.common.wake_driver();
        }
    }
}

/// A [`Sink`] that stages up to 256 messages (or 64 KiB; the `Bytes` as they came) and
/// queues them in the session together, under one lock, when it is flushed or full: feed it a
/// burst ([`SinkExt::feed`](futures::SinkExt::feed), or
/// [`SinkExt::send_all`](futures::SinkExt::send_all)) and flush once. `poll_flush` is ready
/// once every staged message is in the replay ring.
impl Sink<Bytes> for ConnSender {
    type Error = ConnError;

    #[inline]
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        let this = self.get_mut();
        if !this.staging().is_full() {
            return Poll::Ready(Ok(()));
        }
        match this.poll_staged(cx) {
            Poll::Pending if this.staging().is_full() => Poll::Pending,
            Poll::Pending => Poll::Ready(Ok(())),
            ready => ready,
        }
    }

    #[inline]
    fn start_send(self: Pin<&mut Self>, item: Bytes) -> Result<(), ConnError> {
        let this = self.get_mut();
        this.staging().push(item);
        *this.has_staged.get_mut() = true;
        Ok(())
    }

    /// Ready once every staged message is in the replay ring.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        self.get_mut().poll_staged(cx)
    }

    /// Flush, then finish the connection (half-close: the peer's stream ends, ours goes
    /// on); see [`ConnSender::finish`].
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        self.get_mut().poll_finish(cx)
    }
}

/// The least number of messages still queued at the reader for a credit grant to make it
/// yield once (see [`ConnReceiver::recv`]). A yield costs a task switch; it pays when the
/// rest of the queue takes far longer to read than that (a backlog of small messages), and
/// not with a few dozen large ones. Yielding at any backlog gave, over three full bench
/// invocations, smol 4 KiB `send` 0.81-0.92x of raw and tokio's 100 connections at 4 KiB
/// 0.89-0.99x, against 0.93-0.98x and 1.17-1.98x without the yield (docs/benchmarks.md).
const YIELD_BACKLOG: usize = 1024;

/// The receiving half of a [`Connection`].
pub struct ConnReceiver {
    shared: Arc<ConnShared>,
    /// Messages taken from the connection's queue, not yet handed out.
    local: Inbox,
    /// Credit of the messages handed out that has not gone back yet
    /// ([`Session::credit_of`](sotto_proto::session::Session::credit_of) each).
    unreleased: usize,
    /// Their bytes (for the statistics).
    unreleased_bytes: usize,
    /// What the least message spends (`credit_of(0)`: 0 with a version-1 peer), read from
    /// the session whenever the queue is taken.
    credit_floor: usize,
    release_at: usize,
    /// A credit grant was queued while messages were handed out from the local queue, and
    /// a backlog waits: the next `poll_recv` yields once first (see [`recv`](Self::recv)).
    yield_next: bool,
    /// Why the stream ended, once it has.
    done: Option<ConnError>,
    /// The unread rest of a message that [`AsyncRead`](futures::io::AsyncRead) took in part
    /// (its credit was accounted when it was taken); `recv` returns it first.
    pub(super) partial: Bytes,
}

impl std::fmt::Debug for ConnReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnReceiver").field("id", &self.shared.id).finish()
    }
}

impl ConnReceiver {
    /// The connection's id.
    #[must_use]
    pub fn id(&self) -> ConnId {
        self.shared.id
    }

    /// The next message. Cancel-safe. After the connection or the session ended, the
    /// messages already delivered are still returned, then the reason.
    ///
    /// Cooperative, as tokio's budgeted resources are: when handing out a message gives the
    /// peer a credit grant (about once per half window) and a long backlog is still queued
    /// here (a thousand messages or more), the next call returns `Pending` once, with the
    /// task already woken, so that the session's driver can send the grant while the rest
    /// are read. On one thread this keeps the peer's sender busy instead of letting the
    /// whole pipeline drain once per window. A loop that polls without waiting
    /// (`now_or_never`) can see such a `Pending` with messages queued.
    pub fn recv(&mut self) -> impl Future<Output = Result<Bytes, ConnError>> + use<'_> {
        RecvOne { rx: self }
    }

    /// Why the stream ended, once it has.
    #[must_use]
    pub fn end(&self) -> Option<&ConnError> {
        self.done.as_ref()
    }

    /// [`recv`](Self::recv) as a poll function.
    #[inline(always)]
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes, ConnError>> {
        // The common case first, inlined: a message already here and no credit to give back
        // yet. Anything else (a partial read, a yield owed, a release due, nothing here) takes
        // the general path, which checks them in order.
        if self.partial.is_empty() && !self.yield_next {
            if let Some(item) = self.local.pop() {
                self.taken(item.len());
                if self.unreleased >= self.release_at {
                    self.release_taken();
                }
                return Poll::Ready(Ok(item));
            }
        }
        self.poll_recv_general(cx)
    }

    /// Give the credit for what was taken back, under the session's lock (about once per
    /// half window); with a long backlog here, the next call yields once (see
    /// [`recv`](Self::recv)).
    #[inline(never)]
    fn release_taken(&mut self) {
        let shared = Arc::clone(&self.shared);
        self.yield_next = self.release(&mut shared.home.lock()) && self.local.messages() >= YIELD_BACKLOG;
    }

    /// [`poll_recv`](Self::poll_recv) in every case.
    #[inline(never)]
    fn poll_recv_general(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes, ConnError>> {
        if !self.partial.is_empty() {
            return Poll::Ready(Ok(std::mem::take(&mut self.partial)));
        }
        if self.yield_next {
            self.yield_next = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if let Some(item) = self.local.pop() {
            self.taken(item.len());
            if self.unreleased >= self.release_at {
                self.release_taken();
            }
            return Poll::Ready(Ok(item));
        }
        if let Some(e) = &self.done {
            return Poll::Ready(Err(e.clone()));
        }
        let id = self.shared.id;
        let shared = Arc::clone(&self.shared);
        let mut l = shared.home.lock();
        self.release(&mut l);
        let (s, st) = l.parts();
        let end = st.common.end(s.conduit());
        let Some(slot) = st.conns.get_mut(&id) else {
            return self.finish(ConnError::Ended(end.unwrap_or(SessionEnd::Evicted)));
        };
        if !slot.queue.is_empty() {
            std::mem::swap(&mut self.local, &mut slot.queue);
            st.unfull(id);
            self.credit_floor = s.credit_of(0) as usize;
            drop(l);
            let item = self.local.pop().unwrap_or_default();
            self.taken(item.len());
            return Poll::Ready(Ok(item));
        }
        if let Some(md) = &slot.peer_closed {
            let e = ConnError::PeerClosed(md.clone());
            return self.finish(e);
        }
        if slot.peer_finished {
            return self.finish(ConnError::PeerFinished);
        }
        if slot.local_closed {
            return self.finish(ConnError::Closed);
        }
        if let Some(end) = end {
            return self.finish(ConnError::Ended(end));
        }
        register(&mut slot.rx, cx);
        Poll::Pending
    }

    fn finish(&mut self, e: ConnError) -> Poll<Result<Bytes, ConnError>> {
        self.done = Some(e.clone());
        Poll::Ready(Err(e))
    }

    /// A message of `len` bytes was handed to the application.
    #[inline(always)]
    fn taken(&mut self, len: usize) {
        self.unreleased += len.max(self.credit_floor);
        self.unreleased_bytes += len;
    }

    /// Give the credit for what the application took back to the core; `true` if that
    /// queued a credit grant to the peer.
    fn release(&mut self, l: &mut super::home::SessLock<'_>) -> bool {
        if self.unreleased == 0 {
            return false;
        }
        let (s, st) = l.parts();
        let grants = s.release(self.shared.id, self.unreleased);
        st.delivered_bytes += self.unreleased_bytes as u64;
        self.unreleased = 0;
        self.unreleased_bytes = 0;
        if grants > 0 {
            // A credit grant was queued: the driver transmits it.
            st.common.wake_driver();
            return true;
        }
        false
    }
}

impl Drop for ConnReceiver {
    /// What was handed out, what is held here and what is queued all give their credit
    /// back, and so will what arrives later: the peer's sender never waits on a dropped
    /// reader (the connection stays open for sending until the `ConnSender` goes too).
    fn drop(&mut self) {
        let local = std::mem::take(&mut self.local);
        for len in local.lens() {
            self.taken(len);
        }
        let shared = Arc::clone(&self.shared);
        let mut l = shared.home.lock();
        self.release(&mut l);
        let (s, st) = l.parts();
        state::discard_incoming(s, st, self.shared.id);
    }
}

impl Stream for ConnReceiver {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = self.get_mut();
        if this.done.is_some() && this.local.is_empty() && this.partial.is_empty() {
            return Poll::Ready(None);
        }
        this.poll_recv(cx).map(Result::ok)
    }
}

impl FusedStream for ConnReceiver {
    fn is_terminated(&self) -> bool {
        self.done.is_some() && self.local.is_empty() && self.partial.is_empty()
    }
}

impl Stream for Connection {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        Pin::new(&mut self.get_mut().rx).poll_next(cx)
    }
}

impl Sink<Bytes> for Connection {
    type Error = ConnError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        Pin::new(&mut self.get_mut().tx).poll_ready(cx)
    }
    fn start_send(self: Pin<&mut Self>, item: Bytes) -> Result<(), ConnError> {
        Pin::new(&mut self.get_mut().tx).start_send(item)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        Pin::new(&mut self.get_mut().tx).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        Pin::new(&mut self.get_mut().tx).poll_close(cx)
    }
}
