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
//!
//! Layout: this file holds the driver (the [`Sim`] state, its setup and the loop in
//! [`run`]); `ops` is the fuzz input (configuration and operations) and how each operation is
//! applied; `model` is what each application expects (what was sent, delivered, opened);
//! `links` simulates the faulty links and time; `checks` drains every end after each step,
//! checks the invariants, and runs the final heal-and-settle checks.

mod checks;
mod links;
mod model;
mod ops;

use crate::shared::Pipe;
use arbitrary::{Arbitrary, Unstructured};
use model::App;
use ops::{op_kind, MAX_OPS};
pub use ops::{SpConfig, SpInput, SpOp};
use sotto_proto::endpoint::{EndpointConfig, Hosted, PendingLink, SessionHandle};
use sotto_proto::session::{Session, SessionConfig};
use sotto_proto::{Instant, LinkId, Role};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pair::Notify;

    /// Half-close through the pair simulation: both sides open connections, send, finish
    /// one direction, keep sending the other way across link kills (partial frames, resumes),
    /// then finish the other; the checks (I1 and the Fin rules in `on_incoming`) hold and
    /// every Fin is delivered after all its data.
    #[test]
    fn half_close_across_kills_keeps_every_check() {
        for endpoint in [false, true] {
            let config = SpConfig {
                endpoint,
                clients: 0,
                frame_len: 60,
                frames: 20,
                bytes: 200,
                credit: 4,
                timers: 0,
                conns: 3,
                ext: 0,
            };
            let send = |server, conn, len| SpOp::Send { client: 0, server, conn, len };
            let kill = SpOp::Kill { client: 0, at_to_server: 37, at_to_client: 11, notify: Notify::Both };
            let mut ops = vec![SpOp::Reconnect { client: 0 }, SpOp::DeliverAll];
            ops.extend([SpOp::Open { client: 0, server: false }, SpOp::Open { client: 0, server: true }]);
            ops.push(SpOp::DeliverAll);
            for i in 0..4 {
                ops.extend([send(false, 0, 20 + i), send(true, 0, 30 + i), send(false, 1, 5), send(true, 1, 7)]);
            }
            ops.extend([SpOp::Finish { client: 0, server: false, conn: 0 }, send(false, 0, 9)]);
            ops.extend([send(true, 0, 40), kill, SpOp::Reconnect { client: 0 }, send(true, 0, 41)]);
            ops.extend([SpOp::DeliverAll, SpOp::Finish { client: 0, server: true, conn: 1 }, send(true, 1, 3)]);
            ops.extend([send(false, 1, 12), kill, SpOp::Reconnect { client: 0 }, SpOp::DeliverAll]);
            ops.extend([
                SpOp::Finish { client: 0, server: true, conn: 0 },
                SpOp::Finish { client: 0, server: false, conn: 0 },
            ]);
            ops.push(SpOp::DeliverAll);
            let sim = run_sim(&SpInput { config, ops });
            let pr = &sim.pairs[0];
            let fins = pr.capp.peer_finished.len() + pr.sapp.peer_finished.len();
            assert!(fins >= 3, "endpoint {endpoint}: only {fins} Fins delivered: {:?} {:?}", pr.capp, pr.sapp);
        }
    }
}
