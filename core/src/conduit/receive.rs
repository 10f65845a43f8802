//! The receive path: hellos during the handshake, then frames.

use super::serial::{count_of, expand, last_of};
use super::{
    goodbye_code, Conduit, EarlyFrame, InputError, LinkDropReason, LinkId, LinkState, Observed, Owed, Reason, Role,
    SessionEnd, Violation,
};
use crate::time::Instant;
use crate::timer::Timer;
use crate::wire::{ClientHello, Frame, ResumeKey, ServerHello};

impl Conduit {
    /// Feed one whole link message received on `link` (a hello or a frame, without the
    /// byte-stream length prefix). Returns the delivered item, if the message carried the
    /// next one in sequence; it borrows from `message`.
    ///
    /// Errors say what the input did: the link was stale (ignored), the link is being dropped
    /// (violation, gap, bad hello: an [`Event::DropLink`](super::Event::DropLink) follows and
    /// the session resumes on a new link), or the session ended. Drain the outputs after
    /// every call.
    pub fn handle_message<'a>(
        &mut self,
        now: Instant,
        link: LinkId,
        message: &'a [u8],
    ) -> Result<Option<&'a [u8]>, InputError> {
        let now = self.clock.observe(now);
        if self.link.id() != Some(link) {
            return Err(InputError::StaleLink);
        }
        match self.link {
            LinkState::None | LinkState::Dropping { .. } => Err(InputError::StaleLink),
            LinkState::AwaitClientHello { id, key } => {
                let hello = match ClientHello::decode(message) {
                    Ok(h) => h,
                    Err(e) => return Err(self.handshake_failed(now, id, e)),
                };
                self.accept_client_hello(now, id, key, &hello).map(|()| None)
            }
            LinkState::AwaitServerHello { id, hello_sent } => {
                if !hello_sent {
                    // The peer answered before our hello went out: it is not answering us.
                    return Err(self.violation(now, id, Violation::UnexpectedHello));
                }
                let hello = match ServerHello::decode(message) {
                    Ok(h) => h,
                    Err(e) => return Err(self.handshake_failed(now, id, e)),
                };
                self.handle_server_hello(now, id, &hello).map(|()| None)
            }
            LinkState::Established { id, ext } => self.handle_frame(now, id, ext, message),
        }
    }

    /// Bytes of a link message that is not complete yet arrived on `link`: the peer is alive.
    /// A driver that reads a byte stream calls this when a read brought bytes but no whole
    /// message (a whole message goes to [`handle_message`](Self::handle_message) or
    /// [`observe_message`](Self::observe_message), which count it themselves).
    ///
    /// On the established current link it pushes back, as far as a whole message would, the
    /// deadlines such bytes show to be premature:
    /// - an awaited PONG's, to `pong_timeout` from now: the peer's PONG can wait behind a
    ///   large frame it is still writing;
    /// - in the base form, a blocked sender's ack-starvation deadline, if it runs, to
    ///   `ack_starved_timeout` from now: every data frame of a base-form peer carries its
    ///   ack, and the one arriving has not finished.
    ///
    /// Otherwise a link too slow to carry one large frame within the timeout is dropped before
    /// that frame arrives, every resume replays the same frame, and it is never delivered. A
    /// link that brings nothing in for the timeout is still dropped.
    ///
    /// And while our PING has been awaited for `ping_interval`, the bytes make a standalone
    /// ACK due, once per interval: the peer hears nothing else from us meanwhile (no whole
    /// frame to ack), and if its own PING waits behind the same large frame (its writes
    /// queued in its socket), these are what keep it from dropping the link as silent (a
    /// conduit that has received nothing has no position to send, and sends nothing). Drain
    /// [`poll_transmit`](Self::poll_transmit) after this input, as after any other. Produces
    /// no event; [`poll_timeout`](Self::poll_timeout) only moves later. Bounded work.
    pub fn handle_progress(&mut self, now: Instant, link: LinkId) {
        let now = self.clock.observe(now);
        let LinkState::Established { id, ext } = self.link else { return };
        if id != link {
            return;
        }
        if !ext {
            if self.timers.get(Timer::AckStarved).is_some() {
                self.arm_ack_starved(now, true);
            }
            return;
        }
        if let Some((_, sent_at)) = self.ping_outstanding {
            // A standalone ACK (our position, changed or not) as a sign of life, once per
            // interval: a PING would do, but several in flight behind our own writes could
            // reach the peer bunched, as a ping flood.
            let next = self.heartbeat_at.unwrap_or_else(|| sent_at.saturating_add(self.config.ping_interval));
            if now >= next && self.our_last_received().is_some() {
                self.ack_now = true;
                self.heartbeat_at = Some(now.saturating_add(self.config.ping_interval));
            }
        }
        if self.timers.get(Timer::PongTimeout).is_some() {
            self.timers.set(Timer::PongTimeout, now.saturating_add(self.config.pong_timeout));
        }
    }

    /// Take from a link message what it says about the link, without consuming an item:
    /// for a driver that has read `message` but cannot take delivery of items now (the
    /// application's queue is full), so that the peer's acknowledgments and keepalive are
    /// not left unread behind data it holds back, and a link that keeps delivering bytes is
    /// never declared dead for it.
    ///
    /// - A data frame: its acknowledgment is applied (the replay ring frees room, and
    ///   [`Event::Writable`](super::Event::Writable) follows if a `send` was refused) and it
    ///   counts as traffic for the keepalive; its item is not consumed:
    ///   [`Observed::Deferred`].
    /// - A GOODBYE counts as traffic and is [`Observed::DeferredGoodbye`]: it ends the
    ///   session, so it must come after the data before it.
    /// - Anything else (a hello, a standalone ack, a PING, a PONG, or a message that does
    ///   not decode) is handled exactly as [`handle_message`](Self::handle_message) handles
    ///   it: [`Observed::Handled`], with the same errors.
    ///
    /// Contract: once one message of a link is held back, pass every later message of that
    /// link here first, in arrival order; later, pass each deferred message to
    /// `handle_message` exactly once, in arrival order (a `Handled` one is never passed
    /// again). A deferred frame's acknowledgment applied a second time does nothing (acks
    /// only move forward). Drain the outputs after every call, as after `handle_message`.
    pub fn observe_message(&mut self, now: Instant, link: LinkId, message: &[u8]) -> Result<Observed, InputError> {
        let now = self.clock.observe(now);
        let LinkState::Established { id, ext } = self.link else {
            return self.handle_message(now, link, message).map(|_| Observed::Handled);
        };
        if id != link {
            return Err(InputError::StaleLink);
        }
        if self.early == EarlyFrame::ToReceive {
            // The early frame (base form, nothing to ack): held back like any data frame;
            // the frames observed after it are in the link's own form.
            return match Frame::decode(message, false) {
                Ok(Frame::Data { .. }) => {
                    self.early = EarlyFrame::Observed;
                    self.link_heard(now, false);
                    Ok(Observed::Deferred)
                }
                _ => self.handle_message(now, link, message).map(|_| Observed::Handled),
            };
        }
        match Frame::decode(message, ext) {
            Ok(Frame::Data { ack, .. }) => {
                self.frame_heard(now, ext, false);
                if let Some(ack) = ack {
                    self.handle_data_ack(now, id, ext, ack)?;
                }
                Ok(Observed::Deferred)
            }
            Ok(Frame::Goodbye { .. }) => {
                self.frame_heard(now, ext, false);
                Ok(Observed::DeferredGoodbye)
            }
            // Acks, PINGs and PONGs deliver nothing: handled now, out of order with the
            // held-back data, which they do not depend on. A malformed frame drops the link.
            _ => self.handle_message(now, link, message).map(|_| Observed::Handled),
        }
    }

    fn handshake_failed(&mut self, now: Instant, id: LinkId, e: crate::wire::WireError) -> InputError {
        self.stats.link_drops.handshake_failed += 1;
        let reason = LinkDropReason::HandshakeFailed(e);
        self.drop_link(now, id, reason);
        InputError::LinkDropped(reason)
    }

    fn violation(&mut self, now: Instant, id: LinkId, v: Violation) -> InputError {
        self.stats.link_drops.violation += 1;
        let reason = LinkDropReason::Violation(v);
        self.drop_link(now, id, reason);
        InputError::LinkDropped(reason)
    }

    /// Acceptor: decide on a decoded ClientHello for link `id`, issuing `key` if accepted.
    pub(crate) fn accept_client_hello(
        &mut self,
        now: Instant,
        id: LinkId,
        key: ResumeKey,
        hello: &ClientHello,
    ) -> Result<(), InputError> {
        let resuming = match hello.resume_key {
            // A fresh hello on a session whose peer never proved it got our ServerHello (no
            // frame arrived since) is that peer retrying after a lost ServerHello: it still
            // starts from nothing, so the session carries on as fresh and replays everything.
            None if !self.ever_attached || !self.peer_confirmed => {
                self.previous_key = None;
                false
            }
            None => return Err(self.reject(now, id)),
            Some(k) => {
                let current = self.key.is_some_and(|c| c.ct_eq(&k));
                let previous = self.previous_key.is_some_and(|p| p.ct_eq(&k));
                if !self.ever_attached || !(current | previous) {
                    return Err(self.reject(now, id));
                }
                true
            }
        };
        let Some(peer_count) = count_of(hello.last_received, self.sent) else {
            return Err(self.resume_inconsistent(now, id));
        };
        if peer_count < self.acked || peer_count > self.sent {
            return Err(self.resume_inconsistent(now, id));
        }
        if key.is_zero() {
            // The driver must supply a real key; refusing is safer than issuing "absent".
            return Err(self.reject(now, id));
        }
        if resuming {
            self.previous_key = hello.resume_key;
        }
        self.key = Some(key);
        self.issuing_key = key;
        self.owed = Owed::ServerHello;
        self.attach(now, id, self.config.ext && hello.ext, resuming, peer_count);
        if hello.early {
            self.early = EarlyFrame::ToReceive;
        }
        Ok(())
    }

    fn reject(&mut self, now: Instant, id: LinkId) -> InputError {
        self.stats.link_drops.handshake_failed += 1;
        self.drop_link(now, id, LinkDropReason::Rejected);
        self.owed = Owed::Rejected;
        InputError::LinkDropped(LinkDropReason::Rejected)
    }

    fn resume_inconsistent(&mut self, now: Instant, id: LinkId) -> InputError {
        if self.role == Role::Acceptor {
            self.owed = Owed::Rejected;
            self.drop_link(now, id, LinkDropReason::Rejected);
        }
        let goodbye = Reason::new(goodbye_code::RESUME_INCONSISTENT, "resume position inconsistent");
        self.end_session(now, SessionEnd::ResumeInconsistent, Some(goodbye));
        InputError::SessionEnded(SessionEnd::ResumeInconsistent)
    }

    /// Initiator: the acceptor's answer.
    fn handle_server_hello(&mut self, now: Instant, id: LinkId, hello: &ServerHello) -> Result<(), InputError> {
        if hello.rejected {
            self.stats.link_drops.handshake_failed += 1;
            // Only a fresh session asked with EXT can be told the acceptor is full.
            let end = if self.key.is_none() && self.config.ext && hello.is_full() {
                SessionEnd::Full
            } else if self.key.is_some() && self.config.ext && hello.is_issuer_gone() {
                // Only a resume asked with EXT can be told its key's issuer is gone.
                SessionEnd::IssuerGone
            } else {
                SessionEnd::Rejected
            };
            self.end_session(now, end, None);
            return Err(InputError::SessionEnded(end));
        }
        let resuming = self.key.is_some();
        if !resuming && hello.last_received.is_some() {
            return Err(self.violation(now, id, Violation::FreshWithPosition));
        }
        let peer_count = count_of(hello.last_received, self.sent);
        if !peer_count.is_some_and(|c| c >= self.acked && c <= self.sent) {
            if self.config.ext && hello.ext {
                // The acceptor considers the link established: tell it why we leave.
                self.link = LinkState::Established { id, ext: true };
            }
            return Err(self.resume_inconsistent(now, id));
        }
        let peer_count = peer_count.unwrap_or(0);
        self.key = Some(hello.resume_key);
        self.attach(now, id, self.config.ext && hello.ext, resuming, peer_count);
        Ok(())
    }

    /// The handshake on `id` finished: frames flow from the peer's position.
    fn attach(&mut self, now: Instant, id: LinkId, ext: bool, resumed: bool, peer_count: u64) {
        self.timers.clear(Timer::Handshake);
        self.timers.clear(Timer::Recovery);
        self.detached_since = None;
        self.apply_ack_count(peer_count);
        self.tx_cursor = self.acked;
        if self.early == EarlyFrame::Sent {
            // Our early frame was this link's first: the acceptor reads it before anything else.
            self.tx_cursor = self.tx_cursor.max(1);
        }
        // Our hello carried our position; a fresh session's carries none (an acceptor may
        // have delivered a fresh initiator's first frames on an earlier link, or early).
        self.ack_sent = if resumed { self.received } else { 0 };
        if ext && self.received > self.ack_sent {
            self.timers.set_earliest(Timer::AckDelay, now.saturating_add(self.config.ack_delay));
        }
        self.ever_attached = true;
        self.link = LinkState::Established { id, ext };
        self.stats.attaches += 1;
        if resumed {
            self.stats.resumes += 1;
        }
        if ext {
            self.timers.set(Timer::Ping, now.saturating_add(self.config.ping_interval));
        }
        self.arm_ack_starved(now, true);
        let replaying = self.sent - self.tx_cursor;
        self.events.push(super::Event::Attached { link: id, resumed, ext, replaying });
    }

    fn handle_frame<'a>(
        &mut self,
        now: Instant,
        id: LinkId,
        ext: bool,
        message: &'a [u8],
    ) -> Result<Option<&'a [u8]>, InputError> {
        let early = matches!(self.early, EarlyFrame::ToReceive | EarlyFrame::Observed);
        let frame = match Frame::decode(message, ext && !early) {
            Ok(f) => f,
            Err(e) => {
                // A hello on an established link is a violation of its own kind (H11).
                let v = if message.len() == crate::wire::HELLO_LEN
                    && (ClientHello::decode(message).is_ok() || ServerHello::decode(message).is_ok())
                {
                    Violation::UnexpectedHello
                } else {
                    Violation::Malformed(e)
                };
                return Err(self.violation(now, id, v));
            }
        };
        if early {
            // Sent before the peer had our ServerHello: it proves nothing of our key.
            self.early = EarlyFrame::No;
            self.stats.early_frames_received += 1;
            self.link_heard(now, false);
        } else {
            self.frame_heard(now, ext, matches!(frame, Frame::Pong(_)));
        }
        match frame {
            Frame::Data { seq, ack, item } => {
                if let Some(ack) = ack {
                    self.handle_data_ack(now, id, ext, ack)?;
                }
                let Some(seq) = expand(seq, self.received) else {
                    return Err(self.violation(now, id, Violation::StaleBeyondWindow));
                };
                if seq < self.received {
                    if self.received - seq > u64::from(self.config.duplicate_window) {
                        return Err(self.violation(now, id, Violation::StaleBeyondWindow));
                    }
                    self.stats.duplicates_dropped += 1;
                    return Ok(None);
                }
                if seq > self.received {
                    self.stats.link_drops.gap += 1;
                    self.drop_link(now, id, LinkDropReason::Gap);
                    return Err(InputError::LinkDropped(LinkDropReason::Gap));
                }
                self.received += 1;
                self.stats.frames_delivered += 1;
                self.stats.bytes_delivered += item.len() as u64;
                if ext {
                    if self.received - self.ack_sent >= u64::from(self.config.ack_every) {
                        self.ack_now = true;
                    } else {
                        // Earliest: an ack deferred to the keepalive (`defer_ack`) is owed
                        // within `ack_delay` again once a frame arrives after it.
                        self.timers.set_earliest(Timer::AckDelay, now.saturating_add(self.config.ack_delay));
                    }
                }
                Ok(Some(item))
            }
            Frame::Ack(ack) => self.handle_ack(now, id, ack).map(|()| None),
            Frame::Ping(nonce) => {
                if let Some(last) = self.last_ping_rx {
                    if now.saturating_duration_since(last) < self.config.min_ping_interval {
                        self.ping_strikes += 1;
                        if self.ping_strikes > self.config.max_ping_strikes {
                            let goodbye = Reason::new(goodbye_code::TOO_MANY_PINGS, "too many pings");
                            self.end_session(now, SessionEnd::TooManyPings, Some(goodbye));
                            return Err(InputError::SessionEnded(SessionEnd::TooManyPings));
                        }
                    }
                }
                self.last_ping_rx = Some(now);
                // At most one pong pending: a newer ping replaces the older.
                self.pong_owed = Some(nonce);
                Ok(None)
            }
            Frame::Pong(nonce) => {
                if let Some((outstanding, sent_at)) = self.ping_outstanding {
                    if outstanding == nonce {
                        self.ping_outstanding = None;
                        self.heartbeat_at = None;
                        self.stats.pongs_received += 1;
                        self.stats.rtt = Some(now.saturating_duration_since(sent_at));
                        self.timers.clear(Timer::PongTimeout);
                        self.timers.set(Timer::Ping, now.saturating_add(self.config.ping_interval));
                    }
                }
                Ok(None)
            }
            Frame::Goodbye { code, reason } => {
                self.peer_goodbye = Some(Reason::new(code, reason));
                self.end_session(now, SessionEnd::PeerGoodbye { code }, None);
                Err(InputError::SessionEnded(SessionEnd::PeerGoodbye { code }))
            }
        }
    }

    /// A well-formed frame arrived on the established link: the peer holds our key, and the
    /// link is alive.
    fn frame_heard(&mut self, now: Instant, ext: bool, pong: bool) {
        self.link_heard(now, pong);
        if self.role == Role::Acceptor {
            // The peer got our ServerHello.
            self.peer_confirmed = true;
            if ext {
                // A sotto initiator adopts the new key as it reads the ServerHello, so the
                // key it held before is retired (R15). A vox 0.3.0 initiator (base form)
                // adopts it only once its whole replay is written: if the link dies
                // mid-replay, frames of that replay have arrived here and it still resumes
                // with the old key. In the base form the previous key is retired when the
                // new one is presented (a later resume).
                self.previous_key = None;
            }
        }
    }

    /// A well-formed frame arrived on the established link: it is alive.
    fn link_heard(&mut self, now: Instant, pong: bool) {
        if self.timers.get(Timer::PongTimeout).is_some() && !pong {
            // Anything heard proves the link alive; keep the deadline one timeout ahead. A PONG
            // counts only if it answers our PING: one with the wrong nonce, or none
            // outstanding, is ignored outright and the deadline keeps running (SCENARIOS K2).
            self.timers.set(Timer::PongTimeout, now.saturating_add(self.config.pong_timeout));
        }
    }

    /// The ack riding on a data frame (delivered now, or observed and held back).
    fn handle_data_ack(&mut self, now: Instant, id: LinkId, ext: bool, ack: u32) -> Result<(), InputError> {
        self.handle_ack(now, id, ack)?;
        if !ext && self.want_writable {
            // The peer is acking, only not far enough yet: backpressure, not starvation.
            self.arm_ack_starved(now, true);
        }
        Ok(())
    }

    fn handle_ack(&mut self, now: Instant, id: LinkId, ack: u32) -> Result<(), InputError> {
        match count_of(Some(ack), self.sent) {
            Some(count) if count <= self.sent => {
                self.apply_ack_count(count);
                Ok(())
            }
            _ => Err(self.violation(now, id, Violation::AckBeyondSent)),
        }
    }

    /// The position we report: the wire `last_received`.
    pub(crate) fn our_last_received(&self) -> Option<u32> {
        last_of(self.received)
    }
}
