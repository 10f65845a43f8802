//! `lending_batch`: a conduit pair (initiator A sending, acceptor B receiving and acking), A's
//! frames written through a [`LendingBatch`] (items from `lend_from` bytes up lent from A's
//! replay ring) by short vectored writes of arbitrary sizes and slice counts, with the link
//! killed at arbitrary points (mid-frame included) and resumed. Checks:
//!
//! - B delivers exactly the items A sent, in order, once each (I1), and at the end, with the
//!   faults stopped, all of them;
//! - `chunks` never fails while the link lasts (a lent item is held until its frame is
//!   acked, which cannot happen before it is written), its slices add up to `pending_len`
//!   (when `out` has room for [`LendingBatch::max_chunks`]), and `owned_only` is set exactly
//!   when nothing is lent;
//! - `consume` of everything empties the batch; `Fill::bytes` adds up to what the batch holds.
//!
//! Script: three config bytes (buffer slack, `lend_from`, `max_lent`), then operations (an
//! opcode byte `% 5` and its operands, see [`run`]).

use crate::script::Script;
use sotto_proto::stream::{FrameSplitter, LendingBatch};
use sotto_proto::{Conduit, ConduitConfig, Instant, LinkId, ResumeKey, Role};

/// Most operations per input.
const MAX_OPS: usize = 600;

struct Pair {
    a: Conduit,
    b: Conduit,
    la: LinkId,
    lb: LinkId,
    key: u8,
    batch: LendingBatch<Vec<u8>>,
    split: FrameSplitter,
    /// Bytes written to the link, not yet read by B.
    wire: Vec<u8>,
    sent: Vec<Vec<u8>>,
    got: usize,
    out: Vec<u8>,
}

impl Pair {
    fn handshake(&mut self) {
        let now = Instant::ZERO;
        self.key = self.key.wrapping_add(1).max(1);
        self.la = self.a.link_up(now, ResumeKey::ZERO);
        self.lb = self.b.link_up(now, ResumeKey([self.key; 16]));
        let t = self.a.poll_transmit(now, &mut self.out).expect("client hello");
        assert_eq!(self.b.handle_message(now, self.lb, &self.out[..t.len]), Ok(None), "client hello refused");
        let t = self.b.poll_transmit(now, &mut self.out).expect("server hello");
        assert_eq!(self.a.handle_message(now, self.la, &self.out[..t.len]), Ok(None), "server hello refused");
        assert!(self.a.is_established() && self.b.is_established(), "handshake did not finish");
        self.drain_events();
    }

    fn drain_events(&mut self) {
        while self.a.poll_event().is_some() || self.b.poll_event().is_some() {}
    }

    /// Check the batch's view of what is pending against its own accounting.
    fn check_batch(&self) {
        let mut slices = vec![&[][..]; self.batch.max_chunks()];
        let n = self.batch.chunks(&self.a, &mut slices).expect("a lent item vanished while its link lasts");
        let total: usize = slices[..n].iter().map(|s| s.len()).sum();
        assert_eq!(total, self.batch.pending_len(), "chunks and pending_len disagree");
        assert_eq!(self.batch.is_empty(), total == 0);
        if let Some(owned) = self.batch.owned_only() {
            assert_eq!(owned.len(), total, "owned_only is not everything pending");
        }
    }

    /// Write up to `budget` bytes of what the batch holds, in at most `k` slices.
    fn write(&mut self, k: usize, budget: usize) {
        let mut slices = vec![&[][..]; k.max(1)];
        let n = self.batch.chunks(&self.a, &mut slices).expect("a lent item vanished while its link lasts");
        let mut left = budget;
        let mut written = 0;
        for s in &slices[..n] {
            let take = s.len().min(left);
            self.wire.extend_from_slice(&s[..take]);
            left -= take;
            written += take;
        }
        self.batch.consume(written);
    }

    /// B reads every whole message, delivers, and acks back to A.
    fn deliver(&mut self) {
        let now = Instant::ZERO;
        let run = self.split.complete(&self.wire, usize::MAX).expect("A's stream is well framed");
        for msg in self.split.messages(&self.wire[..run.len]) {
            match self.b.handle_message(now, self.lb, msg) {
                Ok(Some(item)) => {
                    let want = self.sent.get(self.got).expect("B delivered more than A sent");
                    assert_eq!(item, want.as_slice(), "item {} delivered wrong, twice or out of order", self.got);
                    self.got += 1;
                }
                Ok(None) => {}
                Err(e) => panic!("B refused A's frame: {e:?}"),
            }
        }
        self.wire.drain(..run.len);
        while let Some(t) = self.b.poll_transmit(now, &mut self.out) {
            let _ = self.a.handle_message(now, self.la, &self.out[..t.len]);
        }
        self.drain_events();
    }

    fn kill(&mut self) {
        let now = Instant::ZERO;
        self.a.link_down(now, self.la);
        self.b.link_down(now, self.lb);
        self.drain_events();
        self.batch.clear();
        self.wire.clear();
        self.handshake();
    }
}

/// Run one script. Operations (`op % 5`):
/// 0 send an item (`u16` length, up to 1500); 1 fill the batch; 2 write (slice count, `u16`
/// byte budget); 3 deliver to B and ack back; 4 kill the link and resume.
pub fn run(data: &[u8]) {
    let mut s = Script::new(data);
    // ack_every 1: B acks every frame at once, so A's ring turns over without timers.
    let cfg = {
        let mut patched = ConduitConfig::default();
        patched.replay_bytes = 4096;
        patched.max_frame_len = 2048;
        patched.ack_every = 1;
        patched
    };
    let a = Conduit::new(Role::Initiator, cfg).expect("valid config");
    let b = Conduit::new(Role::Acceptor, cfg).expect("valid config");
    let slack = usize::from(s.u8()) * 8;
    let lend_from = usize::from(s.u8()) * 8 + 1;
    let max_lent = usize::from(s.u8() % 16) + 1;
    let cap = a.max_transmit_len() + 4 + slack;
    let mut p = Pair {
        a,
        b,
        la: LinkId(0),
        lb: LinkId(0),
        key: 0,
        batch: LendingBatch::new(vec![0u8; cap], lend_from, max_lent),
        split: FrameSplitter::new(cfg.max_frame_len),
        wire: Vec::new(),
        sent: Vec::new(),
        got: 0,
        out: vec![0u8; cfg.max_frame_len as usize + 64],
    };
    p.handshake();
    let mut next = 0u8;
    for _ in 0..MAX_OPS {
        if s.is_empty() {
            break;
        }
        match s.u8() % 5 {
            0 => {
                let len = usize::from(s.u16()) % 1501;
                next = next.wrapping_add(1);
                let item: Vec<u8> = (0..len).map(|i| (i as u8) ^ next).collect();
                if p.a.send(&item).is_ok() {
                    p.sent.push(item);
                }
            }
            1 => {
                let before = p.batch.pending_len();
                let f = p.batch.fill(&mut p.a, Instant::ZERO);
                assert_eq!(p.batch.pending_len(), before + f.bytes, "Fill::bytes is not what the batch took");
                assert_eq!(f.discarded, 0, "the batch is cleared on every link change here");
            }
            2 => {
                let k = usize::from(s.u8() % 8) + 1;
                let budget = usize::from(s.u16());
                p.write(k, budget);
            }
            3 => p.deliver(),
            _ => p.kill(),
        }
        p.check_batch();
    }
    // Faults stop: everything sent arrives.
    for _ in 0..100_000 {
        if p.got == p.sent.len() {
            break;
        }
        let _ = p.batch.fill(&mut p.a, Instant::ZERO);
        p.write(8, 1 << 20);
        p.deliver();
    }
    assert_eq!(p.got, p.sent.len(), "not everything sent was delivered once the faults stopped");
    // Nothing else is owed (no timers run here): the batch drains empty.
    let _ = p.batch.fill(&mut p.a, Instant::ZERO);
    p.write(8, 1 << 20);
    assert!(p.batch.is_empty(), "the batch kept bytes after everything was written");
}
