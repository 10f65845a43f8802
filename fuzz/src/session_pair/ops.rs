//! The fuzz input (the run's configuration and its operations, decoded by `arbitrary`) and
//! how each operation is applied to the simulation.

use crate::pair::{timer_profile, Notify, Unit};
use arbitrary::Arbitrary;
use sotto_proto::session::{CommandError, ConnId, SessionConfig, ROOT};
use sotto_proto::{ConduitConfig, Duration};

use super::model::payload;
use super::Sim;

/// Most operations per input.
pub(super) const MAX_OPS: usize = 300;

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
    pub(super) fn session(&self, acceptor: bool) -> SessionConfig {
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

    pub(super) fn clients(&self) -> usize {
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
    /// An application finishes sending on a connection (half-close).
    Finish {
        /// Pairing.
        client: u8,
        /// Acceptor side.
        server: bool,
        /// Which connection.
        conn: u8,
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

pub(super) fn op_kind(op: &SpOp) -> u32 {
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
        SpOp::Finish { .. } => 10,
    }
}

impl Sim {
    pub(super) fn pick_conn(&mut self, p: usize, server: bool, pick: u8, root: bool) -> Option<ConnId> {
        let app = self.app(p, server);
        let mut conns: Vec<ConnId> = app.open.iter().copied().collect();
        if root {
            conns.push(ROOT);
        }
        conns.get(usize::from(pick) % conns.len().max(1)).copied()
    }

    pub(super) fn send(&mut self, p: usize, server: bool, conn: u8, len: u8) {
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

    pub(super) fn step(&mut self, op: SpOp) {
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
            SpOp::Finish { client, server, conn } => {
                let p = usize::from(client) % np;
                if let Some(c) = self.pick_conn(p, server, conn, false) {
                    let r = self.session(p, server).map(|s| s.finish(c));
                    if self.trace {
                        eprintln!("  {p} {} finish {c}: {r:?}", if server { 'S' } else { 'C' });
                    }
                    if let Some(Ok(())) = r {
                        let app = self.app(p, server);
                        app.finished_by_me.insert(c);
                        app.blocked.remove(&c);
                        if app.peer_finished.contains(&c) {
                            app.open.remove(&c);
                        }
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
}
