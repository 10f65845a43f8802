//! Writes the seed corpus to `fuzz/seeds/<target>/`:
//!
//! - the hex examples of shared/WIRE.md (hellos, base and extended frames, link framing);
//! - frames captured from a small in-memory initiator/acceptor run (fresh handshake, data
//!   both ways, standalone acks, keepalive, a link cut, a resume with replay, GOODBYE), in
//!   both the extended and the base form, as frames, hellos, framed byte streams, and as
//!   conduit scripts that replay one side's view;
//! - for `pair`, the most eventful of a deterministic batch of pseudo-random inputs.
//!
//! Run: `cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds` (deterministic; it
//! rewrites the same files).

use sotto::wire::{Frame, HELLO_LEN};
use sotto::{Conduit, ConduitConfig, Duration, Event, Instant, LinkId, ResumeKey, Role};
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
    let cfg = ConduitConfig { ext, ..ConduitConfig::default() };
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
    println!("wrote {} seeds under {}", w.written, w.root.display());
    assert_eq!(failures, 0, "pair checks failed on some generated inputs");
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
