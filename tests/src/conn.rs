//! A connection slot: one simulated link between A and B, both directions, with the decoder
//! each side reads it through and each side's link id for it. Slots are allocated once and
//! reused.

use sotto_proto::wire::LinkDecoder;
use sotto_proto::{Instant, LinkId};

use crate::pipe::Pipe;
use crate::Side;

/// One link between the two peers.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Which link this is (counting from 1); 0 marks a free slot.
    pub(crate) serial: u64,
    /// Each side's link id while its end is open.
    pub(crate) ends: [Option<LinkId>; 2],
    /// `pipes[s]` carries what side `s` writes.
    pub(crate) pipes: [Pipe; 2],
    /// `decoders[s]` reassembles what side `s` reads (taken out while in use).
    pub(crate) decoders: [Option<LinkDecoder>; 2],
    /// When it came up.
    pub(crate) opened_at: Instant,
}

impl Conn {
    pub(crate) fn new(pipe_bytes: usize, pipe_frames: usize, max_frame_a: u32, max_frame_b: u32) -> Self {
        Self {
            serial: 0,
            ends: [None, None],
            pipes: [Pipe::new(pipe_bytes, pipe_frames), Pipe::new(pipe_bytes, pipe_frames)],
            decoders: [Some(LinkDecoder::new(max_frame_a)), Some(LinkDecoder::new(max_frame_b))],
            opened_at: Instant::ZERO,
        }
    }

    pub(crate) fn is_free(&self) -> bool {
        self.serial == 0
    }

    /// Take the slot for link number `serial`.
    pub(crate) fn open(&mut self, serial: u64, now: Instant) {
        self.serial = serial;
        self.ends = [None, None];
        self.opened_at = now;
        for p in &mut self.pipes {
            p.reset();
        }
        for d in self.decoders.iter_mut().flatten() {
            d.reset();
        }
    }

    /// Release the slot if neither end is open.
    pub(crate) fn free_if_closed(&mut self) {
        if self.ends == [None, None] {
            self.serial = 0;
            for p in &mut self.pipes {
                p.reset();
            }
        }
    }

    /// The side whose end is `link` for `side`.
    pub(crate) fn end(&self, side: Side) -> Option<LinkId> {
        self.ends[side.idx()]
    }
}
