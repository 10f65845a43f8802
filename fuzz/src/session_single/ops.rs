//! The operations: how the script bytes decode to what the fuzzer does (one opcode and its
//! operands per [`Driver::step`]), and the peer input it crafts.

use crate::script::Script;
use crate::shared::push_batch_part;
use sotto_proto::session::message::{data_header_len, HelloBody};
use sotto_proto::session::{ConnId, DataBatch, Message as SMsg, Parity, PROTOCOL_VERSION, ROOT};
use sotto_proto::wire::{ClientHello, Frame, ServerHello, HELLO_LEN};
use sotto_proto::{Duration, Instant, ResumeKey, Role};

use super::model::Phase;
use super::Driver;

/// A `DataBatch` body carrying `payload` split into `parts` messages (`(varint(len) bytes)+`).
fn batch_body(payload: &[u8], parts: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(payload.len() + 5 * parts);
    let step = payload.len() / parts;
    for i in 0..parts {
        let end = if i + 1 == parts { payload.len() } else { (i + 1) * step };
        push_batch_part(&mut body, &payload[i * step..end]);
    }
    body
}

impl Driver {
    pub(super) fn link_up(&mut self) {
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
    pub(super) fn peer_last(&self, delta: i8) -> Option<u32> {
        let n = self.out.len() as i64 + i64::from(delta);
        (n > 0).then(|| (n - 1) as u32)
    }

    /// An honest position for a resume: between what was acked and what was sent.
    pub(super) fn resume_position(&self, pick: u8) -> Option<u32> {
        let acked = self.s.conduit().items_acked();
        let tx = (self.out.len() as u64).max(acked);
        let n = acked + u64::from(pick) % (tx - acked + 1);
        n.checked_sub(1).map(|v| v as u32)
    }

    /// The peer's hello for the current link: honest unless the script says otherwise.
    pub(super) fn peer_hello_msg(&mut self, s: &mut Script<'_>) -> [u8; HELLO_LEN] {
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
                // Now and then an early Hello: the next frame is read in the base form.
                let early = key.is_none() && b & 0x40 != 0;
                ClientHello { resume_key: key, last_received: key.and(position), ext, early }.encode()
            }
        }
    }

    /// A DATA frame carrying `item` at the conduit's receive position (or near it).
    pub(super) fn data_frame(&self, item: &[u8], seq_delta: i8, ack_mode: u8) -> Vec<u8> {
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

    pub(super) fn pick_conn(&self, b: u8) -> ConnId {
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

    pub(super) fn meta_len(&self, b: u8) -> usize {
        let max = self.cfg.max_metadata as usize;
        match b & 3 {
            0 => 0,
            1 => max.min(64),
            2 => max + 1,
            _ => usize::from(b >> 2),
        }
    }

    pub(super) fn credit_value(b: u8) -> u32 {
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
    pub(super) fn craft_item(&mut self, s: &mut Script<'_>) -> Vec<u8> {
        let kind = s.u8();
        let a = s.u8();
        let b = s.u8();
        let c = s.u8();
        let mut out = vec![0u8; 16 + 4200];
        let meta_bytes = vec![b'x'; 4200];
        let n = match kind % 14 {
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
            12 => SMsg::Fin { conn: self.pick_conn(a) }.encode(&mut out),
            _ => {
                let len = usize::from(a % 32);
                return s.bytes(len).to_vec();
            }
        };
        out.truncate(n.expect("fits"));
        out
    }

    /// Bring the link and the session handshake up, as an honest peer would.
    pub(super) fn handshake(&mut self) {
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
                    ClientHello { resume_key: key, last_received: key.and(position), ext: true, early: false }.encode()
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

    pub(super) fn step(&mut self, s: &mut Script<'_>) {
        let op = s.u8();
        if self.trace {
            eprintln!(
                "[{:?}] op {} link {:?} phase {:?} conns {:?}",
                self.now,
                op % 21,
                self.link,
                self.phase,
                self.conns.keys().collect::<Vec<_>>()
            );
        }
        match op % 21 {
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
                let _ = self.s.release(conn, n);
            }
            17 => {
                if s.u8() < 16 {
                    self.close_called = true;
                    self.s.close(self.now, 0x100, "fuzz close");
                }
            }
            18 => self.handshake(),
            20 => {
                let conn = self.pick_conn(s.u8());
                self.cmd_finish(conn);
            }
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
