//! The session-and-endpoint simulation: several initiator
//! [`Session`](sotto_proto::session::Session)s (clients, each with a
//! dialer and an application model) against one acceptor [`Endpoint`](sotto_proto::endpoint::Endpoint), through simulated
//! byte-stream links with the real link framing and the same faults as the conduit harness
//! (kill at any byte, half-open, stalls, failed, dropped and delayed dials), a virtual clock
//! and one seeded PRNG. Raw test connections (silent floods, hand-written hellos) can be
//! opened next to the clients.
//!
//! The harness is the driver the contracts ask for. For the endpoint: `accept_link` for every
//! new link, `route` for its first message, then each link message goes to the session it was
//! routed to; `HandshakeExpired` closes the link, `Evicted` and `Ended` sessions are drained
//! and freed, `SessionReady` marks a new session announced (checked: once, only when ready),
//! `SessionHandshakeExpired` closes the links of a session the endpoint already freed. For every session: after each input or command drain `poll_transmit` then
//! `poll_event` (closing the link on `DropLink`), then time jumps to the earliest deadline.
//! Invariants are checked after every input ([`Net::check_invariants`]); every failure prints
//! the seed and how to reproduce it.
//!
//! ```
//! use sotto_tests::net::{Net, NetConfig, Who};
//! use sotto_tests::secs;
//!
//! let mut net = Net::connected(NetConfig::small(1));
//! let conn = net.open(0).expect("open");
//! assert!(net.run_until(secs(1), |n| n.app(Who::Client(0)).is_some_and(|a| a.is_open(conn))));
//! net.send(Who::Client(0), conn, 5);
//! net.kill(0); // the link dies; the client redials and resumes
//! net.send(Who::Server(0), conn, 5);
//! assert!(net.run_until(secs(10), Net::quiet));
//! assert_eq!(net.app(Who::Server(0)).and_then(|a| a.conn(conn)).map(|c| c.received), Some(5));
//! ```

pub mod app;
pub mod chaos;
mod check;
pub mod client;
mod commands;
pub mod config;
mod drive;
mod faults;
pub mod forge;
mod link;
mod raw;
mod run;

use sotto_proto::endpoint::{Hosted, SessionHandle};
use sotto_proto::wire::LEN_PREFIX;
use sotto_proto::Instant;

pub use app::{App, AppPolicy, ConnModel, ConnPhase, SendOutcome};
pub use client::{Client, ClientCounters};
pub use config::NetConfig;
pub use faults::Writer;
pub use raw::RawLink;

use crate::rng::SimRng;
use crate::sim::Tap;
use link::NetLink;

/// An application end: a client's session, or the endpoint session client `usize` was last
/// routed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// Client `usize`'s initiator session.
    Client(usize),
    /// The endpoint session client `usize` was last routed to.
    Server(usize),
}

/// The application state of one endpoint session slot.
#[derive(Debug)]
pub struct ServerSlot {
    /// The session's handle while it is live.
    pub handle: Option<SessionHandle>,
    /// The client it was created for (`None`: a raw test connection).
    pub client: Option<usize>,
    /// The application on top.
    pub app: App,
    /// How the latest session of this slot ended (kept after it was freed).
    pub last_end: Option<sotto_proto::SessionEnd>,
    /// Its session-layer failure, if any (kept after it was freed).
    pub last_failure: Option<sotto_proto::session::SessionFailure>,
    /// Its counters when it was freed.
    pub last_stats: Option<sotto_proto::session::SessionStats>,
    /// Whether the endpoint reported the live session ready (`SessionReady`).
    pub announced: bool,
}

/// Counters about the endpoint side, kept by the harness.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerCounters {
    /// Sessions freed after they ended.
    pub freed: u64,
    /// `HandshakeExpired` events.
    pub handshakes_expired: u64,
    /// `Evicted` events.
    pub evicted: u64,
    /// `SessionReady` events.
    pub sessions_ready: u64,
    /// `SessionHandshakeExpired` events (each session was freed by the endpoint).
    pub session_handshakes_expired: u64,
    /// REJECTED replies written by the endpoint (from `route`).
    pub rejects_written: u64,
    /// Links closed unread or without a reply (refused, bad hello).
    pub refused: u64,
    /// Session `handle_message` calls that returned an error.
    pub input_errors: u64,
    /// Link framing errors the endpoint's reader hit.
    pub framing_errors: u64,
}

/// Counters about the simulation itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Inputs fed to the state machines.
    pub inputs: u64,
    /// Links opened.
    pub links_opened: u64,
    /// Links reset by a fault.
    pub resets: u64,
    /// Most bytes ever in flight in one pipe.
    pub max_pipe_bytes: usize,
}

/// A deterministic simulation of clients against one endpoint.
pub struct Net {
    pub(crate) cfg: NetConfig,
    pub(crate) now: Instant,
    pub(crate) rng: SimRng,
    pub(crate) endpoint: Hosted,
    pub(crate) servers: Vec<ServerSlot>,
    pub(crate) clients: Vec<Client>,
    pub(crate) links: Vec<NetLink>,
    pub(crate) next_serial: u64,
    pub(crate) chunk: Vec<u8>,
    pub(crate) tx: Vec<u8>,
    pub(crate) frame_buf: Vec<u8>,
    /// Taps on frames written by clients (`[0]`) and by the endpoint's sessions (`[1]`).
    pub(crate) taps: [Option<Tap>; 2],
    /// What the endpoint side did.
    pub server_counters: ServerCounters,
    /// Counters about the run.
    pub stats: NetStats,
    /// Check, per connection, that the sender's bytes sent plus credit held never exceed what
    /// the receiver could have granted (default true; a test that forges windows or grants
    /// turns it off: the peer then lies about its window on purpose).
    pub cross_credit_check: bool,
    /// Clients and endpoint slots an input touched since the last check (only those are
    /// re-checked, with a full sweep every few checks).
    pub(crate) dirty_clients: Vec<bool>,
    pub(crate) dirty_servers: Vec<bool>,
    pub(crate) checks: u64,
    last_instant: Instant,
    iterations_here: u64,
}

impl core::fmt::Debug for Net {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Net").field("now", &self.now).field("seed", &self.cfg.seed).finish_non_exhaustive()
    }
}

impl Net {
    /// Build the simulation; allocates everything it will ever use. Clients dial at once.
    #[must_use]
    pub fn new(cfg: NetConfig) -> Self {
        let mut rng = SimRng::new(cfg.seed);
        let payload = (cfg.payload_min, cfg.payload_max);
        let clients =
            (0..cfg.clients).map(|i| Client::new(i, cfg.client, cfg.dial, payload, rng.fork(100 + i as u64))).collect();
        let e = cfg.endpoint;
        // Twice `max_sessions`: an evicted session keeps its slot number until it is freed.
        let servers = (0..2 * e.max_sessions)
            .map(|i| ServerSlot {
                handle: None,
                client: None,
                app: App::new(
                    false,
                    e.session.max_connections,
                    e.session.initial_credit,
                    payload,
                    rng.fork(10_000 + u64::from(i)),
                ),
                last_end: None,
                last_failure: None,
                last_stats: None,
                announced: false,
            })
            .collect();
        let max_server = e.session.conduit.max_frame_len;
        let max_client = cfg.client.conduit.max_frame_len;
        let links = (0..cfg.link_slots)
            .map(|_| NetLink::new(cfg.pipe_bytes(), cfg.pipe_frames(), max_server, max_client))
            .collect();
        let max_frame = cfg.max_frame_len() as usize;
        Self {
            endpoint: Hosted::new(e, b"server").expect("valid endpoint config"),
            servers,
            clients,
            links,
            next_serial: 1,
            chunk: vec![0; cfg.pipe_bytes()],
            tx: vec![0; LEN_PREFIX + max_frame],
            frame_buf: Vec::with_capacity(LEN_PREFIX + max_frame),
            taps: [None, None],
            server_counters: ServerCounters::default(),
            stats: NetStats::default(),
            cross_credit_check: true,
            dirty_clients: vec![true; cfg.clients],
            dirty_servers: vec![true; 2 * e.max_sessions as usize],
            checks: 0,
            now: Instant::ZERO,
            rng: rng.fork(1),
            cfg,
            last_instant: Instant::ZERO,
            iterations_here: 0,
        }
    }

    /// A simulation run until every client's session is ready on both ends (panics if not
    /// within 60 s).
    #[must_use]
    pub fn connected(cfg: NetConfig) -> Self {
        let mut net = Self::new(cfg);
        let ok = net.run_until(sotto_proto::Duration::from_secs(60), Self::all_ready);
        if !ok {
            net.fail("the first handshakes did not finish");
        }
        net
    }

    // ---- getters ----

    /// The virtual clock.
    #[must_use]
    pub fn now(&self) -> Instant {
        self.now
    }
    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }
    /// The endpoint.
    #[must_use]
    pub fn endpoint(&self) -> &Hosted {
        &self.endpoint
    }
    /// Client `i`.
    #[must_use]
    pub fn client(&self, i: usize) -> &Client {
        &self.clients[i]
    }
    /// Client `i`, mutably (its dialer, its application's policy). After a command on its
    /// session call [`drain_client`](Self::drain_client), or use [`act`](Self::act).
    pub fn client_mut(&mut self, i: usize) -> &mut Client {
        &mut self.clients[i]
    }
    /// Grow every replay ring (the endpoint's session slots, the clients' sessions) to its
    /// caps now, as a driver that wants no allocation after construction does (see
    /// `Conduit::reserve_buffers`): the allocation tests measure from the start this way.
    pub fn reserve_buffers(&mut self) {
        self.endpoint.reserve_buffers();
        for c in &mut self.clients {
            c.session.reserve_buffers();
        }
    }
    /// How many clients there are.
    #[must_use]
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }
    /// The endpoint session slots' application state.
    #[must_use]
    pub fn servers(&self) -> &[ServerSlot] {
        &self.servers
    }
    /// The harness's random source.
    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    /// The handle of the endpoint session client `i` was last routed to, if it is live.
    #[must_use]
    pub fn server_handle(&self, i: usize) -> Option<SessionHandle> {
        self.clients[i].server.filter(|h| self.endpoint.session(*h).is_some())
    }

    /// The slot of the endpoint session client `i` was last routed to, live or freed (what
    /// it recorded survives until the slot is reused).
    #[must_use]
    pub fn server_slot(&self, i: usize) -> Option<&ServerSlot> {
        self.clients[i].server.map(|h| &self.servers[h.index as usize])
    }

    /// The session of `who`, if live.
    #[must_use]
    pub fn session(&self, who: Who) -> Option<&sotto_proto::session::Session> {
        match who {
            Who::Client(i) => Some(&self.clients[i].session),
            Who::Server(i) => self.server_handle(i).and_then(|h| self.endpoint.session(h)),
        }
    }

    /// The application of `who`, if its session is live.
    #[must_use]
    pub fn app(&self, who: Who) -> Option<&App> {
        match who {
            Who::Client(i) => Some(&self.clients[i].app),
            Who::Server(i) => self.server_handle(i).map(|h| &self.servers[h.index as usize].app),
        }
    }

    /// Whether every client's session is ready on both ends.
    #[must_use]
    pub fn all_ready(&self) -> bool {
        (0..self.clients.len())
            .all(|i| self.clients[i].ready() && self.app(Who::Server(i)).is_some_and(|a| a.ready && a.ended.is_none()))
    }

    /// Whether every live client/endpoint pair has delivered everything both ways on every
    /// connection both ends hold open, and no Open awaits an answer.
    #[must_use]
    pub fn quiet(&self) -> bool {
        (0..self.clients.len()).all(|i| self.pair_quiet(i))
    }

    /// [`quiet`](Self::quiet) for client `i` and its endpoint session.
    #[must_use]
    pub fn pair_quiet(&self, i: usize) -> bool {
        let c = &self.clients[i];
        if c.session.is_ended() {
            return true;
        }
        let Some(s) = self.app(Who::Server(i)) else { return false };
        let a = &c.app;
        if !a.ready || !s.ready {
            return false;
        }
        let delivered = |x: &App, y: &App| {
            x.conns().iter().all(|cx| match y.conn(cx.id) {
                Some(cy) => cx.phase == ConnPhase::Open && cy.phase == ConnPhase::Open && cx.sent == cy.received,
                None => false,
            })
        };
        delivered(a, s) && delivered(s, a) && a.conns().len() == s.conns().len()
    }
}
