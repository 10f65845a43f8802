//! `endpoint`: one endpoint ([`Hosted`]) fed links from many sources: hostile ones (random first
//! messages, garbled and valid fresh or resume ClientHellos whose keys come from the small set
//! the endpoint issued, so that some hit; floods of pending links; raw bytes on links it routed
//! to a session) and honest initiator [`Session`]s that attach, exchange data on the root
//! connection, lose links (both ends noticing, one, or none) and resume. Time passes and every
//! deadline fires at its instant; the driver follows the contract (free a session once it
//! ended, close what the endpoint expires or evicts). Checked after every operation:
//!
//! - `pending_links <= max_pending_handshakes` (and equal to the driver's count), live sessions
//!   `<= max_sessions`, live detached sessions `<= max_detached_sessions` once the events are
//!   drained, and a refusal for a full pending table only when it is full;
//! - handles: a new session's handle never equals any handle seen before, a freed or reclaimed
//!   handle stays stale forever, live handles name distinct slots, `handles()` lists exactly
//!   the live ones;
//! - every REJECTED reply (from `route` or from a session's conduit) is the same 25 bytes;
//! - a first message is refused as a bad hello exactly when it does not decode as a
//!   ClientHello; a fresh hello is rejected only when every slot holds an attached session;
//! - an honest client resuming a session that is alive is routed back to that session (not
//!   REJECTED), unless a forged hello took the session over; its fresh dial creates a session;
//!   root data both ways is delivered exactly once, in order (untouched sessions);
//! - honest sessions never fail at the session layer, nor drop a link for a violation;
//! - new sessions: `SessionReady` once per session, only for a live ready one, and after a
//!   drain every live ready session has been announced; `SessionHandshakeExpired` only for a
//!   live session never announced, already freed (stale); the stats count both events;
//! - after `handle_timeout(now)` and a drain no deadline (endpoint, sessions, clients) lies at
//!   or before `now`.

use crate::pair::{timer_profile, Unit};
use arbitrary::{Arbitrary, Unstructured};
use sotto_proto::conduit::LinkDropReason;
use sotto_proto::endpoint::{
    EndpointConfig, EndpointEvent, Hosted, HostedEvent, LinkRefusal, PendingLink, Placed, SessionHandle,
};
use sotto_proto::session::{Incoming, Session, SessionConfig, SessionEvent, ROOT};
use sotto_proto::wire::{ClientHello, Frame, ServerHello, HELLO_LEN};
use sotto_proto::{ConduitConfig, Duration, Event, Instant, LinkId, ResumeKey, Role, SessionEnd};
use std::collections::{BTreeSet, VecDeque};

/// Most operations run per input.
const MAX_OPS: usize = 300;
/// Honest clients at most.
const MAX_CLIENTS: usize = 3;
/// Source of client `c`; hostile sources are below 16.
const CLIENT_SOURCE: u64 = 100;

/// Limits and timers of a run.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct EpConfig {
    /// `max_sessions = 1 + sessions % 4`.
    pub sessions: u8,
    /// `max_pending_handshakes = 1 + pending % 4`.
    pub pending: u8,
    /// `max_detached_sessions = detached % 4`.
    pub detached: u8,
    /// `failure_budget` from {1, 3, 16, 1000}; `tracked_sources` from {1, 2, 8, 256}.
    pub limits: u8,
    /// Timer profile ([`timer_profile`]) of every session; the handshake timeout is the
    /// endpoint's too.
    pub timers: u8,
    /// Honest clients: `1 + clients % 3`.
    pub clients: u8,
}

impl EpConfig {
    /// The endpoint configuration.
    #[must_use]
    pub fn build(&self) -> EndpointConfig {
        let [ack_delay, ping, pong, min_ping, handshake, recovery] = timer_profile(self.timers);
        let conduit = {
            let mut patched = ConduitConfig::default();
            patched.max_frame_len = 512;
            patched.replay_frames = 16;
            patched.replay_bytes = 4096;
            patched.ack_delay = ack_delay;
            patched.ping_interval = ping;
            patched.pong_timeout = pong;
            patched.min_ping_interval = min_ping;
            patched.handshake_timeout = handshake;
            patched.recovery_timeout = recovery;
            patched
        };
        let session = {
            let mut patched = SessionConfig::default();
            patched.conduit = conduit;
            patched.max_connections = 4;
            patched.initial_credit = 4096;
            patched
        };
        let cfg = {
            let mut patched = EndpointConfig::default();
            patched.session = session;
            patched.max_sessions = 1 + u32::from(self.sessions % 4);
            patched.max_pending_handshakes = 1 + u32::from(self.pending % 4);
            // As many as the global cap: the per-source quota never binds first here.
            patched.max_pending_per_source = 1 + u32::from(self.pending % 4);
            patched.max_detached_sessions = u32::from(self.detached % 4);
            patched.handshake_timeout = handshake;
            patched.failure_budget = [1u32, 3, 16, 1000][usize::from(self.limits & 3)];
            patched.failure_period = Duration::from_secs(10);
            patched.tracked_sources = [1u32, 2, 8, 256][usize::from((self.limits >> 2) & 3)];
            patched
        };
        assert_eq!(cfg.session.validate(), Ok(()));
        cfg
    }
}

/// A first message on a hostile link.
#[derive(Arbitrary, Debug, Clone)]
pub enum FirstMessage {
    /// Arbitrary bytes.
    Bytes(Vec<u8>),
    /// A ClientHello-shaped message with arbitrary flags, key byte and position.
    Garbled {
        /// Flags byte.
        flags: u8,
        /// Key byte (repeated).
        key: u8,
        /// Position.
        position: u32,
    },
    /// A valid fresh ClientHello.
    Fresh {
        /// EXT flag.
        ext: bool,
    },
    /// A valid resume ClientHello with a key the endpoint issued (picked by index), or a
    /// random one, at a position.
    Resume {
        /// Which issued key.
        key: u8,
        /// Position (`None`: nothing received).
        position: Option<u16>,
        /// EXT flag.
        ext: bool,
    },
    /// A data frame instead of a hello (H10).
    Frame,
}

/// One step of a run.
#[derive(Arbitrary, Debug, Clone)]
pub enum EpOp {
    /// A hostile link from `source % 16` arrives and sends nothing yet.
    Accept {
        /// Source.
        source: u8,
    },
    /// `count % 16` hostile links from one source.
    Flood {
        /// Source.
        source: u8,
        /// How many.
        count: u8,
    },
    /// The first message of a pending hostile link (or of a stale pending handle).
    First {
        /// Which pending link.
        pick: u8,
        /// What it sends.
        msg: FirstMessage,
    },
    /// A pending hostile link closes before sending.
    PendingClosed {
        /// Which.
        pick: u8,
    },
    /// Honest client `client` dials (fresh or resume): its ClientHello is routed at once.
    Dial {
        /// Which client.
        client: u8,
    },
    /// Deliver up to `count` messages each way on a link.
    Pump {
        /// Which link.
        pick: u8,
        /// How many.
        count: u8,
    },
    /// Deliver everything on every link until nothing moves.
    PumpAll,
    /// Kill a link: in-flight messages are lost; the ends told notice (EOF), the others hold a
    /// half-open link.
    Kill {
        /// Which link.
        pick: u8,
        /// The client end notices.
        client: bool,
        /// The server end notices.
        server: bool,
    },
    /// Client `client` sends `len` bytes on the root connection.
    ClientSend {
        /// Which client.
        client: u8,
        /// Length.
        len: u8,
    },
    /// The server session of client `client` sends `len` bytes on the root connection.
    ServerSend {
        /// Which client.
        client: u8,
        /// Length.
        len: u8,
    },
    /// Raw bytes from a hostile link that was routed to a session.
    Forge {
        /// Which link.
        pick: u8,
        /// Bytes.
        bytes: Vec<u8>,
    },
    /// The driver frees a session (any handle seen, stale ones included).
    Free {
        /// Which handle.
        pick: u8,
    },
    /// Let time pass, firing every deadline on the way.
    Advance {
        /// How much.
        amount: u16,
        /// Unit.
        unit: Unit,
    },
    /// Jump to the earliest deadline and fire it.
    Timers,
}

/// A whole run.
#[derive(Arbitrary, Debug)]
pub struct EpInput {
    /// Configuration.
    pub config: EpConfig,
    /// Operations (at most [`MAX_OPS`]).
    pub ops: Vec<EpOp>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServerEnd {
    Pending(PendingLink),
    Session(SessionHandle, LinkId),
    Closed,
}

#[derive(Debug)]
struct ELink {
    /// The honest client end: (client, link id in its session).
    client: Option<(usize, LinkId)>,
    server: ServerEnd,
    /// A hostile link (no client end ever).
    hostile: bool,
    /// Killed: nothing written arrives any more.
    dead: bool,
    to_server: VecDeque<Vec<u8>>,
    to_client: VecDeque<Vec<u8>>,
}

impl ELink {
    fn gone(&self) -> bool {
        self.client.is_none() && self.server == ServerEnd::Closed
    }
}

#[derive(Debug)]
struct Client {
    s: Session,
    handle: Option<SessionHandle>,
    /// Root payloads sent by the client, and by its server session (to it).
    sent: Vec<Vec<u8>>,
    sent_back: Vec<Vec<u8>>,
    /// Received by the server application, and by the client.
    got_server: usize,
    got: usize,
}

/// The simulation.
struct Sim {
    cfg: EndpointConfig,
    ep: Hosted,
    clients: Vec<Client>,
    links: Vec<ELink>,
    now: Instant,
    keys_issued: Vec<ResumeKey>,
    next_key: u64,
    /// Every handle ever seen, and the live ones (not freed).
    handles: Vec<SessionHandle>,
    live: BTreeSet<SessionHandle>,
    /// Sessions a hostile link was routed to (or sent bytes to).
    tainted: BTreeSet<SessionHandle>,
    /// Pending handles that are no longer live.
    stale_pending: Vec<PendingLink>,
    /// Sessions reported by `SessionReady`, and how many `SessionHandshakeExpired` came.
    announced: BTreeSet<SessionHandle>,
    ready_events: u64,
    expired_events: u64,
    buf: Vec<u8>,
    trace: bool,
}

fn payload(tag: u8, n: usize, len: u8) -> Vec<u8> {
    let mut p = vec![tag];
    p.extend_from_slice(&(n as u32).to_le_bytes());
    p.extend((0..len).map(|i| i ^ (n as u8)));
    p
}

impl Sim {
    fn new(c: &EpConfig) -> Self {
        let cfg = c.build();
        let ep = Hosted::new(cfg, b"srv").expect("valid endpoint config");
        let clients = (0..=usize::from(c.clients) % MAX_CLIENTS)
            .map(|_| Client {
                s: Session::new(Role::Initiator, cfg.session, b"cli").expect("config"),
                handle: None,
                sent: Vec::new(),
                sent_back: Vec::new(),
                got_server: 0,
                got: 0,
            })
            .collect();
        Self {
            cfg,
            ep,
            clients,
            links: Vec::new(),
            now: Instant::from_nanos(1_000_000_000),
            keys_issued: Vec::new(),
            next_key: 0,
            handles: Vec::new(),
            live: BTreeSet::new(),
            tainted: BTreeSet::new(),
            stale_pending: Vec::new(),
            announced: BTreeSet::new(),
            ready_events: 0,
            expired_events: 0,
            buf: vec![0u8; 1 << 12],
            trace: std::env::var_os("SOTTO_FUZZ_TRACE").is_some(),
        }
    }

    fn fresh_key(&mut self) -> ResumeKey {
        self.next_key += 1;
        let mut k = [0xc3u8; 16];
        k[..8].copy_from_slice(&self.next_key.to_le_bytes());
        let key = ResumeKey(k);
        self.keys_issued.push(key);
        key
    }

    /// A hostile link was routed to (or wrote to) client `c`'s session.
    fn tainted_client(&self, c: usize) -> bool {
        self.clients[c].handle.is_some_and(|h| self.tainted.contains(&h))
    }

    fn owner(&self, h: SessionHandle) -> Option<usize> {
        self.clients.iter().position(|c| c.handle == Some(h))
    }

    // ------------------------------------------------------------ link ends

    /// The client end of link `i` goes away (the client closed it, or saw EOF).
    fn close_client_end(&mut self, i: usize) {
        if let Some((c, l)) = self.links[i].client.take() {
            self.clients[c].s.link_down(self.now, l);
            self.links[i].to_client.clear();
        }
    }

    /// The server end of link `i` goes away.
    fn close_server_end(&mut self, i: usize) {
        match std::mem::replace(&mut self.links[i].server, ServerEnd::Closed) {
            ServerEnd::Pending(p) => {
                self.ep.pending_closed(p);
                self.stale_pending.push(p);
            }
            ServerEnd::Session(h, l) => {
                if let Some(s) = self.ep.session_mut(h) {
                    s.link_down(self.now, l);
                }
            }
            ServerEnd::Closed => {}
        }
        self.links[i].to_server.clear();
    }

    fn prune(&mut self) {
        self.links.retain(|l| !l.gone());
    }

    // ------------------------------------------------------------ drain

    fn drain(&mut self) {
        for _ in 0..256 {
            let mut moved = false;
            for c in 0..self.clients.len() {
                moved |= self.drain_client(c);
            }
            let handles: Vec<SessionHandle> = self.ep.handles().collect();
            for h in handles {
                moved |= self.drain_session(h);
            }
            while let Some(e) = self.ep.poll_event() {
                moved = true;
                self.on_endpoint_event(e);
            }
            self.prune();
            if !moved {
                self.check();
                return;
            }
        }
        panic!("outputs never run dry");
    }

    fn drain_client(&mut self, c: usize) -> bool {
        let mut moved = false;
        let now = self.now;
        while let Some(t) = self.clients[c].s.poll_transmit(now, &mut self.buf) {
            moved = true;
            let i = self
                .links
                .iter()
                .position(|l| l.client == Some((c, t.link)))
                .expect("client transmits on a link its driver closed");
            if !self.links[i].dead {
                self.links[i].to_server.push_back(self.buf[..t.len].to_vec());
            }
        }
        while let Some(e) = self.clients[c].s.poll_event() {
            moved = true;
            if self.trace {
                eprintln!("  [{:?}] client {c} event {e:?}", self.now);
            }
            match e {
                SessionEvent::Conduit(Event::DropLink { link, reason }) => {
                    if !self.tainted_client(c) {
                        assert!(
                            !matches!(reason, LinkDropReason::Violation(_) | LinkDropReason::HandshakeFailed(_)),
                            "client {c} dropped a link for {reason:?}"
                        );
                    }
                    if let Some(i) = self.links.iter().position(|l| l.client == Some((c, link))) {
                        self.close_client_end(i);
                        if !self.links[i].dead {
                            self.close_server_end(i);
                        }
                    }
                }
                SessionEvent::Conduit(Event::Ended(r)) => {
                    let h = self.clients[c].handle;
                    let server_alive = h.and_then(|h| self.ep.session(h)).is_some_and(|s| !s.is_ended());
                    let resuming = self.clients[c].s.conduit().resume_key().is_some();
                    if r == SessionEnd::Rejected && resuming && !self.tainted_client(c) {
                        assert!(!server_alive, "client {c} REJECTED while its session {h:?} lives");
                    }
                }
                _ => {}
            }
            if !self.tainted_client(c) {
                assert_eq!(self.clients[c].s.failure(), None, "honest client {c} failed");
            }
        }
        moved
    }

    fn drain_session(&mut self, h: SessionHandle) -> bool {
        let mut moved = false;
        let now = self.now;
        loop {
            let Some(s) = self.ep.session_mut(h) else { return moved };
            let Some(t) = s.poll_transmit(now, &mut self.buf) else { break };
            moved = true;
            let bytes = &self.buf[..t.len];
            if t.len == HELLO_LEN {
                if let Ok(sh) = ServerHello::decode(bytes) {
                    if sh.rejected {
                        assert_eq!(bytes, ServerHello::rejected().encode(), "REJECTED bytes differ");
                    } else if let Some(k) = self.ep.session(h).and_then(|s| s.conduit().resume_key()) {
                        if !self.keys_issued.contains(&k) {
                            self.keys_issued.push(k);
                        }
                    }
                }
            }
            let i = self
                .links
                .iter()
                .position(|l| l.server == ServerEnd::Session(h, t.link))
                .expect("session transmits on a link its driver closed");
            if !self.links[i].dead && !self.links[i].hostile {
                self.links[i].to_client.push_back(self.buf[..t.len].to_vec());
            }
        }
        let mut ended = false;
        loop {
            let Some(s) = self.ep.session_mut(h) else { return moved };
            let Some(e) = s.poll_event() else { break };
            moved = true;
            if self.trace {
                eprintln!("  [{:?}] session {h:?} event {e:?}", self.now);
            }
            match e {
                SessionEvent::Conduit(Event::DropLink { link, reason }) => {
                    if !self.tainted.contains(&h) {
                        assert!(
                            !matches!(reason, LinkDropReason::Violation(_) | LinkDropReason::Gap),
                            "session {h:?} dropped a link for {reason:?}"
                        );
                    }
                    match self.links.iter().position(|l| l.server == ServerEnd::Session(h, link)) {
                        Some(i) => {
                            self.close_server_end(i);
                            if !self.links[i].dead {
                                self.close_client_end(i);
                            }
                        }
                        None => {
                            if let Some(s) = self.ep.session_mut(h) {
                                s.link_down(now, link);
                            }
                        }
                    }
                }
                SessionEvent::Conduit(Event::Ended(_)) => ended = true,
                _ => {}
            }
        }
        if !self.tainted.contains(&h) {
            assert_eq!(self.ep.session(h).and_then(Session::failure), None, "honest session {h:?} failed");
        }
        if ended {
            self.free(h);
        }
        moved
    }

    fn on_endpoint_event(&mut self, e: HostedEvent) {
        if self.trace {
            eprintln!("  [{:?}] endpoint event {e:?}", self.now);
        }
        match e {
            HostedEvent::Endpoint(EndpointEvent::HandshakeExpired(p)) => {
                let i = self
                    .links
                    .iter()
                    .position(|l| l.server == ServerEnd::Pending(p))
                    .expect("expired a pending link the driver does not hold");
                self.links[i].server = ServerEnd::Closed;
                self.stale_pending.push(p);
                self.close_client_end(i);
            }
            HostedEvent::Endpoint(EndpointEvent::Evicted(h) | EndpointEvent::Reclaimed(h)) => {
                assert!(self.live.contains(&h), "evicted {h:?}, not live");
                match self.ep.session(h) {
                    // Over max_detached_sessions: ended, freed once its events are drained.
                    Some(s) => assert_eq!(s.conduit().ended(), Some(SessionEnd::Evicted)),
                    // Reclaimed for a new session: already freed.
                    None => self.forget(h),
                }
            }
            HostedEvent::SessionReady(h) => {
                assert!(self.live.contains(&h), "SessionReady({h:?}), not live");
                assert!(self.ep.session(h).is_some_and(Session::is_ready), "SessionReady({h:?}), not ready");
                assert!(self.announced.insert(h), "SessionReady({h:?}) twice");
                self.ready_events += 1;
            }
            HostedEvent::Endpoint(EndpointEvent::SessionHandshakeExpired(h)) => {
                assert!(self.live.contains(&h), "SessionHandshakeExpired({h:?}), not live");
                assert!(!self.announced.contains(&h), "SessionHandshakeExpired({h:?}) after SessionReady");
                assert!(self.ep.session(h).is_none(), "SessionHandshakeExpired({h:?}) but not freed");
                self.expired_events += 1;
                self.forget(h);
            }
        }
    }

    /// `h` is no longer live: close its links.
    fn forget(&mut self, h: SessionHandle) {
        self.live.remove(&h);
        for i in 0..self.links.len() {
            if matches!(self.links[i].server, ServerEnd::Session(x, _) if x == h) {
                self.links[i].server = ServerEnd::Closed;
                self.links[i].to_server.clear();
                if !self.links[i].dead {
                    self.close_client_end(i);
                }
            }
        }
    }

    fn free(&mut self, h: SessionHandle) {
        let was_live = self.ep.session(h).is_some();
        self.ep.free(self.now, h);
        assert!(self.ep.session(h).is_none(), "freed handle still names a session");
        if was_live {
            self.forget(h);
        }
    }

    // ------------------------------------------------------------ checks

    fn check(&mut self) {
        let st = self.ep.stats();
        let pending = self.links.iter().filter(|l| matches!(l.server, ServerEnd::Pending(_))).count();
        assert!(st.pending_links <= u64::from(self.cfg.max_pending_handshakes), "H9: pending beyond the limit");
        assert_eq!(st.pending_links, pending as u64, "pending links: endpoint vs driver");
        assert!(st.sessions_live <= u64::from(self.cfg.max_sessions), "live sessions beyond max_sessions");
        let listed: BTreeSet<SessionHandle> = self.ep.handles().collect();
        assert_eq!(listed, self.live, "handles() vs the live handles");
        let slots: BTreeSet<u32> = listed.iter().map(|h| h.index).collect();
        assert_eq!(slots.len(), listed.len(), "two live handles share a slot");
        for h in &self.handles {
            assert_eq!(self.ep.session(*h).is_some(), self.live.contains(h), "handle {h:?} liveness");
        }
        let detached = listed
            .iter()
            .filter_map(|h| self.ep.session(*h))
            .filter(|s| !s.is_ended() && s.conduit().detached_since().is_some())
            .count();
        assert!(detached <= self.cfg.max_detached_sessions as usize, "L2: {detached} detached sessions kept");
        for h in &listed {
            let s = self.ep.session(*h).expect("listed");
            assert_eq!(s.conduit().stats().events_overflowed, 0);
            assert!(!s.is_ready() || self.announced.contains(h), "ready session {h:?} not announced after a drain");
        }
        assert_eq!(st.sessions_ready, self.ready_events, "sessions_ready vs SessionReady events");
        assert_eq!(st.session_handshakes_expired, self.expired_events, "expiries vs SessionHandshakeExpired events");
    }

    /// After `handle_timeout(t)` everywhere and a drain, nothing is due at or before `t`.
    fn check_deadlines_after(&self, t: Instant) {
        if let Some(n) = self.ep.poll_timeout() {
            assert!(n > t, "endpoint poll_timeout {n:?} not after handle_timeout({t:?})");
        }
        for h in self.ep.handles() {
            if let Some(n) = self.ep.session(h).and_then(Session::poll_timeout) {
                assert!(n > t, "session {h:?} poll_timeout {n:?} not after handle_timeout({t:?})");
            }
        }
        for (i, c) in self.clients.iter().enumerate() {
            if let Some(n) = c.s.poll_timeout() {
                assert!(n > t, "client {i} poll_timeout {n:?} not after handle_timeout({t:?})");
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let sessions = self.ep.handles().filter_map(|h| self.ep.session(h).and_then(Session::poll_timeout));
        let clients = self.clients.iter().filter_map(|c| c.s.poll_timeout());
        sessions.chain(clients).chain(self.ep.poll_timeout()).min()
    }

    fn fire(&mut self, t: Instant) {
        self.now = self.now.max(t);
        let now = self.now;
        self.ep.handle_timeout(now);
        let handles: Vec<SessionHandle> = self.ep.handles().collect();
        for h in handles {
            if let Some(s) = self.ep.session_mut(h) {
                s.handle_timeout(now);
            }
        }
        for c in &mut self.clients {
            c.s.handle_timeout(now);
        }
        self.drain();
        self.check_deadlines_after(now);
    }

    fn advance(&mut self, d: Duration) {
        let target = self.now.saturating_add(d);
        for _ in 0..100_000 {
            match self.next_deadline() {
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

    // ------------------------------------------------------------ operations

    fn accept(&mut self, source: u64) {
        let before = self.ep.stats().pending_links;
        match self.ep.accept_link(self.now, source) {
            Ok(p) => {
                assert!(before < u64::from(self.cfg.max_pending_handshakes));
                self.links.push(ELink {
                    client: None,
                    server: ServerEnd::Pending(p),
                    hostile: true,
                    dead: false,
                    to_server: VecDeque::new(),
                    to_client: VecDeque::new(),
                });
            }
            Err(LinkRefusal::TooManyPendingHandshakes) => {
                assert_eq!(before, u64::from(self.cfg.max_pending_handshakes), "refused with room");
            }
            Err(LinkRefusal::RateLimited) => {}
            Err(e) => panic!("accept_link: {e:?}"),
        }
    }

    fn first_bytes(&self, msg: &FirstMessage) -> Vec<u8> {
        match msg {
            FirstMessage::Bytes(b) => b.clone(),
            FirstMessage::Garbled { flags, key, position } => {
                let mut b = ClientHello { resume_key: None, last_received: None, ext: false, early: false }.encode();
                b[4] = *flags;
                b[5..21].fill(*key);
                b[21..25].copy_from_slice(&position.to_le_bytes());
                b.to_vec()
            }
            FirstMessage::Fresh { ext } => {
                ClientHello { resume_key: None, last_received: None, ext: *ext, early: false }.encode().to_vec()
            }
            FirstMessage::Resume { key, position, ext } => {
                let k = if self.keys_issued.is_empty() || *key >= 0xf0 {
                    ResumeKey([key | 1; 16])
                } else {
                    self.keys_issued[usize::from(*key) % self.keys_issued.len()]
                };
                ClientHello { resume_key: Some(k), last_received: position.map(u32::from), ext: *ext, early: false }
                    .encode()
                    .to_vec()
            }
            FirstMessage::Frame => {
                let f = Frame::Data { seq: 0, ack: None, item: b"\x10\x00hi" };
                let mut out = vec![0u8; f.encoded_len(true)];
                let n = f.encode(true, &mut out).expect("sized");
                out.truncate(n);
                out
            }
        }
    }

    /// Route the first message of link `i` (pending); returns the routing.
    fn route(&mut self, i: usize, first: &[u8]) -> Result<Placed, LinkRefusal> {
        let ServerEnd::Pending(p) = self.links[i].server else { panic!("route: not pending") };
        let fresh_slot_free = self.ep.handles().count() < self.cfg.max_sessions as usize
            || self.ep.handles().any(|h| self.ep.session(h).is_some_and(|s| s.conduit().detached_since().is_some()));
        let key = self.fresh_key();
        let r = self.ep.route(self.now, p, first, key);
        if self.trace {
            eprintln!("  route {first:02x?} -> {r:?}");
        }
        self.stale_pending.push(p);
        self.links[i].server = ServerEnd::Closed;
        let hello = ClientHello::decode(first);
        match (&hello, &r) {
            (Err(e), Err(LinkRefusal::BadHello(e2))) => assert_eq!(e, e2),
            (Err(e), other) => panic!("bad hello {e:?} routed: {other:?}"),
            (Ok(h), Err(e)) => panic!("good hello {h:?} refused: {e:?}"),
            (Ok(_), Ok(_)) => {}
        }
        match r {
            Ok(Placed::Reject(bytes)) => {
                // One REJECTED for every reason, but "full" to a fresh hello with EXT.
                let told_full = hello.as_ref().is_ok_and(|h| h.resume_key.is_none() && h.ext);
                if told_full {
                    assert_eq!(bytes, ServerHello::rejected_full().encode(), "full REJECTED bytes differ");
                } else {
                    assert_eq!(bytes, ServerHello::rejected().encode(), "REJECTED bytes differ");
                }
                if hello.is_ok_and(|h| h.resume_key.is_none()) {
                    assert!(!fresh_slot_free, "fresh hello REJECTED with a free or reclaimable slot");
                }
                self.links[i].to_client.push_back(bytes.to_vec());
            }
            Ok(Placed::Session { handle, link, new }) => {
                assert!(self.ep.session(handle).is_some(), "routed to a dead handle");
                assert_eq!(new, hello.is_ok_and(|h| h.resume_key.is_none()), "new vs fresh hello");
                if new {
                    assert!(!self.handles.contains(&handle), "a new session's handle {handle:?} aliases an old one");
                    self.handles.push(handle);
                    self.live.insert(handle);
                } else {
                    assert!(self.live.contains(&handle), "resume routed to {handle:?}, not live");
                }
                self.links[i].server = ServerEnd::Session(handle, link);
            }
            Err(_) => {}
        }
        r
    }

    fn first(&mut self, pick: u8, msg: &FirstMessage) {
        let bytes = self.first_bytes(msg);
        let pending: Vec<usize> =
            (0..self.links.len()).filter(|&i| matches!(self.links[i].server, ServerEnd::Pending(_))).collect();
        if pending.is_empty() || pick >= 0xf0 {
            // A stale handle: refused, nothing changes.
            if let Some(&p) = self.stale_pending.get(usize::from(pick) % self.stale_pending.len().max(1)) {
                let key = self.fresh_key();
                assert_eq!(self.ep.route(self.now, p, &bytes, key), Err(LinkRefusal::UnknownPending));
            }
            return;
        }
        let i = pending[usize::from(pick) % pending.len()];
        if let Ok(Placed::Session { handle, .. }) = self.route(i, &bytes) {
            self.tainted.insert(handle);
        }
    }

    fn dial(&mut self, c: usize) {
        if self.clients[c].s.is_ended() {
            return;
        }
        let had_key = self.clients[c].s.conduit().resume_key().is_some();
        let old = self.clients[c].handle;
        let l = self.clients[c].s.link_up(self.now, ResumeKey::ZERO);
        // The client's previous link (if any) is superseded: its DropLink closes it.
        self.links.push(ELink {
            client: Some((c, l)),
            server: ServerEnd::Closed,
            hostile: false,
            dead: false,
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
        });
        self.drain();
        let Some(i) = self.links.iter().position(|x| x.client == Some((c, l))) else { return };
        let Some(hello) = self.links[i].to_server.pop_front() else { return };
        match self.ep.accept_link(self.now, CLIENT_SOURCE + c as u64) {
            Ok(p) => self.links[i].server = ServerEnd::Pending(p),
            Err(_) => {
                self.close_client_end(i);
                self.drain();
                return;
            }
        }
        // What the endpoint knows of the client's session now (the old link's EOF may have
        // detached it, and a detached session may have been evicted meanwhile).
        let alive = old.and_then(|h| self.ep.session(h)).is_some_and(|s| !s.is_ended());
        // A session whose handshake never finished takes at most `MAX_UNREADY_RESUMES`
        // resumes (docs/protocol.md section 3): a client that keeps replacing its links
        // before its Hello gets through is then refused, and starts afresh.
        let unready = old.and_then(|h| self.ep.session(h)).is_some_and(|s| !s.is_ready());
        let tainted = old.is_some_and(|h| self.tainted.contains(&h));
        match self.route(i, &hello) {
            Ok(Placed::Session { handle, new, .. }) => {
                if had_key {
                    assert!(!new);
                    assert_eq!(Some(handle), old, "client {c} resumed into another session");
                } else {
                    assert!(new);
                    assert!(self.clients[c].sent.is_empty() && self.clients[c].sent_back.is_empty());
                    self.clients[c].handle = Some(handle);
                }
            }
            Ok(Placed::Reject(_)) => {
                if had_key {
                    assert!(
                        !alive || tainted || unready,
                        "client {c}: resume REJECTED while its session {old:?} lives"
                    );
                }
            }
            Err(e) => panic!("client hello refused: {e:?}"),
        }
        self.drain();
    }

    fn pump(&mut self, i: usize, count: usize) -> bool {
        let mut moved = false;
        for _ in 0..count {
            let mut any = false;
            if let Some(m) = self.links.get_mut(i).and_then(|l| l.to_server.pop_front()) {
                any = true;
                if let ServerEnd::Session(h, l) = self.links[i].server {
                    let owner = self.owner(h).filter(|_| !self.tainted.contains(&h) && !self.links[i].hostile);
                    let now = self.now;
                    if let Some(s) = self.ep.session_mut(h) {
                        let r = s.handle_message(now, l, &m);
                        if let (Ok(Some(inc)), Some(c)) = (r, owner) {
                            let cl = &mut self.clients[c];
                            for payload in root_payloads(inc) {
                                assert!(cl.got_server < cl.sent.len(), "server got root data never sent");
                                assert_eq!(payload, cl.sent[cl.got_server].as_slice(), "server root data out of order");
                                cl.got_server += 1;
                            }
                        }
                    }
                }
                self.drain();
            }
            if let Some(m) = self.links.get_mut(i).and_then(|l| l.to_client.pop_front()) {
                any = true;
                if let Some((c, l)) = self.links[i].client {
                    let now = self.now;
                    let tainted = self.clients[c].handle.is_some_and(|h| self.tainted.contains(&h));
                    let cl = &mut self.clients[c];
                    if let Ok(Some(inc)) = cl.s.handle_message(now, l, &m) {
                        for payload in root_payloads(inc) {
                            if !tainted {
                                assert!(cl.got < cl.sent_back.len(), "client got root data never sent");
                                assert_eq!(payload, cl.sent_back[cl.got].as_slice(), "client root data out of order");
                            }
                            cl.got += 1;
                        }
                    }
                }
                self.drain();
            }
            moved |= any;
            if !any {
                break;
            }
        }
        moved
    }

    fn pump_all(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for i in 0..self.links.len() {
                moved |= self.pump(i, usize::MAX);
            }
            if !moved {
                return;
            }
        }
        panic!("deliveries never settle");
    }

    fn kill(&mut self, i: usize, client: bool, server: bool) {
        let l = &mut self.links[i];
        l.dead = true;
        l.to_client.clear();
        l.to_server.clear();
        if client {
            self.close_client_end(i);
        }
        if server {
            self.close_server_end(i);
        }
    }

    fn step(&mut self, op: &EpOp) {
        if self.trace {
            eprintln!("[{:?}] op {op:?}", self.now);
        }
        let n_links = self.links.len().max(1);
        match op {
            EpOp::Accept { source } => self.accept(u64::from(source % 16)),
            EpOp::Flood { source, count } => {
                for _ in 0..count % 16 {
                    self.accept(u64::from(source % 16));
                }
            }
            EpOp::First { pick, msg } => self.first(*pick, msg),
            EpOp::PendingClosed { pick } => {
                let pending: Vec<usize> =
                    (0..self.links.len()).filter(|&i| matches!(self.links[i].server, ServerEnd::Pending(_))).collect();
                if let Some(&i) = pending.get(usize::from(*pick) % pending.len().max(1)) {
                    self.close_server_end(i);
                } else if let Some(&p) = self.stale_pending.first() {
                    self.ep.pending_closed(p);
                }
            }
            EpOp::Dial { client } => self.dial(usize::from(*client) % self.clients.len()),
            EpOp::Pump { pick, count } => {
                self.pump(usize::from(*pick) % n_links, usize::from(*count));
            }
            EpOp::PumpAll => self.pump_all(),
            EpOp::Kill { pick, client, server } => {
                if !self.links.is_empty() {
                    self.kill(usize::from(*pick) % n_links, *client, *server);
                }
            }
            EpOp::ClientSend { client, len } => {
                let c = usize::from(*client) % self.clients.len();
                let cl = &mut self.clients[c];
                let p = payload(b'c', cl.sent.len(), *len);
                if cl.s.send(ROOT, &p).is_ok() {
                    cl.sent.push(p);
                }
            }
            EpOp::ServerSend { client, len } => {
                let c = usize::from(*client) % self.clients.len();
                if let Some(h) = self.clients[c].handle {
                    let p = payload(b's', self.clients[c].sent_back.len(), *len);
                    if self.ep.session_mut(h).is_some_and(|s| s.send(ROOT, &p).is_ok()) {
                        self.clients[c].sent_back.push(p);
                    }
                }
            }
            EpOp::Forge { pick, bytes } => {
                let routed: Vec<usize> = (0..self.links.len())
                    .filter(|&i| self.links[i].hostile && matches!(self.links[i].server, ServerEnd::Session(..)))
                    .collect();
                if let Some(&i) = routed.get(usize::from(*pick) % routed.len().max(1)) {
                    if let ServerEnd::Session(h, l) = self.links[i].server {
                        self.tainted.insert(h);
                        let now = self.now;
                        if let Some(s) = self.ep.session_mut(h) {
                            let _ = s.handle_message(now, l, bytes);
                        }
                    }
                }
            }
            EpOp::Free { pick } => {
                if let Some(&h) = self.handles.get(usize::from(*pick) % self.handles.len().max(1)) {
                    self.free(h);
                }
            }
            EpOp::Advance { amount, unit } => {
                let d = match unit {
                    Unit::Micros => Duration::from_micros(u64::from(*amount)),
                    Unit::Millis => Duration::from_millis(u64::from(*amount)),
                    Unit::Secs => Duration::from_secs(u64::from(amount % 256)),
                };
                self.advance(d);
            }
            EpOp::Timers => {
                if let Some(t) = self.next_deadline() {
                    self.fire(t);
                }
            }
        }
        self.drain();
    }
}

/// Run a structured input.
pub fn run(input: &EpInput) {
    let _ = run_sim(input);
}

fn run_sim(input: &EpInput) -> Sim {
    let mut sim = Sim::new(&input.config);
    if sim.trace {
        eprintln!("{:?}", input.config);
    }
    for op in input.ops.iter().take(MAX_OPS) {
        sim.step(op);
    }
    // A last round: deliver everything, fire what is due, deliver again.
    sim.pump_all();
    if let Some(t) = sim.next_deadline() {
        sim.fire(t);
    }
    sim.pump_all();
    sim
}

fn op_kind(op: &EpOp) -> u32 {
    match op {
        EpOp::Accept { .. } => 0,
        EpOp::Flood { .. } => 1,
        EpOp::First { .. } => 2,
        EpOp::PendingClosed { .. } => 3,
        EpOp::Dial { .. } => 4,
        EpOp::Pump { .. } => 5,
        EpOp::PumpAll => 6,
        EpOp::Kill { .. } => 7,
        EpOp::ClientSend { .. } => 8,
        EpOp::ServerSend { .. } => 9,
        EpOp::Forge { .. } => 10,
        EpOp::Free { .. } => 11,
        EpOp::Advance { .. } => 12,
        EpOp::Timers => 13,
    }
}

/// How eventful the run of `data` is, for picking seeds: distinct operations, sessions,
/// resumes, rejections, expiries, evictions and root data delivered.
#[must_use]
pub fn score(data: &[u8]) -> u64 {
    let Ok(input) = EpInput::arbitrary_take_rest(Unstructured::new(data)) else { return 0 };
    let kinds = input.ops.iter().take(MAX_OPS).fold(0u32, |k, op| k | 1 << op_kind(op));
    let sim = run_sim(&input);
    let st = sim.ep.stats();
    let data: usize = sim.clients.iter().map(|c| c.got + c.got_server).sum();
    u64::from(kinds.count_ones()) * 10
        + 5 * st.resumes_routed
        + 2 * (st.sessions_created + st.rejected + st.handshakes_expired + st.evicted + st.bad_hellos)
        + 2 * st.session_handshakes_expired
        + data as u64
}

/// Decode `data` as libfuzzer-sys does for `fuzz_target!(|input: EpInput| ..)`, then run.
pub fn run_bytes(data: &[u8]) {
    if let Ok(input) = EpInput::arbitrary_take_rest(Unstructured::new(data)) {
        run(&input);
    }
}

/// The root-connection messages `inc` delivers, in order: one for `Data`, each of a
/// `DataBatch`'s (small messages sent in a burst share an item), none otherwise.
fn root_payloads(inc: Incoming<'_>) -> Vec<&[u8]> {
    match inc {
        Incoming::Data { conn: ROOT, payload } => vec![payload],
        Incoming::DataBatch { conn: ROOT, batch } => batch.iter().collect(),
        _ => Vec::new(),
    }
}
