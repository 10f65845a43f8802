//! `stream_helpers`: [`WriteBatch`] filled from a scripted [`FrameSource`] (frames of
//! arbitrary sizes, moving to a new link now and then), drained by short writes of arbitrary
//! sizes into one simulated socket per link, and each socket read back in arbitrary chunks
//! through [`FrameSplitter`] (arbitrary `max_messages`, a `max_frame_len` sometimes below the
//! largest frame). Checks:
//!
//! - every link's reader gets exactly the frames the source handed out for that link, in
//!   order: a prefix of them for a link the source left (its unwritten bytes are discarded),
//!   all of them for the last link once everything is written and read;
//! - `Fill` counts what it took (`frames`, `bytes`), `discarded` counts the link changes that
//!   found bytes pending, `more == false` means the source is empty; `pending()` fits the
//!   buffer and `link()` is the link of the last frame taken; `consume` clamps;
//! - `complete` reports at most `max_messages` whole messages and exactly their bytes,
//!   `messages` yields them, `TooLong` exactly when the first message's prefix exceeds the
//!   limit, `wanted` is exactly what completes the first message (at least 1), `at_eof` is
//!   `Ok` only on a message boundary.
//!
//! Script: three config bytes (buffer capacity, largest frame, splitter limit), then
//! operations (an opcode byte `% 8` and its operands, see [`run`]).

use crate::script::Script;
use sotto_proto::conduit::Transmit;
use sotto_proto::stream::{FrameSource, FrameSplitter, WriteBatch};
use sotto_proto::wire::{FramingError, LEN_PREFIX};
use sotto_proto::{Instant, LinkId};
use std::collections::{BTreeMap, VecDeque};

/// A frame source scripted by the fuzzer.
struct Source {
    queue: VecDeque<(u64, Vec<u8>)>,
    max: usize,
    /// Frames handed out, per link.
    produced: BTreeMap<u64, Vec<Vec<u8>>>,
    /// The link of every frame handed out, in order.
    log: Vec<u64>,
    /// Frames handed out, and their bytes with prefixes.
    taken: usize,
    bytes: usize,
}

impl FrameSource for Source {
    fn poll_transmit(&mut self, _now: Instant, out: &mut [u8]) -> Option<Transmit> {
        let (link, frame) = self.queue.front()?;
        let dst = out.get_mut(..frame.len())?;
        dst.copy_from_slice(frame);
        let t = Transmit { link: LinkId(*link), len: frame.len() };
        let (link, frame) = self.queue.pop_front()?;
        self.log.push(link);
        self.bytes += frame.len() + LEN_PREFIX;
        self.produced.entry(link).or_default().push(frame);
        self.taken += 1;
        Some(t)
    }
    fn max_transmit_len(&self) -> usize {
        self.max
    }
}

/// One link's socket and its reader.
#[derive(Default)]
struct Socket {
    /// Bytes written and not read yet.
    wire: VecDeque<u8>,
    /// The reader's buffer (read, not yet split off).
    buf: Vec<u8>,
    got: Vec<Vec<u8>>,
    /// Frames of `got` already compared.
    checked: usize,
    /// The reader hit a framing error: the link is unusable.
    broken: bool,
}

struct Run {
    src: Source,
    batch: WriteBatch<Vec<u8>>,
    split: FrameSplitter,
    sockets: BTreeMap<u64, Socket>,
    link: u64,
    /// Frames queued in the source so far (for unique contents).
    made: usize,
}

impl Run {
    fn fill(&mut self) {
        let pending_link = self.batch.link();
        let was_empty = self.batch.is_empty();
        let (taken, bytes) = (self.src.taken, self.src.bytes);
        let f = self.batch.fill(&mut self.src, Instant::ZERO);
        let n = self.src.taken - taken;
        assert_eq!(f.frames, n, "Fill::frames");
        assert_eq!(f.bytes, self.src.bytes - bytes, "Fill::bytes");
        let links_taken = &self.src.log[taken..];
        // Link changes among the frames taken, and whether bytes were pending at each.
        let mut expected_discards = 0;
        let mut cur = pending_link.map(|l| l.0);
        let mut empty = was_empty;
        for &l in links_taken {
            if cur != Some(l) {
                if !empty {
                    expected_discards += 1;
                }
                cur = Some(l);
            }
            empty = false;
        }
        assert_eq!(f.discarded, expected_discards, "Fill::discarded");
        if !f.more {
            assert!(self.src.queue.is_empty(), "more == false with frames left in the source");
        }
        assert!(self.batch.pending().len() <= self.batch.capacity());
        if n > 0 {
            assert_eq!(self.batch.link().map(|l| l.0), links_taken.last().copied(), "link() after fill");
        }
    }

    fn write(&mut self, n: usize) {
        let pending = self.batch.pending().len();
        let take = n.min(pending);
        if let Some(link) = self.batch.link() {
            let bytes = self.batch.pending()[..take].to_vec();
            self.sockets.entry(link.0).or_default().wire.extend(bytes);
        }
        self.batch.consume(n);
        assert_eq!(self.batch.pending().len(), pending - take, "consume does not clamp");
    }

    fn read(&mut self, link: u64, n: usize, max_messages: usize) {
        let split = self.split;
        let Some(sock) = self.sockets.get_mut(&link) else { return };
        if sock.broken {
            return;
        }
        let k = n.min(sock.wire.len());
        sock.buf.extend(sock.wire.drain(..k));
        loop {
            // What the first message needs, before `complete` looks.
            let head_len = sock.buf.get(..LEN_PREFIX).map(|p| u32::from_le_bytes([p[0], p[1], p[2], p[3]]));
            match split.complete(&sock.buf, max_messages) {
                Ok(run) => {
                    assert!(run.messages <= max_messages);
                    let msgs: Vec<Vec<u8>> = split.messages(&sock.buf[..run.len]).map(<[u8]>::to_vec).collect();
                    assert_eq!(msgs.len(), run.messages, "messages() vs complete()");
                    assert_eq!(msgs.iter().map(|m| m.len() + LEN_PREFIX).sum::<usize>(), run.len);
                    sock.buf.drain(..run.len);
                    sock.got.extend(msgs);
                    if run.messages == 0 {
                        break;
                    }
                }
                Err(e) => {
                    let len = head_len.expect("an error needs a prefix");
                    assert_eq!(e, FramingError::TooLong { len, max: split.max_frame_len() });
                    sock.broken = true;
                    return;
                }
            }
        }
        // Nothing whole is left at the front: `wanted` says exactly what completes it.
        let w = split.wanted(&sock.buf);
        assert!(w >= 1);
        match sock.buf.get(..LEN_PREFIX) {
            None => assert_eq!(w, LEN_PREFIX - sock.buf.len()),
            Some(p) => {
                let len = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
                if len <= split.max_frame_len() {
                    assert_eq!(w, LEN_PREFIX + len as usize - sock.buf.len(), "wanted");
                } else {
                    assert_eq!(w, 1);
                }
            }
        }
        assert_eq!(split.at_eof(&sock.buf).is_ok(), sock.buf.is_empty());
    }

    /// Every reader's frames are a prefix of what its link was handed (checked as they come).
    fn check(&mut self) {
        for (link, sock) in &mut self.sockets {
            let produced = self.src.produced.get(link).map_or(&[][..], Vec::as_slice);
            assert!(sock.got.len() <= produced.len(), "link {link}: more frames read than produced");
            let from = sock.checked;
            assert_eq!(&sock.got[from..], &produced[from..sock.got.len()], "link {link}: frames differ");
            sock.checked = sock.got.len();
        }
    }
}

/// Run the script in `data`.
pub fn run(data: &[u8]) {
    let mut s = Script::new(data);
    let max = 1 + usize::from(s.u8());
    let cap = match s.u8() {
        b if b < 200 => max + LEN_PREFIX + usize::from(b),
        b => usize::from(b - 200), // smaller than one largest frame: some never fit
    };
    let limit = match s.u8() {
        b if b < 200 => u32::MAX,
        b => u32::from(b - 200) * 8,
    };
    let mut r = Run {
        src: Source { queue: VecDeque::new(), max, produced: BTreeMap::new(), log: Vec::new(), taken: 0, bytes: 0 },
        batch: WriteBatch::new(vec![0u8; cap]),
        split: FrameSplitter::new(limit),
        sockets: BTreeMap::new(),
        link: 1,
        made: 0,
    };
    let trace = std::env::var_os("SOTTO_FUZZ_TRACE").is_some();
    if trace {
        eprintln!("max {max} cap {cap} limit {limit}");
    }
    while !s.is_empty() {
        let op = s.u8();
        if trace {
            eprintln!(
                "op {} link {} batch {:?} pending {} queue {:?}",
                op % 8,
                r.link,
                r.batch.link(),
                r.batch.pending().len(),
                r.src.queue.iter().map(|(l, f)| (*l, f.len())).collect::<Vec<_>>()
            );
        }
        match op % 8 {
            0 | 1 => {
                // Queue frames: up to 8, of sizes from the script (at most `max`).
                let k = 1 + usize::from(s.u8() % 8);
                for _ in 0..k {
                    let len = usize::from(s.u8()) % (max + 1);
                    r.made += 1;
                    let tag = r.made as u8;
                    r.src.queue.push_back((r.link, (0..len).map(|i| tag ^ i as u8).collect()));
                }
            }
            2 => r.link += 1,
            3 => r.fill(),
            4 => {
                let n = usize::from(s.u16());
                r.write(n);
            }
            5 => {
                let b = s.u8();
                let link = if b & 1 == 0 { r.batch.link().map_or(r.link, |l| l.0) } else { r.link.saturating_sub(1) };
                let n = usize::from(s.u16());
                r.read(link, n, 1 + usize::from(b >> 1));
            }
            6 => {
                // The link is gone (the driver clears the batch): the source moves to a new
                // link and hands out what it still holds there (as a conduit replays).
                r.batch.clear();
                r.link += 1;
                let link = r.link;
                for f in &mut r.src.queue {
                    f.0 = link;
                }
            }
            _ => {
                // The driver's loop: fill and write everything, then read everything.
                for _ in 0..10_000 {
                    r.fill();
                    let n = r.batch.pending().len();
                    if n == 0 {
                        break;
                    }
                    r.write(n);
                }
                let links: Vec<u64> = r.sockets.keys().copied().collect();
                for l in links {
                    r.read(l, usize::MAX, usize::MAX);
                }
            }
        }
        r.check();
    }
    // Faults over: drain everything. The last link gets every frame handed out for it.
    for _ in 0..100_000 {
        r.fill();
        let n = r.batch.pending().len();
        if n == 0 {
            break;
        }
        r.write(n);
    }
    let links: Vec<u64> = r.sockets.keys().copied().collect();
    for l in links {
        r.read(l, usize::MAX, usize::MAX);
    }
    r.check();
    if r.src.queue.is_empty() {
        if let Some(last) = r.batch.link() {
            let produced = r.src.produced.get(&last.0).map_or(0, Vec::len);
            let sock = r.sockets.get(&last.0);
            let broken = sock.is_some_and(|s| s.broken);
            if !broken {
                assert_eq!(sock.map_or(0, |s| s.got.len()), produced, "the last link lost frames");
                assert!(sock.is_none_or(|s| s.buf.is_empty() && s.wire.is_empty()));
            }
        }
    }
}
