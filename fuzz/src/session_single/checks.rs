//! The checks run after every operation: every output drained and verified against the
//! model and against what the peer allowed.

use sotto_proto::conduit::LinkDropReason;
use sotto_proto::session::message::HelloBody;
use sotto_proto::session::{
    message_credit, refusal, ConnId, Message as SMsg, SessionEvent, SessionFailure, PROTOCOL_VERSION, ROOT,
};
use sotto_proto::wire::{ClientHello, Frame, ServerHello, HELLO_LEN};
use sotto_proto::{Event, Role, SessionEnd};

use super::model::{min_credit, Phase, St};
use super::Driver;

impl Driver {
    pub(super) fn drain(&mut self) {
        for _ in 0..64 {
            let mut moved = false;
            let mut n = 0usize;
            loop {
                let ext = self.s.conduit().ext_in_force();
                let established = self.s.conduit().is_established();
                let current = self.s.conduit().current_link();
                let Some(t) = self.s.poll_transmit(self.now, &mut self.buf) else { break };
                moved = true;
                n += 1;
                assert!(n <= self.cfg.conduit.replay_frames as usize + 64, "poll_transmit does not run dry");
                assert_eq!(Some(t.link), current, "transmit for a link that is not current");
                assert!(!self.closed.contains(&t.link), "transmit for a closed link");
                let bytes = self.buf[..t.len].to_vec();
                if self.trace {
                    eprintln!("  -> {:02x?}", &bytes[..bytes.len().min(48)]);
                }
                self.on_transmit(&bytes, established, ext);
            }
            assert!(!self.s.conduit().has_transmit(), "has_transmit after poll_transmit ran dry");
            while let Some(e) = self.s.poll_event() {
                moved = true;
                self.on_event(e);
            }
            if !moved {
                self.check();
                return;
            }
        }
        panic!("outputs never run dry");
    }

    pub(super) fn on_transmit(&mut self, bytes: &[u8], established: bool, ext: bool) {
        if bytes.len() == HELLO_LEN {
            match self.role {
                Role::Initiator if ClientHello::decode(bytes).is_ok() => {
                    // An early Hello follows its ClientHello at once, in the base form.
                    self.early_next = ClientHello::decode(bytes).is_ok_and(|h| h.early);
                    return;
                }
                Role::Acceptor => {
                    if let Ok(h) = ServerHello::decode(bytes) {
                        if h.rejected {
                            assert_eq!(bytes, ServerHello::rejected().encode(), "REJECTED bytes differ");
                        }
                        return;
                    }
                }
                Role::Initiator => {}
            }
        }
        let early = std::mem::take(&mut self.early_next);
        if early {
            let frame = Frame::decode(bytes, false).expect("the early frame is a base-form data frame");
            assert!(matches!(frame, Frame::Data { seq: 0, ack: None, .. }), "early frame: {frame:?}");
        }
        let ext = ext && !early;
        if !established && !early {
            // The last frame of a link that never carried frames: GOODBYE, extended form.
            let f = Frame::decode(bytes, true);
            assert!(matches!(f, Ok(Frame::Goodbye { .. })), "final frame is not a GOODBYE: {f:?}");
            return;
        }
        let frame = Frame::decode(bytes, ext).expect("the session transmits frames that decode");
        if let Frame::Data { seq, item, .. } = frame {
            let seq = u64::from(seq);
            let have = self.out.len() as u64;
            if seq > have {
                // The peer acknowledged items it was never sent (a lie the conduit cannot
                // detect while it stays within what was sent): transmission restarts there.
                assert_eq!(seq, self.s.conduit().items_acked(), "data frame {seq} past the {have} items seen: a gap");
                self.out.resize(seq as usize, None);
                self.blind = true;
            }
            if seq < have {
                if let Some(prev) = &self.out[seq as usize] {
                    assert_eq!(prev.as_slice(), item, "replayed item {seq} differs");
                }
            } else {
                self.verify_out(seq, item);
                self.out.push(Some(item.to_vec()));
            }
        }
    }

    /// Check one of our items, the first time it is transmitted, against the protocol and
    /// against what the peer allowed so far.
    pub(super) fn verify_out(&mut self, seq: u64, item: &[u8]) {
        let m = SMsg::decode(item).unwrap_or_else(|e| panic!("our item {seq} does not decode: {e:?} {item:02x?}"));
        if self.trace {
            eprintln!("  our item {seq}: {m:?}");
        }
        assert!(!self.out_done, "item {seq} after Sorry/ProtocolError: {m:?}");
        let ours = self.parity;
        let theirs = ours.other();
        let blind = self.blind;
        match m {
            SMsg::Hello(b) | SMsg::HelloYourself(b) => {
                let want_hello = self.role == Role::Initiator;
                assert_eq!(matches!(m, SMsg::Hello(_)), want_hello, "wrong hello kind");
                assert!(seq == 0 || blind, "hello not first");
                // The acceptor answers with the version both speak.
                let version = match (self.role, self.peer_version) {
                    (Role::Acceptor, Some(v)) => v.min(PROTOCOL_VERSION),
                    _ => PROTOCOL_VERSION,
                };
                let expect = HelloBody {
                    version,
                    parity: ours,
                    root_credit: self.cfg.initial_credit,
                    max_connections: self.cfg.max_connections,
                    metadata: &self.hello_meta,
                };
                assert_eq!(b, expect);
            }
            // Only to an acceptor older than version 4.
            SMsg::LetsGo => assert!(
                self.role == Role::Initiator
                    && (blind
                        || (seq == 1
                            && self.peer_version.is_some_and(|v| v < sotto_proto::session::READY_ON_HELLO_VERSION))),
                "LetsGo at {seq} (peer version {:?})",
                self.peer_version
            ),
            SMsg::Sorry { code, .. } => {
                assert_eq!(self.s.failure(), Some(SessionFailure::WeRefused { code }), "Sorry without refusal");
                self.out_done = true;
            }
            SMsg::ProtocolError { code, .. } => {
                match self.s.failure() {
                    Some(SessionFailure::Violation(v)) => assert_eq!(v.code(), code),
                    other => panic!("ProtocolError {code} sent, failure {other:?}"),
                }
                self.out_done = true;
            }
            _ => {
                // Our Hello, then our LetsGo to an acceptor older than version 4.
                let lets_go = self.peer_version.is_some_and(|v| v < sotto_proto::session::READY_ON_HELLO_VERSION);
                let first = if self.role == Role::Initiator && lets_go { 2 } else { 1 };
                assert!(seq >= first || blind, "{m:?} at {seq}, during the handshake");
            }
        }
        let (max_meta, initial, max_id) =
            (self.cfg.max_metadata as usize, self.cfg.initial_credit, self.cfg.max_conn_id);
        match m {
            SMsg::Open { conn, credit, metadata } => {
                assert!(ours.owns(conn), "Open {conn} not ours");
                assert!((blind || conn > self.last_open) && conn <= max_id, "Open id {conn} after {}", self.last_open);
                assert_eq!(credit, initial);
                assert!(metadata.len() <= max_meta);
                self.last_open = conn;
                self.ledger(conn).open_item = true;
            }
            SMsg::Accept { conn, credit, metadata } => {
                assert!(theirs.owns(conn) && credit == initial && metadata.len() <= max_meta);
                let l = self.ledger(conn);
                assert!(l.peer_opened && (blind || !l.answer_item), "Accept {conn}: {l:?}");
                l.accept_item = true;
                l.answer_item = true;
            }
            SMsg::Reject { conn, code, metadata } => {
                assert!(theirs.owns(conn) && metadata.len() <= max_meta, "Reject {conn}");
                let l = self.ledger(conn);
                match code {
                    refusal::ID_IN_USE => assert!(l.peer_opened, "ID_IN_USE for {conn}, never opened"),
                    refusal::TOO_MANY_CONNECTIONS | refusal::TOO_MANY_PENDING | refusal::ZERO_CREDIT => {
                        assert!(!l.peer_opened && (blind || !l.answer_item), "automatic Reject {conn}: {l:?}");
                        l.answer_item = true;
                    }
                    c if c >= 0x100 => {
                        assert!(l.peer_opened && (blind || !l.answer_item), "Reject {conn}: {l:?}");
                        l.answer_item = true;
                    }
                    c => panic!("Reject {conn} with code {c}"),
                }
            }
            SMsg::Close { conn, metadata } => {
                assert!(conn != ROOT && metadata.len() <= max_meta);
                let l = self.ledger(conn);
                assert!(blind || if ours.owns(conn) { l.open_item } else { l.accept_item }, "Close {conn}: {l:?}");
                assert!(!l.close_item, "Close {conn} twice");
                l.close_item = true;
            }
            SMsg::Data { conn, payload } => {
                let credit = message_credit(payload.len() as u64, self.peer_batches());
                self.verify_data_out(conn, credit);
            }
            SMsg::DataBatch { conn, batch } => {
                assert!(self.peer_batches(), "DataBatch sent to a version-{:?} peer", self.peer_version);
                let limit = self.batch_limit();
                let item_len = item.len();
                assert!(item_len <= limit.max(limit / 4 + 11), "batch item of {item_len} bytes, batch_bytes {limit}");
                for payload in batch {
                    assert!(payload.len() <= limit / 4, "{} bytes batched, limit {limit}", payload.len());
                }
                self.verify_data_out(conn, batch.credit());
            }
            SMsg::Fin { conn } => {
                assert!(self.peer_half_close(), "Fin sent to a version-{:?} peer", self.peer_version);
                assert!(conn != ROOT, "Fin on the root");
                let l = self.ledger(conn);
                let open = blind || if ours.owns(conn) { l.peer_accepted } else { l.accept_item };
                assert!(open && !l.close_item && !l.fin_item, "Fin on {conn}: {l:?}");
                l.fin_item = true;
            }
            SMsg::Credit { conn, grant } => {
                let l = self.ledger(conn);
                assert!(grant > 0, "zero grant");
                l.grants_out += u64::from(grant);
                assert!(l.grants_out <= l.released && l.grants_out <= l.consumed, "grant on {conn} beyond use: {l:?}");
            }
            _ => {}
        }
    }

    /// Our data spending `credit` on `conn` (a message or a batch): only on an open
    /// connection, never beyond the peer's credit.
    pub(super) fn verify_data_out(&mut self, conn: ConnId, credit: u64) {
        let (ours, blind) = (self.parity, self.blind);
        let l = self.ledger(conn);
        let open = conn == ROOT || blind || if ours.owns(conn) { l.peer_accepted } else { l.accept_item };
        assert!(open && !l.close_item && !l.fin_item, "Data on {conn} that is not open: {l:?}");
        l.data_out += credit;
        assert!(l.data_out <= l.allowance, "Data on {conn} beyond the peer's credit: {l:?}");
    }

    /// The peer's hello was version 2 or later: batches go both ways.
    pub(super) fn peer_batches(&self) -> bool {
        self.peer_version.is_some_and(|v| v >= 2)
    }

    /// The peer's hello was version 3 or later: Fin (half-close) goes both ways.
    pub(super) fn peer_half_close(&self) -> bool {
        self.peer_version.is_some_and(|v| v >= sotto_proto::session::HALF_CLOSE_VERSION)
    }

    /// `batch_bytes` as the session applies it (capped at the largest item).
    pub(super) fn batch_limit(&self) -> usize {
        self.cfg.batch_bytes.min(self.s.conduit().max_item_len()) as usize
    }

    pub(super) fn on_event(&mut self, e: SessionEvent) {
        if self.trace {
            eprintln!("  event {e:?}");
        }
        match e {
            SessionEvent::Ready => {
                assert!(self.ready_expected && !self.ready_seen, "Ready unexpected or twice");
                self.ready_seen = true;
            }
            SessionEvent::ConnWritable(c) => {
                let pos = self.writable_expected.iter().position(|&x| x == c);
                let pos = pos.unwrap_or_else(|| panic!("ConnWritable({c}) unexpected"));
                self.writable_expected.remove(pos);
                assert!(self.s.send_credit(c) > 0 || self.cfg.max_credit == 0);
            }
            SessionEvent::Conduit(Event::DropLink { link, reason }) => {
                if Some(link) == self.link {
                    self.link = None;
                    self.closed.push(link);
                    self.s.link_down(self.now, link);
                } else {
                    assert!(
                        self.closed.contains(&link) && reason == LinkDropReason::Superseded,
                        "DropLink {reason:?} for a link that is not current"
                    );
                }
            }
            SessionEvent::Conduit(Event::Ended(r)) => {
                assert!(self.ended_seen.is_none(), "Ended twice");
                self.ended_seen = Some(r);
                if let SessionEnd::LocalClose { code } = r {
                    assert!(self.close_called || (self.failure.is_some() && code == 3), "LocalClose {code}");
                }
            }
            SessionEvent::Conduit(Event::Attached { .. } | Event::Writable) => {}
        }
    }

    pub(super) fn check(&mut self) {
        let s = &self.s;
        assert!(s.connection_count() <= self.cfg.max_connections as usize, "I6: too many connections");
        assert_eq!(s.connection_count(), self.conns.len() - 1, "connection table differs from the model");
        assert!(self.pending_in <= self.cfg.max_pending_opens, "I6: too many pending Opens");
        for (&id, c) in &self.conns {
            assert_eq!(s.is_open(id), c.state == St::Open, "is_open({id})");
            assert_eq!(s.can_send_on(id), matches!(c.state, St::Open | St::GotFin), "can_send_on({id})");
            assert_eq!(s.can_receive_on(id), matches!(c.state, St::Open | St::SentFin), "can_receive_on({id})");
            assert_eq!(s.send_credit(id), min_credit(c.credit, self.cfg.max_credit), "send_credit({id})");
        }
        for id in [self.next_local as u32, self.highest_peer.wrapping_add(2), self.highest_peer.wrapping_add(1)] {
            if !self.conns.contains_key(&id) {
                assert!(!s.is_open(id) && s.send_credit(id) == 0, "{id} not in the model");
            }
        }
        assert_eq!(s.is_ready(), self.phase == Phase::Ready, "is_ready vs model phase {:?}", self.phase);
        assert_eq!(s.failure(), self.failure, "failure vs model");
        assert!(self.writable_expected.is_empty(), "ConnWritable owed: {:?}", self.writable_expected);
        assert_eq!(self.ready_expected, self.ready_seen, "Ready event");
        let st = s.conduit().stats();
        assert_eq!(st.events_overflowed, 0, "I6: events");
        assert!(st.replay_frames <= u64::from(self.cfg.conduit.replay_frames));
        assert!(st.replay_bytes <= u64::from(self.cfg.conduit.replay_bytes));
        assert_eq!(s.conduit().current_link(), self.link, "driver and session disagree on the link");
        assert_eq!(s.conduit().ended(), self.ended_seen, "ended without an Ended event");
        let ss = s.stats();
        assert_eq!(ss.connections_open, self.conns.len() as u64 - 1);
    }

    pub(super) fn check_timeout_not_past(&mut self) {
        if !self.strict_time() {
            return;
        }
        for _ in 0..8 {
            match self.s.poll_timeout() {
                Some(t) if t <= self.now => {
                    assert!(t == self.now, "poll_timeout {t:?} in the past at {:?}", self.now);
                    assert!(!self.zero_free, "poll_timeout {t:?} not after now after handle_timeout");
                    self.s.handle_timeout(self.now);
                    self.drain();
                }
                _ => return,
            }
        }
        panic!("handle_timeout(now) keeps finding work at {:?}", self.now);
    }
}
