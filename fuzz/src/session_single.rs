//! `session_receive`: one [`Session`] (initiator or acceptor) driven from a byte script the
//! way a contract-following driver drives it, with a hostile peer: raw link messages, conduit
//! hellos and frames, and crafted (or raw) session messages inside valid conduit DATA frames,
//! plus time, timers, link up/down and every application command (open, accept, reject,
//! close_conn, send, release, close). All outputs are drained and checked after every
//! operation.
//!
//! A reference model of the session table (docs/protocol.md section 2) predicts the outcome of
//! every session message the conduit delivers and of every command, and the session's own
//! output (every item it transmits is decoded) is checked against what the peer allowed:
//!
//! - the connection table (count, states, `is_open`, exact send credit) equals the model's;
//!   `connection_count <= max_connections`, pending Opens `<= max_pending_opens`;
//! - every delivered message gets the predicted outcome: delivery, a violation (whose
//!   `ProtocolError` follows), a refusal (`Sorry`), an automatic `Reject`; churn beyond
//!   `churn_budget` per `churn_period` ends the session;
//! - a command succeeds exactly when none of its documented errors applies, and fails with one
//!   that applies;
//! - our items: handshake first (Hello / HelloYourself, LetsGo), nothing after `Sorry` or
//!   `ProtocolError`; Opens of our parity with increasing ids; each peer Open answered once;
//!   Data only on open connections and never beyond the credit the peer granted (credit never
//!   negative), grants never beyond what the application released and consumed;
//! - peer data is refused beyond the window we could have granted, and accepted within the
//!   window we did grant;
//! - `Ready` once, `ConnWritable` only for a connection that hit `NoCredit` and got a grant;
//!   no event overflow; after `handle_timeout(now)` no deadline lies in the past.
//!
//! Script: four conduit config bytes ([`crate::single::config_from`]), three session bytes
//! ([`session_config_from`]), then operations (an opcode byte `% 20` and its operands, see
//! [`Driver::step`]).

use crate::script::Script;
use crate::single::config_from;
use sotto_proto::conduit::{InputError, LinkDropReason};
use sotto_proto::session::message::{data_header_len, HelloBody, TAG_DATA_BATCH};
use sotto_proto::session::{
    message_credit, refusal, CommandError, ConnId, DataBatch, Incoming, Message as SMsg, Parity, Session,
    SessionConfig, SessionEvent, SessionFailure, SessionInputError as E, SessionViolation as V, MIN_MESSAGE_CREDIT,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, ROOT,
};
use sotto_proto::wire::varint::encode_varint;
use sotto_proto::wire::WireError;
use sotto_proto::wire::{ClientHello, Frame, ServerHello, HELLO_LEN};
use sotto_proto::{Duration, Event, Instant, LinkId, ResumeKey, Role, SessionEnd};
use std::collections::BTreeMap;

/// Beyond this instant deadlines may saturate; the strict timer checks stop there.
const SATURATION_ZONE: u64 = 1 << 62;

/// A valid session configuration from three script bytes (after the conduit's four): small
/// tables, windows and budgets so that every limit is reached. Also returns the role and our
/// hello metadata.
pub fn session_config_from(s: &mut Script<'_>) -> (Role, SessionConfig, Vec<u8>) {
    let conduit = config_from(s);
    let a = s.u8();
    let b = s.u8();
    let c = s.u8();
    let role = if a & 1 == 0 { Role::Initiator } else { Role::Acceptor };
    let ms = Duration::from_millis;
    let mut cfg = SessionConfig::default();
    cfg.conduit = conduit;
    cfg.max_connections = [1u32, 2, 4, 16][usize::from((a >> 1) & 3)];
    cfg.max_pending_opens = [0u32, 1, 2, 8][usize::from((a >> 3) & 3)];
    cfg.initial_credit = [1u32, 10, 100, 1000, 4096, 65_536, 1 << 20, u32::MAX][usize::from(a >> 5)];
    cfg.max_credit = [1u32, 50, 1000, 16 << 20][usize::from(b & 3)];
    cfg.max_metadata = [0u32, 4, 16, 4096][usize::from((b >> 2) & 3)];
    cfg.churn_budget = [0u32, 1, 3, 100][usize::from((b >> 4) & 3)];
    cfg.churn_period = [Duration::ZERO, ms(1), ms(1000), ms(10_000)][usize::from(b >> 6)];
    cfg.max_conn_id = [1u32, 2, 5, 40, 1000, u32::MAX - 1, u32::MAX, u32::MAX][usize::from(c & 7)];
    cfg.max_memory = None;
    // Bits 6-7 of `c` (free until then): no batching, batches of tiny messages, and two
    // sizes that make the item cap or the batch cap bind.
    cfg.batch_bytes = [0u32, 16, 64, 16_384][usize::from(c >> 6)];
    assert_eq!(cfg.validate(), Ok(()), "fuzz session config must be valid: {cfg:?}");
    let meta_len = usize::from((c >> 3) % 8).min(cfg.max_metadata as usize);
    let meta: Vec<u8> = (0..meta_len).map(|i| b'm' + i as u8).collect();
    (role, cfg, meta)
}

/// The model's phase of the session handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    AwaitHelloYourself,
    AwaitHello,
    AwaitLetsGo,
    Ready,
    Failed,
}

/// A connection's state in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    OpeningOut,
    PendingIn,
    Open,
}

/// A connection in the session's table, as the model sees it.
#[derive(Clone, Copy, Debug)]
struct MConn {
    state: St,
    /// Send credit, counted exactly as the peer counts it.
    credit: u64,
    /// The peer's window (its initial credit, clamped to our `max_credit`).
    peer_window: u64,
    want_writable: bool,
}

/// What crossed the wire for one connection id over its whole life (ids are never reused).
#[derive(Clone, Copy, Debug, Default)]
struct Ledger {
    /// Credit the peer gave us (initial + grants).
    allowance: u64,
    /// Credit spent by the data in our transmitted items (`message_credit` per message).
    data_out: u64,
    /// Credit spent by the data handed to the application.
    consumed: u64,
    /// Credit the application released.
    released: u64,
    /// Grants in our transmitted Credit items.
    grants_out: u64,
    /// `Incoming::Open` handed out.
    peer_opened: bool,
    /// `Incoming::Accepted` handed out.
    peer_accepted: bool,
    /// Our items: Open, Accept, an answer (Accept or a Reject other than ID_IN_USE), Close.
    open_item: bool,
    accept_item: bool,
    answer_item: bool,
    close_item: bool,
}

/// A contract-following driver around one session, with the reference model.
struct Driver {
    s: Session,
    role: Role,
    cfg: SessionConfig,
    hello_meta: Vec<u8>,
    parity: Parity,
    now: Instant,
    link: Option<LinkId>,
    closed: Vec<LinkId>,
    keys: u64,
    buf: Vec<u8>,
    zero_free: bool,
    trace: bool,
    // --- model
    phase: Phase,
    failure: Option<SessionFailure>,
    conns: BTreeMap<ConnId, MConn>,
    ledger: BTreeMap<ConnId, Ledger>,
    pending_in: u32,
    next_local: u64,
    highest_peer: u32,
    churn_start: Instant,
    churn_count: u32,
    ready_expected: bool,
    ready_seen: bool,
    writable_expected: Vec<ConnId>,
    close_called: bool,
    ended_seen: Option<SessionEnd>,
    /// The version of the peer's accepted hello (2 and up: `DataBatch` both ways).
    peer_version: Option<u32>,
    // --- our output
    /// Our items by seq, as first transmitted (`None`: skipped, the peer lied about it).
    out: Vec<Option<Vec<u8>>>,
    /// Some item was never transmitted: checks that need every earlier item are off.
    blind: bool,
    /// No item may follow (a Sorry or ProtocolError was sent).
    out_done: bool,
    last_open: u32,
}

/// A `DataBatch` body carrying `payload` split into `parts` messages (`(varint(len) bytes)+`).
fn batch_body(payload: &[u8], parts: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(payload.len() + 5 * parts);
    let step = payload.len() / parts;
    for i in 0..parts {
        let end = if i + 1 == parts { payload.len() } else { (i + 1) * step };
        let part = &payload[i * step..end];
        let mut len = [0u8; 5];
        let n = encode_varint(part.len() as u32, &mut len).expect("5 bytes hold a u32");
        body.extend_from_slice(&len[..n]);
        body.extend_from_slice(part);
    }
    body
}

fn min_credit(a: u64, max: u32) -> u64 {
    a.min(u64::from(max))
}

impl Driver {
    fn new(role: Role, cfg: SessionConfig, hello_meta: Vec<u8>) -> Self {
        let s = Session::new(role, cfg, &hello_meta).expect("valid session config");
        let buf = vec![0u8; s.conduit().max_transmit_len()];
        let c = cfg.conduit;
        let zero_free = [c.ack_delay, c.ping_interval, c.pong_timeout, c.handshake_timeout, c.recovery_timeout]
            .iter()
            .all(|d| *d > Duration::ZERO);
        let parity = if role == Role::Initiator { Parity::Odd } else { Parity::Even };
        let mut conns = BTreeMap::new();
        conns.insert(ROOT, MConn { state: St::Open, credit: 0, peer_window: 0, want_writable: false });
        let mut ledger = BTreeMap::new();
        ledger.insert(ROOT, Ledger::default());
        Self {
            s,
            role,
            cfg,
            hello_meta,
            parity,
            now: Instant::ZERO,
            link: None,
            closed: Vec::new(),
            keys: 0,
            buf,
            zero_free,
            trace: std::env::var_os("SOTTO_FUZZ_TRACE").is_some(),
            phase: if role == Role::Initiator { Phase::AwaitHelloYourself } else { Phase::AwaitHello },
            failure: None,
            peer_version: None,
            conns,
            ledger,
            pending_in: 0,
            next_local: if parity == Parity::Odd { 1 } else { 2 },
            highest_peer: 0,
            churn_start: Instant::ZERO,
            churn_count: 0,
            ready_expected: false,
            ready_seen: false,
            writable_expected: Vec::new(),
            close_called: false,
            ended_seen: None,
            out: Vec::new(),
            blind: false,
            out_done: false,
            last_open: 0,
        }
    }

    fn initial(&self) -> u64 {
        u64::from(self.cfg.initial_credit)
    }

    fn ledger(&mut self, conn: ConnId) -> &mut Ledger {
        self.ledger.entry(conn).or_default()
    }

    fn strict_time(&self) -> bool {
        self.now.as_nanos() < SATURATION_ZONE
    }

    /// Commands fail with `Ended` (the session is over, failing or closing).
    fn ended_like(&self) -> bool {
        self.s.is_ended() || self.phase == Phase::Failed || self.close_called
    }

    // ---------------------------------------------------------------- outputs

    fn drain(&mut self) {
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

    fn on_transmit(&mut self, bytes: &[u8], established: bool, ext: bool) {
        if bytes.len() == HELLO_LEN {
            match self.role {
                Role::Initiator if ClientHello::decode(bytes).is_ok() => return,
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
        if !established {
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
    fn verify_out(&mut self, seq: u64, item: &[u8]) {
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
            SMsg::LetsGo => assert!(self.role == Role::Initiator && (seq == 1 || blind), "LetsGo at {seq}"),
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
                let first = if self.role == Role::Initiator { 2 } else { 1 };
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
    fn verify_data_out(&mut self, conn: ConnId, credit: u64) {
        let (ours, blind) = (self.parity, self.blind);
        let l = self.ledger(conn);
        let open = conn == ROOT || blind || if ours.owns(conn) { l.peer_accepted } else { l.accept_item };
        assert!(open && !l.close_item, "Data on {conn} that is not open: {l:?}");
        l.data_out += credit;
        assert!(l.data_out <= l.allowance, "Data on {conn} beyond the peer's credit: {l:?}");
    }

    /// The peer's hello was version 2 or later: batches go both ways.
    fn peer_batches(&self) -> bool {
        self.peer_version.is_some_and(|v| v >= 2)
    }

    /// `batch_bytes` as the session applies it (capped at the largest item).
    fn batch_limit(&self) -> usize {
        self.cfg.batch_bytes.min(self.s.conduit().max_item_len()) as usize
    }

    fn on_event(&mut self, e: SessionEvent) {
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

    fn check(&mut self) {
        let s = &self.s;
        assert!(s.connection_count() <= self.cfg.max_connections as usize, "I6: too many connections");
        assert_eq!(s.connection_count(), self.conns.len() - 1, "connection table differs from the model");
        assert!(self.pending_in <= self.cfg.max_pending_opens, "I6: too many pending Opens");
        for (&id, c) in &self.conns {
            assert_eq!(s.is_open(id), c.state == St::Open, "is_open({id})");
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

    fn check_timeout_not_past(&mut self) {
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

    // ---------------------------------------------------------------- model: inputs

    fn fail(&mut self, f: SessionFailure) {
        if self.phase != Phase::Failed {
            self.phase = Phase::Failed;
            self.failure = Some(f);
        }
    }

    fn expect_violation(&mut self, actual: &Result<Option<Incoming<'_>>, E>, v: V) {
        assert_eq!(*actual, Err(E::Violation(v)), "expected violation {v:?}");
        self.fail(SessionFailure::Violation(v));
    }

    fn was_used(&self, conn: ConnId) -> bool {
        if self.parity.owns(conn) {
            u64::from(conn) < self.next_local
        } else {
            conn != ROOT && conn <= self.highest_peer
        }
    }

    /// One unit of peer churn (an automatic Reject, a rapid reset): whether the budget is
    /// exceeded (fixed windows of `churn_period` from the first churn after a window ends).
    fn churn(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.churn_start) >= self.cfg.churn_period {
            self.churn_start = now;
            self.churn_count = 0;
        }
        self.churn_count += 1;
        self.churn_count > self.cfg.churn_budget
    }

    fn expect_churn(
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

    fn peer_hello(&mut self, b: HelloBody<'_>, actual: &Result<Option<Incoming<'_>>, E>) {
        let code = if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&b.version) {
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
                if self.role == Role::Acceptor {
                    self.phase = Phase::AwaitLetsGo;
                } else {
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
    fn on_delivered(&mut self, now: Instant, item: &[u8], actual: &Result<Option<Incoming<'_>>, E>, could_send: bool) {
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

    fn on_ready(&mut self, now: Instant, msg: SMsg<'_>, actual: &Result<Option<Incoming<'_>>, E>, could_send: bool) {
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
                    Some(St::Open) => {
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
                    Some(_) => self.expect_violation(actual, V::NotOpen),
                    None if self.was_used(conn) => assert_eq!(*actual, Ok(None)),
                    None => self.expect_violation(actual, V::UnknownConnection),
                }
            }
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
            SMsg::Hello(_) | SMsg::HelloYourself(_) | SMsg::LetsGo | SMsg::Sorry { .. } => {
                self.expect_violation(actual, V::UnexpectedHandshake);
            }
        }
    }

    /// Feed one link message on `link` (the current one unless stale).
    fn feed(&mut self, link: Option<LinkId>, msg: &[u8]) {
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

    // ---------------------------------------------------------------- crafting peer input

    fn link_up(&mut self) {
        if let Some(old) = self.link.take() {
            self.closed.push(old);
        }
        self.keys += 1;
        let mut key = [0x5au8; 16];
        key[..8].copy_from_slice(&self.keys.to_le_bytes());
        let fresh = if self.role == Role::Acceptor { ResumeKey(key) } else { ResumeKey::ZERO };
        self.link = Some(self.s.link_up(self.now, fresh));
    }

    /// The peer's position in our item stream: the highest seq transmitted, shifted.
    fn peer_last(&self, delta: i8) -> Option<u32> {
        let n = self.out.len() as i64 + i64::from(delta);
        (n > 0).then(|| (n - 1) as u32)
    }

    /// An honest position for a resume: between what was acked and what was sent.
    fn resume_position(&self, pick: u8) -> Option<u32> {
        let acked = self.s.conduit().items_acked();
        let tx = (self.out.len() as u64).max(acked);
        let n = acked + u64::from(pick) % (tx - acked + 1);
        n.checked_sub(1).map(|v| v as u32)
    }

    /// The peer's hello for the current link: honest unless the script says otherwise.
    fn peer_hello_msg(&mut self, s: &mut Script<'_>) -> [u8; HELLO_LEN] {
        let b = s.u8();
        let k = s.u8();
        let pick = s.u8();
        let ext = b & 1 == 0;
        let attached = self.s.conduit().has_attached();
        let position = if b & 2 != 0 { self.peer_last(pick as i8 % 3) } else { self.resume_position(pick) };
        match self.role {
            Role::Initiator => ServerHello {
                rejected: b & 0x30 == 0x30,
                resume_key: ResumeKey([k | 1; 16]),
                last_received: if attached || b & 4 != 0 { position } else { None },
                ext,
            }
            .encode(),
            Role::Acceptor => {
                let key = match (b >> 3) & 3 {
                    _ if !attached && b & 4 == 0 => None,
                    0 | 1 => self.s.conduit().resume_key(),
                    2 => None,
                    _ => Some(ResumeKey([k | 1; 16])),
                };
                ClientHello { resume_key: key, last_received: key.and(position), ext }.encode()
            }
        }
    }

    /// A DATA frame carrying `item` at the conduit's receive position (or near it).
    fn data_frame(&self, item: &[u8], seq_delta: i8, ack_mode: u8) -> Vec<u8> {
        let c = self.s.conduit();
        let ext = c.ext_in_force();
        let seq = (c.items_received() as i64 + i64::from(seq_delta)) as u32;
        let ack = match ack_mode % 4 {
            0 | 1 => self.peer_last(0),
            2 => None,
            _ => self.peer_last(-1),
        };
        let frame = Frame::Data { seq, ack, item };
        let mut msg = vec![0u8; frame.encoded_len(ext)];
        let n = frame.encode(ext, &mut msg).expect("sized");
        msg.truncate(n);
        msg
    }

    fn pick_conn(&self, b: u8) -> ConnId {
        let i = usize::from(b >> 3);
        match b & 7 {
            0..=3 => *self.conns.keys().nth(i % self.conns.len()).unwrap_or(&ROOT),
            4 => {
                let first = if self.parity.other() == Parity::Odd { 1 } else { 2 };
                if self.highest_peer == 0 {
                    first
                } else {
                    self.highest_peer.saturating_add(2)
                }
            }
            5 => self.next_local.min(u64::from(u32::MAX)) as u32,
            6 => *self.ledger.keys().nth(i % self.ledger.len()).unwrap_or(&ROOT),
            _ => u32::from(b >> 3),
        }
    }

    fn meta_len(&self, b: u8) -> usize {
        let max = self.cfg.max_metadata as usize;
        match b & 3 {
            0 => 0,
            1 => max.min(64),
            2 => max + 1,
            _ => usize::from(b >> 2),
        }
    }

    fn credit_value(b: u8) -> u32 {
        match b & 7 {
            0 => 0,
            1 => 1,
            2 => 100,
            3 => 65_536,
            4 => u32::MAX,
            _ => u32::from(b) << (b & 15),
        }
    }

    /// A session message from the script (or raw item bytes).
    fn craft_item(&mut self, s: &mut Script<'_>) -> Vec<u8> {
        let kind = s.u8();
        let a = s.u8();
        let b = s.u8();
        let c = s.u8();
        let mut out = vec![0u8; 16 + 4200];
        let meta_bytes = vec![b'x'; 4200];
        let n = match kind % 13 {
            k @ (0 | 1) => {
                let version = if a & 1 == 0 { PROTOCOL_VERSION } else { u32::from(a >> 1) };
                let parity = if a & 2 == 0 { self.parity.other() } else { self.parity };
                let body = HelloBody {
                    version,
                    parity,
                    root_credit: Self::credit_value(b),
                    max_connections: if c & 1 == 0 { 16 } else { u32::from(c >> 1) },
                    metadata: &meta_bytes[..self.meta_len(c >> 2).min(4200)],
                };
                let m = if k == 0 { SMsg::Hello(body) } else { SMsg::HelloYourself(body) };
                m.encode(&mut out)
            }
            2 => SMsg::LetsGo.encode(&mut out),
            3 => SMsg::Sorry { code: u32::from(a), reason: "no" }.encode(&mut out),
            k @ (4 | 5) => {
                let conn = self.pick_conn(a);
                let max_item = self.s.conduit().max_item_len() as usize;
                let l = self.ledger.get(&conn).copied().unwrap_or_default();
                let window = (self.initial() + l.grants_out).saturating_sub(l.consumed) as usize;
                let len = match b & 7 {
                    0 => 0,
                    1 => 1,
                    2 => window,
                    3 => window + 1,
                    4 => max_item.saturating_sub(data_header_len(conn)),
                    _ => usize::from(c),
                }
                .min(4200);
                if k == 5 && b & 0x80 != 0 {
                    // The same bytes as a batch of 1-4 messages (some empty when `len` is short).
                    let body = batch_body(&meta_bytes[..len], 1 + usize::from((b >> 3) & 3));
                    let batch = DataBatch::parse(&body).expect("a well-formed batch body");
                    SMsg::DataBatch { conn, batch }.encode(&mut out)
                } else {
                    SMsg::Data { conn, payload: &meta_bytes[..len] }.encode(&mut out)
                }
            }
            6 => {
                let conn = self.pick_conn(a);
                let metadata = &meta_bytes[..self.meta_len(c).min(4200)];
                SMsg::Open { conn, credit: Self::credit_value(b), metadata }.encode(&mut out)
            }
            7 => {
                let conn = self.pick_conn(a);
                let metadata = &meta_bytes[..self.meta_len(c).min(4200)];
                SMsg::Accept { conn, credit: Self::credit_value(b), metadata }.encode(&mut out)
            }
            8 => SMsg::Reject { conn: self.pick_conn(a), code: u32::from(b), metadata: b"r" }.encode(&mut out),
            9 => {
                let metadata = &meta_bytes[..self.meta_len(c).min(4200)];
                SMsg::Close { conn: self.pick_conn(a), metadata }.encode(&mut out)
            }
            10 => SMsg::Credit { conn: self.pick_conn(a), grant: Self::credit_value(b) }.encode(&mut out),
            11 => SMsg::ProtocolError { code: u32::from(a), reason: "bad" }.encode(&mut out),
            _ => {
                let len = usize::from(a % 32);
                return s.bytes(len).to_vec();
            }
        };
        out.truncate(n.expect("fits"));
        out
    }

    /// Bring the link and the session handshake up, as an honest peer would.
    fn handshake(&mut self) {
        if self.s.is_ended() {
            return;
        }
        if self.link.is_none() {
            self.link_up();
            self.drain();
        }
        if !self.s.conduit().is_established() {
            let attached = self.s.conduit().has_attached();
            let position = self.resume_position(0);
            let hello = match self.role {
                Role::Initiator => ServerHello {
                    rejected: false,
                    resume_key: ResumeKey([0x77; 16]),
                    last_received: if attached { position } else { None },
                    ext: true,
                }
                .encode(),
                Role::Acceptor => {
                    let key = if attached { self.s.conduit().resume_key() } else { None };
                    ClientHello { resume_key: key, last_received: key.and(position), ext: true }.encode()
                }
            };
            self.feed(self.link, &hello);
            self.drain();
        }
        if !self.s.conduit().is_established() {
            return;
        }
        let body = HelloBody {
            version: PROTOCOL_VERSION,
            parity: self.parity.other(),
            root_credit: self.cfg.initial_credit,
            max_connections: 16,
            metadata: b"",
        };
        let mut out = vec![0u8; 64];
        let item = match self.phase {
            Phase::AwaitHello => SMsg::Hello(body),
            Phase::AwaitHelloYourself => SMsg::HelloYourself(body),
            Phase::AwaitLetsGo => SMsg::LetsGo,
            _ => return,
        };
        let n = item.encode(&mut out).expect("fits");
        let msg = self.data_frame(&out[..n], 0, 0);
        self.feed(self.link, &msg);
        self.drain();
        if self.phase == Phase::AwaitLetsGo {
            let n = SMsg::LetsGo.encode(&mut out).expect("fits");
            let msg = self.data_frame(&out[..n], 0, 0);
            self.feed(self.link, &msg);
        }
    }

    // ---------------------------------------------------------------- commands

    fn check_command(&self, what: &str, actual: Result<(), CommandError>, applicable: &[CommandError]) {
        match actual {
            Ok(()) => assert!(applicable.is_empty(), "{what} succeeded although {applicable:?} apply"),
            Err(e) => {
                let fits = applicable.iter().any(|a| match (a, e) {
                    (CommandError::TooLarge { .. }, CommandError::TooLarge { .. }) => true,
                    (a, e) => *a == e,
                });
                assert!(fits, "{what} failed with {e:?}, applicable {applicable:?}");
            }
        }
    }

    /// Errors a command queueing an item of `len` bytes may meet in the conduit.
    fn conduit_errors(&self, len: usize, errs: &mut Vec<CommandError>) {
        let c = self.s.conduit();
        if self.ended_like() {
            errs.push(CommandError::Ended);
        }
        if len > c.max_item_len() as usize {
            errs.push(CommandError::TooLarge { len: 0, max: 0 });
        }
        if !c.can_send(len) {
            errs.push(CommandError::WouldBlock);
        }
    }

    fn cmd_open(&mut self, meta: &[u8]) {
        let mut errs = Vec::new();
        if self.s.is_ended() || self.phase == Phase::Failed {
            errs.push(CommandError::Ended);
        }
        if self.phase != Phase::Ready {
            errs.push(CommandError::NotReady);
        }
        if meta.len() > self.cfg.max_metadata as usize {
            errs.push(CommandError::MetadataTooLarge);
        }
        if self.conns.len() > self.cfg.max_connections as usize {
            errs.push(CommandError::TooManyConnections);
        }
        if self.next_local > u64::from(self.cfg.max_conn_id) {
            errs.push(CommandError::IdsExhausted);
        }
        let id = self.next_local.min(u64::from(u32::MAX)) as u32;
        let len = SMsg::Open { conn: id, credit: self.cfg.initial_credit, metadata: meta }.encoded_len();
        self.conduit_errors(len, &mut errs);
        let r = self.s.open(meta);
        if self.trace {
            eprintln!("  open -> {r:?}");
        }
        self.check_command("open", r.map(|_| ()), &errs);
        if let Ok(got) = r {
            assert_eq!(got, id, "open allocated an unexpected id");
            self.next_local += 2;
            self.conns.insert(id, MConn { state: St::OpeningOut, credit: 0, peer_window: 0, want_writable: false });
            self.ledger(id);
        }
    }

    fn answer_errors(&self, conn: ConnId, meta: &[u8], item_len: usize) -> Vec<CommandError> {
        let mut errs = Vec::new();
        if self.s.is_ended() || self.phase == Phase::Failed {
            errs.push(CommandError::Ended);
        }
        if meta.len() > self.cfg.max_metadata as usize {
            errs.push(CommandError::MetadataTooLarge);
        }
        match self.conns.get(&conn) {
            Some(c) if c.state == St::PendingIn => {}
            Some(_) => errs.push(CommandError::NotOpen),
            None => errs.push(CommandError::UnknownConnection),
        }
        self.conduit_errors(item_len, &mut errs);
        errs
    }

    fn cmd_accept(&mut self, conn: ConnId, meta: &[u8]) {
        let len = SMsg::Accept { conn, credit: self.cfg.initial_credit, metadata: meta }.encoded_len();
        let errs = self.answer_errors(conn, meta, len);
        let r = self.s.accept(conn, meta);
        self.check_command("accept", r, &errs);
        if r.is_ok() {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.state = St::Open;
            }
            self.pending_in -= 1;
        }
    }

    fn cmd_reject(&mut self, conn: ConnId, code: u32, meta: &[u8]) {
        let len = SMsg::Reject { conn, code, metadata: meta }.encoded_len();
        let errs = self.answer_errors(conn, meta, len);
        let r = self.s.reject(self.now, conn, code, meta);
        self.check_command("reject", r, &errs);
        if r.is_ok() {
            self.conns.remove(&conn);
            self.pending_in -= 1;
        }
    }

    fn cmd_close_conn(&mut self, conn: ConnId, meta: &[u8]) {
        let mut errs = Vec::new();
        if self.s.is_ended() || self.phase == Phase::Failed {
            errs.push(CommandError::Ended);
        }
        if meta.len() > self.cfg.max_metadata as usize {
            errs.push(CommandError::MetadataTooLarge);
        }
        match self.conns.get(&conn) {
            _ if conn == ROOT => errs.push(CommandError::NotOpen),
            Some(c) if c.state == St::PendingIn => errs.push(CommandError::NotOpen),
            Some(_) => {}
            None => errs.push(CommandError::UnknownConnection),
        }
        self.conduit_errors(SMsg::Close { conn, metadata: meta }.encoded_len(), &mut errs);
        let r = self.s.close_conn(self.now, conn, meta);
        self.check_command("close_conn", r, &errs);
        if r.is_ok() {
            self.conns.remove(&conn);
        }
    }

    fn cmd_send(&mut self, conn: ConnId, len: usize) {
        let mut errs = Vec::new();
        if self.phase != Phase::Ready {
            errs.push(CommandError::NotReady);
        }
        let max_item = (self.s.conduit().max_item_len() as usize).saturating_sub(data_header_len(conn));
        let mut model_max = None;
        match self.conns.get(&conn) {
            None => errs.push(CommandError::UnknownConnection),
            Some(c) if c.state != St::Open => errs.push(CommandError::NotOpen),
            Some(c) => {
                let half = c.peer_window.div_ceil(2);
                let max = (half as usize).min(max_item);
                // What the message spends: its length, at least MIN_MESSAGE_CREDIT (version 2).
                let v2 = self.peer_version.is_some_and(|v| v >= 2);
                let cost = message_credit(len as u64, v2);
                model_max = Some(if v2 && half < MIN_MESSAGE_CREDIT { 0 } else { max });
                if len > max || cost > half {
                    errs.push(CommandError::TooLarge { len: 0, max: 0 });
                }
                if cost > min_credit(c.credit, self.cfg.max_credit) {
                    errs.push(CommandError::NoCredit);
                }
            }
        }
        self.conduit_errors(len + data_header_len(conn), &mut errs);
        // A batchable payload joins the open batch item (it needs room for its bytes and a
        // length, no new ring slot) or starts one (a header one length longer than Data's):
        // the ring may or may not have room for it where it would for a plain Data.
        let batchable = self.peer_batches() && self.batch_limit() > 0 && len <= self.batch_limit() / 4;
        if batchable {
            errs.retain(|e| *e != CommandError::WouldBlock);
        }
        let payload: Vec<u8> = (0..len).map(|i| i as u8 ^ conn as u8).collect();
        let r = self.s.send(conn, &payload);
        if self.trace {
            eprintln!("  send {conn} {len} -> {r:?} (applicable {errs:?}, batchable {batchable})");
        }
        if batchable && r == Err(CommandError::WouldBlock) {
            assert!(errs.is_empty(), "send failed with WouldBlock, applicable {errs:?}");
        } else {
            self.check_command("send", r, &errs);
        }
        match r {
            Ok(()) => {
                let cost = message_credit(len as u64, self.peer_batches());
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.credit -= cost;
                }
            }
            Err(CommandError::NoCredit) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.want_writable = true;
                }
            }
            Err(CommandError::TooLarge { len: l, max }) => {
                if let Some(m) = model_max {
                    if errs.iter().any(|e| matches!(e, CommandError::TooLarge { .. })) && l as usize == len {
                        assert!(
                            max as usize == m || max == self.s.conduit().max_item_len(),
                            "TooLarge max {max} vs {m}"
                        );
                    }
                }
            }
            Err(_) => {}
        }
    }

    // ---------------------------------------------------------------- the script

    fn step(&mut self, s: &mut Script<'_>) {
        let op = s.u8();
        if self.trace {
            eprintln!(
                "[{:?}] op {} link {:?} phase {:?} conns {:?}",
                self.now,
                op % 20,
                self.link,
                self.phase,
                self.conns.keys().collect::<Vec<_>>()
            );
        }
        match op % 20 {
            0 => self.link_up(),
            1 => {
                if let Some(l) = self.link.take() {
                    self.closed.push(l);
                    self.s.link_down(self.now, l);
                }
            }
            2 => {
                let n = usize::from(s.u8());
                let msg = s.bytes(n).to_vec();
                let link = if op & 0x80 != 0 { self.closed.last().copied() } else { self.link };
                self.feed(link, &msg);
            }
            3 => {
                let hello = self.peer_hello_msg(s);
                self.feed(self.link, &hello);
            }
            4 | 5 => {
                let b = s.u8();
                let item = self.craft_item(s);
                let delta = if b & 0x70 == 0x70 { (b & 3) as i8 - 1 } else { 0 };
                let msg = self.data_frame(&item, delta, b);
                let link = if b & 0x80 != 0 && b & 8 != 0 { self.closed.last().copied() } else { self.link };
                self.feed(link, &msg);
            }
            6 => {
                let b = s.u8();
                let frame = match b % 5 {
                    0 | 1 => Frame::Ack(self.peer_last(0).unwrap_or(0)),
                    2 => Frame::Ping(u64::from(b)),
                    3 => Frame::Pong(u64::from(b)),
                    _ => Frame::Goodbye { code: 0x100, reason: "bye" },
                };
                let mut msg = [0u8; 16];
                let n = frame.encode(true, &mut msg).expect("fits");
                self.feed(self.link, &msg[..n]);
            }
            7 => {
                let d = u64::from(s.u8());
                let shift = s.u8() % 36;
                self.now = self.now.saturating_add(Duration::from_nanos(d << shift));
            }
            8 => {
                if let Some(t) = self.s.poll_timeout() {
                    self.now = self.now.max(t);
                    self.s.handle_timeout(self.now);
                    self.drain();
                    self.check_timeout_not_past();
                }
            }
            9 => {
                self.s.handle_timeout(self.now);
                self.drain();
                self.check_timeout_not_past();
            }
            10 => {
                let b = s.u8();
                let meta = vec![b'o'; self.meta_len(b)];
                self.cmd_open(&meta);
            }
            11 => {
                let conn = self.pick_conn(s.u8());
                let meta = vec![b'a'; self.meta_len(s.u8())];
                self.cmd_accept(conn, &meta);
            }
            12 => {
                let conn = self.pick_conn(s.u8());
                let code = 0x100 + u32::from(s.u8());
                let meta = vec![b'j'; self.meta_len(s.u8())];
                self.cmd_reject(conn, code, &meta);
            }
            13 => {
                let conn = self.pick_conn(s.u8());
                let meta = vec![b'c'; self.meta_len(s.u8())];
                self.cmd_close_conn(conn, &meta);
            }
            14 | 15 => {
                let conn = self.pick_conn(s.u8());
                let b = s.u8();
                let window = self.conns.get(&conn).map_or(0, |c| c.peer_window.div_ceil(2) as usize);
                let credit = self.s.send_credit(conn) as usize;
                let len = match b & 3 {
                    0 => usize::from(b >> 2),
                    1 => window.min(4096),
                    2 => credit.min(4096),
                    _ => (credit + 1).min(window + 1).min(4097),
                };
                self.cmd_send(conn, len);
            }
            16 => {
                let conn = self.pick_conn(s.u8());
                let b = s.u8();
                let n = if b & 1 == 0 {
                    self.ledger.get(&conn).map_or(0, |l| l.consumed.saturating_sub(l.released)) as usize
                } else {
                    usize::from(b >> 1) << (b & 7)
                };
                if self.conns.contains_key(&conn) {
                    self.ledger(conn).released += n as u64;
                }
                self.s.release(conn, n);
            }
            17 => {
                if s.u8() < 16 {
                    self.close_called = true;
                    self.s.close(self.now, 0x100, "fuzz close");
                }
            }
            18 => self.handshake(),
            _ => {
                // An input whose `now` lies in the past is clamped, never a panic.
                let back = Duration::from_nanos(u64::from(s.u8()) << 20);
                let earlier = Instant::from_nanos(self.now.as_nanos().saturating_sub(back.as_nanos()));
                self.s.handle_timeout(earlier);
            }
        }
        self.drain();
    }
}

/// Drive one session from the script in `data`.
pub fn run(data: &[u8]) {
    let mut s = Script::new(data);
    let (role, cfg, meta) = session_config_from(&mut s);
    let mut d = Driver::new(role, cfg, meta);
    if d.trace {
        eprintln!("{role:?} {cfg:?}");
    }
    d.drain();
    while !s.is_empty() {
        d.step(&mut s);
    }
}
