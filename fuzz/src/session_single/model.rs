//! The reference model of the session table: what the session must make of each peer
//! input (docs/protocol.md section 2).

use sotto_proto::conduit::InputError;
use sotto_proto::session::message::{HelloBody, TAG_DATA_BATCH};
use sotto_proto::session::{
    message_credit, refusal, ConnId, Incoming, Message as SMsg, SessionFailure, SessionInputError as E,
    SessionViolation as V, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, READY_ON_HELLO_VERSION, ROOT,
};
use sotto_proto::wire::Frame;
use sotto_proto::wire::WireError;
use sotto_proto::{Instant, LinkId, Role};

use super::Driver;

/// The model's phase of the session handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    AwaitHelloYourself,
    AwaitHello,
    AwaitLetsGo,
    Ready,
    Failed,
}

/// A connection's state in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum St {
    OpeningOut,
    PendingIn,
    Open,
    /// We sent Fin (protocol version 3).
    SentFin,
    /// The peer sent Fin.
    GotFin,
}

/// A connection in the session's table, as the model sees it.
#[derive(Clone, Copy, Debug)]
pub(super) struct MConn {
    pub(super) state: St,
    /// Send credit, counted exactly as the peer counts it.
    pub(super) credit: u64,
    /// The peer's window (its initial credit, clamped to our `max_credit`).
    pub(super) peer_window: u64,
    pub(super) want_writable: bool,
}

/// What crossed the wire for one connection id over its whole life (ids are never reused).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Ledger {
    /// Credit the peer gave us (initial + grants).
    pub(super) allowance: u64,
    /// Credit spent by the data in our transmitted items (`message_credit` per message).
    pub(super) data_out: u64,
    /// Credit spent by the data handed to the application.
    pub(super) consumed: u64,
    /// Credit the application released.
    pub(super) released: u64,
    /// Grants in our transmitted Credit items.
    pub(super) grants_out: u64,
    /// `Incoming::Open` handed out.
    pub(super) peer_opened: bool,
    /// `Incoming::Accepted` handed out.
    pub(super) peer_accepted: bool,
    /// Our items: Open, Accept, an answer (Accept or a Reject other than ID_IN_USE), Close.
    pub(super) open_item: bool,
    pub(super) accept_item: bool,
    pub(super) answer_item: bool,
    pub(super) close_item: bool,
    /// Our Fin.
    pub(super) fin_item: bool,
}

pub(super) fn min_credit(a: u64, max: u32) -> u64 {
    a.min(u64::from(max))
}

impl Driver {
    pub(super) fn fail(&mut self, f: SessionFailure) {
        if self.phase != Phase::Failed {
            self.phase = Phase::Failed;
            self.failure = Some(f);
        }
    }

    pub(super) fn expect_violation(&mut self, actual: &Result<Option<Incoming<'_>>, E>, v: V) {
        assert_eq!(*actual, Err(E::Violation(v)), "expected violation {v:?}");
        self.fail(SessionFailure::Violation(v));
    }

    pub(super) fn was_used(&self, conn: ConnId) -> bool {
        if self.parity.owns(conn) {
            u64::from(conn) < self.next_local
        } else {
            conn != ROOT && conn <= self.highest_peer
        }
    }

    /// One unit of peer churn (an automatic Reject, a rapid reset): whether the budget is
    /// exceeded (fixed windows of `churn_period` from the first churn after a window ends).
    pub(super) fn churn(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.churn_start) >= self.cfg.churn_period {
            self.churn_start = now;
            self.churn_count = 0;
        }
        self.churn_count += 1;
        self.churn_count > self.cfg.churn_budget
    }

    pub(super) fn expect_churn(
        &mut self,
        now: Instant,
        actual: &Result<Option<Incoming<'_>>, E>,
        ok: Result<Option<Incoming<'_>>, E>,
        could_send: bool,
    ) {
        let over = self.churn(now);
        match actual {
            Err(E::Violation(V::TooManyResets)) => {
                // Past the budget, or a Reject owed with the owed queue full (ring full).
                assert!(over || !could_send, "TooManyResets within the churn budget");
                self.fail(SessionFailure::Violation(V::TooManyResets));
            }
            a => {
                assert!(!over, "churn beyond the budget did not end the session: {a:?}");
                assert_eq!(*a, ok);
            }
        }
    }

    pub(super) fn peer_hello(&mut self, b: HelloBody<'_>, actual: &Result<Option<Incoming<'_>>, E>) {
        // The acceptor takes newer versions (and answers with its own); the initiator only
        // one it speaks.
        let too_new = b.version > PROTOCOL_VERSION && self.role == Role::Initiator;
        let code = if b.version < MIN_PROTOCOL_VERSION || too_new {
            Some(refusal::VERSION)
        } else if b.parity != self.parity.other() {
            Some(refusal::PARITY)
        } else if b.root_credit == 0 || b.max_connections == 0 {
            Some(refusal::SETTINGS)
        } else if b.metadata.len() > self.cfg.max_metadata as usize {
            Some(refusal::METADATA)
        } else {
            None
        };
        if let Some(code) = code {
            assert_eq!(*actual, Err(E::Refused(SessionFailure::WeRefused { code })), "hello {b:?}");
            self.fail(SessionFailure::WeRefused { code });
            return;
        }
        self.peer_version = Some(b.version);
        let max = self.cfg.max_credit;
        if let Some(root) = self.conns.get_mut(&ROOT) {
            root.credit = u64::from(b.root_credit);
            root.peer_window = min_credit(root.credit, max);
        }
        self.ledger(ROOT).allowance = u64::from(b.root_credit);
        match actual {
            Ok(Some(Incoming::PeerHello { metadata })) => {
                assert_eq!(*metadata, b.metadata);
                if self.role == Role::Acceptor && b.version.min(PROTOCOL_VERSION) < READY_ON_HELLO_VERSION {
                    // An older initiator finishes with LetsGo.
                    self.phase = Phase::AwaitLetsGo;
                } else {
                    // Version 4: the acceptor is ready as it answers, the initiator sends no
                    // LetsGo.
                    self.phase = Phase::Ready;
                    self.ready_expected = true;
                }
            }
            // Our reply did not fit the ring.
            Err(E::Refused(f @ SessionFailure::WeRefused { code: refusal::SETTINGS })) => self.fail(*f),
            other => panic!("good hello {b:?}: {other:?}"),
        }
    }

    /// The conduit delivered `item`: predict and check what the session made of it.
    pub(super) fn on_delivered(
        &mut self,
        now: Instant,
        item: &[u8],
        actual: &Result<Option<Incoming<'_>>, E>,
        could_send: bool,
    ) {
        if self.phase == Phase::Failed {
            assert_eq!(*actual, Ok(None), "input after failure");
            return;
        }
        let msg = match SMsg::decode(item) {
            Ok(m) => m,
            Err(e) => return self.expect_violation(actual, V::Malformed(e)),
        };
        let unexpected = V::UnexpectedHandshake;
        match self.phase {
            Phase::AwaitHello => match msg {
                SMsg::Hello(b) => self.peer_hello(b, actual),
                _ => self.expect_violation(actual, unexpected),
            },
            Phase::AwaitHelloYourself => match msg {
                SMsg::HelloYourself(b) => self.peer_hello(b, actual),
                SMsg::Sorry { code, .. } => {
                    assert_eq!(*actual, Err(E::Refused(SessionFailure::PeerRefused { code })));
                    self.fail(SessionFailure::PeerRefused { code });
                }
                _ => self.expect_violation(actual, unexpected),
            },
            Phase::AwaitLetsGo => match msg {
                SMsg::LetsGo => {
                    assert_eq!(*actual, Ok(None));
                    self.phase = Phase::Ready;
                    self.ready_expected = true;
                }
                SMsg::Sorry { code, .. } => {
                    assert_eq!(*actual, Err(E::Refused(SessionFailure::PeerRefused { code })));
                    self.fail(SessionFailure::PeerRefused { code });
                }
                _ => self.expect_violation(actual, unexpected),
            },
            Phase::Ready => self.on_ready(now, msg, actual, could_send),
            Phase::Failed => unreachable!("handled above"),
        }
    }

    pub(super) fn on_ready(
        &mut self,
        now: Instant,
        msg: SMsg<'_>,
        actual: &Result<Option<Incoming<'_>>, E>,
        could_send: bool,
    ) {
        let max_credit = self.cfg.max_credit;
        let max_meta = self.cfg.max_metadata as usize;
        match msg {
            SMsg::DataBatch { .. } if !self.peer_batches() => {
                // A version-1 peer does not have this message.
                self.expect_violation(actual, V::Malformed(WireError::UnknownKind { kind: TAG_DATA_BATCH }))
            }
            SMsg::Data { .. } | SMsg::DataBatch { .. } => {
                // What the message spends of the credit (at least MIN_MESSAGE_CREDIT each
                // from a version-2 peer).
                let (conn, len) = match msg {
                    SMsg::Data { conn, payload } => (conn, message_credit(payload.len() as u64, self.peer_batches())),
                    SMsg::DataBatch { conn, batch } => (conn, batch.credit()),
                    _ => unreachable!("matched above"),
                };
                match self.conns.get(&conn).map(|c| c.state) {
                    Some(St::Open | St::SentFin) => {
                        let initial = i128::from(self.initial());
                        let l = *self.ledger(conn);
                        let (cons, rel) = (i128::from(l.consumed), i128::from(l.released));
                        // The window we may have granted (at most what was released) and the
                        // one we certainly granted (what we transmitted).
                        let hi = initial + rel.min(cons) - cons;
                        let lo = initial + i128::from(l.grants_out) - cons;
                        let delivered = match (actual, msg) {
                            (Ok(Some(Incoming::Data { conn: c, payload: p })), SMsg::Data { payload, .. }) => {
                                *c == conn && *p == payload
                            }
                            (Ok(Some(Incoming::DataBatch { conn: c, batch: b })), SMsg::DataBatch { batch, .. }) => {
                                *c == conn && b.iter().eq(batch.iter())
                            }
                            _ => false,
                        };
                        match actual {
                            Ok(Some(_)) if delivered => {
                                assert!(i128::from(len) <= hi, "data beyond any window accepted: {l:?}");
                                self.ledger(conn).consumed += len;
                            }
                            Err(E::Violation(V::CreditExceeded)) => {
                                assert!(i128::from(len) > lo, "data within the granted window refused: {l:?}");
                                self.fail(SessionFailure::Violation(V::CreditExceeded));
                            }
                            other => panic!("Data on open {conn}: {other:?}"),
                        }
                    }
                    Some(St::GotFin) => self.expect_violation(actual, V::AfterFin),
                    Some(_) => self.expect_violation(actual, V::NotOpen),
                    None if self.was_used(conn) => assert_eq!(*actual, Ok(None)),
                    None => self.expect_violation(actual, V::UnknownConnection),
                }
            }
            SMsg::Fin { .. } if !self.peer_half_close() => {
                // An older peer does not have this message.
                self.expect_violation(
                    actual,
                    V::Malformed(sotto_proto::wire::WireError::UnknownKind {
                        kind: sotto_proto::session::message::TAG_FIN,
                    }),
                )
            }
            SMsg::Fin { conn } if conn == ROOT => self.expect_violation(actual, V::RootClosed),
            SMsg::Fin { conn } => match self.conns.get(&conn).map(|c| c.state) {
                Some(St::Open) => {
                    assert_eq!(*actual, Ok(Some(Incoming::Finished { conn, both: false })));
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.state = St::GotFin;
                    }
                }
                Some(St::SentFin) => {
                    assert_eq!(*actual, Ok(Some(Incoming::Finished { conn, both: true })));
                    self.conns.remove(&conn);
                }
                Some(St::GotFin) => self.expect_violation(actual, V::AfterFin),
                Some(St::OpeningOut | St::PendingIn) => self.expect_violation(actual, V::NotOpen),
                None if self.was_used(conn) => assert_eq!(*actual, Ok(None)),
                None => self.expect_violation(actual, V::UnknownConnection),
            },
            SMsg::Credit { conn, .. } if !self.conns.contains_key(&conn) => {
                if self.was_used(conn) {
                    assert_eq!(*actual, Ok(None));
                } else {
                    self.expect_violation(actual, V::UnknownConnection);
                }
            }
            SMsg::Credit { conn, grant } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    assert_eq!(*actual, Ok(None));
                    c.credit = c.credit.saturating_add(u64::from(grant));
                    if c.want_writable && c.credit > 0 {
                        c.want_writable = false;
                        self.writable_expected.push(conn);
                    }
                    let l = self.ledger(conn);
                    l.allowance = l.allowance.saturating_add(u64::from(grant));
                }
            }
            // Every message carrying metadata is held to the cap first, even one that would be
            // ignored.
            SMsg::Open { metadata, .. }
            | SMsg::Accept { metadata, .. }
            | SMsg::Reject { metadata, .. }
            | SMsg::Close { metadata, .. }
                if metadata.len() > max_meta =>
            {
                self.expect_violation(actual, V::MetadataTooLarge)
            }
            SMsg::Open { conn, credit, metadata } => {
                if !self.parity.other().owns(conn) {
                    return self.expect_violation(actual, V::WrongParity);
                }
                if self.conns.contains_key(&conn) {
                    return self.expect_churn(now, actual, Ok(None), could_send);
                }
                if conn <= self.highest_peer {
                    return self.expect_violation(actual, V::IdReused);
                }
                self.highest_peer = conn;
                let full = self.conns.len() > self.cfg.max_connections as usize;
                if credit == 0 || full || self.pending_in >= self.cfg.max_pending_opens {
                    return self.expect_churn(now, actual, Ok(None), could_send);
                }
                assert_eq!(*actual, Ok(Some(Incoming::Open { conn, metadata })));
                let c = u64::from(credit);
                self.conns.insert(
                    conn,
                    MConn {
                        state: St::PendingIn,
                        credit: c,
                        peer_window: min_credit(c, max_credit),
                        want_writable: false,
                    },
                );
                self.pending_in += 1;
                let l = self.ledger(conn);
                l.allowance = c;
                l.peer_opened = true;
            }
            SMsg::Accept { conn, credit, metadata } => match self.conns.get_mut(&conn) {
                Some(c) if c.state == St::OpeningOut => {
                    c.state = St::Open;
                    c.credit = u64::from(credit);
                    c.peer_window = min_credit(c.credit, max_credit);
                    let l = self.ledger(conn);
                    l.allowance = u64::from(credit);
                    l.peer_accepted = true;
                    assert_eq!(*actual, Ok(Some(Incoming::Accepted { conn, metadata })));
                }
                _ => assert_eq!(*actual, Ok(None), "Accept for {conn} must be ignored"),
            },
            SMsg::Reject { conn, code, metadata } => {
                if conn == ROOT {
                    return self.expect_violation(actual, V::RootClosed);
                }
                match self.conns.get(&conn) {
                    Some(c) if c.state == St::OpeningOut => {
                        assert_eq!(*actual, Ok(Some(Incoming::Rejected { conn, code, metadata })));
                        self.conns.remove(&conn);
                    }
                    _ => assert_eq!(*actual, Ok(None), "Reject for {conn} must be ignored"),
                }
            }
            SMsg::Close { conn, metadata } => {
                if conn == ROOT {
                    return self.expect_violation(actual, V::RootClosed);
                }
                match self.conns.remove(&conn) {
                    Some(c) if c.state == St::PendingIn => {
                        self.pending_in -= 1;
                        self.expect_churn(now, actual, Ok(Some(Incoming::Closed { conn, metadata })), true);
                    }
                    Some(_) => assert_eq!(*actual, Ok(Some(Incoming::Closed { conn, metadata }))),
                    None => assert_eq!(*actual, Ok(None), "Close for {conn} must be ignored"),
                }
            }
            SMsg::ProtocolError { code, .. } => {
                assert_eq!(*actual, Err(E::Refused(SessionFailure::PeerProtocolError { code })));
                self.fail(SessionFailure::PeerProtocolError { code });
            }
            // A version-4 initiator's refusal of our HelloYourself: its first item after the
            // Hello, which we answered ready.
            SMsg::Sorry { code, .. } if self.role == Role::Acceptor && self.s.conduit().items_received() == 2 => {
                assert_eq!(*actual, Err(E::Refused(SessionFailure::PeerRefused { code })));
                self.fail(SessionFailure::PeerRefused { code });
            }
            SMsg::Hello(_) | SMsg::HelloYourself(_) | SMsg::LetsGo | SMsg::Sorry { .. } => {
                self.expect_violation(actual, V::UnexpectedHandshake);
            }
        }
    }

    /// Feed one link message on `link` (the current one unless stale).
    pub(super) fn feed(&mut self, link: Option<LinkId>, msg: &[u8]) {
        let Some(link) = link else { return };
        let ext = self.s.conduit().ext_in_force();
        let received = self.s.conduit().items_received();
        let count = self.s.connection_count();
        let could_send = self.s.conduit().can_send(32);
        let failed_before = self.s.failure();
        let now = self.now;
        let r = self.s.handle_message(now, link, msg);
        if self.trace {
            eprintln!("  <- {:02x?} on {link:?}: {r:?}", &msg[..msg.len().min(48)]);
        }
        let delivered = self.s.conduit().items_received();
        if delivered == received {
            assert!(matches!(r, Ok(None) | Err(E::Conduit(_))), "no item delivered, yet {r:?}");
            assert_eq!(self.s.connection_count(), count);
            assert_eq!(self.s.failure(), failed_before);
            if r == Err(E::Conduit(InputError::StaleLink)) {
                assert!(Some(link) != self.link);
            }
            return;
        }
        assert_eq!(delivered, received + 1);
        let item = match Frame::decode(msg, ext) {
            Ok(Frame::Data { item, .. }) => item,
            other => panic!("an item was delivered from {other:?}"),
        };
        self.on_delivered(now, item, &r, could_send);
    }
}
