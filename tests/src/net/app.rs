//! The application on one end of a session: which connections it holds, what it sent and
//! received on each (payloads are a pure function of session epoch, connection, direction and
//! position, so every delivery is checked on arrival without a log), and how much it let the
//! peer send. It checks, on every delivery, exactly-once in-order per connection (I1 per
//! connection) and that the peer never sent more than the window we granted (initial credit
//! plus what we released: grants never exceed releases). Allocated once; reset per session.

use sotto_proto::session::{CommandError, ConnId, Incoming, Session, SessionEvent, ROOT};
use sotto_proto::{Event, Instant, SessionEnd};

use crate::items::ItemGen;
use crate::rng::{mix64, SimRng};

/// Where a connection is, as the application sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnPhase {
    /// We opened it; no answer yet.
    OpeningOut,
    /// The peer opened it; we have not answered (a command was refused; retried later).
    PendingIn,
    /// Open both ways.
    Open,
}

/// One connection's application state.
#[derive(Clone, Copy, Debug)]
pub struct ConnModel {
    /// Its id.
    pub id: ConnId,
    /// Where it is.
    pub phase: ConnPhase,
    /// Generator of the payloads we send on it.
    pub out: ItemGen,
    /// Generator of the payloads we expect on it.
    pub inn: ItemGen,
    /// Payloads `send` accepted.
    pub sent: u64,
    /// Their bytes.
    pub sent_bytes: u64,
    /// Payloads received (each checked).
    pub received: u64,
    /// Their bytes.
    pub received_bytes: u64,
    /// The credit they spent (`Session::credit_of` each: at least MIN_MESSAGE_CREDIT with a
    /// version-2 peer).
    pub received_credit: u64,
    /// Credit received and not yet released (the application is still "reading" it).
    pub held: u64,
    /// Credit released back to the session (so it may grant it).
    pub released: u64,
    /// `send` said `NoCredit`; waiting for `ConnWritable`.
    pub no_credit: bool,
}

/// What the application saw, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppCounters {
    /// `Ready` events.
    pub ready: u64,
    /// `Ended` events.
    pub ended: u64,
    /// Opens we sent.
    pub opens_sent: u64,
    /// Opens the peer sent that reached us.
    pub opens_in: u64,
    /// Opens we accepted.
    pub accepted: u64,
    /// Opens we rejected.
    pub rejected: u64,
    /// Our opens the peer rejected.
    pub rejected_by_peer: u64,
    /// Connections we closed.
    pub closed_by_us: u64,
    /// Connections the peer closed.
    pub closed_by_peer: u64,
    /// Payloads sent.
    pub payloads_out: u64,
    /// Payloads received.
    pub payloads_in: u64,
    /// `DataBatch` messages received (their payloads count in `payloads_in`).
    pub batches_in: u64,
    /// Sends refused for lack of credit.
    pub no_credit: u64,
    /// Sends refused because the replay ring was full.
    pub would_block: u64,
    /// Commands refused because the session ended.
    pub ended_refusals: u64,
}

/// How the application answers and reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppPolicy {
    /// Per mille of peer Opens accepted (the rest are rejected).
    pub accept_per_mille: u32,
    /// Per mille of deliveries after which everything held is released at once (the rest
    /// wait for [`App::service`]: a slow reader).
    pub release_per_mille: u32,
}

impl Default for AppPolicy {
    fn default() -> Self {
        Self { accept_per_mille: 1000, release_per_mille: 1000 }
    }
}

/// The result of one application send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Accepted.
    Sent,
    /// Refused for now (credit, ring, or the connection is not open yet); nothing queued.
    Blocked,
    /// The connection is not known as open.
    NotOpen,
    /// The session is over.
    Ended,
}

/// Reject code the model uses.
pub const APP_REJECT: u32 = 0x100;

/// The application on one end of one session.
#[derive(Debug)]
pub struct App {
    /// Whether this end is the initiator.
    pub initiator: bool,
    /// Distinguishes sessions: payloads of another session never match.
    pub epoch: u64,
    conns: Vec<ConnModel>,
    /// The session handshake finished.
    pub ready: bool,
    /// How the session ended, once it did.
    pub ended: Option<SessionEnd>,
    /// `send` said `WouldBlock`; waiting for `Writable`.
    pub blocked: bool,
    /// What happened.
    pub counters: AppCounters,
    /// How it answers and reads.
    pub policy: AppPolicy,
    recv_window: u64,
    payload_min: u32,
    payload_max: u32,
    buf: Vec<u8>,
    rng: SimRng,
}

impl App {
    /// An application for a session with room for `max_connections` (root excluded), whose
    /// own receive window per connection is `recv_window` bytes.
    #[must_use]
    pub fn new(initiator: bool, max_connections: u32, recv_window: u32, payload: (u32, u32), rng: SimRng) -> Self {
        Self {
            initiator,
            epoch: 0,
            conns: Vec::with_capacity(max_connections as usize + 1),
            ready: false,
            ended: None,
            blocked: false,
            counters: AppCounters::default(),
            policy: AppPolicy::default(),
            recv_window: u64::from(recv_window),
            payload_min: payload.0,
            payload_max: payload.1.max(payload.0),
            buf: vec![0; payload.1.max(payload.0) as usize],
            rng,
        }
    }

    /// Start over for a new session with this epoch (keeps the allocations and the policy).
    pub fn reset(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.conns.clear();
        self.ready = false;
        self.ended = None;
        self.blocked = false;
        self.counters = AppCounters::default();
    }

    fn gen(&self, conn: ConnId, from_initiator: bool) -> ItemGen {
        let salt =
            mix64(self.epoch.wrapping_mul(0x0001_0000_0000_0001) ^ (u64::from(conn) << 1) ^ u64::from(from_initiator));
        ItemGen { salt, min_len: self.payload_min, max_len: self.payload_max }
    }

    fn insert(&mut self, id: ConnId, phase: ConnPhase) -> Result<(), String> {
        if self.conns.iter().any(|c| c.id == id) {
            return Err(format!("model: connection {id} already known"));
        }
        if self.conns.len() == self.conns.capacity() {
            return Err(format!("model: more connections than the session may hold (adding {id})"));
        }
        let out = self.gen(id, self.initiator);
        let inn = self.gen(id, !self.initiator);
        self.conns.push(ConnModel {
            id,
            phase,
            out,
            inn,
            sent: 0,
            sent_bytes: 0,
            received: 0,
            received_bytes: 0,
            received_credit: 0,
            held: 0,
            released: 0,
            no_credit: false,
        });
        Ok(())
    }

    fn remove(&mut self, id: ConnId) {
        if let Some(i) = self.conns.iter().position(|c| c.id == id) {
            self.conns.swap_remove(i);
        }
    }

    /// Our receive window per connection (our initial credit), in bytes.
    #[must_use]
    pub fn recv_window(&self) -> u64 {
        self.recv_window
    }

    /// The connection `id`, if the application holds it.
    #[must_use]
    pub fn conn(&self, id: ConnId) -> Option<&ConnModel> {
        self.conns.iter().find(|c| c.id == id)
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut ConnModel> {
        self.conns.iter_mut().find(|c| c.id == id)
    }

    /// Every connection the application holds (root included once ready).
    #[must_use]
    pub fn conns(&self) -> &[ConnModel] {
        &self.conns
    }

    /// Whether `id` is open both ways.
    #[must_use]
    pub fn is_open(&self, id: ConnId) -> bool {
        self.conn(id).is_some_and(|c| c.phase == ConnPhase::Open)
    }

    /// The `n`-th open connection (for random picks), counting root.
    #[must_use]
    pub fn nth_open(&self, n: usize) -> Option<ConnId> {
        self.conns.iter().filter(|c| c.phase == ConnPhase::Open).nth(n).map(|c| c.id)
    }

    /// How many connections are open both ways (root included).
    #[must_use]
    pub fn open_count(&self) -> usize {
        self.conns.iter().filter(|c| c.phase == ConnPhase::Open).count()
    }

    /// A session event; `Err` describes a broken expectation.
    pub fn on_event(&mut self, e: SessionEvent) -> Result<(), String> {
        match e {
            SessionEvent::Ready => {
                self.counters.ready += 1;
                if self.ready {
                    return Err("Ready reported twice".into());
                }
                self.ready = true;
                self.insert(ROOT, ConnPhase::Open)?;
            }
            SessionEvent::ConnWritable(c) => {
                if let Some(c) = self.conn_mut(c) {
                    c.no_credit = false;
                }
            }
            SessionEvent::Conduit(Event::Writable) => self.blocked = false,
            SessionEvent::Conduit(Event::Ended(end)) => {
                self.counters.ended += 1;
                if self.ended.is_some() {
                    return Err(format!("Ended reported twice ({end:?} after {:?})", self.ended));
                }
                self.ended = Some(end);
                self.blocked = false;
            }
            SessionEvent::Conduit(_) => {}
        }
        Ok(())
    }

    /// A peer message the session handed over; answers Opens at once when it can.
    pub fn on_incoming(&mut self, s: &mut Session, now: Instant, inc: Incoming<'_>) -> Result<(), String> {
        match inc {
            Incoming::PeerHello { .. } => Ok(()),
            Incoming::Data { conn, payload } => self.on_data(s, conn, payload),
            Incoming::DataBatch { conn, batch } => {
                self.counters.batches_in += 1;
                batch.into_iter().try_for_each(|payload| self.on_data(s, conn, payload))
            }
            Incoming::Open { conn, .. } => {
                self.counters.opens_in += 1;
                self.insert(conn, ConnPhase::PendingIn)?;
                self.answer(s, now, conn);
                Ok(())
            }
            Incoming::Accepted { conn, .. } => match self.conn_mut(conn) {
                Some(c) if c.phase == ConnPhase::OpeningOut => {
                    c.phase = ConnPhase::Open;
                    Ok(())
                }
                other => Err(format!("Accepted for {conn}, which the model holds as {other:?}")),
            },
            Incoming::Rejected { conn, .. } => match self.conn(conn) {
                Some(c) if c.phase == ConnPhase::OpeningOut => {
                    self.counters.rejected_by_peer += 1;
                    self.remove(conn);
                    Ok(())
                }
                other => Err(format!("Rejected for {conn}, which the model holds as {other:?}")),
            },
            // The model never half-closes, so no peer of it does.
            Incoming::Finished { conn, .. } => Err(format!("Finished for {conn}: the model never finishes")),
            Incoming::Closed { conn, metadata } => {
                let Some(c) = self.conn(conn).copied() else {
                    return Err(format!("Closed for {conn}, which the model does not hold"));
                };
                // The closer put its payload count in the metadata: the Close travels behind
                // every payload, so all of them must have arrived, exactly once.
                if let Ok(b) = <[u8; 8]>::try_from(metadata) {
                    let peer_sent = u64::from_le_bytes(b);
                    if peer_sent != c.received {
                        return Err(format!(
                            "I1: connection {conn} closed by the peer after {peer_sent} payloads, {} received",
                            c.received
                        ));
                    }
                }
                self.counters.closed_by_peer += 1;
                self.remove(conn);
                Ok(())
            }
        }
    }

    fn on_data(&mut self, s: &mut Session, conn: ConnId, payload: &[u8]) -> Result<(), String> {
        let window = self.recv_window;
        let credit = s.credit_of(payload.len());
        let release_now = self.rng.chance(self.policy.release_per_mille);
        let Some(c) = self.conn_mut(conn) else {
            return Err(format!("data on {conn}, which the model does not hold"));
        };
        if c.phase != ConnPhase::Open {
            return Err(format!("data on {conn} while it is {:?}", c.phase));
        }
        if !c.inn.matches(c.received, payload) {
            return Err(format!(
                "I1: connection {conn} got a wrong payload at position {} ({} bytes, want {})",
                c.received,
                payload.len(),
                c.inn.len(c.received)
            ));
        }
        c.received += 1;
        c.received_bytes += payload.len() as u64;
        c.received_credit += credit;
        c.held += credit;
        if c.received_credit > window + c.released {
            return Err(format!(
                "credit: connection {conn} received {} of credit but granted at most {window} + {} released",
                c.received_credit, c.released
            ));
        }
        self.counters.payloads_in += 1;
        if release_now {
            let c = self.conn_mut(conn).expect("held above");
            let n = c.held;
            c.held = 0;
            c.released += n;
            let _ = s.release(conn, n as usize);
        }
        Ok(())
    }

    /// Answer the peer's Open of `conn` per the policy; a refused command leaves it pending.
    fn answer(&mut self, s: &mut Session, now: Instant, conn: ConnId) {
        let accept = self.rng.chance(self.policy.accept_per_mille);
        let r = if accept { s.accept(conn, b"") } else { s.reject(now, conn, APP_REJECT, b"") };
        match r {
            Ok(()) if accept => {
                self.counters.accepted += 1;
                if let Some(c) = self.conn_mut(conn) {
                    c.phase = ConnPhase::Open;
                }
            }
            Ok(()) => {
                self.counters.rejected += 1;
                self.remove(conn);
            }
            Err(_) => {}
        }
    }

    /// Catch up: answer pending Opens, release what is held on each connection with
    /// probability `release_per_mille` (all of it when `all`).
    pub fn service(&mut self, s: &mut Session, now: Instant, all: bool) {
        for i in 0..self.conns.len() {
            let Some(c) = self.conns.get(i).copied() else { break };
            if c.phase == ConnPhase::PendingIn {
                self.answer(s, now, c.id);
            }
        }
        for i in 0..self.conns.len() {
            let release = all || self.rng.chance(self.policy.release_per_mille);
            let c = &mut self.conns[i];
            if c.held > 0 && release {
                let n = c.held;
                c.held = 0;
                c.released += n;
                let _ = s.release(c.id, n as usize);
            }
        }
    }

    /// Open a connection. `Ok(None)`: refused for now (limits, ring) or the session is over.
    pub fn open(&mut self, s: &mut Session) -> Result<Option<ConnId>, String> {
        match s.open(b"") {
            Ok(id) => {
                self.counters.opens_sent += 1;
                self.insert(id, ConnPhase::OpeningOut)?;
                Ok(Some(id))
            }
            Err(CommandError::WouldBlock) => {
                self.blocked = true;
                self.counters.would_block += 1;
                Ok(None)
            }
            Err(CommandError::TooManyConnections | CommandError::IdsExhausted | CommandError::NotReady) => Ok(None),
            Err(CommandError::Ended) => {
                self.counters.ended_refusals += 1;
                Ok(None)
            }
            Err(e) => Err(format!("open: {e:?}")),
        }
    }

    /// Send the next payload on `conn`.
    pub fn send(&mut self, s: &mut Session, conn: ConnId) -> Result<SendOutcome, String> {
        let blocked = self.blocked;
        let Some(i) = self.conns.iter().position(|c| c.id == conn && c.phase == ConnPhase::Open) else {
            return Ok(SendOutcome::NotOpen);
        };
        let c = &mut self.conns[i];
        if blocked || c.no_credit {
            return Ok(SendOutcome::Blocked);
        }
        let len = c.out.fill(c.sent, &mut self.buf);
        match s.send(conn, &self.buf[..len]) {
            Ok(()) => {
                c.sent += 1;
                c.sent_bytes += len as u64;
                self.counters.payloads_out += 1;
                Ok(SendOutcome::Sent)
            }
            Err(CommandError::NoCredit) => {
                c.no_credit = true;
                self.counters.no_credit += 1;
                Ok(SendOutcome::Blocked)
            }
            Err(CommandError::WouldBlock) => {
                self.blocked = true;
                self.counters.would_block += 1;
                Ok(SendOutcome::Blocked)
            }
            Err(CommandError::Ended) => {
                self.counters.ended_refusals += 1;
                Ok(SendOutcome::Ended)
            }
            Err(e) => Err(format!("send of {len} bytes on {conn}: {e:?}")),
        }
    }

    /// Close `conn` (metadata: how many payloads we sent on it). `Ok(false)`: refused for now.
    pub fn close(&mut self, s: &mut Session, now: Instant, conn: ConnId) -> Result<bool, String> {
        let Some(c) = self.conn(conn).copied() else { return Ok(false) };
        if c.phase == ConnPhase::PendingIn || conn == ROOT {
            return Ok(false);
        }
        match s.close_conn(now, conn, &c.sent.to_le_bytes()) {
            Ok(()) => {
                self.counters.closed_by_us += 1;
                self.remove(conn);
                Ok(true)
            }
            Err(CommandError::WouldBlock) => {
                self.blocked = true;
                Ok(false)
            }
            Err(CommandError::Ended) => Ok(false),
            Err(e) => Err(format!("close of {conn}: {e:?}")),
        }
    }

    /// Check the model against the session's own view.
    pub fn check_against(&self, s: &Session) -> Result<(), String> {
        if s.is_ended() || !self.ready {
            return Ok(());
        }
        if self.conns.len() != s.connection_count() + 1 {
            return Err(format!(
                "model holds {} connections (root included), the session {} (root excluded)",
                self.conns.len(),
                s.connection_count()
            ));
        }
        if s.connection_count() > s.config().max_connections as usize {
            return Err(format!("{} connections over max_connections", s.connection_count()));
        }
        for c in &self.conns {
            if s.is_open(c.id) != (c.phase == ConnPhase::Open) {
                return Err(format!("connection {} is {:?} in the model, open: {}", c.id, c.phase, s.is_open(c.id)));
            }
            if c.held > self.recv_window {
                return Err(format!(
                    "connection {} holds {} of credit, above the window {}",
                    c.id, c.held, self.recv_window
                ));
            }
        }
        Ok(())
    }
}
