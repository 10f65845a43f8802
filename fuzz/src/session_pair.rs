//! `session_pair`: honest initiator [`Session`]s against an acceptor — one standalone acceptor
//! [`Session`], or an endpoint ([`Hosted`]) serving up to three initiators — over simulated byte-stream
//! links with faults (the `pair` target's pipes: partial delivery, links killed or truncated
//! at a byte offset with either end noticing or not, reconnects, time). The applications open
//! and close virtual connections both ways, send on them within credit, and read: fast readers
//! release what they get at once, slow ones only when told.
//!
//! Checked after every step: per connection and direction, every delivered payload is the
//! next one sent (exactly once, in order); honest peers never drop a link for a violation, a
//! gap or a failed handshake, never fail at the session layer, never end but by recovery
//! timeout, a close, or the loss of the acceptor's session (REJECTED only then); tables stay
//! within `max_connections`; pipes bounded; after every `handle_timeout` no deadline at or
//! before now; ConnWritable only after NoCredit.
//!
//! At the end faults stop, every link is healed and time runs to quiescence. Then, with slow
//! readers still not reading, every payload a send accepted has been delivered (a slow reader
//! stalls nobody: credit was granted before the send), unless the receiver closed that
//! connection; after every reader releases what it holds, no sender is left waiting for
//! ConnWritable on a connection open at both ends.

use crate::pair::{timer_profile, Notify, Pipe, Unit};
use arbitrary::{Arbitrary, Unstructured};
use sotto_proto::conduit::LinkDropReason;
use sotto_proto::endpoint::{EndpointConfig, EndpointEvent, Hosted, HostedEvent, PendingLink, Placed, SessionHandle};
use sotto_proto::session::{CommandError, ConnId, DataBatch, Incoming, Session, SessionConfig, SessionEvent, ROOT};
use sotto_proto::wire::varint::encode_varint;
use sotto_proto::wire::Message;
use sotto_proto::{ConduitConfig, Duration, Event, Instant, LinkId, ResumeKey, Role, SessionEnd};
use std::collections::{BTreeMap, BTreeSet};

/// Most operations per input.
const MAX_OPS: usize = 300;

/// Configuration of a run.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct SpConfig {
    /// Serve through an endpoint ([`Hosted`]) (else one standalone acceptor session).
    pub endpoint: bool,
    /// Initiators with an endpoint: `1 + clients % 3`.
    pub clients: u8,
    /// `max_frame_len = 128 + 8 * frame_len`.
    pub frame_len: u8,
    /// `replay_frames = 2 + frames % 32`.
    pub frames: u8,
    /// `replay_bytes = max_item_len + 16 * bytes`.
    pub bytes: u8,
    /// `initial_credit` from {16, 64, 100, 1000, 4096, 65536} (and `max_credit` per side).
    pub credit: u8,
    /// Timer profile.
    pub timers: u8,
    /// `max_connections = 1 + conns % 4`.
    pub conns: u8,
    /// Extensions per side (bit 0 initiators, bit 1 acceptor).
    pub ext: u8,
}

impl SpConfig {
    fn session(&self, acceptor: bool) -> SessionConfig {
        let max_frame_len = 128 + 8 * u32::from(self.frame_len);
        let max_item = max_frame_len - sotto_proto::wire::MAX_DATA_HEADER_LEN as u32;
        let [ack_delay, ping, pong, min_ping, handshake, recovery] = timer_profile(self.timers);
        let conduit = {
            let mut patched = ConduitConfig::default();
            patched.max_frame_len = max_frame_len;
            patched.replay_frames = 2 + u32::from(self.frames % 32);
            patched.replay_bytes = max_item + 16 * u32::from(self.bytes);
            patched.ext = if acceptor { self.ext & 2 == 0 } else { self.ext & 1 == 0 };
            patched.ack_delay = ack_delay;
            patched.ack_every = 4;
            patched.ping_interval = ping;
            patched.pong_timeout = pong;
            patched.min_ping_interval = min_ping;
            patched.max_ping_strikes = 2;
            patched.handshake_timeout = handshake;
            patched.recovery_timeout = recovery;
            patched.ack_starved_timeout = min_ping;
            patched.duplicate_window = 1 << 24;
            patched
        };
        let initial = [16u32, 64, 100, 1000, 4096, 65_536][usize::from(self.credit & 7) % 6];
        let max_credit = match (self.credit >> 3) & 3 {
            1 if acceptor => 40,
            2 if !acceptor => 40,
            _ => 16 << 20,
        };
        let cfg = {
            let mut patched = SessionConfig::default();
            patched.conduit = conduit;
            patched.max_connections = 1 + u32::from(self.conns % 4);
            patched.max_pending_opens = 4;
            patched.initial_credit = initial;
            patched.max_credit = max_credit;
            patched
        };
        assert_eq!(cfg.validate(), Ok(()), "{cfg:?}");
        cfg
    }

    fn clients(&self) -> usize {
        if self.endpoint {
            1 + usize::from(self.clients % 3)
        } else {
            1
        }
    }
}

/// One step of a run. `client` picks the pairing (modulo their number).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum SpOp {
    /// An application sends `len` bytes (plus a 9-byte tag) on a connection it holds open.
    Send {
        /// Pairing.
        client: u8,
        /// The acceptor side sends (else the initiator).
        server: bool,
        /// Which connection (root included).
        conn: u8,
        /// Extra length.
        len: u8,
    },
    /// An application opens a connection.
    Open {
        /// Pairing.
        client: u8,
        /// Acceptor side.
        server: bool,
    },
    /// An application closes a connection.
    Close {
        /// Pairing.
        client: u8,
        /// Acceptor side.
        server: bool,
        /// Which connection.
        conn: u8,
    },
    /// A reader consumes up to `amount` buffered bytes of a connection.
    Read {
        /// Pairing.
        client: u8,
        /// Acceptor side.
        server: bool,
        /// Which connection.
        conn: u8,
        /// How much.
        amount: u16,
    },
    /// A reader becomes slow (reads only when told) or fast.
    Slow {
        /// Pairing.
        client: u8,
        /// Acceptor side.
        server: bool,
        /// Which connection.
        conn: u8,
        /// Slow or fast.
        slow: bool,
    },
    /// Deliver bytes toward one end: `amount & 0x7fff` bytes, or with the top bit set
    /// `amount & 0xff` whole messages.
    Deliver {
        /// Pairing.
        client: u8,
        /// Toward the acceptor.
        to_server: bool,
        /// How much.
        amount: u16,
    },
    /// Deliver everything everywhere until nothing moves.
    DeliverAll,
    /// Kill the pairing's links, keeping the first bytes of each direction.
    Kill {
        /// Pairing.
        client: u8,
        /// Surviving bytes toward the acceptor.
        at_to_server: u16,
        /// Surviving bytes toward the initiator.
        at_to_client: u16,
        /// Who notices.
        notify: Notify,
    },
    /// The initiator dials a new link.
    Reconnect {
        /// Pairing.
        client: u8,
    },
    /// Let time pass, firing deadlines at their instants.
    Advance {
        /// How much.
        amount: u16,
        /// Unit.
        unit: Unit,
    },
}

/// A whole run.
#[derive(Arbitrary, Debug)]
pub struct SpInput {
    /// Configuration.
    pub config: SpConfig,
    /// Operations (at most [`MAX_OPS`]).
    pub ops: Vec<SpOp>,
}

/// One application's view of its session.
#[derive(Debug, Default)]
struct App {
    /// Payloads accepted by `send`, per connection.
    sent: BTreeMap<ConnId, Vec<Vec<u8>>>,
    /// Payloads delivered from the peer, per connection.
    got: BTreeMap<ConnId, usize>,
    /// Bytes delivered and not released yet.
    unreleased: BTreeMap<ConnId, usize>,
    slow: BTreeSet<ConnId>,
    /// NoCredit seen; waiting for ConnWritable.
    blocked: BTreeSet<ConnId>,
    pending_accept: Vec<ConnId>,
    opening: BTreeSet<ConnId>,
    open: BTreeSet<ConnId>,
    closed_by_me: BTreeSet<ConnId>,
    ready: bool,
    ended: Option<SessionEnd>,
}

impl App {
    fn is_empty(&self) -> bool {
        self.sent.is_empty() && self.got.is_empty() && self.open.is_empty() && self.opening.is_empty()
    }
}

/// A link of one pairing: each end's id while it holds it, and both directions.
#[derive(Debug)]
struct SLink {
    /// Unique within the run (indices shift as links go away).
    serial: u64,
    /// Endpoint mode: the acceptor session the link was routed to.
    handle: Option<SessionHandle>,
    a: Option<LinkId>,
    b: Option<LinkId>,
    /// Endpoint mode: the acceptor end before its first message was routed.
    pending: Option<PendingLink>,
    to_a: Pipe,
    to_b: Pipe,
}

#[derive(Debug)]
struct Pairing {
    client: Session,
    capp: App,
    /// Endpoint mode: the acceptor session's handle.
    handle: Option<SessionHandle>,
    sapp: App,
    links: Vec<SLink>,
    /// The acceptor's session was lost (evicted, reclaimed, freed): I7 does not apply.
    lost: bool,
}

enum Server {
    Single(Box<Session>),
    Endpoint(Box<Hosted>),
}

fn server_of(server: &mut Server, handle: Option<SessionHandle>) -> Option<&mut Session> {
    match server {
        Server::Single(s) => Some(s),
        Server::Endpoint(ep) => handle.and_then(|h| ep.session_mut(h)),
    }
}

fn server_ref(server: &Server, handle: Option<SessionHandle>) -> Option<&Session> {
    match server {
        Server::Single(s) => Some(s),
        Server::Endpoint(ep) => handle.and_then(|h| ep.session(h)),
    }
}

/// A payload: direction tag, connection, index, then a pattern.
fn payload(server: bool, conn: ConnId, n: usize, extra: u8) -> Vec<u8> {
    let mut p = vec![if server { b'S' } else { b'C' }];
    p.extend_from_slice(&conn.to_le_bytes());
    p.extend_from_slice(&(n as u32).to_le_bytes());
    p.extend((0..extra).map(|i| i ^ n as u8));
    p
}

struct Sim {
    config: SpConfig,
    server: Server,
    pairs: Vec<Pairing>,
    now: Instant,
    keys: u64,
    serials: u64,
    max_frame_len: u32,
    pipe_bound: usize,
    buf: Vec<u8>,
    trace: bool,
}

impl Sim {
    fn new(config: SpConfig) -> Self {
        let ccfg = config.session(false);
        let scfg = config.session(true);
        let n = config.clients();
        let server = if config.endpoint {
            let ecfg = {
                let mut patched = EndpointConfig::default();
                patched.session = scfg;
                patched.max_sessions = 2 * n as u32 + 2;
                patched.max_pending_handshakes = 2 * n as u32 + 2;
                patched.max_detached_sessions = 64;
                patched.handshake_timeout = scfg.conduit.handshake_timeout;
                patched.failure_budget = 1000;
                patched
            };
            Server::Endpoint(Box::new(Hosted::new(ecfg, b"srv").expect("endpoint config")))
        } else {
            Server::Single(Box::new(Session::new(Role::Acceptor, scfg, b"srv").expect("config")))
        };
        let pairs = (0..n)
            .map(|_| Pairing {
                client: Session::new(Role::Initiator, ccfg, b"cli").expect("config"),
                capp: App::default(),
                handle: None,
                sapp: App::default(),
                links: Vec::new(),
                lost: false,
            })
            .collect();
        let per_frame = sotto_proto::wire::MAX_DATA_HEADER_LEN + 4;
        let ring = |c: &SessionConfig| c.conduit.replay_bytes as usize + c.conduit.replay_frames as usize * per_frame;
        Self {
            config,
            server,
            pairs,
            now: Instant::from_nanos(1_000_000_000),
            keys: 0,
            serials: 0,
            max_frame_len: ccfg.conduit.max_frame_len,
            pipe_bound: 2 * ring(&ccfg).max(ring(&scfg)) + 8192,
            buf: vec![0u8; ccfg.conduit.max_frame_len as usize],
            trace: std::env::var_os("SOTTO_FUZZ_TRACE").is_some(),
        }
    }

    /// The initiator of pairing `p`, or its current acceptor session.
    fn session(&mut self, p: usize, server: bool) -> Option<&mut Session> {
        if server {
            server_of(&mut self.server, self.pairs[p].handle)
        } else {
            Some(&mut self.pairs[p].client)
        }
    }

    fn end_session(&mut self, p: usize, server: bool, h: Option<SessionHandle>) -> Option<&mut Session> {
        if server {
            server_of(&mut self.server, h)
        } else {
            Some(&mut self.pairs[p].client)
        }
    }

    /// Pairing and index of the link with serial `serial`.
    /// The endpoint freed `h`'s slot: its pairings lost their session, and its link ids mean
    /// nothing any more, so close their ends.
    fn forget_freed(&mut self, h: SessionHandle) {
        for pr in &mut self.pairs {
            if pr.handle == Some(h) {
                pr.lost = true;
            }
        }
        let serials: Vec<u64> = self
            .pairs
            .iter()
            .flat_map(|pr| &pr.links)
            .filter(|l| l.handle == Some(h) && l.b.is_some())
            .map(|l| l.serial)
            .collect();
        for serial in serials {
            if let Some((p, i)) = self.find(serial) {
                self.pairs[p].links[i].b = None;
                self.close_end(serial, true);
            }
        }
    }

    fn find(&self, serial: u64) -> Option<(usize, usize)> {
        self.pairs
            .iter()
            .enumerate()
            .find_map(|(p, pr)| pr.links.iter().position(|l| l.serial == serial).map(|i| (p, i)))
    }

    fn app(&mut self, p: usize, server: bool) -> &mut App {
        if server {
            &mut self.pairs[p].sapp
        } else {
            &mut self.pairs[p].capp
        }
    }

    // ------------------------------------------------------------ link ends

    /// `server`'s end of link `serial` goes away; the other end sees EOF after what is in
    /// flight, if the path still works.
    fn close_end(&mut self, serial: u64, server: bool) {
        let now = self.now;
        let Some((p, i)) = self.find(serial) else { return };
        let link = &mut self.pairs[p].links[i];
        let pending = if server { link.pending.take() } else { None };
        let id = if server { link.b.take() } else { link.a.take() };
        let handle = link.handle;
        let (inbound, outbound) =
            if server { (&mut link.to_b, &mut link.to_a) } else { (&mut link.to_a, &mut link.to_b) };
        inbound.discard();
        if outbound.open {
            outbound.open = false;
            outbound.eof = true;
        }
        if let (Some(pl), Server::Endpoint(ep)) = (pending, &mut self.server) {
            ep.pending_closed(pl);
        }
        if let Some(id) = id {
            let s = if server { server_of(&mut self.server, handle) } else { Some(&mut self.pairs[p].client) };
            if let Some(s) = s {
                s.link_down(now, id);
            }
        }
        let l = &self.pairs[p].links[i];
        if l.a.is_none() && l.b.is_none() && l.pending.is_none() {
            self.pairs[p].links.remove(i);
        }
    }

    // ------------------------------------------------------------ drain

    fn drain(&mut self) {
        for _ in 0..512 {
            let mut moved = false;
            for p in 0..self.pairs.len() {
                moved |= self.drain_end(p, false, None);
            }
            let handles: Vec<Option<SessionHandle>> = match &self.server {
                Server::Single(_) => vec![None],
                Server::Endpoint(ep) => ep.handles().map(Some).collect(),
            };
            for h in handles {
                let owner = self.pairs.iter().position(|pr| !self.config.endpoint || pr.handle == h);
                moved |= self.drain_end(owner.unwrap_or(usize::MAX), true, h);
            }
            moved |= self.drain_endpoint();
            moved |= self.answer_opens();
            if !moved {
                self.check();
                return;
            }
        }
        panic!("outputs never run dry");
    }

    fn drain_endpoint(&mut self) -> bool {
        let Server::Endpoint(ep) = &mut self.server else { return false };
        let mut events = Vec::new();
        while let Some(e) = ep.poll_event() {
            events.push(e);
        }
        let moved = !events.is_empty();
        for e in events {
            if self.trace {
                eprintln!("  [{:?}] endpoint {e:?}", self.now);
            }
            match e {
                HostedEvent::Endpoint(EndpointEvent::HandshakeExpired(pl)) => {
                    let serial =
                        self.pairs.iter().flat_map(|pr| &pr.links).find(|l| l.pending == Some(pl)).map(|l| l.serial);
                    let (p, i) =
                        serial.and_then(|s| self.find(s)).expect("expired a pending link the driver does not hold");
                    // The endpoint freed the slot already: the driver just closes the link.
                    self.pairs[p].links[i].pending = None;
                    self.close_end(self.pairs[p].links[i].serial, true);
                }
                HostedEvent::Endpoint(EndpointEvent::Evicted(h) | EndpointEvent::Reclaimed(h)) => {
                    for pr in &mut self.pairs {
                        if pr.handle == Some(h) {
                            pr.lost = true;
                        }
                    }
                }
                HostedEvent::SessionReady(h) => {
                    let ready = server_ref(&self.server, Some(h)).is_some_and(Session::is_ready);
                    assert!(ready, "SessionReady({h:?}) for a session not live and ready");
                }
                HostedEvent::Endpoint(EndpointEvent::SessionHandshakeExpired(h)) => {
                    // Not ready by its first link's deadline: already ended and freed by the
                    // endpoint. Its pairing lost its session; close its links.
                    assert!(server_ref(&self.server, Some(h)).is_none(), "expired session {h:?} not freed");
                    self.forget_freed(h);
                }
            }
        }
        moved
    }

    /// Drain one session: the initiator of pairing `p`, or (`server`) the acceptor session
    /// `h` (`None`: the standalone one), which belongs to pairing `p` unless it is an orphan
    /// (`p` out of range: a session created for a fresh dial whose initiator dialed fresh
    /// again).
    fn drain_end(&mut self, p: usize, server: bool, h: Option<SessionHandle>) -> bool {
        let mut moved = false;
        let now = self.now;
        let mut n = 0usize;
        let holds = |l: &SLink, id: LinkId| if server { l.b == Some(id) && l.handle == h } else { l.a == Some(id) };
        let owned = p < self.pairs.len();
        loop {
            let mut buf = std::mem::take(&mut self.buf);
            let t = self.end_session(p, server, h).and_then(|s| s.poll_transmit(now, &mut buf));
            let Some(t) = t else {
                self.buf = buf;
                break;
            };
            moved = true;
            n += 1;
            assert!(n < 100_000, "poll_transmit does not run dry");
            let link = self
                .pairs
                .iter_mut()
                .enumerate()
                .filter(|(q, _)| server || *q == p)
                .flat_map(|(_, pr)| &mut pr.links)
                .find(|l| holds(l, t.link));
            let link = link.expect("transmit for a link the driver closed");
            if self.trace {
                eprintln!("  {p}{} -> {:02x?}", if server { 'S' } else { 'C' }, &buf[..t.len.min(24)]);
            }
            let pipe = if server { &mut link.to_a } else { &mut link.to_b };
            pipe.write(&buf[..t.len]);
            self.buf = buf;
        }
        let mut ended = false;
        while let Some(e) = self.end_session(p, server, h).and_then(Session::poll_event) {
            moved = true;
            if self.trace {
                eprintln!("  [{:?}] {p}{} {h:?} event {e:?}", self.now, if server { 'S' } else { 'C' });
            }
            match e {
                SessionEvent::Ready if owned => {
                    let app = self.app(p, server);
                    assert!(!app.ready, "Ready twice");
                    app.ready = true;
                }
                SessionEvent::ConnWritable(c) if owned => {
                    assert!(self.app(p, server).blocked.remove(&c), "ConnWritable({c}) without NoCredit");
                }
                SessionEvent::Conduit(Event::DropLink { link, reason }) => {
                    assert!(
                        !matches!(
                            reason,
                            LinkDropReason::Violation(_) | LinkDropReason::Gap | LinkDropReason::HandshakeFailed(_)
                        ),
                        "honest peers over FIFO links: {p} server {server} dropped a link for {reason:?}"
                    );
                    assert!(reason != LinkDropReason::Rejected || server, "only the acceptor rejects");
                    let serial = self
                        .pairs
                        .iter()
                        .enumerate()
                        .filter(|(q, _)| server || *q == p)
                        .flat_map(|(_, pr)| &pr.links)
                        .find(|l| holds(l, link))
                        .map(|l| l.serial);
                    match serial {
                        Some(serial) => self.close_end(serial, server),
                        None => {
                            if let Some(s) = self.end_session(p, server, h) {
                                s.link_down(now, link);
                            }
                        }
                    }
                }
                SessionEvent::Conduit(Event::Ended(r)) => {
                    ended = true;
                    if !owned {
                        continue;
                    }
                    let lost = self.pairs[p].lost;
                    let peer_over = self.session(p, !server).is_none_or(|s| s.is_ended());
                    let app = self.app(p, server);
                    assert!(app.ended.is_none(), "Ended twice");
                    app.ended = Some(r);
                    match r {
                        SessionEnd::RecoveryTimeout
                        | SessionEnd::LocalClose { .. }
                        | SessionEnd::PeerGoodbye { .. } => {}
                        SessionEnd::Rejected => assert!(!server && (lost || peer_over), "REJECTED while B lives"),
                        SessionEnd::Full => assert!(!server && (lost || peer_over), "told full while B lives"),
                        SessionEnd::Evicted => assert!(server, "evicted initiator"),
                        other => panic!("honest pairing {p} ended with {other:?}"),
                    }
                }
                _ => {}
            }
        }
        let failure = self.end_session(p, server, h).and_then(|s| s.failure());
        assert_eq!(failure, None, "honest pairing {p} (server {server}) failed at the session layer");
        if let (true, true, Server::Endpoint(ep), Some(h)) = (ended, server, &mut self.server, h) {
            // Ended and drained: free it (the contract); its handle is stale from now on.
            ep.free(now, h);
            self.forget_freed(h);
        }
        moved
    }

    /// Applications answer the Opens they got: always accept (retried while the ring is full).
    fn answer_opens(&mut self) -> bool {
        let mut moved = false;
        for p in 0..self.pairs.len() {
            for server in [false, true] {
                let pending = std::mem::take(&mut self.app(p, server).pending_accept);
                let mut keep = Vec::new();
                for c in pending {
                    let r = self.session(p, server).map(|s| s.accept(c, b""));
                    match r {
                        Some(Ok(())) => {
                            moved = true;
                            self.app(p, server).open.insert(c);
                        }
                        Some(Err(CommandError::WouldBlock)) => keep.push(c),
                        _ => {}
                    }
                }
                self.app(p, server).pending_accept = keep;
            }
        }
        moved
    }

    fn check(&mut self) {
        for p in 0..self.pairs.len() {
            for server in [false, true] {
                let max = if server { self.config.session(true) } else { self.config.session(false) }.max_connections;
                if let Some(s) = server_ref(&self.server, self.pairs[p].handle).filter(|_| server) {
                    assert!(s.connection_count() <= max as usize);
                    assert_eq!(s.conduit().stats().events_overflowed, 0);
                }
                if !server {
                    let s = &self.pairs[p].client;
                    assert!(s.connection_count() <= max as usize);
                    assert_eq!(s.conduit().stats().events_overflowed, 0);
                }
            }
            for l in &self.pairs[p].links {
                assert!(l.to_a.data.len() <= self.pipe_bound && l.to_b.data.len() <= self.pipe_bound, "I6: pipe bound");
            }
            let held = self.pairs[p].links.iter().filter(|l| l.a.is_some()).count();
            assert!(held <= 1, "I5: the initiator holds {held} links");
            let h = self.pairs[p].handle;
            let held = self.pairs[p].links.iter().filter(|l| l.b.is_some() && l.handle == h).count();
            assert!(held <= 1, "I5: the acceptor session holds {held} links");
        }
    }

    // ------------------------------------------------------------ delivery

    /// The application at `server`'s end of pairing `p` handles an input's result.
    fn on_incoming(&mut self, p: usize, server: bool, inc: Incoming<'_>) {
        match inc {
            Incoming::PeerHello { .. } => {}
            Incoming::Data { conn, payload } => self.on_data(p, server, conn, payload),
            Incoming::DataBatch { conn, batch } => {
                // Each message of a batch is a delivery of its own, checked like Data.
                for payload in batch {
                    self.on_data(p, server, conn, payload);
                }
            }
            Incoming::Open { conn, .. } => self.app(p, server).pending_accept.push(conn),
            Incoming::Accepted { conn, .. } => {
                let app = self.app(p, server);
                assert!(app.opening.remove(&conn), "Accepted {conn} never opened");
                app.open.insert(conn);
            }
            Incoming::Rejected { conn, .. } => {
                assert!(self.app(p, server).opening.remove(&conn), "Rejected {conn} never opened");
            }
            Incoming::Closed { conn, .. } => {
                let app = self.app(p, server);
                app.open.remove(&conn);
                app.opening.remove(&conn);
                app.pending_accept.retain(|&c| c != conn);
            }
        }
    }

    /// One data message delivered on `conn`: it must be the next one the peer sent there.
    fn on_data(&mut self, p: usize, server: bool, conn: ConnId, payload: &[u8]) {
        let i = *self.app(p, server).got.get(&conn).unwrap_or(&0);
        let peer = if server { &self.pairs[p].capp } else { &self.pairs[p].sapp };
        let expected = peer.sent.get(&conn).and_then(|v| v.get(i));
        assert!(
            expected.is_some_and(|e| e.as_slice() == payload),
            "I1: pairing {p} conn {conn}: payload {i} toward {} is not the next one sent",
            if server { "the acceptor" } else { "the initiator" }
        );
        // What the message spent of the connection's credit is what the application gives
        // back once it has consumed it.
        let credit = self.session(p, server).map_or(payload.len(), |s| s.credit_of(payload.len()) as usize);
        let app = self.app(p, server);
        *app.got.entry(conn).or_default() += 1;
        let slow = app.slow.contains(&conn);
        *app.unreleased.entry(conn).or_default() += credit;
        if !slow {
            self.release(p, server, conn, usize::MAX);
        }
    }

    fn release(&mut self, p: usize, server: bool, conn: ConnId, amount: usize) {
        let app = self.app(p, server);
        let held = app.unreleased.entry(conn).or_default();
        let n = amount.min(*held);
        *held -= n;
        if n > 0 {
            if let Some(s) = self.session(p, server) {
                s.release(conn, n);
            }
        }
    }

    /// Route the first message of pending link `serial` (endpoint mode).
    fn route(&mut self, serial: u64, first: &[u8]) {
        let Some((p, i)) = self.find(serial) else { return };
        let Server::Endpoint(ep) = &mut self.server else { unreachable!("pending without an endpoint") };
        let Some(pl) = self.pairs[p].links[i].pending.take() else { return };
        self.keys += 1;
        let mut key = [0x3cu8; 16];
        key[..8].copy_from_slice(&self.keys.to_le_bytes());
        if self.trace {
            if let Some(s) = self.pairs[p].handle.and_then(|h| ep.session(h)) {
                let c = s.conduit();
                eprintln!(
                    "  routing {p}: session key {:?} ended {:?} detached {:?} sent {} acked {} received {}",
                    c.resume_key(),
                    c.ended(),
                    c.detached_since(),
                    c.items_sent(),
                    c.items_acked(),
                    c.items_received()
                );
            }
        }
        let r = ep.route(self.now, pl, first, ResumeKey(key));
        if self.trace {
            eprintln!("  route {p} -> {r:?}");
        }
        match r {
            Ok(Placed::Session { handle, link, new }) => {
                let pr = &mut self.pairs[p];
                if new && pr.links[i].a.is_none() {
                    // A fresh dial on a link the initiator has since given up: an orphan
                    // session from birth (the endpoint lets it expire).
                } else if new {
                    // A fresh dial: the initiator never got a ServerHello, so it has no
                    // session state worth keeping; neither has the acceptor's (orphan) one.
                    assert!(pr.capp.open.is_empty() && pr.capp.sent.is_empty(), "fresh dial after data");
                    assert!(pr.sapp.is_empty(), "a fresh dial left acceptor state behind");
                    pr.handle = Some(handle);
                    pr.sapp = App::default();
                    pr.lost = false;
                } else {
                    assert_eq!(pr.handle, Some(handle), "pairing {p} resumed into another session");
                }
                pr.links[i].b = Some(link);
                pr.links[i].handle = Some(handle);
            }
            Ok(Placed::Reject(bytes)) => {
                let pr = &mut self.pairs[p];
                // A hello on a link the initiator gave up may be a stale duplicate (an older
                // key and position) that the endpoint rightly refuses; on the link it holds,
                // REJECTED means its session is gone.
                // A fresh hello finds every slot taken by sessions still attached (orphans of
                // earlier fresh dials whose EOF is not read yet): the endpoint is full (the
                // `endpoint` target checks when that may happen).
                let held = pr.links[i].a.is_some();
                let fresh = sotto_proto::wire::ClientHello::decode(first).is_ok_and(|h| h.resume_key.is_none());
                assert!(
                    !held || fresh || pr.lost || pr.handle.is_none(),
                    "pairing {p} REJECTED while its session lives"
                );
                if held {
                    pr.lost = true;
                }
                pr.links[i].to_a.write(&bytes);
                self.close_end(serial, true);
            }
            Err(e) => panic!("honest ClientHello refused: {e:?}"),
        }
    }

    /// The link carrying traffic toward one end of pairing `p`: the initiator's, or the
    /// newest the acceptor side holds.
    fn held(&self, p: usize, server: bool) -> Option<u64> {
        let links = &self.pairs[p].links;
        if server {
            links.iter().rev().find(|l| l.b.is_some() || l.pending.is_some()).map(|l| l.serial)
        } else {
            links.iter().find(|l| l.a.is_some()).map(|l| l.serial)
        }
    }

    /// Deliver up to `n` bytes toward one end of pairing `p`; whether anything happened.
    fn deliver(&mut self, p: usize, server: bool, n: usize) -> bool {
        let Some(serial) = self.held(p, server) else { return false };
        self.deliver_on(serial, server, n)
    }

    fn deliver_on(&mut self, serial: u64, server: bool, n: usize) -> bool {
        let Some((p, i)) = self.find(serial) else { return false };
        let link = &mut self.pairs[p].links[i];
        if !(if server { link.b.is_some() || link.pending.is_some() } else { link.a.is_some() }) {
            return false;
        }
        let pipe = if server { &mut link.to_b } else { &mut link.to_a };
        let chunk = pipe.take(n);
        let at_eof = pipe.data.is_empty() && pipe.eof;
        let mut input: &[u8] = &chunk;
        let mut messages = Vec::new();
        loop {
            match pipe.dec.decode(&mut input) {
                Ok(Some(Message::Whole(m))) => messages.push(m.to_vec()),
                Ok(Some(Message::Reassembled)) => messages.push(pipe.dec.reassembled().to_vec()),
                Ok(None) => break,
                Err(e) => panic!("honest peer wrote a bad link message: {e}"),
            }
        }
        let moved = !chunk.is_empty() || at_eof;
        let now = self.now;
        for m in messages {
            let Some((p, i)) = self.find(serial) else { return true };
            let l = &self.pairs[p].links[i];
            if server && l.pending.is_some() {
                self.route(serial, &m);
                self.drain();
                continue;
            }
            let (id, handle) = (if server { l.b } else { l.a }, l.handle);
            let Some(id) = id else { return true };
            let current = !server || !self.config.endpoint || handle == self.pairs[p].handle;
            let s = if server { server_of(&mut self.server, handle) } else { Some(&mut self.pairs[p].client) };
            let Some(s) = s else { return true };
            let r = s.handle_message(now, id, &m);
            if self.trace {
                eprintln!("  {p} {} <- {:02x?}: {r:?}", if server { 'S' } else { 'C' }, &m[..m.len().min(24)]);
            }
            if let (Ok(Some(inc)), true) = (r, current) {
                let owned = own(inc);
                self.on_incoming(p, server, owned.as_incoming());
            }
            self.drain();
        }
        if at_eof {
            let still = self.find(serial).is_some_and(|(p, i)| {
                let l = &self.pairs[p].links[i];
                let pipe = if server { &l.to_b } else { &l.to_a };
                pipe.data.is_empty()
                    && pipe.eof
                    && if server { l.b.is_some() || l.pending.is_some() } else { l.a.is_some() }
            });
            if still {
                self.close_end(serial, server);
                self.drain();
            }
        }
        moved
    }

    fn deliver_all(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            let serials: Vec<u64> = self.pairs.iter().flat_map(|pr| &pr.links).map(|l| l.serial).collect();
            for serial in serials {
                moved |= self.deliver_on(serial, false, usize::MAX);
                moved |= self.deliver_on(serial, true, usize::MAX);
            }
            if !moved {
                return;
            }
        }
        panic!("deliveries never settle");
    }

    fn reconnect(&mut self, p: usize) {
        let now = self.now;
        let la = self.pairs[p].client.link_up(now, ResumeKey::ZERO);
        let mfl = self.max_frame_len;
        self.serials += 1;
        let serial = self.serials;
        self.pairs[p].links.push(SLink {
            serial,
            handle: None,
            a: Some(la),
            b: None,
            pending: None,
            to_a: Pipe::new(mfl),
            to_b: Pipe::new(mfl),
        });
        self.drain();
        let Some((p, i)) = self.find(serial) else { return };
        if self.pairs[p].links[i].a.is_none() {
            // The initiator dropped it at once (its session is over).
            self.close_end(serial, false);
            return;
        }
        match &mut self.server {
            Server::Single(s) => {
                self.keys += 1;
                let mut key = [0xa5u8; 16];
                key[..8].copy_from_slice(&self.keys.to_le_bytes());
                let lb = s.link_up(now, ResumeKey(key));
                self.pairs[p].links[i].b = Some(lb);
            }
            Server::Endpoint(ep) => match ep.accept_link(now, 1000 + p as u64) {
                Ok(pl) => self.pairs[p].links[i].pending = Some(pl),
                Err(e) => {
                    // Links the initiator gave up still wait for their EOF to be read: the
                    // pending table may be full. The link is closed unread.
                    assert_eq!(e, sotto_proto::endpoint::LinkRefusal::TooManyPendingHandshakes);
                    let l = &mut self.pairs[p].links[i];
                    l.to_b.discard();
                    l.to_a.open = false;
                    l.to_a.eof = true;
                }
            },
        }
        self.drain();
    }

    fn kill(&mut self, p: usize, at_to_b: u16, at_to_a: u16, notify: Notify) {
        let (na, nb) = match notify {
            Notify::Both => (true, true),
            Notify::AOnly => (true, false),
            Notify::BOnly => (false, true),
            Notify::Neither => (false, false),
        };
        for l in &mut self.pairs[p].links {
            l.to_b.truncate(usize::from(at_to_b));
            l.to_a.truncate(usize::from(at_to_a));
            l.to_b.open = false;
            l.to_a.open = false;
            l.to_b.eof |= nb;
            l.to_a.eof |= na;
        }
    }

    fn all_sessions_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut add = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for pr in &self.pairs {
            add(pr.client.poll_timeout());
            add(server_ref(&self.server, pr.handle).and_then(Session::poll_timeout));
        }
        if let Server::Endpoint(ep) = &self.server {
            add(ep.poll_timeout());
        }
        next
    }

    fn fire(&mut self, t: Instant) {
        self.now = self.now.max(t);
        let now = self.now;
        for p in 0..self.pairs.len() {
            self.pairs[p].client.handle_timeout(now);
        }
        match &mut self.server {
            Server::Single(s) => s.handle_timeout(now),
            Server::Endpoint(ep) => {
                ep.handle_timeout(now);
                let hs: Vec<SessionHandle> = ep.handles().collect();
                for h in hs {
                    if let Some(s) = ep.session_mut(h) {
                        s.handle_timeout(now);
                    }
                }
            }
        }
        self.drain();
        if let Some(n) = self.all_sessions_timeout() {
            assert!(n > now, "poll_timeout {n:?} not after handle_timeout({now:?})");
        }
    }

    fn advance(&mut self, d: Duration) {
        let target = self.now.saturating_add(d);
        for _ in 0..100_000 {
            match self.all_sessions_timeout() {
                Some(t) if t <= target => {
                    assert!(t >= self.now, "deadline in the past");
                    self.fire(t);
                }
                _ => {
                    self.now = target;
                    return;
                }
            }
        }
        panic!("timers fire forever");
    }

    // ------------------------------------------------------------ application commands

    fn pick_conn(&mut self, p: usize, server: bool, pick: u8, root: bool) -> Option<ConnId> {
        let app = self.app(p, server);
        let mut conns: Vec<ConnId> = app.open.iter().copied().collect();
        if root {
            conns.push(ROOT);
        }
        conns.get(usize::from(pick) % conns.len().max(1)).copied()
    }

    fn send(&mut self, p: usize, server: bool, conn: u8, len: u8) {
        let Some(conn) = self.pick_conn(p, server, conn, true) else { return };
        let n = self.app(p, server).sent.get(&conn).map_or(0, Vec::len);
        let data = payload(server, conn, n, len);
        let Some(r) = self.session(p, server).map(|s| s.send(conn, &data)) else { return };
        if self.trace {
            eprintln!("  {p} {} send {conn} #{n} ({} bytes): {r:?}", if server { 'S' } else { 'C' }, data.len());
        }
        match r {
            Ok(()) => self.app(p, server).sent.entry(conn).or_default().push(data),
            Err(CommandError::NoCredit) => {
                self.app(p, server).blocked.insert(conn);
            }
            Err(_) => {}
        }
    }

    fn step(&mut self, op: SpOp) {
        if self.trace {
            eprintln!("[{:?}] op {op:?}", self.now);
        }
        let np = self.pairs.len();
        match op {
            SpOp::Send { client, server, conn, len } => self.send(usize::from(client) % np, server, conn, len),
            SpOp::Open { client, server } => {
                let p = usize::from(client) % np;
                if let Some(Ok(c)) = self.session(p, server).map(|s| s.open(b"o")) {
                    self.app(p, server).opening.insert(c);
                }
            }
            SpOp::Close { client, server, conn } => {
                let p = usize::from(client) % np;
                if let Some(c) = self.pick_conn(p, server, conn, false) {
                    let now = self.now;
                    if let Some(Ok(())) = self.session(p, server).map(|s| s.close_conn(now, c, b"")) {
                        let app = self.app(p, server);
                        app.open.remove(&c);
                        app.closed_by_me.insert(c);
                    }
                }
            }
            SpOp::Read { client, server, conn, amount } => {
                let p = usize::from(client) % np;
                if let Some(c) = self.pick_conn(p, server, conn, true) {
                    self.release(p, server, c, usize::from(amount));
                }
            }
            SpOp::Slow { client, server, conn, slow } => {
                let p = usize::from(client) % np;
                if let Some(c) = self.pick_conn(p, server, conn, true) {
                    if slow {
                        self.app(p, server).slow.insert(c);
                    } else {
                        self.app(p, server).slow.remove(&c);
                        self.release(p, server, c, usize::MAX);
                    }
                }
            }
            SpOp::Deliver { client, to_server, amount } => {
                let p = usize::from(client) % np;
                let n = if amount & 0x8000 != 0 {
                    let k = usize::from(amount & 0xff);
                    let link = self.held(p, to_server).and_then(|serial| self.find(serial));
                    link.map_or(0, |(p, i)| {
                        let l = &self.pairs[p].links[i];
                        if to_server { &l.to_b } else { &l.to_a }.bytes_for_messages(k)
                    })
                } else {
                    usize::from(amount & 0x7fff)
                };
                self.deliver(p, to_server, n);
            }
            SpOp::DeliverAll => self.deliver_all(),
            SpOp::Kill { client, at_to_server, at_to_client, notify } => {
                self.kill(usize::from(client) % np, at_to_server, at_to_client, notify);
            }
            SpOp::Reconnect { client } => self.reconnect(usize::from(client) % np),
            SpOp::Advance { amount, unit } => {
                let d = match unit {
                    Unit::Micros => Duration::from_micros(u64::from(amount)),
                    Unit::Millis => Duration::from_millis(u64::from(amount)),
                    Unit::Secs => Duration::from_secs(u64::from(amount % 256)),
                };
                self.advance(d);
            }
        }
        self.drain();
    }

    // ------------------------------------------------------------ the end

    fn alive(&self, p: usize) -> bool {
        let pr = &self.pairs[p];
        !pr.lost
            && !pr.client.is_ended()
            && server_ref(&self.server, pr.handle).is_some_and(|s| !s.is_ended())
            && (!self.config.endpoint || pr.handle.is_some())
    }

    /// Everything accepted by a send was delivered (unless the receiver closed that
    /// connection).
    fn delivered_all(&self, p: usize) -> bool {
        let pr = &self.pairs[p];
        [(&pr.capp, &pr.sapp), (&pr.sapp, &pr.capp)].iter().all(|(from, to)| {
            from.sent.iter().all(|(c, v)| to.closed_by_me.contains(c) || to.got.get(c).copied().unwrap_or(0) == v.len())
        })
    }

    fn quiet(&self) -> bool {
        (0..self.pairs.len()).all(|p| {
            !self.alive(p)
                || (self.delivered_all(p)
                    && self.pairs[p].client.conduit().is_established()
                    && self.pairs[p].capp.pending_accept.is_empty()
                    && self.pairs[p].sapp.pending_accept.is_empty())
        })
    }

    fn heal(&mut self) {
        for p in 0..self.pairs.len() {
            if self.alive(p) || (self.config.endpoint && self.pairs[p].handle.is_none()) {
                self.reconnect(p);
            }
        }
        for _ in 0..1_000 {
            self.deliver_all();
            if self.quiet() {
                break;
            }
            let mut redialed = false;
            for p in 0..self.pairs.len() {
                let pr = &self.pairs[p];
                let fresh = self.config.endpoint && pr.handle.is_none() && !pr.client.is_ended();
                if (self.alive(p) || fresh)
                    && !pr.client.conduit().is_established()
                    && pr.links.iter().all(|l| l.a.is_none())
                {
                    self.reconnect(p);
                    redialed = true;
                }
            }
            if redialed {
                continue;
            }
            let Some(t) = self.all_sessions_timeout() else { break };
            self.advance(t.saturating_duration_since(self.now));
        }
    }

    fn finish(&mut self) {
        if self.trace {
            eprintln!("[{:?}] finish", self.now);
        }
        self.heal();
        for p in 0..self.pairs.len() {
            if !self.alive(p) {
                continue;
            }
            let pr = &self.pairs[p];
            assert!(
                self.delivered_all(p),
                "I7: pairing {p}: not everything sent was delivered: C {:?} S {:?}",
                pr.capp,
                pr.sapp
            );
        }
        // Readers catch up: no sender stays blocked on a connection open at both ends.
        for p in 0..self.pairs.len() {
            for server in [false, true] {
                let app = self.app(p, server);
                app.slow.clear();
                let conns: Vec<ConnId> = app.unreleased.keys().copied().collect();
                for c in conns {
                    self.release(p, server, c, usize::MAX);
                }
            }
        }
        self.drain();
        self.heal();
        for p in 0..self.pairs.len() {
            if !self.alive(p) {
                continue;
            }
            for server in [false, true] {
                let (app, peer) = if server {
                    (&self.pairs[p].sapp, &self.pairs[p].capp)
                } else {
                    (&self.pairs[p].capp, &self.pairs[p].sapp)
                };
                for c in &app.blocked {
                    let open_both = *c == ROOT || app.open.contains(c) && peer.open.contains(c);
                    assert!(
                        !open_both,
                        "pairing {p}: {} blocked on {c} for good after every reader read",
                        if server { "S" } else { "C" }
                    );
                }
            }
        }
    }
}

/// An owned copy of an [`Incoming`] (the session borrows from the input buffer).
enum Owned {
    Hello,
    Data(ConnId, Vec<u8>),
    /// A batch's body (`(varint(len) payload)+`), re-encoded from its messages.
    DataBatch(ConnId, Vec<u8>),
    Open(ConnId),
    Accepted(ConnId),
    Rejected(ConnId),
    Closed(ConnId),
}

fn own(i: Incoming<'_>) -> Owned {
    match i {
        Incoming::PeerHello { .. } => Owned::Hello,
        Incoming::Data { conn, payload } => Owned::Data(conn, payload.to_vec()),
        Incoming::DataBatch { conn, batch } => {
            let mut body = Vec::new();
            for payload in batch {
                let mut len = [0u8; 5];
                let n = encode_varint(payload.len() as u32, &mut len).expect("5 bytes hold a u32");
                body.extend_from_slice(&len[..n]);
                body.extend_from_slice(payload);
            }
            Owned::DataBatch(conn, body)
        }
        Incoming::Open { conn, .. } => Owned::Open(conn),
        Incoming::Accepted { conn, .. } => Owned::Accepted(conn),
        Incoming::Rejected { conn, .. } => Owned::Rejected(conn),
        Incoming::Closed { conn, .. } => Owned::Closed(conn),
    }
}

impl Owned {
    fn as_incoming(&self) -> Incoming<'_> {
        match self {
            Self::Hello => Incoming::PeerHello { metadata: &[] },
            Self::Data(conn, p) => Incoming::Data { conn: *conn, payload: p },
            Self::DataBatch(conn, body) => Incoming::DataBatch {
                conn: *conn,
                batch: DataBatch::parse(body).expect("re-encoded from a valid batch"),
            },
            Self::Open(conn) => Incoming::Open { conn: *conn, metadata: &[] },
            Self::Accepted(conn) => Incoming::Accepted { conn: *conn, metadata: &[] },
            Self::Rejected(conn) => Incoming::Rejected { conn: *conn, code: 0, metadata: &[] },
            Self::Closed(conn) => Incoming::Closed { conn: *conn, metadata: &[] },
        }
    }
}

/// Run a structured input.
pub fn run(input: &SpInput) {
    let _ = run_sim(input);
}

fn run_sim(input: &SpInput) -> Sim {
    let mut sim = Sim::new(input.config);
    if sim.trace {
        eprintln!("{:?}", input.config);
    }
    for op in input.ops.iter().take(MAX_OPS) {
        sim.step(*op);
    }
    sim.finish();
    sim
}

fn op_kind(op: &SpOp) -> u32 {
    match op {
        SpOp::Send { .. } => 0,
        SpOp::Open { .. } => 1,
        SpOp::Close { .. } => 2,
        SpOp::Read { .. } => 3,
        SpOp::Slow { .. } => 4,
        SpOp::Deliver { .. } => 5,
        SpOp::DeliverAll => 6,
        SpOp::Kill { .. } => 7,
        SpOp::Reconnect { .. } => 8,
        SpOp::Advance { .. } => 9,
    }
}

/// How eventful the run of `data` is, for picking seeds: distinct operations, connections,
/// resumes, replays and payloads delivered.
#[must_use]
pub fn score(data: &[u8]) -> u64 {
    let Ok(input) = SpInput::arbitrary_take_rest(Unstructured::new(data)) else { return 0 };
    let kinds = input.ops.iter().take(MAX_OPS).fold(0u32, |k, op| k | 1 << op_kind(op));
    let sim = run_sim(&input);
    let mut score = u64::from(kinds.count_ones()) * 10;
    for pr in &sim.pairs {
        let st = pr.client.conduit().stats();
        score += 5 * st.resumes + st.frames_replayed;
        for app in [&pr.capp, &pr.sapp] {
            score += 3 * app.got.len() as u64 + app.got.values().sum::<usize>() as u64;
        }
    }
    score
}

/// Decode `data` as libfuzzer-sys does for `fuzz_target!(|input: SpInput| ..)`, then run.
pub fn run_bytes(data: &[u8]) {
    if let Ok(input) = SpInput::arbitrary_take_rest(Unstructured::new(data)) {
        run(&input);
    }
}
