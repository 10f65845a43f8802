//! `conduit_initiator` and `conduit_acceptor`: one conduit driven from a byte script, the way
//! a driver that follows the contract drives it (drain every output after every input). The
//! script feeds it hellos, frames (crafted from a few bytes or raw), time, timers, link
//! up/down, sends and closes; after every operation the outputs are drained and checked.
//!
//! Script: four config bytes (see [`config_from`]), then operations until the input ends,
//! each an opcode byte (`% 16`) and its operands (see [`Driver::step`]).

use crate::script::Script;
use crate::shared::SATURATION_ZONE;
use sotto_proto::conduit::{ConduitStats, InputError, LinkDropReason, SendError};
use sotto_proto::wire::{ClientHello, Frame, ServerHello, HELLO_LEN};
use sotto_proto::{Conduit, ConduitConfig, Duration, Event, Instant, LinkId, ResumeKey, Role, SessionEnd};

/// Durations a config may use, in nanoseconds (zero included on purpose).
const DURATIONS: [u64; 8] =
    [0, 1, 1_000_000, 25_000_000, 1_000_000_000, 10_000_000_000, 20_000_000_000, 120_000_000_000];

fn dur(i: u8) -> Duration {
    Duration::from_nanos(DURATIONS[usize::from(i & 7)])
}

/// A valid conduit configuration from four script bytes: small frames and rings so that
/// limits are reached, every timer drawn from [`DURATIONS`].
pub fn config_from(s: &mut Script<'_>) -> ConduitConfig {
    let f = s.u8();
    let t1 = s.u8();
    let t2 = s.u8();
    let t3 = s.u8();
    let max_frame_len = [64u32, 100, 256, 1024][usize::from(f & 3)];
    let max_item = max_frame_len - sotto_proto::wire::MAX_DATA_HEADER_LEN as u32;
    let cfg = {
        let mut patched = ConduitConfig::default();
        patched.max_frame_len = max_frame_len;
        patched.replay_frames = [1u32, 2, 5, 64][usize::from((f >> 2) & 3)];
        patched.replay_bytes = [max_item, max_item + 7, 2 * max_frame_len, 8192][usize::from((f >> 4) & 3)];
        patched.ext = f & 0x40 == 0;
        patched.ack_delay = dur(t1);
        patched.ping_interval = dur(t1 >> 3);
        patched.ack_every = [1u32, 2, 32, 1000][usize::from(t1 >> 6)];
        patched.pong_timeout = dur(t2);
        patched.handshake_timeout = dur(t2 >> 3);
        patched.duplicate_window = [0u32, 1, 16, 1 << 24][usize::from(t2 >> 6)];
        patched.recovery_timeout = dur(t3);
        patched.ack_starved_timeout = dur(t3 >> 1);
        patched.min_ping_interval = dur(t3 >> 3);
        patched.max_ping_strikes = u32::from(t3 >> 6);
        patched
    };
    assert_eq!(cfg.validate(), Ok(()), "fuzz config must be valid: {cfg:?}");
    cfg
}

/// Everything a driver can observe of a conduit without calling an output that consumes.
#[derive(Debug, PartialEq, Eq)]
pub struct Fingerprint {
    timeout: Option<Instant>,
    stats: ConduitStats,
    counts: (u64, u64, u64),
    established: bool,
    ext: bool,
    ended: Option<SessionEnd>,
    has_transmit: bool,
    link: Option<LinkId>,
    key: Option<ResumeKey>,
}

/// Snapshot the observable state of `c`.
#[must_use]
pub fn fingerprint(c: &Conduit) -> Fingerprint {
    Fingerprint {
        timeout: c.poll_timeout(),
        stats: c.stats(),
        counts: (c.items_sent(), c.items_acked(), c.items_received()),
        established: c.is_established(),
        ext: c.ext_in_force(),
        ended: c.ended(),
        has_transmit: c.has_transmit(),
        link: c.current_link(),
        key: c.resume_key(),
    }
}

/// `last_received` wire value for a receive count `count`, shifted by `delta`.
fn rel_last(count: u64, delta: i8) -> u32 {
    (count as i64 - 1 + i64::from(delta)) as u32
}

/// A contract-following driver around one conduit, with the bookkeeping for the checks.
struct Driver {
    c: Conduit,
    role: Role,
    now: Instant,
    /// The link the driver holds (from `link_up`), until it calls `link_down`.
    link: Option<LinkId>,
    /// Links the driver has closed; nothing may be transmitted to them again.
    closed: Vec<LinkId>,
    /// Every item accepted by `send`, by seq.
    sent_items: Vec<Vec<u8>>,
    last_counts: (u64, u64, u64),
    writable_pending: bool,
    ended_seen: Option<SessionEnd>,
    attached_before: bool,
    close_called: bool,
    /// Seq of the last data frame transmitted on the current link.
    tx_prev: Option<u64>,
    /// The link we last transmitted on, and the receive position the peer has heard from us
    /// on it (our hello's, then each ack we sent): data frames carry an ack only past it.
    told: Option<(LinkId, u64)>,
    /// Nonce of the last PING the conduit transmitted.
    last_ping: u64,
    /// Nonces of every PING fed to the conduit.
    pings_fed: Vec<u64>,
    /// Keys issued (acceptor) so resumes can present old ones.
    keys: Vec<ResumeKey>,
    /// The input that is expected to make the conduit drop the link or end the session.
    expect: Option<InputError>,
    /// Every timer duration in the config is non-zero.
    zero_free: bool,
    /// Print every step (set `SOTTO_FUZZ_TRACE`).
    trace: bool,
    buf: Vec<u8>,
    /// Acceptor: the ClientHello accepted on this link announced an early frame, not fed
    /// yet: the next frame is read in the base form.
    early_next: bool,
}

impl Driver {
    fn new(role: Role, cfg: ConduitConfig) -> Self {
        let c = Conduit::new(role, cfg).expect("valid config");
        let buf = vec![0u8; c.max_transmit_len()];
        Self {
            c,
            role,
            now: Instant::ZERO,
            link: None,
            closed: Vec::new(),
            sent_items: Vec::new(),
            last_counts: (0, 0, 0),
            writable_pending: false,
            ended_seen: None,
            attached_before: false,
            close_called: false,
            tx_prev: None,
            told: None,
            last_ping: 0,
            pings_fed: Vec::new(),
            keys: Vec::new(),
            expect: None,
            zero_free: Self::zero_free_config(&cfg),
            trace: std::env::var_os("SOTTO_FUZZ_TRACE").is_some(),
            buf,
            early_next: false,
        }
    }

    fn zero_free_config(cfg: &ConduitConfig) -> bool {
        [cfg.ack_delay, cfg.ping_interval, cfg.pong_timeout, cfg.handshake_timeout, cfg.recovery_timeout]
            .iter()
            .all(|d| *d > Duration::ZERO)
    }

    fn strict_time(&self) -> bool {
        self.now.as_nanos() < SATURATION_ZONE
    }

    /// Drain outputs as the contract says (transmits, then events, repeated while either
    /// produces something), checking each.
    fn drain(&mut self) {
        for _ in 0..64 {
            let mut moved = false;
            let mut n = 0usize;
            loop {
                let ext = self.c.ext_in_force();
                let established = self.c.is_established();
                let current = self.c.current_link();
                let Some(t) = self.c.poll_transmit(self.now, &mut self.buf) else { break };
                moved = true;
                n += 1;
                assert!(n <= self.c.config().replay_frames as usize + 16, "poll_transmit does not run dry");
                assert_eq!(Some(t.link), current, "transmit for a link that is not current");
                assert!(!self.closed.contains(&t.link), "transmit for a closed link");
                assert!(t.len <= self.c.max_transmit_len());
                let bytes = self.buf[..t.len].to_vec();
                if self.trace {
                    eprintln!("  -> {:02x?}", &bytes[..bytes.len().min(40)]);
                }
                self.check_transmitted(&bytes, t.link, established, ext);
            }
            assert!(!self.c.has_transmit(), "has_transmit after poll_transmit ran dry");
            while let Some(e) = self.c.poll_event() {
                moved = true;
                self.check_event(e);
            }
            if !moved {
                self.check_invariants();
                return;
            }
        }
        panic!("outputs never run dry");
    }

    fn check_transmitted(&mut self, bytes: &[u8], link: LinkId, established: bool, ext: bool) {
        if bytes.len() == HELLO_LEN {
            match self.role {
                Role::Initiator if ClientHello::decode(bytes).is_ok() => return,
                Role::Acceptor if ServerHello::decode(bytes).is_ok() => return,
                _ => {}
            }
        }
        if !established {
            let f = Frame::decode(bytes, true);
            assert!(matches!(f, Ok(Frame::Goodbye { .. })), "final frame is not a GOODBYE: {f:?}");
            assert!(self.close_called || self.c.is_ended());
            return;
        }
        let frame = Frame::decode(bytes, ext).expect("the conduit emits frames that decode");
        let received = self.c.items_received();
        let our_last = received.checked_sub(1).map(|v| v as u32);
        // On a new link the position our hello carried is not tracked here (frames may have
        // been fed after the attach): its first frame may carry the ack or not.
        let told = match self.told {
            Some((l, told)) if l == link => Some(told),
            _ => None,
        };
        match frame {
            Frame::Data { seq, ack, item } => {
                let acked = self.c.items_acked();
                let expected = self.tx_prev.map_or(acked, |p| (p + 1).max(acked));
                assert_eq!(u64::from(seq), expected as u32 as u64, "data frame out of order");
                assert!(expected < self.c.items_sent(), "data frame for an unsent seq");
                assert_eq!(item, self.sent_items[expected as usize].as_slice(), "replayed item differs");
                match told {
                    // The base form (vox) carries the ack on every data frame.
                    _ if !ext => assert_eq!(ack, our_last, "base-form data frame without the latest ack"),
                    Some(told) => {
                        let moved = received > told;
                        assert_eq!(ack, our_last.filter(|_| moved), "data frame carries the ack exactly when it moved");
                    }
                    None => assert!(ack.is_none() || ack == our_last, "data frame carries a stale ack"),
                }
                self.tx_prev = Some(expected);
                self.told = Some((link, received));
            }
            Frame::Ack(a) => {
                assert_eq!(Some(a), our_last, "standalone ACK is not the latest");
                self.told = Some((link, received));
            }
            Frame::Ping(n) => self.last_ping = n,
            Frame::Pong(n) => assert!(self.pings_fed.contains(&n), "PONG for a nonce never pinged"),
            Frame::Goodbye { .. } => assert!(self.close_called || self.c.is_ended()),
        }
    }

    fn check_event(&mut self, e: Event) {
        if self.trace {
            eprintln!("  event {e:?}");
        }
        match e {
            Event::Attached { link, resumed, ext, replaying } => {
                assert_eq!(Some(link), self.c.current_link());
                match self.role {
                    Role::Initiator => assert_eq!(resumed, self.attached_before, "resumed flag"),
                    // An acceptor whose peer never confirmed its ServerHello takes the peer's
                    // fresh retry as a fresh start of the same session (resumed: false).
                    Role::Acceptor => assert!(!resumed || self.attached_before, "resumed before any attach"),
                }
                if self.c.is_established() {
                    assert_eq!(ext, self.c.ext_in_force());
                }
                assert_eq!(replaying, self.c.items_sent() - self.c.items_acked());
                self.attached_before = true;
            }
            Event::DropLink { link, reason } => {
                if Some(link) == self.link {
                    assert!(!self.c.has_transmit(), "DropLink before the link's last frame");
                    if let Some(InputError::LinkDropped(r)) = self.expect {
                        if r == reason {
                            self.expect = None;
                        }
                    }
                    self.link = None;
                    self.closed.push(link);
                    self.tx_prev = None;
                    self.c.link_down(self.now, link);
                } else {
                    assert!(
                        self.closed.contains(&link) && reason == LinkDropReason::Superseded,
                        "DropLink {reason:?} for a link that is not current: {link:?}"
                    );
                }
            }
            Event::Writable => {
                assert!(self.writable_pending, "Writable without a WouldBlock");
                self.writable_pending = false;
            }
            Event::Ended(r) => {
                assert!(self.ended_seen.is_none(), "Ended twice");
                assert_eq!(self.c.ended(), Some(r));
                if self.expect == Some(InputError::SessionEnded(r)) {
                    self.expect = None;
                }
                if matches!(r, SessionEnd::LocalClose { .. }) {
                    assert!(self.close_called);
                }
                self.ended_seen = Some(r);
            }
        }
    }

    fn check_invariants(&mut self) {
        let c = &self.c;
        let counts = (c.items_sent(), c.items_acked(), c.items_received());
        assert!(counts.0 >= self.last_counts.0 && counts.1 >= self.last_counts.1 && counts.2 >= self.last_counts.2);
        assert!(counts.1 <= counts.0, "acked beyond sent");
        assert_eq!(counts.0, self.sent_items.len() as u64);
        self.last_counts = counts;
        let s = c.stats();
        assert_eq!(s.replay_frames, counts.0 - counts.1, "ring holds exactly the unacked frames");
        let bytes: usize = self.sent_items[counts.1 as usize..].iter().map(Vec::len).sum();
        assert_eq!(s.replay_bytes, bytes as u64);
        assert!(s.replay_bytes <= u64::from(c.config().replay_bytes));
        assert!(s.replay_frames <= u64::from(c.config().replay_frames));
        assert_eq!(s.events_overflowed, 0);
        assert_eq!(c.current_link(), self.link, "driver and conduit disagree on the link");
        assert_eq!(c.ended(), self.ended_seen, "ended without an Ended event");
        assert_eq!(self.expect, None, "an input error without the event it promised");
        if c.is_ended() {
            assert!(!c.can_send(0));
        }
    }

    /// Feed `msg` on `link`; `crafted` is the item of a crafted data frame and its seq delta.
    fn feed(&mut self, link: Option<LinkId>, msg: &[u8], crafted: Option<(&[u8], i64)>) {
        let Some(link) = link else { return };
        if let Ok(Frame::Ping(n)) = Frame::decode(msg, true) {
            self.pings_fed.push(n);
        }
        let before = fingerprint(&self.c);
        let received = self.c.items_received();
        let was_established = self.c.is_established() && self.link == Some(link);
        let early_hello = ClientHello::decode(msg).is_ok_and(|h| h.early);
        let r = self.c.handle_message(self.now, link, msg);
        if self.role == Role::Acceptor && self.link == Some(link) {
            // Any message on the established link takes the early frame's place; an accepted
            // early hello announces it.
            self.early_next = if was_established { false } else { early_hello && self.c.is_established() };
        }
        if self.trace {
            eprintln!("  <- {:02x?} on {link:?}: {r:?}", &msg[..msg.len().min(40)]);
        }
        match r {
            Ok(Some(item)) => {
                assert_eq!(self.c.items_received(), received + 1);
                if let Some((expected, delta)) = crafted {
                    assert_eq!(delta, 0, "delivered a frame out of sequence");
                    assert_eq!(item, expected);
                }
            }
            Ok(None) => assert_eq!(self.c.items_received(), received),
            Err(e) => {
                assert_eq!(self.c.items_received(), received);
                match e {
                    InputError::StaleLink => {
                        assert_eq!(before, fingerprint(&self.c), "a stale input changed the conduit");
                    }
                    InputError::LinkDropped(_) | InputError::SessionEnded(_) => self.expect = Some(e),
                    InputError::AlreadyEnded => panic!("handle_message never says AlreadyEnded"),
                    e => panic!("handle_message: unexpected {e}"),
                }
            }
        }
    }

    fn link_up(&mut self, k: u8) {
        self.early_next = false;
        let key = ResumeKey([k; 16]);
        if self.role == Role::Acceptor && k != 0 {
            self.keys.push(key);
        }
        if let Some(old) = self.link.take() {
            self.closed.push(old);
        }
        self.tx_prev = None;
        let id = self.c.link_up(self.now, if self.role == Role::Acceptor { key } else { ResumeKey::ZERO });
        self.link = Some(id);
    }

    fn client_hello(&mut self, s: &mut Script<'_>) -> ClientHello {
        let b = s.u8();
        let k = s.u8();
        let d = s.i8();
        let resume_key = match b & 3 {
            0 => None,
            1 => self.c.resume_key(),
            2 => self.keys.get(self.keys.len().saturating_sub(2)).copied(),
            _ => Some(ResumeKey([k; 16])),
        };
        ClientHello {
            resume_key,
            last_received: (b & 8 != 0).then(|| rel_last(self.c.items_sent(), d)),
            ext: b & 4 != 0,
            early: resume_key.is_none() && b & 0x10 != 0,
        }
    }

    fn step(&mut self, s: &mut Script<'_>) {
        let op = s.u8();
        if self.trace {
            eprintln!("[{:?}] op {} link {:?} counts {:?}", self.now, op % 16, self.link, fingerprint(&self.c).counts);
        }
        match op % 16 {
            0 => {
                let k = s.u8();
                self.link_up(k);
            }
            1 => {
                let b = s.u8();
                if b & 1 == 0 {
                    if let Some(l) = self.link.take() {
                        self.closed.push(l);
                        self.tx_prev = None;
                        self.c.link_down(self.now, l);
                    }
                } else {
                    // A stale id: ignored without effect.
                    let before = fingerprint(&self.c);
                    let stale = LinkId(u64::from(b >> 1));
                    if Some(stale) != self.link {
                        self.c.link_down(self.now, stale);
                        assert_eq!(before, fingerprint(&self.c), "link_down of a stale id changed the conduit");
                    }
                }
            }
            2 => {
                let n = usize::from(s.u8());
                let msg = s.bytes(n).to_vec();
                let stale = op & 0x80 != 0;
                let link = if stale { self.closed.last().copied() } else { self.link };
                self.feed(link, &msg, None);
            }
            3 => {
                let msg = match self.role {
                    Role::Initiator => {
                        let b = s.u8();
                        let k = s.u8();
                        let d = s.i8();
                        let h = ServerHello {
                            rejected: b & 1 != 0,
                            resume_key: ResumeKey([k; 16]),
                            last_received: (b & 2 != 0).then(|| rel_last(self.c.items_sent(), d)),
                            ext: b & 4 != 0,
                        };
                        h.encode()
                    }
                    Role::Acceptor => self.client_hello(s).encode(),
                };
                self.feed(self.link, &msg, None);
            }
            4 => {
                let b = s.u8();
                let d = i64::from(s.i8() % 4);
                let da = s.i8();
                let len = usize::from(s.u8() % 64);
                let item = s.bytes(len).to_vec();
                let ext = (self.c.ext_in_force() && !self.early_next) ^ (b & 2 != 0);
                let seq = (self.c.items_received() as i64 + d) as u32;
                let ack = (b & 1 != 0).then(|| rel_last(self.c.items_sent(), da % 3));
                let frame = Frame::Data { seq, ack, item: &item };
                let mut msg = vec![0u8; frame.encoded_len(ext)];
                let n = frame.encode(ext, &mut msg).expect("sized");
                msg.truncate(n);
                let crafted = (b & 2 == 0).then_some((item.as_slice(), d));
                self.feed(self.link, &msg, crafted);
            }
            5 => {
                let d = s.i8();
                let mut msg = [0u8; 8];
                let n = Frame::Ack(rel_last(self.c.items_sent(), d % 3)).encode(true, &mut msg).expect("fits");
                self.feed(self.link, &msg[..n], None);
            }
            6 => {
                let nonce = u64::from(s.u8());
                let mut msg = [0u8; 9];
                let n = Frame::Ping(nonce).encode(true, &mut msg).expect("fits");
                self.feed(self.link, &msg[..n], None);
            }
            7 => {
                let b = s.u8();
                let nonce = if b & 1 != 0 { self.last_ping } else { u64::from(b) };
                let mut msg = [0u8; 9];
                let n = Frame::Pong(nonce).encode(true, &mut msg).expect("fits");
                self.feed(self.link, &msg[..n], None);
            }
            8 => {
                let code = u32::from(s.u8());
                let len = usize::from(s.u8() % 32);
                let reason = String::from_utf8_lossy(s.bytes(len)).into_owned();
                let frame = Frame::Goodbye { code, reason: &reason };
                let mut msg = vec![0u8; frame.encoded_len(true)];
                let n = frame.encode(true, &mut msg).expect("sized");
                self.feed(self.link, &msg[..n], None);
            }
            9 => {
                let d = u64::from(s.u8());
                let shift = s.u8();
                let step = if shift & 0xc0 == 0xc0 { d << (shift % 64) } else { d << (shift % 36) };
                self.now = self.now.saturating_add(Duration::from_nanos(step));
            }
            10 => self.fire_next_timer(),
            11 => {
                self.c.handle_timeout(self.now);
                self.drain();
                self.check_timeout_not_past();
                // Idempotent: a second call at the same instant changes nothing.
                if self.strict_time() {
                    let before = fingerprint(&self.c);
                    self.c.handle_timeout(self.now);
                    assert_eq!(before, fingerprint(&self.c), "handle_timeout(now) is not idempotent");
                    assert_eq!(self.c.poll_event(), None, "handle_timeout(now) twice produced an event");
                }
            }
            12 => {
                let b = s.u8();
                let max = self.c.max_item_len() as usize;
                let len = if b & 0x80 != 0 { (max + usize::from(b & 3)).saturating_sub(1) } else { usize::from(b) };
                let seq = self.sent_items.len() as u64;
                let item: Vec<u8> = (0..len).map(|i| (seq as u8).wrapping_add(i as u8)).collect();
                self.send(&[&item]);
            }
            13 => {
                let code = u32::from(s.u8());
                let len = usize::from(s.u8());
                let reason = String::from_utf8_lossy(s.bytes(len)).into_owned();
                self.close_called = true;
                self.c.close(self.now, code, &reason);
            }
            14 => match self.role {
                Role::Acceptor => {
                    let k = s.u8();
                    let hello = self.client_hello(s);
                    let key = ResumeKey([k; 16]);
                    if k != 0 {
                        self.keys.push(key);
                    }
                    if let Some(old) = self.link.take() {
                        self.closed.push(old);
                    }
                    self.tx_prev = None;
                    let was_ended = self.c.is_ended();
                    let (id, r) = self.c.link_up_with_hello(self.now, key, &hello);
                    self.link = Some(id);
                    self.early_next = hello.early && r.is_ok();
                    match r {
                        Ok(()) => {}
                        Err(InputError::AlreadyEnded) => assert!(was_ended),
                        Err(e @ (InputError::LinkDropped(_) | InputError::SessionEnded(_))) => self.expect = Some(e),
                        Err(InputError::StaleLink) => panic!("link_up_with_hello: stale"),
                        Err(e) => panic!("link_up_with_hello: unexpected {e}"),
                    }
                }
                Role::Initiator => {
                    let a = usize::from(s.u8() % 16);
                    let b = usize::from(s.u8() % 16);
                    let seq = self.sent_items.len() as u8;
                    let p1 = vec![seq; a];
                    let p2 = vec![seq ^ 0xff; b];
                    self.send(&[&p1, &p2]);
                }
            },
            _ => {
                // An input whose `now` lies in the past is clamped, never a panic.
                let back = Duration::from_nanos(u64::from(s.u8()) << 20);
                let earlier = Instant::from_nanos(self.now.as_nanos().saturating_sub(back.as_nanos()));
                self.c.handle_timeout(earlier);
            }
        }
        self.drain();
    }

    fn send(&mut self, parts: &[&[u8]]) {
        let item: Vec<u8> = parts.concat();
        let len = item.len();
        let could = self.c.can_send(len);
        let sent = self.c.items_sent();
        match self.c.send_vectored(parts) {
            Ok(seq) => {
                assert!(could, "send succeeded although can_send said no");
                assert_eq!(seq, sent);
                self.sent_items.push(item);
            }
            Err(SendError::WouldBlock) => {
                assert_eq!(self.c.items_sent(), sent);
                self.writable_pending = true;
            }
            Err(SendError::TooLarge { len, max }) => {
                assert!(len as usize == item.len() && len > max && max == self.c.max_item_len());
            }
            Err(SendError::Ended) => assert!(self.c.is_ended() || self.close_called),
            Err(e) => panic!("send_vectored: unexpected {e}"),
        }
        if len <= self.c.max_item_len() as usize && could {
            assert_eq!(self.c.items_sent(), sent + 1, "can_send said yes but send refused");
        }
    }

    /// Fire the earliest timer at its deadline, after checking that one nanosecond earlier
    /// nothing happens.
    fn fire_next_timer(&mut self) {
        let Some(t) = self.c.poll_timeout() else { return };
        if t > self.now && self.strict_time() {
            let early = Instant::from_nanos(t.as_nanos() - 1);
            self.now = early;
            let before = fingerprint(&self.c);
            self.c.handle_timeout(early);
            assert_eq!(before, fingerprint(&self.c), "handle_timeout fired before poll_timeout");
            assert_eq!(self.c.poll_event(), None, "handle_timeout fired before poll_timeout");
        }
        if t > self.now {
            self.now = t;
        }
        let before = fingerprint(&self.c);
        self.c.handle_timeout(self.now);
        self.drain();
        if self.strict_time() {
            assert_ne!(before, fingerprint(&self.c), "handle_timeout at poll_timeout did nothing");
        }
        self.check_timeout_not_past();
    }

    /// After `handle_timeout(now)` and a drain: no deadline lies in the past. With every
    /// timer duration non-zero none lies at `now` either (so a second `handle_timeout(now)`
    /// has nothing to do). With zero durations a deadline may be re-armed at `now` by the
    /// drain (a PING sent with `pong_timeout` 0, say); then repeating `handle_timeout(now)`
    /// must settle within a few rounds, never spin.
    fn check_timeout_not_past(&mut self) {
        if !self.strict_time() {
            return;
        }
        for _ in 0..8 {
            match self.c.poll_timeout() {
                Some(t) if t <= self.now => {
                    assert!(t == self.now, "poll_timeout {t:?} in the past at {:?}", self.now);
                    assert!(!self.zero_free, "poll_timeout {t:?} not after now after handle_timeout");
                    self.c.handle_timeout(self.now);
                    self.drain();
                }
                _ => return,
            }
        }
        panic!("handle_timeout(now) keeps finding work at {:?}", self.now);
    }
}

/// Drive one conduit of `role` from the script in `data`.
pub fn run(role: Role, data: &[u8]) {
    let mut s = Script::new(data);
    let cfg = config_from(&mut s);
    let mut d = Driver::new(role, cfg);
    if d.trace {
        eprintln!("{role:?} {cfg:?}");
    }
    d.drain();
    while !s.is_empty() {
        d.step(&mut s);
    }
}
