//! Writes the seed corpus to `fuzz/seeds/<target>/`:
//!
//! - the hex examples of shared/WIRE.md (hellos, base and extended frames, link framing);
//! - frames captured from a small in-memory initiator/acceptor run (fresh handshake, data
//!   both ways, standalone acks, keepalive, a link cut, a resume with replay, GOODBYE), in
//!   both the extended and the base form, as frames, hellos, framed byte streams, and as
//!   conduit scripts that replay one side's view;
//! - for `pair`, the most eventful of a deterministic batch of pseudo-random inputs;
//! - for the session layer: the docs/protocol.md message examples, every item of an in-memory
//!   session run, that run as one `session_receive` script per side, crafted
//!   `session_receive` and `stream_helpers` scripts, and for `endpoint` and `session_pair`
//!   the most eventful of a batch of pseudo-random inputs;
//! - for `state_import`: exported states of a session pair mid-stream and of fresh sessions.
//!
//! Run: `cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds` (deterministic; it
//! rewrites the same files).

use sotto_proto::wire::{Frame, HELLO_LEN};
use sotto_proto::{Conduit, ConduitConfig, Duration, Event, Instant, LinkId, ResumeKey, Role};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| {
            let d = |c: u8| (c as char).to_digit(16).expect("hex digit") as u8;
            (d(p[0]) << 4) | d(p[1])
        })
        .collect()
}

fn prefixed(msgs: &[Vec<u8>]) -> Vec<u8> {
    msgs.iter().flat_map(|m| (m.len() as u32).to_le_bytes().into_iter().chain(m.iter().copied())).collect()
}

/// A `framing_chunks` input: max_frame_len, chunk sizes, stream.
fn framing_input(max: u16, chunks: &[u8], stream: &[u8]) -> Vec<u8> {
    let mut v = max.to_le_bytes().to_vec();
    v.push(chunks.len() as u8);
    v.extend_from_slice(chunks);
    v.extend_from_slice(stream);
    v
}

/// Every message written on one link in one direction.
#[derive(Default)]
struct Capture {
    /// (link number, from initiator, bytes)
    messages: Vec<(usize, bool, Vec<u8>)>,
}

/// A small scripted run of a conduit pair, recording every message.
fn capture(ext: bool) -> Capture {
    let cfg = {
        let mut patched = ConduitConfig::default();
        patched.ext = ext;
        patched
    };
    let mut a = Conduit::new(Role::Initiator, cfg).expect("config");
    let mut b = Conduit::new(Role::Acceptor, cfg).expect("config");
    let mut cap = Capture::default();
    let mut now = Instant::from_nanos(1_000_000_000);
    let mut buf = vec![0u8; a.max_transmit_len()];
    let mut link_no = 0;

    // Pump until nothing moves; `deaf_b` drops A's messages (a half-open link).
    let mut pump = |a: &mut Conduit,
                    b: &mut Conduit,
                    links: &mut Option<(LinkId, LinkId)>,
                    now: Instant,
                    link_no: usize,
                    cap: &mut Capture| {
        for _ in 0..1000 {
            let mut moved = false;
            while let Some(t) = a.poll_transmit(now, &mut buf) {
                moved = true;
                cap.messages.push((link_no, true, buf[..t.len].to_vec()));
                if let Some((la, lb)) = *links {
                    if la == t.link {
                        let _ = b.handle_message(now, lb, &buf[..t.len]);
                    }
                }
            }
            while let Some(t) = b.poll_transmit(now, &mut buf) {
                moved = true;
                cap.messages.push((link_no, false, buf[..t.len].to_vec()));
                if let Some((la, lb)) = *links {
                    if lb == t.link {
                        let _ = a.handle_message(now, la, &buf[..t.len]);
                    }
                }
            }
            for (c, is_a) in [(&mut *a, true), (&mut *b, false)] {
                while let Some(e) = c.poll_event() {
                    moved = true;
                    if let Event::DropLink { link, .. } = e {
                        c.link_down(now, link);
                        if let Some((la, lb)) = *links {
                            if (is_a && la == link) || (!is_a && lb == link) {
                                *links = None;
                            }
                        }
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("capture run did not settle");
    };

    for i in 0..3u8 {
        a.send(&[2, b'h', b'0' + i]).expect("send");
    }
    let connect = |a: &mut Conduit, b: &mut Conduit, now: Instant, key: u8| {
        let la = a.link_up(now, ResumeKey::ZERO);
        let lb = b.link_up(now, ResumeKey([key; 16]));
        (la, lb)
    };
    let mut links = Some(connect(&mut a, &mut b, now, 0x11));
    link_no += 1;
    pump(&mut a, &mut b, &mut links, now, link_no, &mut cap);
    b.send(b"\x06echo:y").expect("send");
    b.send(&[]).expect("send");
    a.send(&[0x55; 40]).expect("send");
    pump(&mut a, &mut b, &mut links, now, link_no, &mut cap);
    for step in [Duration::from_millis(30), Duration::from_secs(10), Duration::from_millis(30)] {
        now = now.saturating_add(step);
        a.handle_timeout(now);
        b.handle_timeout(now);
        pump(&mut a, &mut b, &mut links, now, link_no, &mut cap);
    }
    // Cut with frames in flight: A's sends are never transmitted on the old link.
    a.send(b"lost with the link").expect("send");
    if let Some((la, lb)) = links.take() {
        a.link_down(now, la);
        b.link_down(now, lb);
    }
    b.send(b"while detached").expect("send");
    now = now.saturating_add(Duration::from_millis(500));
    links = Some(connect(&mut a, &mut b, now, 0x22));
    link_no += 1;
    pump(&mut a, &mut b, &mut links, now, link_no, &mut cap);
    now = now.saturating_add(Duration::from_millis(30));
    a.handle_timeout(now);
    b.handle_timeout(now);
    pump(&mut a, &mut b, &mut links, now, link_no, &mut cap);
    a.send(b"last").expect("send");
    a.close(now, 7, "done");
    pump(&mut a, &mut b, &mut links, now, link_no, &mut cap);
    cap
}

struct Writer {
    root: PathBuf,
    written: usize,
}

impl Writer {
    fn put(&mut self, target: &str, name: &str, data: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(name), data).expect("write seed");
        self.written += 1;
    }
}

/// Config bytes of `sotto_fuzz::single::config_from` that give the default configuration
/// (1024-byte frames instead of 1 MiB), extended or base form.
fn script_config(ext: bool) -> [u8; 4] {
    let f = 0x3f | if ext { 0 } else { 0x40 };
    [f, 3 | (5 << 3) | (2 << 6), 6 | (5 << 3) | (3 << 6), 7 | (4 << 3) | (2 << 6)]
}

/// A single-conduit script that replays `role`'s view of a captured run: its sends, link
/// up/down, and every message the peer wrote to it (op 2, raw), with time passing.
fn conduit_script(cap: &Capture, role: Role, ext: bool) -> Vec<u8> {
    let mut s = script_config(ext).to_vec();
    // Sends first, so that the peer's acks refer to items that exist (op 12, length byte).
    for _ in 0..8 {
        s.extend_from_slice(&[12, 3]);
    }
    let from_peer = role == Role::Acceptor;
    let mut current = 0;
    for (link, from_a, msg) in &cap.messages {
        if *link != current {
            if current != 0 {
                s.extend_from_slice(&[1, 0]); // link down
            }
            s.extend_from_slice(&[0, 0x10 + *link as u8]); // link up (acceptor key byte)
            s.extend_from_slice(&[11]); // handle_timeout(now): drains the hello out
            current = *link;
        }
        if *from_a == from_peer && msg.len() <= 255 {
            s.extend_from_slice(&[2, msg.len() as u8]);
            s.extend_from_slice(msg);
            s.extend_from_slice(&[9, 25, 20]); // advance 25 << 20 ns (~26 ms)
            s.extend_from_slice(&[10]); // fire the next timer
        }
    }
    s
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let mut w = Writer { root, written: 0 };

    // --- WIRE.md hellos (without the link prefix).
    let wire_hellos = [
        ("wire-ch-fresh", "56 4f 43 48 | 00 | 00000000000000000000000000000000 | 00 00 00 00"),
        ("wire-sh-fresh", "56 4f 53 48 | 00 | a1a2a3a4a5a6a7a8a9aaabacadaeafb0 | 00 00 00 00"),
        ("wire-ch-resume", "56 4f 43 48 | 03 | 000102030405060708090a0b0c0d0e0f | 03 00 00 00"),
        ("wire-sh-resume", "56 4f 53 48 | 02 | b1b2b3b4b5b6b7b8b9babbbcbdbebfc0 | 01 00 00 00"),
        ("wire-sh-rejected", "56 4f 53 48 | 01 | 00000000000000000000000000000000 | 00 00 00 00"),
        ("ext-ch-fresh", "56 4f 43 48 | 04 | 00000000000000000000000000000000 | 00 00 00 00"),
    ];
    for (name, h) in wire_hellos {
        w.put("hello_decode", name, &hex(h));
    }
    // --- WIRE.md frames (without the link prefix), base and extended.
    let wire_frames = [
        ("wire-base-seq0", "00 | 00 | 03 00 00 00 | 02 61 62"),
        ("wire-base-seq5-ack3", "05 | 01 03 | 00 00 00 00"),
        ("wire-base-echo", "01 | 01 01 | 07 00 00 00 | 06 65 63 68 6f 3a 79"),
        ("wire-ext-data", "00 | 05 | 01 03 | 00 00 00 00"),
        ("wire-ext-ack", "01 | ff 01"),
        ("wire-ext-ping", "02 | 08 07 06 05 04 03 02 01"),
        ("wire-ext-pong", "03 | 01 00 00 00 00 00 00 00"),
        ("wire-ext-goodbye", "04 | 07 | 62 79 65"),
        ("wire-base-wide-varints", "ff ff ff ff 0f | 01 80 80 80 80 01 | 00 00 00 00"),
    ];
    for (name, f) in wire_frames {
        w.put("frame_decode", name, &hex(f));
    }
    // --- WIRE.md link framing: the prefixed examples as one stream, whole and split.
    let wire_stream = hex("19 00 00 00 56 4f 43 48 00 00000000000000000000000000000000 00 00 00 00
         19 00 00 00 56 4f 53 48 02 a1a2a3a4a5a6a7a8a9aaabacadaeafb0 01 00 00 00
         09 00 00 00 00 00 03 00 00 00 02 61 62
         07 00 00 00 05 01 03 00 00 00 00
         0e 00 00 00 01 01 01 07 00 00 00 06 65 63 68 6f 3a 79
         00 00 00 00");
    w.put("framing_chunks", "wire-whole", &framing_input(1024, &[], &wire_stream));
    w.put("framing_chunks", "wire-bytewise", &framing_input(1024, &[1], &wire_stream));
    w.put("framing_chunks", "wire-split-3-7", &framing_input(1024, &[3, 7, 0, 29], &wire_stream));
    w.put("framing_chunks", "wire-too-long", &framing_input(24, &[5], &wire_stream));
    w.put("framing_chunks", "wire-truncated", &framing_input(1024, &[2], &wire_stream[..wire_stream.len() - 3]));
    w.put("framing_chunks", "prefix-4gib", &framing_input(64, &[2], &hex("ff ff ff ff 00")));

    // --- Captured runs.
    for ext in [true, false] {
        let form = if ext { "ext" } else { "base" };
        let cap = capture(ext);
        let mut frames = BTreeSet::new();
        for (_, _, m) in &cap.messages {
            if m.len() == HELLO_LEN && (m.starts_with(b"VOCH") || m.starts_with(b"VOSH")) {
                w.put("hello_decode", &format!("run-{form}-{}", hexname(m)), m);
            } else {
                assert!(Frame::decode(m, ext).is_ok(), "captured frame decodes");
                frames.insert(m.clone());
            }
        }
        for (i, f) in frames.iter().enumerate() {
            w.put("frame_decode", &format!("run-{form}-{i:02}"), f);
        }
        for from_a in [true, false] {
            let dir = if from_a { "a2b" } else { "b2a" };
            let msgs: Vec<Vec<u8>> =
                cap.messages.iter().filter(|(_, fa, _)| *fa == from_a).map(|(_, _, m)| m.clone()).collect();
            let stream = prefixed(&msgs);
            w.put("framing_chunks", &format!("run-{form}-{dir}-whole"), &framing_input(1024, &[], &stream));
            w.put("framing_chunks", &format!("run-{form}-{dir}-split"), &framing_input(1024, &[5, 1, 13, 2], &stream));
        }
        w.put("conduit_initiator", &format!("run-{form}"), &conduit_script(&cap, Role::Initiator, ext));
        w.put("conduit_acceptor", &format!("run-{form}"), &conduit_script(&cap, Role::Acceptor, ext));
    }
    // Crafted scripts: a handshake then in-sequence data, acks, pings and timers (op codes
    // of sotto_fuzz::single).
    let mut init = script_config(true).to_vec();
    init.extend_from_slice(&[0, 0, 12, 5, 12, 9, 3, 0x04, 0x42, 0, 4, 1, 0, 0, 3, b'a', b'b', b'c', 5, 1, 6, 9, 7, 1]);
    init.extend_from_slice(&[9, 255, 28, 10, 10, 10, 4, 0, 0, 0, 0, 11, 13, 0, 2, b'o', b'k']);
    w.put("conduit_initiator", "crafted-handshake", &init);
    let mut acc = script_config(true).to_vec();
    acc.extend_from_slice(&[0, 0x33, 3, 0x04, 0, 0, 4, 0, 0, 0, 2, b'h', b'i', 12, 4, 5, 1, 6, 3, 9, 255, 30, 10, 10]);
    acc.extend_from_slice(&[1, 0, 0, 0x44, 3, 0x0d, 0, 0, 4, 0, 0, 0, 1, b'x', 14, 0x55, 0x01, 0, 0, 11]);
    w.put("conduit_acceptor", "crafted-resume", &acc);

    // --- The session layer: docs/protocol.md examples, and a captured session run.
    session_seeds(&mut w);
    // --- stream_helpers: crafted scripts (frames of many sizes, short writes and reads,
    // link changes with bytes pending, a clear, a splitter limit below the largest frame).
    stream_seeds(&mut w);

    // --- pair: the most eventful of a batch of pseudo-random inputs.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut scored = Vec::new();
    let mut failures = 0;
    for _ in 0..3000 {
        let len = 64 + (xorshift(&mut x) % 2048) as usize;
        let data: Vec<u8> = (0..len).map(|_| xorshift(&mut x) as u8).collect();
        match std::panic::catch_unwind(|| sotto_fuzz::pair::score(&data)) {
            Ok(score) => scored.push((score, data)),
            Err(_) => {
                let path = std::env::temp_dir().join(format!("pair-failure-{:08x}", fnv(&data)));
                std::fs::write(&path, &data).expect("write failure");
                eprintln!("pair check failed; input saved to {}", path.display());
                failures += 1;
            }
        }
    }
    scored.sort_by_key(|s| std::cmp::Reverse(s.0));
    // Scores change with the checks; drop the previous picks (hand-added seeds stay).
    if let Ok(dir) = std::fs::read_dir(w.root.join("pair")) {
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().starts_with("eventful-") {
                std::fs::remove_file(e.path()).expect("remove old pick");
            }
        }
    }
    for (i, (score, data)) in scored.iter().take(12).enumerate() {
        sotto_fuzz::pair::run_bytes(data);
        w.put("pair", &format!("eventful-{i:02}-score{score}"), data);
    }
    // --- endpoint and session_pair: likewise.
    for (target, scorer) in [
        ("endpoint", sotto_fuzz::endpoint::score as fn(&[u8]) -> u64),
        ("session_pair", sotto_fuzz::session_pair::score as fn(&[u8]) -> u64),
    ] {
        let mut scored = Vec::new();
        for _ in 0..1500 {
            let len = 64 + (xorshift(&mut x) % 2048) as usize;
            let data: Vec<u8> = (0..len).map(|_| xorshift(&mut x) as u8).collect();
            match std::panic::catch_unwind(|| scorer(&data)) {
                Ok(score) => scored.push((score, data)),
                Err(_) => {
                    let path = std::env::temp_dir().join(format!("{target}-failure-{:08x}", fnv(&data)));
                    std::fs::write(&path, &data).expect("write failure");
                    eprintln!("{target} check failed; input saved to {}", path.display());
                    failures += 1;
                }
            }
        }
        scored.sort_by_key(|s| std::cmp::Reverse(s.0));
        if let Ok(dir) = std::fs::read_dir(w.root.join(target)) {
            for e in dir.flatten() {
                if e.file_name().to_string_lossy().starts_with("eventful-") {
                    std::fs::remove_file(e.path()).expect("remove old pick");
                }
            }
        }
        for (i, (score, data)) in scored.iter().take(12).enumerate() {
            sotto_fuzz::run_target(target, data);
            w.put(target, &format!("eventful-{i:02}-score{score}"), data);
        }
    }
    state_seeds(&mut w);
    handoff_seeds(&mut w);
    println!("wrote {} seeds under {}", w.written, w.root.display());
    assert_eq!(failures, 0, "checks failed on some generated inputs");
}

fn hexname(m: &[u8]) -> String {
    m[4..8].iter().map(|b| format!("{b:02x}")).collect::<String>() + &format!("-{:08x}", fnv(m))
}

fn fnv(m: &[u8]) -> u32 {
    m.iter().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// The session message examples of docs/protocol.md section 2 (also unit tests in
/// core/src/session/message.rs).
const PROTOCOL_MD_MESSAGES: [(&str, &str); 13] = [
    ("hello", "01 01 01 808010 8002 6869"),
    ("hello-yourself", "02 01 02 808004 10"),
    ("lets-go", "03"),
    ("sorry", "04 01 76657273696f6e"),
    ("data-root", "10 00 616263"),
    ("data-131", "10 8301 ff"),
    ("open", "11 03 808010 6b"),
    ("accept", "12 03 8040"),
    ("reject", "13 05 02 6e6f"),
    ("close", "14 04"),
    ("credit", "15 03 808001"),
    ("protocol-error", "16 07 6261642069640a"),
    ("fin", "18 03"),
];

/// Session config bytes of `sotto_fuzz::session_single::session_config_from` (after the four
/// conduit bytes): `role` 0 initiator / 1 acceptor; 16 connections, 8 pending Opens, credit
/// 1000 (`a`), max_credit 16 MiB, metadata 4 KiB, churn 100 per 10 s (`b`), ids up to
/// u32::MAX, two bytes of hello metadata (`c`).
fn session_script_config(role: u8) -> Vec<u8> {
    let mut v = script_config(true).to_vec();
    v.extend_from_slice(&[role | (3 << 1) | (3 << 3) | (3 << 5), 3 | (3 << 2) | (3 << 4) | (3 << 6), 6 | (2 << 3)]);
    v
}

/// A session pair run in memory, recording every session item and, for each side, a
/// `session_receive` script that replays its view: the peer's messages (op 2, raw), its own
/// commands (the script's ops), link changes and time.
struct SessionCapture {
    a: sotto_proto::session::Session,
    b: sotto_proto::session::Session,
    la: Option<LinkId>,
    lb: Option<LinkId>,
    now: Instant,
    keys: u64,
    scripts: [Vec<u8>; 2],
    items: BTreeSet<Vec<u8>>,
    frames: Vec<Vec<u8>>,
}

impl SessionCapture {
    fn new() -> Self {
        let a_cfg = session_script_config(0);
        let b_cfg = session_script_config(1);
        let (ra, ca, ma) =
            sotto_fuzz::session_single::session_config_from(&mut sotto_fuzz::script::Script::new(&a_cfg));
        let (rb, cb, mb) =
            sotto_fuzz::session_single::session_config_from(&mut sotto_fuzz::script::Script::new(&b_cfg));
        assert_eq!((ra, rb), (Role::Initiator, Role::Acceptor));
        Self {
            a: sotto_proto::session::Session::new(ra, ca, &ma).expect("config"),
            b: sotto_proto::session::Session::new(rb, cb, &mb).expect("config"),
            la: None,
            lb: None,
            now: Instant::ZERO,
            keys: 0,
            scripts: [a_cfg, b_cfg],
            items: BTreeSet::new(),
            frames: Vec::new(),
        }
    }

    fn link_up(&mut self) {
        self.la = Some(self.a.link_up(self.now, ResumeKey::ZERO));
        self.keys += 1;
        let mut key = [0x5au8; 16];
        key[..8].copy_from_slice(&self.keys.to_le_bytes());
        self.lb = Some(self.b.link_up(self.now, ResumeKey(key)));
        for s in &mut self.scripts {
            s.push(0);
        }
        self.pump();
    }

    fn cut(&mut self) {
        if let Some(l) = self.la.take() {
            self.a.link_down(self.now, l);
        }
        if let Some(l) = self.lb.take() {
            self.b.link_down(self.now, l);
        }
        for s in &mut self.scripts {
            s.extend_from_slice(&[1, 0]);
        }
    }

    /// `d << 20` nanoseconds pass and both sides handle their timers.
    fn advance(&mut self, d: u8) {
        self.now = self.now.saturating_add(Duration::from_nanos(u64::from(d) << 20));
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        for s in &mut self.scripts {
            s.extend_from_slice(&[7, d, 20, 9]);
        }
        self.pump();
    }

    /// A command on side `side` (0 = A), recorded as the script op `op`.
    fn cmd(&mut self, side: usize, op: &[u8], f: impl FnOnce(&mut sotto_proto::session::Session, Instant)) {
        let now = self.now;
        f(if side == 0 { &mut self.a } else { &mut self.b }, now);
        self.scripts[side].extend_from_slice(op);
        self.pump();
    }

    fn pump(&mut self) {
        let mut buf = vec![0u8; 4096];
        for _ in 0..1000 {
            let mut moved = false;
            for side in 0..2 {
                let (from, to, lf, lt) = if side == 0 {
                    (&mut self.a, &mut self.b, self.la, self.lb)
                } else {
                    (&mut self.b, &mut self.a, self.lb, self.la)
                };
                let ext = from.conduit().ext_in_force();
                while let Some(t) = from.poll_transmit(self.now, &mut buf) {
                    moved = true;
                    let msg = buf[..t.len].to_vec();
                    if let Ok(Frame::Data { item, .. }) = Frame::decode(&msg, ext) {
                        self.items.insert(item.to_vec());
                    }
                    self.frames.push(msg.clone());
                    if let (Some(lt), true) = (lt, lf == Some(t.link)) {
                        assert!(msg.len() <= 255, "captured messages fit a script op");
                        let _ = to.handle_message(self.now, lt, &msg);
                        let peer = 1 - side;
                        self.scripts[peer].extend_from_slice(&[2, msg.len() as u8]);
                        self.scripts[peer].extend_from_slice(&msg);
                    }
                }
                while let Some(e) = from.poll_event() {
                    moved = true;
                    if let sotto_proto::session::SessionEvent::Conduit(Event::DropLink { link, .. }) = e {
                        from.link_down(self.now, link);
                        if side == 0 && self.la == Some(link) {
                            self.la = None;
                        }
                        if side == 1 && self.lb == Some(link) {
                            self.lb = None;
                        }
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("session capture did not settle");
    }
}

fn session_seeds(w: &mut Writer) {
    use sotto_proto::session::ROOT;
    for (name, h) in PROTOCOL_MD_MESSAGES {
        w.put("session_message", &format!("protocol-md-{name}"), &hex(h));
    }
    let mut c = SessionCapture::new();
    c.link_up();
    // A opens connection 1 (op 10, no metadata); B accepts it (op 11, pick 8 = the second
    // connection in its table, i.e. 1; no metadata).
    c.cmd(0, &[10, 0], |s, _| {
        s.open(b"").expect("open");
    });
    c.cmd(1, &[11, 8, 0], |s, _| s.accept(1, b"").expect("accept"));
    // Data both ways (op 14: pick, length << 2), then B reads what it got (op 16, even byte:
    // everything consumed).
    let pay = |conn: u32, len: usize| (0..len).map(|i| i as u8 ^ conn as u8).collect::<Vec<u8>>();
    c.cmd(0, &[14, 8, 5 << 2], |s, _| s.send(1, &pay(1, 5)).expect("send"));
    c.cmd(0, &[14, 0, 3 << 2], |s, _| s.send(ROOT, &pay(0, 3)).expect("send"));
    c.cmd(1, &[14, 0, 7 << 2], |s, _| s.send(ROOT, &pay(0, 7)).expect("send"));
    c.cmd(1, &[16, 8, 0], |s, _| {
        let _ = s.release(1, 5);
    });
    c.advance(30);
    // The link dies; A sends while detached; a resume replays it.
    c.cut();
    c.cmd(0, &[14, 8, 9 << 2], |s, _| s.send(1, &pay(1, 9)).expect("send while detached"));
    c.advance(200);
    c.link_up();
    c.advance(30);
    // B opens connection 2 and A accepts it; A closes connection 1; B closes the session.
    c.cmd(1, &[10, 0], |s, _| {
        s.open(b"").expect("open");
    });
    c.cmd(0, &[11, 16, 0], |s, _| s.accept(2, b"").expect("accept"));
    c.cmd(0, &[13, 8, 0], |s, now| s.close_conn(now, 1, b"").expect("close"));
    c.advance(30);
    c.cmd(1, &[17, 0], |s, now| s.close(now, 0x100, "fuzz close"));
    assert!(c.a.is_ended() || c.b.is_ended(), "the captured run ends with a close");
    for (i, item) in c.items.iter().enumerate() {
        w.put("session_message", &format!("run-item-{i:02}"), item);
    }
    let [sa, sb] = std::mem::take(&mut c.scripts);
    w.put("session_receive", "run-initiator", &sa);
    w.put("session_receive", "run-acceptor", &sb);
    // Crafted scripts: the handshake macro (op 18), then commands and crafted peer messages
    // (ops 4/5: mode byte, kind, three operands) around the limits.
    for role in [0u8, 1] {
        let mut s = session_script_config(role);
        s.extend_from_slice(&[18, 10, 0, 10, 1]); // handshake, two Opens
        s.extend_from_slice(&[4, 0, 7, 8, 3, 0]); // peer Accepts its first one
        s.extend_from_slice(&[4, 0, 6, 4, 5, 0, 4, 0, 6, 4, 0, 0]); // peer Opens (one with zero credit)
        s.extend_from_slice(&[11, 16, 0, 12, 16, 0, 0]); // accept, reject
        s.extend_from_slice(&[14, 8, 1, 15, 0, 3, 16, 0, 0]); // sends, release
        s.extend_from_slice(&[4, 0, 4, 8, 2, 0, 4, 0, 4, 8, 3, 0]); // peer data: window, window + 1
        s.extend_from_slice(&[8, 9, 6, 1, 4, 0, 10, 8, 4, 0]); // timers, ACK, grant
        w.put("session_receive", &format!("crafted-{}", if role == 0 { "initiator" } else { "acceptor" }), &s);
        let mut s = session_script_config(role);
        s.extend_from_slice(&[18]);
        for _ in 0..12 {
            s.extend_from_slice(&[4, 0, 6, 4, 1, 0]); // an Open flood
            s.extend_from_slice(&[4, 0, 9, 4, 0, 0]); // and resets
        }
        w.put("session_receive", &format!("churn-{}", if role == 0 { "initiator" } else { "acceptor" }), &s);
        // Half-close (version 3): our Open, accepted; we send and finish (op 20), the peer
        // still sends, then finishes (a crafted Fin, kind 12) and repeats it (ignored: the
        // connection is gone). The peer's Open, accepted; its Fin; we still send; its data
        // after the Fin (a violation).
        let mut s = session_script_config(role);
        s.extend_from_slice(&[18, 10, 0]); // handshake, an Open
        s.extend_from_slice(&[4, 0, 7, 8, 3, 0]); // the peer Accepts it
        s.extend_from_slice(&[14, 8, 1, 20, 8]); // send, finish
        s.extend_from_slice(&[4, 0, 4, 8, 0, 0]); // peer data after our Fin: fine
                                                  // Peer Fin, then again by id (pick `id << 3 | 7`: our first id, 1 or 2).
        s.extend_from_slice(&[4, 0, 12, 8, 0, 0, 4, 0, 12, ((1 + role) << 3) | 7, 0, 0]);
        s.extend_from_slice(&[4, 0, 6, 4, 5, 0, 11, 8, 0]); // peer Open, accepted
        s.extend_from_slice(&[4, 0, 12, 8, 0, 0, 14, 8, 1, 20, 8]); // peer Fin; we send, finish
        s.extend_from_slice(&[4, 0, 6, 4, 5, 0, 11, 8, 0]); // another peer Open, accepted
        s.extend_from_slice(&[4, 0, 12, 8, 0, 0, 4, 0, 4, 8, 0, 0]); // its Fin, then data
        w.put("session_receive", &format!("half-close-{}", if role == 0 { "initiator" } else { "acceptor" }), &s);
    }
}

fn stream_seeds(w: &mut Writer) {
    // max 64, capacity one frame + 10, no limit: frames, fill, short writes, reads.
    let mut s = vec![63, 10, 0];
    s.extend_from_slice(&[0, 7, 1, 2, 3, 5, 8, 13, 21, 34, 3, 4, 7, 0, 5, 0, 9, 0, 3, 4, 200, 0, 5, 4, 255, 255]);
    s.extend_from_slice(&[1, 3, 64, 0, 63, 3, 2, 0, 2, 10, 20, 3, 7]);
    w.put("stream_helpers", "crafted-short-writes", &s);
    // A link change with bytes pending, a clear, then everything drained.
    let mut s = vec![200, 60, 0];
    s.extend_from_slice(&[0, 4, 50, 50, 50, 50, 3, 4, 30, 0, 2, 0, 2, 9, 9, 3, 6, 0, 1, 40, 7]);
    w.put("stream_helpers", "crafted-link-change", &s);
    // A splitter limit below the largest frame (TooLong), one message per read.
    let mut s = vec![255, 0, 205];
    s.extend_from_slice(&[0, 3, 10, 200, 30, 3, 4, 255, 255, 5, 0, 255, 255, 7]);
    w.put("stream_helpers", "crafted-too-long", &s);
    // Session frames through the helpers: the frame sizes of the captured run.
    let mut c = SessionCapture::new();
    c.link_up();
    c.cmd(0, &[], |s, _| {
        s.open(b"").expect("open");
    });
    let sizes: Vec<u8> = c.frames.iter().map(|f| f.len().min(255) as u8).collect();
    let mut s = vec![255, 20, 0];
    for chunk in sizes.chunks(8) {
        s.push(0);
        s.push(chunk.len() as u8 - 1);
        s.extend_from_slice(chunk);
        s.extend_from_slice(&[3, 4, 17, 0, 5, 0, 33, 0]);
    }
    s.push(7);
    w.put("stream_helpers", "run-frame-sizes", &s);
}

/// `handoff_frame`: one frame of each kind (`sotto_fuzz::handoff::sample_frames`).
fn handoff_seeds(w: &mut Writer) {
    for (name, frame) in sotto_fuzz::handoff::sample_frames() {
        sotto_fuzz::run_target("handoff_frame", &frame);
        w.put("handoff_frame", &name, &frame);
    }
}

/// `state_import`: exported states of a session pair mid-stream, fresh sessions and raw
/// conduits (`sotto_fuzz::state::sample_states`).
fn state_seeds(w: &mut Writer) {
    for (name, state) in sotto_fuzz::state::sample_states() {
        sotto_fuzz::run_target("state_import", &state);
        w.put("state_import", &name, &state);
    }
}
