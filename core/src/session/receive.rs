//! The session receive path: decode the conduit's item, enforce the rules, hand the message
//! to the application.

use super::conn_table::{Conn, ConnState};
use super::message::{
    message_credit, DataBatch, HelloBody, Message, BATCH_VERSION, HALF_CLOSE_VERSION, MIN_PROTOCOL_VERSION,
    READY_ON_HELLO_VERSION,
};
use super::types::{refusal, ConnId, Incoming, SessionFailure, SessionInputError, SessionViolation, ROOT};
use super::{Phase, Session};
use crate::conduit::{InputError, LinkDropReason, LinkId, Role};
use crate::time::Instant;
use crate::SessionEnd;

impl Session {
    /// Feed one link message received on `link`. Returns the peer message it completed, if
    /// any, borrowing from `message`. Errors say what the input did (see
    /// [`SessionInputError`]); on a session-rule violation `ProtocolError` has been queued and
    /// the session is ending. Drain the outputs after every call.
    #[inline]
    pub fn handle_message<'a>(
        &mut self,
        now: Instant,
        link: LinkId,
        message: &'a [u8],
    ) -> Result<Option<Incoming<'a>>, SessionInputError> {
        let item = match self.conduit.handle_message(now, link, message) {
            Ok(Some(item)) => item,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.conduit_error(link, e)),
        };
        if self.phase == Phase::Ready {
            match item.split_first() {
                Some((&super::message::TAG_DATA, rest)) => {
                    // Hot path: data on an open connection with credit.
                    if let Ok((conn, n)) = crate::wire::varint::decode_varint(rest) {
                        if let Some(c) = self.conns.get_mut(conn) {
                            let payload = &rest[n..];
                            let cost = message_credit(payload.len() as u64, self.peer_batches);
                            if c.state.peer_sends() && cost <= c.recv_window {
                                c.recv_window -= cost;
                                return Ok(Some(Incoming::Data { conn, payload }));
                            }
                        }
                    }
                }
                Some((&super::message::TAG_DATA_BATCH, rest)) if self.peer_batches => {
                    // Hot path: a batch on an open connection with credit for all of it.
                    if let Ok((conn, n)) = crate::wire::varint::decode_varint(rest) {
                        if let Some(c) = self.conns.get_mut(conn) {
                            if let Ok(batch) = DataBatch::parse(&rest[n..]) {
                                let cost = batch.credit();
                                if c.state.peer_sends() && cost <= c.recv_window {
                                    c.recv_window -= cost;
                                    return Ok(Some(Incoming::DataBatch { conn, batch }));
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        self.handle_item(now, item)
    }

    /// [`Conduit::observe_message`](crate::conduit::Conduit::observe_message) for the
    /// session's conduit: what a link message says about the link (acknowledgment,
    /// keepalive) without consuming a session message, for a driver that cannot take
    /// delivery now. Same contract: each deferred message is later passed to
    /// [`handle_message`](Self::handle_message), in arrival order.
    pub fn observe_message(
        &mut self,
        now: Instant,
        link: LinkId,
        message: &[u8],
    ) -> Result<crate::conduit::Observed, SessionInputError> {
        self.conduit.observe_message(now, link, message).map_err(|e| self.conduit_error(link, e))
    }

    /// The conduit refused `link`'s message. One case is not the end: an initiator whose
    /// session never got through its session handshake (its link died before HelloYourself,
    /// and the acceptor dropped the half-made session before the resume came) is told its
    /// key is unknown (REJECTED, or IssuerGone after a restart of the acceptor). Nothing of it
    /// reached our application, and the acceptor's, if it saw the session at all (a version-4
    /// acceptor announces it as it answers the Hello), has ended it or lost it (else the key
    /// would still route), so it starts afresh, as [`reset`](Self::reset) does, and the
    /// driver drops `link` and dials again (a fresh ClientHello and session Hello), within
    /// its connect deadline, instead of failing the connect.
    fn conduit_error(&mut self, link: LinkId, e: InputError) -> SessionInputError {
        let restart = matches!(e, InputError::SessionEnded(SessionEnd::Rejected | SessionEnd::IssuerGone))
            && self.conduit.role() == Role::Initiator
            && self.phase == Phase::AwaitHelloYourself
            && self.conduit.resume_key().is_some();
        if !restart {
            return SessionInputError::Conduit(e);
        }
        self.reset();
        self.conduit.queue_drop(link, LinkDropReason::StartedAfresh);
        SessionInputError::Conduit(InputError::LinkDropped(LinkDropReason::StartedAfresh))
    }

    /// Everything but data on an open connection: decode the message and apply the rules.
    fn handle_item<'a>(&mut self, now: Instant, item: &'a [u8]) -> Result<Option<Incoming<'a>>, SessionInputError> {
        if self.phase == Phase::Failed {
            return Ok(None);
        }
        let msg = match Message::decode(item) {
            Ok(m) => m,
            Err(e) => return Err(self.violation(now, SessionViolation::Malformed(e))),
        };
        match self.phase {
            Phase::AwaitHello => self.on_hello(now, msg),
            Phase::AwaitHelloYourself => self.on_hello_yourself(now, msg),
            Phase::AwaitLetsGo => match msg {
                Message::LetsGo => {
                    self.phase = Phase::Ready;
                    self.ready_event = true;
                    // The initiator waits for nothing more: its LetsGo is acked by our first
                    // frame, or with the first keepalive.
                    self.conduit.defer_ack(now);
                    Ok(None)
                }
                Message::Sorry { code, .. } => Err(self.refused(now, SessionFailure::PeerRefused { code })),
                _ => Err(self.violation(now, SessionViolation::UnexpectedHandshake)),
            },
            Phase::Ready => self.on_ready_message(now, msg),
            Phase::Failed => Ok(None),
        }
    }

    fn violation(&mut self, now: Instant, v: SessionViolation) -> SessionInputError {
        self.fail(now, SessionFailure::Violation(v));
        SessionInputError::Violation(v)
    }

    fn refused(&mut self, now: Instant, f: SessionFailure) -> SessionInputError {
        self.fail(now, f);
        SessionInputError::Refused(f)
    }

    /// Check the peer's hello settings; `Err(code)` to refuse. The acceptor takes a Hello
    /// of any version from the oldest it speaks up (a newer initiator gets our version back
    /// and speaks it); the initiator takes only a version it speaks.
    fn check_peer_hello(&self, body: &HelloBody<'_>, newer_ok: bool) -> Result<(), u32> {
        if body.version < MIN_PROTOCOL_VERSION || (!newer_ok && body.version > self.version) {
            return Err(refusal::VERSION);
        }
        if body.parity != self.parity.other() {
            return Err(refusal::PARITY);
        }
        if body.root_credit == 0 || body.max_connections == 0 {
            return Err(refusal::SETTINGS);
        }
        if body.metadata.len() > self.config.max_metadata as usize {
            return Err(refusal::METADATA);
        }
        Ok(())
    }

    fn adopt_root_credit(&mut self, root_credit: u32) {
        let max = u64::from(self.config.max_credit);
        if let Some(root) = self.conns.get_mut(ROOT) {
            root.send_credit = u64::from(root_credit);
            root.peer_window = root.send_credit.min(max);
        }
    }

    fn on_hello<'a>(&mut self, now: Instant, msg: Message<'a>) -> Result<Option<Incoming<'a>>, SessionInputError> {
        let Message::Hello(body) = msg else {
            return Err(self.violation(now, SessionViolation::UnexpectedHandshake));
        };
        if let Err(code) = self.check_peer_hello(&body, true) {
            return Err(self.refused(now, SessionFailure::WeRefused { code }));
        }
        self.adopt_root_credit(body.root_credit);
        // The version both speak: an older initiator gets its own version back.
        let version = body.version.min(self.version);
        self.peer_batches = version >= BATCH_VERSION;
        self.peer_half_close = version >= HALF_CLOSE_VERSION;
        let mut h = [0u8; super::message::MAX_HEADER_LEN];
        let ours = HelloBody {
            version,
            parity: self.parity,
            root_credit: self.config.initial_credit,
            max_connections: self.config.connection_cap().unwrap_or(1),
            metadata: &self.hello_metadata,
        };
        let (head, tail) = Message::HelloYourself(ours).encode_parts(&mut h);
        // The ring holds nothing of ours yet, and our metadata fits an item (checked in new).
        if self.conduit.send_vectored(&[head, tail]).is_err() {
            return Err(self.refused(now, SessionFailure::WeRefused { code: refusal::SETTINGS }));
        }
        if version >= READY_ON_HELLO_VERSION {
            // No LetsGo follows: the session is the application's now. If the initiator
            // refuses our answer after all (its `max_metadata` below our metadata), its Sorry
            // ends the session, `PeerRefused` (see `on_ready_message`).
            self.phase = Phase::Ready;
            self.ready_event = true;
        } else {
            self.phase = Phase::AwaitLetsGo;
        }
        Ok(Some(Incoming::PeerHello { metadata: body.metadata }))
    }

    fn on_hello_yourself<'a>(
        &mut self,
        now: Instant,
        msg: Message<'a>,
    ) -> Result<Option<Incoming<'a>>, SessionInputError> {
        let body = match msg {
            Message::HelloYourself(body) => body,
            Message::Sorry { code, .. } => return Err(self.refused(now, SessionFailure::PeerRefused { code })),
            _ => return Err(self.violation(now, SessionViolation::UnexpectedHandshake)),
        };
        if let Err(code) = self.check_peer_hello(&body, false) {
            return Err(self.refused(now, SessionFailure::WeRefused { code }));
        }
        self.adopt_root_credit(body.root_credit);
        self.peer_batches = body.version >= BATCH_VERSION;
        self.peer_half_close = body.version >= HALF_CLOSE_VERSION;
        if body.version >= READY_ON_HELLO_VERSION {
            // The acceptor is ready already: nothing to send. Its HelloYourself is acked by
            // our first frame, or with the first keepalive.
            self.conduit.defer_ack(now);
        } else if self.send_msg(&Message::LetsGo).is_err() {
            return Err(self.refused(now, SessionFailure::WeRefused { code: refusal::SETTINGS }));
        }
        self.phase = Phase::Ready;
        self.ready_event = true;
        Ok(Some(Incoming::PeerHello { metadata: body.metadata }))
    }

    /// Whether `conn` was used earlier in this session (and is now closed).
    fn was_used(&self, conn: ConnId) -> bool {
        if self.parity.owns(conn) {
            u64::from(conn) < self.next_local_id
        } else {
            conn != ROOT && conn <= self.highest_peer_id
        }
    }

    fn on_ready_message<'a>(
        &mut self,
        now: Instant,
        msg: Message<'a>,
    ) -> Result<Option<Incoming<'a>>, SessionInputError> {
        // Every message that carries metadata is held to `max_metadata`, whatever it does next
        // (an ignored late Reject or Close included): the application is never handed more.
        if let Message::Open { metadata, .. }
        | Message::Accept { metadata, .. }
        | Message::Reject { metadata, .. }
        | Message::Close { metadata, .. } = msg
        {
            if metadata.len() > self.config.max_metadata as usize {
                return Err(self.violation(now, SessionViolation::MetadataTooLarge));
            }
        }
        match msg {
            Message::Data { conn, payload } => {
                let Some(c) = self.conns.get_mut(conn) else {
                    if self.was_used(conn) {
                        self.stats.data_dropped_closed += 1;
                        return Ok(None);
                    }
                    return Err(self.violation(now, SessionViolation::UnknownConnection));
                };
                if !c.state.peer_sends() {
                    let v = if c.state == ConnState::GotFin {
                        SessionViolation::AfterFin
                    } else {
                        SessionViolation::NotOpen
                    };
                    return Err(self.violation(now, v));
                }
                let cost = message_credit(payload.len() as u64, self.peer_batches);
                if cost > c.recv_window {
                    return Err(self.violation(now, SessionViolation::CreditExceeded));
                }
                c.recv_window -= cost;
                Ok(Some(Incoming::Data { conn, payload }))
            }
            Message::DataBatch { .. } if !self.peer_batches => {
                // A version-1 peer does not have this message.
                Err(self.violation(
                    now,
                    SessionViolation::Malformed(crate::wire::WireError::UnknownKind {
                        kind: super::message::TAG_DATA_BATCH,
                    }),
                ))
            }
            Message::DataBatch { conn, batch } => {
                let Some(c) = self.conns.get_mut(conn) else {
                    if self.was_used(conn) {
                        self.stats.data_dropped_closed += u64::from(batch.count());
                        return Ok(None);
                    }
                    return Err(self.violation(now, SessionViolation::UnknownConnection));
                };
                if !c.state.peer_sends() {
                    let v = if c.state == ConnState::GotFin {
                        SessionViolation::AfterFin
                    } else {
                        SessionViolation::NotOpen
                    };
                    return Err(self.violation(now, v));
                }
                let cost = batch.credit();
                if cost > c.recv_window {
                    return Err(self.violation(now, SessionViolation::CreditExceeded));
                }
                c.recv_window -= cost;
                Ok(Some(Incoming::DataBatch { conn, batch }))
            }
            Message::Credit { conn, grant } => {
                let Some(c) = self.conns.get_mut(conn) else {
                    if self.was_used(conn) {
                        self.stats.control_ignored += 1;
                        return Ok(None);
                    }
                    return Err(self.violation(now, SessionViolation::UnknownConnection));
                };
                // Counted exactly, as the peer counts it (clamping here would make the peer
                // believe we hold credit we dropped, and both sides would wait forever); our
                // `max_credit` caps what `send` uses.
                c.send_credit = c.send_credit.saturating_add(u64::from(grant));
                if c.want_writable && c.send_credit > 0 {
                    c.want_writable = false;
                    self.queue_writable(conn);
                }
                Ok(None)
            }
            Message::Open { conn, credit, metadata } => self.on_open(now, conn, credit, metadata),
            Message::Accept { conn, credit, metadata } => {
                let max = u64::from(self.config.max_credit);
                match self.conns.get_mut(conn) {
                    Some(c) if c.state == ConnState::OpeningOut => {
                        c.state = ConnState::Open;
                        c.send_credit = u64::from(credit);
                        c.peer_window = c.send_credit.min(max);
                        Ok(Some(Incoming::Accepted { conn, metadata }))
                    }
                    _ => {
                        // Never opened by us, or already resolved: ignored (D4).
                        self.stats.control_ignored += 1;
                        Ok(None)
                    }
                }
            }
            Message::Reject { conn, code, metadata } => {
                if conn == ROOT {
                    return Err(self.violation(now, SessionViolation::RootClosed));
                }
                match self.conns.get(conn) {
                    Some(c) if c.state == ConnState::OpeningOut => {
                        self.conns.remove(conn);
                        Ok(Some(Incoming::Rejected { conn, code, metadata }))
                    }
                    _ => {
                        // An accepted connection is never torn down by a late Reject (D4).
                        self.stats.control_ignored += 1;
                        Ok(None)
                    }
                }
            }
            Message::Close { conn, metadata } => {
                if conn == ROOT {
                    return Err(self.violation(now, SessionViolation::RootClosed));
                }
                match self.conns.get(conn).map(|c| c.state) {
                    Some(state) => {
                        self.conns.remove(conn);
                        if state == ConnState::PendingIn {
                            // Opened and closed again before we could answer: a reset. These
                            // (and the Opens we refuse for limits) are the churn the budget
                            // bounds; ordinary closes of answered connections are not.
                            self.pending_in -= 1;
                            if !self.count_churn(now) {
                                return Err(SessionInputError::Violation(SessionViolation::TooManyResets));
                            }
                        }
                        Ok(Some(Incoming::Closed { conn, metadata }))
                    }
                    None => {
                        // Unknown or already closed: ignored, counted (D5). If it is an Open we
                        // refused and still owe the Reject for (our ring was full), the peer has
                        // given up on it: the Reject is moot, so it no longer takes room in the
                        // bounded owed queue (else a peer cancelling Opens while our ring is full
                        // overflows it and the session ends with "too many resets").
                        if let Some(pos) = self.owed_rejects.iter().position(|&(c, _)| c == conn) {
                            self.owed_rejects.remove(pos);
                        }
                        self.stats.control_ignored += 1;
                        Ok(None)
                    }
                }
            }
            Message::Fin { .. } if !self.peer_half_close => {
                // An older peer does not have this message.
                Err(self.violation(
                    now,
                    SessionViolation::Malformed(crate::wire::WireError::UnknownKind { kind: super::message::TAG_FIN }),
                ))
            }
            Message::Fin { conn } => self.on_fin(now, conn),
            Message::ProtocolError { code, .. } => {
                self.fail(now, SessionFailure::PeerProtocolError { code });
                Err(SessionInputError::Refused(SessionFailure::PeerProtocolError { code }))
            }
            // Version 4: the acceptor is ready as it answers the Hello, so the initiator's
            // refusal of that answer arrives here, as its first message after the Hello (in
            // older versions that message was LetsGo, processed before Ready).
            Message::Sorry { code, .. }
                if self.conduit.role() == Role::Acceptor && self.conduit.items_received() == 2 =>
            {
                Err(self.refused(now, SessionFailure::PeerRefused { code }))
            }
            Message::Hello(_) | Message::HelloYourself(_) | Message::LetsGo | Message::Sorry { .. } => {
                Err(self.violation(now, SessionViolation::UnexpectedHandshake))
            }
        }
    }

    /// The peer's end of stream on `conn`.
    fn on_fin<'a>(&mut self, now: Instant, conn: ConnId) -> Result<Option<Incoming<'a>>, SessionInputError> {
        if conn == ROOT {
            return Err(self.violation(now, SessionViolation::RootClosed));
        }
        let Some(c) = self.conns.get_mut(conn) else {
            if self.was_used(conn) {
                // We closed it (or both sides finished and a duplicate came): a late one.
                self.stats.control_ignored += 1;
                return Ok(None);
            }
            return Err(self.violation(now, SessionViolation::UnknownConnection));
        };
        match c.state {
            ConnState::Open => {
                c.state = ConnState::GotFin;
                Ok(Some(Incoming::Finished { conn, both: false }))
            }
            ConnState::SentFin => {
                self.conns.remove(conn);
                Ok(Some(Incoming::Finished { conn, both: true }))
            }
            ConnState::GotFin => Err(self.violation(now, SessionViolation::AfterFin)),
            ConnState::OpeningOut | ConnState::PendingIn => Err(self.violation(now, SessionViolation::NotOpen)),
        }
    }

    fn on_open<'a>(
        &mut self,
        now: Instant,
        conn: ConnId,
        credit: u32,
        metadata: &'a [u8],
    ) -> Result<Option<Incoming<'a>>, SessionInputError> {
        if !self.parity.other().owns(conn) {
            // Id 0, one of ours, or the wrong parity: a violation (D1, D3).
            return Err(self.violation(now, SessionViolation::WrongParity));
        }
        self.stats.opens_received += 1;
        if self.conns.get(conn).is_some() {
            // In use: reject; the existing connection is untouched (D2).
            return self.auto_reject(now, conn, refusal::ID_IN_USE);
        }
        if conn <= self.highest_peer_id {
            return Err(self.violation(now, SessionViolation::IdReused));
        }
        self.highest_peer_id = conn;
        if credit == 0 {
            return self.auto_reject(now, conn, refusal::ZERO_CREDIT);
        }
        if self.conns.len() >= self.conns.capacity() {
            return self.auto_reject(now, conn, refusal::TOO_MANY_CONNECTIONS);
        }
        if self.pending_in >= self.config.max_pending_opens {
            return self.auto_reject(now, conn, refusal::TOO_MANY_PENDING);
        }
        let send_credit = u64::from(credit);
        self.conns.insert(Conn {
            id: conn,
            state: ConnState::PendingIn,
            send_credit,
            recv_window: u64::from(self.config.initial_credit),
            pending_grant: 0,
            want_writable: false,
            peer_window: send_credit.min(u64::from(self.config.max_credit)),
        });
        self.pending_in += 1;
        Ok(Some(Incoming::Open { conn, metadata }))
    }

    fn auto_reject<'a>(
        &mut self,
        now: Instant,
        conn: ConnId,
        code: u32,
    ) -> Result<Option<Incoming<'a>>, SessionInputError> {
        self.stats.opens_auto_rejected += 1;
        if !self.count_churn(now) {
            return Err(SessionInputError::Violation(SessionViolation::TooManyResets));
        }
        if self.send_msg(&super::Message::Reject { conn, code, metadata: &[] }).is_err() {
            if self.owed_rejects.len() > self.config.max_pending_opens as usize {
                return Err(self.violation(now, SessionViolation::TooManyResets));
            }
            self.owed_rejects.push((conn, code));
        }
        Ok(None)
    }
}
