//! What a simulation is made of: the two conduits' configurations, the link's latency and
//! read chunking, the dial policy, the items the applications send, and the seed.

use sotto_proto::wire::{LEN_PREFIX, MAX_DATA_HEADER_LEN};
use sotto_proto::{ConduitConfig, Duration};

use crate::dialer::DialPolicy;

/// Configuration of a [`Sim`](crate::Sim).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// The initiator's conduit configuration.
    pub a: ConduitConfig,
    /// The acceptor's conduit configuration.
    pub b: ConduitConfig,
    /// One-way latency of every link.
    pub latency: Duration,
    /// Largest read chunk (bytes handed to a decoder at once); 0 means "everything due".
    pub chunk_max: usize,
    /// Per mille of reads that take a tiny chunk (1 to 7 bytes), to split frames anywhere.
    pub tiny_chunk_per_mille: u32,
    /// How A gets links.
    pub dial: DialPolicy,
    /// Shortest application item (at least 4 so each item carries its seq).
    pub item_min: u32,
    /// Longest application item (clamped to the conduit's `max_item_len`).
    pub item_max: u32,
    /// Connection slots (links alive or draining at once).
    pub conn_slots: usize,
    /// The run's seed (keys, chunking, dialing and the randomized tests' choices).
    pub seed: u64,
    /// How to reproduce this run, printed on failure (e.g. an env var and a cargo command).
    pub repro: &'static str,
}

impl SimConfig {
    /// Small rings and frames with the default timers: fast scenario tests.
    #[must_use]
    pub fn small() -> Self {
        let conduit = {
            let mut patched = ConduitConfig::default();
            patched.max_frame_len = 4096;
            patched.replay_bytes = 64 * 1024;
            patched.replay_frames = 256;
            patched
        };
        Self {
            a: conduit,
            b: conduit,
            latency: Duration::from_millis(1),
            chunk_max: 0,
            tiny_chunk_per_mille: 0,
            dial: DialPolicy::default(),
            item_min: 4,
            item_max: 200,
            conn_slots: 6,
            seed: 0,
            repro: "deterministic test: rerun it by name",
        }
    }

    /// The same conduit configuration on both sides.
    #[must_use]
    pub fn with_conduit(mut self, c: ConduitConfig) -> Self {
        self.a = c;
        self.b = c;
        self
    }

    /// Bytes one pipe may hold: everything a conduit can have in flight on one link (its whole
    /// replay ring with headers, plus control frames), with room to spare. Exceeding it is an
    /// I6 failure.
    #[must_use]
    pub fn pipe_bytes(&self) -> usize {
        let c = if self.a.replay_bytes >= self.b.replay_bytes { self.a } else { self.b };
        let frames = self.a.replay_frames.max(self.b.replay_frames) as usize;
        c.replay_bytes as usize + frames * 2 * (MAX_DATA_HEADER_LEN + LEN_PREFIX) + 64 * 1024
    }

    /// Link messages one pipe may hold in flight.
    #[must_use]
    pub fn pipe_frames(&self) -> usize {
        self.a.replay_frames.max(self.b.replay_frames) as usize * 2 + 1024
    }
}
