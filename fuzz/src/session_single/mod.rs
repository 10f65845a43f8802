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
//!
//! Layout: this file holds the driver (the [`Driver`] state, its setup and the loop in
//! [`run`]); `ops` decodes the script into operations and crafts the peer's input; `commands`
//! issues the application's commands and checks each result against the errors that apply;
//! `model` holds the reference model and what it predicts for each peer input; `checks` drains
//! and verifies every output after each operation.

mod checks;
mod commands;
mod model;
mod ops;

use crate::script::Script;
use crate::shared::SATURATION_ZONE;
use crate::single::config_from;
use model::{Ledger, MConn, Phase, St};
use sotto_proto::session::{ConnId, Parity, Session, SessionConfig, SessionFailure, ROOT};
use sotto_proto::{Duration, Instant, LinkId, Role, SessionEnd};
use std::collections::BTreeMap;

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
    /// Our ClientHello announced an early frame: the next frame we transmit is it.
    early_next: bool,
    // --- our output
    /// Our items by seq, as first transmitted (`None`: skipped, the peer lied about it).
    out: Vec<Option<Vec<u8>>>,
    /// Some item was never transmitted: checks that need every earlier item are off.
    blind: bool,
    /// No item may follow (a Sorry or ProtocolError was sent).
    out_done: bool,
    last_open: u32,
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
            early_next: false,
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
